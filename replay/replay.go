// Package replay holds roll-forward (RollForward) and repair (Repair),
// which share one mechanism: archived records are produced into the SAME topic and partition
// they were archived from, right after the live log's end, so that every
// replayed record lands at its original offset. That holds only when
//
//   - the live log ends at an offset the archive covers, and the live record
//     just before it is the archived record at that offset (checked; a
//     differing record is a divergence and refuses the partition);
//   - nothing else writes to the partition meanwhile (every acknowledgement
//     is checked: the first record that lands elsewhere stops the partition);
//   - the replayed range has no gap in the archive: a producer cannot create
//     an offset hole (compacted records, transaction markers, aborted data),
//     so the replay stops before the first gap and the partition is reported
//     as failed, with the gap.
//
// A replay keeps no state of its own: the live log end is its checkpoint.
// Running it again after a success finds every partition up to date; after
// a kill it continues from the live end (checked against the archive).
//
// Each partition is written under a lease (package lease, docs/FORMAT.md
// §10.4), so two replays never write one partition at once.
package replay

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/internal/lease"
	"github.com/kbackup/kbackup/internal/logrange"
	"github.com/kbackup/kbackup/internal/target"
	"github.com/kbackup/kbackup/internal/topicsel"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
)

// Defaults of the Options fields whose zero value means "the default".
const (
	// DefaultConcurrency is Options.Concurrency's zero value.
	DefaultConcurrency = 8
	// DefaultLeaseDuration is Options.LeaseDuration's zero value, and
	// DefaultMaxClockSkew Options.MaxClockSkew's (docs/FORMAT.md §10.4).
	DefaultLeaseDuration = lease.DefaultDuration
	DefaultMaxClockSkew  = lease.DefaultMaxClockSkew
	// DefaultSettle is Options.Settle's zero value.
	DefaultSettle = 3 * time.Second
)

// Options configure a roll-forward or a repair. A replay writes into the
// archived topics and partitions themselves, from each partition's live
// end on: it has no renames, no repartitioning, no group moves and no
// start bound. Zero values are documented per field.
type Options struct {
	// Store holds the archive to replay from. Required.
	Store store.Store
	// StateStore holds the partition leases
	// (restores/replay-<hash of the cluster id>/...). nil means Store.
	StateStore store.Store
	// KafkaOpts connect to the live cluster (seed brokers, TLS, SASL);
	// built by package kafkaconn. Required, also for DryRun.
	KafkaOpts []kgo.Opt

	// Topics selects the archived topics (package topicsel). nil means
	// every archived topic except internal ones.
	Topics *topicsel.Selector
	// Partitions restricts the replay to these partition numbers. nil
	// means every archived partition.
	Partitions []int32
	// ToOffset, when HasToOffset, is the last offset replayed (inclusive).
	ToOffset    int64
	HasToOffset bool
	// ToTime, when HasToTime, ends the replay before the first record
	// whose timestamp is after it (unix ms). With neither bound the replay
	// goes to the archive's end.
	ToTime    int64
	HasToTime bool

	// DryRun plans the replay, returns the plan in the Summary and writes
	// nothing.
	DryRun bool
	// Concurrency is the number of partitions replayed in parallel. 0 =
	// DefaultConcurrency.
	Concurrency int
	// LeaseDuration is how long a partition's lease lasts without renewal
	// (as a restore's lanes'). 0 = DefaultLeaseDuration.
	LeaseDuration time.Duration
	// MaxClockSkew is the assumed bound on the difference between the wall
	// clocks of processes replaying into one cluster. 0 =
	// DefaultMaxClockSkew.
	MaxClockSkew time.Duration
	// Settle is how long a partition taken over from a replay that stopped
	// without releasing it waits before writing: that replay's last
	// produce requests may still be applied. 0 = DefaultSettle.
	Settle time.Duration

	// Version is recorded in the leases. "" = "kbackup".
	Version string
	// Logger receives structured logs. nil discards them.
	Logger *slog.Logger
	// Now returns the current time. nil = time.Now.
	Now func() time.Time
}

// toRange is the options' end bound as a range.
func (o *Options) toRange() logrange.Range {
	return logrange.Range{ToOffset: o.ToOffset, HasToOffset: o.HasToOffset, ToTime: o.ToTime, HasToTime: o.HasToTime}
}

