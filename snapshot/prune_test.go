package snapshot_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kbackup/kbackup/snapshot"
)

func TestPrune(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	clock := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	r.env.Now = func() time.Time { return clock }
	var ids []string
	for i := 0; i < 4; i++ {
		if i == 2 {
			r.ec2.FailVolumes[r.vols[1][0]] = true
		}
		rec, _ := r.run(snapshot.ModeHot)
		delete(r.ec2.FailVolumes, r.vols[1][0])
		ids = append(ids, rec.ID)
		clock = clock.Add(24 * time.Hour)
	}
	// cycles: 0 complete, 1 complete, 2 failed, 3 complete; keep_last 2.
	snapsBefore := len(r.ec2.Snapshots())

	ds, err := snapshot.Prune(ctx, snapshot.PruneOptions{Env: r.env})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{ids[0]: true, ids[1]: false, ids[2]: true, ids[3]: false}
	for _, d := range ds {
		if d.Delete != want[d.ID] {
			t.Errorf("cycle %s (%s): delete %v (%s), want %v", d.ID, d.State, d.Delete, d.Why, want[d.ID])
		}
	}
	if len(r.ec2.Snapshots()) != snapsBefore {
		t.Fatal("prune without --confirm deleted snapshots")
	}
	if cs, _ := snapshot.LoadCycles(ctx, r.env.Store, "unit"); len(cs) != 4 {
		t.Fatal("prune without --confirm deleted records")
	}

	if _, err := snapshot.Prune(ctx, snapshot.PruneOptions{Env: r.env, Confirm: true}); err != nil {
		t.Fatal(err)
	}
	cs, err := snapshot.LoadCycles(ctx, r.env.Store, "unit")
	if err != nil || len(cs) != 2 || cs[0].ID != ids[1] || cs[1].ID != ids[3] {
		t.Fatalf("left %v err %v", cs, err)
	}
	if n := len(r.ec2.Snapshots()); n != 8 {
		t.Fatalf("%d snapshots left, want the 8 of the two kept cycles", n)
	}

	// The newest complete cycle survives the strictest rules.
	if _, err := snapshot.Prune(ctx, snapshot.PruneOptions{Env: r.env, Confirm: true, KeepLast: 1, MaxAge: time.Nanosecond}); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(1000 * 24 * time.Hour)
	cfg := *r.cfg
	cfg.Retention = snapshot.Retention{MaxAge: snapshot.Duration(time.Hour)}
	r.env.Config = &cfg
	if _, err := snapshot.Prune(ctx, snapshot.PruneOptions{Env: r.env, Confirm: true}); err != nil {
		t.Fatal(err)
	}
	cs, _ = snapshot.LoadCycles(ctx, r.env.Store, "unit")
	if len(cs) != 1 || cs[0].ID != ids[3] {
		t.Fatalf("left %v, want only the newest complete cycle %s", cs, ids[3])
	}
	if n := len(r.ec2.Snapshots()); n != 4 {
		t.Fatalf("%d snapshots left", n)
	}

	cfg.Retention = snapshot.Retention{}
	if _, err := snapshot.Prune(ctx, snapshot.PruneOptions{Env: r.env}); !errors.Is(err, snapshot.ErrNoRetention) {
		t.Fatalf("err = %v", err)
	}
}

func TestPruneStalePending(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	now := time.Now()
	r.env.Now = func() time.Time { return now }
	old := &snapshot.CycleRecord{ID: snapshot.NewCycleID(now.Add(-48 * time.Hour)), Cluster: "unit", State: snapshot.StatePending, Started: now.Add(-48 * time.Hour)}
	fresh := &snapshot.CycleRecord{ID: snapshot.NewCycleID(now.Add(-time.Minute)), Cluster: "unit", State: snapshot.StatePending, Started: now.Add(-time.Minute)}
	for _, c := range []*snapshot.CycleRecord{old, fresh} {
		if err := snapshot.SaveCycle(ctx, r.env.Store, c, true); err != nil {
			t.Fatal(err)
		}
	}
	ds, err := snapshot.Prune(ctx, snapshot.PruneOptions{Env: r.env, Confirm: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 || !ds[0].Delete || ds[1].Delete {
		t.Fatalf("decisions %+v: want the 48h-old pending cycle deleted, the fresh one kept", ds)
	}
	infos, err := snapshot.List(ctx, snapshot.ListOptions{Env: r.env})
	if err != nil || len(infos) != 1 || infos[0].ID != fresh.ID || infos[0].State != snapshot.StatePending {
		t.Fatalf("list %+v err %v", infos, err)
	}
}
