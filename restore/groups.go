package restore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/internal/lease"
	"github.com/kbackup/kbackup/internal/logrange"
	"github.com/kbackup/kbackup/internal/target"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
)

// TranslatedOffset is one group offset moved to the target.
type TranslatedOffset struct {
	SourceTopic     string `json:"source_topic"`
	Partition       int32  `json:"source_partition"`
	SourceOffset    int64  `json:"source_offset"`
	TargetTopic     string `json:"target_topic"`
	TargetPartition int32  `json:"target_partition"`
	TargetOffset    int64  `json:"target_offset"`
	// From is the group's committed offset in the target before the move
	// (-1: none).
	From int64 `json:"from"`
	// Predicted: a dry run's translation for a partition not yet restored,
	// counted from the archive (the target offset its restore will give).
	Predicted bool `json:"predicted,omitempty"`
}

// GroupResult is what was done (or, in a dry run, would be done) for one
// consumer group.
type GroupResult struct {
	Group   string             `json:"group"`
	Offsets []TranslatedOffset `json:"offsets"`
	// State is one of the Group* states.
	State string `json:"state"`
	// MovedMs is when this restore moved the group (0: not moved).
	MovedMs int64 `json:"moved_ms,omitempty"`
	// Err is set when the commit failed.
	Err error `json:"-"`
}

// groupPlan is one group whose captured offsets touch restored partitions.
type groupPlan struct {
	group   string
	offsets []manifest.GroupOffset
	active  int
}

// srcKey identifies a source partition.
type srcKey struct {
	topic     string
	partition int32
}

// planGroups selects the groups of the newest capture at or before ms
// whose offsets fall on restored partitions. Groups with active members in
// the target (unless force) and a capture that does not exist are
// refusals; restoreID names the restore in the remedies.
func planGroups(ctx context.Context, a *manifest.Archive, t *target.Cluster, re *regexp.Regexp, ms int64, force bool, restored func(srcKey) bool, restoreID string) ([]groupPlan, []Refusal, error) {
	gc, err := a.GroupsAt(ctx, ms)
	if errors.Is(err, store.ErrNotFound) {
		r := Refusal{Item: "--groups", Reason: fmt.Sprintf("cannot be used: the archive holds no consumer-group capture at or before %s", fmtMs(ms))}
		first, ok, err := a.CaptureAfter(ctx, manifest.CatalogGroups, ms)
		if err != nil {
			return nil, nil, fmt.Errorf("--groups: %w", err)
		}
		if ok {
			r.Reason += fmt.Sprintf(" (the first is at %s)", fmtMs(first))
			r.Remedy = fmt.Sprintf("restore without --groups, then move the groups from that capture with `kbackup offsets translate --restore-id %s --groups '%s' --at %s` (offsets past the restored window go to its end)",
				restoreID, exprString(re), logrange.FormatTime(first))
		}
		return nil, []Refusal{r}, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("--groups: %w", err)
	}
	var plans []groupPlan
	var names []string
	for _, g := range gc.Groups {
		if !re.MatchString(g.Group) {
			continue
		}
		gp := groupPlan{group: g.Group}
		for _, o := range g.Offsets {
			if o.Offset >= 0 && restored(srcKey{o.Topic, o.Partition}) {
				gp.offsets = append(gp.offsets, o)
			}
		}
		if len(gp.offsets) > 0 {
			plans = append(plans, gp)
			names = append(names, g.Group)
		}
	}
	if len(plans) == 0 {
		return nil, []Refusal{{Item: "--groups " + exprString(re), Reason: fmt.Sprintf("matches no group with offsets on the restored partitions in the capture of %s", fmtMs(gc.CapturedMs)),
			Remedy: "check the expression against the groups the archiver captured"}}, nil
	}
	members, err := t.ActiveMembers(ctx, names)
	if err != nil {
		return nil, nil, err
	}
	var refused []Refusal
	for i := range plans {
		plans[i].active = members[plans[i].group]
		if plans[i].active > 0 && !force {
			refused = append(refused, Refusal{Item: "group " + plans[i].group, Reason: fmt.Sprintf("has %d active members in the target and cannot be moved", plans[i].active),
				Remedy: "stop its consumers, or use --force"})
		}
	}
	return plans, refused, nil
}

// translate computes the target offsets of a group's captured offsets on
// completed partitions, and the captured commit metadata of each.
func translate(gp groupPlan, maps map[srcKey]*PartitionMap) (GroupResult, map[srcKey]string) {
	res := GroupResult{Group: gp.group}
	meta := map[srcKey]string{}
	for _, o := range gp.offsets {
		m := maps[srcKey{o.Topic, o.Partition}]
		if m == nil || !m.Complete {
			continue
		}
		res.Offsets = append(res.Offsets, TranslatedOffset{SourceTopic: o.Topic, Partition: o.Partition, SourceOffset: o.Offset,
			TargetTopic: m.TargetTopic, TargetPartition: m.TargetPartition, TargetOffset: m.Translate(o.Offset), From: noCommittedOffs})
		if o.Metadata != nil {
			meta[srcKey{m.TargetTopic, m.TargetPartition}] = *o.Metadata
		}
	}
	return res, meta
}

