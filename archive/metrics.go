package archive

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"

	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
)

// Kafka client roles: the value of the client label of the kbackup_kafka_*
// metrics (franz-go's kprom).
const (
	clientData  = "data"  // fetches records
	clientGroup = "group" // group membership only (never fetches)
)

// kafkaMetrics returns the hook option that exports franz-go's client
// metrics for one client, labelled client=role, or nil without a
// registerer. A kprom.Metrics registers its collectors when its client is
// created and holds per-client state, so every client gets its own: sharing
// one between two live clients panics with a duplicate registration.
func kafkaMetrics(reg prometheus.Registerer, role string) []kgo.Opt {
	if reg == nil {
		return nil
	}
	return []kgo.Opt{kgo.WithHooks(kprom.NewMetrics("kbackup_kafka",
		kprom.Registerer(reg), kprom.WithStaticLabel(prometheus.Labels{"client": role})))}
}

// metrics are the archiver's Prometheus metrics, on an explicit registry.
type metrics struct {
	archivedOffset *prometheus.GaugeVec     // next offset to archive (head end + 1)
	lagRecords     *prometheus.GaugeVec     // high watermark - archived offset
	lagSeconds     *prometheus.GaugeVec     // age of the oldest uncommitted record
	earliestTs     *prometheus.GaugeVec     // recoverable window start (seconds)
	latestTs       *prometheus.GaugeVec     // recoverable window end (seconds)
	records        *prometheus.CounterVec   // committed records
	bytes          *prometheus.CounterVec   // committed segment bytes
	segments       *prometheus.CounterVec   // committed segments
	gapOffsets     *prometheus.CounterVec   // offsets committed as gaps, by reason
	commitSeconds  prometheus.Histogram     // segment+commit+time key latency
	storeErrors    *prometheus.CounterVec   // failed store operations by op
	fenced         prometheus.Counter       // commits refused because another writer committed first
	compactions    prometheus.Counter       // packed layout: tail compactions committed
	compactedBytes prometheus.Counter       // packed layout: tail bytes compacted
	walDeleted     prometheus.Counter       // packed layout: flush objects deleted
	buffered       prometheus.Gauge         // bytes held in open and sealed segments
	bufferedMax    prometheus.Gauge         // the bound on buffered (MaxBufferedBytes)
	partitions     prometheus.Gauge         // partitions owned
	recordLag      *prometheus.HistogramVec // record timestamp -> commit, seconds (CreateTime only)
	expiredOffsets *prometheus.CounterVec   // offsets expired by this archiver's retention
	archiveStart   *prometheus.GaugeVec     // the archive start per partition
}

func newMetrics(reg prometheus.Registerer) *metrics {
	tp := []string{"topic", "partition"}
	m := &metrics{
		archivedOffset: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kbackup_archive_offset",
			Help: "Next offset to archive per partition (everything below is committed to the store)."}, tp),
		lagRecords: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kbackup_archive_lag_records",
			Help: "High watermark minus the archived offset, per partition."}, tp),
		lagSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kbackup_archive_lag_seconds",
			Help: "Age of the oldest fetched but not yet committed record, per partition (0 when caught up)."}, tp),
		earliestTs: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kbackup_archive_earliest_timestamp_seconds",
			Help: "Smallest archived record timestamp per partition: the start of the recoverable window."}, tp),
		latestTs: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kbackup_archive_latest_timestamp_seconds",
			Help: "Largest archived record timestamp per partition: the end of the recoverable window."}, tp),
		records: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kbackup_archive_records_total",
			Help: "Records committed to the store."}, []string{"topic"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kbackup_archive_bytes_total",
			Help: "Segment bytes committed to the store."}, []string{"topic"}),
		segments: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kbackup_archive_segments_total",
			Help: "Segments committed to the store."}, []string{"topic"}),
		gapOffsets: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kbackup_archive_gap_offsets_total",
			Help: "Offsets committed as gaps, by reason (DATA-LOSS means retention deleted records before they were archived). Every reason exists at 0 for every owned partition."}, []string{"topic", "partition", "reason"}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kbackup_archive_commit_seconds",
			Help: "Time to write a segment, its commit entry and time key.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kbackup_store_errors_total",
			Help: "Failed store operations by operation."}, []string{"op"}),
		fenced: prometheus.NewCounter(prometheus.CounterOpts{Name: "kbackup_archive_fenced_total",
			Help: "Commits refused because another archiver committed the range first."}),
		compactions: prometheus.NewCounter(prometheus.CounterOpts{Name: "kbackup_archive_compactions_total",
			Help: "Packed layout: partition tails compacted into segments."}),
		compactedBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "kbackup_archive_compacted_bytes_total",
			Help: "Packed layout: bytes of flush-object entries compacted into segments."}),
		walDeleted: prometheus.NewCounter(prometheus.CounterOpts{Name: "kbackup_archive_flush_objects_deleted_total",
			Help: "Packed layout: flush objects deleted once every entry in them was compacted or void (this archiver's own, and stopped archivers')."}),
		buffered: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kbackup_archive_buffered_bytes",
			Help: "Bytes held in memory in open and sealed segments."}),
		bufferedMax: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kbackup_archive_max_buffered_bytes",
			Help: "The bound on kbackup_archive_buffered_bytes (--max-buffered-bytes): above it fetching pauses."}),
		partitions: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kbackup_archive_partitions",
			Help: "Partitions this archiver owns."}),
		recordLag: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kbackup_archive_record_lag_seconds",
			Help:    "Time from a record's CreateTime timestamp to its commit in the store.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 3, 4, 5, 7.5, 10, 20, 60, 120, 300, 900, 3600}}, []string{"topic"}),
		expiredOffsets: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kbackup_archive_expired_offsets_total",
			Help: "Offsets the archiver's retention (--retention, --retention-bytes) expired, per partition. Every owned partition exists at 0."}, tp),
		archiveStart: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kbackup_archive_start_offset",
			Help: "Archive start per partition: the first recoverable offset (offsets below it expired; 0 = none)."}, tp),
	}
	if reg != nil {
		reg.MustRegister(m.archivedOffset, m.lagRecords, m.lagSeconds, m.earliestTs, m.latestTs, m.records, m.bytes,
			m.segments, m.gapOffsets, m.commitSeconds, m.storeErrors, m.fenced, m.buffered, m.bufferedMax, m.partitions, m.recordLag,
			m.expiredOffsets, m.archiveStart, m.compactions, m.compactedBytes, m.walDeleted)
	}
	return m
}

