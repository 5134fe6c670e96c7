package restore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/internal/logrange"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
)

// Lane states in a PartitionResult.
const (
	StatusComplete = "complete"         // restored in this run
	StatusDone     = "already complete" // a previous run finished it
	StatusFailed   = "failed"           // did not complete; rerun to resume
	StatusSkipped  = "not started"      // the restore stopped before it began
)

// PartitionResult reports one lane: a source partition, or with
// Repartition a whole source topic (SourcePartition -1).
type PartitionResult struct {
	SourceTopic     string
	SourcePartition int32
	TargetTopic     string
	TargetPartition int32
	Status          string
	// Records and Bytes restored by this lane in total (all runs); Produced
	// is the part this run produced.
	Records, Bytes, Produced int64
	Err                      error
}

// Name is "topic/partition" (or "topic" for a repartitioning lane).
func (r PartitionResult) Name() string {
	if r.SourcePartition < 0 {
		return r.SourceTopic
	}
	return fmt.Sprintf("%s/%d", r.SourceTopic, r.SourcePartition)
}

// Summary is the result of a restore.
type Summary struct {
	RestoreID string
	Plan      *Plan
	DryRun    bool
	// Partitions has one result per lane, in plan order.
	Partitions []PartitionResult
	Groups     []GroupResult
	// OffsetMap is the map stored under restores/<id>/offset-map.json
	// (nil with DryRun or Repartition).
	OffsetMap *OffsetMap
	// Records and Bytes produced by this run.
	Records, Bytes int64
	Duration       time.Duration
}

// IncompleteError is returned when some lanes did not complete. The
// restore can be resumed by running it again.
type IncompleteError struct {
	RestoreID string
	// Failed names every partition that did not complete, with its reason.
	Failed []string
	// Total is the number of lanes.
	Total int
}

func (e *IncompleteError) Error() string {
	return fmt.Sprintf("restore %s incomplete: %d of %d partitions did not complete: %s (run the same restore again to resume)",
		e.RestoreID, len(e.Failed), e.Total, strings.Join(e.Failed, "; "))
}

// runner is the state shared by the lanes of one restore.
type runner struct {
	o              *Options
	id             string
	t              *target
	st             store.Store
	records, bytes atomic.Int64
}

