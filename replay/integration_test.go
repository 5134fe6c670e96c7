//go:build integration

package replay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/internal/kfaketest"
	"github.com/kbackup/kbackup/internal/restoretest"
	"github.com/kbackup/kbackup/kafkaconn"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/snapshot"
	"github.com/kbackup/kbackup/snapshot/dirprov"
	"github.com/kbackup/kbackup/testenv"
)

// liveEqualsArchive checks with the independent client (librdkafka,
// read_committed) that every partition of topic holds exactly the
// records want[p], each at its original offset.
func liveEqualsArchive(t *testing.T, k *testenv.Kafka, topic string, want map[int32][]restoretest.Rec) {
	t.Helper()
	got := map[int32][]testenv.Record{}
	for _, r := range testenv.RdkConsume(t, k.Brokers(), topic, testenv.ReadCommitted) {
		got[r.Partition] = append(got[r.Partition], r)
	}
	for p, ws := range want {
		gs := got[p]
		if len(gs) != len(ws) {
			t.Fatalf("%s/%d: the live log has %d records, want %d (the archive's)", topic, p, len(gs), len(ws))
		}
		for i, w := range ws {
			g := gs[i]
			var hs []manifest.Header
			for _, h := range g.Headers {
				hs = append(hs, manifest.Header{Key: h.Key, Value: h.Value})
			}
			gr := restoretest.Rec{Offset: g.Offset, Timestamp: g.Timestamp, Key: g.Key, Value: g.Value, Headers: hs}
			if g.Offset != w.Offset || !gr.EqualContent(w) {
				t.Fatalf("%s/%d: live record %d is offset %d %q=%q ts %d, the archive has offset %d %q=%q ts %d",
					topic, p, i, g.Offset, g.Key, g.Value, g.Timestamp, w.Offset, w.Key, w.Value, w.Timestamp)
			}
		}
	}
}

// upTo keeps the records before the first whose timestamp is after ms
// (--to semantics).
func upTo(rs []restoretest.Rec, ms int64) []restoretest.Rec {
	for i, r := range rs {
		if r.Timestamp > ms {
			return rs[:i]
		}
	}
	return rs
}

