// Package ec2fake is an in-memory EC2 for unit tests of the ebs provider:
// volumes with attachments, snapshots that stay pending for a number of
// DescribeSnapshots calls and then complete (or fail), volume state
// changes that take one DescribeVolumes call, tags, the filters the
// provider uses, and injectable API errors.
package ec2fake

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

// EC2 is the fake. Its zero value is not usable; use New.
type EC2 struct {
	mu    sync.Mutex
	n     int
	vols  map[string]*types.Volume
	snaps map[string]*snap
	// next states of volumes in transition (applied at the next describe).
	pendingVol map[string]types.VolumeState
	errs       map[string][]error
	// PendingPolls is how many DescribeSnapshots calls a new snapshot stays
	// pending for (default 2).
	PendingPolls int
	// FailVolumes makes snapshots of these volume ids end in state error.
	FailVolumes map[string]bool
	// Calls counts calls per operation name.
	Calls map[string]int
	// content is a stand-in for the volumes' data: a snapshot copies its
	// volume's content when it is created, a volume created from a
	// snapshot starts with the snapshot's (SetContent, Content).
	content map[string]string
}

type snap struct {
	s       types.Snapshot
	polls   int
	content string
}

// New returns an empty fake.
func New() *EC2 {
	return &EC2{vols: map[string]*types.Volume{}, snaps: map[string]*snap{}, pendingVol: map[string]types.VolumeState{},
		errs: map[string][]error{}, PendingPolls: 2, FailVolumes: map[string]bool{}, Calls: map[string]int{}, content: map[string]string{}}
}

// SetContent sets the data a volume holds (see EC2.content).
func (f *EC2) SetContent(volID, content string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.content[volID] = content
}

// Content returns the data a volume holds.
func (f *EC2) Content(volID string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.content[volID]
}

// AttachedAt returns the volume attached to instance at device.
func (f *EC2) AttachedAt(instance, device string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, v := range f.vols {
		for _, a := range v.Attachments {
			if aws.ToString(a.InstanceId) == instance && aws.ToString(a.Device) == device {
				return id, true
			}
		}
	}
	return "", false
}

// APIError returns a smithy API error with the given code, as the SDK does.
func APIError(code, msg string) error { return &smithy.GenericAPIError{Code: code, Message: msg} }

// FailNext makes the next call(s) of op (e.g. "CreateSnapshot") return err, once per entry.
func (f *EC2) FailNext(op string, errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs[op] = append(f.errs[op], errs...)
}

func (f *EC2) call(op string) error {
	f.Calls[op]++
	if q := f.errs[op]; len(q) > 0 {
		f.errs[op] = q[1:]
		return q[0]
	}
	return nil
}

func (f *EC2) id(prefix string) string {
	f.n++
	return fmt.Sprintf("%s-%017x", prefix, f.n)
}

// AddVolume creates an in-use volume attached to instance at device.
func (f *EC2) AddVolume(zone, instance, device string, sizeGiB int32, vtype types.VolumeType, tags map[string]string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := f.id("vol")
	v := &types.Volume{VolumeId: aws.String(id), AvailabilityZone: aws.String(zone), Size: aws.Int32(sizeGiB),
		VolumeType: vtype, State: types.VolumeStateInUse, Tags: toTags(tags)}
	if vtype == types.VolumeTypeGp3 {
		v.Iops, v.Throughput = aws.Int32(3000), aws.Int32(125)
	}
	if instance != "" {
		v.Attachments = []types.VolumeAttachment{{InstanceId: aws.String(instance), Device: aws.String(device),
			VolumeId: aws.String(id), State: types.VolumeAttachmentStateAttached}}
	} else {
		v.State = types.VolumeStateAvailable
	}
	f.vols[id] = v
	return id
}

// Volume returns a copy of volume id.
func (f *EC2) Volume(id string) (types.Volume, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vols[id]
	if !ok {
		return types.Volume{}, false
	}
	return *v, true
}

// Snapshots returns copies of every snapshot.
func (f *EC2) Snapshots() []types.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []types.Snapshot
	for _, s := range f.snaps {
		out = append(out, s.s)
	}
	return out
}

