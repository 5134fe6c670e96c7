// Package storefault wraps a store.Store to inject faults in tests: a share
// of calls fail, calls are slowed down, or the store freezes entirely (to
// simulate a process killed at an arbitrary instant).
package storefault

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kbackup/kbackup/store"
)

// ErrInjected is the error injected calls fail with.
var ErrInjected = errors.New("injected store fault")

// Store is a fault-injecting store.Store.
type Store struct {
	inner store.Store

	mu       sync.Mutex
	rng      *rand.Rand
	failRate float64       // share of calls that fail
	maxDelay time.Duration // each call sleeps up to this long
	// writeDelay slows every Write to a staged object by this much (a
	// slow disk or link under a streamed segment).
	writeDelay atomic.Int64
	// putFailAfter: a failing Put fails after writing (the outcome is
	// unknown to the caller) with this probability.
	putFailAfter float64

	frozen atomic.Bool
	// freezeAt > 0: the call with this number (Calls after it is counted)
	// and every later one freeze the store (FreezeAfter).
	freezeAt atomic.Int64
	calls    atomic.Int64
	faults   atomic.Int64
}

var (
	_ store.Store  = (*Store)(nil)
	_ store.Stager = (*Store)(nil)
)

// New wraps inner; seed makes the fault sequence reproducible.
func New(inner store.Store, seed uint64) *Store {
	return &Store{inner: inner, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// SetFailRate makes a share (0..1) of calls fail with ErrInjected; of the
// failing Puts, a share afterWrite fails after the object was written.
func (s *Store) SetFailRate(rate, afterWrite float64) {
	s.mu.Lock()
	s.failRate, s.putFailAfter = rate, afterWrite
	s.mu.Unlock()
}

// SetMaxDelay slows every call by a random delay up to d.
func (s *Store) SetMaxDelay(d time.Duration) {
	s.mu.Lock()
	s.maxDelay = d
	s.mu.Unlock()
}

// SetStagedWriteDelay slows every Write to a staged object by d.
func (s *Store) SetStagedWriteDelay(d time.Duration) { s.writeDelay.Store(int64(d)) }

// Freeze makes every later call fail without touching the inner store, as
// if the process had been killed at this instant.
func (s *Store) Freeze() { s.frozen.Store(true) }

// FreezeAfter lets n more calls through and freezes the store from the
// next one on, as if the process had been killed right after its n-th store
// call from now: the way to crash an operation at every step in turn.
func (s *Store) FreezeAfter(n int64) { s.freezeAt.Store(s.calls.Load() + n + 1) }

// Thaw undoes Freeze and FreezeAfter.
func (s *Store) Thaw() {
	s.freezeAt.Store(0)
	s.frozen.Store(false)
}

// Calls and Faults count calls made and faults injected.
func (s *Store) Calls() int64  { return s.calls.Load() }
func (s *Store) Faults() int64 { return s.faults.Load() }

// decide returns (fail, failAfterWrite, delay) for one call.
func (s *Store) decide() (bool, bool, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var d time.Duration
	if s.maxDelay > 0 {
		d = time.Duration(s.rng.Int64N(int64(s.maxDelay)))
	}
	fail := s.rng.Float64() < s.failRate
	return fail, fail && s.rng.Float64() < s.putFailAfter, d
}

func (s *Store) before(ctx context.Context, op, key string) (bool, error) {
	n := s.calls.Add(1)
	if at := s.freezeAt.Load(); at > 0 && n >= at {
		s.frozen.Store(true)
	}
	if s.frozen.Load() {
		s.faults.Add(1)
		return false, fmt.Errorf("%s %s: store frozen: %w", op, key, ErrInjected)
	}
	fail, after, d := s.decide()
	if d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	if fail && !after {
		s.faults.Add(1)
		return false, fmt.Errorf("%s %s: %w", op, key, ErrInjected)
	}
	return fail && after, nil
}

// Put implements store.Store.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64, opts store.PutOptions) error {
	failAfter, err := s.before(ctx, "put", key)
	if err != nil {
		return err
	}
	if err := s.inner.Put(ctx, key, r, size, opts); err != nil {
		return err
	}
	if failAfter {
		s.faults.Add(1)
		return fmt.Errorf("put %s: response lost: %w", key, ErrInjected)
	}
	return nil
}

// GetRange implements store.Store.
func (s *Store) GetRange(ctx context.Context, key string, off, length int64) (io.ReadCloser, error) {
	if _, err := s.before(ctx, "get", key); err != nil {
		return nil, err
	}
	return s.inner.GetRange(ctx, key, off, length)
}

// Stat implements store.Store.
func (s *Store) Stat(ctx context.Context, key string) (store.ObjectInfo, error) {
	if _, err := s.before(ctx, "stat", key); err != nil {
		return store.ObjectInfo{}, err
	}
	return s.inner.Stat(ctx, key)
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, opts store.ListOptions, fn func(store.ListEntry) error) error {
	if _, err := s.before(ctx, "list", opts.Prefix); err != nil {
		return err
	}
	return s.inner.List(ctx, opts, fn)
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	if _, err := s.before(ctx, "delete", key); err != nil {
		return err
	}
	return s.inner.Delete(ctx, key)
}

// String implements store.Store.
func (s *Store) String() string { return "faulty(" + s.inner.String() + ")" }

// Stage implements store.Stager when the inner store does (else it fails,
// and writers hold their objects in memory). Stage and Publish are calls
// like the others (they fail, are delayed, freeze); a write to a staged
// object fails once the store is frozen, as a killed process's would.
func (s *Store) Stage(ctx context.Context, prefix string) (store.Staged, error) {
	sg, ok := s.inner.(store.Stager)
	if !ok {
		return nil, fmt.Errorf("stage %s: %s cannot stage objects", prefix, s.inner)
	}
	if _, err := s.before(ctx, "stage", prefix); err != nil {
		return nil, err
	}
	st, err := sg.Stage(ctx, prefix)
	if err != nil {
		return nil, err
	}
	return &staged{s: s, inner: st}, nil
}

type staged struct {
	s     *Store
	inner store.Staged
}

func (st *staged) Write(p []byte) (int, error) {
	if st.s.frozen.Load() {
		return 0, fmt.Errorf("write staged object: store frozen: %w", ErrInjected)
	}
	if d := time.Duration(st.s.writeDelay.Load()); d > 0 {
		time.Sleep(d)
	}
	return st.inner.Write(p)
}

func (st *staged) Size() int64 { return st.inner.Size() }

func (st *staged) Abort() { st.inner.Abort() }

func (st *staged) Publish(ctx context.Context, key string, opts store.PutOptions) error {
	failAfter, err := st.s.before(ctx, "publish", key)
	if err != nil {
		st.inner.Abort()
		return err
	}
	if err := st.inner.Publish(ctx, key, opts); err != nil {
		return err
	}
	if failAfter {
		st.s.faults.Add(1)
		return fmt.Errorf("publish %s: response lost: %w", key, ErrInjected)
	}
	return nil
}
