package kafkaconn

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

func listed(err error) kadm.ListedOffsets {
	return kadm.ListedOffsets{"t": {0: {Topic: "t", Partition: 0, Offset: 7, Err: err}}}
}

func TestListOffsetsRetrying(t *testing.T) {
	ctx := context.Background()
	calls := 0
	l, err := ListOffsetsRetrying(ctx, func(context.Context) (kadm.ListedOffsets, error) {
		calls++
		if calls < 3 {
			return listed(kerr.OffsetNotAvailable), nil // right after an election
		}
		return listed(nil), nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("retriable partition error: %v after %d calls", err, calls)
	}
	if o, ok := l.Lookup("t", 0); !ok || o.Offset != 7 {
		t.Fatalf("offsets %v", l)
	}

	calls = 0
	_, err = ListOffsetsRetrying(ctx, func(context.Context) (kadm.ListedOffsets, error) {
		calls++
		return listed(kerr.TopicAuthorizationFailed), nil
	})
	if !errors.Is(err, kerr.TopicAuthorizationFailed) || calls != 1 {
		t.Fatalf("non-retriable error: %v after %d calls", err, calls)
	}

	cctx, cancel := context.WithTimeout(ctx, 600*time.Millisecond)
	defer cancel()
	l, err = ListOffsetsRetrying(cctx, func(context.Context) (kadm.ListedOffsets, error) {
		return listed(kerr.NotLeaderForPartition), nil
	})
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, kerr.NotLeaderForPartition) {
		t.Fatalf("retriable until the deadline: %v", err)
	}
	if o, ok := l.Lookup("t", 0); !ok || !errors.Is(o.Err, kerr.NotLeaderForPartition) {
		t.Fatalf("the last listing is not returned with the error: %v", l)
	}
}
