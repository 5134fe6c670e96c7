package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbackup/kbackup/internal/kfaketest"
	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/storefault"
)

// interruptedRestore runs a restore of f into tgt that stops as soon as
// its lanes started (the store freezes: no archive reads, no checkpoint),
// leaving initial checkpoints that are not done. It returns the options
// for the rerun.
func interruptedRestore(t *testing.T, f *fixture, o Options) Options {
	t.Helper()
	faulty := storefault.New(f.st, 3)
	o.Store, o.StateStore = faulty, faulty
	o.testLaneStarted = func(string) { faulty.Freeze() }
	_, err := Run(context.Background(), o)
	var ie *IncompleteError
	if !errors.As(err, &ie) {
		t.Fatalf("interrupted restore: %v", err)
	}
	o.Store, o.StateStore = f.st, f.st
	o.testLaneStarted = nil
	faulty.Thaw()
	return o
}

// foreignRecords produces n records to tgt's topic/partition with a plain
// client, as a stray writer (or a killed run's late request) would.
func foreignRecords(t *testing.T, brokers []string, topic string, partition int32, n int) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Error(err)
		return
	}
	defer cl.Close()
	for i := 0; i < n; i++ {
		r := &kgo.Record{Topic: topic, Partition: partition, Value: []byte(fmt.Sprintf("foreign-%d", i))}
		if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Error(err)
		}
	}
}

// TestSettleWaitsForLateWrites: when a resumed restore's target partitions
// still change (requests of the killed run applied late), the rerun waits
// until they are stable, and fails when they keep changing.
func TestSettleWaitsForLateWrites(t *testing.T) {
	t.Parallel()
	f := buildFixture(t, "s", 1, 1500)
	f.archive(t)
	tgt := newCluster(t)
	o := interruptedRestore(t, f, f.opts(t, tgt))

	// A writer that never stops: the rerun refuses, writing nothing.
	var lists atomic.Int64
	o.testSettleListed = func() {
		lists.Add(1)
		foreignRecords(t, tgt.ListenAddrs(), "s", 0, 1)
	}
	endBefore := readTopic(t, tgt, "s")
	_, err := Run(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "keep receiving records") || !strings.Contains(err.Error(), "s/0") {
		t.Fatalf("a target that keeps changing: %v", err)
	}
	if n := lists.Load(); n != settleRounds+1 {
		t.Fatalf("settle listed the end offsets %d times, want %d", n, settleRounds+1)
	}
	if got := len(readTopic(t, tgt, "s")[0]); got != len(endBefore[0])+settleRounds+1 {
		t.Fatalf("the refused rerun wrote records: %d, want only the %d foreign ones after %d", got, settleRounds+1, len(endBefore[0]))
	}

	// Late writes during the first two listings only: the rerun waits for
	// them, then finds them after the checkpoint; they are not this
	// restore's records, so it refuses to go on (nothing of its own added).
	lists.Store(0)
	o.testSettleListed = func() {
		if lists.Add(1) <= 2 {
			foreignRecords(t, tgt.ListenAddrs(), "s", 0, 1)
		}
	}
	_, err = Run(context.Background(), o)
	if n := lists.Load(); n != 4 {
		t.Fatalf("settle listed %d times, want 4 (a change seen at the 2nd and 3rd listing, stable at the 4th)", n)
	}
	if err == nil || !strings.Contains(err.Error(), "another producer") {
		t.Fatalf("foreign records after the checkpoint: %v", err)
	}
}

