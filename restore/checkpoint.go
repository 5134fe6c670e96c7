package restore

import (
	"context"
	"fmt"
	"time"

	"github.com/kbackup/kbackup/internal/jsonobj"
	"github.com/kbackup/kbackup/internal/lease"
	"github.com/kbackup/kbackup/internal/target"
	"github.com/kbackup/kbackup/store"
)

// storeCheckpoint writes the lane's checkpoint, only while the lane's lease
// is valid and bounded by its deadline (docs/FORMAT.md §10.4 rule 3): a
// holder that lost its lane never overwrites the new holder's progress.
func (lr *laneRun) storeCheckpoint(ctx context.Context, c *checkpoint) error {
	if f := lr.fence; f != nil {
		if !f.Valid() {
			return lease.ErrLost
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, f.ValidUntil())
		defer cancel()
	}
	return jsonobj.Put(ctx, lr.rn.st, checkpointKey(lr.rn.id, lr.l.name), c, store.PutOptions{})
}

// checkEmpty refuses a lane without a checkpoint whose target partitions
// hold records (unless Append): checked when the lane starts, after its
// lease was won, so records written since the plan (another restore of the
// same request, a producer) are never restored over.
func (lr *laneRun) checkEmpty(starts, ends map[int32]int64) error {
	if lr.rn.o.Append {
		return nil
	}
	for _, p := range lr.targetPartitions() {
		if ends[p] > starts[p] {
			return fmt.Errorf("target partition %s/%d holds %d records (offsets %d..%d) that this restore did not write: written since the plan by another producer; use --append to restore after them, or --rename into a new topic",
				lr.l.targetTopic, p, ends[p]-starts[p], starts[p], ends[p]-1)
		}
	}
	return nil
}

// snapshot copies the acknowledged state as a checkpoint.
func (lr *laneRun) snapshot(done bool) *checkpoint {
	lr.mu.Lock()
	defer lr.mu.Unlock()
	c := lr.state
	c.Done = done
	c.Targets = append([]targetState(nil), lr.state.Targets...)
	for i := range c.Targets {
		if pa := lr.acks[c.Targets[i].Partition]; pa != nil && pa.last != nil {
			c.Targets[i].LastHash = target.RecordHash(pa.last.rec, !lr.logAppend)
		} else if pa != nil && pa.lastHash != "" {
			c.Targets[i].LastHash = pa.lastHash
		}
	}
	c.Maps = make([]PartitionMap, len(lr.state.Maps))
	for i, m := range lr.state.Maps {
		m.Runs = append([]OffsetRun{}, m.Runs...)
		m.Complete = done
		c.Maps[i] = m
	}
	return &c
}

// checkpointLoop stores the acknowledged state every CheckpointInterval.
func (lr *laneRun) checkpointLoop(ctx context.Context, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	// A checkpoint carries the lane's offset map so far, which grows with
	// the gaps restored (a compacted topic has a run per gap): the wait
	// between checkpoints grows with what the last one cost, so storing
	// them stays under a tenth of the lane's time.
	wait := lr.rn.o.CheckpointInterval
	timer := time.NewTimer(wait)
	defer timer.Stop()
	last := int64(-1)
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		began := time.Now()
		c := lr.snapshot(false)
		if c.Records != last {
			if err := lr.storeCheckpoint(ctx, c); err != nil {
				lr.rn.o.Logger.Warn("restore: checkpoint not stored (progress since the last one is re-verified on resume)", "lane", lr.l.name, "err", err)
			} else {
				last = c.Records
			}
		}
		wait = max(lr.rn.o.CheckpointInterval, 10*time.Since(began))
		timer.Reset(wait)
	}
}
