package replay

import (
	"context"
	"fmt"
)

// Cycle is the snapshot cycle a roll-forward continues from;
// *snapshot.CycleRecord implements it.
type Cycle interface {
	// CycleID names the cycle (in messages and the summary).
	CycleID() string
	// KafkaClusterID is the id of the Kafka cluster the cycle was taken
	// of, "" when the cycle did not record it.
	KafkaClusterID() string
	// Complete is nil when every snapshot of the cycle completed, else an
	// error saying why the cycle cannot be rolled forward from.
	Complete() error
	// OffsetRange returns the range the restored log end of
	// topic/partition lies in (the high watermarks recorded before and
	// after the cycle); ok is false when the cycle did not record the
	// partition.
	OffsetRange(topic string, partition int32) (lo, hi int64, ok bool)
}

// RollForward replays the archive into a cluster restored from a snapshot
// cycle (`kbackup restore --since-cycle ID --to TIME`): per selected
// partition, the archived records from the live log's end up to the end
// bound of opts (ToTime: every offset before the first record whose
// timestamp is after it; ToOffset; neither: the archive's end), produced
// into the same topic and partition, where they land at their original
// offsets (see the package documentation). Consumer groups need no
// translation.
//
// The live log must end inside the range the cycle recorded for the
// partition ([high watermark before, high watermark after] the cycle), or
// after it where a previous roll-forward stopped; the live record before
// the end must equal the archived one; and the live topic must be an
// archived incarnation (same topic id); the cluster must have the cycle's
// Kafka cluster id (when the cycle recorded one). Any partition that fails
// these checks refuses the whole roll-forward before anything is written.
// Archive gaps cannot be reproduced by a producer: a partition's replay
// stops before the first gap in its range and the partition is reported
// failed (StateGap).
//
// opts.DryRun plans only. The cycle must be complete (the caller checks it
// belongs to the cluster, see snapshot.CycleRecord.Restorable). The error
// is an *Error when some partitions did not complete.
func RollForward(ctx context.Context, opts Options, cycle Cycle) (*Summary, error) {
	if cycle == nil {
		return nil, fmt.Errorf("roll-forward: no snapshot cycle")
	}
	if err := cycle.Complete(); err != nil {
		return nil, fmt.Errorf("roll-forward: %w", err)
	}
	return run(ctx, opts, "roll-forward", cycle)
}
