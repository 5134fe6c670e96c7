package kafkaconn

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// ListOffsetsRetrying calls list (a kadm offset listing) until every
// partition answered, retrying every 250 ms while the error is retriable,
// until ctx ends: right after a leader election the new leader answers
// OFFSET_NOT_AVAILABLE until its high watermark caught up, and a leader
// that just moved answers NOT_LEADER. A non-retriable error returns at once.
// With an error, the listing returned is the last one made (nil if the
// request itself failed): callers that can use partial results (per-
// partition errors) may.
func ListOffsetsRetrying(ctx context.Context, list func(context.Context) (kadm.ListedOffsets, error)) (kadm.ListedOffsets, error) {
	for {
		l, err := list(ctx)
		if err == nil {
			err = l.Error()
		}
		if err == nil || !kerr.IsRetriable(err) {
			return l, err
		}
		select {
		case <-ctx.Done():
			return l, fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