// gapReasons are the label values of kbackup_archive_gap_offsets_total.
var gapReasons = func() []string {
	out := make([]string, 0, manifest.NumGapReasons-1)
	for r := manifest.GapReason(1); r < manifest.NumGapReasons; r++ {
		out = append(out, r.String())
	}
	return out
}()

// partitionStarted creates the series of a newly owned partition at 0, so
// that an alert on increase() sees the first gap (a counter series born at
// its first increment has no earlier sample to increase from).
func (m *metrics) partitionStarted(topic string, partition int32) {
	p := strconv.Itoa(int(partition))
	for _, r := range gapReasons {
		m.gapOffsets.WithLabelValues(topic, p, r).Add(0)
	}
	m.expiredOffsets.WithLabelValues(topic, p).Add(0)
	m.records.WithLabelValues(topic).Add(0)
	m.bytes.WithLabelValues(topic).Add(0)
	m.segments.WithLabelValues(topic).Add(0)
}

// partitionReleased deletes the per-partition series of a partition this
// archiver no longer owns (the new owner exports its own).
func (m *metrics) partitionReleased(topic string, partition int32) {
	l := []string{topic, strconv.Itoa(int(partition))}
	for _, g := range []*prometheus.GaugeVec{m.archivedOffset, m.lagRecords, m.lagSeconds, m.earliestTs, m.latestTs, m.archiveStart} {
		g.DeleteLabelValues(l...)
	}
	m.expiredOffsets.DeleteLabelValues(l...)
	for _, r := range gapReasons {
		m.gapOffsets.DeleteLabelValues(l[0], l[1], r)
	}
}

// partBufferCollector exports a store's part buffers (S3 multipart parts
// held outside the Go heap, which go_memstats_* do not count), read at
// each scrape.
type partBufferCollector struct{ pb store.PartBufferReporter }

var (
	partBuffersDesc = prometheus.NewDesc("kbackup_store_part_buffers",
		"Staged objects' part buffers (S3 multipart parts, outside the Go heap) by state: in_use (filling or uploading), idle (holding their memory, reused next), released (memory returned to the kernel).",
		[]string{"state"}, nil)
	partBufferBytesDesc = prometheus.NewDesc("kbackup_store_part_buffer_bytes",
		"Memory part buffers in use or idle can hold (outside the Go heap, in the process's resident memory): their size, a part and the room past it for an uncompressed block encoded in place, which takes memory only where written.", nil, nil)
	partBuffersAbandonedDesc = prometheus.NewDesc("kbackup_store_part_buffers_abandoned_total",
		"Part buffers given up after a failed or cut-off upload (never reused; unmapped later).", nil, nil)
)

func (partBufferCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- partBuffersDesc
	ch <- partBufferBytesDesc
	ch <- partBuffersAbandonedDesc
}

func (c partBufferCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.pb.PartBuffers()
	ch <- prometheus.MustNewConstMetric(partBuffersDesc, prometheus.GaugeValue, float64(st.InUse), "in_use")
	ch <- prometheus.MustNewConstMetric(partBuffersDesc, prometheus.GaugeValue, float64(st.Resident), "idle")
	ch <- prometheus.MustNewConstMetric(partBuffersDesc, prometheus.GaugeValue, float64(st.Released), "released")
	ch <- prometheus.MustNewConstMetric(partBufferBytesDesc, prometheus.GaugeValue, float64((st.InUse+st.Resident)*st.Size))
	ch <- prometheus.MustNewConstMetric(partBuffersAbandonedDesc, prometheus.CounterValue, float64(st.Abandoned))
}
