package restore

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kbackup/kbackup/internal/lease"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/s3store"
	"github.com/kbackup/kbackup/store/s3store/s3fake"
	"github.com/kbackup/kbackup/store/storefault"
)

// slowOpts are restore options whose archive reads are slowed, so that
// concurrent runs overlap.
func slowOpts(t *testing.T, f *fixture, tgt *kfake.Cluster, seed uint64) Options {
	t.Helper()
	o := f.opts(t, tgt)
	slow := storefault.New(f.st, seed)
	slow.SetMaxDelay(3 * time.Millisecond)
	o.Store, o.StateStore = slow, f.st
	o.MaxInFlightBytes = 8 << 10
	o.Concurrency = 1
	o.LeaseDuration = 2 * time.Second
	o.MaxClockSkew = 100 * time.Millisecond
	return o
}

// runAll starts the options' runs, each delay[i] after the first, and
// returns their summaries and errors.
func runAll(t *testing.T, opts []Options, delay []time.Duration) ([]*Summary, []error) {
	t.Helper()
	sums, errs := make([]*Summary, len(opts)), make([]error, len(opts))
	var wg sync.WaitGroup
	for i := range opts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(delay[i])
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			sums[i], errs[i] = Run(ctx, opts[i])
		}()
	}
	wg.Wait()
	return sums, errs
}

// checkOnce checks the target against the archive, that the runs that
// succeeded report the same completion record and offset map, and that
// every record was produced once in total.
func checkOnce(t *testing.T, f *fixture, tgt string, got map[int32][]rec, sums []*Summary, errs []error) {
	t.Helper()
	checkExact(t, f, tgt, got)
	var total, produced int64
	for p := int32(0); p < f.parts; p++ {
		rs, _ := archived(t, f.st, f.topic, p)
		total += int64(len(rs))
	}
	var first *Summary
	for i, s := range sums {
		if errs[i] != nil {
			continue
		}
		for _, p := range s.Partitions {
			produced += p.Produced
		}
		if s.Report == nil || s.Report.Records != total {
			t.Fatalf("run %d: report %+v, want %d records", i, s.Report, total)
		}
		if first == nil {
			first = s
			continue
		}
		if s.Report.CompletedMs != first.Report.CompletedMs || s.Report.CompletedBy != first.Report.CompletedBy {
			t.Fatalf("runs report differently: %+v vs %+v", s.Report, first.Report)
		}
		if string(s.OffsetMap.Encode()) != string(first.OffsetMap.Encode()) {
			t.Fatalf("runs report different offset maps")
		}
	}
	if first == nil {
		t.Fatalf("no run succeeded: %v", errs)
	}
	if produced != total {
		t.Fatalf("the runs produced %d records for %d archived", produced, total)
	}
	for p := range first.OffsetMap.Partitions {
		pm := &first.OffsetMap.Partitions[p]
		want, _ := archived(t, f.st, f.topic, pm.SourcePartition)
		for i, r := range want {
			if to, ok := pm.TargetOf(r.Offset); !ok || to != int64(i) || !pm.Complete {
				t.Fatalf("offset map %d: source %d -> %d %v, want %d", pm.SourcePartition, r.Offset, to, ok, i)
			}
		}
	}
}

// TestIdenticalRunsAtOnce: two identical restores started together (the
// issue's scenario, --concurrency 1), and a third a moment later: each
// either shares or refuses naming the holder; the target equals the
// archive, every record was produced once, one report.
func TestIdenticalRunsAtOnce(t *testing.T) {
	t.Parallel()
	f := buildFixture(t, "tw", 4, 600)
	f.archive(t)
	tgt := newCluster(t)
	opts := []Options{slowOpts(t, f, tgt, 1), slowOpts(t, f, tgt, 2), slowOpts(t, f, tgt, 3)}
	sums, errs := runAll(t, opts, []time.Duration{0, 0, 300 * time.Millisecond})
	refused := 0
	for i, err := range errs {
		if err != nil {
			if !strings.Contains(err.Error(), "is being run by") || !strings.Contains(err.Error(), "--join") {
				t.Fatalf("run %d: %v", i, err)
			}
			refused++
		}
	}
	t.Logf("%d of 3 runs refused (another was running)", refused)
	checkOnce(t, f, "tw", readTopic(t, tgt, "tw"), sums, errs)
}

// TestJoinSharesLanes: three processes with Join share the lanes of one
// restore: each lane produced once, by one of them, one report and one
// offset map, the same for all.
func TestJoinSharesLanes(t *testing.T) {
	t.Parallel()
	f := buildFixture(t, "js", 4, 600)
	f.archive(t)
	tgt := newCluster(t)
	var opts []Options
	for i := uint64(0); i < 3; i++ {
		o := slowOpts(t, f, tgt, 10+i)
		o.Join = true
		opts = append(opts, o)
	}
	sums, errs := runAll(t, opts, []time.Duration{0, 50 * time.Millisecond, 100 * time.Millisecond})
	busy := 0
	for i, err := range errs {
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		for _, p := range sums[i].Partitions {
			if p.Produced > 0 {
				busy++
				break
			}
		}
	}
	if busy < 2 {
		t.Fatalf("only %d of 3 processes restored a partition", busy)
	}
	checkOnce(t, f, "js", readTopic(t, tgt, "js"), sums, errs)
}

