package restore

import (
	"context"
	"fmt"

	"github.com/kbackup/kbackup/snapshot"
)

// RollForward replays the archive into a cluster restored from a snapshot
// cycle (`kbackup restore --since-cycle ID --to TIME`): per selected
// partition, the archived records from the live log's end up to the end
// bound of opts.Range (--to TIME: every offset before the first record
// whose timestamp is after TIME; --to-offset; neither: the archive's end),
// produced into the same topic and partition, where they land at their
// original offsets. Consumer groups need no translation.
//
// The live log must end inside the range the cycle recorded for the
// partition ([high watermark before, high watermark after] the cycle), or
// after it where a previous roll-forward stopped; the live record before
// the end must equal the archived one; and the live topic must be an
// archived incarnation (same topic id); the cluster must have the cycle's
// Kafka cluster id (when the cycle recorded one). Any partition that fails these
// checks refuses the whole roll-forward before anything is written.
// Archive gaps cannot be reproduced by a producer: a partition's replay
// stops before the first gap in its range and the partition is reported
// failed (ReplayGap). See package documentation of Replay in replay.go.
//
// opts.Rename, Repartition, Groups, Append and the --from bounds are
// refused. opts.DryRun plans only. The cycle must be complete (the caller
// checks it belongs to the cluster, see snapshot.CycleRecord.Restorable).
// The error is a *ReplayError when some partitions did not complete.
func RollForward(ctx context.Context, opts Options, cycle *snapshot.CycleRecord) (*ReplaySummary, error) {
	if cycle == nil {
		return nil, fmt.Errorf("roll-forward: no snapshot cycle")
	}
	if cycle.State != snapshot.StateComplete {
		return nil, fmt.Errorf("roll-forward: %w: cycle %s is %s, not complete", snapshot.ErrNotRestorable, cycle.ID, cycle.State)
	}
	return runReplay(ctx, opts, "roll-forward", cycle.ID, cycle.ClusterID, cycle)
}
