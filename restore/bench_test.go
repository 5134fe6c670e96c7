package restore

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/internal/target"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
)

// countingStore counts the requests made to a store.
type countingStore struct {
	store.Store
	n atomic.Int64
}

func (c *countingStore) Put(ctx context.Context, key string, r io.Reader, size int64, o store.PutOptions) error {
	c.n.Add(1)
	return c.Store.Put(ctx, key, r, size, o)
}

func (c *countingStore) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	c.n.Add(1)
	return c.Store.GetRange(ctx, key, off, n)
}

func (c *countingStore) Stat(ctx context.Context, key string) (store.ObjectInfo, error) {
	c.n.Add(1)
	return c.Store.Stat(ctx, key)
}

func (c *countingStore) List(ctx context.Context, o store.ListOptions, fn func(store.ListEntry) error) error {
	c.n.Add(1)
	return c.Store.List(ctx, o, fn)
}

// synthArchive writes one topic of parts partitions directly with the
// format package: records of valueSize bytes, timestamps t0 + offset ms,
// segments of segBytes with blocks of blockBytes, totalling about
// totalBytes. It returns the number of records per partition.
func synthArchive(tb testing.TB, st store.Store, topic string, parts int32, totalBytes int64, valueSize, segBytes, blockBytes int, codec manifest.Codec) int64 {
	tb.Helper()
	ctx := context.Background()
	a, err := manifest.Init(ctx, st, "bench", 1)
	if err != nil {
		tb.Fatal(err)
	}
	id := manifest.TopicID{0xbe, 0x7c}
	if err := a.EnsureTopic(ctx, topic, id, 1); err != nil {
		tb.Fatal(err)
	}
	value := make([]byte, valueSize)
	for i := range value {
		value[i] = byte(i*7 + i>>3)
	}
	perPart := totalBytes / int64(parts) / int64(valueSize+24)
	for p := int32(0); p < parts; p++ {
		pl := a.Partition(topic, id, p)
		var head *manifest.Commit
		var w *manifest.SegmentWriter
		flush := func() {
			seg, info := w.Finish()
			if head, err = pl.Append(ctx, head, seg, info, "bench", 1); err != nil {
				tb.Fatal(err)
			}
			w = nil
		}
		for o := int64(0); o < perPart; o++ {
			if w == nil {
				w = manifest.NewSegmentWriter(o, manifest.SegmentOptions{Codec: codec, BlockSize: blockBytes})
			}
			value[0], value[1] = byte(o), byte(o>>8)
			r := &manifest.Record{Offset: o, Timestamp: 1_700_000_000_000 + o, Key: []byte(fmt.Sprintf("key-%d", o%1000)), Value: value,
				ProducerID: -1, ProducerEpoch: -1, LeaderEpoch: -1}
			if err := w.Append(r); err != nil {
				tb.Fatal(err)
			}
			if w.Size() >= segBytes {
				flush()
			}
		}
		if w != nil {
			flush()
		}
	}
	return perPart
}