// commitGroups translates the planned groups' offsets and moves each group
// once (groupMover.move); again moves groups this restore moved before.
func commitGroups(ctx context.Context, gm *groupMover, plans []groupPlan, maps map[srcKey]*PartitionMap, again bool) ([]GroupResult, error) {
	var out []GroupResult
	var errs []string
	for _, gp := range plans {
		res, meta := translate(gp, maps)
		gm.move(ctx, &res, meta, again)
		if res.Err != nil {
			errs = append(errs, res.Err.Error())
		}
		out = append(out, res)
	}
	sortGroupResults(out)
	if len(errs) > 0 {
		return out, errors.New(strings.Join(errs, "; "))
	}
	return out, nil
}

// TranslateOptions configure TranslateGroups (`kbackup offsets translate`).
type TranslateOptions struct {
	// Store holds the archive (the consumer-group captures). Required.
	Store store.Store
	// StateStore holds the restore's offset map. nil means Store.
	StateStore store.Store
	// KafkaOpts connect to the target cluster. Required.
	KafkaOpts []kgo.Opt
	// RestoreID names the restore whose stored map is used. Ignored when
	// OffsetMapFile is set; one of the two is required.
	RestoreID string
	// OffsetMapFile reads the map from a file written by a restore.
	OffsetMapFile string
	// Groups selects the groups to move (anchored expression). Required.
	Groups *regexp.Regexp
	// AtMs picks the groups capture at or before this time. 0 means the
	// restore's end time recorded in the map.
	AtMs int64
	// Force moves groups with active members in the target.
	Force bool
	// Again moves groups that the restore (or an earlier translate) moved
	// already. The zero value leaves such groups where they are: moving a
	// group again would undo what its consumers committed since.
	Again bool
	// DryRun computes and returns the translated offsets, commits nothing.
	DryRun bool
	// Logger receives structured logs. nil discards them.
	Logger *slog.Logger
}

// TranslateGroups commits, in the target, the translated offsets of the
// selected groups from a stored offset map: the same rules as a restore's
// Groups, applied later (e.g. after consumers were stopped).
func TranslateGroups(ctx context.Context, o TranslateOptions) ([]GroupResult, error) {
	if o.Store == nil || len(o.KafkaOpts) == 0 || o.Groups == nil {
		return nil, fmt.Errorf("offsets translate: store, target brokers and groups are required")
	}
	if o.StateStore == nil {
		o.StateStore = o.Store
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	var m *OffsetMap
	var err error
	switch {
	case o.OffsetMapFile != "":
		m, err = ReadOffsetMapFile(o.OffsetMapFile)
	case o.RestoreID != "":
		m, err = ReadOffsetMap(ctx, o.StateStore, o.RestoreID)
	default:
		return nil, fmt.Errorf("offsets translate: name the restore (--restore-id) or its offset map file (--offset-map)")
	}
	if err != nil {
		return nil, err
	}
	maps := map[srcKey]*PartitionMap{}
	var incomplete []string
	for i := range m.Partitions {
		pm := &m.Partitions[i]
		if !pm.Complete {
			incomplete = append(incomplete, fmt.Sprintf("%s/%d", pm.SourceTopic, pm.SourcePartition))
			continue
		}
		maps[srcKey{pm.SourceTopic, pm.SourcePartition}] = pm
	}
	if len(incomplete) > 0 {
		o.Logger.Warn("offsets translate: partitions whose restore did not complete are left alone", "partitions", strings.Join(incomplete, ","))
	}
	a, err := manifest.Open(ctx, o.Store)
	if err != nil {
		return nil, err
	}
	t, err := target.Connect(ctx, o.KafkaOpts)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	at := o.AtMs
	if at == 0 {
		at = m.CatalogMs
	}
	plans, refused, err := planGroups(ctx, a, t, o.Groups, at, o.Force, func(k srcKey) bool { return maps[k] != nil }, m.RestoreID)
	if err != nil {
		return nil, err
	}
	if len(refused) > 0 {
		return nil, refusalsError(refused)
	}
	gm := &groupMover{st: o.StateStore, id: m.RestoreID, adm: t.Admin, by: lease.NewHolder("", time.Now()).String(), now: time.Now, log: o.Logger}
	if !o.DryRun {
		return commitGroups(ctx, gm, plans, maps, o.Again)
	}
	var out []GroupResult
	for _, gp := range plans {
		res, _ := translate(gp, maps)
		res.State = GroupWouldMove
		if fo, err := gm.committed(ctx, gp.group); err == nil {
			for i := range res.Offsets {
				res.Offsets[i].From = currentOf(fo, res.Offsets[i].TargetTopic, res.Offsets[i].TargetPartition)
			}
		}
		rec, err := loadGroupRecord(ctx, o.StateStore, m.RestoreID, gp.group)
		if err != nil {
			return nil, err
		}
		if rec != nil && rec.last().State != moveMoving && !o.Again {
			res.State, res.MovedMs = GroupAlready, rec.last().FinishedMs
		}
		out = append(out, res)
	}
	sortGroupResults(out)
	return out, nil
}

// sortGroupResults orders results by group name.
func sortGroupResults(rs []GroupResult) {
	sort.Slice(rs, func(i, j int) bool { return rs[i].Group < rs[j].Group })
}
