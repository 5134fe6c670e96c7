package archive

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/internal/kfaketest"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/s3store"
	"github.com/kbackup/kbackup/store/s3store/s3fake"
	"github.com/kbackup/kbackup/store/storetest"
)

// s3Uploads counts a fake S3's multipart requests and injects failures:
// the part uploads and completions numbered in failParts and
// failCompletes (counting from 1) fail; those in landCompletes complete,
// then report failure (a lost response).
type s3Uploads struct {
	srv                                       *s3fake.Server
	creates, parts, completes, aborts, failed atomic.Int64
	tries, landed                             atomic.Int64 // completions tried, landed but failed
	failParts, failCompletes, landCompletes   map[int64]bool
}

// keyedCounter counts the objects staged by key and those published.
type keyedCounter struct {
	*s3store.Store
	stages, published atomic.Int64
}

func (k *keyedCounter) StageAt(ctx context.Context, key string) (store.Staged, error) {
	st, err := k.Store.StageAt(ctx, key)
	if err != nil {
		return nil, err
	}
	k.stages.Add(1)
	return &keyedCounted{Staged: st, k: k}, nil
}

type keyedCounted struct {
	store.Staged
	k *keyedCounter
}

func (c *keyedCounted) Publish(ctx context.Context, key string, opts store.PutOptions) error {
	err := c.Staged.Publish(ctx, key, opts)
	if err == nil {
		c.k.published.Add(1)
	}
	return err
}

func (u *s3Uploads) hook(w http.ResponseWriter, r *http.Request) bool {
	q := r.URL.Query()
	fail := func() bool {
		u.failed.Add(1)
		s3fake.WriteError(w, http.StatusInternalServerError, "InternalError", "injected")
		return true
	}
	switch {
	case r.Method == http.MethodPost && q.Has("uploads"):
		u.creates.Add(1)
	case r.Method == http.MethodPut && q.Has("partNumber"):
		if u.failParts[u.parts.Add(1)] {
			return fail()
		}
	case r.Method == http.MethodPost && q.Has("uploadId"):
		n := u.tries.Add(1)
		if u.failCompletes[n] {
			return fail()
		}
		u.completes.Add(1)
		if u.landCompletes[n] {
			u.landed.Add(1)
			u.srv.Serve(httptest.NewRecorder(), r)
			return fail()
		}
	case r.Method == http.MethodDelete && q.Has("uploadId"):
		u.aborts.Add(1)
	}
	return false
}

// s3Catchup returns a kfake cluster whose topic (4 partitions) holds
// records records of 500 B, and a new s3fake bucket's server and store
// options with 48 KiB parts (s3fake has no 5 MiB minimum: several parts
// per segment).
func s3Catchup(t *testing.T, topic string, records int) (*kfake.Cluster, *s3fake.Server, s3store.Options) {
	t.Helper()
	c := newCluster(t)
	createTopic(t, c, topic, 4, nil)
	fillTopic(t, newClient(t, c, kgo.ProducerBatchMaxBytes(64<<10)), topic, records, 500)
	srv, so := s3fake.Start(t, "b")
	so.PartSize = 48 << 10
	return c, srv, so
}