// TestSettleLateWriteOfKilledRun: the killed run's last records land only
// while the rerun settles; the rerun recognises them (they are its own
// next records) and the target ends exact.
func TestSettleLateWriteOfKilledRun(t *testing.T) {
	t.Parallel()
	f := buildFixture(t, "k", 1, 1500)
	f.archive(t)
	tgt := newCluster(t)
	o := interruptedRestore(t, f, f.opts(t, tgt))
	have := len(readTopic(t, tgt, "k")[0])
	want, _ := archived(t, f.st, "k", 0)
	if have+5 > len(want) {
		t.Fatalf("the interrupted run restored %d of %d records: nothing left to resume", have, len(want))
	}
	var lists atomic.Int64
	o.testSettleListed = func() {
		if lists.Add(1) == 1 {
			// What the killed run would have written next.
			cl := newClient(t, tgt, kgo.RecordPartitioner(kgo.ManualPartitioner()))
			var recs []*kgo.Record
			for _, r := range want[have : have+5] {
				kr := &kgo.Record{Topic: "k", Partition: 0, Key: r.Key, Value: r.Value, Timestamp: time.UnixMilli(r.Timestamp)}
				for _, h := range r.Headers {
					kr.Headers = append(kr.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
				}
				recs = append(recs, kr)
			}
			if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
				t.Error(err)
			}
		}
	}
	run(t, o)
	if n := lists.Load(); n < 3 {
		t.Fatalf("settle listed %d times: it did not wait for the late records", n)
	}
	checkExact(t, f, "k", readTopic(t, tgt, "k"))
}

// TestForeignWriteDuringRestore: records another producer appends between
// a lane's own records fail the lane, naming the offsets, and a rerun
// refuses; with --append the lane goes on and the offset map stays exact.
func TestForeignWriteDuringRestore(t *testing.T) {
	t.Parallel()
	f := buildFixture(t, "f", 2, 1000)
	f.archive(t)

	tgt := newCluster(t)
	o := f.opts(t, tgt)
	o.testLaneStarted = func(lane string) {
		if lane == laneName("f", 1) {
			foreignRecords(t, tgt.ListenAddrs(), "f", 1, 3)
		}
	}
	sum, err := Run(context.Background(), o)
	var ie *IncompleteError
	if !errors.As(err, &ie) || len(ie.Failed) != 1 || !strings.Contains(err.Error(), "f/1: offsets 0..2 were written by another producer") {
		t.Fatalf("foreign records in a lane's partition: %v", err)
	}
	for _, p := range sum.Partitions {
		if (p.Status == StatusComplete) != (p.TargetPartition == 0) {
			t.Fatalf("partition %s: status %s", p.Name(), p.Status)
		}
	}
	o.testLaneStarted = nil
	if _, err := Run(context.Background(), o); err == nil || !strings.Contains(err.Error(), "another producer") {
		t.Fatalf("rerun after a foreign write: %v", err)
	}

	tgt2 := newCluster(t)
	createTopic(t, tgt2, "f", 2, nil)
	o = f.opts(t, tgt2)
	o.Append = true
	o.testLaneStarted = func(lane string) {
		if lane == laneName("f", 1) {
			foreignRecords(t, tgt2.ListenAddrs(), "f", 1, 3)
		}
	}
	sum = run(t, o)
	got := readTopic(t, tgt2, "f")
	if len(got[1]) < 3 || string(got[1][0].Value) != "foreign-0" {
		t.Fatalf("target f/1 does not start with the foreign records")
	}
	byOffset := map[int64]rec{}
	for _, r := range got[1] {
		byOffset[r.Offset] = r
	}
	want, _ := archived(t, f.st, "f", 1)
	var pm *PartitionMap
	for i := range sum.OffsetMap.Partitions {
		if m := &sum.OffsetMap.Partitions[i]; m.SourcePartition == 1 {
			pm = m
		}
	}
	if pm == nil {
		t.Fatal("no offset map for partition 1")
	}
	for _, w := range want {
		to, ok := pm.TargetOf(w.Offset)
		if !ok {
			t.Fatalf("source offset %d not in the offset map", w.Offset)
		}
		if g, ok := byOffset[to]; !ok || !w.EqualContent(g) {
			t.Fatalf("source offset %d maps to target offset %d, which holds another record", w.Offset, to)
		}
	}
	if len(got[0]) != len(mustArchived(t, f, 0)) {
		t.Fatalf("partition 0: %d records restored", len(got[0]))
	}
}

func mustArchived(t *testing.T, f *fixture, p int32) []rec {
	recs, _ := archived(t, f.st, f.topic, p)
	return recs
}

