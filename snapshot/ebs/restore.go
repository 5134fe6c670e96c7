package ebs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/kbackup/kbackup/snapshot"
)

// Restore implements snapshot.Provider: for each snapshot, a new volume in
// the original zone with the original type, size, IOPS, throughput and
// tags; the volume now at the original instance and device is detached,
// tagged kbackup:rollback-for-cycle and kept; the new one is attached there.
func (p *Provider) Restore(ctx context.Context, cluster, cycle string, broker int32, snaps []snapshot.Snap) ([]snapshot.Restored, error) {
	var done []snapshot.Restored
	for _, s := range snaps {
		r, err := p.restoreOne(ctx, cycle, s)
		if err != nil {
			return done, fmt.Errorf("volume %s from %s: %w", s.Volume.ID, s.ID, err)
		}
		p.o.Logger.Info("volume restored", "broker", broker, "snapshot", s.ID, "new", r.New, "old", r.Old, "device", s.Volume.Device)
		done = append(done, r)
	}
	return done, nil
}

func (p *Provider) restoreOne(ctx context.Context, cycle string, s snapshot.Snap) (snapshot.Restored, error) {
	v := s.Volume
	if v.Instance == "" || v.Device == "" {
		return snapshot.Restored{}, errors.New("the cycle record has no instance/device for the volume")
	}
	tags := map[string]string{}
	for k, val := range v.Tags {
		tags[k] = val
	}
	tags[TagRestoredOf], tags[TagRestoredSn] = cycle, s.ID
	in := &ec2.CreateVolumeInput{
		SnapshotId: aws.String(s.ID), AvailabilityZone: aws.String(v.Zone),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeVolume, Tags: tagList(tags)}},
	}
	if v.Type != "" {
		in.VolumeType = types.VolumeType(v.Type)
	}
	if v.SizeGiB > 0 {
		in.Size = aws.Int32(v.SizeGiB)
	}
	switch types.VolumeType(v.Type) {
	case types.VolumeTypeIo1, types.VolumeTypeIo2, types.VolumeTypeGp3:
		if v.IOPS > 0 {
			in.Iops = aws.Int32(v.IOPS)
		}
	}
	if types.VolumeType(v.Type) == types.VolumeTypeGp3 && v.Throughput > 0 {
		in.Throughput = aws.Int32(v.Throughput)
	}
	cv, err := p.api.CreateVolume(ctx, in)
	if err != nil {
		return snapshot.Restored{}, fmt.Errorf("create volume: %w", err)
	}
	newID := aws.ToString(cv.VolumeId)
	if err := p.waitVolume(ctx, newID, types.VolumeStateAvailable); err != nil {
		return snapshot.Restored{}, err
	}
	old, err := p.attachedAt(ctx, v.Instance, v.Device)
	if err != nil {
		return snapshot.Restored{}, err
	}
	if old != "" {
		if err := p.detach(ctx, old, v.Instance, v.Device); err != nil {
			return snapshot.Restored{}, err
		}
		if _, err := p.api.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{old}, Tags: tagList(map[string]string{
			TagRollback: cycle, TagReplacedBy: newID, TagDetached: v.Instance + ":" + v.Device,
		})}); err != nil {
			p.o.Logger.Warn("old volume not tagged for rollback", "volume", old, "err", err)
		}
	}
	if err := p.attach(ctx, newID, v.Instance, v.Device); err != nil {
		if old != "" {
			if rerr := p.attach(context.WithoutCancel(ctx), old, v.Instance, v.Device); rerr != nil {
				err = errors.Join(err, fmt.Errorf("re-attach old volume %s: %w", old, rerr))
			}
		}
		return snapshot.Restored{}, err
	}
	return snapshot.Restored{Snap: s, New: newID, Old: old}, nil
}

// Rollback implements snapshot.Provider: the restored volumes are detached
// (and kept) and the old ones attached again.
func (p *Provider) Rollback(ctx context.Context, _ int32, done []snapshot.Restored) error {
	var errs []error
	for _, r := range done {
		v := r.Snap.Volume
		if err := p.detach(ctx, r.New, v.Instance, v.Device); err != nil {
			errs = append(errs, err)
			continue
		}
		if r.Old != "" {
			if err := p.attach(ctx, r.Old, v.Instance, v.Device); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// attachedAt returns the volume attached at instance/device, or "".
func (p *Provider) attachedAt(ctx context.Context, instance, device string) (string, error) {
	vs, err := p.describeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{
		{Name: aws.String("attachment.instance-id"), Values: []string{instance}},
		{Name: aws.String("attachment.device"), Values: []string{device}},
	}})
	if err != nil {
		return "", fmt.Errorf("describe volume at %s:%s: %w", instance, device, err)
	}
	for _, v := range vs {
		for _, a := range v.Attachments {
			if aws.ToString(a.InstanceId) == instance && aws.ToString(a.Device) == device {
				return aws.ToString(v.VolumeId), nil
			}
		}
	}
	return "", nil
}

func (p *Provider) detach(ctx context.Context, id, instance, device string) error {
	if _, err := p.api.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(id),
		InstanceId: aws.String(instance), Device: aws.String(device)}); err != nil {
		return fmt.Errorf("detach %s: %w", id, err)
	}
	return p.waitVolume(ctx, id, types.VolumeStateAvailable)
}

func (p *Provider) attach(ctx context.Context, id, instance, device string) error {
	if _, err := p.api.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(id),
		InstanceId: aws.String(instance), Device: aws.String(device)}); err != nil {
		return fmt.Errorf("attach %s at %s:%s: %w", id, instance, device, err)
	}
	return p.waitVolume(ctx, id, types.VolumeStateInUse)
}

// waitVolume polls until volume id is in state want (bounded by VolumeTimeout).
func (p *Provider) waitVolume(ctx context.Context, id string, want types.VolumeState) error {
	ctx, cancel := context.WithTimeout(ctx, p.o.VolumeTimeout)
	defer cancel()
	for {
		res, err := p.api.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{id}})
		if err != nil {
			return fmt.Errorf("describe volume %s: %w", id, err)
		}
		if len(res.Volumes) == 1 {
			st := res.Volumes[0].State
			if st == want {
				return nil
			}
			if st == types.VolumeStateError {
				return fmt.Errorf("volume %s is in state error", id)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("volume %s not %s within %s: %w", id, want, p.o.VolumeTimeout, ctx.Err())
		case <-time.After(p.o.Poll):
		}
	}
}
