package snapshot

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/kbackup/kbackup/store"
)

// RestoreOptions configure a whole-cluster restore.
type RestoreOptions struct {
	Env
	// Cycle is the id of the complete cycle to restore. Required.
	Cycle string
	// DryRun only computes and returns the plan; nothing is touched.
	DryRun bool
}

// RestoreResult reports a restore.
type RestoreResult struct {
	// Cycle is the restored cycle's record.
	Cycle *CycleRecord `json:"-"`
	// ID is the restore report's id (its store key RestoreKey(cluster, ID)).
	ID string `json:"id"`
	// CycleID is the restored cycle.
	CycleID string `json:"cycle"`
	// Plan is the steps, one line each.
	Plan []string `json:"plan"`
	// Restored are every broker's restored volumes (with rollback info).
	Restored map[int32][]Restored `json:"restored,omitempty"`
	// HighWatermarks are the high watermarks the cluster serves after the
	// restore (topic -> partition -> offset).
	HighWatermarks map[string]map[string]int64 `json:"high_watermarks,omitempty"`
	// Mismatches name partitions whose served high watermark is outside
	// the cycle's recorded [HighWatermarks, HighWatermarksAfter] range.
	Mismatches []string `json:"mismatches,omitempty"`
	// Started and Finished are the restore's times.
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
}

// ErrRestoreFailed wraps the reason of a failed restore.
var ErrRestoreFailed = errors.New("snapshot restore failed")

// Restore restores the whole cluster from one complete cycle: it refuses
// an incomplete cycle or one of another cluster, stops every broker,
// restores every volume of the cycle (the old ones are kept for rollback),
// starts every broker at once, waits until the cluster is healthy and
// reports the high watermarks now served. If restoring a volume fails,
// every broker's old volumes are put back before the brokers are started.
// The report is stored at RestoreKey (the restore engine's roll-forward
// can find the last restored cycle there).
func Restore(ctx context.Context, o RestoreOptions) (*RestoreResult, error) {
	e, err := o.Env.prepared(!o.DryRun)
	if err != nil {
		return nil, err
	}
	rec, err := LoadCycle(ctx, e.Store, e.Config.Cluster, o.Cycle)
	if err != nil {
		return nil, err
	}
	if err := restorable(e.Config, rec); err != nil {
		return nil, err
	}
	if rec.Provider != e.Provider.Name() {
		// Its snapshots are another provider's: finding that out after
		// every broker was stopped would be an outage for nothing.
		return nil, fmt.Errorf("%w: cycle %s was taken with the %s provider, the configuration uses %s", ErrNotRestorable, rec.ID, rec.Provider, e.Provider.Name())
	}
	started := e.Now()
	res := &RestoreResult{Cycle: rec, ID: NewCycleID(started), CycleID: rec.ID, Started: started.UTC(), Plan: plan(e, rec)}
	log := e.Logger.With("restore", res.ID, "cycle", rec.ID)
	e.Logger = log
	if o.DryRun {
		for _, l := range res.Plan {
			log.Info("plan", "step", l)
		}
		return res, nil
	}
	lk, err := acquireLock(ctx, e.Store, e.Config.Cluster, "restore", rec.ID, e.Config.Timeouts.LockTTL(), started, log)
	if err != nil {
		return nil, err
	}
	defer lk.release()
	if id, err := e.Cluster.ClusterID(ctx); err != nil {
		log.Warn("cluster not reachable; cannot compare its id with the cycle's", "err", err)
	} else if id != rec.ClusterID {
		return nil, fmt.Errorf("%w: cycle %s is of Kafka cluster %s, the running cluster is %s", ErrNotRestorable, rec.ID, rec.ClusterID, id)
	}
	if err := restoreAll(ctx, e, rec, res); err != nil {
		log.Error("restore failed", "err", err)
		return res, fmt.Errorf("%w: cycle %s: %w", ErrRestoreFailed, rec.ID, err)
	}
	res.Finished = e.Now().UTC()
	if err := putJSON(context.WithoutCancel(ctx), e.Store, RestoreKey(rec.Cluster, res.ID), res, store.PutOptions{}); err != nil {
		log.Warn("restore report not written", "err", err)
	}
	log.Info("restore complete", "partitions", countParts(res.HighWatermarks), "mismatches", len(res.Mismatches),
		"took", res.Finished.Sub(res.Started).Round(time.Second))
	return res, nil
}