// setDefaults validates o and fills in the documented defaults.
func (o *Options) setDefaults(mode string) error {
	if o.Store == nil {
		return fmt.Errorf("%s: no store", mode)
	}
	if len(o.KafkaOpts) == 0 {
		return fmt.Errorf("%s: no Kafka connection options for the cluster (brokers)", mode)
	}
	if o.StateStore == nil {
		o.StateStore = o.Store
	}
	if err := o.toRange().Validate(); err != nil {
		return fmt.Errorf("%s: %w", mode, err)
	}
	for _, p := range o.Partitions {
		if p < 0 {
			return fmt.Errorf("%s: partition %d is negative", mode, p)
		}
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.LeaseDuration <= 0 {
		o.LeaseDuration = DefaultLeaseDuration
	}
	if o.MaxClockSkew <= 0 {
		o.MaxClockSkew = DefaultMaxClockSkew
	}
	if o.Settle <= 0 {
		o.Settle = DefaultSettle
	}
	if o.Version == "" {
		o.Version = "kbackup"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// Replay partition states, in a Partition's State.
const (
	StatePending  = "replay"         // records to replay (plan)
	StateUpToDate = "up to date"     // nothing to replay
	StateRefused  = "refused"        // offsets would not line up: nothing written
	StateDone     = "replayed"       // replayed and verified
	StateFailed   = "failed"         // did not complete (see Err)
	StateGap      = "stopped at gap" // replayed up to an archive gap (failure)
)

// Partition is one partition of a roll-forward or repair.
type Partition struct {
	Topic     string
	Partition int32
	// TopicID is the topic id of the live topic and of the archived
	// incarnation replayed from (32 hex digits).
	TopicID string
	// LiveStart and LiveEnd are the live log's start and end offset (high
	// watermark) when planned.
	LiveStart, LiveEnd int64
	// ArchiveEnd is the offset after the archive's last offset (0: nothing
	// archived).
	ArchiveEnd int64
	// CycleLo..CycleHi is the range the cycle recorded for the partition's
	// log end (roll-forward only; -1 otherwise).
	CycleLo, CycleHi int64
	// From..To (inclusive) is what is replayed; To < From replays nothing.
	From, To int64
	// Gap is the first archive gap at or after From within the requested
	// range, if any: the replay stops before it.
	Gap *manifest.Gap
	// State is one of the Replay* states; Problem says why a partition is
	// refused.
	State   string
	Problem string
	// Produced counts the records this run produced.
	Produced int64
	// Err is why the partition failed (State StateFailed or StateGap).
	Err error

	id     manifest.TopicID
	withTs bool // compare timestamps (the topic keeps CreateTime)
}

// Name is "topic/partition".
func (p Partition) Name() string { return fmt.Sprintf("%s/%d", p.Topic, p.Partition) }

// Summary is the result of a roll-forward or repair.
type Summary struct {
	// Mode is "roll-forward" or "repair"; CycleID the cycle rolled forward
	// from.
	Mode    string
	CycleID string
	DryRun  bool
	// Range describes the requested end bound (--to, --to-offset), "" for
	// the archive's end.
	Range string
	// Partitions in topic, partition order.
	Partitions []Partition
	Warnings   []string
	// Records produced by this run.
	Records  int64
	Duration time.Duration
}

// Error is returned when some partitions did not complete. Failed
// names each, with its reason.
type Error struct {
	Mode   string
	Failed []string
	Total  int
}

// Error says which partitions did not complete, and why.
func (e *Error) Error() string {
	return fmt.Sprintf("%s incomplete: %d of %d partitions did not complete: %s", e.Mode, len(e.Failed), e.Total, strings.Join(e.Failed, "; "))
}

// replayer plans and executes a replay.
type replayer struct {
	o      *Options
	leases *lease.Manager
	mode   string
	a      *manifest.Archive
	t      *target.Cluster
	cycle  Cycle // nil: repair
}

// run is RollForward (cycle != nil) and Repair.
func run(ctx context.Context, opts Options, mode string, cycle Cycle) (*Summary, error) {
	o := &opts
	if err := o.setDefaults(mode); err != nil {
		return nil, err
	}
	start := o.Now()
	a, err := manifest.Open(ctx, o.Store)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", mode, err)
	}
	all, err := a.Topics(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: list archived topics: %w", mode, err)
	}
	topics, err := o.Topics.Select(all)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", mode, err)
	}
	t, err := target.Connect(ctx, o.KafkaOpts,
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(2*time.Millisecond),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RetryBackoffFn(target.RetryBackoff))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", mode, err)
	}
	defer t.Close()
	rp := &replayer{o: o, mode: mode, a: a, t: t, cycle: cycle}
	sum := &Summary{Mode: mode, DryRun: o.DryRun}
	if cycle != nil {
		sum.CycleID = cycle.CycleID()
		if id := cycle.KafkaClusterID(); id != "" && t.ClusterID != "" && id != t.ClusterID {
			return nil, fmt.Errorf("%s refused, nothing written: the cluster at the brokers has cluster id %s, cycle %s was taken of cluster id %s", mode, t.ClusterID, sum.CycleID, id)
		}
	}
	var bounds []string
	if o.HasToTime {
		bounds = append(bounds, "time "+logrange.FormatTime(o.ToTime))
	}
	if o.HasToOffset {
		bounds = append(bounds, fmt.Sprintf("offset %d", o.ToOffset))
	}
	sum.Range = strings.Join(bounds, " and ")
	problems, err := rp.plan(ctx, topics, sum)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", mode, err)
	}
	if len(problems) > 0 {
		return sum, fmt.Errorf("%s refused, nothing written: %s", mode, strings.Join(problems, "; "))
	}
	if o.DryRun {
		return sum, nil
	}
	if err := manifest.ProbeConditionalCreate(ctx, o.StateStore); err != nil {
		return sum, fmt.Errorf("%s refused, nothing written: %w", mode, err)
	}
	rp.leases = newLeases(o, t.ClusterID)
	defer lease.Track(rp.leases.Me)()
	rp.execute(ctx, sum)
	sum.Duration = o.Now().Sub(start)
	var failed []string
	for _, p := range sum.Partitions {
		sum.Records += p.Produced
		if p.State == StateFailed || p.State == StateGap {
			failed = append(failed, fmt.Sprintf("%s (%v)", p.Name(), p.Err))
		}
	}
	if len(failed) > 0 {
		return sum, &Error{Mode: mode, Failed: failed, Total: len(sum.Partitions)}
	}
	o.Logger.Info(mode+": complete", "partitions", len(sum.Partitions), "records", sum.Records, "duration", sum.Duration.Round(time.Millisecond))
	return sum, nil
}
