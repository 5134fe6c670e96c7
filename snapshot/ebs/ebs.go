// Package ebs is the snapshot provider for AWS EBS volumes: discovery by
// volume ids or tags, snapshots tagged with their cycle (CreateSnapshot per
// volume, or CreateSnapshots for a crash-consistent set of one instance's
// volumes in hot mode), waiting for completion, and restore by creating new
// volumes from the snapshots in the original availability zone with the
// original type, size, IOPS, throughput and tags, attached at the original
// device while the old volumes are detached, tagged and kept for rollback.
package ebs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/kbackup/kbackup/snapshot"
)

// API is the part of the EC2 client the provider uses; *ec2.Client
// implements it, snapshot/ec2fake fakes it for unit tests.
type API interface {
	DescribeVolumes(ctx context.Context, in *ec2.DescribeVolumesInput, opts ...func(*ec2.Options)) (*ec2.DescribeVolumesOutput, error)
	CreateSnapshot(ctx context.Context, in *ec2.CreateSnapshotInput, opts ...func(*ec2.Options)) (*ec2.CreateSnapshotOutput, error)
	CreateSnapshots(ctx context.Context, in *ec2.CreateSnapshotsInput, opts ...func(*ec2.Options)) (*ec2.CreateSnapshotsOutput, error)
	DescribeSnapshots(ctx context.Context, in *ec2.DescribeSnapshotsInput, opts ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error)
	CreateTags(ctx context.Context, in *ec2.CreateTagsInput, opts ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
	DeleteSnapshot(ctx context.Context, in *ec2.DeleteSnapshotInput, opts ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error)
	CreateVolume(ctx context.Context, in *ec2.CreateVolumeInput, opts ...func(*ec2.Options)) (*ec2.CreateVolumeOutput, error)
	AttachVolume(ctx context.Context, in *ec2.AttachVolumeInput, opts ...func(*ec2.Options)) (*ec2.AttachVolumeOutput, error)
	DetachVolume(ctx context.Context, in *ec2.DetachVolumeInput, opts ...func(*ec2.Options)) (*ec2.DetachVolumeOutput, error)
}

var _ API = (*ec2.Client)(nil)

// Tag keys the provider sets.
const (
	TagCluster    = "kbackup:cluster"
	TagCycle      = "kbackup:cycle"
	TagBroker     = "kbackup:broker"
	TagVolume     = "kbackup:volume"
	TagDevice     = "kbackup:device"
	TagState      = "kbackup:state"
	TagRestoredOf = "kbackup:restored-from-cycle"
	TagRestoredSn = "kbackup:restored-from-snapshot"
	TagRollback   = "kbackup:rollback-for-cycle"
	TagReplacedBy = "kbackup:replaced-by"
	TagDetached   = "kbackup:detached-from"
)

const gib = 1 << 30

// Options configure the provider.
type Options struct {
	// Poll is the interval between Describe calls while waiting; 0 = 5s.
	Poll time.Duration
	// VolumeTimeout bounds waiting for one volume state change; 0 = 10m.
	VolumeTimeout time.Duration
	// Logger receives progress; nil discards.
	Logger *slog.Logger
}

// Provider is the EBS provider.
type Provider struct {
	api API
	o   Options
}

var _ snapshot.Provider = (*Provider)(nil)

// New returns a provider using api.
func New(api API, o Options) *Provider {
	if o.Poll <= 0 {
		o.Poll = 5 * time.Second
	}
	if o.VolumeTimeout <= 0 {
		o.VolumeTimeout = 10 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Provider{api: api, o: o}
}

// NewFromConfig builds the EC2 client from the standard AWS chain with the
// configured region and endpoint.
func NewFromConfig(ctx context.Context, c snapshot.EBSConfig, log *slog.Logger) (*Provider, error) {
	var lo []func(*awsconfig.LoadOptions) error
	if c.Region != "" {
		lo = append(lo, awsconfig.WithRegion(c.Region))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, lo...)
	if err != nil {
		return nil, fmt.Errorf("ebs provider: aws config: %w", err)
	}
	cl := ec2.NewFromConfig(cfg, func(o *ec2.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
		}
	})
	return New(cl, Options{Poll: time.Duration(c.PollInterval), Logger: log}), nil
}

// Name implements snapshot.Provider.
func (p *Provider) Name() string { return "ebs" }

// Discover implements snapshot.Provider. Every volume must be attached
// (its instance and device are where a restore attaches the new volume).
func (p *Provider) Discover(ctx context.Context, b snapshot.BrokerConfig) ([]snapshot.Volume, error) {
	in := &ec2.DescribeVolumesInput{}
	if len(b.Volumes) > 0 {
		in.VolumeIds = b.Volumes
	} else {
		keys := make([]string, 0, len(b.VolumeTags))
		for k := range b.VolumeTags {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			in.Filters = append(in.Filters, types.Filter{Name: aws.String("tag:" + k), Values: []string{b.VolumeTags[k]}})
		}
	}
	vs, err := p.describeVolumes(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("describe volumes: %w", err)
	}
	out := make([]snapshot.Volume, 0, len(vs))
	for _, v := range vs {
		sv := fromEC2(v)
		if sv.Instance == "" {
			return nil, fmt.Errorf("volume %s is not attached to an instance", sv.ID)
		}
		out = append(out, sv)
	}
	if len(b.Volumes) > 0 && len(out) != len(b.Volumes) {
		return nil, fmt.Errorf("found %d of the %d configured volumes %v", len(out), len(b.Volumes), b.Volumes)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out, nil
}

func (p *Provider) describeVolumes(ctx context.Context, in *ec2.DescribeVolumesInput) ([]types.Volume, error) {
	var out []types.Volume
	for {
		res, err := p.api.DescribeVolumes(ctx, in)
		if err != nil {
			return nil, err
		}
		out = append(out, res.Volumes...)
		if res.NextToken == nil || *res.NextToken == "" {
			return out, nil
		}
		in.NextToken = res.NextToken
	}
}

func fromEC2(v types.Volume) snapshot.Volume {
	sv := snapshot.Volume{
		ID: aws.ToString(v.VolumeId), Zone: aws.ToString(v.AvailabilityZone), Type: string(v.VolumeType),
		SizeGiB: aws.ToInt32(v.Size), IOPS: aws.ToInt32(v.Iops), Throughput: aws.ToInt32(v.Throughput),
	}
	for _, a := range v.Attachments {
		if a.State == types.VolumeAttachmentStateAttached || a.State == types.VolumeAttachmentStateAttaching {
			sv.Instance, sv.Device = aws.ToString(a.InstanceId), aws.ToString(a.Device)
		}
	}
	for _, t := range v.Tags {
		k := aws.ToString(t.Key)
		if len(k) >= 4 && k[:4] == "aws:" { // reserved, cannot be set
			continue
		}
		if sv.Tags == nil {
			sv.Tags = map[string]string{}
		}
		sv.Tags[k] = aws.ToString(t.Value)
	}
	return sv
}

func tagList(m map[string]string) []types.Tag {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]types.Tag, 0, len(keys))
	for _, k := range keys {
		out = append(out, types.Tag{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return out
}

func snapTags(req snapshot.SnapRequest, v snapshot.Volume) map[string]string {
	t := map[string]string{}
	for k, val := range req.Tags {
		t[k] = val
	}
	t[TagCluster], t[TagCycle], t[TagBroker] = req.Cluster, req.Cycle, strconv.Itoa(int(req.Broker))
	t[TagVolume], t[TagDevice] = v.ID, v.Device
	t["Name"] = fmt.Sprintf("kbackup-%s-%s-broker%d-%s", req.Cluster, req.Cycle, req.Broker, v.ID)
	return t
}

// Snapshot implements snapshot.Provider.
func (p *Provider) Snapshot(ctx context.Context, req snapshot.SnapRequest) ([]snapshot.Snap, error) {
	if req.Together && len(req.Volumes) > 1 {
		return p.snapshotTogether(ctx, req)
	}
	var out []snapshot.Snap
	for _, v := range req.Volumes {
		res, err := p.api.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{
			VolumeId:          aws.String(v.ID),
			Description:       aws.String(fmt.Sprintf("kbackup cycle %s of %s, broker %d", req.Cycle, req.Cluster, req.Broker)),
			TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeSnapshot, Tags: tagList(snapTags(req, v))}},
		})
		if err != nil {
			return out, fmt.Errorf("create snapshot of %s: %w", v.ID, err)
		}
		out = append(out, snapshot.Snap{Volume: v, ID: aws.ToString(res.SnapshotId), State: stateOf(string(res.State)),
			Bytes: int64(v.SizeGiB) * gib, Message: aws.ToString(res.StateMessage)})
	}
	return out, nil
}

