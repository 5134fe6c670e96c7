package snapshot

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// RunOptions configure one cycle.
type RunOptions struct {
	Env
	// Mode overrides the configured mode; "" means Config.Mode (default cold).
	Mode Mode
}

// ErrCycleFailed wraps the reason of a failed cycle.
var ErrCycleFailed = errors.New("snapshot cycle failed")

// cycle is a running cycle.
type cycle struct {
	e    Env
	rec  *CycleRecord
	mu   sync.Mutex
	vols map[int32][]Volume
}

// Run runs one snapshot cycle: preflight (cluster healthy, the lock),
// high watermarks, the snapshots by mode, wait healthy, wait until every
// snapshot completed. It returns the cycle record, also when the cycle
// failed (then with an error wrapping ErrCycleFailed and the reason).
// Whatever fails, brokers the cycle stopped are started again.
func Run(ctx context.Context, o RunOptions) (*CycleRecord, error) {
	e, err := o.Env.prepared(true)
	if err != nil {
		return nil, err
	}
	mode := o.Mode
	if mode == "" {
		mode = e.Config.mode()
	}
	if !mode.Valid() {
		return nil, fmt.Errorf("snapshot: mode %q is not cold, rolling or hot", mode)
	}
	started := e.Now()
	rec := &CycleRecord{
		ID: NewCycleID(started), Cluster: e.Config.Cluster, Mode: mode,
		Provider: e.Provider.Name(), State: StatePending, Started: started.UTC(),
	}
	log := e.Logger.With("cycle", rec.ID)
	e.Logger = log
	log.Info("cycle starting", "mode", mode, "provider", rec.Provider, "brokers", len(e.Config.Brokers), "store", e.Store.String())

	lk, err := acquireLock(ctx, e.Store, e.Config.Cluster, "run", rec.ID, e.Config.Timeouts.LockTTL(), started, log)
	if err != nil {
		return nil, err
	}
	defer lk.release()
	log.Info("lock acquired", "key", lk.key)

	c := &cycle{e: e, rec: rec, vols: map[int32][]Volume{}}
	if err := c.preflight(ctx); err != nil {
		log.Error("preflight failed; nothing was changed", "err", err)
		return nil, fmt.Errorf("%w: preflight: %w", ErrCycleFailed, err)
	}
	if err := SaveCycle(ctx, e.Store, rec, true); err != nil {
		return nil, err
	}
	log.Info("cycle record written", "key", CycleKey(rec.Cluster, rec.ID), "state", rec.State)

	err = c.snapshots(ctx, mode)
	if err == nil {
		err = c.finish(ctx)
	}
	return c.close(ctx, err)
}

// preflight checks health, discovers the volumes and records the high watermarks.
func (c *cycle) preflight(ctx context.Context) error {
	e := c.e
	if err := e.Cluster.Healthy(ctx, e.Config.brokerIDs()); err != nil {
		return err
	}
	id, err := e.Cluster.ClusterID(ctx)
	if err != nil {
		return err
	}
	c.rec.ClusterID = id
	e.Logger.Info("preflight: cluster healthy", "cluster_id", id, "brokers", e.Config.brokerIDs())
	for _, b := range e.Config.Brokers {
		vols, err := e.Provider.Discover(ctx, b)
		if err != nil {
			return fmt.Errorf("broker %d: discover volumes: %w", b.ID, err)
		}
		if len(vols) == 0 {
			return fmt.Errorf("broker %d: no volumes found", b.ID)
		}
		c.vols[b.ID] = vols
		c.rec.Brokers = append(c.rec.Brokers, BrokerRecord{ID: b.ID, Snapshots: []Snap{}})
		e.Logger.Info("preflight: volumes", "broker", b.ID, "volumes", volIDs(vols))
	}
	hw, err := e.Cluster.HighWatermarks(ctx)
	if err != nil {
		return err
	}
	c.rec.HighWatermarks = hwmMap(hw)
	e.Logger.Info("high watermarks recorded", "topics", len(hw))
	return nil
}

func volIDs(vs []Volume) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.ID
	}
	return out
}

