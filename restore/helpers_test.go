package restore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/archive"
	"github.com/kbackup/kbackup/internal/kfaketest"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
)

func testLogger(t testing.TB) *slog.Logger { return kfaketest.Logger(t) }

func newCluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster { return kfaketest.Cluster(t, opts...) }

func newClient(t testing.TB, c *kfake.Cluster, opts ...kgo.Opt) *kgo.Client {
	return kfaketest.Client(t, c, opts...)
}

func createTopic(t testing.TB, c *kfake.Cluster, topic string, partitions int32, configs map[string]*string) {
	kfaketest.CreateTopic(t, c, topic, partitions, configs)
}

func newStore(t testing.TB) (store.Store, string) { return kfaketest.Store(t) }

func mustRe(t testing.TB, expr string) *regexp.Regexp {
	t.Helper()
	return regexp.MustCompile("^(?:" + expr + ")$")
}

// archiveOnce archives the source cluster into st with the archiver's Once
// mode (small blocks and segments, so that seeks have something to skip).
func archiveOnce(t testing.TB, c *kfake.Cluster, st store.Store) {
	t.Helper()
	a, err := archive.New(archive.Options{KafkaOpts: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, Store: st, Once: true,
		Logger: testLogger(t), WriterID: "test", BlockBytes: 2 << 10, SegmentBytes: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.Run(ctx); err != nil {
		t.Fatalf("archive --once: %v", err)
	}
}

// rec is one record as compared: offset, timestamp, key, value, headers.
type rec struct {
	Offset    int64
	Timestamp int64
	Key       []byte
	Value     []byte
	Headers   []manifest.Header
}

func (r rec) equalContent(o rec) bool {
	return r.Timestamp == o.Timestamp && bytes.Equal(r.Key, o.Key) && (r.Key == nil) == (o.Key == nil) &&
		bytes.Equal(r.Value, o.Value) && (r.Value == nil) == (o.Value == nil) && sameHeaders(r.Headers, o.Headers)
}

func sameHeaders(a, b []manifest.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || !bytes.Equal(a[i].Value, b[i].Value) || (a[i].Value == nil) != (b[i].Value == nil) {
			return false
		}
	}
	return true
}

// archived reads one partition's records of the current incarnation in
// [from, to] (to < 0: the end), and its gaps.
func archived(t testing.TB, st store.Store, topic string, partition int32) ([]rec, []manifest.Gap) {
	t.Helper()
	ctx := context.Background()
	a, err := manifest.Open(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	incs, err := a.Incarnations(ctx, topic)
	if err != nil || len(incs) == 0 {
		t.Fatalf("incarnations of %s: %v", topic, err)
	}
	p := a.Partition(topic, incs[len(incs)-1].TopicID, partition)
	var out []rec
	var gaps []manifest.Gap
	err = p.Scan(ctx, 0, -1, func(it manifest.ScanItem) error {
		if r := it.Record; r != nil {
			out = append(out, rec{r.Offset, r.Timestamp, bytes.Clone(r.Key), bytes.Clone(r.Value), r.Headers})
		} else {
			gaps = append(gaps, it.Gap)
		}
		return nil
	})
	if err != nil && err != manifest.StopScan {
		if isOutOfRange(err) {
			return nil, nil
		}
		t.Fatal(err)
	}
	return out, gaps
}

func isOutOfRange(err error) bool { return err != nil && errors.Is(err, manifest.ErrOutOfRange) }

// readTopic reads every partition of topic in the cluster up to its end
// offsets, with a plain consumer.
func readTopic(t testing.TB, c *kfake.Cluster, topic string) map[int32][]rec {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm := kadm.NewClient(newClient(t, c))
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
		}
	})
	out := map[int32][]rec{}
	if len(want) == 0 {
		return out
	}
	cl := newClient(t, c, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	pos := map[int32]int64{}
	done := func() bool {
		for p, e := range want {
			if pos[p] < e {
				return false
			}
		}
		return true
	}
	for !done() {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s: timeout at %v, want %v", topic, pos, want)
		}
		fs.EachRecord(func(r *kgo.Record) {
			pos[r.Partition] = r.Offset + 1
			var hs []manifest.Header
			for _, h := range r.Headers {
				hs = append(hs, manifest.Header{Key: h.Key, Value: h.Value})
			}
			out[r.Partition] = append(out[r.Partition], rec{r.Offset, r.Timestamp.UnixMilli(), r.Key, r.Value, hs})
		})
	}
	return out
}

// sameContent compares want and got record by record (offsets aside).
func sameContent(t testing.TB, what string, want, got []rec) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("%s: want %d records, got %d\nwant %s\ngot  %s", what, len(want), len(got), offsets(want), offsets(got))
	}
	for i := range want {
		if !want[i].equalContent(got[i]) {
			t.Fatalf("%s: record %d differs:\nwant %+v\ngot  %+v", what, i, want[i], got[i])
		}
	}
}

func offsets(rs []rec) string {
	var b bytes.Buffer
	for i, r := range rs {
		if i > 40 {
			b.WriteString(" ...")
			break
		}
		fmt.Fprintf(&b, " %d", r.Offset)
	}
	return b.String()
}

