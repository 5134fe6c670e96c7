// Package restore replays archived partitions into a Kafka cluster and
// translates consumer-group offsets to the restored topics.
//
// A restore is planned before anything is written: the selected topics and
// partitions, their offset bounds (time bounds are resolved through the
// archive's indexes, a handful of store requests each), the target topics
// (created when missing, from the archived topic configs) and the groups to
// move. Bad input (an unknown topic, a bad range) fails the plan; items the
// restore refuses (a non-empty target partition, a group with active
// members, another process running the restore) are listed in
// Plan.Refusals: a dry run returns them with the plan, a real run writes
// nothing while there is any.
//
// The plan is then executed lane by lane: a lane is one source partition
// restored into the same partition number of its target topic, or, with
// Repartition, one source topic whose records are re-keyed over the target
// partitions. Each lane reads ahead from the store in its own goroutine while
// an idempotent producer writes, and checkpoints its progress into the store
// under restores/<restore-id>/ (docs/FORMAT.md, "Restores and offset
// maps"). A rerun of the same restore continues after the last record that
// is in the target, verified against the target's end offsets and last
// records: a killed restore neither duplicates nor skips a record.
//
// Each lane is owned through a lease in the store (internal/lease,
// schedule.go), so the restore is also safe when run twice at once, or by
// several processes with Join; the finishing step (finish.go) stores the
// offset map, moves the groups once (groupmove.go) and creates the report
// once. Roll-forward and repair, which replay into the archived
// partitions themselves, are package replay.
package restore

import (
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/internal/lease"
	"github.com/kbackup/kbackup/internal/logrange"
	"github.com/kbackup/kbackup/internal/topicsel"
	"github.com/kbackup/kbackup/store"
)

// Defaults of the Options fields whose zero value means "the default".
const (
	// DefaultConcurrency is the number of lanes restored in parallel when
	// Options.Concurrency is 0.
	DefaultConcurrency = 8
	// DefaultReadAhead is Options.ReadAhead's zero value.
	DefaultReadAhead = 4
	// DefaultMaxInFlightBytes is Options.MaxInFlightBytes' zero value:
	// more than franz-go puts on the wire for one partition (at most 5
	// produce requests per broker in flight, one batch of at most 1 MiB
	// per partition in each) plus the batch being filled. More only waits
	// in the producer's buffer, costing memory and CPU (garbage-collector
	// marking, cache misses), not throughput; less caps a lane's throughput
	// on a link with latency: at 10–50 ms RTT 2 MiB ran at 0.32–0.63 and
	// 4 MiB at 0.67–0.96 of this window's speed, 16 MiB no faster
	// (BenchmarkRestoreWindowLatency, docs/PERFORMANCE.md).
	DefaultMaxInFlightBytes = 8 << 20
	// DefaultCheckpointInterval is Options.CheckpointInterval's zero value.
	DefaultCheckpointInterval = 2 * time.Second
	// DefaultResumeSettle is Options.ResumeSettle's zero value.
	DefaultResumeSettle = 3 * time.Second
	// DefaultProgressInterval is Options.ProgressInterval's zero value.
	DefaultProgressInterval = 10 * time.Second
)

// DefaultLeaseDuration is Options.LeaseDuration's zero value, and
// DefaultMaxClockSkew Options.MaxClockSkew's (docs/FORMAT.md §10.4).
const (
	DefaultLeaseDuration = lease.DefaultDuration
	DefaultMaxClockSkew  = lease.DefaultMaxClockSkew
)

