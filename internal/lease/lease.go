// Package lease makes a restore safe however it is run (docs/FORMAT.md
// §10.4): a lane is written only by the holder of its lease, an
// append-only sequence of create-if-absent keys
// restores/<id>/leases/<name>/<generation>.json (the store has no
// conditional replace, so generation g+1 is the only thing two processes
// can race for). The holder renews its own key, and stops writing (its
// context is cancelled) when it cannot renew in time. Worker records
// restores/<id>/workers/<holder>.json say which processes run a restore.
//
// Restores (package restore) and replays (package replay) share it; a
// replay's leases are under restores/replay-<hash of the cluster id>/.
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kbackup/kbackup/internal/jsonobj"
	"github.com/kbackup/kbackup/store"
)

// StatePrefix holds the state of every restore and replay in the store
// (docs/FORMAT.md §10); readers of the archive ignore it.
const StatePrefix = "restores/"

// Dir is the prefix of restore (or replay) id's state: "restores/<id>/".
func Dir(id string) string { return StatePrefix + id + "/" }

// DefaultDuration is the lease duration T, and DefaultMaxClockSkew the
// bound S on the processes' clock difference, that restores and replays
// use unless told otherwise (docs/FORMAT.md §10.4).
const (
	DefaultDuration     = 30 * time.Second
	DefaultMaxClockSkew = 5 * time.Second
)

const (
	leaseFormat   = "kbackup-restore-lease"
	formatVersion = 1
	genWidth      = 10
)

// ErrLost: the lease expired before it could be renewed, or another
// process took it over; the holder stopped writing.
var ErrLost = errors.New("restore lease lost (not renewed in time, or taken over): stopped writing")

// Record is one lease generation or a worker record (docs/FORMAT.md
// §10.4).
type Record struct {
	Format        string `json:"format"`
	FormatVersion int    `json:"format_version"`
	RestoreID     string `json:"restore_id"`
	Name          string `json:"name"`
	Generation    int64  `json:"generation"`
	Holder        Holder `json:"holder"`
	AcquiredMs    int64  `json:"acquired_ms"`
	RenewedMs     int64  `json:"renewed_ms"`
	ExpiresMs     int64  `json:"expires_ms"`
	Released      bool   `json:"released"`
}

// Manager acquires, renews and releases the leases of one restore for
// one holder. Every field is required.
type Manager struct {
	// Store holds the leases (the restore's state store).
	Store store.Store
	// ID is the restore's id: the leases are under Dir(ID).
	ID string
	// Me is this process's holder identity (NewHolder).
	Me Holder
	// TTL is the lease duration T; Skew the bound S on the difference
	// between the processes' wall clocks.
	TTL, Skew time.Duration
	// Now is the wall clock.
	Now func() time.Time
	// Log receives warnings about renewals and releases.
	Log *slog.Logger
}

func (m *Manager) prefix(name string) string { return Dir(m.ID) + "leases/" + name + "/" }

func (m *Manager) genKey(name string, gen int64) string {
	return m.prefix(name) + fmt.Sprintf("%0*d", genWidth, gen) + ".json"
}

func (m *Manager) workerKey() string { return Dir(m.ID) + "workers/" + m.Me.ID + ".json" }

// renewEvery and guard derive from the lease duration.
func (m *Manager) renewEvery() time.Duration { return m.TTL / 3 }
func (m *Manager) guard() time.Duration      { return m.TTL / 6 }

// Poll is how often a process waiting for a lease looks again; it derives
// from the lease duration.
func (m *Manager) Poll() time.Duration {
	return min(max(m.TTL/6, 50*time.Millisecond), 5*time.Second)
}

// Live reports whether r still binds others: not released, not expired
// (with the clock-skew allowance) and its holder not known to be gone.
func (m *Manager) Live(r *Record) bool {
	switch {
	case r == nil || r.Released:
		return false
	case m.Now().UnixMilli() > r.ExpiresMs+m.Skew.Milliseconds():
		return false
	}
	return !m.Me.Gone(r.Holder)
}

