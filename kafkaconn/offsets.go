package kafkaconn

import (
	"context"
	"time"

	"github.com/kbackup/kbackup/internal/retry"
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
	var l kadm.ListedOffsets
	err := retry.Do(ctx, listRetry, func(ctx context.Context) error {
		var err error
		if l, err = list(ctx); err == nil {
			err = l.Error()
		}
		return err
	})
	return l, err
}

// listRetry retries retriable Kafka errors every 250 ms.
var listRetry = retry.Policy{Backoff: retry.Backoff{Initial: 250 * time.Millisecond, Max: 250 * time.Millisecond}, Retryable: kerr.IsRetriable}
