package replay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbackup/kbackup/internal/kfaketest"
	"github.com/kbackup/kbackup/internal/lease"
	"github.com/kbackup/kbackup/internal/restoretest"
	"github.com/kbackup/kbackup/snapshot"
	"github.com/kbackup/kbackup/store"
)

// lossFixture simulates a partition that lost acknowledged writes, on
// kfake (which cannot truncate a log): a persistent cluster gets the first
// records of every partition, is closed, and its data directory is copied
// (the "short" state, with the same topic id); the cluster is reopened,
// gets the rest, and is archived. Opening the copy gives a live log that
// ends before the archive, of the same topic incarnation.
type lossFixture struct {
	topic    string
	parts    int32
	st       store.Store
	short    string // data dir of the short state
	t0       int64
	produced map[int32][]*kgo.Record
}

func copyDir(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, fi.Mode())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// produceN produces n records per partition with timestamps t0+i*1000
// (i counting from first), null/empty keys and headers.
func produceN(t testing.TB, c *kfake.Cluster, topic string, parts int32, first, n int, t0 int64) map[int32][]*kgo.Record {
	t.Helper()
	cl := kfaketest.Client(t, c, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	out := map[int32][]*kgo.Record{}
	for i := first; i < first+n; i++ {
		for p := int32(0); p < parts; p++ {
			r := &kgo.Record{Topic: topic, Partition: p, Timestamp: time.UnixMilli(t0 + int64(i)*1000), Value: []byte(fmt.Sprintf("v%d-%d", p, i))}
			switch i % 3 {
			case 0:
				r.Key = []byte(fmt.Sprintf("k%d", i))
			case 1:
				r.Key, r.Value = []byte{}, nil
			}
			if i%4 == 0 {
				r.Headers = []kgo.RecordHeader{{Key: "h", Value: []byte("1")}, {Key: "h", Value: nil}}
			}
			if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
				t.Fatal(err)
			}
			out[p] = append(out[p], r)
		}
	}
	return out
}

// buildLoss: keep[p] records of partition p survive; total are archived.
func buildLoss(t testing.TB, topic string, parts int32, keep int, total int, abortAt int) *lossFixture {
	t.Helper()
	f := &lossFixture{topic: topic, parts: parts, t0: 1_700_000_000_000}
	f.st, _ = kfaketest.Store(t)
	dir := filepath.Join(t.TempDir(), "kfake")
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DataDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	kfaketest.CreateTopic(t, c, topic, parts, map[string]*string{"retention.ms": kmsg.StringPtr("-1")})
	produceN(t, c, topic, parts, 0, keep, f.t0)
	c.Close()
	f.short = filepath.Join(t.TempDir(), "short")
	copyDir(t, dir, f.short)
	c, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.DataDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rest := total - keep
	if abortAt > 0 {
		produceN(t, c, topic, parts, keep, abortAt-keep, f.t0)
		txn := kfaketest.Client(t, c, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionalID("txn-"+topic))
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for p := int32(0); p < parts; p++ {
			txn.Produce(context.Background(), &kgo.Record{Topic: topic, Partition: p, Value: []byte("aborted")}, nil)
		}
		if err := txn.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := txn.EndTransaction(context.Background(), kgo.TryAbort); err != nil {
			t.Fatal(err)
		}
		rest = total - abortAt
		produceN(t, c, topic, parts, abortAt, rest, f.t0)
	} else {
		produceN(t, c, topic, parts, keep, rest, f.t0)
	}
	restoretest.ArchiveOnce(t, c.ListenAddrs(), f.st, nil, 2<<10, 16<<10)
	return f
}

// live opens a copy of the short state.
func (f *lossFixture) live(t testing.TB) *kfake.Cluster {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "live")
	copyDir(t, f.short, dir)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DataDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func (f *lossFixture) opts(t testing.TB, c *kfake.Cluster) Options {
	return Options{Store: f.st, KafkaOpts: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, Topics: restoretest.Topics(t, f.topic), Logger: kfaketest.Logger(t)}
}

