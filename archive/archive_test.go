package archive

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/internal/kfaketest"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/storefault"
)

// TestOnceFidelity: every codec, null/empty keys and values, duplicate and
// null headers, large values, LogAppendTime, committed and aborted
// transactions: the archive equals what a read_committed consumer sees,
// offset for offset, and every other offset is an explained gap.
func TestOnceFidelity(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "events", 3, nil)
	createTopic(t, c, "appended", 1, nil)
	createTopic(t, c, "txn", 2, nil)
	r := rand.New(rand.NewPCG(1, 2))

	codecs := []kgo.CompressionCodec{kgo.NoCompression(), kgo.GzipCompression(), kgo.SnappyCompression(), kgo.Lz4Compression(), kgo.ZstdCompression()}
	for i, codec := range codecs {
		cl := newClient(t, c, kgo.ProducerBatchCompression(codec), kgo.RecordPartitioner(kgo.ManualPartitioner()))
		var recs []*kgo.Record
		for j := 0; j < 50; j++ {
			rec := &kgo.Record{Topic: "events", Partition: int32(j % 3), Timestamp: time.UnixMilli(1700000000000 + int64(r.IntN(100000)) - 50000)}
			switch j % 5 {
			case 0: // null key, null value (tombstone)
			case 1:
				rec.Key, rec.Value = []byte{}, []byte{}
			case 2:
				rec.Key, rec.Value = []byte("k"+strconv.Itoa(j)), randBytes(r, 100)
				rec.Headers = []kgo.RecordHeader{{Key: "dup", Value: []byte("a")}, {Key: "dup", Value: []byte("b")}, {Key: "null", Value: nil}, {Key: "empty", Value: []byte{}}}
			case 3:
				rec.Key, rec.Value = randBytes(r, 10), bytes.Repeat([]byte{byte(i)}, 300<<10)
			case 4:
				rec.Key, rec.Value = []byte("k"), []byte("v")
				rec.Timestamp = time.UnixMilli(-5) // negative timestamps survive
			}
			recs = append(recs, rec)
		}
		produce(t, cl, recs...)
	}
	cl := newClient(t, c)
	for i := 0; i < 20; i++ {
		produce(t, cl, &kgo.Record{Topic: "appended", Value: []byte(strconv.Itoa(i)), Timestamp: time.UnixMilli(1)})
	}

	// Transactions: commit, abort, commit, interleaved with plain records.
	txn := newClient(t, c, kgo.TransactionalID("tx-1"), kgo.DefaultProduceTopic("txn"))
	plain := newClient(t, c, kgo.DefaultProduceTopic("txn"))
	ctx := context.Background()
	for round, commit := range []bool{true, false, true, false, true} {
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < 10; j++ {
			txn.Produce(ctx, &kgo.Record{Partition: int32(j % 2), Key: []byte("t"), Value: []byte(strconv.Itoa(round*100 + j))}, nil)
		}
		if err := txn.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		produce(t, plain, &kgo.Record{Value: []byte("plain" + strconv.Itoa(round))})
		if err := txn.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}

	st := newStore(t)
	runOnce(t, c, st, nil)

	for _, topic := range []string{"events", "appended", "txn"} {
		want := readCommitted(t, c, topic)
		got, gaps := readArchive(t, st, topic)
		sameRecords(t, topic, want, got)
		for p, gs := range gaps {
			for _, g := range gs {
				if topic != "txn" || g.Reason != manifest.GapTransaction {
					t.Errorf("%s/%d: unexpected gap %v", topic, p, g)
				}
			}
		}
	}
	// (kfake applies LogAppendTime only when the producer sets the batch
	// attribute, not from the topic config: the real-Kafka integration test
	// covers LogAppendTime topics.)
	if _, gaps := readArchive(t, st, "txn"); len(gaps[0])+len(gaps[1]) == 0 {
		t.Fatal("transaction markers and aborted records left no gaps")
	}

	// The other block codecs archive the same content.
	for _, codec := range []string{"s2", "none"} {
		cst := newStore(t)
		runOnce(t, c, cst, func(o *Options) { o.Compression = codec })
		for _, topic := range []string{"events", "appended", "txn"} {
			got, _ := readArchive(t, cst, topic)
			sameRecords(t, codec+" "+topic, readCommitted(t, c, topic), got)
		}
		want, _ := manifest.ParseCodec(codec)
		if got := segmentCodecs(t, cst); len(got) != 1 || got[want] == 0 {
			t.Fatalf("--compression %s: segments start with blocks of codecs %v", codec, got)
		}
	}
	if got := segmentCodecs(t, st); len(got) != 1 || got[manifest.CodecZstd] == 0 {
		t.Fatalf("default compression: segments start with blocks of codecs %v", got)
	}

	// A second --once with nothing new adds nothing and duplicates nothing.
	a, _ := manifest.Open(ctx, st)
	before := heads(t, a, "events")
	runOnce(t, c, st, nil)
	if after := heads(t, a, "events"); !equalHeads(before, after) {
		t.Fatalf("idle --once changed heads: %v -> %v", before, after)
	}
}

