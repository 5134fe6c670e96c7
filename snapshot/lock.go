package snapshot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/kbackup/kbackup/store"
)

// ErrLocked is returned when another cycle, prune or restore holds the lock.
var ErrLocked = errors.New("another snapshot job holds the lock")

// lockRecord is the JSON lock object at snapshots/<cluster>/lock.json.
type lockRecord struct {
	Token    string    `json:"token"`
	Op       string    `json:"op"`
	Cycle    string    `json:"cycle,omitempty"`
	Host     string    `json:"host"`
	PID      int       `json:"pid"`
	Acquired time.Time `json:"acquired"`
	Expires  time.Time `json:"expires"`
}

// lock is a held lock.
type lock struct {
	st  store.Store
	key string
	rec lockRecord
	log *slog.Logger
}

// acquireLock creates the lock object with a conditional write. A lock
// whose expiry has passed is stale (its holder died): it is deleted and the
// create retried once. Taking over a stale lock is best effort (two jobs
// doing it at the same instant could both succeed); the expiry, far longer
// than any cycle, makes that an anomaly, not a routine race.
func acquireLock(ctx context.Context, st store.Store, cluster, op, cycle string, ttl time.Duration, now time.Time, log *slog.Logger) (*lock, error) {
	var tok [8]byte
	_, _ = rand.Read(tok[:])
	host, _ := os.Hostname()
	l := &lock{st: st, key: LockKey(cluster), log: log, rec: lockRecord{
		Token: hex.EncodeToString(tok[:]), Op: op, Cycle: cycle, Host: host, PID: os.Getpid(),
		Acquired: now.UTC(), Expires: now.Add(ttl).UTC(),
	}}
	for attempt := 0; attempt < 2; attempt++ {
		err := putJSON(ctx, st, l.key, l.rec, store.PutOptions{IfNotExists: true})
		if err == nil {
			return l, nil
		}
		if !errors.Is(err, store.ErrExists) {
			return nil, fmt.Errorf("acquire lock: %w", err)
		}
		held, rerr := readLock(ctx, st, l.key)
		if errors.Is(rerr, store.ErrNotFound) {
			continue // released meanwhile
		}
		if rerr != nil {
			return nil, fmt.Errorf("acquire lock: %w", rerr)
		}
		if now.Before(held.Expires) {
			return nil, fmt.Errorf("%w: %s by %s pid %d since %s (expires %s; key %s)", ErrLocked,
				held.Op, held.Host, held.PID, held.Acquired.Format(time.RFC3339), held.Expires.Format(time.RFC3339), l.key)
		}
		log.Warn("taking over a stale lock", "key", l.key, "op", held.Op, "host", held.Host, "pid", held.PID, "expired", held.Expires)
		if err := st.Delete(ctx, l.key); err != nil {
			return nil, fmt.Errorf("delete stale lock: %w", err)
		}
	}
	return nil, fmt.Errorf("%w: lost the race for %s", ErrLocked, l.key)
}

func readLock(ctx context.Context, st store.Store, key string) (lockRecord, error) {
	b, err := store.Get(ctx, st, key)
	if err != nil {
		return lockRecord{}, err
	}
	var r lockRecord
	if err := json.Unmarshal(b, &r); err != nil {
		// An unreadable lock is treated as expired long ago.
		return lockRecord{}, nil
	}
	return r, nil
}

// release deletes the lock if it is still ours. It uses its own context so
// it also runs after the job's context was cancelled.
func (l *lock) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	held, err := readLock(ctx, l.st, l.key)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			l.log.Warn("lock not released", "key", l.key, "err", err)
		}
		return
	}
	if held.Token != l.rec.Token {
		l.log.Warn("lock was taken over by another job; not releasing it", "key", l.key, "holder", held.Host)
		return
	}
	if err := l.st.Delete(ctx, l.key); err != nil {
		l.log.Warn("lock not released", "key", l.key, "err", err)
	}
}
