package restore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// Roll-forward and repair write into live partitions at their original
// offsets. Two of them at once into one partition would each see the
// other's records land where theirs should (detected, but only after one
// record was written twice), so a replay owns each partition it writes
// through the same leases as a restore's lanes (docs/FORMAT.md §10.4),
// kept under restores/replay-<hash of the cluster id>/: every replay into
// one cluster, whatever its request, shares them.

// newReplayLeases is the lease manager of a replay into cluster.
func newReplayLeases(o *Options, clusterID string) *leaseMgr {
	h := sha256.Sum256([]byte(clusterID))
	return &leaseMgr{st: o.StateStore, id: "replay-" + hex.EncodeToString(h[:8]), me: newHolder(o.Version, o.Now()),
		ttl: o.LeaseDuration, skew: o.MaxClockSkew, now: o.Now, log: o.Logger}
}

// replayOwned replays p under its lease: a partition another live process
// replays is refused (failed, naming it); one whose holder died is taken
// over after a settle period (its last requests may still land, which the
// replay then sees as a moved log end and refuses).
func (rp *replayer) replayOwned(ctx context.Context, p *ReplayPartition) error {
	m, name := rp.leases, fmt.Sprintf("lanes/%s/%010d", p.Topic, p.Partition)
	var ls *heldLease
	for attempt := 0; ls == nil; attempt++ {
		gen, cur, err := m.current(ctx, name)
		if err != nil {
			return err
		}
		if m.live(cur) {
			return fmt.Errorf("another %s or repair writes this partition: %s since %s (wait until it ends)", rp.mode, cur.Holder, fmtMs(cur.AcquiredMs))
		}
		ls, err = m.acquire(ctx, name, gen+1)
		if errors.Is(err, errLeaseTaken) && attempt < 3 {
			continue
		}
		if err != nil {
			return err
		}
		if cur != nil && !cur.Released {
			rp.o.Logger.Warn(rp.mode+": taking over a partition whose replay stopped; settling first", "partition", p.Name(), "holder", cur.Holder.String())
			select {
			case <-ls.ctx.Done():
			case <-time.After(rp.o.ResumeSettle):
			}
		}
	}
	defer ls.release()
	err := rp.replayPartition(ls.ctx, p)
	if err != nil && ls.isLost() {
		err = fmt.Errorf("%w (%v)", errLeaseLost, err)
	}
	return err
}
