package restore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"

	"github.com/kbackup/kbackup/internal/lease"
	"github.com/kbackup/kbackup/internal/logrange"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
)

// source is one archived partition of a lane, with its resolved bounds.
type source struct {
	log     *manifest.PartitionLog
	topicID string
	// from..to is the selected offset range, inclusive; to < from selects
	// nothing.
	from, to int64
	// Estimates at commit granularity, for the plan and the ETA.
	approxRecords, approxBytes int64
	minTs, maxTs               int64
	// expiredBelow is the partition's archive start (0: nothing expired),
	// recoverableFrom its oldest recoverable time (unix ms, 0 if unknown).
	expiredBelow, recoverableFrom int64
}

func (s *source) empty() bool { return s.to < s.from }

// lane is a unit of restore work with its own checkpoint: one source
// partition into one target partition, or (repartition) one source topic
// into all partitions of its target topic.
type lane struct {
	name            string
	sourceTopic     string
	targetTopic     string
	targetPartition int32 // -1: repartitioned over the target topic
	sources         []*source
	ckpt            *checkpoint // nil: not started
}

// PlanTopic is one target topic of a plan.
type PlanTopic struct {
	Source string `json:"source"`
	Target string `json:"target"`
	// Create is true when the target topic does not exist and the restore
	// creates it with Partitions, ReplicationFactor (-1 = broker default)
	// and Configs.
	Create            bool              `json:"create"`
	Partitions        int32             `json:"partitions"`
	ReplicationFactor int16             `json:"replication_factor"`
	Configs           map[string]string `json:"configs,omitempty"`
	// LogAppendTime: the target topic sets broker timestamps, so restored
	// records get new timestamps.
	LogAppendTime bool `json:"log_append_time"`
}

// PlanPartition is one source partition of a plan.
type PlanPartition struct {
	SourceTopic     string `json:"source_topic"`
	SourcePartition int32  `json:"source_partition"`
	TargetTopic     string `json:"target_topic"`
	// TargetPartition is -1 with Repartition.
	TargetPartition int32 `json:"target_partition"`
	// From..To is the selected source offset range (inclusive); To < From
	// selects nothing.
	From int64 `json:"from"`
	To   int64 `json:"to"`
	// ApproxRecords and ApproxBytes (archived segment bytes) are upper
	// bounds counted at commit granularity; MinTimestamp..MaxTimestamp the
	// timestamps of the commits holding the range.
	ApproxRecords int64 `json:"approx_records"`
	ApproxBytes   int64 `json:"approx_bytes"`
	MinTimestamp  int64 `json:"min_timestamp"`
	MaxTimestamp  int64 `json:"max_timestamp"`
	// State is "new", "resume" (a checkpoint exists) or "done".
	State string `json:"state"`
	// ExpiredBelow is the source partition's archive start: retention
	// expired the offsets below it, which cannot be restored (0: none
	// expired). RecoverableFromMs is its oldest recoverable time (unix ms).
	ExpiredBelow      int64 `json:"expired_below,omitempty"`
	RecoverableFromMs int64 `json:"recoverable_from_ms,omitempty"`
}

// PlanGroup is a consumer group whose offsets the restore translates.
type PlanGroup struct {
	Group string `json:"group"`
	// Offsets is the number of committed offsets on restored partitions.
	Offsets int `json:"offsets"`
	// ActiveMembers in the target (the group is refused unless Force).
	ActiveMembers int `json:"active_members"`
	// Translated lists each captured offset with its target offset: exact
	// for partitions already restored, predicted from the archive for the
	// others (dry runs only; nil otherwise), and the group's committed
	// offset in the target now (From).
	Translated []TranslatedOffset `json:"translated,omitempty"`
	// MovedMs is when this restore moved the group already (0: never):
	// such a group is not moved again.
	MovedMs int64 `json:"moved_ms,omitempty"`
}

// Holder identifies one process running a restore: the owner of a lease
// or a worker record (docs/FORMAT.md §10.4).
type Holder = lease.Holder

