package snapshot

import (
	"context"
	"errors"
)

// Volume is one volume (EBS) or data directory (dir) of a broker, with
// what a restore needs to recreate it where it was.
type Volume struct {
	// ID is the EBS volume id, or the directory path for dir.
	ID string `json:"id"`
	// Instance and Device are the EBS attachment (instance id, device name).
	Instance string `json:"instance,omitempty"`
	Device   string `json:"device,omitempty"`
	// Zone is the EBS availability zone.
	Zone string `json:"zone,omitempty"`
	// Type, SizeGiB, IOPS and Throughput (MiB/s) are the EBS volume's.
	Type       string `json:"type,omitempty"`
	SizeGiB    int32  `json:"size_gib,omitempty"`
	IOPS       int32  `json:"iops,omitempty"`
	Throughput int32  `json:"throughput,omitempty"`
	// Tags are the volume's own tags (EBS), restored onto new volumes.
	Tags map[string]string `json:"tags,omitempty"`
}

// Snap is one snapshot of one volume.
type Snap struct {
	// Volume is the volume it was taken of.
	Volume Volume `json:"volume"`
	// ID is the EBS snapshot id, or the snapshot directory for dir.
	ID string `json:"snapshot_id"`
	// State is pending, completed or error.
	State string `json:"state"`
	// Bytes is the snapshot's size (EBS: the volume's provisioned size;
	// dir: the bytes copied).
	Bytes int64 `json:"bytes"`
	// Message says why a snapshot is in state error.
	Message string `json:"message,omitempty"`
}

// Snapshot states.
const (
	SnapPending   = "pending"
	SnapCompleted = "completed"
	SnapError     = "error"
)

// SnapRequest asks for snapshots of one broker's volumes.
type SnapRequest struct {
	// Cluster and Cycle name the cycle (snapshot tags and names).
	Cluster, Cycle string
	// Broker is the broker the volumes belong to.
	Broker int32
	// Volumes are the broker's volumes (from Discover).
	Volumes []Volume
	// Together asks for one crash-consistent multi-volume snapshot set
	// (hot mode, broker running).
	Together bool
	// Tags are added to the snapshots.
	Tags map[string]string
}

// Restored is one volume put back from a snapshot, with what Rollback
// needs to undo it.
type Restored struct {
	// Snap is the snapshot the volume was restored from.
	Snap Snap `json:"snap"`
	// New is the restored volume (EBS: the new volume id; dir: the path).
	New string `json:"new"`
	// Old is what was replaced and kept for rollback (EBS: the detached
	// volume id; dir: the directory the old data was moved to).
	Old string `json:"old"`
}

// Provider takes and restores volume snapshots. Implementations: package
// snapshot/ebs and snapshot/dirprov; snapshot/setup.Provider builds one
// from a Config; snapshot/providertest is the conformance suite both
// pass. Every method must be safe for concurrent use on different brokers.
type Provider interface {
	// Name is "ebs" or "dir".
	Name() string
	// Discover returns the broker's volumes (configured ids or tag filters).
	Discover(ctx context.Context, b BrokerConfig) ([]Volume, error)
	// Snapshot starts snapshots of req.Volumes and returns once their
	// point in time is fixed (the broker may be started again then); the
	// returned snapshots may still be pending.
	Snapshot(ctx context.Context, req SnapRequest) ([]Snap, error)
	// Wait polls until every snapshot is completed or one is in error
	// (then ErrSnapshotFailed), bounded by ctx. It returns the snapshots
	// with their final states.
	Wait(ctx context.Context, snaps []Snap) ([]Snap, error)
	// MarkFailed tags snapshots of a failed cycle so they are recognised
	// (prune deletes them with the cycle).
	MarkFailed(ctx context.Context, snaps []Snap) error
	// Delete deletes snapshots; a missing snapshot is not an error.
	Delete(ctx context.Context, snaps []Snap) error
	// Restore replaces a stopped broker's volumes with the snapshots',
	// keeping the old ones for rollback. On error, what was already
	// restored is returned with the error so it can be rolled back.
	Restore(ctx context.Context, cluster, cycle string, broker int32, snaps []Snap) ([]Restored, error)
	// Rollback undoes Restore: the old volumes go back in place.
	Rollback(ctx context.Context, broker int32, done []Restored) error
}

// ErrSnapshotFailed is returned (wrapped) when a snapshot ends in state error.
var ErrSnapshotFailed = errors.New("snapshot failed")
