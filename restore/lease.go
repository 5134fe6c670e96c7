package restore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kbackup/kbackup/store"
)

// Leases make a restore safe however it is run (docs/FORMAT.md §10.4): a
// lane is written only by the holder of its lease, an append-only sequence
// of create-if-absent keys restores/<id>/leases/<name>/<generation>.json
// (the store has no conditional replace, so generation g+1 is the only
// thing two processes can race for). The holder renews its own key, and
// stops writing (its context is cancelled) when it cannot renew in time.

const (
	leaseFormat = "kbackup-restore-lease"
	genWidth    = 10
)

// errLeaseLost: the lease expired before it could be renewed, or another
// process took it over; the holder stopped writing.
var errLeaseLost = errors.New("restore lease lost (not renewed in time, or taken over): stopped writing")

// leaseRecord is one lease generation or a worker record.
type leaseRecord struct {
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

// leaseMgr acquires, renews and releases the leases of one restore for
// one holder.
type leaseMgr struct {
	st   store.Store
	id   string
	me   Holder
	ttl  time.Duration // lease duration T
	skew time.Duration // bound S on the wall clocks' difference
	now  func() time.Time
	log  *slog.Logger
}

func (m *leaseMgr) prefix(name string) string { return restoresPrefix + m.id + "/leases/" + name + "/" }

func (m *leaseMgr) genKey(name string, gen int64) string {
	return m.prefix(name) + fmt.Sprintf("%0*d", genWidth, gen) + ".json"
}

func workerKey(id, holder string) string { return restoresPrefix + id + "/workers/" + holder + ".json" }

// renewEvery, guard and poll derive from the lease duration.
func (m *leaseMgr) renewEvery() time.Duration { return m.ttl / 3 }
func (m *leaseMgr) guard() time.Duration      { return m.ttl / 6 }
func (m *leaseMgr) poll() time.Duration {
	return min(max(m.ttl/6, 50*time.Millisecond), 5*time.Second)
}

// live reports whether r still binds others: not released, not expired
// (with the clock-skew allowance) and its holder not known to be gone.
func (m *leaseMgr) live(r *leaseRecord) bool {
	switch {
	case r == nil || r.Released:
		return false
	case m.now().UnixMilli() > r.ExpiresMs+m.skew.Milliseconds():
		return false
	}
	return !m.me.holderGone(r.Holder)
}

// current returns the highest generation of name (0: none) and its record
// (nil if none).
func (m *leaseMgr) current(ctx context.Context, name string) (int64, *leaseRecord, error) {
	var last string
	err := m.st.List(ctx, store.ListOptions{Prefix: m.prefix(name)}, func(e store.ListEntry) error {
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
	var r leaseRecord
	found, err := getJSON(ctx, m.st, last, &r)
	if err != nil {
		return 0, nil, err
	}
	if !found {
		return gen, nil, nil
	}
	if r.Format != leaseFormat || r.FormatVersion != stateVersion {
		return 0, nil, fmt.Errorf("%s: format %q version %d, this kbackup reads %q version %d (upgrade kbackup)",
			last, r.Format, r.FormatVersion, leaseFormat, stateVersion)
	}
	return gen, &r, nil
}

// errLeaseTaken: another process created the generation first.
var errLeaseTaken = errors.New("lease generation taken by another process")

// acquire creates generation gen of name (the caller read gen-1 and found
// it free) and starts renewing it. The returned lease's context, derived
// from ctx, is cancelled when the lease is lost.
func (m *leaseMgr) acquire(ctx context.Context, name string, gen int64) (*heldLease, error) {
	now := m.now()
	r := leaseRecord{Format: leaseFormat, FormatVersion: stateVersion, RestoreID: m.id, Name: name, Generation: gen, Holder: m.me,
		AcquiredMs: now.UnixMilli(), RenewedMs: now.UnixMilli(), ExpiresMs: now.Add(m.ttl).UnixMilli()}
	key := m.genKey(name, gen)
	began := time.Now()
	err := putJSON(ctx, m.st, key, &r, store.PutOptions{IfNotExists: true})
	if errors.Is(err, store.ErrExists) {
		return nil, errLeaseTaken
	}
	if err != nil {
		return nil, err
	}
	return m.hold(ctx, key, r, began, func(ctx context.Context) (bool, error) { return m.newerExists(ctx, name, key) }), nil
}

// newerExists reports whether a generation above key exists.
func (m *leaseMgr) newerExists(ctx context.Context, name, key string) (bool, error) {
	found := false
	err := m.st.List(ctx, store.ListOptions{Prefix: m.prefix(name), StartAfter: key, Limit: 1}, func(store.ListEntry) error {
		found = true
		return nil
	})
	return found, err
}

// heldLease is a lease (or worker record) this process holds.
type heldLease struct {
	m      *leaseMgr
	key    string
	rec    leaseRecord
	check  func(context.Context) (lost bool, err error) // before each renewal
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	deadline time.Time // monotonic: valid until
	lost     bool
	stop     chan struct{}
	done     chan struct{}
}

func (m *leaseMgr) hold(ctx context.Context, key string, r leaseRecord, began time.Time, check func(context.Context) (bool, error)) *heldLease {
	l := &heldLease{m: m, key: key, rec: r, check: check, deadline: began.Add(m.ttl - m.guard()),
		stop: make(chan struct{}), done: make(chan struct{})}
	l.ctx, l.cancel = context.WithCancel(ctx)
	go l.keep()
	return l
}

// valid reports whether the holder may still write under the lease.
func (l *heldLease) valid() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.lost && time.Now().Before(l.deadline)
}

// validUntil is the monotonic instant the lease stops being valid.
func (l *heldLease) validUntil() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deadline
}

// keep renews the lease every T/3 (every T/10 after a failure) and
// cancels its context once it is no longer valid.
func (l *heldLease) keep() {
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
		if time.Until(l.validUntil()) <= 0 {
			l.lose("not renewed before the lease's deadline")
			return
		}
		if err := l.renew(); err != nil {
			if errors.Is(err, errLeaseLost) {
				l.lose(err.Error())
				return
			}
			m.log.Warn("restore: lease not renewed; trying again", "lease", l.key, "err", err)
			next = max(m.ttl/10, 10*time.Millisecond)
			continue
		}
		next = m.renewEvery()
	}
}