// checkPrefix: every live partition holds exactly the archive's records
// before end(p) (the archive's end when end is nil), at the same offsets.
func (f *lossFixture) checkPrefix(t testing.TB, c *kfake.Cluster, end func(p int32) int64) {
	t.Helper()
	got := restoretest.ReadTopic(t, c, f.topic)
	for p := int32(0); p < f.parts; p++ {
		want, _ := restoretest.Archived(t, f.st, f.topic, p)
		if end != nil {
			var cut []restoretest.Rec
			for _, r := range want {
				if r.Offset < end(p) {
					cut = append(cut, r)
				}
			}
			want = cut
		}
		restoretest.SameContent(t, fmt.Sprintf("%s/%d", f.topic, p), want, got[p])
	}
}

func TestRepairAppendsLostRecords(t *testing.T) {
	t.Parallel()
	f := buildLoss(t, "lost", 3, 40, 300, 0)
	c := f.live(t)
	ctx := context.Background()

	// Dry run: lists the partitions and ranges, writes nothing.
	o := f.opts(t, c)
	o.DryRun = true
	sum, err := Repair(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Partitions) != 3 {
		t.Fatalf("plan has %d partitions", len(sum.Partitions))
	}
	for _, p := range sum.Partitions {
		if p.State != StatePending || p.From != 40 || p.To != 299 || p.LiveEnd != 40 || p.ArchiveEnd != 300 {
			t.Fatalf("plan %+v", p)
		}
	}
	var buf bytes.Buffer
	if err := sum.WriteReport(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "40..299") || !strings.Contains(buf.String(), "dry run") {
		t.Fatalf("report:\n%s", buf.String())
	}
	f.checkPrefix(t, c, func(int32) int64 { return 40 })

	sum, err = Repair(ctx, f.opts(t, c))
	if err != nil {
		t.Fatal(err)
	}
	if sum.Records != 3*260 {
		t.Fatalf("replayed %d records, want %d", sum.Records, 3*260)
	}
	f.checkPrefix(t, c, nil)

	// A rerun is a no-op.
	sum, err = Repair(ctx, f.opts(t, c))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range sum.Partitions {
		if p.State != StateUpToDate || p.Produced != 0 {
			t.Fatalf("rerun: %+v", p)
		}
	}
	f.checkPrefix(t, c, nil)
}

// TestRepairResumesAfterCancel: a repair cancelled mid-way leaves a prefix
// at the right offsets; running it again completes it.
func TestRepairResumesAfterCancel(t *testing.T) {
	t.Parallel()
	f := buildLoss(t, "resume", 2, 10, 3000, 0)
	c := f.live(t)
	ctx, cancel := context.WithCancel(context.Background())
	cl := kfaketest.Client(t, c, kgo.ConsumeTopics(f.topic), kgo.ConsumeResetOffset(kgo.NewOffset().At(100)))
	go func() { // cancel once some replayed records are visible
		for ctx.Err() == nil {
			if fs := cl.PollFetches(ctx); fs.NumRecords() > 0 {
				cancel()
			}
		}
	}()
	_, err := Repair(ctx, f.opts(t, c))
	cancel()
	if err == nil {
		t.Log("repair completed before the cancel")
	}
	sum, err := Repair(context.Background(), f.opts(t, c))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range sum.Partitions {
		if p.State != StateDone && p.State != StateUpToDate {
			t.Fatalf("%+v", p)
		}
	}
	f.checkPrefix(t, c, nil)
}

