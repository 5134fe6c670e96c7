// Package archive is the continuous archiver: it consumes the selected
// Kafka partitions in offset order and commits them to the store as
// segments under the format's ordering rules (package manifest). Progress
// lives in the store, not in consumer-group offsets: every partition resumes
// from its head commit.
package archive

import (
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/internal/topicsel"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
)

// Defaults of the Options fields whose zero value means "the default".
const (
	DefaultSegmentBytes      = 32 << 20
	DefaultFlushInterval     = 3 * time.Second
	DefaultBlockBytes        = 1 << 20
	DefaultCompression       = "zstd"
	DefaultMaxBufferedBytes  = 256 << 20
	DefaultCommitConcurrency = 16
	DefaultRefreshInterval   = 30 * time.Second
	DefaultCatalogInterval   = 5 * time.Minute
	DefaultShutdownTimeout   = 30 * time.Second
	DefaultOnceAttempts      = 6
	// DefaultFetchMaxBytes and DefaultFetchMaxPartitionBytes size the
	// archiver's Kafka fetches (franz-go's defaults are 50 MiB and 1 MiB;
	// Options.KafkaOpts override them). The client keeps about three
	// fetches per broker in memory, decompressed: one the loop is
	// archiving, one buffered, one arriving. The archiver spends longer on
	// each fetch than a consumer that discards it, so smaller fetches keep
	// that memory near a plain consumer's at the same throughput
	// (docs/PERFORMANCE.md, "Memory bound").
	DefaultFetchMaxBytes          = 16 << 20
	DefaultFetchMaxPartitionBytes = 512 << 10
	// DefaultGroup is the consumer group the CLI's archivers share
	// partitions through unless told otherwise (Options.Group has no
	// default: "" is standalone).
	DefaultGroup = "kbackup-archiver"
)

// Options configure an Archiver. Zero values are documented per field.
type Options struct {
	// KafkaOpts connect to the cluster (seed brokers, TLS, SASL); built by
	// package kafkaconn. Required.
	KafkaOpts []kgo.Opt
	// Store is where the archive lives. Required.
	Store store.Store

	// Topics selects the topics to archive (--topics and --exclude, under
	// package topicsel's rule). nil means every non-internal topic.
	Topics *topicsel.Selector

	// Once archives up to the end offsets seen at start (the last stable
	// offset under read_committed, the high watermark otherwise), captures
	// the catalog and returns.
	Once bool
	// Group is the Kafka consumer group the archiver replicas share the
	// partitions through (membership only: offsets are never committed
	// there). "" means standalone: this archiver owns every selected
	// partition. Ignored with Once (always standalone).
	Group string
	// groupMetadataMaxAge overrides the group client's metadata refresh
	// interval (tests: the group noticing a topic change before the
	// archiver's own refresh). 0: max(RefreshInterval, 10s).
	groupMetadataMaxAge time.Duration

	// ReadUncommitted archives records of aborted and open transactions
	// too. The zero value (false) is read_committed: aborted records are not
	// archived and become "transaction" gaps.
	ReadUncommitted bool

	// SegmentBytes rolls a segment when its size reaches it. 0 = 32 MiB.
	SegmentBytes int
	// FlushInterval rolls a non-empty segment at this age, bounding how long
	// a record waits before it is committed (archive lag). 0 = 3s.
	FlushInterval time.Duration
	// BlockBytes is the uncompressed block target inside segments. 0 = 1 MiB.
	BlockBytes int
	// Compression is the block codec of new segments: "zstd" (the default
	// when ""), "s2" (about 3× less CPU to compress, objects about 1.6×
	// larger) or "none". Readers handle every codec; segments of different
	// codecs mix freely in one archive.
	Compression string
	codec       manifest.Codec
	// MaxBufferedBytes bounds the memory held in open and sealed segments of
	// all partitions together; above it, fetching pauses and open segments
	// are sealed early. 0 = 256 MiB.
	MaxBufferedBytes int64
	// CommitConcurrency bounds concurrent segment commits. 0 = 16.
	CommitConcurrency int
	// HoldSegments keeps every segment in memory until it is committed. By
	// default (segments layout) a segment of more than one block streams
	// to a store that can stage objects (store.Stager: the local directory
	// store; S3, from the fifth block, through a temporary object copied to
	// the segment's key at the end) as its blocks close, so the archiver
	// holds about four blocks per busy partition (the open one, two queued,
	// one being written, and with S3 a 5 MiB part buffer) instead of whole
	// segments.
	HoldSegments bool
	// RefreshInterval is how often topics and partitions are rediscovered.
	// 0 = 30s.
	RefreshInterval time.Duration
	// CatalogInterval is how often topic configs and group offsets are
	// captured (also whenever the topic set changes). 0 = 5m.
	CatalogInterval time.Duration
	// Groups selects the consumer groups whose offsets are captured
	// (anchored regular expression). nil means all groups except the
	// archiver's own.
	Groups *regexp.Regexp
	// ShutdownTimeout bounds the final flush after the context is cancelled.
	// 0 = 30s.
	ShutdownTimeout time.Duration
	// OnceCommitAttempts bounds the attempts of one commit with Once before
	// the run fails. 0 = 6. (Continuous mode retries forever.)
	OnceCommitAttempts int

	// Retention is applied to the partitions this archiver owns, every
	// RetentionInterval, by the same pass as `kbackup expire` (Expire);
	// never with Once. The zero value expires nothing (and runs no pass).
	Retention RetentionPolicy
	// RetentionInterval is how often the expiry pass runs (the first one
	// when the archiver starts). 0 = DefaultRetentionInterval (1h).
	RetentionInterval time.Duration
	// ExpiryGrace is how long the objects below a new archive start stay
	// readable before the pass deletes them. 0 =
	// manifest.DefaultExpiryGrace (1h); negative = none.
	ExpiryGrace time.Duration

	// Layout is how commits are written: LayoutSegments ("segments", the
	// default when ""): per partition and flush a segment, a commit entry
	// and a time key (format version 1); LayoutPacked ("packed"): one flush
	// object per flush for every owned partition, claims, tail indexes and
	// compaction into per-partition segments (format version 3,
	// docs/FORMAT.md §12). Packed costs a bounded number of store requests
	// whatever the partition count.
	Layout string
	// CompactBytes and CompactAfter (packed layout): a partition's tail is
	// compacted into one segment once it holds CompactBytes of segments or
	// its oldest entry is CompactAfter old. 0 = 64 MiB and 1h.
	CompactBytes int64
	CompactAfter time.Duration
	// CompactGrace (packed layout) is how long a flush object whose entries
	// are all compacted stays readable before it is deleted (restores that
	// planned before the compaction). 0 = 1h; negative = none.
	CompactGrace time.Duration
	// ClaimCheckInterval (packed layout, continuous archiver) is how often
	// each owned partition's claim is checked: one GET of the next epoch's
	// claim, spread over the interval. An archiver outside this one's group
	// (a standalone run beside a group, a second group) that claims a
	// partition is noticed within it, instead of at the next compaction
	// only (--compact-after): until then this archiver's entries for the
	// partition are void and its archive does not advance. 0 = 10m;
	// negative = only at compactions.
	ClaimCheckInterval time.Duration

	// WriterID names this archiver in commit entries. "" = hostname/pid.
	WriterID string
	// Version is recorded in the archive root marker. "" = "kbackup".
	Version string
	// Logger receives structured logs. nil discards them.
	Logger *slog.Logger
	// Registerer receives the archiver's metrics and those of its Kafka
	// clients (kbackup_kafka_*, labelled client="data" or client="group").
	// nil registers nothing.
	Registerer prometheus.Registerer
	// Now returns the current time. nil = time.Now.
	Now func() time.Time

	// reclaimDelay (group members) is how long after losing a partition's
	// claim the archiver claims it again (reclaimLater). 0 =
	// defaultReclaimDelay; tests set it.
	reclaimDelay time.Duration

	// testCompacted, when set, runs in a compaction's goroutine after its
	// result was handed to the loop (tests widen the window after it).
	testCompacted func()
}

