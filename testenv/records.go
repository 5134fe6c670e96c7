package testenv

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/kafkaconn"
)

// Header is a record header; a nil Value is a null header value.
type Header struct {
	Key   string `json:"key"`
	Value []byte `json:"value"`
}

// Record is a Kafka record as tests see it, from either client. Its JSON
// form is the one `kbackup cat` prints and testenv/kclient.py reads and
// writes: key, value and header values base64, JSON null for null.
// A nil Key/Value is null; a non-nil empty one is empty (they differ).
type Record struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	// Timestamp in unix milliseconds (0 when producing = let the client set it).
	Timestamp int64 `json:"timestamp"`
	// TimestampType is "CreateTime" or "LogAppendTime".
	TimestampType string   `json:"timestamp_type"`
	Key           []byte   `json:"key"`
	Value         []byte   `json:"value"`
	Headers       []Header `json:"headers"`
	// Compression is the codec of the batch the record was read from (only
	// set by the franz-go readers here): none, gzip, snappy, lz4, zstd.
	Compression string `json:"compression,omitempty"`
	// Control marks a transaction marker (only with ConsumeOptions.KeepControl).
	Control bool `json:"control,omitempty"`
	// Transactional marks a record from a transactional batch (franz-go readers).
	Transactional bool `json:"transactional,omitempty"`
}

// Codecs lists every Kafka compression codec, "none" first.
var Codecs = []string{"none", "gzip", "snappy", "lz4", "zstd"}

var codecNames = map[uint8]string{0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}

// FromKgo converts a franz-go record.
func FromKgo(r *kgo.Record) Record {
	out := Record{
		Topic:         r.Topic,
		Partition:     r.Partition,
		Offset:        r.Offset,
		Timestamp:     r.Timestamp.UnixMilli(),
		TimestampType: "CreateTime",
		Key:           r.Key,
		Value:         r.Value,
		Compression:   codecNames[r.Attrs.CompressionType()],
		Control:       r.Attrs.IsControl(),
		Transactional: r.Attrs.IsTransactional(),
	}
	if r.Attrs.TimestampType() == 1 {
		out.TimestampType = "LogAppendTime"
	}
	for _, h := range r.Headers {
		out.Headers = append(out.Headers, Header{Key: h.Key, Value: h.Value})
	}
	return out
}