// Options configure a restore. Zero values are documented per field.
type Options struct {
	// Store holds the archive to restore from. Required.
	Store store.Store
	// StateStore receives the restore's manifest, checkpoints and offset
	// map (restores/<restore-id>/...). nil means Store.
	StateStore store.Store
	// KafkaOpts connect to the target cluster (seed brokers, TLS, SASL);
	// built by package kafkaconn. Required, also for DryRun (the plan checks
	// the target topics and groups).
	KafkaOpts []kgo.Opt

	// Topics selects the archived topics (package topicsel: internal
	// topics only by an expression starting with "__"). nil means every
	// archived topic except internal ones.
	Topics *topicsel.Selector
	// Partitions restricts the restore to these partition numbers. nil
	// means every archived partition.
	Partitions []int32
	// Range selects the part of every partition's log to restore (offsets
	// and times, see package logrange). The zero value is the whole log.
	Range logrange.Range

	// Rename maps source topic names to target topic names. A topic not in
	// it keeps its name. Two sources may not map to one target.
	Rename map[string]string
	// ReplicationFactor of target topics the restore creates. 0 means the
	// archived replication factor (the broker default when unknown).
	ReplicationFactor int16
	// Append allows restoring into target partitions that already hold
	// records (the restored records go after them). The zero value refuses
	// non-empty target partitions.
	Append bool
	// Repartition re-keys records over the target topic's partitions with
	// Kafka's default partitioner (murmur2 of the key; records without a
	// key go to source partition mod target partitions). The zero value
	// writes every record to its source partition number, which requires
	// the target topic to have at least as many partitions. No offset map
	// is recorded with Repartition, and Groups cannot be used with it.
	Repartition bool

	// Groups selects the consumer groups (anchored regular expression)
	// whose committed offsets, as captured at or before the restore's end
	// time, are translated and committed in the target. nil moves no group.
	Groups *regexp.Regexp
	// Force commits group offsets even when the group has active members
	// in the target. The zero value refuses such groups.
	Force bool

	// OffsetMapFile, when set, receives the offset map as JSON (it is also
	// stored under restores/<restore-id>/offset-map.json). "" writes no
	// file.
	OffsetMapFile string
	// DryRun plans the restore, returns the plan in the Summary and writes
	// nothing, neither to the target nor to the store.
	DryRun bool
	// ID names the restore (its checkpoints and offset map in the store).
	// "" derives it from the request and the target cluster, so that
	// running the same command again resumes the same restore.
	ID string
	// Join shares the restore with other processes running it (the same
	// request, target and store; on this machine or others): each lane is
	// owned by one process at a time through a lease in the store, free
	// lanes are taken, lanes others hold are waited for, and lanes whose
	// holder stopped renewing are taken over (docs/FORMAT.md §10.4). The
	// zero value refuses to start while another process runs the
	// restore, naming it (processes that start at the same instant may
	// still share: that is safe too).
	Join bool
	// LeaseDuration is how long a lane's lease lasts without renewal: a
	// holder renews it every third of it, stops writing when it could not
	// renew for five sixths of it, and others take a lane over when it is
	// this long (plus MaxClockSkew) past its last renewal. 0 =
	// DefaultLeaseDuration.
	LeaseDuration time.Duration
	// MaxClockSkew is the assumed bound on the difference between the wall
	// clocks of processes sharing a restore. 0 = DefaultMaxClockSkew.
	MaxClockSkew time.Duration

	// Concurrency is the number of lanes restored in parallel. 0 =
	// DefaultConcurrency.
	Concurrency int
	// ReadAhead is the number of record batches (about one archive block
	// each) a lane reads ahead of the producer. 0 = DefaultReadAhead.
	ReadAhead int
	// MaxInFlightBytes bounds the record bytes a lane has handed to the
	// producer and not yet seen acknowledged. 0 = DefaultMaxInFlightBytes
	// (8 MiB). Together with ReadAhead and Concurrency it bounds the
	// restore's memory.
	MaxInFlightBytes int64
	// Producer is how the lanes that write one target partition each
	// (every lane but a --repartition restore's) produce: ProducerDirect
	// ("" = DefaultProducer) or ProducerFranz. Lanes of a --repartition
	// restore use franz-go's producer.
	Producer string
	// CheckpointInterval is how often a lane stores its progress. 0 =
	// DefaultCheckpointInterval.
	CheckpointInterval time.Duration
	// ResumeSettle is how long, when a restore resumes, the end offsets of
	// the target partitions it resumes must stay unchanged before it
	// writes: produce requests a killed earlier run had sent may still be
	// applied by the broker for a moment (see settle). 0 =
	// DefaultResumeSettle.
	ResumeSettle time.Duration
	// ProgressInterval is how often a progress line is logged. 0 =
	// DefaultProgressInterval.
	ProgressInterval time.Duration
	// Progress, when non-nil (a terminal), receives a progress line
	// rewritten in place (records, bytes, rate, ETA) twice a second.
	Progress io.Writer

	// Version is recorded in the restore manifest. "" = "kbackup".
	Version string
	// Logger receives structured logs. nil discards them.
	Logger *slog.Logger
	// Now returns the current time. nil = time.Now.
	Now func() time.Time

	// Test hooks: after each listing of end offsets in settle, after a
	// lane's start (checks done) before it writes, and after the plan
	// (before the restore's first write).
	testSettleListed func()
	testLaneStarted  func(lane string)
	testPlanned      func()
	// testBlocks gets, when the restore ends, how many block buffers its
	// lanes took from the free list and how many of those were new.
	testBlocks func(gets, made int64)
}