// Plan is what a restore does, computed before anything is written.
type Plan struct {
	RestoreID       string `json:"restore_id"`
	TargetClusterID string `json:"target_cluster_id"`
	// CatalogMs is the restore's end time: topic configs and group offsets
	// come from the newest captures at or before it.
	CatalogMs  int64           `json:"catalog_ms"`
	Range      string          `json:"range"`
	Topics     []PlanTopic     `json:"topics"`
	Partitions []PlanPartition `json:"partitions"`
	Groups     []PlanGroup     `json:"groups"`
	Warnings   []string        `json:"warnings"`
	// Refusals are the items a real run refuses; a real run writes nothing
	// while there is any (a dry run lists them with the plan).
	Refusals []Refusal `json:"refusals"`
	// Running are the other processes running this restore now.
	Running []Holder `json:"running,omitempty"`
	// CompletedMs is when the restore completed (its report exists); 0
	// while it has not.
	CompletedMs int64 `json:"completed_ms,omitempty"`
}

// catalogTime is the restore's end time, whose catalog captures (topic
// configs, group offsets) the restore uses: the --to time, else now.
func (o *Options) catalogTime() int64 {
	if o.Range.HasToTime {
		return o.Range.ToTime
	}
	return o.Now().UnixMilli()
}

// selectTopics returns the archived topics the options select, refusing a
// selection that matches nothing and renames of unselected topics.
func selectTopics(ctx context.Context, a *manifest.Archive, o *Options) ([]string, error) {
	all, err := a.Topics(ctx)
	if err != nil {
		return nil, fmt.Errorf("list archived topics: %w", err)
	}
	out, err := o.Topics.Select(all)
	if err != nil {
		return nil, err
	}
	for src := range o.Rename {
		if !contains(out, src) {
			return nil, fmt.Errorf("--rename %s=%s: topic %s is not among the restored topics (%s)", src, o.Rename[src], src, strings.Join(out, ", "))
		}
	}
	targets := map[string]string{}
	for _, t := range out {
		dst := o.targetName(t)
		if prev, ok := targets[dst]; ok {
			return nil, fmt.Errorf("topics %s and %s would both be restored into %s: rename one of them", prev, t, dst)
		}
		targets[dst] = t
	}
	return out, nil
}

// exprString shows an anchored expression as the user wrote it.
func exprString(re *regexp.Regexp) string {
	return strings.TrimSuffix(strings.TrimPrefix(re.String(), "^(?:"), ")$")
}

