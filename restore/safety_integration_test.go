//go:build integration

package restore

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/s3store"
	"github.com/kbackup/kbackup/testenv"
)

// The restore's safety however it is run (issue #12), proved with the
// real CLI binary as separate processes against a real 3-broker cluster
// and MinIO, checked with the independent client (librdkafka).

// safety is an archived topic in MinIO and the cluster it came from (the
// restores go back into it under new names).
type safety struct {
	k       *testenv.Kafka
	st      store.Store
	url     string
	flags   []string // --store and S3 flags
	env     []string // AWS credentials
	topic   string
	parts   int32
	want    map[int32][]rec
	total   int
	group   string
	groupAt map[int32]int64 // the group's committed source offsets (captured)
}

// newSafety starts (or reuses) a 3-broker cluster and MinIO, builds the
// kbackup binary, produces n records over parts partitions of a new topic,
// commits a group at half of each partition, and archives the topic (with
// its catalog) in MinIO.
func newSafety(t *testing.T, base string, parts int32, n int) *safety {
	t.Helper()
	k := testenv.UseKafka(t)
	s3 := testenv.UseMinIO(t)
	testenv.RdkAvailable(t)
	testenv.KbackupBinary(t)
	ctx := context.Background()
	s := &safety{k: k, topic: testenv.TopicName(t, base), parts: parts, group: testenv.TopicName(t, "grp"), groupAt: map[int32]int64{}}
	k.CreateTopic(t, s.topic, parts, 3, nil)
	cl := k.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5*time.Millisecond))
	val := bytes.Repeat([]byte("v"), 150)
	var recs []*kgo.Record
	for i := 0; i < n; i++ {
		r := &kgo.Record{Topic: s.topic, Partition: int32(i) % parts, Key: fmt.Appendf(nil, "k%d", i%997), Value: append(fmt.Appendf(nil, "%08d-", i), val...),
			Headers: []kgo.RecordHeader{{Key: "i", Value: fmt.Appendf(nil, "%d", i)}}}
		if i%11 == 0 {
			r.Value = nil
		}
		recs = append(recs, r)
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	offs := kadm.Offsets{}
	for p := int32(0); p < parts; p++ {
		s.groupAt[p] = int64(n) / int64(parts) / 2
		offs.Add(kadm.Offset{Topic: s.topic, Partition: p, At: s.groupAt[p], LeaderEpoch: -1})
	}
	if resp, err := k.Admin(t).CommitOffsets(ctx, s.group, offs); err != nil || resp.Error() != nil {
		t.Fatalf("commit %s: %v %v", s.group, err, resp.Error())
	}
	prefix := s3.Prefix(t)
	var err error
	if s.st, err = s3store.New(ctx, s3.StoreOptions(prefix)); err != nil {
		t.Fatal(err)
	}
	realArchiveOnce(t, k, s.st, s.topic)
	s.url, s.flags = s3.StoreURL(prefix)
	s.flags = append([]string{"--store", s.url}, s.flags...)
	s.env = s3.AWSEnv()
	s.want = archivedAll(t, s.st, s.topic, parts)
	for _, rs := range s.want {
		s.total += len(rs)
	}
	if s.total != n {
		t.Fatalf("archived %d records of %d", s.total, n)
	}
	return s
}

// args are the arguments of a restore of the topic as dst.
func (s *safety) args(dst string, extra ...string) []string {
	a := append([]string{"restore", "--brokers", s.k.BrokerList(), "--topics", regexp.QuoteMeta(s.topic), "--rename", s.topic + "=" + dst,
		"--replication-factor", "3", "--log-level", "warn"}, s.flags...)
	return append(a, extra...)
}

// start runs the kbackup binary (built once, see testenv.KbackupBinary)
// with args as a separate process.
func (s *safety) start(t *testing.T, args ...string) *testenv.Proc {
	t.Helper()
	return testenv.StartProc(t, "kbackup "+args[0], testenv.KbackupBinary(t), s.env, args...)
}