// ToKgo converts to a franz-go record for producing (offset and type ignored).
func (r Record) ToKgo() *kgo.Record {
	out := &kgo.Record{Topic: r.Topic, Partition: r.Partition, Key: r.Key, Value: r.Value}
	if r.Timestamp != 0 {
		out.Timestamp = time.UnixMilli(r.Timestamp)
	}
	for _, h := range r.Headers {
		out.Headers = append(out.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
	}
	return out
}

func fmtBytes(b []byte) string {
	if b == nil {
		return "null"
	}
	return fmt.Sprintf("%q", b)
}

// String is a compact description for messages.
func (r Record) String() string {
	var hs []string
	for _, h := range r.Headers {
		hs = append(hs, h.Key+"="+fmtBytes(h.Value))
	}
	return fmt.Sprintf("%s/%d@%d ts=%d(%s) key=%s value=%s headers=[%s]", r.Topic, r.Partition, r.Offset,
		r.Timestamp, r.TimestampType, fmtBytes(r.Key), fmtBytes(r.Value), strings.Join(hs, " "))
}

// nullEqual compares byte slices keeping null (nil) distinct from empty.
func nullEqual(a, b []byte) bool {
	if (a == nil) != (b == nil) {
		return false
	}
	return bytes.Equal(a, b)
}

// SameData reports whether two records have the same key, value and
// headers (in order, null distinct from empty). Offsets, partitions and
// timestamps are not compared.
func SameData(a, b Record) bool {
	if !nullEqual(a.Key, b.Key) || !nullEqual(a.Value, b.Value) || len(a.Headers) != len(b.Headers) {
		return false
	}
	for i := range a.Headers {
		if a.Headers[i].Key != b.Headers[i].Key || !nullEqual(a.Headers[i].Value, b.Headers[i].Value) {
			return false
		}
	}
	return true
}

// Identical reports whether two records are equal in every field a backup
// must keep: topic, partition, offset, timestamp and its type, key, value,
// headers.
func Identical(a, b Record) bool {
	return a.Topic == b.Topic && a.Partition == b.Partition && a.Offset == b.Offset &&
		a.Timestamp == b.Timestamp && a.TimestampType == b.TimestampType && SameData(a, b)
}

// SortRecords orders records by topic, partition, offset.
func SortRecords(rs []Record) {
	sort.SliceStable(rs, func(i, j int) bool {
		a, b := rs[i], rs[j]
		if a.Topic != b.Topic {
			return a.Topic < b.Topic
		}
		if a.Partition != b.Partition {
			return a.Partition < b.Partition
		}
		return a.Offset < b.Offset
	})
}

// Isolation selects what a consumer reads.
type Isolation int

const (
	// ReadCommitted skips aborted transactional records and reads up to the
	// last stable offset.
	ReadCommitted Isolation = iota
	// ReadUncommitted reads everything up to the high watermark.
	ReadUncommitted
)

// ConsumeOptions tune ConsumeAllOpts.
type ConsumeOptions struct {
	Isolation Isolation
	// KeepControl returns transaction markers too (Control=true).
	KeepControl bool
	// Timeout bounds the whole read (default 2 minutes).
	Timeout time.Duration
	// ClientOpts are extra franz-go options.
	ClientOpts []kgo.Opt
}

// ConsumeAll reads every partition of topic with franz-go from the log
// start up to the end offsets at the time of the call (high watermark, or
// last stable offset for ReadCommitted), and returns the data records
// ordered by partition and offset.
func ConsumeAll(tb testing.TB, brokers []string, topic string, iso Isolation) []Record {
	tb.Helper()
	return ConsumeAllOpts(tb, brokers, topic, ConsumeOptions{Isolation: iso})
}

// ConsumeAllOpts is ConsumeAll with options.
func ConsumeAllOpts(tb testing.TB, brokers []string, topic string, o ConsumeOptions) []Record {
	tb.Helper()
	recs, err := consumeAll(brokers, topic, o)
	if err != nil {
		tb.Fatalf("testenv: consume %s: %v", topic, err)
	}
	return recs
}

func consumeAll(brokers []string, topic string, o ConsumeOptions) ([]Record, error) {
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	defer cancel()
	adm, acl, err := adminFor(brokers)
	if err != nil {
		return nil, err
	}
	defer acl.Close()
	// Retriable partition errors (right after brokers restart a new
	// leader answers OFFSET_NOT_AVAILABLE for a moment) are retried.
	ends, err := kafkaconn.ListOffsetsRetrying(ctx, func(ctx context.Context) (kadm.ListedOffsets, error) {
		if o.Isolation == ReadCommitted {
			return adm.ListCommittedOffsets(ctx, topic)
		}
		return adm.ListEndOffsets(ctx, topic)
	})
	if err != nil {
		return nil, fmt.Errorf("end offsets: %w", err)
	}
	starts, err := kafkaconn.ListOffsetsRetrying(ctx, func(ctx context.Context) (kadm.ListedOffsets, error) { return adm.ListStartOffsets(ctx, topic) })
	if err != nil {
		return nil, fmt.Errorf("start offsets: %w", err)
	}
	want := map[int32]int64{}
	parts := map[int32]kgo.Offset{}
	ends.Each(func(l kadm.ListedOffset) {
		if s, ok := starts.Lookup(topic, l.Partition); ok && s.Offset >= l.Offset {
			return // empty (or everything deleted)
		}
		if l.Offset > 0 {
			want[l.Partition] = l.Offset
			parts[l.Partition] = kgo.NewOffset().AtStart()
		}
	})
	if len(parts) == 0 {
		return nil, nil
	}
	iso := kgo.ReadCommitted()
	if o.Isolation == ReadUncommitted {
		iso = kgo.ReadUncommitted()
	}
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}),
		kgo.FetchIsolationLevel(iso),
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(500 * time.Millisecond),
	}, o.ClientOpts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var out []Record
	next := map[int32]int64{}
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return out, fmt.Errorf("%w: still waiting for partitions (partition: next offset/end) %v / %v", ctx.Err(), next, want)
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if ferr == nil {
				ferr = fmt.Errorf("fetch %s/%d: %w", t, p, err)
			}
		})
		if ferr != nil && !kgo.IsRetryableBrokerErr(ferr) {
			return out, ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			next[r.Partition] = r.Offset + 1
			if end, ok := want[r.Partition]; ok && r.Offset+1 >= end {
				delete(want, r.Partition)
			}
			if r.Offset >= wantEnd(ends, r.Partition) {
				return // produced after the call started
			}
			if r.Attrs.IsControl() && !o.KeepControl {
				return
			}
			out = append(out, FromKgo(r))
		})
	}
	SortRecords(out)
	return out, nil
}

func wantEnd(ends kadm.ListedOffsets, p int32) int64 {
	for _, ps := range ends {
		if l, ok := ps[p]; ok {
			return l.Offset
		}
	}
	return 0
}

// ProduceSync produces records with franz-go (acks=all, idempotent) and
// returns them with partition, offset and timestamp filled in.
func ProduceSync(tb testing.TB, brokers []string, recs []Record, opts ...kgo.Opt) []Record {
	tb.Helper()
	all := append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RecordDeliveryTimeout(2 * time.Minute)}, opts...)
	cl, err := kgo.NewClient(all...)
	if err != nil {
		tb.Fatalf("testenv: producer: %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	krs := make([]*kgo.Record, len(recs))
	for i, r := range recs {
		krs[i] = r.ToKgo()
	}
	res := cl.ProduceSync(ctx, krs...)
	if err := res.FirstErr(); err != nil {
		tb.Fatalf("testenv: produce: %v", err)
	}
	out := make([]Record, len(res))
	for i, pr := range res {
		out[i] = FromKgo(pr.Record)
	}
	return out
}

// ProduceSeq produces n records "key-i"/"value-i" (i from 0) to one
// partition with franz-go and returns them.
func ProduceSeq(tb testing.TB, brokers []string, topic string, partition int32, n int) []Record {
	tb.Helper()
	recs := make([]Record, n)
	for i := range recs {
		recs[i] = Record{Topic: topic, Partition: partition,
			Key: fmt.Appendf(nil, "key-%d", i), Value: fmt.Appendf(nil, "value-%d", i)}
	}
	return ProduceSync(tb, brokers, recs)
}