func contains[T comparable](s []T, v T) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// planSources resolves the selected partitions of topic's current
// incarnation. prev, when the restore has a stored manifest, pins the
// bounds to the ones the first run resolved.
func planSources(ctx context.Context, a *manifest.Archive, o *Options, topic string, prev map[string]manifestSource) ([]*source, error) {
	inc, err := a.CurrentIncarnation(ctx, topic)
	if err != nil {
		return nil, err
	}
	parts, err := a.SelectPartitions(ctx, topic, inc.TopicID, o.Partitions)
	if err != nil {
		return nil, err
	}
	var out []*source
	for _, p := range parts {
		s := &source{log: a.Partition(topic, inc.TopicID, p), topicID: inc.TopicID.String()}
		if ms, ok := prev[laneName(topic, p)]; ok {
			if ms.TopicID != s.topicID {
				return nil, fmt.Errorf("topic %s was re-created in the archive since this restore started (topic id %s, was %s): use a new restore id", topic, s.topicID, ms.TopicID)
			}
			s.from, s.to = ms.From, ms.To
		} else if err := resolveSource(ctx, s, o.Range); err != nil {
			return nil, err
		}
		st, err := s.log.ArchiveStart(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.log, err)
		}
		if st != nil {
			s.expiredBelow = st.Start
			if ms, ok := st.RecoverableFrom(); ok {
				s.recoverableFrom = ms
			}
		}
		if err := estimate(ctx, s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// resolveSource turns the range into exact offsets: the time bounds via
// the time index (logrange.Resolve) and an open end via the head.
//
// A --to time resolves to the offset before an archived record, which is
// inside the archive: then the head (one LIST and one GET) is not needed.
func resolveSource(ctx context.Context, s *source, r logrange.Range) error {
	var head *manifest.Commit
	readHead := func() error {
		var err error
		if head, err = s.log.Head(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.log, err)
		}
		return nil
	}
	if !r.HasToTime || r.HasToOffset {
		if err := readHead(); err != nil {
			return err
		}
		if head == nil {
			s.from, s.to = 0, -1
			return nil
		}
	}
	b, err := logrange.Resolve(ctx, s.log, r)
	if err != nil {
		if errors.Is(err, manifest.ErrExpired) {
			return err // names the partition, the bound and the oldest recoverable offset and time
		}
		if head == nil && errors.Is(err, manifest.ErrOutOfRange) {
			s.from, s.to = 0, -1
			return nil
		}
		return fmt.Errorf("%s: resolve %s: %w", s.log, r, err)
	}
	if b.Empty {
		s.from, s.to = 0, -1
		return nil
	}
	s.from, s.to = b.From, b.To
	if head == nil && s.to < 0 {
		// --to is after every archived timestamp: the archive's end.
		if err := readHead(); err != nil {
			return err
		}
		if head == nil {
			s.from, s.to = 0, -1
			return nil
		}
	}
	if head != nil && (s.to < 0 || s.to > head.End) {
		s.to = head.End
	}
	if s.from > s.to {
		s.from, s.to = 0, -1
	}
	return nil
}

// estimate fills the commit-granular estimates: two LIST+GET pairs.
func estimate(ctx context.Context, s *source) error {
	if s.empty() {
		return nil
	}
	first, err := s.log.Find(ctx, s.from)
	if err != nil {
		return fmt.Errorf("%s: %w", s.log, err)
	}
	last := first
	if !first.Covers(s.to) {
		if last, err = s.log.Find(ctx, s.to); err != nil {
			return fmt.Errorf("%s: %w", s.log, err)
		}
	}
	s.approxRecords = last.TotalRecords - first.TotalRecords + first.Records
	s.approxBytes = last.TotalBytes - first.TotalBytes + first.SegmentSize
	s.minTs, s.maxTs = first.MinTimestamp, last.MaxTimestamp
	return nil
}

// buildLanes groups the sources of topic into lanes.
func buildLanes(o *Options, topic string, sources []*source) []*lane {
	target := o.targetName(topic)
	if o.Repartition {
		return []*lane{{name: laneName(topic, -1), sourceTopic: topic, targetTopic: target, targetPartition: -1, sources: sources}}
	}
	var out []*lane
	for _, s := range sources {
		out = append(out, &lane{name: laneName(topic, s.log.Partition), sourceTopic: topic, targetTopic: target,
			targetPartition: s.log.Partition, sources: []*source{s}})
	}
	return out
}

// topicCatalog finds the archived configuration of topic (preferring the
// entry of the archived incarnation) in the newest topics capture at or
// before ms; nil if there is none.
func topicCatalog(ctx context.Context, a *manifest.Archive, ms int64, topic, topicID string) (*manifest.TopicCatalog, error) {
	tc, err := a.TopicsAt(ctx, ms)
	if errors.Is(err, store.ErrNotFound) && ms != math.MaxInt64 {
		// No capture before the end time (the archiver captures after its
		// first pass): the oldest later one still describes the topic.
		tc, err = a.TopicsAt(ctx, math.MaxInt64)
	}
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("topics capture: %w", err)
	}
	var byName *manifest.TopicCatalog
	for i := range tc.Topics {
		t := &tc.Topics[i]
		if t.Name == topic && t.TopicID == topicID {
			return t, nil
		}
		if t.Name == topic {
			byName = t
		}
	}
	return byName, nil
}

// toManifest records the resolved lanes.
func toManifest(lanes []*lane) []manifestLane {
	var out []manifestLane
	for _, l := range lanes {
		ml := manifestLane{Lane: l.name, TargetTopic: l.targetTopic}
		for _, s := range l.sources {
			ml.Sources = append(ml.Sources, manifestSource{Topic: s.log.Topic, TopicID: s.topicID,
				Partition: s.log.Partition, From: s.from, To: s.to})
		}
		out = append(out, ml)
	}
	return out
}

// prevSources indexes a stored manifest's sources by partition lane name.
func prevSources(m *restoreManifest) map[string]manifestSource {
	out := map[string]manifestSource{}
	if m == nil {
		return out
	}
	for _, l := range m.Lanes {
		for _, s := range l.Sources {
			out[laneName(s.Topic, s.Partition)] = s
		}
	}
	return out
}