// Current returns the highest generation of name (0: none) and its record
// (nil if none).
func (m *Manager) Current(ctx context.Context, name string) (int64, *Record, error) {
	var last string
	err := m.Store.List(ctx, store.ListOptions{Prefix: m.prefix(name)}, func(e store.ListEntry) error {
		if !e.IsPrefix {
			last = e.Key
		}
		return nil
	})
	if err != nil {
		return 0, nil, fmt.Errorf("list leases of %s: %w", name, err)
	}
	if last == "" {
		return 0, nil, nil
	}
	gen, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(last, m.prefix(name)), ".json"), 10, 64)
	if err != nil {
		return 0, nil, fmt.Errorf("lease key %s: not a generation", last)
	}
	var r Record
	found, err := jsonobj.Get(ctx, m.Store, last, &r)
	if err != nil {
		return 0, nil, err
	}
	if !found {
		return gen, nil, nil
	}
	if r.Format != leaseFormat || r.FormatVersion != formatVersion {
		return 0, nil, fmt.Errorf("%s: format %q version %d, this kbackup reads %q version %d (upgrade kbackup)",
			last, r.Format, r.FormatVersion, leaseFormat, formatVersion)
	}
	return gen, &r, nil
}

// ErrTaken: another process created the generation first.
var ErrTaken = errors.New("lease generation taken by another process")

// Acquire creates generation gen of name (the caller read gen-1 and found
// it free) and starts renewing it. The returned lease's context, derived
// from ctx, is cancelled when the lease is lost.
func (m *Manager) Acquire(ctx context.Context, name string, gen int64) (*Held, error) {
	now := m.Now()
	r := Record{Format: leaseFormat, FormatVersion: formatVersion, RestoreID: m.ID, Name: name, Generation: gen, Holder: m.Me,
		AcquiredMs: now.UnixMilli(), RenewedMs: now.UnixMilli(), ExpiresMs: now.Add(m.TTL).UnixMilli()}
	key := m.genKey(name, gen)
	began := time.Now()
	err := jsonobj.Put(ctx, m.Store, key, &r, store.PutOptions{IfNotExists: true})
	if errors.Is(err, store.ErrExists) {
		return nil, ErrTaken
	}
	if err != nil {
		return nil, err
	}
	return m.hold(ctx, key, r, began, func(ctx context.Context) (bool, error) { return m.newerExists(ctx, name, key) }), nil
}

// newerExists reports whether a generation above key exists.
func (m *Manager) newerExists(ctx context.Context, name, key string) (bool, error) {
	found := false
	err := m.Store.List(ctx, store.ListOptions{Prefix: m.prefix(name), StartAfter: key, Limit: 1}, func(store.ListEntry) error {
		found = true
		return nil
	})
	return found, err
}

// Held is a lease (or worker record) this process holds. Its Context is
// cancelled when the lease is lost or released.
type Held struct {
	m      *Manager
	key    string
	rec    Record
	check  func(context.Context) (lost bool, err error) // before each renewal
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	deadline time.Time // monotonic: valid until
	lost     bool
	stop     chan struct{}
	done     chan struct{}
}

// Context is the lease's context: work under the lease uses it, and it
// ends when the lease is lost or released.
func (l *Held) Context() context.Context { return l.ctx }

func (m *Manager) hold(ctx context.Context, key string, r Record, began time.Time, check func(context.Context) (bool, error)) *Held {
	l := &Held{m: m, key: key, rec: r, check: check, deadline: began.Add(m.TTL - m.guard()),
		stop: make(chan struct{}), done: make(chan struct{})}
	l.ctx, l.cancel = context.WithCancel(ctx)
	go l.keep()
	return l
}

// Valid reports whether the holder may still write under the lease.
func (l *Held) Valid() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.lost && time.Now().Before(l.deadline)
}

// ValidUntil is the monotonic instant the lease stops being valid.
func (l *Held) ValidUntil() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deadline
}