// TestStreamedFlushS3: in the packed layout with S3, a busy partition's
// segment of more than packedStageAfter blocks is streamed as a multipart
// upload to its flush object's key (its seq reserved when staging began),
// parts uploaded while the segment is built, under failing part uploads
// and completions (the segment is lost and its records fetched again;
// a completion that landed but reported failure is found by a Stat): the
// archive equals the log, verify is clean, and every multipart upload
// started was completed or aborted.
func TestStreamedFlushS3(t *testing.T) {
	t.Parallel()
	c, srv, so := s3Catchup(t, "st", 20_000)
	so.MaxRetries = -1
	s3st, err := s3store.New(t.Context(), so)
	if err != nil {
		t.Fatal(err)
	}
	st := &keyedCounter{Store: s3st}
	u := &s3Uploads{srv: srv, failParts: map[int64]bool{4: true, 60: true},
		failCompletes: map[int64]bool{2: true}, landCompletes: map[int64]bool{3: true, 5: true}}
	srv.SetHook(u.hook)
	reg := prometheus.NewRegistry()
	mod := func(o *Options) {
		o.Registerer = reg
		o.Layout, o.Compression = LayoutPacked, "none"
		// Segments sealed by the flush interval (not by size), as at the
		// defaults: a partition's next segment starts after the one before
		// got its flush object.
		o.BlockBytes, o.SegmentBytes, o.FlushInterval = 16<<10, 8<<20, 300*time.Millisecond
		o.KafkaOpts = append(o.KafkaOpts, kgo.FetchMaxPartitionBytes(32<<10))
	}
	runUntilDone(t, 21, func() error {
		reg = prometheus.NewRegistry()
		a, err := New(onceOptions(t, c, st, mod))
		if err != nil {
			t.Fatal(err)
		}
		return a.Run(t.Context())
	})
	srv.SetHook(nil)
	checkExact(t, c, st, "st")
	noProblems(t, st)
	if st.published.Load() == 0 || u.completes.Load() == 0 || u.parts.Load() <= 2*u.creates.Load() || u.failed.Load() == 0 || u.landed.Load() == 0 {
		t.Fatalf("%d multipart uploads, %d parts, %d completed, %d failures injected: want streamed flush objects of several parts, and failures",
			u.creates.Load(), u.parts.Load(), u.completes.Load(), u.failed.Load())
	}
	// Every upload ended (aborts run in the background; a landed
	// completion reported failed is aborted too, which finds no upload).
	for deadline := time.Now().Add(10 * time.Second); u.creates.Load() != u.completes.Load()+u.aborts.Load()-u.landed.Load(); {
		if time.Now().After(deadline) {
			t.Fatalf("%d multipart uploads started, %d completed, %d aborted: some were left", u.creates.Load(), u.completes.Load(), u.aborts.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The part buffers are exported: none left in use, and the failed
	// parts' abandoned (the store's, over every run).
	bufs := gatherMetrics(t, reg)
	t.Logf("part buffer metrics: %v", bufs)
	if bufs[`kbackup_store_part_buffers{state="in_use"}`] != 0 || bufs["kbackup_store_part_buffers_abandoned_total"] < 1 ||
		bufs["kbackup_store_part_buffer_bytes"] != float64(s3st.PartBuffers().Size)*bufs[`kbackup_store_part_buffers{state="idle"}`] {
		t.Errorf("part buffer metrics %v: want none in use, the idle ones' bytes, and the failed parts' buffers abandoned", bufs)
	}
	t.Logf("%d objects staged, %d published; %d multipart uploads, %d parts, %d completed (%d reported failed), %d aborted; %d failures injected",
		st.stages.Load(), st.published.Load(), u.creates.Load(), u.parts.Load(), u.completes.Load(), u.landed.Load(), u.aborts.Load(), u.failed.Load())
}

// runUntilDone calls run (an archiver's --once run under injected faults)
// until it succeeds, failing t after attempts failed runs.
func runUntilDone(t *testing.T, attempts int, run func() error) {
	t.Helper()
	for i := 1; ; i++ {
		err := run()
		if err == nil {
			return
		}
		if i == attempts {
			t.Fatalf("%d runs failed, the last: %v", attempts, err)
		}
	}
}

// sweepRecorder records the upload sweeps an archiver asks for.
type sweepRecorder struct {
	store.Store
	mu      sync.Mutex
	prefix  []string
	cutoffs []time.Time
}

func (s *sweepRecorder) SweepUploads(_ context.Context, prefix string, cutoff time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prefix, s.cutoffs = append(s.prefix, prefix), append(s.cutoffs, cutoff)
	return 1, nil
}

// TestSweepUploadsAtStart: a packed archiver sweeps the incomplete uploads
// under wal/ older than an hour when it starts (what killed writers left).
func TestSweepUploadsAtStart(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "sw", 1, nil)
	fillTopic(t, newClient(t, c), "sw", 10, 100)
	fs, _ := kfaketest.Store(t)
	st := &sweepRecorder{Store: fs}
	a, err := New(onceOptions(t, c, st, func(o *Options) { o.Layout = LayoutPacked }))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.prefix) != 1 || st.prefix[0] != manifest.WALPrefix || time.Since(st.cutoffs[0]) < time.Hour {
		t.Fatalf("sweeps %q before %v: want one of %s, an hour old", st.prefix, st.cutoffs, manifest.WALPrefix)
	}
	checkExact(t, c, st, "sw")
}

// flushOrder wraps a KeyedStager store: it delays the publishing of every
// third flush object staged by key, so flush objects complete out of
// order, and checks at every tail index written that no flush object at or
// below its seq was still staged or being put (format rule 13: readers
// skip the flush objects up to a tail index's seq).
type flushOrder struct {
	*s3store.Store
	t *testing.T

	mu       sync.Mutex
	pending  map[int64]bool // flush object seqs staged or being put, not resolved
	done     []int64        // seqs in the order their objects were created
	indexes  int
	violated []string
	puts     [][2]time.Time // start and end of each flush object put whole (shared)
}

// newFlushOrder returns a flushOrder on a new s3fake bucket (48 KiB parts:
// s3fake has no 5 MiB minimum).
func newFlushOrder(t *testing.T) *flushOrder {
	_, so := s3fake.Start(t, "b")
	so.PartSize = 48 << 10
	s3st, err := s3store.New(t.Context(), so)
	if err != nil {
		t.Fatal(err)
	}
	return &flushOrder{Store: s3st, t: t, pending: map[int64]bool{}}
}

// flushSeq returns the seq of a flush object key (wal/<writer>/<inv-seq>.kwal).
func flushSeq(key string) (int64, bool) {
	rest, ok := strings.CutPrefix(key, manifest.WALPrefix)
	if !ok || !strings.HasSuffix(rest, ".kwal") || strings.Contains(rest, "/tail/") {
		return 0, false
	}
	i := strings.LastIndexByte(rest, '/')
	inv, err := strconv.ParseInt(strings.TrimSuffix(rest[i+1:], ".kwal"), 10, 64)
	if err != nil {
		return 0, false
	}
	return manifest.Invert(inv), true
}

func (f *flushOrder) resolve(seq int64, created bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.pending, seq)
	if created {
		f.done = append(f.done, seq)
	}
}

