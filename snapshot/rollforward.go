package snapshot

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/kbackup/kbackup/store"
)

// What roll-forward (package replay, `kbackup restore --since-cycle ID
// --to TIME`) needs of a cycle: it replays archived records after the
// cycle's high watermark into a cluster restored from that cycle. The CLI
// loads the cycle with LoadCycle and checks Restorable; replay.RollForward
// takes it as a replay.Cycle (CycleID, KafkaClusterID, Complete,
// OffsetRange) and per partition asks OffsetRange: the restored log ends
// somewhere in [lo, hi]; it reads the live log end offset, refuses the
// partition when it is outside that range (offsets would not line up),
// and replays the archive from the live end offset.

// OffsetRange returns the range the restored log end of topic/partition
// lies in: lo is the high watermark recorded before the cycle, hi the one
// recorded after it (hi == lo when none was recorded after). ok is false
// when the cycle did not record the partition (it did not exist then).
func (r *CycleRecord) OffsetRange(topic string, partition int32) (lo, hi int64, ok bool) {
	lo, ok = r.HighWatermark(topic, partition)
	if !ok {
		return 0, 0, false
	}
	hi = lo
	if v, found := r.HighWatermarksAfter[topic][fmt.Sprint(partition)]; found && v > lo {
		hi = v
	}
	return lo, hi, true
}

// CycleID is the cycle's id (replay.Cycle).
func (r *CycleRecord) CycleID() string { return r.ID }

// KafkaClusterID is the id of the Kafka cluster the cycle was taken of, ""
// when not recorded (replay.Cycle).
func (r *CycleRecord) KafkaClusterID() string { return r.ClusterID }

// Complete is nil when every snapshot of the cycle completed, else an
// error wrapping ErrNotRestorable (replay.Cycle).
func (r *CycleRecord) Complete() error {
	if r.State != StateComplete {
		return fmt.Errorf("%w: cycle %s is %s, not complete", ErrNotRestorable, r.ID, r.State)
	}
	return nil
}

// Restorable reports whether the cycle may be restored (or rolled forward
// from) by a job configured for cluster: nil, or an error wrapping
// ErrNotRestorable that says why.
func (r *CycleRecord) Restorable(cluster string) error {
	if err := r.Complete(); err != nil {
		return err
	}
	if r.Cluster != cluster {
		return fmt.Errorf("%w: cycle %s is of cluster %q, not %q", ErrNotRestorable, r.ID, r.Cluster, cluster)
	}
	return nil
}

// LatestRestore returns the newest whole-cluster restore report of
// cluster, or an error wrapping store.ErrNotFound when there is none.
func LatestRestore(ctx context.Context, st store.Store, cluster string) (*RestoreResult, error) {
	keys, err := listJSON(ctx, st, clusterPrefix(cluster)+"restores/")
	if err != nil {
		return nil, fmt.Errorf("list restore reports: %w", err)
	}
	var best *RestoreResult
	for _, k := range keys {
		b, err := store.Get(ctx, st, k)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", k, err)
		}
		var r RestoreResult
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("decode %s: %w", k, err)
		}
		if best == nil || r.Finished.After(best.Finished) {
			best = &r
		}
	}
	if best == nil {
		return nil, fmt.Errorf("no restore report for cluster %s: %w", cluster, store.ErrNotFound)
	}
	return best, nil
}