// Run plans and executes a restore (see the package documentation). It
// returns the summary also on failure when the restore started; the error
// is an *IncompleteError when some partitions did not complete.
func Run(ctx context.Context, opts Options) (*Summary, error) {
	o := &opts
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	start := o.Now()
	cache := newReadCache(o.Store)
	a, err := manifest.Open(ctx, cache)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	topics, err := selectTopics(ctx, a, o)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	t, err := connectTarget(ctx, o.KafkaOpts,
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.MaxBufferedRecords(1<<20),
		kgo.MaxBufferedBytes(int(min(int64(o.Concurrency)*o.MaxInFlightBytes+(64<<20), math.MaxInt32))),
		kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	defer t.close()
	id := o.ID
	if id == "" {
		id = deriveID(t.clusterID, o.requestString())
	}
	rn := &runner{o: o, id: id, t: t, st: o.StateStore}
	prev, err := loadManifest(ctx, o.StateStore, id)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", id, err)
	}
	catalogMs := o.catalogTime()
	if prev != nil {
		catalogMs = prev.CatalogMs
	}
	plan, lanes, groups, err := rn.plan(ctx, a, topics, prev, catalogMs)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", id, err)
	}
	sum := &Summary{RestoreID: id, Plan: plan, DryRun: o.DryRun}
	if o.DryRun {
		return sum, nil
	}
	cache.freeze()
	// Everything was checked: from here on the restore writes.
	if prev == nil {
		m := &restoreManifest{Format: restoreFormat, FormatVersion: stateVersion, RestoreID: id, CreatedMs: start.UnixMilli(),
			CreatedBy: o.Version, TargetClusterID: t.clusterID, CatalogMs: catalogMs, Request: o.requestString(), Lanes: toManifest(lanes)}
		if err := putJSON(ctx, o.StateStore, manifestKey(id), m, store.PutOptions{IfNotExists: true}); err != nil && !errors.Is(err, store.ErrExists) {
			return nil, fmt.Errorf("restore %s: %w", id, err)
		}
	}
	logAppend := map[string]bool{}
	for _, pt := range plan.Topics {
		if pt.Create {
			if err := t.create(ctx, pt); err != nil {
				return nil, fmt.Errorf("restore %s: %w", id, err)
			}
			o.Logger.Info("restore: target topic created", "topic", pt.Target, "partitions", pt.Partitions, "replication_factor", pt.ReplicationFactor)
		}
		if la, err := t.logAppendTime(ctx, pt.Target); err != nil {
			o.Logger.Warn("restore: cannot read the target topic's timestamp type", "topic", pt.Target, "err", err)
		} else if la {
			logAppend[pt.Target] = true
			o.Logger.Warn("restore: target topic uses LogAppendTime: restored records get the broker's timestamps, not the archived ones", "topic", pt.Target)
		}
	}
	if err := rn.settle(ctx, lanes); err != nil {
		return nil, fmt.Errorf("restore %s: %w", id, err)
	}
	o.Logger.Info("restore: starting", "restore_id", id, "partitions", len(plan.Partitions), "lanes", len(lanes), "range", plan.Range)

	results := rn.execute(ctx, lanes, logAppend)
	sum.Partitions = results
	sum.Records, sum.Bytes = rn.records.Load(), rn.bytes.Load()

	// The offset map covers every lane, completed or not (Complete says).
	maps := map[srcKey]*PartitionMap{}
	if !o.Repartition {
		om := &OffsetMap{Format: offsetMapFormat, FormatVersion: offsetMapVersion, RestoreID: id, CreatedMs: o.Now().UnixMilli(),
			TargetClusterID: t.clusterID, CatalogMs: catalogMs}
		for _, l := range lanes {
			if l.ckpt != nil {
				om.Partitions = append(om.Partitions, l.ckpt.Maps...)
			}
		}
		for i := range om.Partitions {
			pm := &om.Partitions[i]
			maps[srcKey{pm.SourceTopic, pm.SourcePartition}] = pm
		}
		sum.OffsetMap = om
		body := om.Encode()
		if err := o.StateStore.Put(ctx, offsetMapKey(id), strings.NewReader(string(body)), int64(len(body)), store.PutOptions{}); err != nil {
			o.Logger.Error("restore: offset map not stored", "key", offsetMapKey(id), "err", err)
			results = append(results, PartitionResult{SourceTopic: "offset map", SourcePartition: -1, Status: StatusFailed, Err: fmt.Errorf("store %s: %w", offsetMapKey(id), err)})
		}
		if o.OffsetMapFile != "" {
			if err := writeFileAtomic(o.OffsetMapFile, body); err != nil {
				results = append(results, PartitionResult{SourceTopic: "offset map", SourcePartition: -1, Status: StatusFailed, Err: err})
			}
		}
	}
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
	if len(failed) == 0 && len(groups) > 0 {
		gr, err := commitGroups(ctx, t.adm, groups, maps, o.Logger)
		sortGroupResults(gr)
		sum.Groups = gr
		if err != nil {
			failed = append(failed, "groups ("+err.Error()+")")
		}
	}
	sum.Duration = o.Now().Sub(start)
	if len(failed) > 0 {
		return sum, &IncompleteError{RestoreID: id, Failed: failed, Total: len(lanes)}
	}
	o.Logger.Info("restore: complete", "restore_id", id, "records", sum.Records, "bytes", sum.Bytes, "duration", sum.Duration.Round(time.Millisecond))
	return sum, nil
}