// Tags returns a resource's tags as a map.
func Tags(ts []types.Tag) map[string]string {
	m := map[string]string{}
	for _, t := range ts {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

func toTags(m map[string]string) []types.Tag {
	var out []types.Tag
	for k, v := range m {
		out = append(out, types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	return out
}

func specTags(specs []types.TagSpecification) []types.Tag {
	var out []types.Tag
	for _, s := range specs {
		out = append(out, s.Tags...)
	}
	return out
}

func matches(v *types.Volume, fs []types.Filter) bool {
	for _, f := range fs {
		name := aws.ToString(f.Name)
		var got []string
		switch {
		case strings.HasPrefix(name, "tag:"):
			if val, ok := Tags(v.Tags)[strings.TrimPrefix(name, "tag:")]; ok {
				got = []string{val}
			}
		case name == "attachment.instance-id":
			for _, a := range v.Attachments {
				got = append(got, aws.ToString(a.InstanceId))
			}
		case name == "attachment.device":
			for _, a := range v.Attachments {
				got = append(got, aws.ToString(a.Device))
			}
		}
		ok := false
		for _, g := range got {
			for _, w := range f.Values {
				ok = ok || g == w
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// DescribeVolumes implements ebs.API. A volume in transition reaches its
// next state on the describe after the one that first sees it.
func (f *EC2) DescribeVolumes(_ context.Context, in *ec2.DescribeVolumesInput, _ ...func(*ec2.Options)) (*ec2.DescribeVolumesOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("DescribeVolumes"); err != nil {
		return nil, err
	}
	out := &ec2.DescribeVolumesOutput{}
	if len(in.VolumeIds) > 0 {
		for _, id := range in.VolumeIds {
			v, ok := f.vols[id]
			if !ok {
				return nil, APIError("InvalidVolume.NotFound", "The volume '"+id+"' does not exist.")
			}
			if next, ok := f.pendingVol[id]; ok {
				v.State = next
				delete(f.pendingVol, id)
			}
			out.Volumes = append(out.Volumes, *v)
		}
		return out, nil
	}
	for _, v := range f.vols {
		if matches(v, in.Filters) {
			out.Volumes = append(out.Volumes, *v)
		}
	}
	return out, nil
}

func (f *EC2) newSnap(volID, desc string, tags []types.Tag) (*snap, error) {
	v, ok := f.vols[volID]
	if !ok {
		return nil, APIError("InvalidVolume.NotFound", "The volume '"+volID+"' does not exist.")
	}
	s := &snap{s: types.Snapshot{SnapshotId: aws.String(f.id("snap")), VolumeId: aws.String(volID), VolumeSize: v.Size,
		State: types.SnapshotStatePending, Description: aws.String(desc), Tags: tags}, content: f.content[volID]}
	f.snaps[aws.ToString(s.s.SnapshotId)] = s
	return s, nil
}

// CreateSnapshot implements ebs.API.
func (f *EC2) CreateSnapshot(_ context.Context, in *ec2.CreateSnapshotInput, _ ...func(*ec2.Options)) (*ec2.CreateSnapshotOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("CreateSnapshot"); err != nil {
		return nil, err
	}
	s, err := f.newSnap(aws.ToString(in.VolumeId), aws.ToString(in.Description), specTags(in.TagSpecifications))
	if err != nil {
		return nil, err
	}
	return &ec2.CreateSnapshotOutput{SnapshotId: s.s.SnapshotId, VolumeId: s.s.VolumeId, State: s.s.State, VolumeSize: s.s.VolumeSize}, nil
}

// CreateSnapshots implements ebs.API (data volumes of the instance minus the excluded ones).
func (f *EC2) CreateSnapshots(_ context.Context, in *ec2.CreateSnapshotsInput, _ ...func(*ec2.Options)) (*ec2.CreateSnapshotsOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("CreateSnapshots"); err != nil {
		return nil, err
	}
	inst := aws.ToString(in.InstanceSpecification.InstanceId)
	excl := map[string]bool{}
	for _, id := range in.InstanceSpecification.ExcludeDataVolumeIds {
		excl[id] = true
	}
	out := &ec2.CreateSnapshotsOutput{}
	for id, v := range f.vols {
		if excl[id] || !matches(v, []types.Filter{{Name: aws.String("attachment.instance-id"), Values: []string{inst}}}) {
			continue
		}
		s, err := f.newSnap(id, aws.ToString(in.Description), specTags(in.TagSpecifications))
		if err != nil {
			return nil, err
		}
		out.Snapshots = append(out.Snapshots, types.SnapshotInfo{SnapshotId: s.s.SnapshotId, VolumeId: s.s.VolumeId, State: s.s.State})
	}
	return out, nil
}

// DescribeSnapshots implements ebs.API; each call advances pending snapshots.
func (f *EC2) DescribeSnapshots(_ context.Context, in *ec2.DescribeSnapshotsInput, _ ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("DescribeSnapshots"); err != nil {
		return nil, err
	}
	out := &ec2.DescribeSnapshotsOutput{}
	for _, id := range in.SnapshotIds {
		s, ok := f.snaps[id]
		if !ok {
			return nil, APIError("InvalidSnapshot.NotFound", "The snapshot '"+id+"' does not exist.")
		}
		if s.s.State == types.SnapshotStatePending {
			s.polls++
			if s.polls >= f.PendingPolls {
				s.s.State = types.SnapshotStateCompleted
				if f.FailVolumes[aws.ToString(s.s.VolumeId)] {
					s.s.State, s.s.StateMessage = types.SnapshotStateError, aws.String("fake: volume read error")
				}
			}
		}
		out.Snapshots = append(out.Snapshots, s.s)
	}
	return out, nil
}

// CreateTags implements ebs.API (snapshots and volumes).
func (f *EC2) CreateTags(_ context.Context, in *ec2.CreateTagsInput, _ ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("CreateTags"); err != nil {
		return nil, err
	}
	merge := func(have []types.Tag) []types.Tag {
		m := Tags(have)
		for k, v := range Tags(in.Tags) {
			m[k] = v
		}
		return toTags(m)
	}
	for _, id := range in.Resources {
		if s, ok := f.snaps[id]; ok {
			s.s.Tags = merge(s.s.Tags)
		} else if v, ok := f.vols[id]; ok {
			v.Tags = merge(v.Tags)
		} else {
			return nil, APIError("InvalidID", "The ID '"+id+"' is not valid")
		}
	}
	return &ec2.CreateTagsOutput{}, nil
}

// DeleteSnapshot implements ebs.API.
func (f *EC2) DeleteSnapshot(_ context.Context, in *ec2.DeleteSnapshotInput, _ ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("DeleteSnapshot"); err != nil {
		return nil, err
	}
	id := aws.ToString(in.SnapshotId)
	if _, ok := f.snaps[id]; !ok {
		return nil, APIError("InvalidSnapshot.NotFound", "The snapshot '"+id+"' does not exist.")
	}
	delete(f.snaps, id)
	return &ec2.DeleteSnapshotOutput{}, nil
}

// CreateVolume implements ebs.API: the volume is "creating" until the next describe.
func (f *EC2) CreateVolume(_ context.Context, in *ec2.CreateVolumeInput, _ ...func(*ec2.Options)) (*ec2.CreateVolumeOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("CreateVolume"); err != nil {
		return nil, err
	}
	sid := aws.ToString(in.SnapshotId)
	s, ok := f.snaps[sid]
	if !ok || s.s.State != types.SnapshotStateCompleted {
		return nil, APIError("InvalidSnapshot.NotFound", "snapshot '"+sid+"' not found or not completed")
	}
	id := f.id("vol")
	size := in.Size
	if size == nil {
		size = s.s.VolumeSize
	}
	f.vols[id] = &types.Volume{VolumeId: aws.String(id), AvailabilityZone: in.AvailabilityZone, Size: size,
		VolumeType: in.VolumeType, Iops: in.Iops, Throughput: in.Throughput, SnapshotId: aws.String(sid),
		State: types.VolumeStateCreating, Tags: specTags(in.TagSpecifications)}
	f.pendingVol[id] = types.VolumeStateAvailable
	f.content[id] = s.content
	return &ec2.CreateVolumeOutput{VolumeId: aws.String(id), State: types.VolumeStateCreating}, nil
}

// AttachVolume implements ebs.API.
func (f *EC2) AttachVolume(_ context.Context, in *ec2.AttachVolumeInput, _ ...func(*ec2.Options)) (*ec2.AttachVolumeOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("AttachVolume"); err != nil {
		return nil, err
	}
	id, inst, dev := aws.ToString(in.VolumeId), aws.ToString(in.InstanceId), aws.ToString(in.Device)
	v, ok := f.vols[id]
	if !ok {
		return nil, APIError("InvalidVolume.NotFound", "The volume '"+id+"' does not exist.")
	}
	if v.State != types.VolumeStateAvailable {
		return nil, APIError("IncorrectState", "volume "+id+" is "+string(v.State))
	}
	for _, o := range f.vols {
		for _, a := range o.Attachments {
			if aws.ToString(a.InstanceId) == inst && aws.ToString(a.Device) == dev {
				return nil, APIError("InvalidParameterValue", "device "+dev+" is already in use on "+inst)
			}
		}
	}
	v.Attachments = []types.VolumeAttachment{{InstanceId: aws.String(inst), Device: aws.String(dev), VolumeId: aws.String(id),
		State: types.VolumeAttachmentStateAttached}}
	f.pendingVol[id] = types.VolumeStateInUse
	return &ec2.AttachVolumeOutput{VolumeId: aws.String(id), State: types.VolumeAttachmentStateAttaching}, nil
}

// DetachVolume implements ebs.API.
func (f *EC2) DetachVolume(_ context.Context, in *ec2.DetachVolumeInput, _ ...func(*ec2.Options)) (*ec2.DetachVolumeOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("DetachVolume"); err != nil {
		return nil, err
	}
	id := aws.ToString(in.VolumeId)
	v, ok := f.vols[id]
	if !ok {
		return nil, APIError("InvalidVolume.NotFound", "The volume '"+id+"' does not exist.")
	}
	if len(v.Attachments) == 0 {
		return nil, APIError("IncorrectState", "volume "+id+" is not attached")
	}
	v.Attachments = nil
	f.pendingVol[id] = types.VolumeStateAvailable
	return &ec2.DetachVolumeOutput{VolumeId: aws.String(id), State: types.VolumeAttachmentStateDetaching}, nil
}
