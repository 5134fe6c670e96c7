package restore

import (
	"context"

	"github.com/kbackup/kbackup/manifest"
)

// planGroupMoves fills plan.Groups: per group its offsets, whether this
// restore moved it already, and (dry runs) the translation of each
// captured offset with the group's committed offset in the target now.
func (rn *runner) planGroupMoves(ctx context.Context, a *manifest.Archive, plan *Plan, groups []groupPlan, restored map[srcKey]*lane, ends map[string]map[int32]int64) error {
	gm := &groupMover{st: rn.st, id: rn.id, adm: rn.t.Admin, now: rn.o.Now, log: rn.o.Logger}
	before := map[srcKey]int64{} // records before a partition's range
	for _, gp := range groups {
		pg := PlanGroup{Group: gp.group, Offsets: len(gp.offsets), ActiveMembers: gp.active}
		rec, err := loadGroupRecord(ctx, rn.st, rn.id, gp.group)
		if err != nil {
			return err
		}
		if rec != nil && rec.last().State != moveMoving {
			pg.MovedMs = rec.last().FinishedMs
		}
		if rn.o.DryRun {
			fo, err := gm.committed(ctx, gp.group)
			if err != nil {
				return err
			}
			for _, off := range gp.offsets {
				k := srcKey{off.Topic, off.Partition}
				l := restored[k]
				to, predicted, err := rn.predict(ctx, l, k, off.Offset, ends, before)
				if err != nil {
					return err
				}
				pg.Translated = append(pg.Translated, TranslatedOffset{SourceTopic: off.Topic, Partition: off.Partition, SourceOffset: off.Offset,
					TargetTopic: l.targetTopic, TargetPartition: l.targetPartition, TargetOffset: to, Predicted: predicted,
					From: currentOf(fo, l.targetTopic, l.targetPartition)})
			}
		}
		plan.Groups = append(plan.Groups, pg)
	}
	return nil
}

// predict translates source offset o of partition k of lane l as the
// restore will (PartitionMap.Translate): exactly from the checkpoint of a
// completed lane, else by counting archived records: the target offset of
// the first restored record at or after o is the lane's base plus the
// number of selected records before o.
func (rn *runner) predict(ctx context.Context, l *lane, k srcKey, o int64, ends map[string]map[int32]int64, before map[srcKey]int64) (int64, bool, error) {
	if ck := l.ckpt; ck != nil && ck.Done {
		for i := range ck.Maps {
			if ck.Maps[i].SourcePartition == k.partition {
				m := ck.Maps[i]
				m.Complete = true
				return m.Translate(o), false, nil
			}
		}
	}
	var s *source
	for _, ls := range l.sources {
		if ls.log.Partition == k.partition {
			s = ls
		}
	}
	base := ends[l.targetTopic][l.targetPartition] // an existing topic's end; 0 for a new one
	if l.ckpt != nil && len(l.ckpt.Targets) > 0 {
		base = l.ckpt.Targets[0].Base
	}
	if s == nil || s.empty() || o <= s.from {
		return base, true, nil
	}
	first, ok := before[k]
	if !ok {
		var err error
		if first, err = s.log.RecordsBefore(ctx, s.from); err != nil {
			return 0, false, err
		}
		before[k] = first
	}
	n, err := s.log.RecordsBefore(ctx, min(o, s.to+1))
	if err != nil {
		return 0, false, err
	}
	return base + n - first, true, nil
}