// snapshotTogether takes one crash-consistent set of an instance's volumes.
func (p *Provider) snapshotTogether(ctx context.Context, req snapshot.SnapRequest) ([]snapshot.Snap, error) {
	inst := req.Volumes[0].Instance
	want := map[string]snapshot.Volume{}
	for _, v := range req.Volumes {
		if v.Instance != inst {
			return nil, fmt.Errorf("broker %d: volumes on several instances (%s, %s) cannot be snapshot together", req.Broker, inst, v.Instance)
		}
		want[v.ID] = v
	}
	attached, err := p.describeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{
		{Name: aws.String("attachment.instance-id"), Values: []string{inst}}}})
	if err != nil {
		return nil, fmt.Errorf("describe volumes of %s: %w", inst, err)
	}
	// Kafka data is never on the boot volume: it is excluded, and so is
	// every other attached volume that is not one of this broker's.
	var exclude []string
	for _, v := range attached {
		if _, ok := want[aws.ToString(v.VolumeId)]; !ok {
			exclude = append(exclude, aws.ToString(v.VolumeId))
		}
	}
	common := snapTags(req, snapshot.Volume{})
	delete(common, TagVolume)
	delete(common, TagDevice)
	res, err := p.api.CreateSnapshots(ctx, &ec2.CreateSnapshotsInput{
		InstanceSpecification: &types.InstanceSpecification{InstanceId: aws.String(inst),
			ExcludeBootVolume: aws.Bool(true), ExcludeDataVolumeIds: exclude},
		Description:       aws.String(fmt.Sprintf("kbackup cycle %s of %s, broker %d", req.Cycle, req.Cluster, req.Broker)),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeSnapshot, Tags: tagList(common)}},
	})
	if err != nil {
		return nil, fmt.Errorf("create snapshots of %s: %w", inst, err)
	}
	var out []snapshot.Snap
	for _, s := range res.Snapshots {
		v, ok := want[aws.ToString(s.VolumeId)]
		if !ok {
			continue
		}
		out = append(out, snapshot.Snap{Volume: v, ID: aws.ToString(s.SnapshotId), State: stateOf(string(s.State)), Bytes: int64(v.SizeGiB) * gib})
		if _, err := p.api.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{aws.ToString(s.SnapshotId)},
			Tags: tagList(snapTags(req, v))}); err != nil {
			return out, fmt.Errorf("tag snapshot %s: %w", aws.ToString(s.SnapshotId), err)
		}
	}
	if len(out) != len(req.Volumes) {
		return out, fmt.Errorf("create snapshots of %s: got %d snapshots for %d volumes", inst, len(out), len(req.Volumes))
	}
	return out, nil
}

