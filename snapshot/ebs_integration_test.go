//go:build integration

package snapshot_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/kbackup/kbackup/snapshot"
	"github.com/kbackup/kbackup/snapshot/ebs"
	"github.com/kbackup/kbackup/store/filestore"
	"github.com/kbackup/kbackup/testenv"
)

// TestEBSAgainstMoto runs the ebs provider against the EC2 API of
// moto_server: volumes found by tag, a cold cycle (CreateSnapshot with
// cycle tags, wait until completed), a hot cycle (CreateSnapshots per
// instance), restore (new volumes from the snapshots in the original zone
// with the original type and size, old volumes detached, tagged and kept),
// and prune deleting snapshots. Brokers are the in-memory fake: moto has
// no Kafka.
func TestEBSAgainstMoto(t *testing.T) {
	m := testenv.UseMoto(t)
	ctx := context.Background()
	api := ec2.New(ec2.Options{Region: m.Region, BaseEndpoint: aws.String(m.Endpoint),
		Credentials: credentials.NewStaticCredentialsProvider(m.AccessKey, m.SecretKey, "")})
	imgs, err := api.DescribeImages(ctx, &ec2.DescribeImagesInput{})
	if err != nil || len(imgs.Images) == 0 {
		t.Fatalf("moto images: %v (%d)", err, len(imgs.Images))
	}
	zone := m.Region + "a"
	tagKey := fmt.Sprintf("kafka-broker-%d", time.Now().UnixNano()) // unique per run on a shared moto
	orig := map[int32]string{}
	inst := map[int32]string{}
	for id := int32(1); id <= 3; id++ {
		ri, err := api.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: imgs.Images[0].ImageId, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
			InstanceType: types.InstanceTypeT3Medium, Placement: &types.Placement{AvailabilityZone: aws.String(zone)}})
		if err != nil {
			t.Fatal(err)
		}
		inst[id] = aws.ToString(ri.Instances[0].InstanceId)
		cv, err := api.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String(zone), Size: aws.Int32(20), VolumeType: types.VolumeTypeGp3,
			TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeVolume, Tags: []types.Tag{
				{Key: aws.String(tagKey), Value: aws.String(fmt.Sprint(id))}, {Key: aws.String("Name"), Value: aws.String(fmt.Sprintf("kafka-%d", id))}}}}})
		if err != nil {
			t.Fatal(err)
		}
		orig[id] = aws.ToString(cv.VolumeId)
		if _, err := api.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: cv.VolumeId, InstanceId: aws.String(inst[id]), Device: aws.String("/dev/sdf")}); err != nil {
			t.Fatal(err)
		}
	}
	y := fmt.Sprintf(`
cluster: moto
store: file:///unused
kafka: {brokers: ["127.0.0.1:9092"]}
provider: {type: ebs, ebs: {endpoint: %q, region: %q}}
hooks: {stop: "false", start: "false", status: "false"}
brokers:
  - {id: 1, host: kafka-1, volume_tags: {%[3]s: "1"}}
  - {id: 2, host: kafka-2, volume_tags: {%[3]s: "2"}}
  - {id: 3, host: kafka-3, volume_tags: {%[3]s: "3"}}
retention: {keep_last: 1}
timeouts: {stop: 2s, start: 2s, healthy: 5s, snapshot: 60s}
`, m.Endpoint, m.Region, tagKey)
	cfg, err := snapshot.ParseConfig([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	st, err := filestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fb := newFakeBrokers(1, 2, 3)
	env := snapshot.Env{Config: cfg, Store: st, Cluster: fb, Control: fb.Control(), Logger: testLogger(t), Poll: 10 * time.Millisecond,
		Provider: ebs.New(api, ebs.Options{Poll: 100 * time.Millisecond})}

	cold, err := snapshot.Run(ctx, snapshot.RunOptions{Env: env, Mode: snapshot.ModeCold})
	if err != nil {
		t.Fatal(err)
	}
	if len(cold.Snaps()) != 3 {
		t.Fatalf("%d snapshots", len(cold.Snaps()))
	}
	for _, s := range cold.Snaps() {
		ds, err := api.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{s.ID}})
		if err != nil || len(ds.Snapshots) != 1 {
			t.Fatalf("describe %s: %v", s.ID, err)
		}
		tags := tagMap(ds.Snapshots[0].Tags)
		if ds.Snapshots[0].State != types.SnapshotStateCompleted || tags[ebs.TagCycle] != cold.ID || tags[ebs.TagVolume] != s.Volume.ID {
			t.Fatalf("snapshot %s: state %s tags %v", s.ID, ds.Snapshots[0].State, tags)
		}
	}
	hot, err := snapshot.Run(ctx, snapshot.RunOptions{Env: env, Mode: snapshot.ModeHot})
	if err != nil {
		t.Fatal(err)
	}

	res, err := snapshot.Restore(ctx, snapshot.RestoreOptions{Env: env, Cycle: cold.ID})
	if err != nil {
		t.Fatal(err)
	}
	for id := int32(1); id <= 3; id++ {
		r := res.Restored[id]
		if len(r) != 1 || r[0].Old != orig[id] || r[0].New == orig[id] {
			t.Fatalf("broker %d restored %+v", id, r)
		}
		dv, err := api.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{r[0].New, r[0].Old}})
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range dv.Volumes {
			tags := tagMap(v.Tags)
			switch aws.ToString(v.VolumeId) {
			case r[0].New:
				if len(v.Attachments) != 1 || aws.ToString(v.Attachments[0].InstanceId) != inst[id] || aws.ToString(v.Attachments[0].Device) != "/dev/sdf" ||
					aws.ToString(v.AvailabilityZone) != zone || v.VolumeType != types.VolumeTypeGp3 || aws.ToInt32(v.Size) != 20 ||
					tags[ebs.TagRestoredOf] != cold.ID || tags["Name"] != fmt.Sprintf("kafka-%d", id) {
					t.Errorf("new volume %s: %+v tags %v", r[0].New, v.Attachments, tags)
				}
			case r[0].Old:
				if len(v.Attachments) != 0 || tags[ebs.TagRollback] != cold.ID || tags[ebs.TagReplacedBy] != r[0].New {
					t.Errorf("old volume %s: %+v tags %v", r[0].Old, v.Attachments, tags)
				}
			}
		}
	}

	// Prune (keep_last 1) deletes the older cold cycle's snapshots, keeps the hot one.
	if _, err := snapshot.Prune(ctx, snapshot.PruneOptions{Env: env, Confirm: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{cold.Snaps()[0].ID}}); err == nil {
		t.Errorf("snapshot %s of the pruned cycle still exists", cold.Snaps()[0].ID)
	}
	if _, err := api.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{hot.Snaps()[0].ID}}); err != nil {
		t.Errorf("snapshot of the kept cycle: %v", err)
	}
}

func tagMap(ts []types.Tag) map[string]string {
	m := map[string]string{}
	for _, t := range ts {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}