// fixture is a source cluster with an archived topic.
type fixture struct {
	src   *kfake.Cluster
	st    store.Store
	dir   string
	topic string
	parts int32
	t0    int64
}

// buildFixture produces n records per partition into a new topic with out
// of order timestamps (every 5th record 3.5 s early), null and empty keys
// and values, duplicate and null headers, and an aborted transaction
// every 20 records (gaps in the archive), then archives it.
func buildFixture(t testing.TB, topic string, parts int32, n int) *fixture {
	t.Helper()
	f := &fixture{src: newCluster(t), topic: topic, parts: parts, t0: 1_700_000_000_000}
	f.st, f.dir = newStore(t)
	createTopic(t, f.src, topic, parts, map[string]*string{"retention.ms": ptr("-1")})
	cl := newClient(t, f.src, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	txn := newClient(t, f.src, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionalID("txn-"+topic))
	ctx := context.Background()
	for i := 0; i < n; i++ {
		var recs []*kgo.Record
		for p := int32(0); p < parts; p++ {
			ts := f.t0 + int64(i)*1000
			if i%5 == 4 {
				ts -= 3500
			}
			r := &kgo.Record{Topic: topic, Partition: p, Timestamp: time.UnixMilli(ts), Value: []byte(fmt.Sprintf("v%d-%d", p, i))}
			switch i % 4 {
			case 0:
				r.Key = []byte(fmt.Sprintf("k%d", i%7))
			case 1:
				r.Key = []byte{}
			case 2: // null key, null value
				r.Value = nil
			case 3:
				r.Key, r.Value = []byte("k"), []byte{}
			}
			if i%3 == 0 {
				r.Headers = []kgo.RecordHeader{{Key: "h", Value: []byte("1")}, {Key: "h", Value: []byte("2")}, {Key: "null", Value: nil}, {Key: "empty", Value: []byte{}}}
			}
			recs = append(recs, r)
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if i%20 == 10 {
			if err := txn.BeginTransaction(); err != nil {
				t.Fatal(err)
			}
			for p := int32(0); p < parts; p++ {
				txn.Produce(ctx, &kgo.Record{Topic: topic, Partition: p, Value: []byte("aborted")}, nil)
			}
			// Flush first: aborting with the records still buffered fails
			// them in the client, and the log would get no aborted data
			// (no gap) depending on timing.
			if err := txn.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if err := txn.EndTransaction(ctx, kgo.TryAbort); err != nil {
				t.Fatal(err)
			}
		}
	}
	return f
}

func ptr[T any](v T) *T { return &v }

func (f *fixture) archive(t testing.TB) { archiveOnce(t, f.src, f.st) }

// opts returns restore options from the fixture's store into tgt.
func (f *fixture) opts(t testing.TB, tgt *kfake.Cluster) Options {
	return Options{Store: f.st, KafkaOpts: []kgo.Opt{kgo.SeedBrokers(tgt.ListenAddrs()...)}, Topics: mustRe(t, f.topic),
		Logger: testLogger(t), CheckpointInterval: 50 * time.Millisecond, ResumeSettle: 20 * time.Millisecond}
}

func run(t testing.TB, o Options) *Summary {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := Run(ctx, o)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	return s
}

// prefix returns the records of rs the range selects, computed the slow
// way: from the first record with timestamp >= from, up to (excluding) the
// first record with timestamp > to.
func selectSlow(rs []rec, from, to *int64) []rec {
	start, end := 0, len(rs)
	if from != nil {
		start = len(rs)
		for i, r := range rs {
			if r.Timestamp >= *from {
				start = i
				break
			}
		}
	}
	if to != nil {
		for i, r := range rs {
			if r.Timestamp > *to {
				end = i
				break
			}
		}
	}
	if start >= end {
		return nil
	}
	return rs[start:end]
}

func keysOf(m map[int32][]rec) []int32 {
	var out []int32
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// waitMembers waits until group has n members in c.
func waitMembers(t testing.TB, c *kfake.Cluster, group string, n int) {
	t.Helper()
	adm := kadm.NewClient(newClient(t, c))
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		dg, err := adm.DescribeGroups(context.Background(), group)
		if err == nil {
			if g, ok := dg[group]; ok && len(g.Members) == n {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("group %s: not %d members within 20s", group, n)
}

// assertNothingWritten checks that a rejected restore left no trace: no
// restore objects in the store and no target topic.
func assertNothingWritten(t testing.TB, f *fixture, tgt *kfake.Cluster, topic string) {
	t.Helper()
	ctx := context.Background()
	var keys []string
	if err := f.st.List(ctx, store.ListOptions{Prefix: "restores/"}, func(e store.ListEntry) error {
		keys = append(keys, e.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(keys) > 0 {
		t.Fatalf("rejected restore wrote %v", keys)
	}
	adm := kadm.NewClient(newClient(t, tgt))
	td, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if td.Has(topic) {
		t.Fatalf("rejected restore created topic %s", topic)
	}
}