// slowCheckpoints delays every checkpoint Put by delay and counts them.
type slowCheckpoints struct {
	store.Store
	delay time.Duration
	puts  atomic.Int64
}

func (s *slowCheckpoints) Put(ctx context.Context, key string, r io.Reader, size int64, o store.PutOptions) error {
	if strings.Contains(key, "/checkpoints/") {
		s.puts.Add(1)
		time.Sleep(s.delay)
	}
	return s.Store.Put(ctx, key, r, size, o)
}

// TestCheckpointIntervalAdapts: when storing a checkpoint is slow (a large
// offset map), the lane waits ten times the last checkpoint's cost before
// the next one instead of storing back to back.
func TestCheckpointIntervalAdapts(t *testing.T) {
	t.Parallel()
	f := buildFixture(t, "ci", 1, 1500)
	f.archive(t)
	tgt := newCluster(t)
	o := f.opts(t, tgt)
	const delay = 10 * time.Millisecond
	state := &slowCheckpoints{Store: f.st, delay: delay}
	slow := storefault.New(f.st, 5) // slow archive reads: the lane runs for a while
	slow.SetMaxDelay(4 * time.Millisecond)
	o.Store, o.StateStore = slow, state
	o.CheckpointInterval = time.Millisecond
	o.MaxInFlightBytes = 2 << 10
	start := time.Now()
	run(t, o)
	took := time.Since(start)
	// Initial and final checkpoints, plus periodic ones at most every
	// 10 x delay; without the adaptation there would be one per ~delay.
	limit := 2 + int64(took/(10*delay)) + 1
	if n := state.puts.Load(); n > limit || took < 10*delay {
		t.Fatalf("%d checkpoint puts in %v (limit %d; the restore must run longer than %v for the test to mean something)", n, took, limit, 10*delay)
	}
	checkExact(t, f, "ci", readTopic(t, tgt, "ci"))
}

// TestLaneListsOnlyItsPartitions: a lane lists the end offsets of its own
// target partition, not of the whole topic (which made listings grow with
// the square of the partition count).
func TestLaneListsOnlyItsPartitions(t *testing.T) {
	t.Parallel()
	f := buildFixture(t, "lp", 8, 10)
	f.archive(t)
	tgt := newCluster(t)
	var mu sync.Mutex
	sizes := map[int]int{} // partitions per ListOffsets request for "lp" -> requests
	tgt.ControlKey(int16(kmsg.ListOffsets), func(req kmsg.Request) (kmsg.Response, error, bool) {
		tgt.KeepControl()
		for _, rt := range req.(*kmsg.ListOffsetsRequest).Topics {
			if rt.Topic == "lp" {
				mu.Lock()
				sizes[len(rt.Partitions)]++
				mu.Unlock()
			}
		}
		return nil, nil, false
	})
	run(t, f.opts(t, tgt))
	mu.Lock()
	if sizes[1] < 8 || sizes[8] > 0 {
		t.Errorf("ListOffsets requests by partition count: %v (want the 8 lanes to list one partition each, none the whole topic)", sizes)
	}
	mu.Unlock()
	checkExact(t, f, "lp", readTopic(t, tgt, "lp"))
}

// TestRestoreRetriesOffsetNotAvailable: a target whose leaders were just
// elected answers ListOffsets with OFFSET_NOT_AVAILABLE for a while; the
// plan's check of an existing target and the lanes' listings wait it out.
func TestRestoreRetriesOffsetNotAvailable(t *testing.T) {
	t.Parallel()
	f := buildFixture(t, "na", 2, 20)
	f.archive(t)
	tgt := newCluster(t)
	createTopic(t, tgt, "na", 2, nil)
	failed := kfaketest.FailListOffsets(tgt, 6, kerr.OffsetNotAvailable.Code)
	run(t, f.opts(t, tgt))
	if failed.Load() != 6 {
		t.Fatalf("%d ListOffsets requests failed, want 6: the test did not exercise the retry", failed.Load())
	}
	checkExact(t, f, "na", readTopic(t, tgt, "na"))
}
