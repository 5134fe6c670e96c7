package snapshot_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kbackup/kbackup/snapshot"
	"github.com/kbackup/kbackup/snapshot/ebs"
	"github.com/kbackup/kbackup/snapshot/ec2fake"
	"github.com/kbackup/kbackup/store"
)

func TestColdCycleEBS(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	rec, err := r.run(snapshot.ModeCold)
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != snapshot.StateComplete || rec.ClusterID != "kafka-cluster-1" || rec.Mode != snapshot.ModeCold {
		t.Fatalf("record %+v", rec)
	}
	got, err := snapshot.LoadCycle(context.Background(), r.env.Store, "unit", rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != snapshot.StateComplete || got.FormatVersion != snapshot.FormatVersion {
		t.Fatalf("stored %+v", got)
	}
	if hw, ok := got.HighWatermark("orders", 1); !ok || hw != 20 {
		t.Fatalf("high watermark orders/1 = %d %v", hw, ok)
	}
	if n := len(got.Snaps()); n != 4 {
		t.Fatalf("%d snapshots, want 4 (root volumes excluded)", n)
	}
	for _, s := range got.Snaps() {
		if s.State != snapshot.SnapCompleted || s.Volume.Device == "" || s.Volume.Zone != "eu-west-1a" {
			t.Errorf("snapshot %+v", s)
		}
	}
	for _, s := range r.ec2.Snapshots() {
		tags := ec2fake.Tags(s.Tags)
		if tags[ebs.TagCycle] != rec.ID || tags[ebs.TagCluster] != "unit" || tags["team"] != "data" || tags[ebs.TagState] != "" {
			t.Errorf("snapshot tags %v", tags)
		}
	}
	// Cold: every broker stopped before any started again.
	ev := r.brokers.Events()
	lastStop, firstStart := -1, len(ev)
	for i, e := range ev {
		if strings.HasPrefix(e, "stop") {
			lastStop = i
		} else if firstStart == len(ev) {
			firstStart = i
		}
	}
	if lastStop > firstStart || len(ev) != 6 {
		t.Fatalf("events %v: want 3 stops, then 3 starts", ev)
	}
	if err := r.brokers.AllRunning(); err != nil {
		t.Fatal(err)
	}
	// The lock is released.
	if _, err := r.env.Store.Stat(context.Background(), snapshot.LockKey("unit")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("lock still there: %v", err)
	}
}

func TestRollingCycleOneBrokerAtATime(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	if _, err := r.run(snapshot.ModeRolling); err != nil {
		t.Fatal(err)
	}
	want := []string{"stop 1", "start 1", "stop 2", "start 2", "stop 3", "start 3"}
	if ev := r.brokers.Events(); !slices.Equal(ev, want) {
		t.Fatalf("events %v, want %v", ev, want)
	}
}

func TestHotCycleStopsNothing(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	rec, err := r.run(snapshot.ModeHot)
	if err != nil {
		t.Fatal(err)
	}
	if ev := r.brokers.Events(); len(ev) != 0 {
		t.Fatalf("hot cycle controlled brokers: %v", ev)
	}
	if r.ec2.Calls["CreateSnapshots"] != 1 { // broker 3's two volumes, together
		t.Fatalf("CreateSnapshots calls %d, want 1", r.ec2.Calls["CreateSnapshots"])
	}
	if len(rec.Snaps()) != 4 {
		t.Fatalf("%d snapshots", len(rec.Snaps()))
	}
}

func TestSnapshotErrorFailsCycle(t *testing.T) {
	t.Parallel()
	for _, mode := range []snapshot.Mode{snapshot.ModeCold, snapshot.ModeRolling, snapshot.ModeHot} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			r.ec2.FailVolumes[r.vols[2][0]] = true
			rec, err := r.run(mode)
			if !errors.Is(err, snapshot.ErrSnapshotFailed) {
				t.Fatalf("err = %v, want ErrSnapshotFailed", err)
			}
			r.checkFailedCycle(rec, err)
		})
	}
}

func TestAPIErrorFailsCycle(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.ec2.FailNext("CreateSnapshot", nil, ec2fake.APIError("SnapshotCreationPerVolumeRateExceeded", "slow down"))
	rec, err := r.run(snapshot.ModeCold)
	if err == nil || !strings.Contains(err.Error(), "SnapshotCreationPerVolumeRateExceeded") {
		t.Fatalf("err = %v", err)
	}
	r.checkFailedCycle(rec, err)
}

