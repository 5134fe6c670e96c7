package restore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kbackup/kbackup/internal/jsonobj"
	"github.com/kbackup/kbackup/internal/lease"
	"github.com/kbackup/kbackup/store"
)

// The finishing step (docs/FORMAT.md §10.4 rule 8, §10.6): under the
// "final" lease, the offset map is built from every lane's checkpoint and
// stored, groups are moved once, and report.json is created once. Every
// process of a restore, and every rerun, then reports the same map.

const reportFormat = "kbackup-restore-report"

func reportKey(id string) string { return lease.Dir(id) + "report.json" }

// ReportLane is one lane in the completion record.
type ReportLane struct {
	Lane        string `json:"lane"`
	TargetTopic string `json:"target_topic"`
	Records     int64  `json:"records"`
	Bytes       int64  `json:"bytes"`
}

// ReportGroup is a group move as the completion record states it (its
// history, also later moves with --again, is in the group's record).
type ReportGroup struct {
	Group   string        `json:"group"`
	State   string        `json:"state"`
	MovedMs int64         `json:"moved_ms"`
	Offsets []movedOffset `json:"offsets"`
}

// Report is restores/<id>/report.json: the restore completed.
type Report struct {
	Format        string       `json:"format"`
	FormatVersion int          `json:"format_version"`
	RestoreID     string       `json:"restore_id"`
	CompletedMs   int64        `json:"completed_ms"`
	CompletedBy   string       `json:"completed_by"`
	Records       int64        `json:"records"`
	Bytes         int64        `json:"bytes"`
	Lanes         []ReportLane `json:"lanes"`
	// Groups moved by the run that completed the restore, with each
	// partition's committed offset before (from) and after (to).
	Groups []ReportGroup `json:"groups"`
}

func loadReport(ctx context.Context, st store.Store, id string) (*Report, error) {
	var r Report
	found, err := jsonobj.Get(ctx, st, reportKey(id), &r)
	if err != nil || !found {
		return nil, err
	}
	if r.Format != reportFormat || r.FormatVersion != stateVersion {
		return nil, fmt.Errorf("%s: format %q version %d, this kbackup reads %q version %d (upgrade kbackup)",
			reportKey(id), r.Format, r.FormatVersion, reportFormat, stateVersion)
	}
	return &r, nil
}

// finished is what the finishing step produced.
type finished struct {
	om     *OffsetMap // nil with Repartition, or when not written
	report *Report    // nil until the restore completed
	groups []GroupResult
}

// finish runs the finishing step. complete says every lane completed (in
// this process or another); when not, the stored offset map is refreshed
// only if the final lease is free right now (a process that completes the
// restore will write it). It waits for the final lease while another live
// process holds it and the restore is complete.
func (rn *runner) finish(ctx context.Context, lanes []*lane, groups []groupPlan, complete bool) (*finished, error) {
	m := rn.leases
	// Runs also after an interrupt: the map of what was done is stored.
	ctx = context.WithoutCancel(ctx)
	var ls *lease.Held
	for ls == nil {
		gen, cur, err := m.Current(ctx, "final")
		if err != nil {
			return nil, err
		}
		if m.Live(cur) {
			if !complete {
				rn.o.Logger.Info("restore: another process of this restore is finishing it; not storing the offset map", "holder", cur.Holder.String())
				return rn.readFinished(ctx, lanes)
			}
			time.Sleep(m.Poll())
			continue
		}
		if ls, err = m.Acquire(ctx, "final", gen+1); err != nil && !errors.Is(err, lease.ErrTaken) {
			return nil, err
		}
	}
	defer ls.Release()
	rep, err := loadReport(ls.Context(), rn.st, rn.id)
	if err != nil {
		return nil, err
	}
	fin := &finished{report: rep}
	maps := map[srcKey]*PartitionMap{}
	cks := make([]*checkpoint, len(lanes))
	all := true
	for i, l := range lanes {
		if cks[i], err = loadCheckpoint(ls.Context(), rn.st, rn.id, l.name); err != nil {
			return nil, err
		}
		if cks[i] == nil || !cks[i].Done {
			all = false
		}
	}
	if !rn.o.Repartition {
		if rep != nil {
			if fin.om, err = ReadOffsetMap(ls.Context(), rn.st, rn.id); err != nil {
				return nil, err
			}
		} else {
			fin.om = rn.buildMap(cks)
			if err := rn.putIfValid(ls, offsetMapKey(rn.id), fin.om.Encode()); err != nil {
				return nil, fmt.Errorf("store %s: %w", offsetMapKey(rn.id), err)
			}
		}
		for i := range fin.om.Partitions {
			pm := &fin.om.Partitions[i]
			maps[srcKey{pm.SourceTopic, pm.SourcePartition}] = pm
		}
	}
	if !all {
		return fin, nil
	}
	var gerr error
	if len(groups) > 0 {
		gm := &groupMover{st: rn.st, id: rn.id, adm: rn.t.Admin, by: m.Me.String(), now: rn.o.Now, log: rn.o.Logger}
		fin.groups, gerr = commitGroups(ls.Context(), gm, groups, maps, false)
	}
	if rep == nil && gerr == nil {
		if fin.report, err = rn.createReport(ls, lanes, cks, fin.groups); err != nil {
			return fin, err
		}
	}
	return fin, gerr
}