// TestStalePlanRecomputed: a joined run that planned while another run
// held the first lane and had not started the others (its plan: resume,
// new, new) writes nothing once the other completed: every lane's state is
// read again after its lease is won, never taken from the plan.
func TestStalePlanRecomputed(t *testing.T) {
	t.Parallel()
	f := buildFixture(t, "sp", 3, 300)
	f.archive(t)
	tgt := newCluster(t)
	aStarted, aGo := make(chan struct{}), make(chan struct{})
	var once sync.Once
	a := f.opts(t, tgt)
	a.Concurrency = 1
	a.testLaneStarted = func(string) { once.Do(func() { close(aStarted); <-aGo }) }
	bPlanned, bGo := make(chan struct{}), make(chan struct{})
	b := f.opts(t, tgt)
	b.Join = true
	b.testPlanned = func() { close(bPlanned); <-bGo }
	sums, errs := make([]*Summary, 2), make([]error, 2)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); sums[0], errs[0] = Run(context.Background(), a) }()
	<-aStarted
	go func() { defer wg.Done(); sums[1], errs[1] = Run(context.Background(), b) }()
	<-bPlanned
	close(aGo)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if rep, _ := loadReport(context.Background(), f.st, sums0ID(t, f, tgt)); rep != nil {
			break
		}
	}
	close(bGo)
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("runs: %v; %v", errs[0], errs[1])
	}
	states := map[string]int{}
	for _, p := range sums[1].Plan.Partitions {
		states[p.State]++
	}
	if states["new"] == 0 {
		t.Fatalf("the joined run's plan was not stale: %v", states)
	}
	for _, p := range sums[1].Partitions {
		if p.Produced != 0 {
			t.Fatalf("the stale run produced %d records into %s", p.Produced, p.Name())
		}
	}
	checkOnce(t, f, "sp", readTopic(t, tgt, "sp"), sums, errs)
}

// sums0ID is the derived id of the fixture's restore into tgt.
func sums0ID(t *testing.T, f *fixture, tgt *kfake.Cluster) string {
	t.Helper()
	o := f.opts(t, tgt)
	o.DryRun = true
	s, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return s.RestoreID
}

// TestHolderFencedTakenOver: a process whose state store stops answering
// cannot renew its leases: it stops writing at the lease's deadline, and a
// joined process takes its lanes over once they expire, settles and
// resumes them. The target ends equal to the archive.
func TestHolderFencedTakenOver(t *testing.T) {
	t.Parallel()
	f := buildFixture(t, "fz", 2, 2500)
	f.archive(t)
	tgt := newCluster(t)
	faulty := storefault.New(f.st, 5)
	a := slowOpts(t, f, tgt, 5)
	a.Store.(*storefault.Store).SetMaxDelay(100 * time.Millisecond) // still reading when its leases lapse
	a.StateStore, a.Concurrency, a.Join = faulty, 2, true
	a.LeaseDuration = 1500 * time.Millisecond
	var aErr error
	aDone := make(chan struct{})
	go func() {
		defer close(aDone)
		_, aErr = Run(context.Background(), a)
	}()
	for deadline := time.Now().Add(20 * time.Second); endSum(t, tgt, "fz") < 200 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	faulty.Freeze()
	b := f.opts(t, tgt)
	b.Join, b.LeaseDuration, b.MaxClockSkew = true, 1500*time.Millisecond, 100*time.Millisecond
	sum := run(t, b)
	<-aDone
	if aErr == nil || !errors.Is(aErr, lease.ErrLost) && !strings.Contains(aErr.Error(), "lease") {
		t.Fatalf("the fenced process: %v", aErr)
	}
	resumed, taken := 0, int64(0)
	for i, p := range sum.Plan.Partitions {
		taken += sum.Partitions[i].Produced
		if p.State == "resume" {
			resumed++
		}
		t.Logf("%s/%d taken over: %d of %d records produced by the taker", p.SourceTopic, p.SourcePartition, sum.Partitions[i].Produced, sum.Partitions[i].Records)
	}
	if resumed == 0 || taken == 0 {
		t.Fatalf("no partition was taken over midway (%d resumed, %d records produced by the taker)", resumed, taken)
	}
	checkExact(t, f, "fz", readTopic(t, tgt, "fz"))
	faulty.Thaw()
}

// TestRefusesStoreWithoutConditionalCreate: leases rest on create-if-absent;
// a state store that ignores If-None-Match is refused before anything is
// written, neither to it nor to the target.
func TestRefusesStoreWithoutConditionalCreate(t *testing.T) {
	t.Parallel()
	f := buildFixture(t, "nc", 1, 50)
	f.archive(t)
	tgt := newCluster(t)
	srv, sopts := s3fake.Start(t, "nc")
	st, err := s3store.New(context.Background(), sopts)
	if err != nil {
		t.Fatal(err)
	}
	srv.IgnoreIfNoneMatch(true)
	o := f.opts(t, tgt)
	o.StateStore = st
	_, err = Run(context.Background(), o)
	if !errors.Is(err, manifest.ErrNoConditionalCreate) {
		t.Fatalf("restore with a state store ignoring If-None-Match: %v", err)
	}
	var keys []string
	_ = st.List(context.Background(), store.ListOptions{}, func(e store.ListEntry) error { keys = append(keys, e.Key); return nil })
	if len(keys) != 0 || endSum(t, tgt, "nc") != 0 {
		t.Fatalf("the refused restore wrote %v and %d records", keys, endSum(t, tgt, "nc"))
	}
}
