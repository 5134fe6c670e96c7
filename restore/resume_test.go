package restore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/store/filestore"
	"github.com/kbackup/kbackup/store/storefault"
)

// checkExact compares every partition of the target topic with the archive.
func checkExact(t testing.TB, f *fixture, tgt string, got map[int32][]rec) {
	t.Helper()
	for p := int32(0); p < f.parts; p++ {
		want, _ := archived(t, f.st, f.topic, p)
		sameContent(t, fmt.Sprintf("%s/%d", tgt, p), want, got[p])
	}
}

// TestResumeAfterCancel: restores cancelled at random instants, then run
// again, leave exactly the archive in the target: no duplicate, no gap.
func TestResumeAfterCancel(t *testing.T) {
	t.Parallel()
	f := buildFixture(t, "c", 3, 1500)
	f.archive(t)
	tgt := newCluster(t)
	rng := rand.New(rand.NewPCG(1, 2))
	var interrupted, resumed int
	for i := 0; i < 6; i++ {
		slow := storefault.New(f.st, uint64(i))
		slow.SetMaxDelay(2 * time.Millisecond)
		o := f.opts(t, tgt)
		o.Store, o.StateStore = slow, f.st
		o.CheckpointInterval = time.Duration(5+rng.IntN(30)) * time.Millisecond
		o.MaxInFlightBytes = 4 << 10
		ctx, cancel := context.WithCancel(context.Background())
		go afterCalls(slow, int64(20+rng.IntN(60)), cancel)
		sum, err := Run(ctx, o)
		cancel()
		if err != nil {
			var ie *IncompleteError
			if sum != nil && !errors.As(err, &ie) {
				t.Fatalf("run %d: %v", i, err)
			}
			interrupted++
		}
		if sum != nil && sum.Plan != nil {
			for _, p := range sum.Plan.Partitions {
				if p.State == "resume" {
					resumed++
				}
			}
		}
	}
	o := f.opts(t, tgt)
	sum := run(t, o)
	for _, p := range sum.Plan.Partitions {
		if p.State == "resume" {
			resumed++
		}
	}
	if interrupted == 0 || resumed == 0 {
		t.Fatalf("interrupted %d runs, resumed %d partitions: the test did not exercise a resume", interrupted, resumed)
	}
	checkExact(t, f, "c", readTopic(t, tgt, "c"))
}

// afterCalls calls fn once st has served n calls.
func afterCalls(st *storefault.Store, n int64, fn func()) {
	for st.Calls() < n {
		time.Sleep(200 * time.Microsecond)
	}
	fn()
}

// TestResumeAfterStoreFreeze: the store dies mid-restore (every call
// fails from an arbitrary instant, also the final checkpoint), so the
// target holds records past the last checkpoint; the rerun verifies and
// skips them.
func TestResumeAfterStoreFreeze(t *testing.T) {
	t.Parallel()
	f := buildFixture(t, "z", 2, 1500)
	f.archive(t)
	tgt := newCluster(t)
	faulty := storefault.New(f.st, 9)
	faulty.SetMaxDelay(2 * time.Millisecond)
	o := f.opts(t, tgt)
	o.Store, o.StateStore = faulty, faulty
	o.CheckpointInterval = 30 * time.Millisecond
	go afterCalls(faulty, 60, faulty.Freeze)
	sum, err := Run(context.Background(), o)
	var ie *IncompleteError
	if !errors.As(err, &ie) {
		t.Fatalf("frozen store: %v", err)
	}
	if len(ie.Failed) == 0 || !strings.Contains(err.Error(), "z/") {
		t.Fatalf("error does not name the partitions: %v", err)
	}
	for _, p := range sum.Partitions {
		if p.Status != StatusFailed && p.Status != StatusComplete {
			t.Fatalf("partition %s: status %q", p.Name(), p.Status)
		}
	}
	faulty.Thaw()
	faulty.SetMaxDelay(0)
	run(t, o)
	checkExact(t, f, "z", readTopic(t, tgt, "z"))
}

// TestKillResume: a restore process killed with SIGKILL at random
// instants, then run again, leaves exactly the archive in the target.
func TestKillResume(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	t.Parallel()
	f := buildFixture(t, "k", 3, 1500)
	f.archive(t)
	tgt := newCluster(t)
	var total int64
	for p := int32(0); p < f.parts; p++ {
		rs, _ := archived(t, f.st, "k", p)
		total += int64(len(rs))
	}
	midway := false
	for i := 0; i < 4 && endSum(t, tgt, "k") < total; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRestoreChild$")
		cmd.Env = append(os.Environ(), "KBACKUP_CHILD_BROKERS="+tgt.ListenAddrs()[0], "KBACKUP_CHILD_STORE="+f.dir, "KBACKUP_CHILD_TOPIC=k")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill once the child has made progress, at a random instant after.
		before := endSum(t, tgt, "k")
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && endSum(t, tgt, "k") == before && before < total; {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(rand.IntN(150)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		n := endSum(t, tgt, "k")
		t.Logf("child %d killed with %d of %d records in the target", i, n, total)
		if n > 0 && n < total {
			midway = true
		}
	}
	if !midway {
		t.Fatal("no child was killed in the middle of the restore")
	}
	run(t, f.opts(t, tgt))
	checkExact(t, f, "k", readTopic(t, tgt, "k"))
}

// TestRestoreChild is the process TestKillResume kills.
func TestRestoreChild(t *testing.T) {
	brokers, dir := os.Getenv("KBACKUP_CHILD_BROKERS"), os.Getenv("KBACKUP_CHILD_STORE")
	if brokers == "" {
		t.Skip("only runs as TestKillResume's child process")
	}
	st, err := filestore.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	slow := storefault.New(st, uint64(os.Getpid()))
	slow.SetMaxDelay(100 * time.Millisecond)
	topic := os.Getenv("KBACKUP_CHILD_TOPIC")
	_, _ = Run(context.Background(), Options{Store: slow, StateStore: st, KafkaOpts: []kgo.Opt{kgo.SeedBrokers(brokers)},
		Topics: mustSel(t, topic), CheckpointInterval: 30 * time.Millisecond, MaxInFlightBytes: 8 << 10})
	time.Sleep(time.Hour) // killed before
}

// endSum is the sum of topic's end offsets in c (0 if it does not exist).
func endSum(t testing.TB, c *kfake.Cluster, topic string) int64 {
	t.Helper()
	return sumEnds(kadm.NewClient(newClient(t, c)), topic)
}

// sumEnds is the sum of topic's end offsets (0 if it does not exist).
func sumEnds(adm *kadm.Client, topic string) int64 {
	ends, err := adm.ListEndOffsets(context.Background(), topic)
	if err != nil {
		return 0
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			n += o.Offset
		}
	})
	return n
}
