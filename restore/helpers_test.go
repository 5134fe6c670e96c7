package restore

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"sort"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/internal/kfaketest"
	"github.com/kbackup/kbackup/internal/restoretest"
	"github.com/kbackup/kbackup/internal/topicsel"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
)

// TestMain runs the package's tests with KBACKUP_TEST_PRODUCER, when set,
// as the default producer (make test runs them again with franz-go's).
func TestMain(m *testing.M) {
	if p := os.Getenv("KBACKUP_TEST_PRODUCER"); p != "" {
		DefaultProducer = p
	}
	os.Exit(m.Run())
}

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

// mustSel selects the topics whose whole name matches expr.
func mustSel(t testing.TB, expr string) *topicsel.Selector { return restoretest.Topics(t, expr) }

// The records compared and the archiving are package restoretest's.
type rec = restoretest.Rec

// archiveOnce archives the source cluster (small blocks and segments, so
// that seeks have something to skip).
func archiveOnce(t testing.TB, c *kfake.Cluster, st store.Store) {
	restoretest.ArchiveOnce(t, c.ListenAddrs(), st, nil, 2<<10, 16<<10)
}

func archived(t testing.TB, st store.Store, topic string, partition int32) ([]rec, []manifest.Gap) {
	return restoretest.Archived(t, st, topic, partition)
}

func readTopic(t testing.TB, c *kfake.Cluster, topic string) map[int32][]rec {
	return restoretest.ReadTopic(t, c, topic)
}

func sameContent(t testing.TB, what string, want, got []rec) {
	restoretest.SameContent(t, what, want, got)
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
	return Options{Store: f.st, KafkaOpts: []kgo.Opt{kgo.SeedBrokers(tgt.ListenAddrs()...)}, Topics: mustSel(t, f.topic),
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