func (f *flushOrder) StageAt(ctx context.Context, key string) (store.Staged, error) {
	st, err := f.Store.StageAt(ctx, key)
	if err != nil {
		return nil, err
	}
	seq, ok := flushSeq(key)
	if !ok {
		return st, nil // a compaction's segment
	}
	f.mu.Lock()
	f.pending[seq] = true
	f.mu.Unlock()
	return &orderedStaged{Staged: st, f: f, seq: seq}, nil
}

func (f *flushOrder) Put(ctx context.Context, key string, r io.Reader, size int64, opts store.PutOptions) error {
	if seq, ok := flushSeq(key); ok {
		f.mu.Lock()
		f.pending[seq] = true
		f.mu.Unlock()
		start := time.Now()
		err := f.Store.Put(ctx, key, r, size, opts)
		f.mu.Lock()
		f.puts = append(f.puts, [2]time.Time{start, time.Now()})
		f.mu.Unlock()
		f.resolve(seq, err == nil)
		return err
	}
	if rest, ok := strings.CutPrefix(key, manifest.WALPrefix); ok && strings.Contains(rest, "/tail/") {
		inv, err := strconv.ParseInt(strings.TrimSuffix(rest[strings.LastIndexByte(rest, '/')+1:], ".ktix"), 10, 64)
		if err != nil {
			f.t.Errorf("tail index key %s: %v", key, err)
		}
		at := manifest.Invert(inv)
		f.mu.Lock()
		f.indexes++
		for seq := range f.pending {
			if seq <= at {
				f.violated = append(f.violated, fmt.Sprintf("tail index at %d written while flush object %d was unresolved", at, seq))
			}
		}
		f.mu.Unlock()
	}
	return f.Store.Put(ctx, key, r, size, opts)
}

type orderedStaged struct {
	store.Staged
	f   *flushOrder
	seq int64
}

func (s *orderedStaged) Publish(ctx context.Context, key string, opts store.PutOptions) error {
	if s.seq%3 == 0 {
		time.Sleep(150 * time.Millisecond) // completes after later seqs
	}
	err := s.Staged.Publish(ctx, key, opts)
	s.f.resolve(s.seq, err == nil)
	return err
}

func (s *orderedStaged) Abort() {
	s.Staged.Abort()
	s.f.resolve(s.seq, false)
}

