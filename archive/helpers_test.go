package archive

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

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

func newStore(t testing.TB) store.Store {
	st, _ := kfaketest.Store(t)
	return st
}

// produce writes recs synchronously and fails the test on any error.
func produce(t testing.TB, cl *kgo.Client, recs ...*kgo.Record) { kfaketest.Produce(t, cl, recs...) }

// consumed is one record as a read_committed consumer sees it.
type consumed struct {
	Offset    int64
	Timestamp int64
	TsType    manifest.TimestampType
	Key       []byte
	Value     []byte
	Headers   []manifest.Header
}

// readCommitted reads every partition of topic from the start to the end
// offsets (last stable) with a plain read_committed franz-go consumer.
func readCommitted(t testing.TB, c *kfake.Cluster, topic string) map[int32][]consumed {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm := kadm.NewClient(newClient(t, c))
	ends, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) { want[o.Partition] = o.Offset })
	cl := newClient(t, c, kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	out := map[int32][]consumed{}
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
			t.Fatalf("read %s: timeout; at %v want %v", topic, pos, want)
		}
		fs.EachRecord(func(r *kgo.Record) {
			pos[r.Partition] = r.Offset + 1
			if r.Attrs.IsControl() {
				return
			}
			rec := toRecord(r)
			out[r.Partition] = append(out[r.Partition], consumed{rec.Offset, rec.Timestamp, rec.TimestampType, rec.Key, rec.Value, rec.Headers})
		})
	}
	return out
}

// readArchive reads every partition of the current incarnation of topic
// from the archive, checking that records and gaps tile 0..end exactly.
func readArchive(t testing.TB, st store.Store, topic string) (map[int32][]consumed, map[int32][]manifest.Gap) {
	t.Helper()
	ctx := context.Background()
	a, err := manifest.Open(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	incs, err := a.Incarnations(ctx, topic)
	if err != nil || len(incs) == 0 {
		t.Fatalf("incarnations of %s: %v %v", topic, incs, err)
	}
	id := incs[len(incs)-1].TopicID
	parts, err := a.Partitions(ctx, topic, id)
	if err != nil {
		t.Fatal(err)
	}
	recs, gaps := map[int32][]consumed{}, map[int32][]manifest.Gap{}
	for _, p := range parts {
		pl := a.Partition(topic, id, p)
		head, err := pl.Head(ctx)
		if err != nil || head == nil {
			continue
		}
		next := int64(0)
		err = pl.Scan(ctx, 0, -1, func(it manifest.ScanItem) error {
			if it.Record != nil {
				if it.Record.Offset != next {
					return fmt.Errorf("%s/%d: record %d, expected %d", topic, p, it.Record.Offset, next)
				}
				r := it.Record
				recs[p] = append(recs[p], consumed{r.Offset, r.Timestamp, r.TimestampType, bytes.Clone(r.Key), bytes.Clone(r.Value), r.Headers})
				next++
				return nil
			}
			if it.Gap.From != next {
				return fmt.Errorf("%s/%d: gap %v, expected offset %d", topic, p, it.Gap, next)
			}
			gaps[p] = append(gaps[p], it.Gap)
			next = it.Gap.To + 1
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if next != head.End+1 {
			t.Fatalf("%s/%d: scan ended at %d, head at %d", topic, p, next, head.End)
		}
	}
	return recs, gaps
}

// sameRecords compares consumer and archive records field by field,
// keeping null distinct from empty.
func sameRecords(t testing.TB, topic string, want, got map[int32][]consumed) {
	t.Helper()
	var ps []int32
	for p := range want {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	for _, p := range ps {
		w, g := want[p], got[p]
		if len(w) != len(g) {
			t.Fatalf("%s/%d: consumer saw %d records, archive has %d", topic, p, len(w), len(g))
		}
		for i := range w {
			if !reflect.DeepEqual(w[i], g[i]) || (w[i].Key == nil) != (g[i].Key == nil) || (w[i].Value == nil) != (g[i].Value == nil) {
				t.Fatalf("%s/%d offset %d differs:\nconsumer %+v\narchive  %+v", topic, p, w[i].Offset, w[i], g[i])
			}
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok && len(got[p]) > 0 {
			t.Fatalf("%s/%d: archive has records the consumer did not see", topic, p)
		}
	}
}

// runOnce runs an archiver with Once and fails the test on error.
func runOnce(t testing.TB, c *kfake.Cluster, st store.Store, mod func(*Options)) {
	t.Helper()
	if err := runOnceErr(t, c, st, mod); err != nil {
		t.Fatalf("archive --once: %v", err)
	}
}

// runOnceErr is runOnce returning the run's error.
func runOnceErr(t testing.TB, c *kfake.Cluster, st store.Store, mod func(*Options)) error {
	t.Helper()
	o := Options{KafkaOpts: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, Store: st, Once: true,
		Logger: testLogger(t), WriterID: "test"}
	if mod != nil {
		mod(&o)
	}
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return a.Run(ctx)
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func openArchive(t testing.TB, st store.Store) *manifest.Archive {
	t.Helper()
	a, err := manifest.Open(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// archivedRecords sums the records archived for the current incarnation.
func archivedRecords(t testing.TB, st store.Store, topic string) int64 {
	t.Helper()
	ctx := context.Background()
	a, err := manifest.Open(ctx, st)
	if err != nil {
		return 0
	}
	incs, err := a.Incarnations(ctx, topic)
	if err != nil || len(incs) == 0 {
		return 0
	}
	id := incs[len(incs)-1].TopicID
	ps, _ := a.Partitions(ctx, topic, id)
	var n int64
	for _, p := range ps {
		if h, err := a.Partition(topic, id, p).Head(ctx); err == nil && h != nil {
			n += h.TotalRecords
		}
	}
	return n
}

type storeT = store.Store
