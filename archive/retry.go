package archive

import (
	"context"
	"errors"
	"time"

	"github.com/kbackup/kbackup/store"
)

// retry runs fn until it succeeds. Bounded (attempts) when bounded is true,
// otherwise until ctx ends; a permanent store error stops it at once.
func retry(ctx context.Context, bounded bool, attempts int, fn func() error, onErr func(error)) error {
	backoff := 100 * time.Millisecond
	for i := 1; ; i++ {
		err := fn()
		if err == nil {
			return nil
		}
		if errors.Is(err, store.ErrPermanent) || (bounded && i >= attempts) || ctx.Err() != nil {
			return err
		}
		onErr(err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return err
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}
