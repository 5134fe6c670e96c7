package restore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kbackup/kbackup/internal/jsonobj"
	"github.com/kbackup/kbackup/internal/lease"
	"github.com/kbackup/kbackup/store"
)

// Group moves are recorded under the restore (docs/FORMAT.md §10.5) so
// that a group is moved once: a rerun of the restore, or `offsets
// translate` without Again, never moves it again, and never moves a group
// that committed since.

// Group states in a GroupResult.
const (
	GroupMoved      = "moved"                            // committed by this run
	GroupAlready    = "already moved"                    // moved before; not moved again
	GroupSuperseded = "not moved: it committed since"    // a move left unfinished, and the group moved on
	GroupFailed     = "FAILED"                           // the commit failed (see Err)
	GroupWouldMove  = "would move (dry run)"             // DryRun
	GroupNothing    = "nothing to move (no translation)" // no offset on a completed partition
)

const (
	groupFormat     = "kbackup-restore-group"
	moveMoving      = "moving"
	moveMoved       = "moved"
	moveSuperseded  = "superseded"
	noCommittedOffs = -1
)

type movedOffset struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	From      int64  `json:"from"`
	To        int64  `json:"to"`
}

type groupMove struct {
	State      string        `json:"state"`
	StartedMs  int64         `json:"started_ms"`
	FinishedMs int64         `json:"finished_ms"`
	By         string        `json:"by"`
	Again      bool          `json:"again"`
	Offsets    []movedOffset `json:"offsets"`
}

// groupRecord is restores/<id>/groups/<hash>.json.
type groupRecord struct {
	Format        string      `json:"format"`
	FormatVersion int         `json:"format_version"`
	RestoreID     string      `json:"restore_id"`
	Group         string      `json:"group"`
	Moves         []groupMove `json:"moves"`
}

func (r *groupRecord) last() *groupMove { return &r.Moves[len(r.Moves)-1] }

// groupKey names a group's record: group ids may hold any character.
func groupKey(id, group string) string {
	h := sha256.Sum256([]byte(group))
	return lease.Dir(id) + "groups/" + hex.EncodeToString(h[:16]) + ".json"
}

func loadGroupRecord(ctx context.Context, st store.Store, id, group string) (*groupRecord, error) {
	var r groupRecord
	found, err := jsonobj.Get(ctx, st, groupKey(id, group), &r)
	if err != nil || !found {
		return nil, err
	}
	if r.Format != groupFormat || r.FormatVersion != stateVersion || len(r.Moves) == 0 || r.Group != group {
		return nil, fmt.Errorf("%s: not a version %d record of group %s (upgrade kbackup?)", groupKey(id, group), stateVersion, group)
	}
	return &r, nil
}

// groupMover moves the groups of one restore, once each.
type groupMover struct {
	st  store.Store
	id  string
	adm *kadm.Client
	by  string
	now func() time.Time
	log *slog.Logger
}

// committed returns the group's committed offsets in the target.
func (gm *groupMover) committed(ctx context.Context, group string) (kadm.OffsetResponses, error) {
	fo, err := gm.adm.FetchOffsets(ctx, group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		return kadm.OffsetResponses{}, nil // no such group: nothing committed
	}
	if err != nil {
		return nil, fmt.Errorf("fetch the committed offsets of group %s: %w", group, err)
	}
	return fo, nil
}

func currentOf(fo kadm.OffsetResponses, topic string, p int32) int64 {
	if o, ok := fo.Lookup(topic, p); ok && o.Err == nil {
		return o.At
	}
	return noCommittedOffs
}

// move commits the translated offsets res.Offsets of group unless this
// restore moved it before (or, with again, also then). meta holds the
// captured commit metadata per target partition.
func (gm *groupMover) move(ctx context.Context, res *GroupResult, meta map[srcKey]string, again bool) {
	if len(res.Offsets) == 0 {
		res.State = GroupNothing
		return
	}
	fo, err := gm.committed(ctx, res.Group)
	if err != nil {
		res.State, res.Err = GroupFailed, err
		return
	}
	for i := range res.Offsets {
		res.Offsets[i].From = currentOf(fo, res.Offsets[i].TargetTopic, res.Offsets[i].TargetPartition)
	}
	rec, err := loadGroupRecord(ctx, gm.st, gm.id, res.Group)
	for attempt := 0; err == nil && rec == nil && attempt < 2; attempt++ {
		rec = &groupRecord{Format: groupFormat, FormatVersion: stateVersion, RestoreID: gm.id, Group: res.Group, Moves: []groupMove{gm.newMove(res, false)}}
		err = jsonobj.Put(ctx, gm.st, groupKey(gm.id, res.Group), rec, store.PutOptions{IfNotExists: true})
		if errors.Is(err, store.ErrExists) {
			rec, err = loadGroupRecord(ctx, gm.st, gm.id, res.Group) // another process records it: follow its record
			continue
		}
		if err == nil {
			gm.commit(ctx, res, rec, meta, res.Offsets)
			return
		}
	}
	if err != nil {
		res.State, res.Err = GroupFailed, err
		return
	}
	last := rec.last()
	switch {
	case again:
		rec.Moves = append(rec.Moves, gm.newMove(res, true))
		if err := jsonobj.Put(ctx, gm.st, groupKey(gm.id, res.Group), rec, store.PutOptions{}); err != nil {
			res.State, res.Err = GroupFailed, err
			return
		}
		gm.commit(ctx, res, rec, meta, res.Offsets)
	case last.State == moveMoving:
		gm.resolve(ctx, res, rec, fo, meta)
	default:
		gm.already(res, last)
	}
}

