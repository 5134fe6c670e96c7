package lease

import (
	"context"
	"errors"
	"os/exec"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/kbackup/kbackup/internal/kfaketest"
	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/storefault"
)

// testMgr is a lease manager of a new live holder (registered as a running
// Run of this process) with lease duration ttl.
func testMgr(t *testing.T, st store.Store, ttl time.Duration) *Manager {
	t.Helper()
	m := &Manager{Store: st, ID: "lt", Me: NewHolder("test", time.Now()), TTL: ttl, Skew: 50 * time.Millisecond, Now: time.Now, Log: kfaketest.Logger(t)}
	t.Cleanup(Track(m.Me))
	return m
}

// TestLeaseAcquireRenewRelease: a held lease binds others across several
// lease durations (it is renewed), a generation can be created once, and a
// released lease is free at once.
func TestLeaseAcquireRenewRelease(t *testing.T) {
	t.Parallel()
	st, _ := kfaketest.Store(t)
	ctx := context.Background()
	a, b := testMgr(t, st, 600*time.Millisecond), testMgr(t, st, 600*time.Millisecond)
	if gen, cur, err := a.Current(ctx, "lanes/x/0000000001"); gen != 0 || cur != nil || err != nil {
		t.Fatalf("fresh lease: %d %v %v", gen, cur, err)
	}
	la, err := a.Acquire(ctx, "lanes/x/0000000001", 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Acquire(ctx, "lanes/x/0000000001", 1); !errors.Is(err, ErrTaken) {
		t.Fatalf("second create of generation 1: %v", err)
	}
	time.Sleep(1500 * time.Millisecond) // 2.5 lease durations
	gen, cur, err := b.Current(ctx, "lanes/x/0000000001")
	if err != nil || gen != 1 || !b.Live(cur) || cur.Holder.ID != a.Me.ID || cur.RenewedMs <= cur.AcquiredMs || !la.Valid() {
		t.Fatalf("after 2.5 lease durations: gen %d %+v live %v valid %v err %v", gen, cur, b.Live(cur), la.Valid(), err)
	}
	la.Release()
	if la.Valid() && la.Context().Err() == nil {
		t.Fatal("released lease still valid")
	}
	gen, cur, err = b.Current(ctx, "lanes/x/0000000001")
	if err != nil || !cur.Released || b.Live(cur) {
		t.Fatalf("released: %+v %v", cur, err)
	}
	lb, err := b.Acquire(ctx, "lanes/x/0000000001", gen+1)
	if err != nil {
		t.Fatal(err)
	}
	lb.Release()
}

// TestLeaseRace: of many processes creating the same generation at once,
// exactly one wins.
func TestLeaseRace(t *testing.T) {
	t.Parallel()
	st, _ := kfaketest.Store(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for i := 0; i < 8; i++ {
		m := testMgr(t, st, 5*time.Second)
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := m.Acquire(context.Background(), "final", 1)
			if err == nil {
				mu.Lock()
				won++
				mu.Unlock()
				l.Release()
			} else if !errors.Is(err, ErrTaken) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if won != 1 {
		t.Fatalf("%d winners", won)
	}
}

// TestLeaseFencedByTime: a holder that cannot renew (its store stops
// answering) stops writing - its context is cancelled and valid() is false
// - before anyone else may take the lease over, which happens only after
// the lease expired (plus the clock-skew allowance).
func TestLeaseFencedByTime(t *testing.T) {
	t.Parallel()
	st, _ := kfaketest.Store(t)
	faulty := storefault.New(st, 1)
	ctx := context.Background()
	ttl := 900 * time.Millisecond
	a, b := testMgr(t, faulty, ttl), testMgr(t, st, ttl)
	la, err := a.Acquire(ctx, "lanes/f/0000000000", 1)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(ttl / 2) // at least one renewal
	faulty.Freeze()
	frozen := time.Now()
	var lost, taken time.Time
	for taken.IsZero() && time.Since(frozen) < 10*ttl {
		if lost.IsZero() && la.Context().Err() != nil {
			lost = time.Now()
			if la.Valid() {
				t.Fatal("cancelled but still valid")
			}
		}
		gen, cur, err := b.Current(ctx, "lanes/f/0000000000")
		if err != nil {
			t.Fatal(err)
		}
		if !b.Live(cur) {
			lb, err := b.Acquire(ctx, "lanes/f/0000000000", gen+1)
			if err != nil {
				t.Fatal(err)
			}
			taken = time.Now()
			defer lb.Release()
		}
		time.Sleep(10 * time.Millisecond)
	}
	if lost.IsZero() || taken.IsZero() || !lost.Before(taken) {
		t.Fatalf("holder stopped at %v, lease taken over at %v (frozen at %v): the holder must stop first", lost.Sub(frozen), taken.Sub(frozen), frozen)
	}
	if d := taken.Sub(lost); d < ttl/6 {
		t.Fatalf("only %v between the holder stopping and the takeover", d)
	}
	t.Logf("store frozen; holder stopped after %v, lease taken over after %v", lost.Sub(frozen).Round(time.Millisecond), taken.Sub(frozen).Round(time.Millisecond))
	la.Release() // lost: writes nothing
}

// TestLeaseGoneHolder: a lease held by a process that no longer runs on
// this machine (or by a Run of this process that returned) is free at
// once; a live holder's is not.
func TestLeaseGoneHolder(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("process identity from /proc (Linux only); elsewhere such leases expire")
	}
	t.Parallel()
	st, _ := kfaketest.Store(t)
	ctx := context.Background()
	m := testMgr(t, st, time.Hour)
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := m.Me
	dead.ID, dead.PID = "dead-process", cmd.Process.Pid
	returned := m.Me
	returned.ID = "returned-run"
	far := time.Now().Add(time.Hour).UnixMilli()
	for _, tc := range []struct {
		h    Holder
		live bool
	}{{dead, false}, {returned, false}, {m.Me, true}} {
		r := &Record{Holder: tc.h, ExpiresMs: far}
		if got := m.Live(r); got != tc.live {
			t.Fatalf("holder %+v: live %v, want %v", tc.h, got, tc.live)
		}
	}
	other := testMgr(t, st, time.Hour) // another live Run of this process
	if !m.Live(&Record{Holder: other.Me, ExpiresMs: far}) {
		t.Fatal("a running Run's lease is not live")
	}
	elsewhere := dead
	elsewhere.Machine = "another-machine"
	if !m.Live(&Record{Holder: elsewhere, ExpiresMs: far}) {
		t.Fatal("a holder on another machine is trusted until its lease expires")
	}
	_ = ctx
}