// keep renews the lease every T/3 (every T/10 after a failure) and
// cancels its context once it is no longer valid.
func (l *Held) keep() {
	defer close(l.done)
	m := l.m
	next := m.renewEvery()
	for {
		l.mu.Lock()
		untilDeadline := time.Until(l.deadline)
		l.mu.Unlock()
		wait := min(next, untilDeadline)
		t := time.NewTimer(max(wait, 0))
		select {
		case <-l.stop:
			t.Stop()
			return
		case <-l.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if time.Until(l.ValidUntil()) <= 0 {
			l.lose("not renewed before the lease's deadline")
			return
		}
		if err := l.renew(); err != nil {
			if errors.Is(err, ErrLost) {
				l.lose(err.Error())
				return
			}
			m.Log.Warn("restore: lease not renewed; trying again", "lease", l.key, "err", err)
			next = max(m.TTL/10, 10*time.Millisecond)
			continue
		}
		next = m.renewEvery()
	}
}

// renew checks that nobody took the lease over, then rewrites its key with
// a new expiry.
func (l *Held) renew() error {
	began := time.Now()
	ctx, cancel := context.WithDeadline(l.ctx, l.ValidUntil())
	defer cancel()
	if l.check != nil {
		lost, err := l.check(ctx)
		if err != nil {
			return err
		}
		if lost {
			return fmt.Errorf("%w: a newer generation exists", ErrLost)
		}
	}
	now := l.m.Now()
	r := l.rec
	r.RenewedMs, r.ExpiresMs = now.UnixMilli(), now.Add(l.m.TTL).UnixMilli()
	if err := jsonobj.Put(ctx, l.m.Store, l.key, &r, store.PutOptions{}); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost || !time.Now().Before(l.deadline) {
		return fmt.Errorf("%w: renewed after the deadline", ErrLost)
	}
	l.rec = r
	l.deadline = began.Add(l.m.TTL - l.m.guard())
	return nil
}

func (l *Held) lose(why string) {
	l.mu.Lock()
	l.lost = true
	l.mu.Unlock()
	l.m.Log.Error("restore: lease lost; stopping the work it covers", "lease", l.key, "why", why)
	l.cancel()
}

// IsLost reports whether the lease was lost (not merely released).
func (l *Held) IsLost() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lost
}

// Release stops renewing and, while the lease is still valid, marks it
// released so that others need not wait for it to expire. It uses its own
// short context: it runs also when the restore was interrupted.
func (l *Held) Release() {
	close(l.stop)
	<-l.done
	defer l.cancel()
	if !l.Valid() {
		return
	}
	ctx, cancel := context.WithDeadline(context.WithoutCancel(l.ctx), l.ValidUntil())
	defer cancel()
	r := l.rec
	now := l.m.Now()
	r.Released, r.RenewedMs, r.ExpiresMs = true, now.UnixMilli(), now.UnixMilli()
	if err := jsonobj.Put(ctx, l.m.Store, l.key, &r, store.PutOptions{}); err != nil {
		l.m.Log.Warn("restore: lease not released (others take it over when it expires)", "lease", l.key, "err", err)
	}
}

// Register creates this process's worker record and keeps it renewed.
func (m *Manager) Register(ctx context.Context) (*Held, error) {
	now := m.Now()
	r := Record{Format: leaseFormat, FormatVersion: formatVersion, RestoreID: m.ID, Name: "worker", Holder: m.Me,
		AcquiredMs: now.UnixMilli(), RenewedMs: now.UnixMilli(), ExpiresMs: now.Add(m.TTL).UnixMilli()}
	key := m.workerKey()
	began := time.Now()
	if err := jsonobj.Put(ctx, m.Store, key, &r, store.PutOptions{IfNotExists: true}); err != nil {
		return nil, err
	}
	return m.hold(ctx, key, r, began, nil), nil
}

// Unregister stops renewing the worker record and deletes it.
func (l *Held) Unregister() {
	close(l.stop)
	<-l.done
	l.cancel()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(l.ctx), 10*time.Second)
	defer cancel()
	if err := l.m.Store.Delete(ctx, l.key); err != nil {
		l.m.Log.Warn("restore: worker record not deleted (it expires)", "key", l.key, "err", err)
	}
}

// Workers returns the live worker records of other processes.
func (m *Manager) Workers(ctx context.Context) ([]Record, error) {
	prefix := Dir(m.ID) + "workers/"
	var keys []string
	if err := m.Store.List(ctx, store.ListOptions{Prefix: prefix}, func(e store.ListEntry) error {
		if !e.IsPrefix {
			keys = append(keys, e.Key)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	var out []Record
	for _, k := range keys {
		var r Record
		found, err := jsonobj.Get(ctx, m.Store, k, &r)
		if err != nil {
			return nil, err
		}
		if found && r.Holder.ID != m.Me.ID && m.Live(&r) {
			out = append(out, r)
		}
	}
	return out, nil
}