// TestFlushObjectsOutOfOrder: with S3 the seqs of streamed flush objects
// are reserved when staging starts, so flush objects are created out of
// order (here every third is slow to complete) while a continuous archiver
// takes a steady stream. Every tail index is written at a seq below every
// flush object still unresolved, and the archive equals the log.
func TestFlushObjectsOutOfOrder(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "oo", 4, nil)
	st := newFlushOrder(t)
	stop := startArchiver(t, c, st, func(o *Options) {
		o.Layout, o.Compression = LayoutPacked, "none"
		// Segments of 8 blocks sealed by size, streamed from the fifth.
		o.BlockBytes, o.SegmentBytes, o.FlushInterval = 16<<10, 128<<10, time.Second
		o.KafkaOpts = append(o.KafkaOpts, kgo.FetchMaxPartitionBytes(32<<10))
	})
	// About 4 MB/s over the 4 partitions for 4 s: a segment per partition
	// every 130 ms or so.
	cl := newClient(t, c, kgo.DefaultProduceTopic("oo"), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	value := bytes.Repeat([]byte("v"), 500)
	total := 0
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		recs := make([]*kgo.Record, 80)
		for i := range recs {
			recs[i] = &kgo.Record{Key: []byte(strconv.Itoa(total + i)), Value: value}
		}
		if err := cl.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		total += len(recs)
	}
	waitArchived(t, st, "oo", int64(total))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	st.mu.Lock()
	for _, v := range st.violated {
		t.Error(v)
	}
	later := 0 // objects created after one with a higher seq
	for i := range st.done {
		if i > 0 && slices.Max(st.done[:i]) > st.done[i] {
			later++
		}
	}
	n, indexes := len(st.done), st.indexes
	st.mu.Unlock()
	if later == 0 || indexes == 0 {
		t.Fatalf("%d flush objects, %d created after a higher seq, %d tail indexes: want flush objects out of order and tail indexes", n, later, indexes)
	}
	t.Logf("%d flush objects, %d created after a higher seq, %d tail indexes", n, later, indexes)
	checkExact(t, c, st, "oo")
	noProblems(t, st)
}

// TestSharedFlushesChain: when a catch-up's segments are held (staging
// refused at the bound of streamed flush objects, here because those are
// slow), the next shared flush object starts as soon as the one before is
// applied, not at the next housekeeping tick (250 ms): most start within
// 100 ms of the previous one's end (none did while they waited for the tick).
func TestSharedFlushesChain(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "sc", 4, nil)
	fillTopic(t, newClient(t, c, kgo.ProducerBatchMaxBytes(64<<10)), "sc", 40_000, 500)
	st := newFlushOrder(t)
	a, err := New(onceOptions(t, c, st, func(o *Options) {
		o.Layout, o.Compression = LayoutPacked, "none"
		o.BlockBytes, o.SegmentBytes, o.FlushInterval = 16<<10, 128<<10, time.Hour
		o.KafkaOpts = append(o.KafkaOpts, kgo.FetchMaxPartitionBytes(32<<10))
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	st.mu.Lock()
	puts := slices.Clone(st.puts)
	st.mu.Unlock()
	slices.SortFunc(puts, func(a, b [2]time.Time) int { return a[0].Compare(b[0]) })
	chained := 0
	for i := 1; i < len(puts); i++ {
		if puts[i][0].Sub(puts[i-1][1]) < 100*time.Millisecond {
			chained++
		}
	}
	if len(puts) < 10 || chained < (len(puts)-1)*3/4 {
		t.Fatalf("%d shared flush objects, %d started within 100 ms of the previous one's end: want most", len(puts), chained)
	}
	checkExact(t, c, st, "sc")
	noProblems(t, st)
}

// gatherMetrics returns reg's kbackup_store_part_buffer* samples by name
// and labels (name{label="value"}).
func gatherMetrics(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "kbackup_store_part_buffer") {
			continue
		}
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += fmt.Sprintf("{%s=%q}", l.GetName(), l.GetValue())
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			out[name] = v
		}
	}
	return out
}

