package snapshot_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/kbackup/kbackup/snapshot"
	"github.com/kbackup/kbackup/snapshot/ebs"
	"github.com/kbackup/kbackup/snapshot/ec2fake"
	"github.com/kbackup/kbackup/store/filestore"
)

// fakeBrokers are brokers whose state the fake Control changes and the
// fake Cluster derives its health from.
type fakeBrokers struct {
	mu      sync.Mutex
	running map[int32]bool
	// stuck brokers ignore stop; dead ones fail every start.
	stuck, dead map[int32]bool
	events      []string
	unhealthy   bool
	hwm         map[string]map[int32]int64
	clusterID   string
}

func newFakeBrokers(ids ...int32) *fakeBrokers {
	f := &fakeBrokers{running: map[int32]bool{}, stuck: map[int32]bool{}, dead: map[int32]bool{},
		hwm: map[string]map[int32]int64{"orders": {0: 10, 1: 20}}, clusterID: "kafka-cluster-1"}
	for _, id := range ids {
		f.running[id] = true
	}
	return f
}

func (f *fakeBrokers) event(format string, args ...any) {
	f.events = append(f.events, fmt.Sprintf(format, args...))
}

func (f *fakeBrokers) Events() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.events...)
}

func (f *fakeBrokers) AllRunning() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, up := range f.running {
		if !up && !f.dead[id] {
			return fmt.Errorf("broker %d left stopped", id)
		}
	}
	return nil
}

func (f *fakeBrokers) Control() snapshot.Control {
	return snapshot.FuncControl{
		StopFn: func(_ context.Context, b snapshot.Broker) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.event("stop %d", b.ID)
			if !f.stuck[b.ID] {
				f.running[b.ID] = false
			}
			return nil
		},
		StartFn: func(_ context.Context, b snapshot.Broker) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.event("start %d", b.ID)
			if f.dead[b.ID] {
				return errors.New("unit failed to start")
			}
			f.running[b.ID] = true
			return nil
		},
		RunningFn: func(_ context.Context, b snapshot.Broker) (bool, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.running[b.ID], nil
		},
	}
}

// ClusterID implements snapshot.Cluster.
func (f *fakeBrokers) ClusterID(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, up := range f.running {
		if up {
			return f.clusterID, nil
		}
	}
	return "", errors.New("no broker reachable")
}

// Healthy implements snapshot.Cluster.
func (f *fakeBrokers) Healthy(_ context.Context, want []int32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.unhealthy {
		return fmt.Errorf("%w: orders/0 ISR [1] of replicas [1 2 3]", snapshot.ErrUnhealthy)
	}
	for _, id := range want {
		if !f.running[id] {
			return fmt.Errorf("%w: broker %d not registered", snapshot.ErrUnhealthy, id)
		}
	}
	return nil
}

// HighWatermarks implements snapshot.Cluster.
func (f *fakeBrokers) HighWatermarks(context.Context) (map[string]map[int32]int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]map[int32]int64{}
	for t, ps := range f.hwm {
		out[t] = map[int32]int64{}
		for p, o := range ps {
			out[t][p] = o
		}
	}
	return out, nil
}

// rig is a complete unit-test environment: 3 brokers, EBS fake with one
// gp3 volume per broker (broker 3 has two), a directory store.
type rig struct {
	t       *testing.T
	cfg     *snapshot.Config
	brokers *fakeBrokers
	ec2     *ec2fake.EC2
	env     snapshot.Env
	vols    map[int32][]string
}

const testConfig = `
cluster: unit
store: file:///unused
kafka: {brokers: ["127.0.0.1:9092"]}
provider: {type: ebs}
hooks:
  stop: "true"
  start: "true"
  status: "true"
brokers:
  - {id: 1, host: kafka-1, volume_tags: {kafka-broker: "1"}}
  - {id: 2, host: kafka-2, volume_tags: {kafka-broker: "2"}}
  - {id: 3, host: kafka-3, volume_tags: {kafka-broker: "3"}}
retention: {keep_last: 2}
tags: {team: data}
timeouts: {stop: 200ms, start: 200ms, healthy: 500ms, snapshot: 5s}
`

func newRig(t *testing.T) *rig {
	t.Helper()
	cfg, err := snapshot.ParseConfig([]byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	st, err := filestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, cfg: cfg, brokers: newFakeBrokers(1, 2, 3), ec2: ec2fake.New(), vols: map[int32][]string{}}
	for id := int32(1); id <= 3; id++ {
		inst := fmt.Sprintf("i-%d", id)
		tags := map[string]string{"kafka-broker": fmt.Sprint(id), "Name": fmt.Sprintf("kafka-%d-data", id)}
		r.vols[id] = append(r.vols[id], r.ec2.AddVolume("eu-west-1a", inst, "/dev/sdf", 100, types.VolumeTypeGp3, tags))
		if id == 3 {
			r.vols[id] = append(r.vols[id], r.ec2.AddVolume("eu-west-1a", inst, "/dev/sdg", 50, types.VolumeTypeGp3, tags))
		}
		r.ec2.AddVolume("eu-west-1a", inst, "/dev/xvda", 8, types.VolumeTypeGp3, nil) // root, untagged
	}
	r.env = snapshot.Env{
		Config: cfg, Store: st, Cluster: r.brokers, Control: r.brokers.Control(),
		Provider: ebs.New(r.ec2, ebs.Options{Poll: time.Millisecond}),
		Logger:   testLogger(t), Poll: time.Millisecond,
	}
	return r
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func (r *rig) run(mode snapshot.Mode) (*snapshot.CycleRecord, error) {
	r.t.Helper()
	return snapshot.Run(context.Background(), snapshot.RunOptions{Env: r.env, Mode: mode})
}

// checkFailedCycle asserts the cycle failed, is recorded failed, its
// snapshots are tagged failed and no broker was left stopped.
func (r *rig) checkFailedCycle(rec *snapshot.CycleRecord, err error) {
	r.t.Helper()
	if !errors.Is(err, snapshot.ErrCycleFailed) {
		r.t.Fatalf("err = %v, want ErrCycleFailed", err)
	}
	if err := r.brokers.AllRunning(); err != nil {
		r.t.Fatalf("%v (events %v)", err, r.brokers.Events())
	}
	if rec == nil {
		return // failed in preflight: nothing recorded
	}
	got, lerr := snapshot.LoadCycle(context.Background(), r.env.Store, "unit", rec.ID)
	if lerr != nil {
		r.t.Fatal(lerr)
	}
	if got.State != snapshot.StateFailed || got.Reason == "" {
		r.t.Fatalf("stored state %q reason %q, want failed with a reason", got.State, got.Reason)
	}
	for _, s := range r.ec2.Snapshots() {
		if ec2fake.Tags(s.Tags)[ebs.TagState] != "failed" {
			r.t.Errorf("snapshot %s of a failed cycle not tagged failed: %v", *s.SnapshotId, ec2fake.Tags(s.Tags))
		}
	}
}
