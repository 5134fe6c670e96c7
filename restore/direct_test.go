package restore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbackup/kbackup/store/storefault"
)

// producedRecords counts the records handed to franz-go's producer.
type producedRecords struct{ n atomic.Int64 }

func (h *producedRecords) OnProduceRecordBuffered(*kgo.Record) { h.n.Add(1) }

// TestProducerChoice: by default every lane of a partition-to-partition
// restore writes through the direct path (franz-go's producer gets no
// record), --producer franz-go and a --repartition restore through
// franz-go's producer; each restore is exact.
func TestProducerChoice(t *testing.T) {
	f := buildFixture(t, "choice", 3, 300)
	f.archive(t)
	for i, tc := range []struct {
		producer    string
		repartition bool
		franz       bool
	}{
		{"", false, DefaultProducer == ProducerFranz},
		{ProducerDirect, false, false},
		{ProducerFranz, false, true},
		{ProducerDirect, true, true},
	} {
		tgt := newCluster(t)
		o := f.opts(t, tgt)
		o.Producer, o.Repartition, o.ID = tc.producer, tc.repartition, fmt.Sprintf("choice-%d", i)
		h := &producedRecords{}
		o.KafkaOpts = append(o.KafkaOpts, kgo.WithHooks(h))
		sum := run(t, o)
		if got := h.n.Load(); (got > 0) != tc.franz || (tc.franz && got != sum.Records) {
			t.Fatalf("producer %q, repartition %t: %d of %d records went through franz-go's producer", tc.producer, tc.repartition, got, sum.Records)
		}
		if tc.repartition {
			continue // checked by the repartition tests
		}
		checkExact(t, f, "choice", readTopic(t, tgt, "choice"))
	}
	o := f.opts(t, newCluster(t))
	o.Producer = "sarama"
	if _, err := Run(context.Background(), o); err == nil || !strings.Contains(err.Error(), `producer "sarama"`) {
		t.Fatalf("an unknown producer: %v", err)
	}
}

// TestDirectFaults: through the direct path, produce requests refused
// before the append (not the leader) or answered with an error after it
// (a timeout) are sent again and the restore is exact; an error the writer
// cannot get past (the broker lost the producer's state) fails the
// partition, and the rerun resumes it (skipping and verifying what landed
// after the last checkpoint) to an exact target.
func TestDirectFaults(t *testing.T) {
	f := buildFixture(t, "faults", 2, 2000)
	f.archive(t)
	t.Run("retried", func(t *testing.T) {
		tgt := newCluster(t)
		var h []*kfake.FaultHandle
		for _, e := range []*kerr.Error{kerr.NotLeaderForPartition, kerr.RequestTimedOut, kerr.NotEnoughReplicasAfterAppend} {
			h = append(h, tgt.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: e, Count: 2}))
		}
		o := f.opts(t, tgt)
		o.Producer = ProducerDirect
		o.MaxInFlightBytes = 64 << 10 // many batches
		run(t, o)
		for i, fh := range h {
			if fh.Hits() != 2 {
				t.Fatalf("fault %d answered %d requests, want 2", i, fh.Hits())
			}
		}
		checkExact(t, f, "faults", readTopic(t, tgt, "faults"))
	})
	t.Run("fatal", func(t *testing.T) {
		tgt := newCluster(t)
		var produced atomic.Int64
		tgt.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
			tgt.KeepControl()
			if produced.Add(1) == 6 { // mid-restore, once
				tgt.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.UnknownProducerID})
			}
			return nil, nil, false
		})
		o := f.opts(t, tgt)
		o.Producer, o.ID = ProducerDirect, "fatal"
		o.MaxInFlightBytes = 16 << 10
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := Run(ctx, o)
		var ie *IncompleteError
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), "UNKNOWN_PRODUCER_ID") {
			t.Fatalf("restore: %v, want the partition failed with UNKNOWN_PRODUCER_ID", err)
		}
		if sum := run(t, o); resumedParts(sum) == 0 {
			t.Fatal("the rerun resumed no partition")
		}
		checkExact(t, f, "faults", readTopic(t, tgt, "faults"))
	})
}

// TestResumeAcrossProducers: a restore interrupted on one produce path
// resumes on the other (the checkpoints are the same), exact: franz-go's
// path then the direct one, and the direct one then franz-go's.
func TestResumeAcrossProducers(t *testing.T) {
	f := buildFixture(t, "across", 2, 1500)
	f.archive(t)
	for i, order := range [][2]string{{ProducerFranz, ProducerDirect}, {ProducerDirect, ProducerFranz}} {
		tgt := newCluster(t)
		id := fmt.Sprintf("across-%d", i)
		interrupted := false
		for attempt := 0; attempt < 6 && !interrupted; attempt++ {
			slow := storefault.New(f.st, uint64(attempt))
			slow.SetMaxDelay(2 * time.Millisecond)
			o := f.opts(t, tgt)
			o.Store, o.StateStore, o.ID, o.Producer = slow, f.st, id, order[0]
			o.MaxInFlightBytes = 4 << 10
			ctx, cancel := context.WithCancel(context.Background())
			go afterCalls(slow, 40, cancel)
			_, err := Run(ctx, o)
			cancel()
			interrupted = err != nil
		}
		if !interrupted {
			t.Fatalf("%s: no run was interrupted", order[0])
		}
		o := f.opts(t, tgt)
		o.ID, o.Producer = id, order[1]
		if sum := run(t, o); resumedParts(sum) == 0 {
			t.Fatalf("%s after %s: no partition resumed", order[1], order[0])
		}
		checkExact(t, f, "across", readTopic(t, tgt, "across"))
	}
}

