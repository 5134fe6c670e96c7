package restore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kbackup/kbackup/internal/lease"
)

// StatusElsewhere is a lane another process of the same restore completed
// while this one ran (see Options.Join).
const StatusElsewhere = "complete (other process)"

// laneTask is a lane's progress in this process.
type laneTask struct {
	l       *lane
	res     *PartitionResult
	pending bool      // not yet done, failed or skipped here
	retryAt time.Time // held by another process: look again then
	heldBy  string    // that process, for the log
}

func laneLease(l *lane) string { return "lanes/" + l.name }

// execute runs the lanes, Concurrency at a time, each under its lease
// (docs/FORMAT.md §10.4): a lane held by another live process is left to
// it and looked at again every poll interval (it completes, fails and is
// released, or expires and is taken over). It returns when every lane is
// complete, failed in this process, or ctx ends.
func (rn *runner) execute(ctx context.Context, lanes []*lane, logAppend map[string]bool) []PartitionResult {
	o := rn.o
	results := make([]PartitionResult, len(lanes))
	tasks := make([]*laneTask, len(lanes))
	for i, l := range lanes {
		results[i] = PartitionResult{SourceTopic: l.sourceTopic, SourcePartition: -1, TargetTopic: l.targetTopic,
			TargetPartition: l.targetPartition, Status: StatusSkipped}
		if l.targetPartition >= 0 {
			results[i].SourcePartition = l.sources[0].log.Partition
		}
		tasks[i] = &laneTask{l: l, res: &results[i], pending: true}
		if l.ckpt != nil && l.ckpt.Done {
			tasks[i].pending = false
			results[i].Status, results[i].Records, results[i].Bytes = StatusDone, l.ckpt.Records, l.ckpt.Bytes
		}
	}
	prog := startProgress(ctx, rn, lanes)
	defer prog.stop()

	finished := make(chan *laneTask)
	running := 0
	for {
		waiting := false
		for _, tk := range tasks {
			if running >= o.Concurrency || ctx.Err() != nil {
				break
			}
			if !tk.pending || time.Now().Before(tk.retryAt) {
				waiting = waiting || tk.pending
				continue
			}
			ls, err := rn.claim(ctx, tk)
			switch {
			case err != nil:
				tk.pending, tk.res.Status, tk.res.Err = false, StatusFailed, err
				o.Logger.Error("restore: partition did not complete", "lane", tk.l.name, "err", err)
			case ls != nil:
				tk.pending = false
				running++
				go func() {
					rn.runLane(ctx, tk, ls, logAppend[tk.l.targetTopic])
					finished <- tk
				}()
			default:
				waiting = waiting || tk.pending
			}
		}
		if running == 0 && (!waiting || ctx.Err() != nil) {
			break
		}
		if ctx.Err() != nil { // interrupted: wait for the running lanes only
			<-finished
			running--
			continue
		}
		t := time.NewTimer(rn.leases.Poll())
		select {
		case <-finished:
			running--
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	for _, tk := range tasks {
		if tk.pending {
			tk.res.Err = ctx.Err()
		}
	}
	rn.recheckFailed(ctx, tasks)
	return results
}

// claim tries to take the lane's lease. It returns nil (and sets retryAt)
// when another live process holds it, and marks the task done when the
// lane turns out complete.
func (rn *runner) claim(ctx context.Context, tk *laneTask) (*lease.Held, error) {
	m := rn.leases
	for attempt := 0; attempt < 3; attempt++ {
		gen, cur, err := m.Current(ctx, laneLease(tk.l))
		if err != nil {
			return nil, err
		}
		if m.Live(cur) {
			if who := cur.Holder.String(); tk.heldBy != who {
				tk.heldBy = who
				rn.o.Logger.Info("restore: partition held by another process of this restore; waiting for it", "lane", tk.l.name,
					"holder", who, "since", fmtMs(cur.AcquiredMs))
			}
			tk.retryAt = time.Now().Add(m.Poll())
			return nil, nil
		}
		if cur != nil {
			// Someone had it: it may have completed the lane since.
			ck, err := loadCheckpoint(ctx, rn.st, rn.id, tk.l.name)
			if err != nil {
				return nil, err
			}
			if ck != nil && ck.Done {
				tk.l.ckpt, tk.pending = ck, false
				tk.res.Status, tk.res.Records, tk.res.Bytes = StatusElsewhere, ck.Records, ck.Bytes
				return nil, nil
			}
			if !cur.Released {
				rn.o.Logger.Warn("restore: taking over a partition whose holder stopped renewing its lease", "lane", tk.l.name,
					"holder", cur.Holder.String(), "expired", fmtMs(cur.ExpiresMs), "holder_gone", m.Me.Gone(cur.Holder))
			}
		}
		ls, err := m.Acquire(ctx, laneLease(tk.l), gen+1)
		if errors.Is(err, lease.ErrTaken) {
			continue
		}
		return ls, err
	}
	tk.retryAt = time.Now().Add(m.Poll())
	return nil, nil
}

// runLane restores one lane under its lease: the checkpoint is read again
// (the plan's may be stale), a resumed lane settles, then the lane checks
// the target's end offsets and writes.
func (rn *runner) runLane(ctx context.Context, tk *laneTask, ls *lease.Held, logAppend bool) {
	o, l, res := rn.o, tk.l, tk.res
	defer ls.Release()
	lctx := ls.Context()
	done, produced, err := false, int64(0), error(nil)
	ck, err := loadCheckpoint(lctx, rn.st, rn.id, l.name)
	if err == nil {
		l.ckpt = ck
		if ck != nil && !ck.Done {
			err = rn.settle(lctx, []*lane{l})
		}
	}
	if err == nil {
		lr := newLaneRun(rn, l, logAppend, rn.t.Topics[l.targetTopic])
		lr.fence = ls
		done, err = lr.start(lctx)
		if err == nil && !done && o.testLaneStarted != nil {
			o.testLaneStarted(l.name)
		}
		if err == nil && !done {
			err = lr.run(lctx)
		}
		produced = lr.restored
	}
	if err != nil && ls.IsLost() {
		err = fmt.Errorf("%w (%v)", lease.ErrLost, err)
	}
	if l.ckpt != nil {
		res.Records, res.Bytes = l.ckpt.Records, l.ckpt.Bytes
	}
	res.Produced = produced
	switch {
	case err != nil:
		res.Status, res.Err = StatusFailed, err
		o.Logger.Error("restore: partition did not complete", "lane", l.name, "records", res.Records, "err", err)
	case done:
		res.Status = StatusDone
	default:
		res.Status = StatusComplete
		o.Logger.Debug("restore: partition complete", "lane", l.name, "records", res.Records)
	}
}

// recheckFailed reads again the checkpoints of lanes that failed here: a
// process sharing the restore may have completed them meanwhile.
func (rn *runner) recheckFailed(ctx context.Context, tasks []*laneTask) {
	for _, tk := range tasks {
		if tk.res.Status != StatusFailed {
			continue
		}
		ck, err := loadCheckpoint(context.WithoutCancel(ctx), rn.st, rn.id, tk.l.name)
		if err == nil && ck != nil && ck.Done {
			tk.l.ckpt = ck
			tk.res.Status, tk.res.Err, tk.res.Records, tk.res.Bytes = StatusElsewhere, nil, ck.Records, ck.Bytes
		}
	}
}