func stateOf(s string) string {
	switch s {
	case string(types.SnapshotStateCompleted):
		return snapshot.SnapCompleted
	case string(types.SnapshotStateError):
		return snapshot.SnapError
	default:
		return snapshot.SnapPending
	}
}

// Wait implements snapshot.Provider: DescribeSnapshots every Poll until all
// are completed or one is in error.
func (p *Provider) Wait(ctx context.Context, snaps []snapshot.Snap) ([]snapshot.Snap, error) {
	out := append([]snapshot.Snap(nil), snaps...)
	if len(out) == 0 {
		return out, nil
	}
	ids := make([]string, len(out))
	for i, s := range out {
		ids[i] = s.ID
	}
	for {
		res, err := p.api.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: ids})
		if err != nil {
			return out, fmt.Errorf("describe snapshots: %w", err)
		}
		byID := map[string]types.Snapshot{}
		for _, s := range res.Snapshots {
			byID[aws.ToString(s.SnapshotId)] = s
		}
		done := true
		for i := range out {
			s, ok := byID[out[i].ID]
			if !ok {
				return out, fmt.Errorf("%w: snapshot %s of %s disappeared", snapshot.ErrSnapshotFailed, out[i].ID, out[i].Volume.ID)
			}
			out[i].State, out[i].Message = stateOf(string(s.State)), aws.ToString(s.StateMessage)
			switch out[i].State {
			case snapshot.SnapError:
				return out, fmt.Errorf("%w: snapshot %s of %s: %s", snapshot.ErrSnapshotFailed, out[i].ID, out[i].Volume.ID, out[i].Message)
			case snapshot.SnapPending:
				done = false
			}
		}
		if done {
			return out, nil
		}
		p.o.Logger.Debug("waiting for snapshots", "snapshots", ids)
		select {
		case <-ctx.Done():
			return out, fmt.Errorf("snapshots not completed: %w", ctx.Err())
		case <-time.After(p.o.Poll):
		}
	}
}

// MarkFailed implements snapshot.Provider with the tag kbackup:state=failed.
func (p *Provider) MarkFailed(ctx context.Context, snaps []snapshot.Snap) error {
	var ids []string
	for _, s := range snaps {
		if s.ID != "" {
			ids = append(ids, s.ID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	_, err := p.api.CreateTags(ctx, &ec2.CreateTagsInput{Resources: ids,
		Tags: []types.Tag{{Key: aws.String(TagState), Value: aws.String("failed")}}})
	if err != nil {
		return fmt.Errorf("tag snapshots failed: %w", err)
	}
	return nil
}

// Delete implements snapshot.Provider.
func (p *Provider) Delete(ctx context.Context, snaps []snapshot.Snap) error {
	var errs []error
	for _, s := range snaps {
		if s.ID == "" {
			continue
		}
		_, err := p.api.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(s.ID)})
		if err != nil && !notFound(err) {
			errs = append(errs, fmt.Errorf("delete snapshot %s: %w", s.ID, err))
		}
	}
	return errors.Join(errs...)
}

func notFound(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && (ae.ErrorCode() == "InvalidSnapshot.NotFound" || ae.ErrorCode() == "InvalidVolume.NotFound")
}
