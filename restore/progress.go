package restore

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kbackup/kbackup/internal/units"
	"github.com/kbackup/kbackup/manifest"
)

// progress logs a line one second after the lanes start and every
// ProgressInterval after that and, with a Progress writer (a terminal),
// rewrites one status line twice a second: records written, the total this
// run will write, rate and ETA.
//
// The total starts as the plan's commit-granular estimate and, in a restore
// still running after a second, becomes exact once a background pass has
// counted each pending source's range through the archive's index
// (manifest.PartitionLog.RecordsBefore, a few requests per partition,
// served mostly from the restore's read cache); until then it is shown
// with a "~".
type progress struct {
	done    chan struct{}
	stopped chan struct{}
	total   atomic.Int64
	exact   atomic.Bool
}

// pendingWork is what the lanes still have to write, copied when the
// lanes start (the lanes change their checkpoints and sources afterwards).
type pendingWork struct {
	approx int64 // by the plan's estimate
	done   int64 // already in the targets by the checkpoints
	ranges []sourceRange
}

type sourceRange struct {
	log      *manifest.PartitionLog
	from, to int64
}

// pendingRecords collects the sources of lanes not done, and what their
// checkpoints already hold.
func pendingRecords(lanes []*lane) pendingWork {
	var w pendingWork
	for _, l := range lanes {
		if l.ckpt != nil && l.ckpt.Done {
			continue
		}
		for _, s := range l.sources {
			w.approx += s.approxRecords
			if !s.empty() {
				w.ranges = append(w.ranges, sourceRange{s.log, s.from, s.to})
			}
		}
		if l.ckpt != nil {
			w.done += l.ckpt.Records
		}
	}
	return w
}

func startProgress(ctx context.Context, rn *runner, lanes []*lane) *progress {
	p := &progress{done: make(chan struct{}), stopped: make(chan struct{})}
	work := pendingRecords(lanes)
	p.total.Store(max(work.approx-work.done, 0))
	var refine sync.WaitGroup
	rctx, cancelRefine := context.WithCancel(ctx)
	startRefine := func() {
		refine.Add(1)
		go func() {
			defer refine.Done()
			p.refine(rctx, work)
		}()
	}
	o := rn.o
	go func() {
		defer close(p.stopped)
		defer refine.Wait()
		defer cancelRefine()
		begin := time.Now()
		first := time.NewTimer(time.Second)
		defer first.Stop()
		logTick := time.NewTicker(o.ProgressInterval)
		defer logTick.Stop()
		var lineC <-chan time.Time
		if o.Progress != nil {
			lineTick := time.NewTicker(500 * time.Millisecond)
			defer lineTick.Stop()
			lineC = lineTick.C
		}
		status := func() (recs, bytes, total int64, rate float64, eta, about string) {
			recs, bytes, total = rn.records.Load(), rn.bytes.Load(), p.total.Load()
			if el := time.Since(begin).Seconds(); el > 0 {
				rate = float64(recs) / el
			}
			eta = "?"
			switch {
			case total <= recs:
				eta = "0s"
			case rate > 0:
				eta = (time.Duration(float64(total-recs)/rate) * time.Second).Round(time.Second).String()
			}
			if !p.exact.Load() {
				about = "~"
			}
			return
		}
		logLine := func() {
			recs, bytes, total, rate, eta, _ := status()
			o.Logger.Info("restore: progress", "records", recs, "total", total, "total_exact", p.exact.Load(), "bytes", bytes,
				"records_per_s", int64(rate), "eta", eta)
		}
		for {
			select {
			case <-p.done:
				if o.Progress != nil {
					fmt.Fprint(o.Progress, "\r\033[K")
				}
				return
			case <-ctx.Done():
				return
			case <-first.C:
				logLine()
				// Counting exactly costs a few requests per partition:
				// only restores that last are worth it.
				startRefine()
			case <-logTick.C:
				logLine()
			case <-lineC:
				recs, bytes, total, rate, eta, about := status()
				fmt.Fprintf(o.Progress, "\r\033[Krestore: %d/%s%d records, %s, %.0f records/s, ETA %s", recs, about, total, units.Bytes(bytes), rate, eta)
			}
		}
	}()
	return p
}

// refine replaces the estimate by the exact number of archived records in
// each pending source's range, a few partitions at a time; it gives up
// quietly (the estimate stays) on any error.
func (p *progress) refine(ctx context.Context, w pendingWork) {
	var exact atomic.Int64
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	var failed atomic.Bool
	for _, r := range w.ranges {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			hi, err := r.log.RecordsBefore(ctx, r.to+1)
			if err != nil {
				failed.Store(true)
				return
			}
			lo, err := r.log.RecordsBefore(ctx, r.from)
			if err != nil {
				failed.Store(true)
				return
			}
			exact.Add(hi - lo)
		}()
	}
	wg.Wait()
	if !failed.Load() && ctx.Err() == nil {
		p.total.Store(max(exact.Load()-w.done, 0))
		p.exact.Store(true)
	}
}

func (p *progress) stop() {
	close(p.done)
	<-p.stopped
}
