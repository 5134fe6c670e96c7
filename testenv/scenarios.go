package testenv

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Building blocks for tests against a real cluster: topic configurations
// and data sets that exercise what kfake does not (real compaction with
// offset gaps, LogAppendTime, transaction markers, every codec from
// another client, a broker dying mid-stream). The archiver and restore
// tests reuse them.

// CompactionConfigs returns topic configs under which the log cleaner
// really runs within seconds: compaction, tiny segment.ms (segments roll
// on the next append), min.cleanable.dirty.ratio 0.01, no compaction lag.
// Brokers started by this package also use log.cleaner.backoff.ms=500.
func CompactionConfigs() map[string]string {
	return map[string]string{
		"cleanup.policy":            "compact",
		"segment.ms":                "100",
		"min.cleanable.dirty.ratio": "0.01",
		"min.compaction.lag.ms":     "0",
		"max.compaction.lag.ms":     "1000",
	}
}

// LogAppendTimeConfigs returns topic configs making the broker stamp every
// record with its append time.
func LogAppendTimeConfigs() map[string]string {
	return map[string]string{"message.timestamp.type": "LogAppendTime"}
}

// InterestingRecords returns records covering what fidelity must keep:
// null vs empty key and value (tombstone), headers in order with
// duplicate keys, null and empty header values, binary bytes, a large
// compressible value. tag makes the values unique per call.
func InterestingRecords(topic string, partition int32, tag string) []Record {
	big := []byte(strings.Repeat("kbackup-"+tag+"-compressible-", 200))
	bin := []byte{0, 1, 2, 0xff, 0xfe, '\n', '"', '\\'}
	ts := time.Date(2024, 2, 29, 12, 0, 0, 0, time.UTC).UnixMilli()
	rs := []Record{
		{Key: []byte("k-" + tag), Value: []byte("plain-" + tag)},
		{Key: nil, Value: []byte("null-key-" + tag)},
		{Key: []byte{}, Value: []byte("empty-key-" + tag)},
		{Key: []byte("tombstone-" + tag), Value: nil},
		{Key: []byte("empty-value-" + tag), Value: []byte{}},
		{Key: []byte("headers-" + tag), Value: []byte("h"), Headers: []Header{
			{Key: "dup", Value: []byte("1")}, {Key: "null", Value: nil}, {Key: "dup", Value: []byte("2")},
			{Key: "empty", Value: []byte{}}, {Key: "", Value: []byte("empty-key")}, {Key: "bin", Value: bin},
		}},
		{Key: bin, Value: append(append([]byte{}, bin...), tag...)},
		{Key: []byte("big-" + tag), Value: big},
		{Key: []byte("ts-" + tag), Value: []byte("explicit timestamp"), Timestamp: ts},
		{Key: nil, Value: nil},
	}
	for i := range rs {
		rs[i].Topic = topic
		rs[i].Partition = partition
	}
	return rs
}

// ProduceEveryCodec produces InterestingRecords once per codec with the
// independent client (one producer per codec, all to partition) and
// returns the delivered records per codec.
func ProduceEveryCodec(tb testing.TB, brokers []string, topic string, partition int32) map[string][]Record {
	tb.Helper()
	out := map[string][]Record{}
	for _, c := range Codecs {
		recs := InterestingRecords(topic, partition, c)
		out[c] = RdkProduce(tb, brokers, topic, recs, ProduceOptions{Compression: c, Idempotent: true,
			Config: map[string]string{"linger.ms": "50"}})
	}
	return out
}

// ProduceTxnMix writes committed and aborted transactions (with the
// independent client) to one partition: commit 3, abort 3, commit 2,
// abort 2, commit 1 records. It returns the committed and the aborted
// records as delivered (aborted records occupy offsets too).
func ProduceTxnMix(tb testing.TB, brokers []string, topic string, partition int32) (committed, aborted []Record) {
	tb.Helper()
	sizes := []int{3, 3, 2, 2, 1}
	var txns []Txn
	for i, n := range sizes {
		var rs []Record
		state := "committed"
		if i%2 == 1 {
			state = "aborted"
		}
		for j := 0; j < n; j++ {
			rs = append(rs, Record{Topic: topic, Partition: partition,
				Key:     fmt.Appendf(nil, "txn-%d-%d", i, j),
				Value:   fmt.Appendf(nil, "%s-%d-%d", state, i, j),
				Headers: []Header{{Key: "txn", Value: []byte(state)}}})
		}
		txns = append(txns, Txn{Records: rs, Abort: i%2 == 1})
	}
	res := RdkProduceTxns(tb, brokers, topic, txns, ProduceOptions{})
	for i, rs := range res {
		if txns[i].Abort {
			aborted = append(aborted, rs...)
		} else {
			committed = append(committed, rs...)
		}
	}
	return committed, aborted
}

// ProduceCompactable produces rounds of updates of nKeys keys to one
// partition of a topic created with CompactionConfigs, pausing between
// rounds so each round lands in a new segment (only closed segments are
// cleaned). Round 0 also writes keys "keep-0".."keep-2" that are never
// updated, so the survivors interleave with the cleaned offsets. Key
// "ck-0" gets a tombstone in the second-to-last round. It returns what was
// produced.
func ProduceCompactable(tb testing.TB, brokers []string, topic string, partition int32, nKeys, rounds int) []Record {
	tb.Helper()
	var all []Record
	for r := 0; r < rounds; r++ {
		var rs []Record
		for k := 0; k < nKeys; k++ {
			v := fmt.Appendf(nil, "round-%d", r)
			if k == 0 && r == rounds-2 {
				v = nil // tombstone in a segment that gets cleaned
			}
			rs = append(rs, Record{Topic: topic, Partition: partition, Key: fmt.Appendf(nil, "ck-%d", k), Value: v})
			if r == 0 && k < 3 {
				rs = append(rs, Record{Topic: topic, Partition: partition, Key: fmt.Appendf(nil, "keep-%d", k), Value: []byte("never updated")})
			}
		}
		all = append(all, ProduceSync(tb, brokers, rs)...)
		time.Sleep(250 * time.Millisecond) // > segment.ms: the next append rolls
	}
	return all
}

