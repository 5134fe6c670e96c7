package ebs_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/kbackup/kbackup/snapshot"
	"github.com/kbackup/kbackup/snapshot/ebs"
	"github.com/kbackup/kbackup/snapshot/ec2fake"
)

var _ ebs.API = (*ec2fake.EC2)(nil)

func TestProviderEdges(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := ec2fake.New()
	p := ebs.New(f, ebs.Options{Poll: time.Millisecond, VolumeTimeout: time.Second})
	attached := f.AddVolume("z", "i-1", "/dev/sdf", 10, types.VolumeTypeIo2, nil)
	loose := f.AddVolume("z", "", "", 10, types.VolumeTypeGp2, nil)

	if _, err := p.Discover(ctx, snapshot.BrokerConfig{Volumes: []string{attached, loose}}); err == nil || !strings.Contains(err.Error(), "not attached") {
		t.Errorf("unattached volume: %v", err)
	}
	if _, err := p.Discover(ctx, snapshot.BrokerConfig{Volumes: []string{"vol-missing"}}); err == nil || !strings.Contains(err.Error(), "InvalidVolume.NotFound") {
		t.Errorf("missing volume: %v", err)
	}
	if vs, err := p.Discover(ctx, snapshot.BrokerConfig{VolumeTags: map[string]string{"none": "x"}}); err != nil || len(vs) != 0 {
		t.Errorf("no tag match: %v %v", vs, err)
	}
	vs, err := p.Discover(ctx, snapshot.BrokerConfig{Volumes: []string{attached}})
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := p.Snapshot(ctx, snapshot.SnapRequest{Cluster: "c", Cycle: "x", Broker: 1, Volumes: vs})
	if err != nil || snaps[0].State != snapshot.SnapPending || snaps[0].Bytes != 10<<30 {
		t.Fatalf("snaps %+v err %v", snaps, err)
	}
	// A transient API error while waiting is reported, not hidden.
	f.FailNext("DescribeSnapshots", ec2fake.APIError("RequestLimitExceeded", "throttled"))
	if _, err := p.Wait(ctx, snaps); err == nil || !strings.Contains(err.Error(), "RequestLimitExceeded") {
		t.Errorf("wait with an API error: %v", err)
	}
	// Bounded: a snapshot that stays pending ends with the context.
	f.PendingPolls = 1 << 30
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := p.Wait(wctx, snaps); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("wait past deadline: %v", err)
	}
	// Deleting twice is fine (the second finds nothing).
	if err := p.Delete(ctx, snaps); err != nil {
		t.Fatal(err)
	}
	if err := p.Delete(ctx, snaps); err != nil {
		t.Fatalf("second delete: %v", err)
	}
}
