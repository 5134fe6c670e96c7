package restore

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
