package restore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
)

// TranslatedOffset is one group offset moved to the target.
type TranslatedOffset struct {
	SourceTopic     string
	Partition       int32
	SourceOffset    int64
	TargetTopic     string
	TargetPartition int32
	TargetOffset    int64
}

// GroupResult is what was done for one consumer group.
type GroupResult struct {
	Group   string
	Offsets []TranslatedOffset
	// Err is set when the commit failed.
	Err error
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
// whose offsets fall on restored partitions, and refuses those with active
// members in the target unless force.
func planGroups(ctx context.Context, a *manifest.Archive, t *target, re *regexp.Regexp, ms int64, force bool, restored func(srcKey) bool) ([]groupPlan, error) {
	gc, err := a.GroupsAt(ctx, ms)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("--groups: the archive holds no consumer-group capture at or before %s", fmtMs(ms))
	}
	if err != nil {
		return nil, fmt.Errorf("--groups: %w", err)
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
		return nil, fmt.Errorf("--groups %s: no group in the capture of %s has offsets on the restored partitions", exprString(re), fmtMs(gc.CapturedMs))
	}
	members, err := t.activeMembers(ctx, names)
	if err != nil {
		return nil, err
	}
	var busy []string
	for i := range plans {
		plans[i].active = members[plans[i].group]
		if plans[i].active > 0 {
			busy = append(busy, fmt.Sprintf("%s (%d members)", plans[i].group, plans[i].active))
		}
	}
	if len(busy) > 0 && !force {
		return nil, fmt.Errorf("groups with active members in the target cannot be moved (stop their consumers, or use --force): %s", strings.Join(busy, ", "))
	}
	return plans, nil
}

// commitGroups translates and commits the planned groups' offsets.
func commitGroups(ctx context.Context, adm *kadm.Client, plans []groupPlan, maps map[srcKey]*PartitionMap, log *slog.Logger) ([]GroupResult, error) {
	var out []GroupResult
	var errs []string
	for _, gp := range plans {
		res := GroupResult{Group: gp.group}
		os := kadm.Offsets{}
		for _, o := range gp.offsets {
			m := maps[srcKey{o.Topic, o.Partition}]
			if m == nil || !m.Complete {
				continue
			}
			to := TranslatedOffset{SourceTopic: o.Topic, Partition: o.Partition, SourceOffset: o.Offset,
				TargetTopic: m.TargetTopic, TargetPartition: m.TargetPartition, TargetOffset: m.Translate(o.Offset)}
			res.Offsets = append(res.Offsets, to)
			meta := ""
			if o.Metadata != nil {
				meta = *o.Metadata
			}
			os.Add(kadm.Offset{Topic: to.TargetTopic, Partition: to.TargetPartition, At: to.TargetOffset, LeaderEpoch: -1, Metadata: meta})
		}
		if len(res.Offsets) > 0 {
			resp, err := adm.CommitOffsets(ctx, gp.group, os)
			if err == nil {
				err = resp.Error()
			}
			if err != nil {
				res.Err = fmt.Errorf("commit offsets of group %s: %w", gp.group, err)
				errs = append(errs, res.Err.Error())
			} else {
				log.Info("restore: group offsets committed", "group", gp.group, "offsets", len(res.Offsets))
			}
		}
		out = append(out, res)
	}
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
	t, err := connectTarget(ctx, o.KafkaOpts)
	if err != nil {
		return nil, err
	}
	defer t.close()
	at := o.AtMs
	if at == 0 {
		at = m.CatalogMs
	}
	plans, err := planGroups(ctx, a, t, o.Groups, at, o.Force, func(k srcKey) bool { return maps[k] != nil })
	if err != nil {
		return nil, err
	}
	if o.DryRun {
		var out []GroupResult
		for _, gp := range plans {
			res := GroupResult{Group: gp.group}
			for _, off := range gp.offsets {
				pm := maps[srcKey{off.Topic, off.Partition}]
				res.Offsets = append(res.Offsets, TranslatedOffset{SourceTopic: off.Topic, Partition: off.Partition, SourceOffset: off.Offset,
					TargetTopic: pm.TargetTopic, TargetPartition: pm.TargetPartition, TargetOffset: pm.Translate(off.Offset)})
			}
			out = append(out, res)
		}
		return out, nil
	}
	return commitGroups(ctx, t.adm, plans, maps, o.Logger)
}

// sortGroupResults orders results by group name.
func sortGroupResults(rs []GroupResult) {
	sort.Slice(rs, func(i, j int) bool { return rs[i].Group < rs[j].Group })
}
