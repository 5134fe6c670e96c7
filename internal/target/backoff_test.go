package target

import (
	"testing"
	"time"
)

// TestRetryBackoff: 20 ms doubling per failure up to 2 s, within ±20%.
func TestRetryBackoff(t *testing.T) {
	for fails, want := range map[int]time.Duration{0: 20 * time.Millisecond, 1: 20 * time.Millisecond, 2: 40 * time.Millisecond,
		4: 160 * time.Millisecond, 6: 640 * time.Millisecond, 7: 2 * time.Second, 50: 2 * time.Second} {
		for range 100 {
			if d := RetryBackoff(fails); d < want-want/5 || d > want+want/5 {
				t.Fatalf("RetryBackoff(%d) = %v, want %v ± 20%%", fails, d, want)
			}
		}
	}
}