// Gaps returns the offset gaps of records of one partition (sorted by
// offset) as [from, to) ranges, starting at logStart.
func Gaps(recs []Record, logStart int64) [][2]int64 {
	var gaps [][2]int64
	next := logStart
	for _, r := range recs {
		if r.Offset > next {
			gaps = append(gaps, [2]int64{next, r.Offset})
		}
		next = r.Offset + 1
	}
	return gaps
}

// WaitCompactionGaps polls (bounded by timeout) until the log cleaner has
// removed records of topic/partition so that reading it shows offset gaps,
// and returns what is left and the gaps.
func WaitCompactionGaps(tb testing.TB, brokers []string, topic string, partition int32, timeout time.Duration) ([]Record, [][2]int64) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var part []Record
		for _, r := range ConsumeAll(tb, brokers, topic, ReadUncommitted) {
			if r.Partition == partition {
				part = append(part, r)
			}
		}
		if gaps := Gaps(part, 0); len(gaps) > 0 {
			return part, gaps
		}
		if time.Now().After(deadline) {
			tb.Fatalf("testenv: %s/%d: no compaction gaps after %s (%d records, contiguous)", topic, partition, timeout, len(part))
		}
		time.Sleep(time.Second)
	}
}

// ProduceThroughBrokerKill produces n records ("seq-%06d" values, keys
// cycling over the partitions' keys) with franz-go, acks=all and
// idempotence, while broker victim is killed with SIGKILL after a third of
// them were acknowledged and restarted after two thirds. It returns the
// acknowledged records in production order; every one must be readable
// exactly once afterwards (see CheckExactlyOnce).
func ProduceThroughBrokerKill(tb testing.TB, k *Kafka, topic string, n int, victim int32) []Record {
	tb.Helper()
	cl := k.Client(tb, kgo.RequiredAcks(kgo.AllISRAcks()), kgo.RecordDeliveryTimeout(2*time.Minute),
		kgo.ProducerLinger(5*time.Millisecond), kgo.RetryTimeout(2*time.Minute))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const batch = 25
	var acked []Record
	killed, restarted := false, false
	start := time.Now()
	for i := 0; i < n; i += batch {
		var rs []*kgo.Record
		for j := i; j < min(i+batch, n); j++ {
			rs = append(rs, &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "key-%d", j%7), Value: fmt.Appendf(nil, "seq-%06d", j)})
		}
		res := cl.ProduceSync(ctx, rs...)
		if err := res.FirstErr(); err != nil {
			tb.Fatalf("testenv: produce through broker kill (at %d/%d, killed=%v restarted=%v): %v", i, n, killed, restarted, err)
		}
		for _, pr := range res {
			acked = append(acked, FromKgo(pr.Record))
		}
		switch {
		case !killed && len(acked) >= n/3:
			k.Kill(tb, victim)
			killed = true
			tb.Logf("testenv: killed broker %d after %d acked records (%s)", victim, len(acked), time.Since(start).Round(time.Millisecond))
		case killed && !restarted && len(acked) >= 2*n/3:
			k.Restart(tb, victim)
			restarted = true
			tb.Logf("testenv: restarted broker %d after %d acked records (%s)", victim, len(acked), time.Since(start).Round(time.Millisecond))
		}
	}
	if !restarted {
		k.Restart(tb, victim)
	}
	return acked
}

// CheckExactlyOnce verifies that got (as read back) contains every
// produced record exactly once, at the offset the producer was told, with
// the same data, and nothing else; order within a partition follows.
func CheckExactlyOnce(tb testing.TB, produced, got []Record) {
	tb.Helper()
	type pos struct {
		p int32
		o int64
	}
	byPos := make(map[pos]Record, len(got))
	for _, r := range got {
		if _, dup := byPos[pos{r.Partition, r.Offset}]; dup {
			tb.Fatalf("duplicate offset %d/%d in what was read", r.Partition, r.Offset)
		}
		byPos[pos{r.Partition, r.Offset}] = r
	}
	seen := map[string]bool{}
	for _, p := range produced {
		v := string(p.Value)
		if seen[v] {
			tb.Fatalf("produced value %q twice", v)
		}
		seen[v] = true
		g, ok := byPos[pos{p.Partition, p.Offset}]
		if !ok {
			tb.Fatalf("acknowledged record %s missing", p)
		}
		if !SameData(p, g) {
			tb.Fatalf("at %d/%d: produced %s, read %s", p.Partition, p.Offset, p, g)
		}
	}
	if len(got) != len(produced) {
		extra := []string{}
		for _, r := range got {
			if !seen[string(r.Value)] {
				extra = append(extra, r.String())
			}
		}
		sort.Strings(extra)
		tb.Fatalf("read %d records, produced %d; unexpected: %v", len(got), len(produced), extra[:min(5, len(extra))])
	}
}
