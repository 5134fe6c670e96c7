package archive

import (
	"errors"
	"time"

	"github.com/kbackup/kbackup/internal/retry"
	"github.com/kbackup/kbackup/store"
)

// storeBackoff spaces the archiver's attempts at a failing store call
// (reading a head, committing a segment).
var storeBackoff = retry.Backoff{Initial: 100 * time.Millisecond, Max: 30 * time.Second}

// storeRetry retries store calls until the context ends (continuous mode;
// Once bounds Attempts); a permanent store error stops it at once.
var storeRetry = retry.Policy{Backoff: storeBackoff, Retryable: func(err error) bool { return !errors.Is(err, store.ErrPermanent) }}
