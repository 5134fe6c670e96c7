// Package providertest is the conformance suite every snapshot.Provider
// passes (snapshot/dirprov and snapshot/ebs run it), in the way
// store/storetest is the store's: the contract of the Provider interface,
// checked on the data the broker's volumes hold.
package providertest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kbackup/kbackup/snapshot"
)

// Harness is one provider under test with one broker whose volumes it
// snapshots. The suite calls the factory for every subtest.
type Harness struct {
	Provider snapshot.Provider
	// Broker is a broker of cluster "c" with at least one volume.
	Broker snapshot.BrokerConfig
	// Write sets the data the broker's current volumes hold.
	Write func(t *testing.T, data string)
	// Read returns the data the broker's current volumes hold.
	Read func(t *testing.T) string
	// Exists reports whether a snapshot is still stored.
	Exists func(t *testing.T, s snapshot.Snap) bool
	// MarkedFailed reports whether MarkFailed's mark is on a snapshot.
	MarkedFailed func(t *testing.T, s snapshot.Snap) bool
	// FailNextSnapshot makes the next snapshot of the broker fail (as a
	// leftover, a full disk or an EBS snapshot in state error would).
	FailNextSnapshot func(t *testing.T, cycle string)
}

// Run runs the suite with a fresh Harness per subtest.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	const cycle = "20240101T000000Z-00000000"
	ctx := context.Background()
	take := func(t *testing.T, h Harness) []snapshot.Snap {
		t.Helper()
		vols, err := h.Provider.Discover(ctx, h.Broker)
		if err != nil || len(vols) == 0 {
			t.Fatalf("Discover: %v %v", vols, err)
		}
		snaps, err := h.Provider.Snapshot(ctx, snapshot.SnapRequest{Cluster: "c", Cycle: cycle, Broker: h.Broker.ID, Volumes: vols})
		if err != nil || len(snaps) != len(vols) {
			t.Fatalf("Snapshot: %d snapshots of %d volumes, %v", len(snaps), len(vols), err)
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if snaps, err = h.Provider.Wait(wctx, snaps); err != nil {
			t.Fatalf("Wait: %v", err)
		}
		for _, s := range snaps {
			if s.State != snapshot.SnapCompleted || s.ID == "" {
				t.Fatalf("Wait returned %+v", s)
			}
		}
		return snaps
	}

	t.Run("DiscoverIsStable", func(t *testing.T) {
		h := newHarness(t)
		a, err1 := h.Provider.Discover(ctx, h.Broker)
		b, err2 := h.Provider.Discover(ctx, h.Broker)
		if err1 != nil || err2 != nil || len(a) == 0 || len(a) != len(b) {
			t.Fatalf("Discover twice: %v %v / %v %v", a, err1, b, err2)
		}
		for i := range a {
			if a[i].ID == "" || a[i].ID != b[i].ID {
				t.Fatalf("volume %d: %+v vs %+v", i, a[i], b[i])
			}
		}
		if h.Provider.Name() == "" {
			t.Fatal("empty Name")
		}
	})

	t.Run("RestoreBringsTheSnapshotBackAndRollbackUndoesIt", func(t *testing.T) {
		h := newHarness(t)
		h.Write(t, "at the cycle")
		snaps := take(t, h)
		h.Write(t, "later")
		done, err := h.Provider.Restore(ctx, "c", cycle, h.Broker.ID, snaps)
		if err != nil {
			t.Fatalf("Restore: %v", err)
		}
		if got := h.Read(t); got != "at the cycle" {
			t.Fatalf("after Restore the volumes hold %q", got)
		}
		if len(done) != len(snaps) {
			t.Fatalf("Restore reported %d volumes for %d snapshots", len(done), len(snaps))
		}
		for _, r := range done {
			if r.New == "" || r.Old == "" {
				t.Fatalf("Restored %+v: New and Old must name what replaced what", r)
			}
		}
		if err := h.Provider.Rollback(ctx, h.Broker.ID, done); err != nil {
			t.Fatalf("Rollback: %v", err)
		}
		if got := h.Read(t); got != "later" {
			t.Fatalf("after Rollback the volumes hold %q", got)
		}
	})

	t.Run("DeleteIsIdempotent", func(t *testing.T) {
		h := newHarness(t)
		h.Write(t, "x")
		snaps := take(t, h)
		for _, s := range snaps {
			if !h.Exists(t, s) {
				t.Fatalf("snapshot %s missing after Wait", s.ID)
			}
		}
		if err := h.Provider.Delete(ctx, snaps); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		for _, s := range snaps {
			if h.Exists(t, s) {
				t.Fatalf("snapshot %s still there after Delete", s.ID)
			}
		}
		if err := h.Provider.Delete(ctx, snaps); err != nil {
			t.Fatalf("second Delete: %v", err)
		}
		if got := h.Read(t); got != "x" {
			t.Fatalf("Delete touched the live volumes: %q", got)
		}
	})

	t.Run("MarkFailed", func(t *testing.T) {
		h := newHarness(t)
		snaps := take(t, h)
		if err := h.Provider.MarkFailed(ctx, snaps); err != nil {
			t.Fatalf("MarkFailed: %v", err)
		}
		for _, s := range snaps {
			if !h.MarkedFailed(t, s) {
				t.Fatalf("snapshot %s not marked failed", s.ID)
			}
		}
		if err := h.Provider.MarkFailed(ctx, nil); err != nil {
			t.Fatalf("MarkFailed of nothing: %v", err)
		}
	})

	t.Run("RestoreOfADeletedSnapshotFailsAndRollsBack", func(t *testing.T) {
		h := newHarness(t)
		h.Write(t, "at the cycle")
		snaps := take(t, h)
		if err := h.Provider.Delete(ctx, snaps); err != nil {
			t.Fatal(err)
		}
		h.Write(t, "live")
		done, err := h.Provider.Restore(ctx, "c", cycle, h.Broker.ID, snaps)
		if err == nil {
			t.Fatal("Restore of deleted snapshots succeeded")
		}
		if rerr := h.Provider.Rollback(ctx, h.Broker.ID, done); rerr != nil {
			t.Fatalf("Rollback after a failed Restore: %v", rerr)
		}
		if got := h.Read(t); got != "live" {
			t.Fatalf("a failed Restore and its rollback left %q", got)
		}
	})

	// A failed snapshot is reported by Snapshot or by Wait, wrapping
	// ErrSnapshotFailed (the cycle is then recorded failed).
	t.Run("AFailedSnapshotIsReported", func(t *testing.T) {
		h := newHarness(t)
		h.FailNextSnapshot(t, cycle)
		vols, err := h.Provider.Discover(ctx, h.Broker)
		if err != nil {
			t.Fatal(err)
		}
		snaps, err := h.Provider.Snapshot(ctx, snapshot.SnapRequest{Cluster: "c", Cycle: cycle, Broker: h.Broker.ID, Volumes: vols})
		if err == nil {
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			_, err = h.Provider.Wait(wctx, snaps)
		}
		if !errors.Is(err, snapshot.ErrSnapshotFailed) {
			t.Fatalf("a snapshot in error: %v, want ErrSnapshotFailed", err)
		}
	})
}
