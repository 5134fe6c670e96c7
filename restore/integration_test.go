//go:build integration

package restore

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/internal/kfaketest"
	"github.com/kbackup/kbackup/internal/restoretest"
	"github.com/kbackup/kbackup/internal/topicsel"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/filestore"
	"github.com/kbackup/kbackup/store/s3store"
	"github.com/kbackup/kbackup/store/storefault"
	"github.com/kbackup/kbackup/testenv"
)

// realArchiveOnce runs the archiver's Once mode against the real cluster
// for the named topics (small blocks and segments, so that seeks and a
// killed restore have something to skip).
func realArchiveOnce(t *testing.T, k *testenv.Kafka, st store.Store, topics ...string) {
	t.Helper()
	var exprs []string
	for _, tp := range topics {
		exprs = append(exprs, regexp.QuoteMeta(tp))
	}
	sel, err := topicsel.Compile(exprs, nil)
	if err != nil {
		t.Fatal(err)
	}
	restoretest.ArchiveOnce(t, k.Brokers(), st, sel, 4<<10, 64<<10)
}

// realRestore runs a restore into the cluster at brokers.
func realRestore(t *testing.T, st store.Store, brokers []string, topic, dst string, mod func(*Options)) *Summary {
	t.Helper()
	o := realOpts(t, st, brokers, topic, dst)
	if mod != nil {
		mod(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sum, err := Run(ctx, o)
	if err != nil {
		t.Fatalf("restore %s -> %s: %v", topic, dst, err)
	}
	return sum
}

// realOpts are the options of a restore of topic as dst into brokers (a
// single-node cluster: replication factor 1).
func realOpts(t testing.TB, st store.Store, brokers []string, topic, dst string) Options {
	return Options{Store: st, KafkaOpts: []kgo.Opt{kgo.SeedBrokers(brokers...)}, Topics: mustSel(t, regexp.QuoteMeta(topic)),
		Rename: map[string]string{topic: dst}, ReplicationFactor: 1, Logger: testLogger(t), CheckpointInterval: 100 * time.Millisecond}
}

// targetEqualsArchive checks, with the independent client (librdkafka,
// read_committed) reading the target, that every partition of dst holds
// exactly want[p] (archived records): same order, key, value, headers,
// timestamp (CreateTime), partition, target offsets 0, 1, 2, ...
func targetEqualsArchive(t *testing.T, brokers []string, dst string, want map[int32][]rec) {
	t.Helper()
	got := map[int32][]testenv.Record{}
	for _, r := range testenv.RdkConsume(t, brokers, dst, testenv.ReadCommitted) {
		got[r.Partition] = append(got[r.Partition], r)
	}
	for p := range got {
		if _, ok := want[p]; !ok && len(got[p]) > 0 {
			t.Fatalf("%s/%d: %d records restored into a partition the archive has none for", dst, p, len(got[p]))
		}
	}
	for p, ws := range want {
		gs := got[p]
		if len(gs) != len(ws) {
			t.Fatalf("%s/%d: archive has %d records, the independent client read %d from the target", dst, p, len(ws), len(gs))
		}
		for i, w := range ws {
			g := gs[i]
			if g.Offset != int64(i) || g.Partition != p || g.Timestamp != w.Timestamp || g.TimestampType != "CreateTime" ||
				!sameRdk(w, g) {
				t.Fatalf("%s/%d record %d (source offset %d) differs:\narchive %+v\ntarget  %s", dst, p, i, w.Offset, w, g)
			}
		}
	}
}

// sameRdk compares key, value and headers (null distinct from empty).
func sameRdk(w rec, g testenv.Record) bool {
	if !bytes.Equal(w.Key, g.Key) || (w.Key == nil) != (g.Key == nil) || !bytes.Equal(w.Value, g.Value) ||
		(w.Value == nil) != (g.Value == nil) || len(w.Headers) != len(g.Headers) {
		return false
	}
	for i, h := range w.Headers {
		gh := g.Headers[i]
		if h.Key != gh.Key || !bytes.Equal(h.Value, gh.Value) || (h.Value == nil) != (gh.Value == nil) {
			return false
		}
	}
	return true
}

// archivedAll reads every partition (0..parts-1) of topic from the archive.
func archivedAll(t *testing.T, st store.Store, topic string, parts int32) map[int32][]rec {
	t.Helper()
	out := map[int32][]rec{}
	for p := int32(0); p < parts; p++ {
		out[p], _ = archived(t, st, topic, p)
	}
	return out
}

// TestRestoreRealKafka proves the restore against real Kafka: topics from
// a 3-broker cluster, archived to MinIO, restored renamed into a second
// (single-node) cluster and read back with the independent client.
func TestRestoreRealKafka(t *testing.T) {
	k := testenv.UseKafka(t)
	s3 := testenv.UseMinIO(t)
	testenv.RdkAvailable(t)
	k2 := testenv.StartKafka(t, testenv.KafkaOptions{Brokers: 1})
	brokers, brokers2 := k.Brokers(), k2.Brokers()
	ctx := context.Background()

	// Everything is produced before one archive run.
	fid := testenv.TopicName(t, "fid") // p0: every codec; p1: transactions
	k.CreateTopic(t, fid, 2, 3, nil)
	testenv.ProduceEveryCodec(t, brokers, fid, 0)
	testenv.ProduceTxnMix(t, brokers, fid, 1)
	testenv.RdkProduce(t, brokers, fid, testenv.InterestingRecords(fid, 1, "after-txn"), testenv.ProduceOptions{Idempotent: true})

	win := testenv.TopicName(t, "win") // out-of-order timestamps
	k.CreateTopic(t, win, 1, 3, nil)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second).UnixMilli()
	var wrecs []testenv.Record
	for i := 0; i < 300; i++ {
		ts := t0 + int64(i)*1000
		if i%5 == 4 {
			ts -= 3500
		}
		wrecs = append(wrecs, testenv.Record{Partition: 0, Timestamp: ts, Key: fmt.Appendf(nil, "k%d", i%7), Value: fmt.Appendf(nil, "w%d", i)})
	}
	testenv.RdkProduce(t, brokers, win, wrecs, testenv.ProduceOptions{Idempotent: true, Compression: "lz4"})

	cmp := testenv.TopicName(t, "cmp") // compacted, with a group inside a gap
	k.CreateTopic(t, cmp, 1, 3, testenv.CompactionConfigs())
	testenv.ProduceCompactable(t, brokers, cmp, 0, 5, 30)
	_, cgaps := testenv.WaitCompactionGaps(t, brokers, cmp, 0, 2*time.Minute)
	var gap [2]int64 // the widest interior gap: a record before and after it
	for _, g := range cgaps {
		if g[0] > 0 && g[1]-g[0] > gap[1]-gap[0] {
			gap = g
		}
	}
	if gap[1] == 0 {
		t.Fatalf("no compaction gap after offset 0: %v", cgaps)
	}
	groupAt := map[string]int64{"it-gap": gap[0], "it-gap-end": gap[1] - 1, "it-before-gap": gap[0] - 1}
	for g, off := range groupAt {
		offs := kadm.Offsets{}
		offs.Add(kadm.Offset{Topic: cmp, Partition: 0, At: off, LeaderEpoch: -1})
		resp, err := k.Admin(t).CommitOffsets(ctx, g, offs)
		if err == nil {
			err = resp.Error()
		}
		if err != nil {
			t.Fatalf("commit %s: %v", g, err)
		}
	}

	st := s3.Store(t)
	realArchiveOnce(t, k, st, fid, win, cmp)

	t.Run("fidelity-renamed-into-second-cluster", func(t *testing.T) {
		want := archivedAll(t, st, fid, 2)
		// The archive is what the source holds (independent client).
		src := testenv.RdkConsume(t, brokers, fid, testenv.ReadCommitted)
		if n := len(want[0]) + len(want[1]); n != len(src) || len(want[0]) != 10*len(testenv.Codecs) {
			t.Fatalf("archive has %d+%d records, source %d", len(want[0]), len(want[1]), len(src))
		}
		dst := fid + "-restored"
		sum := realRestore(t, st, brokers2, fid, dst, nil)
		if len(sum.Plan.Topics) != 1 || !sum.Plan.Topics[0].Create || sum.Plan.Topics[0].Partitions != 2 {
			t.Fatalf("plan: %+v", sum.Plan.Topics)
		}
		targetEqualsArchive(t, brokers2, dst, want)
		// Transactions left gaps in the source partition; the target is
		// dense and the offset map says where each record went.
		pm := sum.OffsetMap.Partitions[1]
		if pm.SourcePartition != 1 || len(pm.Runs) < 2 || !pm.Complete {
			t.Fatalf("offset map of the transactional partition: %+v", pm)
		}
		for i, r := range want[1] {
			if to, ok := pm.TargetOf(r.Offset); !ok || to != int64(i) {
				t.Fatalf("offset map: source %d -> %d %v, want %d", r.Offset, to, ok, i)
			}
		}
	})

	t.Run("time-window-out-of-order", func(t *testing.T) {
		all := archivedAll(t, st, win, 1)
		from, to := t0+50_500, t0+200_200
		dst := win + "-window"
		sum := realRestore(t, st, brokers2, win, dst, func(o *Options) {
			o.Range.FromTime, o.Range.HasFromTime = from, true
			o.Range.ToTime, o.Range.HasToTime = to, true
		})
		want := selectSlow(all[0], &from, &to)
		if len(want) < 100 || len(want) == len(all[0]) || sum.Records != int64(len(want)) {
			t.Fatalf("window selects %d of %d records, restored %d", len(want), len(all[0]), sum.Records)
		}
		targetEqualsArchive(t, brokers2, dst, map[int32][]rec{0: want})
	})

	t.Run("compacted-whole-with-group-in-gap", func(t *testing.T) {
		all := archivedAll(t, st, cmp, 1)
		dst := cmp + "-restored"
		// A plain target topic: a compacted one would clean the restored
		// duplicates away while the test reads it.
		k2.CreateTopic(t, dst, 1, 1, nil)
		sum := realRestore(t, st, brokers2, cmp, dst, func(o *Options) { o.Groups = mustRe(t, "it-.*") })
		targetEqualsArchive(t, brokers2, dst, all)
		if len(sum.Groups) != len(groupAt) {
			t.Fatalf("groups moved: %+v", sum.Groups)
		}
		for g, off := range groupAt {
			want := int64(len(all[0])) // index of the first restored record at or after off
			for i, r := range all[0] {
				if r.Offset >= off {
					want = int64(i)
					break
				}
			}
			fo, err := k2.Admin(t).FetchOffsets(ctx, g)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := fo.Lookup(dst, 0)
			if !ok || got.At != want {
				t.Fatalf("group %s: source offset %d -> target %+v, want %d", g, off, got, want)
			}
			t.Logf("group %s: source offset %d -> target offset %d", g, off, got.At)
		}
	})

	t.Run("into-log-append-time-topic-warns", func(t *testing.T) {
		dst := win + "-lat"
		k2.CreateTopic(t, dst, 1, 1, testenv.LogAppendTimeConfigs())
		var logs kfaketest.LogBuffer
		sum := realRestore(t, st, brokers2, win, dst, func(o *Options) {
			o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		})
		if !strings.Contains(logs.String(), "LogAppendTime") || !strings.Contains(strings.Join(sum.Plan.Warnings, "\n"), "LogAppendTime") {
			t.Fatalf("no LogAppendTime warning: plan %q, logs:\n%s", sum.Plan.Warnings, logs.String())
		}
		want := archivedAll(t, st, win, 1)[0]
		got := testenv.RdkConsume(t, brokers2, dst, testenv.ReadCommitted)
		if len(got) != len(want) {
			t.Fatalf("restored %d records, archive has %d", len(got), len(want))
		}
		for i := range want {
			if !sameRdk(want[i], got[i]) || got[i].TimestampType != "LogAppendTime" {
				t.Fatalf("record %d: archive %+v, target %s", i, want[i], got[i])
			}
		}
	})

	t.Run("throughput-vs-plain-producer", func(t *testing.T) { realThroughput(t, k2) })

	t.Run("kill-9-mid-restore-then-rerun", func(t *testing.T) {
		topic := testenv.TopicName(t, "kill")
		k.CreateTopic(t, topic, 3, 3, nil)
		var recs []*kgo.Record
		for i := 0; i < 15000; i++ {
			r := &kgo.Record{Topic: topic, Partition: int32(i % 3), Key: fmt.Appendf(nil, "k%d", i%100), Value: fmt.Appendf(nil, "kill-%06d", i),
				Headers: []kgo.RecordHeader{{Key: "i", Value: fmt.Appendf(nil, "%d", i)}}}
			if i%10 == 0 {
				r.Value = nil
			}
			recs = append(recs, r)
		}
		if err := k.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner())).ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		prefix := s3.Prefix(t)
		kst, err := s3store.New(ctx, s3.StoreOptions(prefix))
		if err != nil {
			t.Fatal(err)
		}
		realArchiveOnce(t, k, kst, topic)
		want := archivedAll(t, kst, topic, 3)
		total := int64(len(want[0]) + len(want[1]) + len(want[2]))
		dst := topic + "-restored"
		ends := func() int64 { return sumEnds(k2.Admin(t), dst) }
		midway := 0
		for i := 0; i < 3 && ends() < total; i++ {
			cmd := exec.Command(os.Args[0], "-test.run=^TestRealKafkaRestoreChild$")
			cmd.Env = append(os.Environ(), "KBACKUP_CHILD_BROKERS="+k2.BrokerList(), "KBACKUP_CHILD_TOPIC="+topic, "KBACKUP_CHILD_DST="+dst,
				"KBACKUP_CHILD_PREFIX="+prefix, testenv.EnvS3Endpoint+"="+s3.Endpoint, testenv.EnvS3Bucket+"="+s3.Bucket,
				testenv.EnvS3AccessKey+"="+s3.AccessKey, testenv.EnvS3SecretKey+"="+s3.SecretKey, testenv.EnvS3Region+"="+s3.Region)
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			before := ends()
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && ends() == before; {
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
			n := ends()
			t.Logf("restore process %d killed with SIGKILL at %d of %d records in the target", i, n, total)
			if n > before && n < total {
				midway++
			}
		}
		if midway == 0 {
			t.Fatal("no restore process was killed in the middle of the restore")
		}
		sum := realRestore(t, kst, brokers2, topic, dst, nil)
		resumed := 0
		for _, p := range sum.Plan.Partitions {
			if p.State == "resume" {
				resumed++
			}
		}
		if resumed == 0 {
			t.Fatalf("the rerun resumed no partition: %+v", sum.Plan.Partitions)
		}
		targetEqualsArchive(t, brokers2, dst, want)
	})

	// A target broker dies mid-restore and comes back: the direct produce
	// path resends what was in flight to the new leaders (the same bytes
	// and sequence numbers: the brokers append each batch once) and the
	// restore completes exact, without a rerun.
	t.Run("leader-killed-mid-restore", func(t *testing.T) {
		if !k.Controllable() {
			t.Skip("the cluster is not this test's (KBACKUP_TEST_BROKERS): its brokers cannot be killed")
		}
		const parts = 3
		bst, _ := newStore(t)
		synthArchive(t, bst, "tp", parts, 24<<20, 200, 1<<20, 32<<10, manifest.CodecZstd)
		want := archivedAll(t, bst, "tp", parts)
		var total int64
		for _, rs := range want {
			total += int64(len(rs))
		}
		dst := testenv.TopicName(t, "bk")
		// The synthetic records are from 2023: without retention.ms=-1
		// the broker deletes them as soon as they land.
		k.CreateTopic(t, dst, parts, 3, map[string]string{"retention.ms": "-1"})
		o := realOpts(t, bst, brokers, "tp", dst)
		o.Producer = ProducerDirect
		// Reads of the archive's 32 KiB blocks take up to 20 ms each, so
		// the restore takes seconds and the kill lands mid-way; small
		// batches (the window) keep many of them in flight.
		slow := storefault.New(bst, 25)
		slow.SetMaxDelay(20 * time.Millisecond)
		o.Store = slow
		o.MaxInFlightBytes = 64 << 10
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			_, err := Run(ctx, o)
			done <- err
		}()
		adm := k.Admin(t)
		for deadline := time.Now().Add(time.Minute); sumEnds(adm, dst) < total/10; {
			if time.Now().After(deadline) {
				t.Fatal("the restore did not get a tenth through in a minute")
			}
			time.Sleep(2 * time.Millisecond)
		}
		md, err := adm.Metadata(ctx, dst)
		if err != nil {
			t.Fatal(err)
		}
		victim := md.Topics[dst].Partitions[0].Leader
		at := sumEnds(adm, dst)
		k.Kill(t, victim)
		t.Logf("killed broker %d (leader of %s/0) at %d of %d records", victim, dst, at, total)
		time.Sleep(3 * time.Second)
		k.Restart(t, victim)
		if err := <-done; err != nil {
			t.Fatalf("restore through a broker kill: %v", err)
		}
		if at >= total {
			t.Fatalf("the restore was done (%d records) before the kill", at)
		}
		if n := sumEnds(adm, dst); n != total {
			t.Fatalf("the target ends at %d records in all, the archive has %d", n, total)
		}
		// A reader right after the restart can take a partition's end
		// from a leader that does not know its high watermark yet (the
		// restarted broker, preferred again): it then reads nothing there.
		// Read again until every partition is read whole (the comparison
		// is below).
		for i := 0; i < 20; i++ {
			n := map[int32]int{}
			for _, r := range testenv.RdkConsume(t, brokers, dst, testenv.ReadCommitted) {
				n[r.Partition]++
			}
			if n[0]+n[1]+n[2] == int(total) {
				break
			}
			t.Logf("independent read %d: %v records per partition; reading again", i, n)
			time.Sleep(time.Second)
		}
		targetEqualsArchive(t, brokers, dst, want)
	})
}

