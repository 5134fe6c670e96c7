package replay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/kbackup/kbackup/internal/retry"
	"github.com/kbackup/kbackup/internal/target"
	"github.com/kbackup/kbackup/manifest"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// execute replays the planned partitions, Concurrency at a time.
func (rp *replayer) execute(ctx context.Context, sum *Summary) {
	sem := make(chan struct{}, rp.o.Concurrency)
	var wg sync.WaitGroup
	for i := range sum.Partitions {
		p := &sum.Partitions[i]
		if p.State != StatePending {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				p.State, p.Err = StateFailed, ctx.Err()
				return
			}
			defer func() { <-sem }()
			err := rp.replayOwned(ctx, p)
			switch {
			case err != nil:
				p.State, p.Err = StateFailed, err
				rp.o.Logger.Error(rp.mode+": partition did not complete", "partition", p.Name(), "produced", p.Produced, "err", err)
			case p.Gap != nil:
				p.State = StateGap
				p.Err = fmt.Errorf("replayed up to offset %d; the archive has a gap at %s, which a producer cannot reproduce: the rest cannot land at its original offsets", p.Gap.From, p.Gap)
				rp.o.Logger.Error(rp.mode+": partition stopped at an archive gap", "partition", p.Name(), "gap", p.Gap.String())
			default:
				p.State = StateDone
				rp.o.Logger.Info(rp.mode+": partition replayed", "partition", p.Name(), "from", p.From, "to", p.To, "produced", p.Produced)
			}
		}()
	}
	wg.Wait()
}

// replayPartition produces p.From..p.To and verifies each acknowledgement
// and the partition's end afterwards.
func (rp *replayer) replayPartition(ctx context.Context, p *Partition) error {
	t := rp.t
	if p.To < p.From {
		return nil
	}
	// The live end must not have moved since the plan.
	if err := rp.checkLiveEnd(ctx, p); err != nil {
		return err
	}
	if err := rp.waitLogEnd(ctx, p); err != nil {
		return err
	}
	log := rp.a.Partition(p.Topic, p.id, p.Partition)
	var chunk []*kgo.Record
	var chunkBytes int64
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		want := make([]int64, len(chunk))
		for i, r := range chunk {
			want[i] = r.Offset
			r.Offset = 0
		}
		res := t.Client.ProduceSync(ctx, chunk...)
		for i, r := range res {
			if r.Err != nil {
				return fmt.Errorf("produce archive offset %d: %w", want[i], r.Err)
			}
			if r.Record.Offset != want[i] {
				return fmt.Errorf("archive offset %d landed at offset %d: offsets no longer line up (another producer wrote to the partition?); stopped", want[i], r.Record.Offset)
			}
			p.Produced++
		}
		chunk, chunkBytes = chunk[:0], 0
		return nil
	}
	// ScanReusing: each record is copied into a franz-go record (ToKgo)
	// before the callback returns; the bytes it aliases stay valid.
	err := log.ScanReusing(ctx, p.From, p.To, func(it manifest.ScanItem) error {
		if it.Record == nil { // planned before the gap: cannot happen
			return fmt.Errorf("archive gap %s inside the replayed range", it.Gap)
		}
		kr := target.ToKgo(it.Record, p.Topic)
		kr.Partition, kr.Offset = p.Partition, it.Record.Offset // Offset: the expected one, see flush
		chunk = append(chunk, kr)
		chunkBytes += target.RecordSize(it.Record)
		if chunkBytes >= target.BatchBytes || len(chunk) >= 4096 {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return fmt.Errorf("after %d records: %w", p.Produced, err)
	}
	// Verify: the partition ends right after the last replayed record, and
	// the record there is the archived one.
	_, ends, err := t.Offsets(ctx, p.Topic)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if ends[p.Partition] != p.To+1 {
		return fmt.Errorf("verify: the live log ends at %d, want %d (another producer?)", ends[p.Partition], p.To+1)
	}
	ok, why, err := rp.agrees(ctx, log, p, p.To, p.withTs)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if !ok {
		return fmt.Errorf("verify: %s", why)
	}
	return nil
}

// waitLogEnd makes sure that the leader's log ends at the high watermark
// (p.LiveEnd): a produced record goes after the log end, so with replicas
// still catching up (after a restart) it would land past the high
// watermark, not at its original offset. The log end offset is the end
// offset of the leader's current epoch (OffsetForLeaderEpoch); it waits
// about 30 s for the replicas (logEndRetry), checking that the live end
// stays where it was planned. A cluster that cannot answer is trusted (the
// acknowledgements are checked anyway).
func (rp *replayer) waitLogEnd(ctx context.Context, p *Partition) error {
	attempt := 0
	return retry.Do(ctx, logEndRetry, func(ctx context.Context) error {
		if attempt++; attempt > 1 {
			if err := rp.checkLiveEnd(ctx, p); err != nil {
				return err
			}
		}
		md, err := rp.t.Admin.Metadata(ctx, p.Topic)
		if err != nil {
			return fmt.Errorf("metadata: %w", err)
		}
		pd, ok := md.Topics[p.Topic].Partitions[p.Partition]
		if !ok || pd.Err != nil || pd.Leader < 0 {
			return fmt.Errorf("the partition has no leader: %v", pd.Err)
		}
		res, err := rp.t.Admin.OffsetForLeaderEpoch(ctx, kadm.OffsetForLeaderEpochRequest{p.Topic: {p.Partition: pd.LeaderEpoch}})
		var leo int64 = -1
		if err == nil {
			if r, ok := res[p.Topic][p.Partition]; ok && r.Err == nil && r.LeaderEpoch == pd.LeaderEpoch {
				leo = r.EndOffset
			}
		}
		if leo < 0 {
			rp.o.Logger.Debug(rp.mode+": cannot read the leader's log end offset; relying on the acknowledgement checks", "partition", p.Name(), "err", err)
			return nil
		}
		if leo != p.LiveEnd {
			return &logEndError{leo: leo, hw: p.LiveEnd}
		}
		return nil
	})
}

// logEndRetry looks at the leader's log end again every 500 ms while it is
// past the high watermark (replicas catching up), about 30 s in all.
var logEndRetry = retry.Policy{Backoff: retry.Backoff{Initial: 500 * time.Millisecond, Max: 500 * time.Millisecond}, Attempts: 60,
	Retryable: func(err error) bool {
		var e *logEndError
		return errors.As(err, &e) && e.leo > e.hw
	}}

// logEndError: the leader's log does not end at the high watermark.
type logEndError struct{ leo, hw int64 }

func (e *logEndError) Error() string {
	return fmt.Sprintf("the leader's log ends at %d, the high watermark is %d: replicas are not in sync, replayed records would not land at their original offsets; wait until the partition is fully replicated and run again", e.leo, e.hw)
}

// checkLiveEnd refuses a partition whose live end moved since the plan.
func (rp *replayer) checkLiveEnd(ctx context.Context, p *Partition) error {
	_, ends, err := rp.t.Offsets(ctx, p.Topic)
	if err != nil {
		return err
	}
	if ends[p.Partition] != p.LiveEnd {
		return fmt.Errorf("the live log end moved from %d to %d since the plan (another producer?): stop producers and run again", p.LiveEnd, ends[p.Partition])
	}
	return nil
}
