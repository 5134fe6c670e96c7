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

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/internal/lease"
	"github.com/kbackup/kbackup/internal/logrange"
	"github.com/kbackup/kbackup/internal/retry"
	"github.com/kbackup/kbackup/internal/target"
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
	SourceTopic     string `json:"source_topic"`
	SourcePartition int32  `json:"source_partition"`
	TargetTopic     string `json:"target_topic"`
	TargetPartition int32  `json:"target_partition"`
	Status          string `json:"status"`
	// Records and Bytes restored by this lane in total (all runs); Produced
	// is the part this run produced.
	Records  int64 `json:"records"`
	Bytes    int64 `json:"bytes"`
	Produced int64 `json:"produced"`
	Err      error `json:"-"`
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
	// Report is the restore's completion record (restores/<id>/report.json),
	// the same for every process that ran it; nil while incomplete.
	Report *Report
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
	// Steps names the restore's other steps that failed (the finishing
	// step, the offset map file), with their reasons.
	Steps []string
}

func (e *IncompleteError) Error() string {
	var what []string
	if len(e.Failed) > 0 {
		what = append(what, fmt.Sprintf("%d of %d partitions did not complete: %s", len(e.Failed), e.Total, strings.Join(e.Failed, "; ")))
	}
	what = append(what, e.Steps...)
	return fmt.Sprintf("restore %s incomplete: %s (run the same restore again to resume)", e.RestoreID, strings.Join(what, "; "))
}

// runner is the state shared by the lanes of one restore.
type runner struct {
	o      *Options
	id     string
	start  time.Time
	cache  *manifest.ReadCache // the archive's store, while planning
	a      *manifest.Archive
	topics []string // the selected archived topics
	t      *target.Cluster
	st     store.Store
	leases *lease.Manager
	// catalogMs is the restore's end time (Plan.CatalogMs).
	catalogMs      int64
	records, bytes atomic.Int64
	untrack        func()
	blocks         blockFree // the lanes' block buffers
	// produceMu lets one lane at a time hand a run of records to the
	// producer: franz-go takes a client-wide lock for every record it
	// buffers (and again for every acknowledgement), and lanes producing
	// at once contended for it on every record (~6% of a restore's CPU).
	// One goroutine buffers several million records per second, more than
	// any broker set this client writes to takes; the lanes' decoding and
	// reading still run in parallel.
	produceMu sync.Mutex
	// writer is the direct path's producer, one per process (one producer
	// id, each target partition's sequence numbers its own): made by the
	// first lane that needs it (directWriter).
	writerMu sync.Mutex
	writer   *target.Writer
}

// Run plans and executes a restore (see the package documentation). It
// returns the summary also on failure when the restore started; the error
// is an *IncompleteError when some partitions did not complete.
func Run(ctx context.Context, opts Options) (*Summary, error) {
	o := &opts
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	rn, err := open(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	defer rn.close()
	p, err := rn.planRun(ctx)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", rn.id, err)
	}
	sum := &Summary{RestoreID: rn.id, Plan: p.plan, DryRun: o.DryRun}
	if o.DryRun {
		return sum, nil
	}
	if len(p.plan.Refusals) > 0 {
		return nil, fmt.Errorf("restore %s refused, nothing written: %w", rn.id, refusalsError(p.plan.Refusals))
	}
	if o.testPlanned != nil {
		o.testPlanned()
	}
	return rn.run(ctx, p, sum)
}

// open reads the archive's topics and connects to the target: what
// planning needs.
func open(ctx context.Context, o *Options) (*runner, error) {
	rn := &runner{o: o, start: o.Now(), cache: manifest.NewReadCache(o.Store), st: o.StateStore}
	var err error
	if rn.a, err = manifest.Open(ctx, rn.cache); err != nil {
		return nil, err
	}
	if rn.topics, err = selectTopics(ctx, rn.a, o); err != nil {
		return nil, err
	}
	rn.t, err = target.Connect(ctx, o.KafkaOpts,
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.MaxBufferedRecords(1<<20),
		kgo.MaxBufferedBytes(int(min(int64(o.Concurrency)*o.MaxInFlightBytes+(64<<20), math.MaxInt32))),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RetryBackoffFn(target.RetryBackoff))
	if err != nil {
		return nil, err
	}
	rn.id = o.ID
	if rn.id == "" {
		rn.id = deriveID(rn.t.ClusterID, o.requestString())
	}
	rn.leases = &lease.Manager{Store: o.StateStore, ID: rn.id, Me: lease.NewHolder(o.Version, rn.start), TTL: o.LeaseDuration,
		Skew: o.MaxClockSkew, Now: o.Now, Log: o.Logger}
	rn.untrack = lease.Track(rn.leases.Me)
	return rn, nil
}

