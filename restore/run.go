package restore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kbackup/kbackup/internal/jsonobj"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
)

// run executes a plan that has no refusals: from here on the restore
// writes. It registers this process, stores the restore's manifest (the
// first run), creates the target topics, runs the lanes and the finishing
// step.
func (rn *runner) run(ctx context.Context, p *planned, sum *Summary) (*Summary, error) {
	o, id := rn.o, rn.id
	rn.cache.Freeze()
	// Leases, group moves and the report rest on conditional creates: a
	// store that ignores them cannot keep two processes apart.
	if err := manifest.ProbeConditionalCreate(ctx, o.StateStore); err != nil {
		return nil, fmt.Errorf("restore %s refused, nothing written: %w", id, err)
	}
	worker, err := rn.leases.Register(ctx)
	if err != nil {
		return nil, fmt.Errorf("restore %s: register this process: %w", id, err)
	}
	defer worker.Unregister()
	if !p.stored {
		if p, err = rn.storeManifest(ctx, p); err != nil {
			return nil, fmt.Errorf("restore %s: %w", id, err)
		}
		sum.Plan = p.plan
	}
	logAppend, err := rn.prepareTopics(ctx, p.plan)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", id, err)
	}
	o.Logger.Info("restore: starting", "restore_id", id, "partitions", len(p.plan.Partitions), "lanes", len(p.lanes), "range", p.plan.Range,
		"holder", rn.leases.Me.String(), "join", o.Join)

	results := rn.execute(ctx, p.lanes, logAppend)
	sum.Partitions = results
	sum.Records, sum.Bytes = rn.records.Load(), rn.bytes.Load()
	var failed []string
	for _, r := range results {
		if r.Status == StatusFailed || r.Status == StatusSkipped {
			reason := "not started"
			if r.Err != nil {
				reason = r.Err.Error()
			}
			failed = append(failed, fmt.Sprintf("%s (%s)", r.Name(), reason))
		}
	}
	fin, err := rn.finish(ctx, p.lanes, p.groups, len(failed) == 0)
	if fin != nil {
		sum.OffsetMap, sum.Groups, sum.Report = fin.om, fin.groups, fin.report
	}
	var steps []string
	if err != nil {
		steps = append(steps, "finishing ("+err.Error()+")")
	}
	if sum.OffsetMap != nil && o.OffsetMapFile != "" {
		if err := writeFileAtomic(o.OffsetMapFile, sum.OffsetMap.Encode()); err != nil {
			steps = append(steps, "offset map file ("+err.Error()+")")
		}
	}
	sum.Duration = o.Now().Sub(rn.start)
	if len(failed) > 0 || len(steps) > 0 {
		return sum, &IncompleteError{RestoreID: id, Failed: failed, Total: len(p.lanes), Steps: steps}
	}
	o.Logger.Info("restore: complete", "restore_id", id, "records", sum.Records, "bytes", sum.Bytes, "duration", sum.Duration.Round(time.Millisecond))
	return sum, nil
}

// storeManifest stores the restore's manifest, the resolved plan
// (create-if-absent, before any record). When another process of the same
// restore stored its manifest first, its bounds (resolved at its start)
// are the restore's: the restore is planned again with them.
func (rn *runner) storeManifest(ctx context.Context, p *planned) (*planned, error) {
	m := &restoreManifest{Format: restoreFormat, FormatVersion: stateVersion, RestoreID: rn.id, CreatedMs: rn.start.UnixMilli(),
		CreatedBy: rn.o.Version, TargetClusterID: rn.t.ClusterID, CatalogMs: rn.catalogMs, Request: rn.o.requestString(), Lanes: toManifest(p.lanes)}
	err := jsonobj.Put(ctx, rn.st, manifestKey(rn.id), m, store.PutOptions{IfNotExists: true})
	if !errors.Is(err, store.ErrExists) {
		return p, err
	}
	if p, err = rn.planRun(ctx); err != nil {
		return nil, err
	}
	if len(p.plan.Refusals) > 0 {
		return nil, fmt.Errorf("refused, nothing written: %w", refusalsError(p.plan.Refusals))
	}
	return p, nil
}