// truncateTail cuts the tail of every segment of topic's partitions in a
// stopped broker's data directory, as a power loss that lost the page
// cache would, and removes what would let the broker trust the log: the
// clean shutdown marker, the offset and time indexes and the recovery and
// high-watermark checkpoints. The broker then recovers the log at start
// and truncates it at the last complete batch.
func truncateTail(t *testing.T, dataDir, topic string, keep float64) {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(dataDir, topic+"-*"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no partition directories of %s in %s: %v", topic, dataDir, err)
	}
	for _, d := range dirs {
		logs, _ := filepath.Glob(filepath.Join(d, "*.log"))
		for _, l := range logs {
			fi, err := os.Stat(l)
			if err != nil {
				t.Fatal(err)
			}
			cut := int64(float64(fi.Size()) * keep)
			if err := os.Truncate(l, cut); err != nil {
				t.Fatal(err)
			}
			t.Logf("truncated %s from %d to %d bytes", l, fi.Size(), cut)
		}
		for _, pat := range []string{"*.index", "*.timeindex", "*.snapshot"} {
			fs, _ := filepath.Glob(filepath.Join(d, pat))
			for _, f := range fs {
				_ = os.Remove(f)
			}
		}
	}
	for _, f := range []string{".kafka_cleanshutdown", "recovery-point-offset-checkpoint", "replication-offset-checkpoint"} {
		if err := os.Remove(filepath.Join(dataDir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
}

// TestRepairTruncatedLogRealKafka: records archived, then the broker
// stopped and the tail of its segment files cut (lost acknowledged
// writes); after the start the partitions end early. repair --dry-run
// lists them; repair appends the lost records at their original offsets
// (checked record by record with the independent client); a rerun does
// nothing.
func TestRepairTruncatedLogRealKafka(t *testing.T) {
	testenv.RdkAvailable(t)
	k := testenv.StartKafka(t, testenv.KafkaOptions{Brokers: 1})
	topic := testenv.TopicName(t, "lost")
	k.CreateTopic(t, topic, 2, 1, map[string]string{"retention.ms": "-1"})
	t0 := time.Now().Add(-time.Hour).UnixMilli()
	for i := 0; i < 300; i++ { // one batch per record: the cut falls between many batches
		var recs []testenv.Record
		for p := int32(0); p < 2; p++ {
			r := testenv.Record{Topic: topic, Partition: p, Timestamp: t0 + int64(i)*10, Key: fmt.Appendf(nil, "k%d", i), Value: bytes.Repeat([]byte{byte(i)}, 100)}
			if i%7 == 0 {
				r.Key, r.Headers = nil, []testenv.Header{{Key: "h", Value: nil}, {Key: "h", Value: []byte{}}}
			}
			recs = append(recs, r)
		}
		testenv.ProduceSync(t, k.Brokers(), recs, kgo.RecordDeliveryTimeout(0)) // old timestamps: no delivery timeout
	}
	st, _ := kfaketest.Store(t)
	restoretest.ArchiveOnce(t, k.Brokers(), st, restoretest.Topics(t, regexp.QuoteMeta(topic)), 4<<10, 64<<10)
	want := map[int32][]restoretest.Rec{}
	for p := int32(0); p < 2; p++ {
		want[p], _ = restoretest.Archived(t, st, topic, p)
		if len(want[p]) != 300 {
			t.Fatalf("archived %d records of partition %d", len(want[p]), p)
		}
	}

	k.Stop(t)
	truncateTail(t, k.Cluster().DataDir(1), topic, 0.6)
	k.StartAll(t)
	k.WaitInSync(t, 3*time.Minute)

	o := Options{Store: st, KafkaOpts: []kgo.Opt{kgo.SeedBrokers(k.Brokers()...)}, Topics: restoretest.Topics(t, regexp.QuoteMeta(topic)), Logger: kfaketest.Logger(t)}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dry := o
	dry.DryRun = true
	sum, err := Repair(ctx, dry)
	if err != nil {
		t.Fatal(err)
	}
	var report strings.Builder
	_ = sum.WriteReport(&report)
	t.Logf("dry run:\n%s", report.String())
	for _, p := range sum.Partitions {
		if p.State != StatePending || p.LiveEnd >= 300 || p.LiveEnd <= 0 || p.From != p.LiveEnd || p.To != 299 {
			t.Fatalf("truncation not seen as expected: %+v", p)
		}
	}
	truncated := map[int32][]restoretest.Rec{}
	for _, p := range sum.Partitions {
		truncated[p.Partition] = want[p.Partition][:p.LiveEnd]
	}
	liveEqualsArchive(t, k, topic, truncated) // the dry run wrote nothing

	if sum, err = Repair(ctx, o); err != nil {
		t.Fatal(err)
	}
	report.Reset()
	_ = sum.WriteReport(&report)
	t.Logf("repair:\n%s", report.String())
	liveEqualsArchive(t, k, topic, want)

	if sum, err = Repair(ctx, o); err != nil {
		t.Fatal(err)
	}
	for _, p := range sum.Partitions {
		if p.State != StateUpToDate || p.Produced != 0 {
			t.Fatalf("rerun: %+v", p)
		}
	}
}

// rfControl controls the brokers of a cluster the test started.
func rfControl(c *testenv.Cluster) snapshot.Control {
	return snapshot.FuncControl{
		StopFn: func(_ context.Context, b snapshot.Broker) error { return c.StopBroker(b.ID, 60*time.Second) },
		StartFn: func(ctx context.Context, b snapshot.Broker) error {
			if c.Pid(b.ID) != 0 {
				return nil
			}
			ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
			defer cancel()
			return c.Restart(ctx, b.ID)
		},
		RunningFn: func(_ context.Context, b snapshot.Broker) (bool, error) { return c.Pid(b.ID) != 0, nil },
	}
}

// TestRollForwardRealKafka: a cold cycle of a real 3-broker cluster with
// the dir provider; more records; archive; snapshot restore (back to the
// cycle); roll-forward to a time T: the cluster holds exactly the
// archive's records up to T, at their original offsets (checked with the
// independent client). A rerun is a no-op; a roll-forward to the end
// continues.
func TestRollForwardRealKafka(t *testing.T) {
	testenv.RdkAvailable(t)
	k := testenv.StartKafka(t, testenv.KafkaOptions{Brokers: 3})
	c := k.Cluster()
	topic := testenv.TopicName(t, "rollfwd")
	k.CreateTopic(t, topic, 3, 3, map[string]string{"retention.ms": "-1"})
	t0 := time.Now().Add(-time.Hour).UnixMilli()
	produce := func(from, to int) {
		var recs []testenv.Record
		for i := from; i < to; i++ {
			for p := int32(0); p < 3; p++ {
				recs = append(recs, testenv.Record{Topic: topic, Partition: p, Timestamp: t0 + int64(i)*1000,
					Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "v%d-%d", p, i), Headers: []testenv.Header{{Key: "i", Value: fmt.Append(nil, i)}}})
			}
		}
		testenv.ProduceSync(t, k.Brokers(), recs, kgo.RequiredAcks(kgo.AllISRAcks()), kgo.RecordDeliveryTimeout(0))
	}
	produce(0, 40)

	y := fmt.Sprintf(`
cluster: it
store: file:///unused
kafka: {brokers: [%q]}
provider: {type: dir, dir: {path: /unused}}
hooks: {stop: "false", start: "false", status: "false"}
brokers:
  - {id: 1, host: 127.0.0.1, dirs: [%q]}
  - {id: 2, host: 127.0.0.1, dirs: [%q]}
  - {id: 3, host: 127.0.0.1, dirs: [%q]}
timeouts: {stop: 90s, start: 4m, healthy: 4m}
`, k.BrokerList(), c.DataDir(1), c.DataDir(2), c.DataDir(3))
	cfg, err := snapshot.ParseConfig([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	st, _ := kfaketest.Store(t) // the archive and the cycle records
	prov, err := dirprov.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	kc, err := snapshot.NewKafkaCluster(context.Background(), kafkaconn.Options{Brokers: k.Brokers()})
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	env := snapshot.Env{Config: cfg, Store: st, Provider: prov, Cluster: kc, Control: rfControl(c), Logger: kfaketest.Logger(t), Poll: 500 * time.Millisecond}
	ctx := context.Background()
	cyc, err := snapshot.Run(ctx, snapshot.RunOptions{Env: env, Mode: snapshot.ModeCold})
	if err != nil {
		t.Fatal(err)
	}
	k.WaitInSync(t, 3*time.Minute)

	produce(40, 120)
	restoretest.ArchiveOnce(t, k.Brokers(), st, restoretest.Topics(t, regexp.QuoteMeta(topic)), 4<<10, 64<<10)
	want := map[int32][]restoretest.Rec{}
	for p := int32(0); p < 3; p++ {
		want[p], _ = restoretest.Archived(t, st, topic, p)
	}

	res, err := snapshot.Restore(ctx, snapshot.RestoreOptions{Env: env, Cycle: cyc.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Mismatches) > 0 {
		t.Fatalf("restore mismatches: %v", res.Mismatches)
	}
	k.WaitInSync(t, 3*time.Minute)
	atCycle := map[int32][]restoretest.Rec{}
	for p := int32(0); p < 3; p++ {
		atCycle[p] = want[p][:40]
	}
	liveEqualsArchive(t, k, topic, atCycle)

	cycle, err := snapshot.LoadCycle(ctx, st, "it", cyc.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := cycle.Restorable("it"); err != nil {
		t.Fatal(err)
	}
	T := t0 + 85*1000 + 500 // records 0..85
	o := Options{Store: st, KafkaOpts: []kgo.Opt{kgo.SeedBrokers(k.Brokers()...)}, Topics: restoretest.Topics(t, regexp.QuoteMeta(topic)),
		ToTime: T, HasToTime: true, Logger: kfaketest.Logger(t)}
	rctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	sum, err := RollForward(rctx, o, cycle)
	if err != nil {
		t.Fatal(err)
	}
	var report strings.Builder
	_ = sum.WriteReport(&report)
	t.Logf("roll-forward:\n%s", report.String())
	toT := map[int32][]restoretest.Rec{}
	for p := int32(0); p < 3; p++ {
		toT[p] = upTo(want[p], T)
		if len(toT[p]) != 86 {
			t.Fatalf("partition %d: %d archived records up to T", p, len(toT[p]))
		}
	}
	liveEqualsArchive(t, k, topic, toT)

	if sum, err = RollForward(rctx, o, cycle); err != nil {
		t.Fatal(err)
	}
	for _, p := range sum.Partitions {
		if p.State != StateUpToDate {
			t.Fatalf("rerun: %+v", p)
		}
	}
	o.ToTime, o.HasToTime, o.ToOffset, o.HasToOffset = 0, false, 0, false
	if _, err = RollForward(rctx, o, cycle); err != nil {
		t.Fatal(err)
	}
	liveEqualsArchive(t, k, topic, want)
}