// plan resolves everything before anything is written.
func (rn *runner) plan(ctx context.Context, a *manifest.Archive, topics []string, prev *restoreManifest, catalogMs int64) (*Plan, []*lane, []groupPlan, error) {
	o, t := rn.o, rn.t
	plan := &Plan{RestoreID: rn.id, TargetClusterID: t.clusterID, CatalogMs: catalogMs, Range: o.Range.String()}
	prevSrc := prevSources(prev)
	var lanes []*lane
	var problems []string
	restored := map[srcKey]bool{}
	for _, topic := range topics {
		if prev != nil && !prevHasTopic(prev, topic) {
			continue // appeared in the archive after the restore began
		}
		sources, err := planSources(ctx, a, o, topic, prevSrc)
		if err != nil {
			return nil, nil, nil, err
		}
		if len(sources) == 0 {
			continue
		}
		dst := o.targetName(topic)
		pt := PlanTopic{Source: topic, Target: dst}
		maxPart := sources[len(sources)-1].log.Partition
		if n, ok := t.topics[dst]; ok {
			pt.Partitions = n
			if !o.Repartition && n <= maxPart {
				problems = append(problems, fmt.Sprintf("target topic %s has %d partitions, the archive of %s has partition %d: use --repartition, or --rename into a new topic",
					dst, n, topic, maxPart))
			}
			// An existing target's timestamp type is known now: the plan
			// (and so --dry-run) warns before anything is written.
			if la, err := t.logAppendTime(ctx, dst); err == nil {
				pt.LogAppendTime = la
			}
		} else {
			pt.Create = true
			cat, err := topicCatalog(ctx, a, catalogMs, topic, sources[0].topicID)
			if err != nil {
				return nil, nil, nil, err
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
		plan.Topics = append(plan.Topics, pt)

		tl := buildLanes(o, topic, sources)
		var ends, starts map[int32]int64
		for _, l := range tl {
			ck, err := loadCheckpoint(ctx, rn.st, rn.id, l.name)
			if err != nil {
				return nil, nil, nil, err
			}
			l.ckpt = ck
			state := "new"
			switch {
			case ck != nil && ck.Done:
				state = "done"
			case ck != nil:
				state = "resume"
			case !pt.Create && !o.Append:
				if ends == nil {
					if starts, ends, err = t.offsets(ctx, dst); err != nil {
						return nil, nil, nil, err
					}
				}
				for _, p := range sortedKeys(ends) {
					if l.targetPartition >= 0 && p != l.targetPartition {
						continue
					}
					if ends[p] > starts[p] {
						problems = append(problems, fmt.Sprintf("target partition %s/%d already holds %d records (offsets %d..%d): use --append to restore after them, or --rename into a new topic",
							dst, p, ends[p]-starts[p], starts[p], ends[p]-1))
					}
				}
			}
			for _, s := range l.sources {
				tp := l.targetPartition
				plan.Partitions = append(plan.Partitions, PlanPartition{SourceTopic: topic, SourcePartition: s.log.Partition, TargetTopic: dst,
					TargetPartition: tp, From: s.from, To: s.to, ApproxRecords: s.approxRecords, ApproxBytes: s.approxBytes,
					MinTimestamp: s.minTs, MaxTimestamp: s.maxTs, State: state})
				restored[srcKey{topic, s.log.Partition}] = true
			}
		}
		lanes = append(lanes, tl...)
	}
	if len(lanes) == 0 {
		return nil, nil, nil, fmt.Errorf("no archived partition is selected")
	}
	var groups []groupPlan
	if o.Groups != nil && len(problems) == 0 {
		var err error
		groups, err = planGroups(ctx, a, t, o.Groups, catalogMs, o.Force, func(k srcKey) bool { return restored[k] })
		if err != nil {
			problems = append(problems, err.Error())
		}
		for _, g := range groups {
			plan.Groups = append(plan.Groups, PlanGroup{Group: g.group, Offsets: len(g.offsets), ActiveMembers: g.active})
		}
	}
	if len(problems) > 0 {
		return plan, nil, nil, errors.New(strings.Join(problems, "; "))
	}
	return plan, lanes, groups, nil
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

// execute runs the lanes, Concurrency at a time, and reports each.
func (rn *runner) execute(ctx context.Context, lanes []*lane, logAppend map[string]bool) []PartitionResult {
	o := rn.o
	results := make([]PartitionResult, len(lanes))
	for i, l := range lanes {
		results[i] = PartitionResult{SourceTopic: l.sourceTopic, SourcePartition: -1, TargetTopic: l.targetTopic,
			TargetPartition: l.targetPartition, Status: StatusSkipped}
		if l.targetPartition >= 0 {
			results[i].SourcePartition = l.sources[0].log.Partition
		}
	}
	var total int64
	for _, l := range lanes {
		for _, s := range l.sources {
			total += s.approxRecords
		}
	}
	prog := startProgress(ctx, rn, total)
	defer prog.stop()

	sem := make(chan struct{}, o.Concurrency)
	var wg sync.WaitGroup
	for i, l := range lanes {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			results[i].Err = ctx.Err()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			res := &results[i]
			lr := newLaneRun(rn, l, logAppend[l.targetTopic], rn.t.topics[l.targetTopic])
			done, err := lr.start(ctx)
			if err == nil && !done && o.testLaneStarted != nil {
				o.testLaneStarted(l.name)
			}
			if err == nil && !done {
				err = lr.run(ctx)
			}
			if l.ckpt != nil {
				res.Records, res.Bytes = l.ckpt.Records, l.ckpt.Bytes
			}
			res.Produced = lr.restored
			switch {
			case err != nil:
				res.Status, res.Err = StatusFailed, err
				o.Logger.Error("restore: partition did not complete", "lane", l.name, "records", res.Records, "err", err)
			case done:
				res.Status = StatusDone
			default:
				res.Status = StatusComplete
				o.Logger.Debug("restore: partition complete", "lane", l.name, "records", res.Records)
			}
		}()
	}
	wg.Wait()
	return results
}

func fmtMs(ms int64) string {
	if ms == math.MaxInt64 {
		return "now"
	}
	return logrange.FormatTime(ms)
}

// sortPlan orders plan partitions by topic and partition.
func sortPlan(p *Plan) {
	sort.SliceStable(p.Partitions, func(i, j int) bool {
		a, b := p.Partitions[i], p.Partitions[j]
		return a.SourceTopic < b.SourceTopic || a.SourceTopic == b.SourceTopic && a.SourcePartition < b.SourcePartition
	})
}
