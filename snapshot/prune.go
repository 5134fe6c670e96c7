package snapshot

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// CycleInfo is one line of `snapshot list`.
type CycleInfo struct {
	ID        string
	State     string
	Mode      Mode
	Started   time.Time
	Age       time.Duration
	Bytes     int64
	Snapshots int
	Reason    string
}

// ListOptions configure List.
type ListOptions struct {
	Env
}

// List returns the cluster's cycles, oldest first.
func List(ctx context.Context, o ListOptions) ([]CycleInfo, error) {
	e, err := o.Env.prepared(false)
	if err != nil {
		return nil, err
	}
	recs, err := LoadCycles(ctx, e.Store, e.Config.Cluster)
	if err != nil {
		return nil, err
	}
	now := e.Now()
	out := make([]CycleInfo, len(recs))
	for i, r := range recs {
		out[i] = CycleInfo{ID: r.ID, State: r.State, Mode: r.Mode, Started: r.Started,
			Age: now.Sub(r.Started), Bytes: r.Bytes(), Snapshots: len(r.Snaps()), Reason: r.Reason}
	}
	return out, nil
}

// PruneOptions configure Prune.
type PruneOptions struct {
	Env
	// Confirm deletes; false (the default) only reports what would go.
	Confirm bool
	// KeepLast and MaxAge override Config.Retention when non-zero.
	KeepLast int
	MaxAge   time.Duration
}

// PruneDecision is what prune does with one cycle.
type PruneDecision struct {
	ID     string
	State  string
	Delete bool
	// Why explains the decision.
	Why string
}

// ErrNoRetention: prune was asked to run without any retention rule.
var ErrNoRetention = errors.New("no retention rule (set retention.keep_last and/or retention.max_age)")

// Prune applies the retention rules: a complete cycle is kept when it is
// among the KeepLast newest complete cycles or younger than MaxAge; the
// newest complete cycle is always kept. Failed cycles, and pending ones
// older than the lock TTL (their job died), are deleted with their
// snapshots. Without Confirm nothing is deleted. Deletion order: the
// record is marked pruning, the snapshots deleted, then the record.
func Prune(ctx context.Context, o PruneOptions) ([]PruneDecision, error) {
	e, err := o.Env.prepared(false)
	if err != nil {
		return nil, err
	}
	keep, maxAge := e.Config.Retention.KeepLast, time.Duration(e.Config.Retention.MaxAge)
	if o.KeepLast > 0 {
		keep = o.KeepLast
	}
	if o.MaxAge > 0 {
		maxAge = o.MaxAge
	}
	if keep <= 0 && maxAge <= 0 {
		return nil, ErrNoRetention
	}
	now := e.Now()
	if o.Confirm {
		lk, err := acquireLock(ctx, e.Store, e.Config.Cluster, "prune", "", e.Config.Timeouts.LockTTL(), now, e.Logger)
		if err != nil {
			return nil, err
		}
		defer lk.release()
	}
	recs, err := LoadCycles(ctx, e.Store, e.Config.Cluster)
	if err != nil {
		return nil, err
	}
	ds := decide(recs, keep, maxAge, now, e.Config.Timeouts.LockTTL())
	var errs []error
	for i, d := range ds {
		e.Logger.Info("prune", "cycle", d.ID, "state", d.State, "delete", d.Delete, "why", d.Why, "confirm", o.Confirm)
		if !d.Delete || !o.Confirm {
			continue
		}
		if err := deleteCycle(ctx, e, recs[i]); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return ds, fmt.Errorf("prune: %w", err)
	}
	return ds, nil
}

// decide returns one decision per record (recs oldest first).
func decide(recs []*CycleRecord, keep int, maxAge time.Duration, now time.Time, lockTTL time.Duration) []PruneDecision {
	ds := make([]PruneDecision, len(recs))
	complete := 0 // complete cycles seen so far, newest first
	for i := len(recs) - 1; i >= 0; i-- {
		r := recs[i]
		d := PruneDecision{ID: r.ID, State: r.State}
		age := now.Sub(r.Started)
		switch r.State {
		case StateComplete:
			complete++
			switch {
			case complete == 1:
				d.Why = "newest complete cycle (always kept)"
			case keep > 0 && complete <= keep:
				d.Why = fmt.Sprintf("among the newest %d complete cycles", keep)
			case maxAge > 0 && age < maxAge:
				d.Why = fmt.Sprintf("younger than %s", maxAge)
			default:
				d.Delete, d.Why = true, "outside the retention rules"
			}
		case StateFailed, StatePruning:
			d.Delete, d.Why = true, r.State+" cycle"
		default: // pending
			if age > lockTTL {
				d.Delete, d.Why = true, fmt.Sprintf("pending for longer than the lock TTL %s (its job died)", lockTTL)
			} else {
				d.Why = "pending (may be running)"
			}
		}
		ds[i] = d
	}
	return ds
}

func deleteCycle(ctx context.Context, e Env, r *CycleRecord) error {
	if r.State != StatePruning {
		r.State = StatePruning
		if err := SaveCycle(ctx, e.Store, r, false); err != nil {
			return fmt.Errorf("cycle %s: %w", r.ID, err)
		}
	}
	if err := e.Provider.Delete(ctx, r.Snaps()); err != nil {
		return fmt.Errorf("cycle %s: delete snapshots: %w", r.ID, err)
	}
	if err := e.Store.Delete(ctx, CycleKey(r.Cluster, r.ID)); err != nil {
		return fmt.Errorf("cycle %s: delete record: %w", r.ID, err)
	}
	e.Logger.Info("cycle deleted", "cycle", r.ID, "snapshots", len(r.Snaps()))
	return nil
}
