package ebs_test

import (
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/kbackup/kbackup/snapshot"
	"github.com/kbackup/kbackup/snapshot/ebs"
	"github.com/kbackup/kbackup/snapshot/ec2fake"
	"github.com/kbackup/kbackup/snapshot/providertest"
)

func TestProviderConformance(t *testing.T) {
	t.Parallel()
	providertest.Run(t, func(t *testing.T) providertest.Harness {
		f := ec2fake.New()
		f.PendingPolls = 1
		p := ebs.New(f, ebs.Options{Poll: time.Millisecond, VolumeTimeout: 5 * time.Second})
		vol := f.AddVolume("eu-west-1a", "i-1", "/dev/sdf", 100, types.VolumeTypeGp3, map[string]string{"kafka-broker": "1"})
		current := func(t *testing.T) string {
			id, ok := f.AttachedAt("i-1", "/dev/sdf")
			if !ok {
				t.Fatal("no volume attached at i-1 /dev/sdf")
			}
			return id
		}
		snapOf := func(id string) (types.Snapshot, bool) {
			for _, s := range f.Snapshots() {
				if *s.SnapshotId == id {
					return s, true
				}
			}
			return types.Snapshot{}, false
		}
		return providertest.Harness{
			Provider: p,
			Broker:   snapshot.BrokerConfig{ID: 1, VolumeTags: map[string]string{"kafka-broker": "1"}},
			Write:    func(t *testing.T, s string) { f.SetContent(current(t), s) },
			Read:     func(t *testing.T) string { return f.Content(current(t)) },
			Exists:   func(_ *testing.T, s snapshot.Snap) bool { _, ok := snapOf(s.ID); return ok },
			MarkedFailed: func(_ *testing.T, s snapshot.Snap) bool {
				sn, ok := snapOf(s.ID)
				return ok && ec2fake.Tags(sn.Tags)[ebs.TagState] == "failed"
			},
			FailNextSnapshot: func(*testing.T, string) { f.FailVolumes[vol] = true },
		}
	})
}