// renew checks that nobody took the lease over, then rewrites its key with
// a new expiry.
func (l *heldLease) renew() error {
	began := time.Now()
	ctx, cancel := context.WithDeadline(l.ctx, l.validUntil())
	defer cancel()
	if l.check != nil {
		lost, err := l.check(ctx)
		if err != nil {
			return err
		}
		if lost {
			return fmt.Errorf("%w: a newer generation exists", errLeaseLost)
		}
	}
	now := l.m.now()
	r := l.rec
	r.RenewedMs, r.ExpiresMs = now.UnixMilli(), now.Add(l.m.ttl).UnixMilli()
	if err := putJSON(ctx, l.m.st, l.key, &r, store.PutOptions{}); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost || !time.Now().Before(l.deadline) {
		return fmt.Errorf("%w: renewed after the deadline", errLeaseLost)
	}
	l.rec = r
	l.deadline = began.Add(l.m.ttl - l.m.guard())
	return nil
}

func (l *heldLease) lose(why string) {
	l.mu.Lock()
	l.lost = true
	l.mu.Unlock()
	l.m.log.Error("restore: lease lost; stopping the work it covers", "lease", l.key, "why", why)
	l.cancel()
}

// isLost reports whether the lease was lost (not merely released).
func (l *heldLease) isLost() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lost
}

// release stops renewing and, while the lease is still valid, marks it
// released so that others need not wait for it to expire. It uses its own
// short context: it runs also when the restore was interrupted.
func (l *heldLease) release() {
	close(l.stop)
	<-l.done
	defer l.cancel()
	if !l.valid() {
		return
	}
	ctx, cancel := context.WithDeadline(context.WithoutCancel(l.ctx), l.validUntil())
	defer cancel()
	r := l.rec
	now := l.m.now()
	r.Released, r.RenewedMs, r.ExpiresMs = true, now.UnixMilli(), now.UnixMilli()
	if err := putJSON(ctx, l.m.st, l.key, &r, store.PutOptions{}); err != nil {
		l.m.log.Warn("restore: lease not released (others take it over when it expires)", "lease", l.key, "err", err)
	}
}

// register creates this process's worker record and keeps it renewed.
func (m *leaseMgr) register(ctx context.Context) (*heldLease, error) {
	now := m.now()
	r := leaseRecord{Format: leaseFormat, FormatVersion: stateVersion, RestoreID: m.id, Name: "worker", Holder: m.me,
		AcquiredMs: now.UnixMilli(), RenewedMs: now.UnixMilli(), ExpiresMs: now.Add(m.ttl).UnixMilli()}
	key := workerKey(m.id, m.me.ID)
	began := time.Now()
	if err := putJSON(ctx, m.st, key, &r, store.PutOptions{IfNotExists: true}); err != nil {
		return nil, err
	}
	return m.hold(ctx, key, r, began, nil), nil
}

// unregister stops renewing the worker record and deletes it.
func (l *heldLease) unregister() {
	close(l.stop)
	<-l.done
	l.cancel()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(l.ctx), 10*time.Second)
	defer cancel()
	if err := l.m.st.Delete(ctx, l.key); err != nil {
		l.m.log.Warn("restore: worker record not deleted (it expires)", "key", l.key, "err", err)
	}
}

// workers returns the live worker records of other processes.
func (m *leaseMgr) workers(ctx context.Context) ([]leaseRecord, error) {
	prefix := restoresPrefix + m.id + "/workers/"
	var keys []string
	if err := m.st.List(ctx, store.ListOptions{Prefix: prefix}, func(e store.ListEntry) error {
		if !e.IsPrefix {
			keys = append(keys, e.Key)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	var out []leaseRecord
	for _, k := range keys {
		var r leaseRecord
		found, err := getJSON(ctx, m.st, k, &r)
		if err != nil {
			return nil, err
		}
		if found && r.Holder.ID != m.me.ID && m.live(&r) {
			out = append(out, r)
		}
	}
	return out, nil
}