// TestStreamedSegmentsS3: in the segments layout with S3 (a new archive
// under --once), a segment of more than packedStageAfter blocks streams
// to a temporary key (s3store's Stage) and is copied to its segment key
// when sealed, so the archiver holds a part buffer and a few blocks per
// busy partition instead of whole segments: under a 1 MiB memory bound
// the segments still grow far past it. A copy that fails loses the
// segment (its records are fetched again); one whose completion lands but
// reports failure is found at its key. The archive equals the log, verify is
// clean, no temporary object is left and no part buffer is in use.
func TestStreamedSegmentsS3(t *testing.T) {
	t.Parallel()
	c, srv, so := s3Catchup(t, "sg", 20_000)
	so.MaxRetries = -1
	st, err := s3store.New(t.Context(), so)
	if err != nil {
		t.Fatal(err)
	}
	// The second copy fails; the completion of the fourth lands but
	// reports failure.
	var copies, completes, failed, landed atomic.Int64
	srv.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		switch {
		case r.Method == http.MethodPut && r.Header.Get("X-Amz-Copy-Source") != "":
			if copies.Add(1) == 2 {
				failed.Add(1)
				s3fake.WriteError(w, http.StatusInternalServerError, "InternalError", "injected")
				return true
			}
		case r.Method == http.MethodPost && r.URL.Query().Has("uploadId") && !strings.Contains(r.URL.Path, s3store.StagingPrefix):
			if completes.Add(1) == 4 {
				landed.Add(1)
				srv.Serve(httptest.NewRecorder(), r)
				s3fake.WriteError(w, http.StatusInternalServerError, "InternalError", "injected")
				return true
			}
		}
		return false
	})
	const bound = 1 << 20
	var peak atomic.Int64
	runUntilDone(t, 6, func() error {
		a, err := New(onceOptions(t, c, st, func(o *Options) {
			o.Layout, o.Compression = LayoutSegments, "none"
			o.BlockBytes, o.MaxBufferedBytes, o.FlushInterval = 16<<10, bound, time.Minute
			o.KafkaOpts = append(o.KafkaOpts, kgo.FetchMaxPartitionBytes(32<<10))
		}))
		if err != nil {
			t.Fatal(err)
		}
		stop := samplePeakBuffered(a, &peak)
		err = a.Run(t.Context())
		stop()
		return err
	})
	srv.SetHook(nil)
	checkExact(t, c, st, "sg")
	noProblems(t, st)
	if failed.Load() == 0 || landed.Load() == 0 {
		t.Fatalf("%d copies, %d failed, %d landed but failed: want both failures exercised", copies.Load(), failed.Load(), landed.Load())
	}
	largest, segments, total := segmentSizes(t, st, "sg", 4)
	limit := int64(bound + 4*(32<<10+48<<10) + 64<<10)
	if peak.Load() > limit {
		t.Errorf("held %d bytes with a bound of %d", peak.Load(), bound)
	}
	if largest <= limit {
		t.Errorf("largest segment %d bytes, limit %d: the segments were not streamed", largest, limit)
	}
	if left := storetest.Keys(t, st, s3store.StagingPrefix); len(left) != 0 {
		t.Errorf("temporary objects left: %q", left)
	}
	if pb := st.PartBuffers(); pb.InUse != 0 {
		t.Errorf("part buffers %+v: some still in use", pb)
	}
	t.Logf("%d copies (%d failed, %d landed but reported failed); peak held %d bytes; %d segments, largest %d bytes, %d bytes in all",
		copies.Load(), failed.Load(), landed.Load(), peak.Load(), segments, largest, total)
}