func (o *Options) setDefaults() error {
	if o.Store == nil {
		return fmt.Errorf("archive: no store")
	}
	if len(o.KafkaOpts) == 0 {
		return fmt.Errorf("archive: no Kafka connection options (brokers)")
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = DefaultSegmentBytes
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if o.BlockBytes <= 0 {
		o.BlockBytes = DefaultBlockBytes
	}
	if o.Compression == "" {
		o.Compression = DefaultCompression
	}
	codec, err := manifest.ParseCodec(o.Compression)
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	o.codec = codec
	if o.MaxBufferedBytes <= 0 {
		o.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
	if o.CommitConcurrency <= 0 {
		o.CommitConcurrency = DefaultCommitConcurrency
	}
	if o.RefreshInterval <= 0 {
		o.RefreshInterval = DefaultRefreshInterval
	}
	if o.CatalogInterval <= 0 {
		o.CatalogInterval = DefaultCatalogInterval
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = DefaultShutdownTimeout
	}
	if o.OnceCommitAttempts <= 0 {
		o.OnceCommitAttempts = DefaultOnceAttempts
	}
	switch o.Layout {
	case "":
		o.Layout = LayoutSegments
	case LayoutSegments, LayoutPacked, LayoutAuto:
	default:
		return fmt.Errorf("archive: layout %q is not %q, %q or %q", o.Layout, LayoutAuto, LayoutSegments, LayoutPacked)
	}
	if o.CompactBytes <= 0 {
		o.CompactBytes = DefaultCompactBytes
	}
	if o.CompactAfter <= 0 {
		o.CompactAfter = DefaultCompactAfter
	}
	if o.CompactGrace == 0 {
		o.CompactGrace = DefaultCompactGrace
	}
	if o.reclaimDelay <= 0 {
		o.reclaimDelay = defaultReclaimDelay
	}
	if o.ClaimCheckInterval == 0 {
		o.ClaimCheckInterval = DefaultClaimCheckInterval
	}
	if o.RetentionInterval <= 0 {
		o.RetentionInterval = DefaultRetentionInterval
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
	if o.Once {
		o.Group = ""
	}
	return nil
}

// Selected reports whether the options select topic.
func (o *Options) Selected(topic string) bool { return o.Topics.Match(topic) }
