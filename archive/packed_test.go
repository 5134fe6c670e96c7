package archive

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/internal/kfaketest"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/filestore"
	"github.com/kbackup/kbackup/store/storefault"
)

func packed(o *Options) { o.Layout = LayoutPacked }

// keysUnder counts the keys under prefix, and those containing sub.
func keysUnder(t testing.TB, st store.Store, prefix, sub string) (n, withSub int) {
	t.Helper()
	err := st.List(context.Background(), store.ListOptions{Prefix: prefix}, func(e store.ListEntry) error {
		n++
		if strings.Contains(e.Key, sub) {
			withSub++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n, withSub
}

// TestPackedOnce: --once in the packed layout archives exactly what a
// read_committed consumer reads, with one flush object per flush for all
// partitions, claims, and a rerun that adds and duplicates nothing.
func TestPackedOnce(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "p", 6, nil)
	cl := newClient(t, c, kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	for i := 0; i < 300; i++ {
		produce(t, cl, &kgo.Record{Topic: "p", Key: []byte(strconv.Itoa(i)), Value: []byte("v" + strconv.Itoa(i)),
			Headers: []kgo.RecordHeader{{Key: "h", Value: nil}}})
	}
	st := newStore(t)
	runOnce(t, c, st, packed)
	checkExact(t, c, st, "p")
	flushes, _ := keysUnder(t, st, manifest.WALPrefix, "")
	if flushes == 0 || flushes > 6 {
		t.Fatalf("%d flush objects for 6 partitions archived at once", flushes)
	}
	if _, claims := keysUnder(t, st, manifest.TopicsPrefix, "/claims/"); claims != 6 {
		t.Fatalf("%d claims, want one per partition", claims)
	}
	a := openArchive(t, st)
	if a.FormatVersion() != manifest.PackedFormatVersion {
		t.Fatalf("root format version %d", a.FormatVersion())
	}
	before := heads(t, a, "p")
	runOnce(t, c, st, packed)
	if after := heads(t, a, "p"); !equalHeads(before, after) {
		t.Fatalf("idle --once changed heads: %v -> %v", before, after)
	}
	for i := 0; i < 60; i++ {
		produce(t, cl, &kgo.Record{Topic: "p", Value: []byte("more")})
	}
	runOnce(t, c, st, packed)
	checkExact(t, c, st, "p")
	// The segments layout continues a packed archive (its compacted chain
	// ends below the tail: it resumes from the tail's end, claims nothing).
}

// TestPackedContinuous: a continuous packed archiver compacts tails while
// records flow and deletes its compacted flush objects; the archive equals
// the log, and most of it is compacted.
func TestPackedContinuous(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "q", 4, nil)
	st := newStore(t)
	p := startProducer(t, c, "q", 20)
	stop := startArchiver(t, c, st, func(o *Options) {
		packed(o)
		o.FlushInterval = 50 * time.Millisecond
		o.CompactAfter = 400 * time.Millisecond
		o.CompactGrace = -1
	})
	time.Sleep(4 * time.Second)
	p.Stop(t)
	time.Sleep(time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	checkExact(t, c, st, "q")
	_, commits := keysUnder(t, st, manifest.TopicsPrefix, "/commits/")
	if commits == 0 {
		t.Fatal("nothing compacted")
	}
	n, tails := keysUnder(t, st, manifest.WALPrefix, "/tail/")
	if tails == 0 {
		t.Fatal("no tail index written")
	}
	t.Logf("%d compacted commits, %d flush objects and tail indexes left", commits, n)
	// Flush objects of compacted entries were deleted: what is left is
	// bounded by the tail since the last compaction, not by the run.
	if n-tails > 200 {
		t.Fatalf("%d flush objects left after compaction", n-tails)
	}
	runOnce(t, c, st, packed)
	checkExact(t, c, st, "q")
}

// TestPackedKillResume: packed archiver processes SIGKILLed at random
// instants (mid-flush, mid-compaction) while data flows, then resumed:
// nothing missing, nothing duplicated.
func TestPackedKillResume(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "k", 3, nil)
	dir := t.TempDir()
	st, err := filestore.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	p := startProducer(t, c, "k", 10)
	for i := 0; i < 6; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestArchiverChild$")
		cmd.Env = append(os.Environ(), "KBACKUP_CHILD_BROKERS="+c.ListenAddrs()[0], "KBACKUP_CHILD_STORE="+dir,
			"KBACKUP_CHILD_LAYOUT="+LayoutPacked)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(700+i*300) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		noProblems(t, st) // the archive verifies at every point
	}
	p.Stop(t)
	runOnce(t, c, st, packed)
	checkExact(t, c, st, "k")
	if n := archivedRecords(t, st, "k"); n == 0 {
		t.Fatal("nothing archived")
	}
	if _, commits := keysUnder(t, st, manifest.TopicsPrefix, "/commits/"); commits == 0 {
		t.Fatal("the children compacted nothing")
	}
	// A continuous archiver compacts what the dead ones left and deletes
	// their flush objects (it owns k/0: it cleans).
	before := writersWithFlushes(t, st)
	stop := startArchiver(t, c, st, func(o *Options) {
		packed(o)
		o.CompactAfter, o.CompactGrace = 300*time.Millisecond, -1
	})
	deadline := time.Now().Add(30 * time.Second)
	for writersWithFlushes(t, st) > 1 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := writersWithFlushes(t, st); n > 1 {
		t.Fatalf("%d writers still have flush objects (%d before the cleaning archiver)", n, before)
	}
	checkExact(t, c, st, "k")
}

// writersWithFlushes counts the writers with flush objects in st.
func writersWithFlushes(t testing.TB, st store.Store) int {
	t.Helper()
	w := map[string]bool{}
	err := st.List(context.Background(), store.ListOptions{Prefix: manifest.WALPrefix}, func(e store.ListEntry) error {
		if k, err := manifest.ParseKey(e.Key); err == nil && k.Kind == manifest.KeyFlush {
			w[k.Writer] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return len(w)
}

// TestPackedRebalanceDeletes: partitions move between two packed
// archivers of a group while records flow; the entries each left behind are
// compacted by the next owner, and every flush object is deleted once all
// its entries are compacted — also those holding a moved partition's.
func TestPackedRebalanceDeletes(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "r", 4, nil)
	st := newStore(t)
	p := startProducer(t, c, "r", 10)
	opts := func(o *Options) {
		packed(o)
		o.Group, o.FlushInterval = "movers", 50*time.Millisecond
		o.CompactAfter, o.CompactGrace = 300*time.Millisecond, -1
	}
	stopA := startArchiver(t, c, st, opts)
	time.Sleep(1500 * time.Millisecond)
	stopB := startArchiver(t, c, st, opts)
	time.Sleep(4 * time.Second)
	p.Stop(t)
	flushes := func() int {
		n := 0
		_ = st.List(context.Background(), store.ListOptions{Prefix: manifest.WALPrefix}, func(e store.ListEntry) error {
			if k, err := manifest.ParseKey(e.Key); err == nil && k.Kind == manifest.KeyFlush {
				n++
			}
			return nil
		})
		return n
	}
	deadline := time.Now().Add(30 * time.Second)
	for flushes() > 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	left := flushes()
	for _, stop := range []func() error{stopA, stopB} {
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	}
	if left > 0 {
		t.Fatalf("%d flush objects left once everything was compacted", left)
	}
	runOnce(t, c, st, packed)
	checkExact(t, c, st, "r")
}

// noProblems fails the test if verify finds a problem in st (warnings,
// such as a killed compactor's orphan segment, are allowed).
func noProblems(t testing.TB, st store.Store) {
	t.Helper()
	a, err := manifest.Open(context.Background(), st)
	if errors.Is(err, manifest.ErrNoArchive) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Verify(context.Background(), manifest.VerifyOptions{}, func(f manifest.Finding) {
		if f.Severity == manifest.SeverityProblem {
			t.Errorf("verify: %v", f)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestLayoutAuto: auto packs a new archive archived continuously and keeps
// packing it (--once too), keeps an archive written in segments (or first
// by --once) in segments (a new kbackup never changes an archive's layout),
// and the segments layout is refused on a packed one.
func TestLayoutAuto(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "a", 2, nil)
	cl := newClient(t, c)
	for i := 0; i < 20; i++ {
		produce(t, cl, &kgo.Record{Topic: "a", Value: []byte(strconv.Itoa(i))})
	}
	auto := func(o *Options) { o.Layout = LayoutAuto }
	claims := func(st store.Store) int {
		_, n := keysUnder(t, st, manifest.TopicsPrefix, "/claims/")
		return n
	}
	// --once on a new archive: segments (nothing would compact it).
	onceNew := newStore(t)
	runOnce(t, c, onceNew, auto)
	if claims(onceNew) != 0 || openArchive(t, onceNew).FormatVersion() != 1 {
		t.Fatalf("auto --once on a new archive: %d claims", claims(onceNew))
	}
	// A continuous archiver on a new archive: packed.
	fresh := newStore(t)
	stop := startArchiver(t, c, fresh, auto)
	waitArchived(t, fresh, "a", 20)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if claims(fresh) != 2 || openArchive(t, fresh).FormatVersion() != manifest.PackedFormatVersion {
		t.Fatalf("auto on a new archive: %d claims, version %d", claims(fresh), openArchive(t, fresh).FormatVersion())
	}
	old := newStore(t)
	runOnce(t, c, old, nil) // segments
	for i := 0; i < 5; i++ {
		produce(t, cl, &kgo.Record{Topic: "a", Value: []byte("more")})
	}
	runOnce(t, c, old, auto)
	runOnce(t, c, fresh, auto)
	if claims(old) != 0 || openArchive(t, old).FormatVersion() != 1 {
		t.Fatalf("auto on a segments archive: %d claims, version %d", claims(old), openArchive(t, old).FormatVersion())
	}
	checkExact(t, c, old, "a")
	checkExact(t, c, fresh, "a")
	a, err := New(Options{KafkaOpts: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, Store: fresh, Once: true, Layout: LayoutSegments})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Run(context.Background()); !errors.Is(err, ErrLayout) || !strings.Contains(err.Error(), "--layout packed") {
		t.Fatalf("segments on a packed archive: %v", err)
	}
}

// TestPackedCompactsInheritedTail: a tail left by earlier writers (25
// --once runs, nothing compacted) is claimed with its anchors only, then
// compacted by the next archiver in pieces of at most --compact-bytes.
func TestPackedCompactsInheritedTail(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "i", 1, nil)
	cl := newClient(t, c)
	st := newStore(t)
	for run := 0; run < 25; run++ {
		for i := 0; i < 10; i++ {
			produce(t, cl, &kgo.Record{Topic: "i", Value: make([]byte, 500)})
		}
		runOnce(t, c, st, packed)
	}
	if _, commits := keysUnder(t, st, manifest.TopicsPrefix, "/commits/"); commits != 0 {
		t.Fatalf("--once compacted: %d commit entries", commits)
	}
	stop := startArchiver(t, c, st, func(o *Options) {
		packed(o)
		o.CompactAfter, o.CompactGrace, o.CompactBytes = 100*time.Millisecond, -1, 1000
	})
	deadline := time.Now().Add(30 * time.Second)
	for writersWithFlushes(t, st) > 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	_, commits := keysUnder(t, st, manifest.TopicsPrefix, "/commits/")
	if commits < 3 {
		t.Fatalf("%d compacted segments for 25 inherited entries in pieces of 1000 bytes", commits)
	}
	checkExact(t, c, st, "i")
	noProblems(t, st)
}

// TestPackedOnceCompacts: --once runs alone keep a packed archive
// compacted: a run compacts the tails whose oldest entry (written by an
// earlier run) is --compact-after old, and then deletes the flush objects
// of stopped writers whose entries are all compacted. A continuous
// archiver dates an inherited tail by its oldest entry too: restarted more
// often than --compact-after, it still compacts.
func TestPackedOnceCompacts(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "oc", 3, nil)
	cl := newClient(t, c, kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	n := 0
	more := func(k int) {
		for i := 0; i < k; i++ {
			produce(t, cl, &kgo.Record{Topic: "oc", Key: []byte(strconv.Itoa(n)), Value: []byte("v")})
			n++
		}
	}
	st := newStore(t)
	// at runs an archiver whose clock is d ahead.
	at := func(d time.Duration) func(*Options) {
		return func(o *Options) {
			packed(o)
			o.CompactAfter, o.CompactGrace = time.Hour, 10*time.Minute
			o.Now = func() time.Time { return time.Now().Add(d) }
		}
	}
	// count returns the compacted commits and the writers with flush
	// objects (a run may write more than one).
	count := func() (commits, writers int) {
		_, commits = keysUnder(t, st, manifest.TopicsPrefix, "/commits/")
		ws := map[string]bool{}
		err := st.List(context.Background(), store.ListOptions{Prefix: manifest.WALPrefix}, func(e store.ListEntry) error {
			if !strings.Contains(e.Key, "/tail/") {
				ws[strings.Split(strings.TrimPrefix(e.Key, manifest.WALPrefix), "/")[0]] = true
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return commits, len(ws)
	}
	compactedEnds := func() map[int32]int64 {
		ctx := context.Background()
		a := openArchive(t, st)
		incs, err := a.Incarnations(ctx, "oc")
		if err != nil || len(incs) != 1 {
			t.Fatal(incs, err)
		}
		ends := map[int32]int64{}
		for p := int32(0); p < 3; p++ {
			h, err := a.Partition("oc", incs[0].TopicID, p).CompactedHead(ctx)
			if err != nil {
				t.Fatal(err)
			}
			ends[p] = -1
			if h != nil {
				ends[p] = h.End
			}
		}
		return ends
	}
	step := func(name string, d time.Duration, wantCommits, wantWriters int) {
		t.Helper()
		more(30)
		runOnce(t, c, st, at(d))
		checkExact(t, c, st, "oc")
		noProblems(t, st)
		if commits, writers := count(); commits != wantCommits || writers != wantWriters {
			t.Fatalf("%s: %d compacted commits and flush objects of %d writers, want %d and %d", name, commits, writers, wantCommits, wantWriters)
		}
	}
	// A: fresh tails, nothing due.
	step("run A", 0, 0, 1)
	// Expiry does not touch a tail, and says so.
	tailOnly := func() int {
		res, err := Expire(context.Background(), openArchive(t, st), ExpireOptions{Policy: RetentionPolicy{Age: time.Millisecond}, Grace: -1})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, p := range res.Partitions {
			if p.Expiry.Expired() || p.Err != nil {
				t.Fatalf("expiry of a tail: %+v", p)
			}
			if p.Expiry.TailOnly {
				n++
			}
		}
		return n
	}
	if n := tailOnly(); n != 3 {
		t.Fatalf("%d partitions reported as tail only, want 3", n)
	}
	// B, 2 h later: A's entries are due; each partition's whole tail (A's
	// and B's entries) becomes one segment; A's flush object (a stopped
	// writer's, all compacted, idle beyond --compact-after + grace) goes.
	step("run B", 2*time.Hour, 3, 1)
	if n := tailOnly(); n != 0 {
		t.Fatalf("%d partitions reported as tail only after their compaction", n)
	}
	for p, end := range compactedEnds() {
		if end != 19 {
			t.Fatalf("partition %d compacted through %d, want 19 (the whole tail)", p, end)
		}
	}
	// C, at once: its own entries are fresh.
	step("run C", 2*time.Hour, 3, 2)
	// D, 2 h after C: C's entries are due; B's and C's objects go.
	step("run D", 4*time.Hour, 6, 1)
	// E writes a fresh tail; a continuous archiver started 2 h later
	// compacts the inherited tail at once (by its age), not after
	// --compact-after from its start.
	step("run E", 4*time.Hour, 6, 2)
	stop := startArchiver(t, c, st, func(o *Options) {
		at(6 * time.Hour)(o)
		o.FlushInterval = 50 * time.Millisecond
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if commits, _ := count(); commits == 9 {
			break
		}
		if time.Now().After(deadline) {
			commits, _ := count()
			t.Fatalf("the continuous archiver did not compact the inherited tails: %d compacted commits", commits)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	checkExact(t, c, st, "oc")
	noProblems(t, st)
}

// TestOnceEndsUnderLoad: --once stops at the end offsets it saw at start
// while producers keep writing, in both layouts. In the packed layout it
// used to go on forever, one record per flush object: records past the
// target kept arriving, so its partitions were never idle at once.
func TestOnceEndsUnderLoad(t *testing.T) {
	t.Parallel()
	for _, layout := range []string{LayoutPacked, LayoutSegments} {
		t.Run(string(layout), func(t *testing.T) {
			t.Parallel()
			c := newCluster(t)
			createTopic(t, c, "u", 2, nil)
			p := startProducer(t, c, "u", 1)
			time.Sleep(300 * time.Millisecond)
			st := newStore(t)
			o := Options{KafkaOpts: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, Store: st, Once: true,
				Logger: testLogger(t), WriterID: "test", Layout: layout}
			a, err := New(o)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			if err := a.Run(ctx); err != nil || ctx.Err() != nil {
				t.Fatalf("archive --once under load: %v (ran %s)", err, time.Since(start))
			}
			if n, _ := keysUnder(t, st, manifest.WALPrefix, ""); n > 4 {
				t.Errorf("%d flush objects for one --once run of 2 partitions", n)
			}
			p.Stop(t)
			runOnce(t, c, st, func(o *Options) { o.Layout = layout })
			checkExact(t, c, st, "u")
		})
	}
}

// TestPackedRestartsCompact: an archiver restarted more often than
// --compact-after still compacts the tail it inherits once its oldest entry
// is that old (the age used to restart at every claim: restarts more
// frequent than --compact-after meant nothing was ever compacted).
func TestPackedRestartsCompact(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "r", 2, nil)
	st := newStore(t)
	p := startProducer(t, c, "r", 1)
	for i := 0; i < 6; i++ {
		stop := startArchiver(t, c, st, func(o *Options) {
			packed(o)
			o.Group = ""
			o.FlushInterval = 50 * time.Millisecond
			o.CompactAfter = 1500 * time.Millisecond
		})
		time.Sleep(700 * time.Millisecond)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	}
	p.Stop(t)
	if _, commits := keysUnder(t, st, manifest.TopicsPrefix, "/commits/"); commits == 0 {
		t.Fatal("six runs of 0.7 s with --compact-after 1.5 s compacted nothing")
	}
	runOnce(t, c, st, packed)
	checkExact(t, c, st, "r")
}

// TestPackedClaimCheck: an archiver outside the running one's group (here
// a standalone --once run beside a standalone continuous archiver) claims
// its partitions; the continuous archiver's later entries are void. Its
// periodic claim check notices within --claim-check-interval, it claims
// the partitions back and the archive advances again, long before the next
// compaction (an hour here) would have told it.
func TestPackedClaimCheck(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "cc", 2, nil)
	st := newStore(t)
	p := startProducer(t, c, "cc", 5)
	stop := startArchiver(t, c, st, func(o *Options) {
		packed(o)
		o.FlushInterval = 50 * time.Millisecond
		o.CompactAfter = time.Hour
		o.ClaimCheckInterval = 300 * time.Millisecond
	})
	waitArchived(t, st, "cc", 100)
	// Claims both partitions. The continuous archiver may notice and claim
	// them back before the run ends: the run then fails, saying so.
	if err := runOnceErr(t, c, st, packed); err != nil && !errors.Is(err, manifest.ErrFenced) {
		t.Fatalf("archive --once: %v", err)
	}
	waitArchived(t, st, "cc", archivedRecords(t, st, "cc")+300)
	stopThenCheck(t, c, st, "cc", p, stop)
}

// stopThenCheck stops the producer, then the archiver; a packed --once run
// archives the rest; the archive must equal the topic and verify.
func stopThenCheck(t *testing.T, c *kfake.Cluster, st store.Store, topic string, p *producer, stop func() error) {
	t.Helper()
	p.Stop(t)
	time.Sleep(500 * time.Millisecond)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	runOnce(t, c, st, packed)
	checkExact(t, c, st, topic)
	noProblems(t, st)
}

// TestPackedDeletedTopicCompacted: a deleted topic's uncompacted tail is
// compacted when its partitions are released, whatever its age: no archiver
// will own that incarnation again, and flush objects holding its entries
// would otherwise stay forever, beyond retention. In a group, the group's
// own metadata may see the deletion before the archiver's topic refresh
// does (on real Kafka it regularly does): the revocation that follows must
// still compact the tail before the partitions are released.
func TestPackedDeletedTopicCompacted(t *testing.T) {
	t.Parallel()
	for _, group := range []string{"", "deleted-topic"} {
		t.Run("group="+group, func(t *testing.T) {
			t.Parallel()
			testDeletedTopicCompacted(t, group)
		})
	}
}

func testDeletedTopicCompacted(t *testing.T, group string) {
	c := newCluster(t)
	createTopic(t, c, "gone", 3, nil)
	createTopic(t, c, "stays", 1, nil)
	cl := newClient(t, c, kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	for i := 0; i < 60; i++ {
		produce(t, cl, &kgo.Record{Topic: "gone", Value: []byte(strconv.Itoa(i))})
	}
	produce(t, cl, &kgo.Record{Topic: "stays", Value: []byte("s")})
	st := newStore(t)
	stop := startArchiver(t, c, st, func(o *Options) {
		packed(o)
		o.FlushInterval = 50 * time.Millisecond
		o.CompactAfter, o.CompactGrace = time.Hour, -1
		if group != "" {
			o.Group = group
			// The archiver's own refresh comes long after the group noticed.
			o.RefreshInterval = time.Hour
			o.groupMetadataMaxAge = 200 * time.Millisecond
		}
	})
	waitArchived(t, st, "gone", 60)
	waitArchived(t, st, "stays", 1)
	if _, commits := keysUnder(t, st, manifest.TopicsPrefix, "/commits/"); commits != 0 {
		t.Fatalf("%d compacted commits before the deletion", commits)
	}
	want := readCommitted(t, c, "gone")
	if _, err := kadm.NewClient(cl).DeleteTopics(context.Background(), "gone"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, gone := keysUnder(t, st, manifest.TopicsPrefix+"gone/", "/commits/")
		if gone == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the deleted topic's 3 partitions compacted", gone)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// The deleted topic's records, compacted, are what the log held; the
	// other topic's tail is not due and stays.
	got, _ := readArchive(t, st, "gone")
	sameOffsetsValues(t, want, got)
	if _, stays := keysUnder(t, st, manifest.TopicsPrefix+"stays/", "/commits/"); stays != 0 {
		t.Fatalf("the remaining topic's fresh tail was compacted (%d commits)", stays)
	}
	noProblems(t, st)
}

// TestRecreatedTopicStartsEveryPartition: when a topic is deleted and
// re-created under the same name, the new incarnation's partitions start
// together once the old incarnation's are released, and the "archiving
// topic" line names them all (a started new partition was taken for an old
// one still flushing: the others started a reconcile later, unlogged).
func TestRecreatedTopicStartsEveryPartition(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "re", 3, nil)
	cl := newClient(t, c, kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	for i := 0; i < 30; i++ {
		produce(t, cl, &kgo.Record{Topic: "re", Value: []byte(strconv.Itoa(i))})
	}
	st := newStore(t)
	var logs kfaketest.LogBuffer
	stop := startArchiver(t, c, st, func(o *Options) {
		packed(o)
		o.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
		o.FlushInterval = 50 * time.Millisecond
		o.CompactAfter, o.CompactGrace = time.Hour, -1
	})
	waitArchived(t, st, "re", 30)
	if _, err := kadm.NewClient(cl).DeleteTopics(context.Background(), "re"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	createTopic(t, c, "re", 3, nil)
	cl2 := newClient(t, c, kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	for i := 0; i < 30; i++ {
		produce(t, cl2, &kgo.Record{Topic: "re", Value: []byte("new" + strconv.Itoa(i))})
	}
	waitIncarnations(t, st, "re", 2)
	waitArchived(t, st, "re", 30)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, `"msg":"archiving topic"`) {
			lines = append(lines, l)
		}
	}
	if len(lines) != 2 || !strings.Contains(lines[1], `"partitions":"[0 1 2]"`) {
		t.Fatalf("archiving topic lines, want the new incarnation's with every partition:\n%s", strings.Join(lines, "\n"))
	}
}

// TestPackedDeletedTopicLostClaimSalvaged: an archiver outside the group (a
// standalone --once) claims a partition, the owner keeps committing void
// entries until it notices, and the topic is deleted before it does: Kafka
// cannot return those records any more, so the owner claims the partition
// again and recommits them from its void entries (manifest.Salvage) before
// compacting the tail and releasing the partition. They used to be lost
// without a gap.
func TestPackedDeletedTopicLostClaimSalvaged(t *testing.T) {
	t.Parallel()
	// With tiny segments, or a tiny memory bound (a quarter of which a
	// piece may hold), the recommit takes several claims, a piece each.
	for _, tc := range []struct{ segBytes, maxBuffered int }{{0, 0}, {60, 0}, {0, 240}} {
		t.Run(fmt.Sprintf("segment-bytes=%d,max-buffered-bytes=%d", tc.segBytes, tc.maxBuffered), func(t *testing.T) {
			t.Parallel()
			testDeletedTopicSalvaged(t, tc.segBytes, tc.maxBuffered)
		})
	}
}

func testDeletedTopicSalvaged(t *testing.T, segBytes, maxBuffered int) {
	c := newCluster(t)
	createTopic(t, c, "doomed", 1, nil)
	cl := newClient(t, c)
	for i := 0; i < 10; i++ {
		produce(t, cl, &kgo.Record{Topic: "doomed", Value: []byte(strconv.Itoa(i))})
	}
	st := newStore(t)
	var logs kfaketest.LogBuffer
	stop := startArchiver(t, c, st, func(o *Options) {
		packed(o)
		o.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
		o.FlushInterval = 50 * time.Millisecond
		o.CompactAfter, o.CompactGrace = time.Hour, -1
		o.ClaimCheckInterval = -1 // notices the outside claim only at compaction
		o.SegmentBytes = segBytes
		o.MaxBufferedBytes = int64(maxBuffered)
	})
	waitArchived(t, st, "doomed", 10)
	runOnce(t, c, st, func(o *Options) { packed(o); o.WriterID = "outside" })
	for i := 10; i < 20; i++ {
		produce(t, cl, &kgo.Record{Topic: "doomed", Value: []byte(strconv.Itoa(i))})
	}
	time.Sleep(time.Second) // the owner commits them, void
	if _, err := kadm.NewClient(cl).DeleteTopics(context.Background(), "doomed"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logs.String(), `"msg":"partition released"`) {
		if time.Now().After(deadline) {
			t.Fatalf("partition not released:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	got, _ := readArchive(t, st, "doomed")
	if len(got[0]) != 20 {
		t.Fatalf("%d of 20 records of the deleted topic archived:\n%s", len(got[0]), logs.String())
	}
	for i, r := range got[0] {
		if r.Offset != int64(i) || string(r.Value) != strconv.Itoa(i) {
			t.Fatalf("record %d: offset %d value %q", i, r.Offset, r.Value)
		}
	}
	pieces := strings.Count(logs.String(), "recommitting what this archiver committed under the claim it lost")
	if pieces == 0 || (segBytes > 0 || maxBuffered > 0) && pieces < 2 || strings.Contains(logs.String(), `"level":"ERROR"`) {
		t.Fatalf("the void entries were recommitted in %d pieces, or an error was logged:\n%s", pieces, logs.String())
	}
	noProblems(t, st)
	// The tail was compacted before the release: no flush object is needed.
	a := openArchive(t, st)
	incs, err := a.Incarnations(context.Background(), "doomed")
	if err != nil || len(incs) != 1 {
		t.Fatal(incs, err)
	}
	h, err := a.Partition("doomed", incs[0].TopicID, 0).CompactedHead(context.Background())
	if err != nil || h == nil || h.End != 19 {
		t.Fatalf("compacted head %+v, %v: want the tail compacted to offset 19", h, err)
	}
}

// TestPackedOrphanTailAdopted: a topic deleted while no archiver ran keeps
// its uncompacted tail, and the flush objects holding it, with nobody to
// compact it. The archiver that cleans stopped writers' flush objects
// adopts such partitions: claims them, compacts their tails and releases
// them; the flush objects are then deleted by the next cleaning.
func TestPackedOrphanTailAdopted(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "orphan", 2, nil)
	createTopic(t, c, "alive", 1, nil)
	cl := newClient(t, c, kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	for i := 0; i < 40; i++ {
		produce(t, cl, &kgo.Record{Topic: "orphan", Value: []byte(strconv.Itoa(i))})
	}
	produce(t, cl, &kgo.Record{Topic: "alive", Value: []byte("a")})
	st := newStore(t)
	// The first archiver leaves uncompacted tails and stops.
	stop := startArchiver(t, c, st, func(o *Options) {
		packed(o)
		o.FlushInterval = 50 * time.Millisecond
		o.CompactAfter, o.CompactGrace = time.Hour, -1
	})
	waitArchived(t, st, "orphan", 40)
	waitArchived(t, st, "alive", 1)
	want := readCommitted(t, c, "orphan")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := kadm.NewClient(cl).DeleteTopics(context.Background(), "orphan"); err != nil {
		t.Fatal(err)
	}
	if _, commits := keysUnder(t, st, manifest.TopicsPrefix+"orphan/", "/commits/"); commits != 0 {
		t.Fatalf("%d compacted commits before the adoption", commits)
	}
	// The second one never sees the topic; it cleans stopped writers' flush
	// objects soon (a short --compact-after) and adopts the orphaned tails.
	var logs kfaketest.LogBuffer
	stop = startArchiver(t, c, st, func(o *Options) {
		packed(o)
		o.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
		o.FlushInterval = 50 * time.Millisecond
		o.CompactAfter, o.CompactGrace = 500*time.Millisecond, -1
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, compacted := keysUnder(t, st, manifest.TopicsPrefix+"orphan/", "/commits/")
		wal, _ := keysUnder(t, st, manifest.WALPrefix, "")
		if compacted == 2 && strings.Count(logs.String(), `"msg":"partition released"`) >= 2 && wal <= 2 {
			break // the other writer's objects are gone (at most our own live ones remain)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the orphaned topic's 2 partitions compacted, %d objects under wal/:\n%s", compacted, wal, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "compacting the uncompacted tail of a deleted topic's partition that no archiver owns") {
		t.Fatalf("no adoption logged:\n%s", logs.String())
	}
	got, _ := readArchive(t, st, "orphan")
	sameOffsetsValues(t, want, got)
	noProblems(t, st)
}

// TestPackedOrphanOutsideSelectionKept: an uncompacted tail left by a
// stopped archiver of another topic selection (another deployment writing
// into the same store, here restarted) is not adopted while that
// deployment's live archiver commits to it: it compacts it itself, and an
// adoption would void its commits. Once nothing was committed to it for
// --compact-after plus --compact-grace (the deployment stopped, as for a
// topic no longer selected), it is adopted and compacted.
func TestPackedOrphanOutsideSelectionKept(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "theirs", 1, nil)
	createTopic(t, c, "ours", 1, nil)
	produce(t, newClient(t, c), &kgo.Record{Topic: "ours", Value: []byte("a")})
	p := startProducer(t, c, "theirs", 2)
	st := newStore(t)
	theirs := func(o *Options) {
		packed(o)
		o.Topics = selector(t, []string{"theirs"})
		o.FlushInterval = 50 * time.Millisecond
		o.CompactAfter, o.CompactGrace = time.Hour, -1
	}
	stop := startArchiver(t, c, st, theirs)
	waitArchived(t, st, "theirs", 20)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	stopTheirs := startArchiver(t, c, st, theirs) // a restart: a new writer; the old one's objects are kept
	var logs kfaketest.LogBuffer
	stop = startArchiver(t, c, st, func(o *Options) {
		packed(o)
		o.Topics = selector(t, []string{"ours"})
		o.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
		o.FlushInterval = 50 * time.Millisecond
		// Cleaning every 300 ms; a tail is idle (adoptable) 2.3 s after its
		// newest entry: their archiver's last commits, after the producer
		// stops, come well before that, even on a loaded machine.
		o.CompactAfter, o.CompactGrace = 300*time.Millisecond, 2*time.Second
	})
	adopted := func() bool {
		return strings.Contains(logs.String(), "compacting the uncompacted tail of a deleted topic")
	}
	deadline := time.Now().Add(60 * time.Second)
	for strings.Count(logs.String(), `"msg":"flush objects of stopped archivers cleaned"`) < 3 {
		if adopted() {
			t.Fatalf("a partition another archiver commits to was adopted:\n%s", logs.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("no three cleaning passes:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.Stop(t)
	// Their archiver archives everything produced before it stops (a
	// continuous archiver's shutdown commits what it fetched, not the
	// log's end), before their tail is idle long enough to be adopted
	// (adopting it would void their last commits until their next claim
	// check).
	produced := 0
	for _, recs := range readCommitted(t, c, "theirs") {
		produced += len(recs)
	}
	waitArchived(t, st, "theirs", int64(produced))
	if err := stopTheirs(); err != nil {
		t.Fatal(err)
	}
	for !adopted() {
		if time.Now().After(deadline) {
			t.Fatalf("the tail nobody archives any more was not adopted:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	want := readCommitted(t, c, "theirs")
	got, _ := readArchive(t, st, "theirs")
	sameOffsetsValues(t, want, got)
	noProblems(t, st)
}

// sameOffsetsValues fails the test unless got holds, partition by
// partition, the records of want at the same offsets with the same values.
func sameOffsetsValues(t *testing.T, want, got map[int32][]consumed) {
	t.Helper()
	for p, recs := range want {
		if len(got[p]) != len(recs) {
			t.Fatalf("partition %d: %d records archived, the log had %d", p, len(got[p]), len(recs))
		}
		for i := range recs {
			if string(got[p][i].Value) != string(recs[i].Value) || got[p][i].Offset != recs[i].Offset {
				t.Fatalf("partition %d record %d: %+v, want %+v", p, i, got[p][i], recs[i])
			}
		}
	}
}

// TestPackedGroupReclaimDeferred: a group member whose claim check finds a
// newer claim (here a standalone run's) stops the partition and claims it
// again only after a delay (a session timeout by default): if it is a
// zombie the group already replaced, it hears so meanwhile and never
// voids the new owner's commits. Nothing is lost or duplicated either way.
func TestPackedGroupReclaimDeferred(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "zg", 1, nil)
	st := newStore(t)
	p := startProducer(t, c, "zg", 5)
	const delay = 2 * time.Second
	var logs kfaketest.LogBuffer
	stop := startArchiver(t, c, st, zombieGuardOptions("zg-group", &logs, delay))
	waitArchived(t, st, "zg", 100)
	runOnce(t, c, st, packed) // claims the partition
	deadline := time.Now().Add(30 * time.Second)
	var lost, again time.Time
	for again.IsZero() {
		if time.Now().After(deadline) {
			t.Fatalf("the lost claim was not noticed and claimed again:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
		for _, e := range logLines(&logs) {
			switch {
			case lost.IsZero() && strings.HasPrefix(e.Msg, lostClaimMsg):
				lost = e.Time
			case !lost.IsZero() && e.Msg == reclaimMsg:
				again = e.Time
			case strings.HasPrefix(e.Msg, "partition claimed by another archiver meanwhile: claiming it again from the archive's end ("):
				t.Fatalf("a group member claimed again at once:\n%s", logs.String())
			}
		}
	}
	if waited := again.Sub(lost); waited < delay {
		t.Fatalf("claimed again %v after losing the claim, want >= %v", waited, delay)
	}
	waitArchived(t, st, "zg", archivedRecords(t, st, "zg")+100) // archiving again
	stopThenCheck(t, c, st, "zg", p, stop)
}

// The log messages of a group member's lost claim and deferred reclaim.
const (
	lostClaimMsg = "partition claimed by another archiver meanwhile: claiming it again from the archive's end unless the group revokes it first"
	reclaimMsg   = "claiming the partition again"
)

// zombieGuardOptions: a packed group member logging JSON to logs, checking
// its claims often and claiming a lost partition again after delay.
func zombieGuardOptions(group string, logs *kfaketest.LogBuffer, delay time.Duration) func(*Options) {
	return func(o *Options) {
		packed(o)
		o.Group = group
		o.Logger = slog.New(slog.NewJSONHandler(logs, nil))
		o.FlushInterval = 50 * time.Millisecond
		o.CompactAfter = time.Hour
		o.ClaimCheckInterval = 300 * time.Millisecond
		o.reclaimDelay = delay
	}
}

// logLines decodes a JSON log's lines (message, partition, time).
func logLines(b *kfaketest.LogBuffer) []logLine {
	var out []logLine
	for _, l := range strings.Split(b.String(), "\n") {
		var e logLine
		if json.Unmarshal([]byte(l), &e) == nil {
			out = append(out, e)
		}
	}
	return out
}

type logLine struct {
	Time      time.Time `json:"time"`
	Msg       string    `json:"msg"`
	Partition *int32    `json:"partition"`
}

// TestPackedGroupReclaimRevoked is the point of the zombie guard: a group
// member that lost its claims waits before claiming again, and when the
// group moves a partition to another member meanwhile (here a second
// member joining), the wait ends there: the first member never claims that
// partition again, so the new owner's claim stands; the partition it kept
// it claims again after the wait. Nothing is lost or duplicated.
func TestPackedGroupReclaimRevoked(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "zr", 2, nil)
	st := newStore(t)
	p := startProducer(t, c, "zr", 5)
	const delay = 8 * time.Second
	var logsA, logsB kfaketest.LogBuffer
	stopA := startArchiver(t, c, st, zombieGuardOptions("zr-group", &logsA, delay))
	waitArchived(t, st, "zr", 100)
	runOnce(t, c, st, packed) // claims both partitions
	waitFor := func(what string, d time.Duration, ok func([]logLine) bool) {
		t.Helper()
		for deadline := time.Now().Add(d); !ok(logLines(&logsA)); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %v:\n%s", what, d, logsA.String())
			}
		}
	}
	count := func(ls []logLine, prefix string) (n int, parts []int32) {
		for _, e := range ls {
			if strings.HasPrefix(e.Msg, prefix) && e.Partition != nil {
				n++
				parts = append(parts, *e.Partition)
			}
		}
		return n, parts
	}
	waitFor("both lost claims noticed", 30*time.Second, func(ls []logLine) bool { n, _ := count(ls, lostClaimMsg); return n == 2 })
	lostAt := time.Now()
	stopB := startArchiver(t, c, st, zombieGuardOptions("zr-group", &logsB, delay))
	var moved int32
	waitFor("a partition moved to the second member", delay, func(ls []logLine) bool {
		n, parts := count(ls, "partition released")
		if n > 0 {
			moved = parts[0]
		}
		return n > 0
	})
	if took := time.Since(lostAt); took >= delay {
		t.Fatalf("the rebalance took %v, longer than the reclaim delay (%v): the test proves nothing", took, delay)
	} else {
		t.Logf("partition %d moved %v after the claims were lost", moved, took.Round(time.Millisecond))
	}
	waitFor("the kept partition claimed again", delay+10*time.Second, func(ls []logLine) bool { n, _ := count(ls, reclaimMsg); return n > 0 })
	time.Sleep(time.Until(lostAt.Add(delay + time.Second)))
	if _, parts := count(logLines(&logsA), reclaimMsg); len(parts) != 1 || parts[0] == moved {
		t.Fatalf("claimed again %v, want only the partition kept (not %d):\n%s", parts, moved, logsA.String())
	}
	arch := openArchive(t, st)
	incs, err := arch.Incarnations(context.Background(), "zr")
	if err != nil || len(incs) != 1 {
		t.Fatal(incs, err)
	}
	// Claims of the moved partition: the first member's, the --once run's,
	// the second member's; a reclaim by the first would be a fourth.
	if cl, err := arch.Partition("zr", incs[0].TopicID, moved).NewestClaim(context.Background()); err != nil || cl == nil || cl.Epoch != 3 {
		t.Fatalf("newest claim of the moved partition %d: %+v %v, want epoch 3 (the second member's)", moved, cl, err)
	}
	waitArchived(t, st, "zr", archivedRecords(t, st, "zr")+100) // both archiving
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	stopThenCheck(t, c, st, "zr", p, stopA)
}

// claimOnFirstFlush is a store that, before the first flush object is
// created, lets claim run: another archiver's claim landing mid-run.
type claimOnFirstFlush struct {
	store.Store
	once  sync.Once
	claim func()
}

func (s *claimOnFirstFlush) Put(ctx context.Context, key string, r io.Reader, size int64, opts store.PutOptions) error {
	if strings.HasSuffix(key, ".kwal") {
		s.once.Do(s.claim)
	}
	return s.Store.Put(ctx, key, r, size, opts)
}

// TestPackedOnceLostClaimFails: a packed --once run whose partition another
// archiver claimed during the run (here before its first flush, by a run
// that then stopped) committed nothing that counts: it fails, naming the
// partition and how far the archive reaches, instead of reporting success.
// A rerun archives everything.
func TestPackedOnceLostClaimFails(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "lc", 1, nil)
	cl := newClient(t, c)
	for i := range 50 {
		produce(t, cl, &kgo.Record{Topic: "lc", Value: []byte(strconv.Itoa(i))})
	}
	base := newStore(t)
	ctx := context.Background()
	st := &claimOnFirstFlush{Store: base}
	st.claim = func() {
		a := openArchive(t, base)
		incs, err := a.Incarnations(ctx, "lc")
		if err != nil || len(incs) != 1 {
			t.Error(incs, err)
			return
		}
		log := a.Partition("lc", incs[0].TopicID, 0)
		newest, err := log.NewestClaim(ctx)
		if err != nil || newest == nil {
			t.Error("no claim before the first flush", err)
			return
		}
		if err := log.CreateClaim(ctx, &manifest.Claim{Epoch: newest.Epoch + 1, Writer: manifest.NewWriterID(), Start: 0, CreatedMs: time.Now().UnixMilli()}); err != nil {
			t.Error(err)
		}
	}
	var logs kfaketest.LogBuffer
	o := Options{KafkaOpts: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, Store: st, Once: true, Layout: LayoutPacked,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)), WriterID: "test"}
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	err = a.Run(rctx)
	if err == nil || !errors.Is(err, manifest.ErrFenced) || !strings.Contains(err.Error(), "lc/0 (archived to offset 0 of 50)") {
		t.Fatalf("a --once run whose claim was taken before it committed anything returned %v", err)
	}
	if n := archivedRecords(t, base, "lc"); n != 0 {
		t.Fatalf("%d records count after the run lost its claim, want 0", n)
	}
	// Its summary says so: none of its records count.
	if sum := a.Summary(); sum.Records != 0 || sum.Superseded != 50 || sum.Segments != 0 || sum.Bytes != 0 {
		t.Fatalf("summary %+v: want 0 records (50 superseded), 0 segments, 0 bytes", sum)
	}
	runOnce(t, c, base, packed)
	checkExact(t, c, base, "lc")
	noProblems(t, base)
}

// failClaimReads fails the first n GETs of claims made after the first
// flush object was written: in a --once run, the end-of-run claim check's.
type failClaimReads struct {
	store.Store
	flushed atomic.Bool
	n       atomic.Int64
}

func (s *failClaimReads) Put(ctx context.Context, key string, r io.Reader, size int64, opts store.PutOptions) error {
	if strings.HasSuffix(key, ".kwal") {
		s.flushed.Store(true)
	}
	return s.Store.Put(ctx, key, r, size, opts)
}

func (s *failClaimReads) GetRange(ctx context.Context, key string, off, length int64) (io.ReadCloser, error) {
	if s.flushed.Load() && strings.Contains(key, "/claims/") && s.n.Add(-1) >= 0 {
		return nil, storefault.ErrInjected
	}
	return s.Store.GetRange(ctx, key, off, length)
}

// TestPackedOnceClaimCheckRetries: the end-of-run claim check of a packed
// --once run retries a failed read instead of failing a run that archived
// everything.
func TestPackedOnceClaimCheckRetries(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "cr", 2, nil)
	cl := newClient(t, c)
	for i := range 40 {
		produce(t, cl, &kgo.Record{Topic: "cr", Key: []byte(strconv.Itoa(i)), Value: []byte(strconv.Itoa(i))})
	}
	base := newStore(t)
	st := &failClaimReads{Store: base}
	st.n.Store(3)
	runOnce(t, c, st, packed)
	if left := st.n.Load(); left > 0 {
		t.Fatalf("the claim check read no claim after the flush (%d injected faults left)", left)
	}
	checkExact(t, c, base, "cr")
	noProblems(t, base)
}

// TestDueIndexSeq: a due tail index is written at a seq below every flush
// object in flight (readers skip the objects up to its seq), and after the
// last one.
func TestDueIndexSeq(t *testing.T) {
	t.Parallel()
	pk := newPackedState(time.Now())
	if _, ok := pk.dueIndexSeq(); ok {
		t.Fatal("an index not due can be written")
	}
	pk.indexDue = true
	if _, ok := pk.dueIndexSeq(); ok {
		t.Fatal("an index can be written before any flush object")
	}
	pk.seq = 10 // 0..9 started
	for _, tc := range []struct {
		flushing []int64
		indexed  []int64
		at       int64
		ok       bool
	}{
		{nil, nil, 9, true},
		{[]int64{9}, nil, 8, true},
		{[]int64{7, 9}, nil, 6, true},
		{[]int64{0, 5}, nil, 0, false},
		{[]int64{7}, []int64{6}, 0, false},
		{[]int64{8}, []int64{6}, 7, true},
		{nil, []int64{9}, 0, false},
	} {
		pk.flushing = map[int64]bool{}
		for _, s := range tc.flushing {
			pk.flushing[s] = true
		}
		pk.indexes = tc.indexed
		at, ok := pk.dueIndexSeq()
		if ok != tc.ok || ok && at != tc.at {
			t.Errorf("in flight %v, indexed %v: %d %v, want %d %v", tc.flushing, tc.indexed, at, ok, tc.at, tc.ok)
		}
	}
}

// keyedStub is a store.KeyedStager recording the keys it stages.
type keyedStub struct{ keys []string }

func (k *keyedStub) StageAt(_ context.Context, key string) (store.Staged, error) {
	k.keys = append(k.keys, key)
	return nil, nil
}

// TestStageFlushReservations: staging by key reserves the flush object's
// seq (a tail index waits for it), only when the partition's earlier
// segments have their seqs and within maxStreamedFlushes; dropping the
// segments releases the reservations whose flush did not start.
func TestStageFlushReservations(t *testing.T) {
	t.Parallel()
	a := &Archiver{pk: newPackedState(time.Now())}
	a.pk.seq = 5
	ks := &keyedStub{}
	newPart := func() *partState { return &partState{open: manifest.NewSegmentWriter(0, manifest.SegmentOptions{})} }
	sealedSeg := func(res reservation) *sealed {
		w := manifest.NewSegmentWriter(0, manifest.SegmentOptions{})
		return &sealed{w: w, writer: w, res: res}
	}
	p1 := newPart()
	if _, err := a.stageFlush(p1, ks); err != nil {
		t.Fatal(err)
	}
	if p1.openRes != (reservation{seq: 5, ok: true}) || a.pk.seq != 6 || a.pk.flushing[5] || len(a.pk.flushing) != 1 ||
		ks.keys[0] != manifest.FlushKey(a.pk.writer, 5) {
		t.Fatalf("after staging: reservation %+v, next seq %d, flushing %v, keys %q", p1.openRes, a.pk.seq, a.pk.flushing, ks.keys)
	}
	if _, err := a.stageFlush(p1, ks); err == nil {
		t.Fatal("a segment staged twice")
	}
	// An earlier segment not yet in a flush object: refused; in flight: fine.
	p2 := newPart()
	p2.queue = []*sealed{sealedSeg(reservation{})}
	if _, err := a.stageFlush(p2, ks); err == nil {
		t.Fatal("staged while an earlier segment has no seq")
	}
	p2.inflight = true
	if _, err := a.stageFlush(p2, ks); err != nil || p2.openRes.seq != 6 {
		t.Fatalf("staging after a segment in flight: %v, %+v", err, p2.openRes)
	}
	// Behind one in flight, a sealed segment with a reserved seq is fine;
	// one without is not. (Each reservation is dropped again.)
	for _, tc := range []struct {
		inflight bool
		queue    []reservation
		ok       bool
	}{
		{true, []reservation{{}, {seq: 1, ok: true}}, true},
		{false, []reservation{{seq: 1, ok: true}}, true},
		{false, []reservation{{seq: 1, ok: true}, {seq: 2, ok: true}}, true},
		{true, []reservation{{}, {}}, false},
		{false, []reservation{{seq: 1, ok: true}, {}}, false},
	} {
		p := newPart()
		p.inflight = tc.inflight
		for _, r := range tc.queue {
			p.queue = append(p.queue, sealedSeg(r))
		}
		seq := a.pk.seq
		_, err := a.stageFlush(p, ks)
		if (err == nil) != tc.ok || tc.ok && p.openRes != (reservation{seq: seq, ok: true}) {
			t.Fatalf("in flight %v, queued %+v: staged %+v, %v; want staged: %v", tc.inflight, tc.queue, p.openRes, err, tc.ok)
		}
		a.discard(p)
	}
	if len(a.pk.flushing) != 2 {
		t.Fatalf("reservations %v, want p1's and p2's", a.pk.flushing)
	}
	a.pk.flushing[3] = true // a streamed flush object in flight
	p3 := newPart()
	if _, err := a.stageFlush(p3, ks); err != nil {
		t.Fatal(err)
	}
	// A tail index waits for the reserved seqs.
	a.pk.indexDue = true
	if at, ok := a.pk.dueIndexSeq(); !ok || at != 2 {
		t.Fatalf("tail index due at %d %v, want 2 (below the oldest in flight or reserved)", at, ok)
	}
	// Dropping p1's open segment releases 5; p3's sealed one whose flush
	// started (7) stays until its result.
	a.discard(p1)
	p3.queue = []*sealed{sealedSeg(p3.openRes)}
	p3.open, p3.openRes, p3.inflight = nil, reservation{}, true
	a.pk.flushing[7] = true
	a.discard(p3)
	if _, ok := a.pk.flushing[5]; ok {
		t.Error("a dropped segment's reservation was kept")
	}
	if started, ok := a.pk.flushing[7]; !ok || !started {
		t.Error("a started flush object's seq was released by dropping its segment")
	}
	if p1.open != nil || p1.openRes.ok {
		t.Error("discard left the open segment")
	}
}

// TestStageFlushBound: at most maxStreamedFlushes streamed flush objects
// are filling (reserved, flush not started) and maxStreamedInFlight
// reserved or in flight; the shared one does not count. A busy
// partition's segment sealed at a flush completes while its next segment
// fills: the completing ones must not keep the next ones from staging.
func TestStageFlushBound(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		filling, started int
		shared           bool
		ok               bool
	}{
		{0, 0, false, true},
		{maxStreamedFlushes - 1, 0, false, true},
		{maxStreamedFlushes, 0, false, false},
		{maxStreamedFlushes - 1, maxStreamedFlushes, false, true},
		{0, maxStreamedFlushes, false, true},
		{maxStreamedFlushes - 1, maxStreamedInFlight - maxStreamedFlushes + 1, false, false},
		{0, maxStreamedInFlight - 1, false, true},
		{0, maxStreamedInFlight, false, false},
		{0, maxStreamedInFlight, true, true}, // one of them is the shared one
	} {
		a := &Archiver{pk: newPackedState(time.Now())}
		for i := 0; i < tc.filling+tc.started; i++ {
			a.pk.flushing[a.pk.seq] = i >= tc.filling
			a.pk.seq++
		}
		a.pk.shared = tc.shared
		p := &partState{open: manifest.NewSegmentWriter(0, manifest.SegmentOptions{})}
		_, err := a.stageFlush(p, &keyedStub{})
		if (err == nil) != tc.ok {
			t.Errorf("%d filling, %d started (shared %v): staged %v (%v), want %v", tc.filling, tc.started, tc.shared, err == nil, err, tc.ok)
		}
	}
}

// TestKickReserved: a sealed segment streamed under a reserved seq starts
// its flush as soon as the partition is kicked (at its seal; applyPacked
// kicks the next one), not at the next packedTick: waiting kept
// the partition's next segment from staging, in memory, until the tick.
// Behind a flush in flight, or after a failed attempt (packedTick retries
// at its pace), it waits; once the flush before is applied, it starts.
func TestKickReserved(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st := newStore(t)
	arch, err := manifest.Init(ctx, st, "test", 1)
	if err != nil {
		t.Fatal(err)
	}
	a := &Archiver{opts: Options{Layout: LayoutPacked, Store: st, Now: time.Now}, arch: arch, pk: newPackedState(time.Now()), parts: map[tp]*partState{}}
	a.pk.seq = 5
	sealedAt := func(seq, offset int64) *sealed {
		w := manifest.NewSegmentWriter(offset, manifest.SegmentOptions{})
		if err := w.Append(&manifest.Record{Offset: offset, Timestamp: 1, Value: []byte("v"), ProducerID: -1, ProducerEpoch: -1, LeaderEpoch: -1}); err != nil {
			t.Fatal(err)
		}
		a.pk.flushing[seq] = false // reserved
		return &sealed{w: w, writer: w, res: reservation{seq: seq, ok: true}}
	}
	ps := &partState{tp: tp{"t", 0}, id: manifest.TopicID{1}, ready: true, epoch: 1}
	a.parts[ps.tp] = ps
	second := sealedAt(4, 1) // sealed behind the first, its seq reserved too
	ps.queue = []*sealed{sealedAt(3, 0), second}
	ps.inflight = true // an earlier flush
	a.kick(ctx, ps)
	if started := a.pk.flushing[3]; started {
		t.Fatal("started behind a flush in flight")
	}
	ps.inflight, ps.failures = false, 1
	a.kick(ctx, ps)
	if started := a.pk.flushing[3]; started {
		t.Fatal("a failed flush restarted by a kick")
	}
	ps.failures = 0
	a.kick(ctx, ps)
	if started := a.pk.flushing[3]; !started || !ps.inflight {
		t.Fatalf("not started by a kick: flushing %v, in flight %v", a.pk.flushing, ps.inflight)
	}
	var r packedResult
	select {
	case r = <-a.pk.results:
	case <-time.After(10 * time.Second):
		t.Fatal("no flush result")
	}
	if r.err != nil || r.seq != 3 || r.shared || len(r.items) != 1 {
		t.Fatalf("flush result: seq %d, shared %v, %d items, %v", r.seq, r.shared, len(r.items), r.err)
	}
	if _, err := st.Stat(ctx, manifest.FlushKey(a.pk.writer, 3)); err != nil {
		t.Fatalf("the flush object under the reserved seq: %v", err)
	}
	if a.pk.seq != 5 {
		t.Fatalf("next seq %d: a reserved flush took a new seq", a.pk.seq)
	}

	// Applying the first flush starts the partition's next reserved
	// segment at once (not at the next tick), under its own seq.
	a.m = newMetrics(prometheus.NewRegistry())
	a.opts.Logger = slog.New(slog.DiscardHandler)
	if a.pk.flushing[4] {
		t.Fatal("the second segment started before the first was applied")
	}
	a.applyPacked(ctx, r)
	if started := a.pk.flushing[4]; !started || !ps.inflight || len(ps.queue) != 1 || ps.queue[0] != second {
		t.Fatalf("after the first flush was applied: flushing %v, in flight %v, %d queued", a.pk.flushing, ps.inflight, len(ps.queue))
	}
	select {
	case r = <-a.pk.results:
	case <-time.After(10 * time.Second):
		t.Fatal("no result of the second flush")
	}
	if r.err != nil || r.seq != 4 || len(r.items) != 1 {
		t.Fatalf("second flush result: seq %d, %d items, %v", r.seq, len(r.items), r.err)
	}
	a.applyPacked(ctx, r)
	if ps.inflight || len(ps.queue) != 0 || a.pk.seq != 5 {
		t.Fatalf("after both: in flight %v, %d queued, next seq %d", ps.inflight, len(ps.queue), a.pk.seq)
	}
	if _, err := st.Stat(ctx, manifest.FlushKey(a.pk.writer, 4)); err != nil {
		t.Fatalf("the second flush object under its reserved seq: %v", err)
	}
}

// TestPackedOnceCompactsEveryDuePartition: --once compacts every due tail
// although only compactConcurrency compactions run at once, however late
// a finished compaction's goroutine runs on after handing over its result
// (the slot is free by then: were it held, the run would find no slot and
// none running, and stop with tails uncompacted).
func TestPackedOnceCompactsEveryDuePartition(t *testing.T) {
	t.Parallel()
	const parts = 3 * compactConcurrency
	c := newCluster(t)
	createTopic(t, c, "oe", parts, nil)
	cl := newClient(t, c, kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	st := newStore(t)
	run := func(d time.Duration) {
		for i := 0; i < 4*parts; i++ {
			produce(t, cl, &kgo.Record{Topic: "oe", Value: []byte("v")})
		}
		runOnce(t, c, st, func(o *Options) {
			packed(o)
			o.CompactAfter, o.CompactGrace = time.Hour, 10*time.Minute
			o.Now = func() time.Time { return time.Now().Add(d) }
			o.testCompacted = func() { time.Sleep(50 * time.Millisecond) }
		})
		checkExact(t, c, st, "oe")
		noProblems(t, st)
	}
	run(0)
	if _, commits := keysUnder(t, st, manifest.TopicsPrefix, "/commits/"); commits != 0 {
		t.Fatalf("%d compacted commits after a run with nothing due", commits)
	}
	run(2 * time.Hour)
	if _, commits := keysUnder(t, st, manifest.TopicsPrefix, "/commits/"); commits != parts {
		t.Fatalf("%d compacted commits after a run with every tail due, want %d (one per partition)", commits, parts)
	}
}
