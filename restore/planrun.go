package restore

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/kbackup/kbackup/manifest"
)

// planned is a restore's plan, the value Run executes: the plan as
// reported, its lanes and its group moves.
type planned struct {
	plan   *Plan
	lanes  []*lane
	groups []groupPlan
	// stored: the restore's manifest exists (stored by an earlier run or
	// another process), and the plan follows its bounds.
	stored bool
}

// planRun plans the restore: with the bounds and end time of its stored
// manifest, if there is one.
func (rn *runner) planRun(ctx context.Context) (*planned, error) {
	prev, err := loadManifest(ctx, rn.st, rn.id)
	if err != nil {
		return nil, err
	}
	rn.catalogMs = rn.o.catalogTime()
	if prev != nil {
		rn.catalogMs = prev.CatalogMs
	}
	return rn.plan(ctx, prev)
}

// plan resolves everything before anything is written. Items the restore
// refuses are collected in Plan.Refusals (the plan is still complete, for a
// dry run); err is a failure to plan at all (store, cluster, input).
func (rn *runner) plan(ctx context.Context, prev *restoreManifest) (*planned, error) {
	o, t, a, catalogMs := rn.o, rn.t, rn.a, rn.catalogMs
	plan := &Plan{RestoreID: rn.id, TargetClusterID: t.ClusterID, CatalogMs: catalogMs, Range: o.Range.String()}
	prevSrc := prevSources(prev)
	var lanes []*lane
	restored := map[srcKey]*lane{}
	ends := map[string]map[int32]int64{} // end offsets of existing target topics
	for _, topic := range rn.topics {
		if prev != nil && !prevHasTopic(prev, topic) {
			continue // appeared in the archive after the restore began
		}
		sources, err := planSources(ctx, a, o, topic, prevSrc)
		if err != nil {
			return nil, err
		}
		if len(sources) == 0 {
			continue
		}
		dst := o.targetName(topic)
		pt, err := rn.planTopic(ctx, a, plan, topic, dst, sources, catalogMs)
		if err != nil {
			return nil, err
		}
		plan.Topics = append(plan.Topics, pt)

		tl := buildLanes(o, topic, sources)
		// The target's offsets are listed before the checkpoints are read:
		// a lane stores its first checkpoint before its first record, so a
		// partition found non-empty here whose lane has no checkpoint below
		// was written by someone else.
		var starts map[int32]int64
		if !pt.Create {
			if starts, ends[dst], err = t.Offsets(ctx, dst); err != nil {
				return nil, err
			}
		}
		for _, l := range tl {
			ck, err := loadCheckpoint(ctx, rn.st, rn.id, l.name)
			if err != nil {
				return nil, err
			}
			l.ckpt = ck
			state := "new"
			switch {
			case ck != nil && ck.Done:
				state = "done"
			case ck != nil:
				state = "resume"
			case !pt.Create && !o.Append:
				for _, p := range slices.Sorted(maps.Keys(ends[dst])) {
					if l.targetPartition >= 0 && p != l.targetPartition {
						continue
					}
					if e, s := ends[dst][p], starts[p]; e > s {
						plan.Refusals = append(plan.Refusals, Refusal{Item: fmt.Sprintf("target partition %s/%d", dst, p),
							Reason: fmt.Sprintf("already holds %d records (offsets %d..%d)", e-s, s, e-1),
							Remedy: "use --append to restore after them, or --rename into a new topic"})
					}
				}
			}
			for _, s := range l.sources {
				plan.Partitions = append(plan.Partitions, PlanPartition{SourceTopic: topic, SourcePartition: s.log.Partition, TargetTopic: dst,
					TargetPartition: l.targetPartition, From: s.from, To: s.to, ApproxRecords: s.approxRecords, ApproxBytes: s.approxBytes,
					MinTimestamp: s.minTs, MaxTimestamp: s.maxTs, State: state, ExpiredBelow: s.expiredBelow, RecoverableFromMs: s.recoverableFrom})
				restored[srcKey{topic, s.log.Partition}] = l
			}
		}
		lanes = append(lanes, tl...)
	}
	if len(lanes) == 0 {
		return nil, fmt.Errorf("no archived partition is selected")
	}
	rep, err := loadReport(ctx, rn.st, rn.id)
	if err != nil {
		return nil, err
	}
	if rep != nil {
		plan.CompletedMs = rep.CompletedMs
	}
	if err := rn.planRunning(ctx, plan); err != nil {
		return nil, err
	}
	var groups []groupPlan
	if o.Groups != nil {
		var refused []Refusal
		groups, refused, err = planGroups(ctx, a, t, o.Groups, catalogMs, o.Force, func(k srcKey) bool { return restored[k] != nil }, rn.id)
		if err != nil {
			return nil, err
		}
		plan.Refusals = append(plan.Refusals, refused...)
		if err := rn.planGroupMoves(ctx, a, plan, groups, restored, ends); err != nil {
			return nil, err
		}
	}
	return &planned{plan: plan, lanes: lanes, groups: groups, stored: prev != nil}, nil
}

