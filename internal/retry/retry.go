// Package retry is kbackup's one way to retry: an exponential backoff and
// a loop bounded by attempts or by the context, used wherever a store,
// Kafka or a target cluster is retried.
package retry

import (
	"context"
	"fmt"
	"time"
)

// Backoff is a delay that doubles from Initial on every attempt, up to Max.
// Initial == Max is a constant delay; the zero Backoff retries at once.
type Backoff struct {
	Initial, Max time.Duration
}

// Delay is the wait after the given failed attempt (1 for the first):
// Initial × 2^(attempt-1), at most Max.
func (b Backoff) Delay(attempt int) time.Duration {
	d := b.Initial
	for i := 1; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// Sleep waits d, or until ctx ends (then it returns ctx.Err()).
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Policy says how Do retries. The zero Policy retries every error at once
// until the context ends.
type Policy struct {
	Backoff
	// Attempts bounds the calls of fn; 0 = until the context ends.
	Attempts int
	// Retryable reports whether an error is worth another attempt; nil =
	// every error. A non-retryable error ends Do at once.
	Retryable func(error) bool
	// OnRetry is told of each failed attempt that will be retried, with
	// the wait before the next (nil = nothing).
	OnRetry func(attempt int, err error, wait time.Duration)
}

// Do calls fn until it returns nil, and returns nil then. It returns fn's
// error when the error is not retryable or the attempts are used up, and
// ctx's error wrapping fn's last one when ctx ends first.
func Do(ctx context.Context, p Policy, fn func(context.Context) error) error {
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		if (p.Retryable != nil && !p.Retryable(err)) || (p.Attempts > 0 && attempt >= p.Attempts) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		}
		wait := p.Delay(attempt)
		if p.OnRetry != nil {
			p.OnRetry(attempt, err, wait)
		}
		if serr := Sleep(ctx, wait); serr != nil {
			return fmt.Errorf("%w (last error: %w)", serr, err)
		}
	}
}
