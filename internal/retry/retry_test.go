package retry

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	t.Parallel()
	b := Backoff{Initial: 100 * time.Millisecond, Max: time.Second}
	for attempt, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 100: time.Second} {
		if got := b.Delay(attempt); got != want {
			t.Errorf("Delay(%d) = %s, want %s", attempt, got, want)
		}
	}
	if (Backoff{}).Delay(3) != 0 || (Backoff{Initial: time.Second, Max: time.Second}).Delay(9) != time.Second {
		t.Error("zero or constant backoff")
	}
}

func TestDo(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	boom, fatal := errors.New("boom"), errors.New("fatal")
	calls := 0
	var retried []int
	err := Do(ctx, Policy{Backoff: Backoff{Initial: time.Millisecond, Max: time.Millisecond}, Attempts: 3,
		OnRetry: func(a int, err error, _ time.Duration) { retried = append(retried, a) }},
		func(context.Context) error { calls++; return boom })
	if !errors.Is(err, boom) || calls != 3 || len(retried) != 2 {
		t.Fatalf("bounded: %v after %d calls, retried %v", err, calls, retried)
	}
	calls = 0
	err = Do(ctx, Policy{Retryable: func(err error) bool { return !errors.Is(err, fatal) }}, func(context.Context) error {
		calls++
		if calls < 3 {
			return boom
		}
		return fatal
	})
	if !errors.Is(err, fatal) || calls != 3 {
		t.Fatalf("non-retryable: %v after %d calls", err, calls)
	}
	calls = 0
	if err := Do(ctx, Policy{}, func(context.Context) error {
		calls++
		if calls < 5 {
			return boom
		}
		return nil
	}); err != nil || calls != 5 {
		t.Fatalf("success: %v after %d calls", err, calls)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	err = Do(cctx, Policy{Backoff: Backoff{Initial: 10 * time.Millisecond, Max: 10 * time.Millisecond}}, func(context.Context) error { return boom })
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, boom) {
		t.Fatalf("until the context ends: %v", err)
	}
	if err := Sleep(cctx, time.Hour); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sleep past the context: %v", err)
	}
}
