package replay

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/kbackup/kbackup/internal/lease"
	"github.com/kbackup/kbackup/internal/logrange"
)

// A replay writes into live partitions at their original
// offsets. Two of them at once into one partition would each see the
// other's records land where theirs should (detected, but only after one
// record was written twice), so a replay owns each partition it writes
// through the same leases as a restore's lanes (docs/FORMAT.md §10.4),
// kept under restores/replay-<hash of the cluster id>/: every replay into
// one cluster, whatever its request, shares them.

// newLeases is the lease manager of a replay into cluster.
func newLeases(o *Options, clusterID string) *lease.Manager {
	h := sha256.Sum256([]byte(clusterID))
	return &lease.Manager{Store: o.StateStore, ID: "replay-" + hex.EncodeToString(h[:8]), Me: lease.NewHolder(o.Version, o.Now()),
		TTL: o.LeaseDuration, Skew: o.MaxClockSkew, Now: o.Now, Log: o.Logger}
}

// replayOwned replays p under its lease: a partition another live process
// replays is refused (failed, naming it); one whose holder died is taken
// over after a settle period (its last requests may still land, which the
// replay then sees as a moved log end and refuses).
func (rp *replayer) replayOwned(ctx context.Context, p *Partition) error {
	m, name := rp.leases, fmt.Sprintf("lanes/%s/%010d", p.Topic, p.Partition)
	var ls *lease.Held
	for attempt := 0; ls == nil; attempt++ {
		gen, cur, err := m.Current(ctx, name)
		if err != nil {
			return err
		}
		if m.Live(cur) {
			return fmt.Errorf("another %s or repair writes this partition: %s since %s (wait until it ends)", rp.mode, cur.Holder, logrange.FormatTime(cur.AcquiredMs))
		}
		ls, err = m.Acquire(ctx, name, gen+1)
		if errors.Is(err, lease.ErrTaken) && attempt < 3 {
			continue
		}
		if err != nil {
			return err
		}
		if cur != nil && !cur.Released {
			rp.o.Logger.Warn(rp.mode+": taking over a partition whose replay stopped; settling first", "partition", p.Name(), "holder", cur.Holder.String())
			select {
			case <-ls.Context().Done():
			case <-time.After(rp.o.Settle):
			}
		}
	}
	defer ls.Release()
	err := rp.replayPartition(ls.Context(), p)
	if err != nil && ls.IsLost() {
		err = fmt.Errorf("%w (%v)", lease.ErrLost, err)
	}
	return err
}
