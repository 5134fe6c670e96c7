package archive

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/internal/kfaketest"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/s3store"
	"github.com/kbackup/kbackup/store/s3store/s3fake"
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
	c := newCluster(t)
	createTopic(t, c, "st", 4, nil)
	fillTopic(t, newClient(t, c, kgo.ProducerBatchMaxBytes(64<<10)), "st", 20_000, 500)
	srv, so := s3fake.Start(t, "b")
	so.PartSize = 48 << 10 // gofakes3 has no 5 MiB minimum: several parts per segment
	so.MaxRetries = -1
	s3st, err := s3store.New(t.Context(), so)
	if err != nil {
		t.Fatal(err)
	}
	st := &keyedCounter{Store: s3st}
	u := &s3Uploads{srv: srv, failParts: map[int64]bool{4: true, 60: true},
		failCompletes: map[int64]bool{2: true}, landCompletes: map[int64]bool{3: true, 5: true}}
	srv.SetHook(u.hook)
	mod := func(o *Options) {
		o.Layout, o.Compression = LayoutPacked, "none"
		// Segments sealed by the flush interval (not by size), as at the
		// defaults: a partition's next segment starts after the one before
		// got its flush object.
		o.BlockBytes, o.SegmentBytes, o.FlushInterval = 16<<10, 8<<20, 300*time.Millisecond
		o.KafkaOpts = append(o.KafkaOpts, kgo.FetchMaxPartitionBytes(32<<10))
	}
	for i := 0; ; i++ {
		a, err := New(onceOptions(t, c, st, mod))
		if err != nil {
			t.Fatal(err)
		}
		if err = a.Run(t.Context()); err == nil {
			break
		}
		if i == 20 {
			t.Fatalf("20 runs under faults failed, the last: %v", err)
		}
	}
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
	t.Logf("%d objects staged, %d published; %d multipart uploads, %d parts, %d completed (%d reported failed), %d aborted; %d failures injected",
		st.stages.Load(), st.published.Load(), u.creates.Load(), u.parts.Load(), u.completes.Load(), u.landed.Load(), u.aborts.Load(), u.failed.Load())
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
