package archive

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
)

// generations are unique across all partStates, so a result can never be
// applied to a newer state of the same partition.
var generations atomic.Int64

func nextGen() int { return int(generations.Add(1)) }

// commitResult is a finished commit attempt, delivered to the loop.
type commitResult struct {
	tp      tp
	gen     int
	seg     *sealed
	commit  *manifest.Commit // set on success
	fenced  bool
	newHead *manifest.Commit // with fenced: the head found after the conflict
	headErr error            // with fenced: reading the head failed
	err     error
	repair  bool // the time key could not be written: repair before the next commit
	dur     time.Duration
}

// kick starts the next commit of ps if none is in flight.
func (a *Archiver) kick(ctx context.Context, ps *partState) {
	if a.packed() {
		// One flush object for all partitions (packedTick), except a
		// segment streamed under a reserved seq: its flush object is its
		// own, so it starts as soon as it is sealed.
		a.kickReserved(ctx, ps)
		return
	}
	if ps.inflight || len(ps.queue) == 0 || a.opts.Now().Before(ps.retryAt) {
		return
	}
	select {
	case a.sem <- struct{}{}:
	default:
		return // at the concurrency bound: the next tick tries again
	}
	ps.inflight = true
	seg, head, gen, repair := ps.queue[0], ps.head, ps.gen, ps.needRepair
	log, t := ps.log, ps.tp
	go func() {
		defer func() { <-a.sem }()
		r := commitResult{tp: t, gen: gen, seg: seg}
		start := time.Now()
		if repair {
			if err := log.RepairHead(ctx, head); err != nil {
				r.err, r.repair = err, true
				a.results <- r
				a.wake()
				return
			}
		}
		if seg.w != nil {
			seg.body, seg.info = seg.w.FinishBody()
			seg.w = nil
		}
		c, err := log.AppendBody(ctx, head, seg.body, seg.info, a.writerID, a.opts.Now().UnixMilli())
		r.dur = time.Since(start)
		switch {
		case errors.Is(err, manifest.ErrFenced):
			r.fenced = true
			r.newHead, r.headErr = log.Head(ctx)
		case c != nil:
			r.commit = c
			r.repair = err != nil // committed, but the time key failed
		default:
			r.err = err
		}
		a.results <- r
		a.wake()
	}()
}

// applyResult updates the partition after a commit attempt.
func (a *Archiver) applyResult(ctx context.Context, r commitResult) {
	ps := a.parts[r.tp]
	if ps == nil || ps.gen != r.gen {
		return
	}
	ps.inflight = false
	switch {
	case r.commit != nil:
		ps.head = r.commit
		ps.holdNext = false
		ps.queue = ps.queue[1:]
		if r.seg.body != nil {
			r.seg.body.Release() // written: its buffers serve later segments
		}
		ps.failures, ps.needRepair = 0, r.repair
		if r.repair {
			a.m.storeErrors.WithLabelValues("time_index").Inc()
		}
		a.committed(ps, r)
		a.kick(ctx, ps)
	case r.fenced:
		a.m.fenced.Inc()
		a.opts.Logger.Warn("another archiver committed this range first: resuming after its commit",
			"topic", r.tp.topic, "partition", r.tp.partition, "start", r.seg.start)
		a.resync(ctx, ps, r.newHead, r.headErr)
	case errors.Is(r.err, manifest.ErrSegmentLost):
		// The segment streamed to the store could not be completed: its
		// records are fetched again from the last commit, into a segment
		// held in memory this time (committed with the usual retries).
		a.m.storeErrors.WithLabelValues("commit").Inc()
		a.opts.Logger.Warn("writing a segment failed: archiving its records again", "topic", r.tp.topic, "partition", r.tp.partition,
			"start", r.seg.start, "err", r.err)
		ps.holdNext = true
		a.resync(ctx, ps, ps.head, nil)
	default:
		ps.failures++
		a.m.storeErrors.WithLabelValues("commit").Inc()
		backoff := storeBackoff.Delay(ps.failures + 1)
		ps.retryAt = a.opts.Now().Add(backoff)
		ps.needRepair = ps.needRepair || r.repair
		a.opts.Logger.Warn("commit failed, will retry", "topic", r.tp.topic, "partition", r.tp.partition,
			"start", r.seg.start, "attempt", ps.failures, "retry_in", backoff, "err", r.err)
		if errors.Is(r.err, store.ErrPermanent) || (a.opts.Once && ps.failures >= a.opts.OnceCommitAttempts) {
			a.fatal = fmt.Errorf("commit %s at offset %d: %w", r.tp, r.seg.start, r.err)
			return
		}
		// The outcome of a failed commit PUT is unknown: after the first
		// failure, reload the head before retrying (it may have landed).
		if ps.failures == 1 {
			a.resyncFromStore(ctx, ps)
		}
	}
}