// BenchmarkRestoreThroughput restores a synthetic archive into kfake and,
// in the same run, writes the same records with a plain franz-go producer
// to the same cluster; "ratio" is restore throughput / producer
// throughput (target >= 0.8).
func BenchmarkRestoreThroughput(b *testing.B) {
	st, _ := newStore(b)
	const parts = 4
	perPart := synthArchive(b, st, "tp", parts, restoreBenchBytes, 200, 4<<20, 1<<20, manifest.CodecZstd)
	total := perPart * parts
	c := newCluster(b)
	var restoreDur, plainDur time.Duration
	b.SetBytes(restoreBenchBytes)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dst := fmt.Sprintf("restored-%d", i)
		b.StopTimer()
		runtime.GC() // each side starts with a clean heap
		b.StartTimer()
		start := time.Now()
		_, err := Run(context.Background(), Options{Store: st, KafkaOpts: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)},
			Topics: mustSel(b, "tp"), Rename: map[string]string{"tp": dst}, ID: dst, Logger: testLogger(b)})
		if err != nil {
			b.Fatal(err)
		}
		restoreDur += time.Since(start)

		b.StopTimer()
		createTopic(b, c, "plain-"+dst, parts, nil)
		cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()),
			kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(1<<20))
		if err != nil {
			b.Fatal(err)
		}
		// The plain producer's input is free: decoded before its round,
		// and only for it (the restore rounds do not mark it in GC).
		plain := decodedRecords(b, st, "tp", parts, "plain-"+dst)
		runtime.GC()
		b.StartTimer()
		start = time.Now()
		var perr atomic.Value
		promise := func(_ *kgo.Record, err error) {
			if err != nil {
				perr.Store(err)
			}
		}
		for _, r := range plain {
			cl.Produce(context.Background(), r, promise)
		}
		if err := cl.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
		plainDur += time.Since(start)
		cl.Close()
		if err, _ := perr.Load().(error); err != nil {
			b.Fatal(err)
		}
	}
	restoreRate := float64(total*int64(b.N)) / restoreDur.Seconds()
	plainRate := float64(total*int64(b.N)) / plainDur.Seconds()
	b.ReportMetric(restoreRate, "restore-records/s")
	b.ReportMetric(plainRate, "producer-records/s")
	b.ReportMetric(restoreRate/plainRate, "ratio")
}

// decodedRecords returns the records of topic's parts partitions in st as
// franz-go records for topic dst (the plain producer's input).
func decodedRecords(tb testing.TB, st store.Store, topic string, parts int32, dst string) []*kgo.Record {
	tb.Helper()
	a, err := manifest.Open(context.Background(), st)
	if err != nil {
		tb.Fatal(err)
	}
	var out []*kgo.Record
	for p := int32(0); p < parts; p++ {
		err := a.Partition(topic, manifest.TopicID{0xbe, 0x7c}, p).Scan(context.Background(), 0, -1, func(it manifest.ScanItem) error {
			if it.Record != nil {
				kr := target.ToKgo(it.Record, dst)
				kr.Partition = p
				out = append(out, kr)
			}
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
	return out
}

// BenchmarkPointInTimeSeek: time to first restored record and store
// requests for a point-in-time restore (--from T --to T+50ms, in the
// middle of the log) over synthetic archives of growing size. Flat in
// archive size is the target. 100 MB and 1 GB run with
// KBACKUP_BENCH_LARGE=1, and 10 GB too with KBACKUP_BENCH_HUGE=1 (writes
// about 10 GiB under the temporary directory; takes minutes).
func BenchmarkPointInTimeSeek(b *testing.B) {
	sizes := []int64{4 << 20, 32 << 20}
	if os.Getenv("KBACKUP_BENCH_LARGE") != "" || os.Getenv("KBACKUP_BENCH_HUGE") != "" {
		sizes = append(sizes, 100<<20, 1<<30)
	}
	if os.Getenv("KBACKUP_BENCH_HUGE") != "" {
		sizes = append(sizes, 10<<30)
	}
	for _, size := range sizes {
		b.Run(fmt.Sprintf("archive=%dMB", size>>20), func(b *testing.B) {
			inner, _ := newStore(b)
			perPart := synthArchive(b, inner, "pit", 1, size, 1000, 1<<20, 64<<10, manifest.CodecNone)
			st := &countingStore{Store: inner}
			c := newCluster(b)
			mid := 1_700_000_000_000 + perPart/2
			var requests int64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				st.n.Store(0)
				dst := fmt.Sprintf("pit-%d", i)
				o := Options{Store: st, StateStore: inner, KafkaOpts: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)},
					Topics: mustSel(b, "pit"), Rename: map[string]string{"pit": dst}, ID: dst, Logger: testLogger(b)}
				o.Range.FromTime, o.Range.HasFromTime = mid, true
				o.Range.ToTime, o.Range.HasToTime = mid+50, true
				sum, err := Run(context.Background(), o)
				if err != nil {
					b.Fatal(err)
				}
				if sum.Records != 51 {
					b.Fatalf("restored %d records, want 51", sum.Records)
				}
				requests += st.n.Load()
			}
			b.ReportMetric(float64(requests)/float64(b.N), "archive-requests/seek")
		})
	}
}

var restoreBenchBytes int64 = 160 << 20