// realThroughput compares, against the single-node cluster k2 and in one
// run, a restore of a synthetic archive (4 partitions, 160 MB of 200-byte
// records, 1 MiB blocks) with the two things a restore cannot avoid: a
// plain franz-go producer writing the same records (the restore's producer
// settings; its input decoded beforehand, so free) and decoding the archive
// alone (benchDecode). Per archive codec (zstd, none) it logs the client
// CPU ratio restore / (producer + decode) — this process's CPU time; the
// broker's is in its JVM, logged per side too — and the throughput ratio
// restore / producer, plus every round. Each side runs twice, in opposite orders, into topics
// created beforehand, after one unmeasured round of each (steady state;
// TestRestoreFirstRun measures a first run). It measures; it asserts only
// that every side completed.
func realThroughput(t *testing.T, k2 *testenv.Kafka) {
	const parts = 4
	// 160 MB (fixed start costs are small beside it); a tenth under the
	// race detector, whose rates mean little.
	size := int64(160 << 20)
	if testenv.RaceEnabled() {
		size /= 10
	}
	adm := k2.Admin(t)
	drop := func(topic string) {
		if _, err := adm.DeleteTopic(context.Background(), topic); err != nil {
			t.Logf("delete %s: %v", topic, err)
		}
	}
	for _, codec := range []manifest.Codec{manifest.CodecZstd, manifest.CodecNone} {
		st, _ := newStore(t)
		total := synthArchive(t, st, "tp", parts, size, 200, 4<<20, 1<<20, codec) * parts
		// A cold broker (JIT) would favour whatever runs second, and a
		// process's first restore costs more (TestRestoreFirstRun), as
		// does one right after writing the archive (the heap it left):
		// one unmeasured round of each side first.
		for _, topic := range []string{"warm-up-plain", "warm-up-restore"} {
			k2.CreateTopic(t, topic, parts, 1, nil)
		}
		timePlain(t, st, k2.Brokers(), parts, "warm-up-plain")
		timeRestore(t, realOpts(t, st, k2.Brokers(), "tp", "warm-up-restore"), total)
		benchDecode(t, st, parts, total)
		drop("warm-up-plain")
		drop("warm-up-restore")
		var restore, plain, decode cost
		var restoreBroker, plainBroker time.Duration
		for i, order := range []string{"rpd", "dpr"} {
			for _, side := range order {
				b0 := k2.Cluster().CPU()
				switch side {
				case 'r':
					dst := fmt.Sprintf("tp-%s-restored-%d", codec, i)
					k2.CreateTopic(t, dst, parts, 1, nil)
					o := realOpts(t, st, k2.Brokers(), "tp", dst)
					o.CheckpointInterval = 0 // the default
					c := timeRestore(t, o, total)
					b := k2.Cluster().CPU() - b0
					restore.add(c)
					restoreBroker += b
					drop(dst)
					t.Logf("%s round %d: restore %s, CPU %s, broker CPU %s", codec, i, c.wall.Round(time.Millisecond), c.cpu.Round(time.Millisecond), b)
				case 'p':
					dst := fmt.Sprintf("tp-%s-plain-%d", codec, i)
					k2.CreateTopic(t, dst, parts, 1, nil)
					c := timePlain(t, st, k2.Brokers(), parts, dst)
					b := k2.Cluster().CPU() - b0
					plain.add(c)
					plainBroker += b
					drop(dst)
					t.Logf("%s round %d: plain producer %s, CPU %s, broker CPU %s", codec, i, c.wall.Round(time.Millisecond), c.cpu.Round(time.Millisecond), b)
				case 'd':
					c := benchDecode(t, st, parts, total)
					decode.add(c)
					t.Logf("%s round %d: decode alone %s, CPU %s", codec, i, c.wall.Round(time.Millisecond), c.cpu.Round(time.Millisecond))
				}
			}
		}
		m := float64(restore.n) * float64(total) / 1e6
		t.Logf("real Kafka (1 broker), archive %s, %d records of 200 B on 4 partitions: restore %.0f records/s, plain producer %.0f records/s: throughput ratio %.2f",
			codec, total, m*1e6/restore.wall.Seconds(), m*1e6/plain.wall.Seconds(), plain.wall.Seconds()/restore.wall.Seconds())
		t.Logf("real Kafka, archive %s: client CPU per million records: restore %.3f s, plain producer %.3f s, decode alone %.3f s: cpu-ratio %.2f (restore / (producer + decode))",
			codec, restore.cpu.Seconds()/m, plain.cpu.Seconds()/m, decode.cpu.Seconds()/m, restore.cpu.Seconds()/(plain.cpu+decode.cpu).Seconds())
		t.Logf("real Kafka, archive %s: broker CPU per million records: restore %.3f s, plain producer %.3f s (the broker shares the cores)",
			codec, restoreBroker.Seconds()/m, plainBroker.Seconds()/m)
	}
}