func (gm *groupMover) newMove(res *GroupResult, again bool) groupMove {
	mv := groupMove{State: moveMoving, StartedMs: gm.now().UnixMilli(), By: gm.by, Again: again}
	for _, o := range res.Offsets {
		mv.Offsets = append(mv.Offsets, movedOffset{Topic: o.TargetTopic, Partition: o.TargetPartition, From: o.From, To: o.TargetOffset})
	}
	return mv
}

// already reports a group this restore moved before.
func (gm *groupMover) already(res *GroupResult, last *groupMove) {
	res.State, res.MovedMs = GroupAlready, last.FinishedMs
	if last.State == moveSuperseded {
		res.State = GroupSuperseded
	}
	gm.log.Info("restore: group was moved by this restore before; not moved again (offsets translate --again moves it)", "group", res.Group, "moved", fmtMs(last.FinishedMs))
}

// resolve finishes a move a process left "moving": the commit happened
// (every partition at `to`), did not happen (at `from`: commit now), or the
// group committed since (superseded: no commit).
func (gm *groupMover) resolve(ctx context.Context, res *GroupResult, rec *groupRecord, fo kadm.OffsetResponses, meta map[srcKey]string) {
	last := rec.last()
	var todo []TranslatedOffset
	for _, mo := range last.Offsets {
		cur := currentOf(fo, mo.Topic, mo.Partition)
		switch cur {
		case mo.To:
		case mo.From:
			todo = append(todo, TranslatedOffset{TargetTopic: mo.Topic, TargetPartition: mo.Partition, TargetOffset: mo.To, From: mo.From})
		default:
			last.State, last.FinishedMs = moveSuperseded, gm.now().UnixMilli()
			if err := jsonobj.Put(ctx, gm.st, groupKey(gm.id, res.Group), rec, store.PutOptions{}); err != nil {
				res.State, res.Err = GroupFailed, err
				return
			}
			gm.log.Warn("restore: an unfinished group move is abandoned: the group committed since", "group", res.Group,
				"partition", fmt.Sprintf("%s/%d", mo.Topic, mo.Partition), "offset", cur, "move_from", mo.From, "move_to", mo.To)
			gm.already(res, last)
			return
		}
	}
	res.Offsets = res.Offsets[:0]
	for _, mo := range last.Offsets {
		res.Offsets = append(res.Offsets, TranslatedOffset{TargetTopic: mo.Topic, TargetPartition: mo.Partition, TargetOffset: mo.To, From: mo.From})
	}
	gm.commit(ctx, res, rec, meta, todo)
}

// commit commits offs and records the last move as done.
func (gm *groupMover) commit(ctx context.Context, res *GroupResult, rec *groupRecord, meta map[srcKey]string, offs []TranslatedOffset) {
	if len(offs) > 0 {
		os := kadm.Offsets{}
		for _, o := range offs {
			os.Add(kadm.Offset{Topic: o.TargetTopic, Partition: o.TargetPartition, At: o.TargetOffset, LeaderEpoch: -1,
				Metadata: meta[srcKey{o.TargetTopic, o.TargetPartition}]})
		}
		resp, err := gm.adm.CommitOffsets(ctx, res.Group, os)
		if err == nil {
			err = resp.Error()
		}
		if err != nil {
			res.State, res.Err = GroupFailed, fmt.Errorf("commit offsets of group %s: %w", res.Group, err)
			return
		}
	}
	last := rec.last()
	last.State, last.FinishedMs = moveMoved, gm.now().UnixMilli()
	if err := jsonobj.Put(ctx, gm.st, groupKey(gm.id, res.Group), rec, store.PutOptions{}); err != nil {
		// Committed; the record still says "moving", which a rerun
		// resolves as done (the offsets are at `to`).
		gm.log.Warn("restore: group moved, but its record not updated (a rerun completes it)", "group", res.Group, "err", err)
	}
	res.State, res.MovedMs = GroupMoved, last.FinishedMs
	gm.log.Info("restore: group offsets committed", "group", res.Group, "offsets", len(res.Offsets))
}