// TestBufferedCountsPartHold: a streaming segment counts the part buffer
// its staged object holds outside the Go heap (partHold) against the
// memory bound, open and sealed, besides its blocks not yet written; a
// segment held in memory counts its blocks only.
func TestBufferedCountsPartHold(t *testing.T) {
	sg := newStore(t).(store.Stager)
	const hold = 5 << 20
	ps := &partState{partHold: hold}
	ps.open = manifest.NewSegmentWriter(0, manifest.SegmentOptions{Codec: manifest.CodecNone, BlockSize: 1 << 10, StageAfter: 1,
		Stage: func() (store.Staged, error) { return sg.Stage(t.Context(), "seg/") }})
	value := bytes.Repeat([]byte("v"), 300)
	for off := int64(0); !ps.open.Streaming(); off++ {
		if off == 100 {
			t.Fatal("the segment never started streaming")
		}
		if err := ps.open.Append(&manifest.Record{Offset: off, Value: value}); err != nil {
			t.Fatal(err)
		}
	}
	open := ps.buffered()
	if blocks := int64(ps.open.Held()); open != blocks+hold {
		t.Fatalf("a streaming open segment counts %d bytes, want its %d held and the part buffer (%d)", open, blocks, hold)
	}
	ps.seal()
	if got := ps.buffered(); got != open {
		t.Fatalf("sealed, it counts %d bytes, want the %d it counted open", got, open)
	}
	ps.queue[0].writer.Abort()

	held := &partState{partHold: hold, open: manifest.NewSegmentWriter(0, manifest.SegmentOptions{Codec: manifest.CodecNone, BlockSize: 1 << 10})}
	for off := int64(0); off < 10; off++ {
		if err := held.open.Append(&manifest.Record{Offset: off, Value: value}); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := held.buffered(), int64(held.open.Held()); got != want {
		t.Fatalf("a segment held in memory counts %d bytes, want its %d", got, want)
	}
}

// samplePeakBuffered raises peak to a's buffered bytes (Status) every few
// milliseconds until stop is called.
func samplePeakBuffered(a *Archiver, peak *atomic.Int64) (stop func()) {
	quit, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			peak.Store(max(peak.Load(), a.Status().Buffered))
			select {
			case <-quit:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return func() {
		close(quit)
		<-sampled
	}
}

// slowCompletions is an S3 store whose staged objects take a millisecond
// per write and delay to publish (a busy store's uploads and multipart
// completions); it counts the objects staged.
type slowCompletions struct {
	*s3store.Store
	delay  time.Duration
	stages atomic.Int64
}

func (s *slowCompletions) StageAt(ctx context.Context, key string) (store.Staged, error) {
	st, err := s.Store.StageAt(ctx, key)
	if err != nil {
		return nil, err
	}
	s.stages.Add(1)
	return &slowStaged{Staged: st, delay: s.delay}, nil
}

type slowStaged struct {
	store.Staged
	delay time.Duration
}

func (s *slowStaged) Write(p []byte) (int, error) {
	time.Sleep(time.Millisecond)
	return s.Staged.Write(p)
}

func (s *slowStaged) Publish(ctx context.Context, key string, opts store.PutOptions) error {
	time.Sleep(s.delay)
	return s.Staged.Publish(ctx, key, opts)
}

// TestStagingBehindCompletions: in the packed layout with S3, the busy
// partitions' streamed flush objects sealed at a flush complete (slowly
// here) while the partitions' next segments fill; those stream too
// instead of waiting in memory for the completions. Counted against the
// bound of four streamed flush objects being filled, the completing ones
// refused every next segment staging and the catch-up held nearly all it
// fetched (19 MB here, against ~0.4 MB). The bound allowed is 8 MiB: a CI
// run on a machine loaded by other test processes held 6.6 MB once (most
// likely the slowed completions fell behind and the bounds held segments
// back, as they should; not reproduced since, ~0.35 MB in 30 runs).
func TestStagingBehindCompletions(t *testing.T) {
	t.Parallel()
	c, _, so := s3Catchup(t, "sb", 40_000)
	s3st, err := s3store.New(t.Context(), so)
	if err != nil {
		t.Fatal(err)
	}
	st := &slowCompletions{Store: s3st, delay: 80 * time.Millisecond}
	a, err := New(onceOptions(t, c, st, func(o *Options) {
		o.Layout, o.Compression = LayoutPacked, "none"
		o.BlockBytes, o.SegmentBytes, o.FlushInterval = 16<<10, 64<<20, 200*time.Millisecond
		o.KafkaOpts = append(o.KafkaOpts, kgo.FetchMaxPartitionBytes(32<<10))
	}))
	if err != nil {
		t.Fatal(err)
	}
	var peak atomic.Int64
	stop := samplePeakBuffered(a, &peak)
	err = a.Run(t.Context())
	stop()
	if err != nil {
		t.Fatal(err)
	}
	checkExact(t, c, st, "sb")
	noProblems(t, st)
	if p := peak.Load(); p > 8<<20 {
		t.Errorf("held up to %d bytes: the next segments waited in memory behind the completions", p)
	}
	if n := st.stages.Load(); n <= 4 {
		t.Errorf("%d streamed flush objects for 4 partitions: their next segments did not stream", n)
	}
	t.Logf("%d streamed flush objects, peak held %d bytes", st.stages.Load(), peak.Load())
}