// TestRestoreFirstRun reproduces "a restore's first run after start is
// slower than the next identical one" (docs/PERFORMANCE.md, "First run"):
// against a freshly started single broker it runs the kbackup binary three
// times, then the restore in this process twice, each into a new topic the
// restore creates, and logs each run's wall time, the client's CPU time
// and the broker's (its JVM process). It measures; it asserts only that
// every run completed.
func TestRestoreFirstRun(t *testing.T) {
	k := testenv.StartKafka(t, testenv.KafkaOptions{Brokers: 1})
	bin := testenv.KbackupBinary(t)
	size := int64(160 << 20)
	if testenv.RaceEnabled() {
		size /= 10
	}
	dir := t.TempDir()
	st, err := filestore.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	total := synthArchive(t, st, "tp", 4, size, 200, 4<<20, 1<<20, manifest.CodecZstd) * 4
	brokerCPU := k.Cluster().CPU
	for i := 0; i < 3; i++ {
		dst := fmt.Sprintf("first-run-cli-%d", i)
		b0, start := brokerCPU(), time.Now()
		cmd := exec.Command(bin, "restore", "--brokers", k.BrokerList(), "--store", "file://"+dir, "--topics", "tp",
			"--rename", "tp="+dst, "--replication-factor", "1", "--log-level", "warn")
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("kbackup restore: %v", err)
		}
		ps := cmd.ProcessState
		t.Logf("kbackup process %d (restore into new topic %s): wall %s, client CPU %s, broker CPU %s", i, dst,
			time.Since(start).Round(time.Millisecond), (ps.UserTime() + ps.SystemTime()).Round(time.Millisecond), (brokerCPU() - b0).Round(time.Millisecond))
	}
	for i := 0; i < 2; i++ {
		dst := fmt.Sprintf("first-run-inproc-%d", i)
		o := realOpts(t, st, k.Brokers(), "tp", dst)
		o.CheckpointInterval = 0 // the default
		b0 := brokerCPU()
		c := timeRestore(t, o, total)
		t.Logf("restore %d in this process (into new topic %s): wall %s, client CPU %s, broker CPU %s", i, dst,
			c.wall.Round(time.Millisecond), c.cpu.Round(time.Millisecond), (brokerCPU() - b0).Round(time.Millisecond))
	}
}

// TestRealKafkaRestoreChild is the restore process TestRestoreRealKafka
// kills with SIGKILL (the same request as the rerun, so the same restore
// id; a slowed store so that it can be caught midway).
func TestRealKafkaRestoreChild(t *testing.T) {
	brokers := os.Getenv("KBACKUP_CHILD_BROKERS")
	if brokers == "" {
		t.Skip("only runs as TestRestoreRealKafka's child process")
	}
	ctx := context.Background()
	s3 := testenv.UseMinIO(t)
	st, err := s3store.New(ctx, s3.StoreOptions(os.Getenv("KBACKUP_CHILD_PREFIX")))
	if err != nil {
		t.Fatal(err)
	}
	slow := storefault.New(st, uint64(os.Getpid()))
	slow.SetMaxDelay(60 * time.Millisecond)
	o := realOpts(t, slow, strings.Split(brokers, ","), os.Getenv("KBACKUP_CHILD_TOPIC"), os.Getenv("KBACKUP_CHILD_DST"))
	o.StateStore = st
	o.MaxInFlightBytes = 16 << 10
	_, _ = Run(ctx, o)
	time.Sleep(time.Hour) // killed before
}
