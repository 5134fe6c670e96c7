package snapshot_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/kbackup/kbackup/snapshot"
	"github.com/kbackup/kbackup/snapshot/dirprov"
	"github.com/kbackup/kbackup/snapshot/ebs"
	"github.com/kbackup/kbackup/snapshot/ec2fake"
)

// attachedAt returns the volume attached at instance/device in the fake.
func (r *rig) attachedAt(inst, dev string) string {
	r.t.Helper()
	out, err := r.ec2.DescribeVolumes(context.Background(), &ec2.DescribeVolumesInput{Filters: []types.Filter{
		{Name: aws.String("attachment.instance-id"), Values: []string{inst}},
		{Name: aws.String("attachment.device"), Values: []string{dev}},
	}})
	if err != nil {
		r.t.Fatal(err)
	}
	if len(out.Volumes) != 1 {
		r.t.Fatalf("%d volumes at %s:%s", len(out.Volumes), inst, dev)
	}
	return aws.ToString(out.Volumes[0].VolumeId)
}

func TestRestoreEBS(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	rec, err := r.run(snapshot.ModeCold)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r.brokers.hwm["orders"][0] = 99 // more data produced after the cycle
	before := len(r.brokers.Events())

	// Dry run: a plan, nothing touched.
	res, err := snapshot.Restore(ctx, snapshot.RestoreOptions{Env: r.env, Cycle: rec.ID, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Plan) < 5 || !strings.Contains(strings.Join(res.Plan, "\n"), "/dev/sdg") {
		t.Fatalf("plan %q", res.Plan)
	}
	if len(r.brokers.Events()) != before || r.ec2.Calls["CreateVolume"] != 0 {
		t.Fatal("dry run touched something")
	}

	// The restored cluster serves the cycle's high watermarks.
	ctl := r.brokers.Control().(snapshot.FuncControl)
	start := ctl.StartFn
	ctl.StartFn = func(c context.Context, b snapshot.Broker) error {
		r.brokers.mu.Lock()
		r.brokers.hwm["orders"][0] = 10
		r.brokers.mu.Unlock()
		return start(c, b)
	}
	r.env.Control = ctl
	res, err = snapshot.Restore(ctx, snapshot.RestoreOptions{Env: r.env, Cycle: rec.ID})
	if err != nil {
		t.Fatal(err)
	}
	if res.HighWatermarks["orders"]["0"] != 10 || len(res.Mismatches) != 0 {
		t.Fatalf("served %v mismatches %v", res.HighWatermarks, res.Mismatches)
	}
	if err := r.brokers.AllRunning(); err != nil {
		t.Fatal(err)
	}
	for id := int32(1); id <= 3; id++ {
		for i, old := range r.vols[id] {
			dev := []string{"/dev/sdf", "/dev/sdg"}[i]
			now := r.attachedAt(instOf(id), dev)
			if now == old {
				t.Fatalf("broker %d %s still has the old volume", id, dev)
			}
			nv, _ := r.ec2.Volume(now)
			tags := ec2fake.Tags(nv.Tags)
			if tags[ebs.TagRestoredOf] != rec.ID || tags["kafka-broker"] == "" || aws.ToString(nv.AvailabilityZone) != "eu-west-1a" ||
				nv.VolumeType != "gp3" || aws.ToInt32(nv.Iops) != 3000 || aws.ToInt32(nv.Throughput) != 125 {
				t.Errorf("new volume %s: tags %v zone %s type %s", now, tags, aws.ToString(nv.AvailabilityZone), nv.VolumeType)
			}
			ov, _ := r.ec2.Volume(old)
			if len(ov.Attachments) != 0 || ec2fake.Tags(ov.Tags)[ebs.TagRollback] != rec.ID || ec2fake.Tags(ov.Tags)[ebs.TagReplacedBy] != now {
				t.Errorf("old volume %s: attachments %v tags %v", old, ov.Attachments, ec2fake.Tags(ov.Tags))
			}
		}
	}
	// A report is stored.
	if _, err := r.env.Store.Stat(ctx, snapshot.RestoreKey("unit", res.ID)); err != nil {
		t.Fatal(err)
	}
}

func instOf(id int32) string { return "i-" + string(rune('0'+id)) }

func TestRestoreFailureRollsBack(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	rec, err := r.run(snapshot.ModeCold)
	if err != nil {
		t.Fatal(err)
	}
	// The third AttachVolume fails: what was restored is rolled back.
	r.ec2.FailNext("AttachVolume", nil, nil, ec2fake.APIError("InternalError", "boom"))
	_, err = snapshot.Restore(context.Background(), snapshot.RestoreOptions{Env: r.env, Cycle: rec.ID})
	if !errors.Is(err, snapshot.ErrRestoreFailed) {
		t.Fatalf("err = %v", err)
	}
	if err := r.brokers.AllRunning(); err != nil {
		t.Fatal(err)
	}
	for id := int32(1); id <= 3; id++ {
		for i, old := range r.vols[id] {
			dev := []string{"/dev/sdf", "/dev/sdg"}[i]
			if now := r.attachedAt(instOf(id), dev); now != old {
				t.Errorf("broker %d %s: %s attached after rollback, want the original %s", id, dev, now, old)
			}
		}
	}
}

func TestRestoreRefuses(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	r.ec2.FailVolumes[r.vols[1][0]] = true
	failed, err := r.run(snapshot.ModeCold)
	if err == nil {
		t.Fatal("cycle with an error snapshot succeeded")
	}
	_, err = snapshot.Restore(ctx, snapshot.RestoreOptions{Env: r.env, Cycle: failed.ID})
	if !errors.Is(err, snapshot.ErrNotRestorable) || !strings.Contains(err.Error(), "is failed, not complete") {
		t.Fatalf("restore of a failed cycle: %v", err)
	}

	// A pending cycle (a job still running, or died) is refused too.
	pending := &snapshot.CycleRecord{ID: snapshot.NewCycleID(time.Now()), Cluster: "unit", State: snapshot.StatePending,
		Brokers: failed.Brokers}
	if err := snapshot.SaveCycle(ctx, r.env.Store, pending, true); err != nil {
		t.Fatal(err)
	}
	if _, err := snapshot.Restore(ctx, snapshot.RestoreOptions{Env: r.env, Cycle: pending.ID, DryRun: true}); !errors.Is(err, snapshot.ErrNotRestorable) {
		t.Fatalf("restore of a pending cycle: %v", err)
	}

	// Another cluster's cycle, and the running cluster's id differing.
	delete(r.ec2.FailVolumes, r.vols[1][0])
	ok, err := r.run(snapshot.ModeCold)
	if err != nil {
		t.Fatal(err)
	}
	other := *r.cfg
	other.Cluster = "other"
	env := r.env
	env.Config = &other
	if _, err := snapshot.Restore(ctx, snapshot.RestoreOptions{Env: env, Cycle: ok.ID}); !errors.Is(err, snapshot.ErrNoCycle) {
		t.Fatalf("restore from another cluster's config: %v", err)
	}
	dirs, err := dirprov.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	env = r.env
	env.Provider = dirs
	if _, err := snapshot.Restore(ctx, snapshot.RestoreOptions{Env: env, Cycle: ok.ID, DryRun: true}); !errors.Is(err, snapshot.ErrNotRestorable) ||
		!strings.Contains(err.Error(), "taken with the ebs provider, the configuration uses dir") {
		t.Fatalf("restore of an EBS cycle with the dir provider: %v", err)
	}
	r.brokers.clusterID = "a-different-cluster"
	if _, err := snapshot.Restore(ctx, snapshot.RestoreOptions{Env: r.env, Cycle: ok.ID}); !errors.Is(err, snapshot.ErrNotRestorable) {
		t.Fatalf("restore into a cluster with another id: %v", err)
	}
	if _, err := snapshot.Restore(ctx, snapshot.RestoreOptions{Env: r.env, Cycle: "nonsense"}); !errors.Is(err, snapshot.ErrNoCycle) {
		t.Fatalf("restore of a bad id: %v", err)
	}
	for _, e := range r.brokers.Events()[len(r.brokers.Events())-1:] {
		if strings.HasPrefix(e, "stop") {
			t.Fatal("a refused restore stopped a broker")
		}
	}
}

func TestRollForwardHooks(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	rec, err := r.run(snapshot.ModeCold)
	if err != nil {
		t.Fatal(err)
	}
	if lo, hi, ok := rec.OffsetRange("orders", 1); !ok || lo != 20 || hi != 20 {
		t.Fatalf("range %d..%d %v", lo, hi, ok)
	}
	if _, _, ok := rec.OffsetRange("orders", 7); ok {
		t.Fatal("range of an unrecorded partition")
	}
	if err := rec.Restorable("other"); !errors.Is(err, snapshot.ErrNotRestorable) {
		t.Fatalf("other cluster: %v", err)
	}
	if _, err := snapshot.LatestRestore(ctx, r.env.Store, "unit"); err == nil {
		t.Fatal("a restore report before any restore")
	}
	res, err := snapshot.Restore(ctx, snapshot.RestoreOptions{Env: r.env, Cycle: rec.ID})
	if err != nil {
		t.Fatal(err)
	}
	last, err := snapshot.LatestRestore(ctx, r.env.Store, "unit")
	if err != nil || last.ID != res.ID || last.CycleID != rec.ID || last.HighWatermarks["orders"]["1"] != 20 {
		t.Fatalf("latest restore %+v err %v", last, err)
	}
}