func TestRepairRefusesDivergence(t *testing.T) {
	t.Parallel()
	f := buildLoss(t, "div", 2, 20, 100, 0)
	c := f.live(t)
	// After the loss, a producer wrote other records into partition 1.
	cl := kfaketest.Client(t, c, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: f.topic, Partition: 1, Value: []byte("new")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	_, err := Repair(context.Background(), f.opts(t, c))
	if err == nil || !strings.Contains(err.Error(), "div/1") || !strings.Contains(err.Error(), "diverged") || !strings.Contains(err.Error(), "nothing written") {
		t.Fatalf("err = %v", err)
	}
	// Nothing written, partition 0 included.
	got := restoretest.ReadTopic(t, c, f.topic)
	if len(got[0]) != 20 || len(got[1]) != 21 {
		t.Fatalf("live has %d and %d records", len(got[0]), len(got[1]))
	}
}

func TestRepairRefusesOtherIncarnation(t *testing.T) {
	t.Parallel()
	f := buildLoss(t, "inc", 1, 5, 20, 0)
	c := kfaketest.Cluster(t)
	kfaketest.CreateTopic(t, c, f.topic, 1, nil)
	_, err := Repair(context.Background(), f.opts(t, c))
	if err == nil || !strings.Contains(err.Error(), "topic id") {
		t.Fatalf("err = %v", err)
	}
	// And a missing topic.
	c2 := kfaketest.Cluster(t)
	_, err = Repair(context.Background(), f.opts(t, c2))
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("err = %v", err)
	}
	// Restore flags a repair cannot honour (--rename, ...) have no field in
	// Options: the CLI refuses them (cmd/kbackup/cli
	// TestRestoreRollForwardCLI).
}

// TestRepairStopsAtGap: an aborted transaction in the lost range is an
// archive gap a producer cannot reproduce: the records before it are
// appended, the partition is reported failed with the gap.
func TestRepairStopsAtGap(t *testing.T) {
	t.Parallel()
	f := buildLoss(t, "gap", 1, 10, 60, 30)
	c := f.live(t)
	sum, err := Repair(context.Background(), f.opts(t, c))
	var re *Error
	if !errors.As(err, &re) || len(re.Failed) != 1 || !strings.Contains(err.Error(), "gap") {
		t.Fatalf("err = %v", err)
	}
	p := sum.Partitions[0]
	if p.State != StateGap || p.Gap == nil || p.Gap.From != 30 || p.Produced != 20 {
		t.Fatalf("%+v", p)
	}
	f.checkPrefix(t, c, func(int32) int64 { return 30 })
	// A rerun says the same and writes nothing.
	sum, err = Repair(context.Background(), f.opts(t, c))
	if err == nil || sum.Partitions[0].Produced != 0 {
		t.Fatalf("rerun: %v %+v", err, sum.Partitions[0])
	}
}

// testCycle is a cycle record as snapshot run writes it.
func testCycle(topic string, parts int32, lo, hi int64) *snapshot.CycleRecord {
	hw, after := map[string]int64{}, map[string]int64{}
	for p := int32(0); p < parts; p++ {
		hw[fmt.Sprint(p)], after[fmt.Sprint(p)] = lo, hi
	}
	return &snapshot.CycleRecord{FormatVersion: snapshot.FormatVersion, ID: "20261122T010000Z-0badcafe", Cluster: "test", State: snapshot.StateComplete,
		Mode: snapshot.ModeCold, HighWatermarks: map[string]map[string]int64{topic: hw}, HighWatermarksAfter: map[string]map[string]int64{topic: after}}
}

// TestRollForward: a cluster back at the cycle's state is rolled forward
// to a time T: it holds exactly the archive up to T, at the original
// offsets; a rerun is a no-op, a later T continues.
func TestRollForward(t *testing.T) {
	t.Parallel()
	f := buildLoss(t, "rf", 2, 50, 200, 0)
	c := f.live(t) // the cluster as restored from the cycle
	cyc := testCycle(f.topic, 2, 50, 50)
	ctx := context.Background()
	o := f.opts(t, c)
	o.ToTime, o.HasToTime = f.t0+120*1000+500, true // records 0..120
	sum, err := RollForward(ctx, o, cyc)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range sum.Partitions {
		if p.State != StateDone || p.From != 50 || p.To != 120 || p.Produced != 71 || p.CycleLo != 50 {
			t.Fatalf("%+v", p)
		}
	}
	f.checkPrefix(t, c, func(int32) int64 { return 121 })

	sum, err = RollForward(ctx, o, cyc)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range sum.Partitions {
		if p.State != StateUpToDate {
			t.Fatalf("rerun %+v", p)
		}
	}
	// Further: to the archive's end.
	o.ToTime, o.HasToTime, o.ToOffset, o.HasToOffset = 0, false, 0, false
	if _, err := RollForward(ctx, o, cyc); err != nil {
		t.Fatal(err)
	}
	f.checkPrefix(t, c, nil)
}