// snapshot takes one broker's snapshots and records them.
func (c *cycle) snapshot(ctx context.Context, id int32, together bool) error {
	start := time.Now()
	snaps, err := c.e.Provider.Snapshot(ctx, SnapRequest{
		Cluster: c.rec.Cluster, Cycle: c.rec.ID, Broker: id, Volumes: c.vols[id],
		Together: together, Tags: c.e.Config.Tags,
	})
	c.mu.Lock()
	for i := range c.rec.Brokers {
		if c.rec.Brokers[i].ID == id {
			c.rec.Brokers[i].Snapshots = append(c.rec.Brokers[i].Snapshots, snaps...)
		}
	}
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("broker %d: snapshot: %w", id, err)
	}
	var ids []string
	for _, s := range snaps {
		ids = append(ids, s.ID)
	}
	c.e.Logger.Info("snapshots taken", "broker", id, "snapshots", ids, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// snapshots runs the mode's steps. Every broker it stopped is started again
// before it returns.
func (c *cycle) snapshots(ctx context.Context, mode Mode) error {
	e := c.e
	ids := e.Config.brokerIDs()
	switch mode {
	case ModeCold:
		err := e.stopAll(ctx, ids)
		if err == nil {
			e.Logger.Info("all brokers stopped; snapshotting")
			err = parallel(ids, func(id int32) error { return c.snapshot(ctx, id, false) })
		}
		if serr := e.startAll(ctx, ids); serr != nil {
			err = errors.Join(err, serr)
		}
		return err
	case ModeRolling:
		for _, id := range ids {
			err := e.stopBroker(ctx, id)
			if err == nil {
				err = c.snapshot(ctx, id, false)
			}
			if serr := e.startBroker(ctx, id); serr != nil {
				// Never go on to stop the next broker while this one is down.
				return errors.Join(err, serr)
			}
			if err != nil {
				return err
			}
			if err := waitHealthy(ctx, e.Cluster, ids, e.Config.Timeouts.HealthyTimeout(), e.Poll); err != nil {
				return fmt.Errorf("after broker %d: %w", id, err)
			}
			e.Logger.Info("broker back in sync", "broker", id)
		}
		return nil
	default: // hot
		return parallel(ids, func(id int32) error { return c.snapshot(ctx, id, true) })
	}
}

// finish waits for the cluster and the snapshots and records the result.
func (c *cycle) finish(ctx context.Context) error {
	e := c.e
	ids := e.Config.brokerIDs()
	if err := waitHealthy(ctx, e.Cluster, ids, e.Config.Timeouts.HealthyTimeout(), e.Poll); err != nil {
		return err
	}
	e.Logger.Info("cluster healthy")
	if hw, err := e.Cluster.HighWatermarks(ctx); err == nil {
		c.rec.HighWatermarksAfter = hwmMap(hw)
	} else {
		e.Logger.Warn("high watermarks after the cycle not recorded", "err", err)
	}
	wctx, cancel := context.WithTimeout(ctx, e.Config.Timeouts.SnapshotTimeout())
	defer cancel()
	for i := range c.rec.Brokers {
		b := &c.rec.Brokers[i]
		done, err := e.Provider.Wait(wctx, b.Snapshots)
		if len(done) == len(b.Snapshots) {
			b.Snapshots = done
		}
		if err != nil {
			return fmt.Errorf("broker %d: %w", b.ID, err)
		}
	}
	e.Logger.Info("all snapshots completed", "snapshots", len(c.rec.Snaps()))
	return nil
}

// close records the outcome. On failure the snapshots are tagged failed.
func (c *cycle) close(ctx context.Context, cerr error) (*CycleRecord, error) {
	e, rec := c.e, c.rec
	ctx = context.WithoutCancel(ctx)
	rec.Finished = e.Now().UTC()
	rec.State = StateComplete
	if cerr != nil {
		rec.State, rec.Reason = StateFailed, oneLine(cerr.Error())
		if snaps := rec.Snaps(); len(snaps) > 0 {
			if err := e.Provider.MarkFailed(ctx, snaps); err != nil {
				e.Logger.Warn("snapshots not tagged failed", "err", err)
			}
		}
	}
	if err := SaveCycle(ctx, e.Store, rec, false); err != nil {
		cerr = errors.Join(cerr, err)
	}
	took := rec.Finished.Sub(rec.Started).Round(time.Second)
	if cerr != nil {
		e.Logger.Error("cycle failed", "state", rec.State, "took", took, "err", cerr)
		return rec, fmt.Errorf("%w: %s: %w", ErrCycleFailed, rec.ID, cerr)
	}
	e.Logger.Info("cycle complete", "state", rec.State, "mode", rec.Mode, "brokers", len(rec.Brokers),
		"snapshots", len(rec.Snaps()), "bytes", rec.Bytes(), "took", took)
	return rec, nil
}