// The producers of Options.Producer.
const (
	// ProducerDirect is the restore's own produce path: a lane builds
	// Kafka record batches from the archive's records as it decodes them
	// and sends each as one produce request (idempotent, up to
	// target.MaxInFlight requests in flight per partition), and a batch's
	// answer acknowledges all its records at once. It takes about half
	// the client CPU of franz-go's producer (docs/PERFORMANCE.md).
	ProducerDirect = "direct"
	// ProducerFranz is franz-go's producer, a record at a time (the
	// restore's only producer before the direct path).
	ProducerFranz = "franz-go"
)

// DefaultProducer is Options.Producer's zero value (a variable: tests of
// the franz-go path set it for a whole run).
var DefaultProducer = ProducerDirect

// setDefaults validates o and fills in the documented defaults.
func (o *Options) setDefaults() error {
	if o.Store == nil {
		return fmt.Errorf("restore: no store")
	}
	if len(o.KafkaOpts) == 0 {
		return fmt.Errorf("restore: no Kafka connection options for the target (brokers)")
	}
	if o.StateStore == nil {
		o.StateStore = o.Store
	}
	if err := o.Range.Validate(); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	r := o.Range
	if r.HasToOffset && r.ToOffset < r.FromOffset {
		return fmt.Errorf("restore: --to-offset %d is before --from-offset %d", r.ToOffset, r.FromOffset)
	}
	if r.HasFromTime && r.HasToTime && r.ToTime < r.FromTime {
		return fmt.Errorf("restore: --to %s is before --from %s", logrange.FormatTime(r.ToTime), logrange.FormatTime(r.FromTime))
	}
	for _, p := range o.Partitions {
		if p < 0 {
			return fmt.Errorf("restore: partition %d is negative", p)
		}
	}
	if o.Repartition && o.Groups != nil {
		return fmt.Errorf("restore: --groups cannot be used with --repartition: a repartitioned topic has no per-partition offset correspondence")
	}
	if o.ReplicationFactor < 0 {
		return fmt.Errorf("restore: replication factor %d is negative", o.ReplicationFactor)
	}
	if o.ID != "" && !validID(o.ID) {
		return fmt.Errorf("restore: restore id %q: use 1..64 characters of [A-Za-z0-9._-]", o.ID)
	}
	switch o.Producer {
	case "":
		o.Producer = DefaultProducer
	case ProducerDirect, ProducerFranz:
	default:
		return fmt.Errorf("restore: producer %q: use %q or %q", o.Producer, ProducerDirect, ProducerFranz)
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.ReadAhead <= 0 {
		o.ReadAhead = DefaultReadAhead
	}
	if o.MaxInFlightBytes <= 0 {
		o.MaxInFlightBytes = DefaultMaxInFlightBytes
	}
	if o.CheckpointInterval <= 0 {
		o.CheckpointInterval = DefaultCheckpointInterval
	}
	if o.ResumeSettle <= 0 {
		o.ResumeSettle = DefaultResumeSettle
	}
	if o.LeaseDuration <= 0 {
		o.LeaseDuration = DefaultLeaseDuration
	}
	if o.MaxClockSkew <= 0 {
		o.MaxClockSkew = DefaultMaxClockSkew
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = DefaultProgressInterval
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

// targetName is the target topic of a source topic.
func (o *Options) targetName(topic string) string {
	if t, ok := o.Rename[topic]; ok {
		return t
	}
	return topic
}

func validID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ParseRename parses "SRC=DST" (the --rename flag) into m, refusing
// invalid topic names, a source renamed twice and two sources sharing a
// target.
func ParseRename(m map[string]string, s string) error {
	src, dst, ok := strings.Cut(s, "=")
	src, dst = strings.TrimSpace(src), strings.TrimSpace(dst)
	if !ok || src == "" || dst == "" {
		return fmt.Errorf("rename %q: want SRC=DST", s)
	}
	if err := validTopicName(dst); err != nil {
		return fmt.Errorf("rename %q: %w", s, err)
	}
	if prev, ok := m[src]; ok && prev != dst {
		return fmt.Errorf("rename %q: %s is already renamed to %s", s, src, prev)
	}
	for k, v := range m {
		if v == dst && k != src {
			return fmt.Errorf("rename %q: %s is already the target of %s", s, dst, k)
		}
	}
	m[src] = dst
	return nil
}

// validTopicName applies Kafka's topic name rules.
func validTopicName(name string) error {
	if name == "" || len(name) > 249 || name == "." || name == ".." {
		return fmt.Errorf("invalid topic name %q", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("invalid topic name %q: use [A-Za-z0-9._-]", name)
		}
	}
	return nil
}