// putIfValid stores body at key while the lease is valid.
func (rn *runner) putIfValid(ls *lease.Held, key string, body []byte) error {
	if !ls.Valid() {
		return lease.ErrLost
	}
	ctx, cancel := context.WithDeadline(ls.Context(), ls.ValidUntil())
	defer cancel()
	return rn.st.Put(ctx, key, strings.NewReader(string(body)), int64(len(body)), store.PutOptions{})
}

// buildMap assembles the offset map from the lanes' checkpoints (lanes in
// plan order): the same map whoever builds it.
func (rn *runner) buildMap(cks []*checkpoint) *OffsetMap {
	om := &OffsetMap{Format: offsetMapFormat, FormatVersion: offsetMapVersion, RestoreID: rn.id, CreatedMs: rn.o.Now().UnixMilli(),
		TargetClusterID: rn.t.ClusterID, CatalogMs: rn.catalogMs, Partitions: []PartitionMap{}}
	for _, c := range cks {
		if c != nil {
			om.Partitions = append(om.Partitions, c.Maps...)
		}
	}
	return om
}

// createReport creates report.json once (create-if-absent); a report
// created meanwhile by another process wins and is returned.
func (rn *runner) createReport(ls *lease.Held, lanes []*lane, cks []*checkpoint, groups []GroupResult) (*Report, error) {
	r := &Report{Format: reportFormat, FormatVersion: stateVersion, RestoreID: rn.id, CompletedMs: rn.o.Now().UnixMilli(), CompletedBy: rn.leases.Me.String(),
		Groups: []ReportGroup{}}
	for _, g := range groups {
		rg := ReportGroup{Group: g.Group, State: g.State, MovedMs: g.MovedMs, Offsets: []movedOffset{}}
		for _, o := range g.Offsets {
			rg.Offsets = append(rg.Offsets, movedOffset{Topic: o.TargetTopic, Partition: o.TargetPartition, From: o.From, To: o.TargetOffset})
		}
		r.Groups = append(r.Groups, rg)
	}
	for i, l := range lanes {
		r.Lanes = append(r.Lanes, ReportLane{Lane: l.name, TargetTopic: l.targetTopic, Records: cks[i].Records, Bytes: cks[i].Bytes})
		r.Records += cks[i].Records
		r.Bytes += cks[i].Bytes
	}
	if !ls.Valid() {
		return nil, lease.ErrLost
	}
	err := jsonobj.Put(ls.Context(), rn.st, reportKey(rn.id), r, store.PutOptions{IfNotExists: true})
	if errors.Is(err, store.ErrExists) {
		return loadReport(ls.Context(), rn.st, rn.id)
	}
	if err != nil {
		return nil, err
	}
	rn.o.Logger.Info("restore: complete; report stored", "key", reportKey(rn.id), "records", r.Records)
	return r, nil
}

// readFinished reads what another process stored (the offset map, or the
// checkpoints' maps when none is stored yet) without the final lease.
func (rn *runner) readFinished(ctx context.Context, lanes []*lane) (*finished, error) {
	fin := &finished{}
	if rn.o.Repartition {
		return fin, nil
	}
	cks := make([]*checkpoint, len(lanes))
	for i, l := range lanes {
		var err error
		if cks[i], err = loadCheckpoint(ctx, rn.st, rn.id, l.name); err != nil {
			return nil, err
		}
	}
	fin.om = rn.buildMap(cks)
	return fin, nil
}