// restorable refuses a cycle that is not complete or not of this cluster's brokers.
func restorable(cfg *Config, rec *CycleRecord) error {
	if err := rec.Restorable(cfg.Cluster); err != nil {
		return err
	}
	var have []int32
	for _, b := range rec.Brokers {
		have = append(have, b.ID)
		if len(b.Snapshots) == 0 {
			return fmt.Errorf("%w: cycle %s has no snapshots of broker %d", ErrNotRestorable, rec.ID, b.ID)
		}
	}
	want := cfg.brokerIDs()
	slices.Sort(have)
	slices.Sort(want)
	if !slices.Equal(have, want) {
		return fmt.Errorf("%w: cycle %s has brokers %v, the configuration %v", ErrNotRestorable, rec.ID, have, want)
	}
	return nil
}

func plan(e Env, rec *CycleRecord) []string {
	ids := e.Config.brokerIDs()
	out := []string{fmt.Sprintf("restore cycle %s (%s, %s, taken %s) of cluster %s (Kafka id %s)",
		rec.ID, rec.Mode, rec.Provider, rec.Started.Format(time.RFC3339), rec.Cluster, rec.ClusterID),
		fmt.Sprintf("stop brokers %v and confirm they are down", ids)}
	for _, b := range rec.Brokers {
		for _, s := range b.Snapshots {
			out = append(out, fmt.Sprintf("broker %d: replace volume %s (%s) with snapshot %s; keep the old one for rollback",
				b.ID, s.Volume.ID, s.Volume.Device, s.ID))
		}
	}
	return append(out, fmt.Sprintf("start brokers %v at once", ids),
		"wait until every broker is registered and every partition led with a full ISR",
		fmt.Sprintf("report the high watermarks served (%d partitions recorded)", countParts(rec.HighWatermarks)))
}

func restoreAll(ctx context.Context, e Env, rec *CycleRecord, res *RestoreResult) error {
	ids := e.Config.brokerIDs()
	if err := e.stopAll(ctx, ids); err != nil {
		return errors.Join(err, e.startAll(ctx, ids))
	}
	e.Logger.Info("all brokers stopped; restoring volumes")
	var mu sync.Mutex
	res.Restored = map[int32][]Restored{}
	err := parallel(ids, func(id int32) error {
		var snaps []Snap
		for _, b := range rec.Brokers {
			if b.ID == id {
				snaps = b.Snapshots
			}
		}
		done, err := e.Provider.Restore(ctx, rec.Cluster, rec.ID, id, snaps)
		mu.Lock()
		res.Restored[id] = done
		mu.Unlock()
		if err != nil {
			return fmt.Errorf("broker %d: %w", id, err)
		}
		e.Logger.Info("broker volumes restored", "broker", id, "volumes", len(done))
		return nil
	})
	if err != nil {
		rctx := context.WithoutCancel(ctx)
		rb := parallel(ids, func(id int32) error {
			if len(res.Restored[id]) == 0 {
				return nil
			}
			return e.Provider.Rollback(rctx, id, res.Restored[id])
		})
		if rb != nil {
			err = errors.Join(err, fmt.Errorf("rollback: %w", rb))
		} else {
			e.Logger.Warn("restore failed; old volumes put back", "err", err)
		}
		res.Restored = nil
		return errors.Join(err, e.startAll(ctx, ids))
	}
	if err := e.startAll(ctx, ids); err != nil {
		return err
	}
	if err := waitHealthy(ctx, e.Cluster, ids, e.Config.Timeouts.HealthyTimeout(), e.Poll); err != nil {
		return err
	}
	e.Logger.Info("cluster healthy")
	hw, err := e.Cluster.HighWatermarks(ctx)
	if err != nil {
		return err
	}
	res.HighWatermarks = hwmMap(hw)
	res.Mismatches = mismatches(rec, hw)
	for _, m := range res.Mismatches {
		e.Logger.Warn("high watermark outside the cycle's recorded range", "partition", m)
	}
	return nil
}

// mismatches lists partitions served outside the recorded range.
func mismatches(rec *CycleRecord, served map[string]map[int32]int64) []string {
	var out []string
	for t, ps := range rec.HighWatermarks {
		for p, lo := range ps {
			hi := lo
			if v, ok := rec.HighWatermarksAfter[t][p]; ok {
				hi = v
			}
			var pn int32
			if _, err := fmt.Sscan(p, &pn); err != nil {
				continue
			}
			got, ok := served[t][pn]
			if !ok || got < lo || got > hi {
				out = append(out, fmt.Sprintf("%s/%s: served %d, recorded %d..%d", t, p, got, lo, hi))
			}
		}
	}
	sort.Strings(out)
	return out
}

func countParts(m map[string]map[string]int64) int {
	n := 0
	for _, ps := range m {
		n += len(ps)
	}
	return n
}