// committed records metrics and logs for a successful commit.
func (a *Archiver) committed(ps *partState, r commitResult) {
	c := r.commit
	a.m.commitSeconds.Observe(r.dur.Seconds())
	a.m.records.WithLabelValues(ps.tp.topic).Add(float64(c.Records))
	a.m.bytes.WithLabelValues(ps.tp.topic).Add(float64(c.SegmentSize))
	a.m.segments.WithLabelValues(ps.tp.topic).Inc()
	a.addToSummary(c)
	if a.opts.Once && a.packed() {
		ps.runCommits = append(ps.runCommits, c)
	}
	for reason, n := range c.GapOffsets {
		if n > 0 {
			a.m.gapOffsets.WithLabelValues(ps.tp.topic, strconv.Itoa(int(ps.tp.partition)), manifest.GapReason(reason).String()).Add(float64(n))
		}
	}
	if c.GapOffsets[manifest.GapDataLoss] > 0 {
		a.opts.Logger.Error("DATA LOSS committed as a gap: retention deleted records before they were archived",
			"topic", ps.tp.topic, "partition", ps.tp.partition, "offsets", c.GapOffsets[manifest.GapDataLoss], "commit_start", c.Start)
	}
	now := a.opts.Now()
	if r.seg.hasTs {
		h := a.m.recordLag.WithLabelValues(ps.tp.topic)
		h.Observe(math.Max(0, now.Sub(time.UnixMilli(r.seg.firstTs)).Seconds()))
		h.Observe(math.Max(0, now.Sub(time.UnixMilli(r.seg.lastTs)).Seconds()))
	}
	a.updateHeadMetrics(ps)
	a.opts.Logger.Debug("segment committed", "topic", ps.tp.topic, "partition", strconv.Itoa(int(ps.tp.partition)),
		"start", c.Start, "end", c.End, "records", c.Records, "bytes", c.SegmentSize, "took", r.dur)
}

// resync drops everything buffered for ps and resumes consuming after head.
func (a *Archiver) resync(ctx context.Context, ps *partState, head *manifest.Commit, headErr error) {
	ps.gen = nextGen()
	a.discard(ps)
	ps.failures, ps.retryAt = 0, time.Time{}
	if headErr != nil {
		ps.ready = false
		go a.loadHead(ctx, ps, ps.gen, nil)
		return
	}
	if head != nil && (ps.head == nil || head.Start != ps.head.Start) {
		// A head found in the store: another writer's commit, or ours
		// whose response was lost before its time-index key was written.
		ps.needRepair = true
	}
	ps.head = head
	ps.next = ps.committedNext()
	a.updateHeadMetrics(ps)
	at := kgo.NewOffset().At(ps.next)
	if head == nil {
		at = kgo.NewOffset().AtStart()
	}
	a.seek(ps.tp, at)
}

// resyncFromStore reloads the head off the loop; if it moved past what we
// hold (our failed PUT landed, or another writer committed), resync.
func (a *Archiver) resyncFromStore(ctx context.Context, ps *partState) {
	if len(ps.queue) == 0 {
		return
	}
	want := ps.committedNext()
	ps.inflight = true // nothing else commits meanwhile
	gen, log, t := ps.gen, ps.log, ps.tp
	seg := ps.queue[0]
	go func() {
		h, err := log.Head(ctx)
		r := commitResult{tp: t, gen: gen, seg: seg, err: fmt.Errorf("reload head: %w", err)}
		if err == nil {
			if h != nil && h.End+1 != want {
				r = commitResult{tp: t, gen: gen, seg: seg, fenced: true, newHead: h}
			} else {
				r = commitResult{tp: t, gen: gen, seg: seg, err: errHeadUnchanged}
			}
		}
		a.results <- r
		a.wake()
	}()
}

// errHeadUnchanged: the head did not move, so the failed commit did not land.
var errHeadUnchanged = errors.New("head unchanged after a failed commit: retrying")
