package restore

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kbackup/kbackup/internal/units"
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

// pendingRecords is what the lanes still have to write by the plan's
// estimate: the sources of lanes not done, less what their checkpoints
// already hold.
func pendingRecords(lanes []*lane) (total int64, todo []*lane) {
	for _, l := range lanes {
		if l.ckpt != nil && l.ckpt.Done {
			continue
		}
		todo = append(todo, l)
		for _, s := range l.sources {
			total += s.approxRecords
		}
		if l.ckpt != nil {
			total -= l.ckpt.Records
		}
	}
	return max(total, 0), todo
}

func startProgress(ctx context.Context, rn *runner, lanes []*lane) *progress {
	p := &progress{done: make(chan struct{}), stopped: make(chan struct{})}
	approx, todo := pendingRecords(lanes)
	p.total.Store(approx)
	var refine sync.WaitGroup
	rctx, cancelRefine := context.WithCancel(ctx)
	startRefine := func() {
		refine.Add(1)
		go func() {
			defer refine.Done()
			p.refine(rctx, todo)
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
func (p *progress) refine(ctx context.Context, todo []*lane) {
	var exact atomic.Int64
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	var failed atomic.Bool
	for _, l := range todo {
		if l.ckpt != nil {
			exact.Add(-l.ckpt.Records)
		}
		for _, s := range l.sources {
			if s.empty() {
				continue
			}
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				hi, err := s.log.RecordsBefore(ctx, s.to+1)
				if err != nil {
					failed.Store(true)
					return
				}
				lo, err := s.log.RecordsBefore(ctx, s.from)
				if err != nil {
					failed.Store(true)
					return
				}
				exact.Add(hi - lo)
			}()
		}
	}
	wg.Wait()
	if !failed.Load() && ctx.Err() == nil {
		p.total.Store(max(exact.Load(), 0))
		p.exact.Store(true)
	}
}

func (p *progress) stop() {
	close(p.done)
	<-p.stopped
}