// planTopic decides the target topic of source topic: existing (checked)
// or created from the archived configs.
func (rn *runner) planTopic(ctx context.Context, a *manifest.Archive, plan *Plan, topic, dst string, sources []*source, catalogMs int64) (PlanTopic, error) {
	o, t := rn.o, rn.t
	pt := PlanTopic{Source: topic, Target: dst}
	maxPart := sources[len(sources)-1].log.Partition
	if n, ok := t.Topics[dst]; ok {
		pt.Partitions = n
		if !o.Repartition && n <= maxPart {
			plan.Refusals = append(plan.Refusals, Refusal{Item: "target topic " + dst,
				Reason: fmt.Sprintf("has %d partitions, the archive of %s has partition %d", n, topic, maxPart),
				Remedy: "use --repartition, or --rename into a new topic"})
		}
		// An existing target's timestamp type is known now: the plan (and
		// so --dry-run) warns before anything is written.
		if la, err := t.LogAppendTime(ctx, dst); err == nil {
			pt.LogAppendTime = la
		}
	} else {
		pt.Create = true
		cat, err := topicCatalog(ctx, a, catalogMs, topic, sources[0].topicID)
		if err != nil {
			return pt, err
		}
		pt.Partitions, pt.ReplicationFactor, pt.Configs = maxPart+1, -1, map[string]string{}
		if cat != nil {
			pt.Partitions = max(pt.Partitions, cat.Partitions)
			if cat.ReplicationFactor > 0 {
				pt.ReplicationFactor = cat.ReplicationFactor
			}
			pt.Configs = cat.Configs
		} else {
			plan.Warnings = append(plan.Warnings, fmt.Sprintf("no topics capture describes %s: %s is created with %d partitions and broker-default configs", topic, dst, pt.Partitions))
		}
		if o.ReplicationFactor > 0 {
			pt.ReplicationFactor = o.ReplicationFactor
		}
		pt.LogAppendTime = strings.EqualFold(pt.Configs["message.timestamp.type"], "LogAppendTime")
	}
	if pt.LogAppendTime {
		plan.Warnings = append(plan.Warnings, fmt.Sprintf("target topic %s uses LogAppendTime: restored records get new timestamps", dst))
	}
	return pt, nil
}

// planRunning lists the other processes running this restore now; without
// Join they are a refusal (docs/FORMAT.md §10.4 rule 7).
func (rn *runner) planRunning(ctx context.Context, plan *Plan) error {
	ws, err := rn.leases.Workers(ctx)
	if err != nil {
		return err
	}
	for _, w := range ws {
		plan.Running = append(plan.Running, w.Holder)
		if !rn.o.Join {
			plan.Refusals = append(plan.Refusals, Refusal{Item: "restore " + rn.id,
				Reason: fmt.Sprintf("is being run by %s since %s (running %s, last renewed %s)", w.Holder, fmtMs(w.Holder.StartedMs), w.Holder.Version, fmtMs(w.RenewedMs)),
				Remedy: "wait until it ends, or add --join to share its partitions with it"})
		}
	}
	return nil
}

func prevHasTopic(m *restoreManifest, topic string) bool {
	for _, l := range m.Lanes {
		for _, s := range l.Sources {
			if s.Topic == topic {
				return true
			}
		}
	}
	return false
}