// close ends what open started.
func (rn *runner) close() {
	rn.untrack()
	rn.t.Close()
	if rn.o.testBlocks != nil {
		rn.blocks.mu.Lock()
		rn.o.testBlocks(rn.blocks.gets, rn.blocks.made)
		rn.blocks.mu.Unlock()
	}
}

// prepareTopics creates the missing target topics (one created meanwhile
// by another process of the same restore is fine) and finds those that
// use LogAppendTime.
func (rn *runner) prepareTopics(ctx context.Context, plan *Plan) (map[string]bool, error) {
	o, t := rn.o, rn.t
	logAppend := map[string]bool{}
	for _, pt := range plan.Topics {
		if pt.Create {
			if err := rn.createTopic(ctx, pt); err != nil {
				return nil, err
			}
		}
		if la, err := t.LogAppendTime(ctx, pt.Target); err != nil {
			o.Logger.Warn("restore: cannot read the target topic's timestamp type", "topic", pt.Target, "err", err)
		} else if la {
			logAppend[pt.Target] = true
			o.Logger.Warn("restore: target topic uses LogAppendTime: restored records get the broker's timestamps, not the archived ones", "topic", pt.Target)
		}
	}
	return logAppend, nil
}

// createTopic creates a planned target topic. One created meanwhile by
// another process of the same restore is fine once it shows the planned
// partitions (the brokers' metadata may not show them yet).
func (rn *runner) createTopic(ctx context.Context, pt PlanTopic) error {
	o, t := rn.o, rn.t
	err := t.Create(ctx, pt.Target, pt.Partitions, pt.ReplicationFactor, pt.Configs)
	if err == nil {
		o.Logger.Info("restore: target topic created", "topic", pt.Target, "partitions", pt.Partitions, "replication_factor", pt.ReplicationFactor)
		return nil
	}
	if !errors.Is(err, kerr.TopicAlreadyExists) {
		return err
	}
	n, rerr := rn.waitPartitions(ctx, pt.Target, pt.Partitions)
	if rerr != nil {
		return rerr
	}
	if n < pt.Partitions {
		return fmt.Errorf("%w; it has %d partitions now", err, n)
	}
	t.Topics[pt.Target] = n
	// Created moments ago: its leaders may not be known to every broker yet
	// (the lanes' first requests would wait out retries).
	t.AwaitLeaders(ctx, pt.Target, n)
	o.Logger.Info("restore: target topic was created meanwhile (another process of this restore?)", "topic", pt.Target, "partitions", n)
	return nil
}

// errFewerPartitions: a topic does not show the partitions it was created
// with yet.
var errFewerPartitions = errors.New("fewer partitions than created")

// waitPartitions waits up to 30 s until topic has want partitions (a
// topic created just now by another process) and returns the count it
// has then.
func (rn *runner) waitPartitions(ctx context.Context, topic string, want int32) (int32, error) {
	var n int32
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := retry.Do(wctx, partitionsRetry, func(ctx context.Context) error {
		var err error
		if n, err = rn.t.PartitionCount(ctx, topic); err == nil && n < want {
			err = errFewerPartitions
		}
		return err
	})
	if err != nil && !errors.Is(err, errFewerPartitions) {
		return 0, err
	}
	return n, nil
}

// partitionsRetry looks again for a new topic's partitions every 200 ms.
var partitionsRetry = retry.Policy{Backoff: retry.Backoff{Initial: 200 * time.Millisecond, Max: 200 * time.Millisecond},
	Retryable: func(err error) bool { return errors.Is(err, errFewerPartitions) }}

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