func TestRollForwardRefuses(t *testing.T) {
	t.Parallel()
	f := buildLoss(t, "rfr", 2, 50, 100, 0)
	c := f.live(t)
	ctx := context.Background()
	// The live log ends before the cycle's range: not restored from it.
	_, err := RollForward(ctx, f.opts(t, c), testCycle(f.topic, 2, 60, 70))
	if err == nil || !strings.Contains(err.Error(), "rfr/0") || !strings.Contains(err.Error(), "before the cycle's high watermark 60") {
		t.Fatalf("err = %v", err)
	}
	// Inside a range that allows it, but the --to bound is before the live end.
	o := f.opts(t, c)
	o.ToOffset, o.HasToOffset = 30, true
	_, err = RollForward(ctx, o, testCycle(f.topic, 2, 40, 45))
	if err == nil || !strings.Contains(err.Error(), "after both the cycle's range") {
		t.Fatalf("err = %v", err)
	}
	// A cycle that is not complete.
	cyc := testCycle(f.topic, 2, 50, 50)
	cyc.State = snapshot.StateFailed
	if _, err := RollForward(ctx, f.opts(t, c), cyc); !errors.Is(err, snapshot.ErrNotRestorable) {
		t.Fatalf("err = %v", err)
	}
	// A cycle of another Kafka cluster.
	cyc = testCycle(f.topic, 2, 50, 50)
	cyc.ClusterID = "another-cluster"
	if _, err := RollForward(ctx, f.opts(t, c), cyc); err == nil || !strings.Contains(err.Error(), "another-cluster") {
		t.Fatalf("err = %v", err)
	}
	// A partition the cycle did not record.
	cyc = testCycle(f.topic, 1, 50, 50)
	if _, err := RollForward(ctx, f.opts(t, c), cyc); err == nil || !strings.Contains(err.Error(), "rfr/1") {
		t.Fatalf("err = %v", err)
	}
	got := restoretest.ReadTopic(t, c, f.topic)
	if len(got[0]) != 50 || len(got[1]) != 50 {
		t.Fatal("a refused roll-forward wrote records")
	}
}

// TestRepairExclusive: a partition another live process repairs (it holds
// the partition's replay lease) is refused, naming that process; the other
// partitions are repaired, and a rerun once it ended completes the rest.
func TestRepairExclusive(t *testing.T) {
	t.Parallel()
	f := buildLoss(t, "excl", 3, 40, 300, 0)
	c := f.live(t)
	ctx := context.Background()
	md, err := kadm.NewClient(kfaketest.Client(t, c)).Metadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	o := f.opts(t, c)
	if err := o.setDefaults("repair"); err != nil {
		t.Fatal(err)
	}
	other := newLeases(&o, md.Cluster)
	defer lease.Track(other.Me)()
	held, err := other.Acquire(ctx, "lanes/excl/0000000001", 1)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := Repair(ctx, f.opts(t, c))
	var re *Error
	if !errors.As(err, &re) || len(re.Failed) != 1 || !strings.Contains(err.Error(), "excl/1") || !strings.Contains(err.Error(), other.Me.String()) {
		t.Fatalf("repair while another holds excl/1: %v", err)
	}
	for _, p := range sum.Partitions {
		if want := p.Partition != 1; (p.State == StateDone) != want {
			t.Fatalf("%s: %s", p.Name(), p.State)
		}
	}
	held.Release()
	if _, err := Repair(ctx, f.opts(t, c)); err != nil {
		t.Fatal(err)
	}
	f.checkPrefix(t, c, nil)
}