func TestBrokerWillNotStop(t *testing.T) {
	t.Parallel()
	for _, mode := range []snapshot.Mode{snapshot.ModeCold, snapshot.ModeRolling} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			r.brokers.stuck[2] = true
			rec, err := r.run(mode)
			if !errors.Is(err, snapshot.ErrBrokerControl) || !strings.Contains(err.Error(), "broker 2 not stopped") {
				t.Fatalf("err = %v", err)
			}
			r.checkFailedCycle(rec, err)
			if mode == snapshot.ModeRolling && slices.Contains(r.brokers.Events(), "stop 3") {
				t.Fatalf("rolling cycle went on to broker 3: %v", r.brokers.Events())
			}
			// Nothing of broker 2 was snapshot while it ran.
			for _, b := range rec.Brokers {
				if b.ID == 2 && len(b.Snapshots) > 0 {
					t.Fatalf("broker 2 snapshot although it did not stop")
				}
			}
		})
	}
}

func TestBrokerWillNotComeBack(t *testing.T) {
	t.Parallel()
	for _, mode := range []snapshot.Mode{snapshot.ModeCold, snapshot.ModeRolling} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			r.brokers.dead[1] = true
			rec, err := r.run(mode)
			if !errors.Is(err, snapshot.ErrBrokerControl) || !strings.Contains(err.Error(), "broker 1 did not come back") {
				t.Fatalf("err = %v", err)
			}
			r.checkFailedCycle(rec, err)
			ev := r.brokers.Events()
			if n := countOf(ev, "start 1"); n != 3 {
				t.Fatalf("broker 1 start tried %d times, want 3: %v", n, ev)
			}
			if mode == snapshot.ModeRolling && slices.Contains(ev, "stop 2") {
				t.Fatalf("rolling cycle stopped broker 2 while broker 1 was down: %v", ev)
			}
		})
	}
}

func countOf(ss []string, s string) int {
	n := 0
	for _, x := range ss {
		if x == s {
			n++
		}
	}
	return n
}

func TestUnhealthyClusterChangesNothing(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.brokers.unhealthy = true
	rec, err := r.run(snapshot.ModeCold)
	if !errors.Is(err, snapshot.ErrUnhealthy) || rec != nil {
		t.Fatalf("rec %v err %v", rec, err)
	}
	if len(r.brokers.Events()) != 0 || len(r.ec2.Snapshots()) != 0 {
		t.Fatalf("preflight failure changed something: %v", r.brokers.Events())
	}
	cycles, err := snapshot.LoadCycles(context.Background(), r.env.Store, "unit")
	if err != nil || len(cycles) != 0 {
		t.Fatalf("cycles %v err %v", cycles, err)
	}
}

func TestLock(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	// A fresh lock of another job refuses the cycle.
	held := `{"token":"x","op":"run","host":"other","pid":1,"acquired":"2024-01-01T00:00:00Z","expires":"2999-01-01T00:00:00Z"}`
	put(t, r.env.Store, snapshot.LockKey("unit"), held)
	if _, err := r.run(snapshot.ModeCold); !errors.Is(err, snapshot.ErrLocked) {
		t.Fatalf("err = %v, want ErrLocked", err)
	}
	if len(r.brokers.Events()) != 0 {
		t.Fatal("a locked-out cycle touched brokers")
	}
	// An expired one is taken over, and released at the end.
	stale := strings.Replace(held, "2999", "2000", 1)
	put(t, r.env.Store, snapshot.LockKey("unit"), stale)
	if _, err := r.run(snapshot.ModeCold); err != nil {
		t.Fatal(err)
	}
	if _, err := r.env.Store.Stat(ctx, snapshot.LockKey("unit")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("lock not released: %v", err)
	}
}

func put(t *testing.T, st store.Store, key, body string) {
	t.Helper()
	if err := st.Put(context.Background(), key, strings.NewReader(body), int64(len(body)), store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestRecordRefusesUnknownVersion(t *testing.T) {
	t.Parallel()
	for _, body := range []string{`{"format_version":2,"id":"20240101T000000Z-00000000"}`, `{"id":"x"}`} {
		if _, err := snapshot.DecodeCycle([]byte(body)); !errors.Is(err, snapshot.ErrUnknownVersion) {
			t.Errorf("%s: err = %v", body, err)
		}
	}
	if _, err := snapshot.DecodeCycle([]byte(`not json`)); err == nil {
		t.Error("garbage decoded")
	}
}

func TestContextCancelStillStartsBrokers(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx, cancel := context.WithCancel(context.Background())
	ctl := r.brokers.Control().(snapshot.FuncControl)
	stop := ctl.StopFn
	ctl.StopFn = func(c context.Context, b snapshot.Broker) error {
		if b.ID == 3 {
			cancel() // SIGTERM in the middle of the cycle
		}
		return stop(c, b)
	}
	r.env.Control = ctl
	_, err := snapshot.Run(ctx, snapshot.RunOptions{Env: r.env, Mode: snapshot.ModeRolling})
	if err == nil {
		t.Fatal("cancelled cycle succeeded")
	}
	time.Sleep(10 * time.Millisecond)
	if err := r.brokers.AllRunning(); err != nil {
		t.Fatal(err)
	}
}