// finish waits up to 3 minutes for p to exit and returns its exit status.
func finish(t *testing.T, p *testenv.Proc) int {
	t.Helper()
	return p.Wait(t, 3*time.Minute)
}

// ends is the sum of dst's end offsets (0 while it does not exist).
func (s *safety) ends(t *testing.T, dst string) int64 { return sumEnds(s.k.Admin(t), dst) }

// waitProgress waits until dst holds at least n records.
func (s *safety) waitProgress(t *testing.T, dst string, n int64) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); s.ends(t, dst) < n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: fewer than %d records after a minute", dst, n)
		}
	}
}

var completeLine = regexp.MustCompile(`restore (r-[0-9a-f]{16}) is complete: (\d+) records in (\d+) partitions, completed at (\S+) by (\S+)`)

// checkResult waits for procs to end, then checks dst against the archive
// with the independent client,
// that each successful process printed the same completion line, that the
// others refused naming the running process, and that the stored offset
// map is exact. It returns the restore id.
func (s *safety) checkResult(t *testing.T, dst string, procs []*testenv.Proc) string {
	t.Helper()
	codes := make([]int, len(procs))
	for i, p := range procs {
		codes[i] = finish(t, p)
	}
	targetEqualsArchive(t, s.k.Brokers(), dst, s.want)
	var line, id string
	for i, p := range procs {
		if code := codes[i]; code != 0 {
			if code != 1 || !strings.Contains(p.Stderr(), "is being run by") || !strings.Contains(p.Stderr(), "--join") {
				t.Fatalf("process %d: exit %d\nstdout:\n%s\nstderr:\n%s", i, code, p.Stdout(), p.Stderr())
			}
			t.Logf("process %d refused: %s", i, strings.TrimSpace(p.Stderr()))
			continue
		}
		m := completeLine.FindStringSubmatch(p.Stdout())
		if m == nil || m[2] != fmt.Sprint(s.total) {
			t.Fatalf("process %d: no completion line for %d records:\n%s", i, s.total, p.Stdout())
		}
		if line == "" {
			line, id = m[0], m[1]
		} else if m[0] != line {
			t.Fatalf("processes report differently:\n%s\n%s", line, m[0])
		}
	}
	if id == "" {
		t.Fatal("no process completed the restore")
	}
	s.checkMap(t, id, "")
	var reports int
	_ = s.st.List(context.Background(), store.ListOptions{Prefix: "restores/" + id + "/report"}, func(store.ListEntry) error { reports++; return nil })
	if reports != 1 {
		t.Fatalf("%d report objects", reports)
	}
	return id
}