// segmentCodecs counts the codecs of the first block of every segment in st.
func segmentCodecs(t testing.TB, st storeT) map[manifest.Codec]int {
	t.Helper()
	ctx := context.Background()
	out := map[manifest.Codec]int{}
	err := st.List(ctx, store.ListOptions{}, func(e store.ListEntry) error {
		if !strings.HasSuffix(e.Key, ".kseg") {
			return nil
		}
		rc, err := st.GetRange(ctx, e.Key, 8, 1) // after the 8-byte segment header
		if err != nil {
			return err
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil || len(b) != 1 {
			return fmt.Errorf("read %s: %v", e.Key, err)
		}
		out[manifest.Codec(b[0])]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func heads(t testing.TB, a *manifest.Archive, topic string) map[int32]int64 {
	t.Helper()
	ctx := context.Background()
	incs, err := a.Incarnations(ctx, topic)
	if err != nil || len(incs) == 0 {
		t.Fatal(err)
	}
	id := incs[len(incs)-1].TopicID
	ps, _ := a.Partitions(ctx, topic, id)
	out := map[int32]int64{}
	for _, p := range ps {
		h, err := a.Partition(topic, id, p).Head(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if h != nil {
			out[p] = h.Seq
		}
	}
	return out
}

func equalHeads(a, b map[int32]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestRetentionRaceIsDataLoss: records deleted before they were archived
// become a DATA-LOSS gap; records deleted before archiving ever began are
// before-start.
func TestRetentionRaceIsDataLoss(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "r", 1, nil)
	cl := newClient(t, c, kgo.DefaultProduceTopic("r"))
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		produce(t, cl, &kgo.Record{Value: []byte{byte(i)}})
	}
	// Retention removes offsets 0..2 before the first archive run.
	if _, err := adm.DeleteRecords(ctx, kadm.Offsets{"r": {0: {Topic: "r", Partition: 0, At: 3}}}); err != nil {
		t.Fatal(err)
	}
	st := newStore(t)
	runOnce(t, c, st, nil)
	for i := 10; i < 20; i++ {
		produce(t, cl, &kgo.Record{Value: []byte{byte(i)}})
	}
	// Retention wins the race for 10..14.
	if _, err := adm.DeleteRecords(ctx, kadm.Offsets{"r": {0: {Topic: "r", Partition: 0, At: 15}}}); err != nil {
		t.Fatal(err)
	}
	runOnce(t, c, st, nil)
	recs, gaps := readArchive(t, st, "r")
	want := []manifest.Gap{{From: 0, To: 2, Reason: manifest.GapBeforeStart}, {From: 10, To: 14, Reason: manifest.GapDataLoss}}
	if len(gaps[0]) != 2 || gaps[0][0] != want[0] || gaps[0][1] != want[1] {
		t.Fatalf("gaps %v, want %v", gaps[0], want)
	}
	if len(recs[0]) != 7+5 {
		t.Fatalf("%d records archived, want 12", len(recs[0]))
	}
	// Everything deleted while nothing new remains: still recorded.
	for i := 20; i < 25; i++ {
		produce(t, cl, &kgo.Record{Value: []byte{byte(i)}})
	}
	if _, err := adm.DeleteRecords(ctx, kadm.Offsets{"r": {0: {Topic: "r", Partition: 0, At: 25}}}); err != nil {
		t.Fatal(err)
	}
	runOnce(t, c, st, nil)
	_, gaps = readArchive(t, st, "r")
	if last := gaps[0][len(gaps[0])-1]; last != (manifest.Gap{From: 20, To: 24, Reason: manifest.GapDataLoss}) {
		t.Fatalf("last gap %v", last)
	}
}

// TestOnceRetriesOffsetNotAvailable: a leader elected moments ago answers
// ListOffsets with OFFSET_NOT_AVAILABLE for a while; --once waits it out
// instead of failing, and archives everything.
func TestOnceRetriesOffsetNotAvailable(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "na", 2, nil)
	cl := newClient(t, c, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for i := 0; i < 20; i++ {
		produce(t, cl, &kgo.Record{Topic: "na", Partition: int32(i % 2), Value: []byte(strconv.Itoa(i))})
	}
	failed := kfaketest.FailListOffsets(c, 3, kerr.OffsetNotAvailable.Code)
	st := newStore(t)
	runOnce(t, c, st, nil)
	if failed.Load() != 3 {
		t.Fatalf("%d ListOffsets requests failed, want 3: the test did not exercise the retry", failed.Load())
	}
	got, _ := readArchive(t, st, "na")
	sameRecords(t, "na", readCommitted(t, c, "na"), got)
}

// TestMemoryBoundBetweenTicks: --max-buffered-bytes holds between two
// housekeeping ticks too. A fast cluster delivers far more than the bound
// in one 250 ms tick; the bound used to be checked only at ticks, so the
// archiver buffered (and the open segments grew to) all of it.
func TestMemoryBoundBetweenTicks(t *testing.T) {
	t.Parallel()
	for _, layout := range []string{LayoutSegments, LayoutPacked} {
		t.Run(layout, func(t *testing.T) {
			t.Parallel()
			testMemoryBound(t, layout)
		})
	}
}

func testMemoryBound(t *testing.T, layout string) {
	c := newCluster(t)
	createTopic(t, c, "mem", 4, nil)
	n := fillTopic(t, newClient(t, c, kgo.ProducerBatchMaxBytes(1<<20)), "mem", 40_000, 500)
	st := newStore(t)
	const bound = 2 << 20
	runOnce(t, c, st, func(o *Options) {
		o.Compression = "none" // segments hold what was buffered, uncompressed
		o.MaxBufferedBytes = bound
		o.HoldSegments = true // a streamed segment's size is no measure of the memory held
		o.Layout = layout
	})
	checkExact(t, c, st, "mem")
	largest, _, _ := segmentSizes(t, st, "mem", 4)
	// One poll's worth over the bound at most (4 partitions × 512 KiB).
	if limit := int64(bound + 4*DefaultFetchMaxPartitionBytes + 64<<10); largest > limit {
		t.Fatalf("a segment of %d bytes with --max-buffered-bytes %d (%d bytes archived): the bound did not hold between ticks", largest, bound, n)
	}
	t.Logf("largest segment %d bytes, bound %d, %d bytes archived", largest, bound, n)
}

// TestMemoryBoundStreamed: --max-buffered-bytes with streamed segments
// (segments layout, local directory store: a segment's blocks go to a
// staged file as they close). The archiver counts only the blocks it still
// holds, so segments grow past the bound while what it holds stays under
// it: sampled from its status (the exact total, computed at every
// housekeeping), never more than one poll over the bound. The staged
// writes are slowed, so blocks queue behind them and the bound is reached.
func TestMemoryBoundStreamed(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "mem", 4, nil)
	n := fillTopic(t, newClient(t, c, kgo.ProducerBatchMaxBytes(1<<20)), "mem", 60_000, 500)
	fst := storefault.New(newStore(t), 1)
	fst.SetStagedWriteDelay(20 * time.Millisecond)
	var st store.Store = fst
	const bound = 1 << 20
	var logs kfaketest.LogBuffer
	a, err := New(Options{KafkaOpts: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, Store: st, Once: true,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)), WriterID: "test", Layout: LayoutSegments,
		Compression: "none", MaxBufferedBytes: bound, BlockBytes: 128 << 10,
		FlushInterval: time.Minute}) // segments roll at the end, or at the bound if it sealed them
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if b := a.Status().Buffered; b > peak.Load() {
				peak.Store(b)
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	err = a.Run(ctx)
	close(stop)
	<-sampled
	if err != nil {
		t.Fatalf("archive --once: %v", err)
	}
	checkExact(t, c, st, "mem")
	largest, segments, total := segmentSizes(t, st, "mem", 4)
	limit := int64(bound + 4*DefaultFetchMaxPartitionBytes + 64<<10) // one poll over the bound
	if peak.Load() > limit {
		t.Fatalf("held %d bytes with --max-buffered-bytes %d", peak.Load(), bound)
	}
	if !strings.Contains(logs.String(), `"msg":"memory bound reached`) {
		t.Fatalf("the bound was never reached (peak held %d): the test did not exercise it", peak.Load())
	}
	// The segments were streamed: a segment counted whole could never
	// grow past the limit (the bound would seal it).
	if largest <= limit {
		t.Fatalf("largest segment %d bytes, limit %d: the segments were not streamed", largest, limit)
	}
	t.Logf("peak held %d bytes, bound %d, largest segment %d bytes, %d segments of %d bytes on average, %d bytes archived", peak.Load(), bound, largest, segments, total/segments, n)
}

// segmentSizes walks the commits of partitions 0..partitions-1 of topic's
// only incarnation: the largest segment, the number of segments and their
// total size.
func segmentSizes(t *testing.T, st store.Store, topic string, partitions int32) (largest, segments, total int64) {
	t.Helper()
	ctx := context.Background()
	a := openArchive(t, st)
	incs, err := a.Incarnations(ctx, topic)
	if err != nil || len(incs) != 1 {
		t.Fatal(incs, err)
	}
	for p := range partitions {
		log := a.Partition(topic, incs[0].TopicID, p)
		head, err := log.Head(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for start := int64(0); start <= head.End; {
			c, err := log.CommitAt(ctx, start)
			if err != nil {
				t.Fatal(err)
			}
			largest, start = max(largest, c.SegmentSize), c.End+1
			segments, total = segments+1, total+c.SegmentSize
		}
	}
	return largest, segments, total
}
