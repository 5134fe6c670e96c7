package restore

import (
	"context"
	"fmt"
	"time"
)

// progress logs a line every ProgressInterval and, with a Progress writer
// (a terminal), rewrites one status line twice a second.
type progress struct {
	done    chan struct{}
	stopped chan struct{}
}

func startProgress(ctx context.Context, rn *runner, total int64) *progress {
	p := &progress{done: make(chan struct{}), stopped: make(chan struct{})}
	o := rn.o
	go func() {
		defer close(p.stopped)
		begin := time.Now()
		logTick := time.NewTicker(o.ProgressInterval)
		defer logTick.Stop()
		var lineC <-chan time.Time
		if o.Progress != nil {
			lineTick := time.NewTicker(500 * time.Millisecond)
			defer lineTick.Stop()
			lineC = lineTick.C
		}
		status := func() (recs, bytes int64, rate float64, eta string) {
			recs, bytes = rn.records.Load(), rn.bytes.Load()
			el := time.Since(begin).Seconds()
			if el > 0 {
				rate = float64(recs) / el
			}
			eta = "?"
			if rate > 0 && total > recs {
				eta = (time.Duration(float64(total-recs)/rate) * time.Second).Round(time.Second).String()
			}
			return
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
			case <-logTick.C:
				recs, bytes, rate, eta := status()
				o.Logger.Info("restore: progress", "records", recs, "approx_total", total, "bytes", bytes,
					"records_per_s", int64(rate), "eta", eta)
			case <-lineC:
				recs, bytes, rate, eta := status()
				fmt.Fprintf(o.Progress, "\r\033[Krestore: %d/~%d records, %s, %.0f records/s, ETA %s", recs, total, humanBytes(bytes), rate, eta)
			}
		}
	}()
	return p
}

func (p *progress) stop() {
	close(p.done)
	<-p.stopped
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