// resumedParts counts the partitions a restore's plan resumed.
func resumedParts(sum *Summary) int {
	n := 0
	for _, p := range sum.Plan.Partitions {
		if p.State == "resume" {
			n++
		}
	}
	return n
}

// TestDirectLeaseLapseStopsSends: a lane on the direct path whose lease
// lapses while its batches are in flight (the target holds every produce
// request from the fourth on) stops sending at once, where an interrupted
// lane keeps 10 s for what is in flight: the process gives the partition up
// within the lease's duration and a little. The held requests are then
// answered (appended, as a killed process's may be), and the rerun, which
// settles and verifies what landed, is exact.
func TestDirectLeaseLapseStopsSends(t *testing.T) {
	f := buildFixture(t, "lapse", 1, 3000)
	f.archive(t)
	tgt := newCluster(t)
	release := make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) }) // before the cluster closes
	var produced atomic.Int64
	held := make(chan struct{}, 1)
	tgt.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		tgt.KeepControl()
		if produced.Add(1) > 3 {
			select {
			case held <- struct{}{}:
			default:
			}
			tgt.SleepControl(func() { <-release })
		}
		return nil, nil, false
	})
	state := storefault.New(f.st, 1)
	o := f.opts(t, tgt)
	o.Producer, o.ID = ProducerDirect, "lapse"
	o.StateStore, o.Join = state, true
	o.LeaseDuration, o.MaxClockSkew = 1500*time.Millisecond, 100*time.Millisecond
	o.MaxInFlightBytes = 16 << 10 // many batches
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, o)
		done <- err
	}()
	select {
	case <-held:
	case err := <-done:
		t.Fatalf("the restore ended before the target held a request: %v", err)
	case <-ctx.Done():
		t.Fatal("the target never held a produce request")
	}
	state.Freeze() // the lease is no longer renewed
	frozen := time.Now()
	select {
	case err := <-done:
		took := time.Since(frozen)
		var ie *IncompleteError
		if !errors.As(err, &ie) || len(ie.Failed) != 1 || !strings.Contains(ie.Failed[0], "lease") {
			t.Fatalf("restore whose lease lapsed: %v, want the partition given up with its lease", err)
		}
		// The lease lapses within 1.5 s; sends kept for 10 s would end
		// the run after 11.5 s at the earliest.
		if took > 6*time.Second {
			t.Fatalf("the restore ended %s after its lease stopped being renewed: its sends did not stop with the lease", took.Round(time.Millisecond))
		}
		t.Logf("ended %s after the lease stopped being renewed: %v", took.Round(time.Millisecond), err)
	case <-ctx.Done():
		t.Fatal("the restore did not end after its lease lapsed")
	}
	state.Thaw()
	releaseOnce.Do(func() { close(release) }) // the held batches land now
	time.Sleep(200 * time.Millisecond)
	if sum := run(t, o); resumedParts(sum) == 0 {
		t.Fatal("the rerun resumed no partition")
	}
	checkExact(t, f, "lapse", readTopic(t, tgt, "lapse"))
}

// TestIncompleteErrorMessage: the count is of partitions; a failed
// finishing step (or offset map file) is named beside them, not counted as
// one (a lapsed lease once read "2 of 1 partitions did not complete").
func TestIncompleteErrorMessage(t *testing.T) {
	for _, c := range []struct {
		e    IncompleteError
		want string
	}{
		{IncompleteError{RestoreID: "r", Failed: []string{"t/0 (lease lost)"}, Total: 1, Steps: []string{"finishing (store frozen)"}},
			"restore r incomplete: 1 of 1 partitions did not complete: t/0 (lease lost); finishing (store frozen) (run the same restore again to resume)"},
		{IncompleteError{RestoreID: "r", Total: 3, Steps: []string{"offset map file (disk full)"}},
			"restore r incomplete: offset map file (disk full) (run the same restore again to resume)"},
		{IncompleteError{RestoreID: "r", Failed: []string{"t/0 (x)", "t/2 (not started)"}, Total: 3},
			"restore r incomplete: 2 of 3 partitions did not complete: t/0 (x); t/2 (not started) (run the same restore again to resume)"},
	} {
		if got := c.e.Error(); got != c.want {
			t.Errorf("got  %q\nwant %q", got, c.want)
		}
	}
}