// checkMap checks restore id's offset map (stored, or file when given):
// complete, every archived record at its index in the target.
func (s *safety) checkMap(t *testing.T, id, file string) {
	t.Helper()
	var om *OffsetMap
	var err error
	if file != "" {
		om, err = ReadOffsetMapFile(file)
	} else {
		om, err = ReadOffsetMap(context.Background(), s.st, id)
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(om.Partitions) != int(s.parts) {
		t.Fatalf("offset map has %d partitions", len(om.Partitions))
	}
	for _, pm := range om.Partitions {
		want := s.want[pm.SourcePartition]
		if !pm.Complete || pm.Records != int64(len(want)) || len(pm.Runs) != 1 {
			t.Fatalf("offset map partition %d: complete %v, %d records (archive %d), %d runs", pm.SourcePartition, pm.Complete, pm.Records, len(want), len(pm.Runs))
		}
		for i, r := range want {
			if to, ok := pm.TargetOf(r.Offset); !ok || to != int64(i) {
				t.Fatalf("offset map: %d/%d -> %d %v, want %d", pm.SourcePartition, r.Offset, to, ok, i)
			}
		}
	}
}

// TestRestoreSafetyRealKafka: identical restores started together, a
// second one mid-way, three processes sharing one restore with one killed,
// and a rerun of a complete restore that must not move its groups.
func TestRestoreSafetyRealKafka(t *testing.T) {
	s := newSafety(t, "safe", 6, 60_000)
	k := s.k

	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d-identical-at-once", n), func(t *testing.T) {
			dst := s.topic + fmt.Sprintf("-same%d", n)
			var procs []*testenv.Proc
			for i := 0; i < n; i++ {
				procs = append(procs, s.start(t, s.args(dst, "--concurrency", "1")...))
				time.Sleep(300 * time.Millisecond) // all within a second
			}
			s.checkResult(t, dst, procs)
		})
	}

	t.Run("second-started-mid-way", func(t *testing.T) {
		dst := s.topic + "-midway"
		a := s.start(t, s.args(dst, "--concurrency", "1")...)
		s.waitProgress(t, dst, 1)
		b := s.start(t, s.args(dst, "--concurrency", "1")...) // refuses: a runs
		c := s.start(t, s.args(dst, "--concurrency", "1", "--join")...)
		if code := finish(t, b); code != 1 || !strings.Contains(b.Stderr(), "is being run by") {
			t.Fatalf("the second run (started mid-way, without --join) did not refuse: exit %d\n%s%s", code, b.Stdout(), b.Stderr())
		}
		s.checkResult(t, dst, []*testenv.Proc{a, b, c})
	})

	t.Run("three-sharing-one-killed", func(t *testing.T) {
		dst := s.topic + "-shared"
		var procs []*testenv.Proc
		for i := 0; i < 3; i++ {
			procs = append(procs, s.start(t, s.args(dst, "--concurrency", "1", "--join")...))
		}
		s.waitProgress(t, dst, int64(s.total)/5)
		procs[0].Kill(t)
		n := s.ends(t, dst)
		t.Logf("process 0 killed with SIGKILL at %d of %d records", n, s.total)
		if n >= int64(s.total) {
			t.Fatal("the restore was complete before the kill")
		}
		for _, p := range procs[1:] {
			if code := finish(t, p); code != 0 {
				t.Fatalf("a surviving process: exit %d\n%s%s", code, p.Stdout(), p.Stderr())
			}
		}
		s.checkResult(t, dst, procs[1:])
	})

	t.Run("rerun-of-complete-restore-keeps-groups", func(t *testing.T) {
		dst := s.topic + "-groups"
		args := s.args(dst, "--groups", regexp.QuoteMeta(s.group))
		p := s.start(t, args...)
		if code := finish(t, p); code != 0 {
			t.Fatalf("restore: exit %d\n%s%s", code, p.Stdout(), p.Stderr())
		}
		got := testenv.RdkCommitted(t, k.Brokers(), dst, s.group)
		for part, at := range s.groupAt {
			if got[part] != at { // no gaps: a source offset is its target offset
				t.Fatalf("%s on %s/%d: %d, want %d (independent client)", s.group, dst, part, got[part], at)
			}
		}
		// The group's consumers go on in the target.
		offs := kadm.Offsets{}
		for part, at := range s.groupAt {
			offs.Add(kadm.Offset{Topic: dst, Partition: part, At: at + 100, LeaderEpoch: -1})
		}
		if resp, err := k.Admin(t).CommitOffsets(context.Background(), s.group, offs); err != nil || resp.Error() != nil {
			t.Fatalf("commit: %v %v", err, resp.Error())
		}
		p = s.start(t, args...)
		if code := finish(t, p); code != 0 || !strings.Contains(p.Stdout(), "already complete") || !strings.Contains(p.Stdout(), "already moved") {
			t.Fatalf("rerun: exit %d\n%s%s", code, p.Stdout(), p.Stderr())
		}
		got = testenv.RdkCommitted(t, k.Brokers(), dst, s.group)
		for part, at := range s.groupAt {
			if got[part] != at+100 {
				t.Fatalf("the rerun moved %s on %s/%d to %d (was %d)", s.group, dst, part, got[part], at+100)
			}
		}
		targetEqualsArchive(t, k.Brokers(), dst, s.want)
	})
}
