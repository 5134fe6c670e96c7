package archive

import (
	"context"
	"io"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/store"
)

// S3 Standard list prices (us-east-1) used to turn request rates into a
// monthly bill: PUT, COPY, POST and LIST cost $0.005 per 1,000 requests,
// GET and HEAD $0.0004 per 1,000, DELETE nothing.
const (
	s3PutPer1000      = 0.005
	s3GetPer1000      = 0.0004
	secondsPerMonth   = 30 * 24 * 3600
	s3StoragePerGBMon = 0.023
)

// requestCounter counts a store's requests by kind, and separately the
// requests whose key names one of the idle topics.
type requestCounter struct {
	store.Store
	idle []string // key fragments "topics/<topic>/"

	mu                              sync.Mutex
	puts, gets, stats, lists, dels  int64
	idleRequests, putBytes, created int64
	chainPuts                       int64 // PUTs of segments, commit entries and time keys
}

func (c *requestCounter) note(key string, kind *int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	*kind++
	for _, f := range c.idle {
		if strings.Contains(key, f) {
			c.idleRequests++
		}
	}
}

func (c *requestCounter) Put(ctx context.Context, key string, r io.Reader, size int64, o store.PutOptions) error {
	c.note(key, &c.puts)
	if strings.Contains(key, "/segments/") || strings.Contains(key, "/commits/") || strings.Contains(key, "/time/") {
		c.mu.Lock()
		c.chainPuts++
		c.mu.Unlock()
	}
	err := c.Store.Put(ctx, key, r, size, o)
	if err == nil {
		c.mu.Lock()
		c.putBytes += size
		c.created++
		c.mu.Unlock()
	}
	return err
}

func (c *requestCounter) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	c.note(key, &c.gets)
	return c.Store.GetRange(ctx, key, off, n)
}

func (c *requestCounter) Stat(ctx context.Context, key string) (store.ObjectInfo, error) {
	c.note(key, &c.stats)
	return c.Store.Stat(ctx, key)
}

func (c *requestCounter) List(ctx context.Context, o store.ListOptions, fn func(store.ListEntry) error) error {
	c.note(o.Prefix, &c.lists)
	return c.Store.List(ctx, o, fn)
}

func (c *requestCounter) Delete(ctx context.Context, key string) error {
	c.note(key, &c.dels)
	return c.Store.Delete(ctx, key)
}

// requestCounts is a snapshot of a requestCounter's counters.
type requestCounts struct{ puts, gets, stats, lists, dels, idle, putBytes, created, chainPuts int64 }

func (c *requestCounter) snapshot() requestCounts {
	c.mu.Lock()
	defer c.mu.Unlock()
	return requestCounts{c.puts, c.gets, c.stats, c.lists, c.dels, c.idleRequests, c.putBytes, c.created, c.chainPuts}
}

// BenchmarkStoreCost is the store-cost benchmark of docs/PERFORMANCE.md
// ("Store requests and cost"): 1,000 partitions each receiving about 1 KB/s
// (one 1,000-byte record per partition and second, spread evenly), plus
// 100 idle partitions, archived by one continuous archiver at the CLI's
// defaults (3 s flush interval, the default group) into a local directory
// behind a request-counting store, for KBACKUP_BENCH_COST_SECONDS (default
// 60) after a 15 s warm-up. It reports, over the measured window:
//
//   - "put/s" (target <= 1), "get/s", "list/s", "delete/s";
//   - "idle-requests": requests naming an idle partition (target 0);
//   - "objects/partition-hour": objects created per busy partition-hour;
//   - "requests-$/month" at S3 list prices, and "storage-$/month" for one
//     month of the stored bytes at that rate;
//   - "lag-p50-s", "lag-p99-s" (record timestamp -> commit entry; target
//     p99 <= 5 s).
//
// It runs once per layout (layout=segments, layout=packed). The packed
// layout compacts a partition's tail after --compact-after (default 2 h),
// far beyond the window: after the window, one archiver started with
// compaction due at once compacts every busy partition, and the benchmark
// adds what that costs at the default interval:
//
//   - "compaction-puts/partition": PUTs of one partition's compaction;
//   - "put/s-with-compaction": put/s plus those PUTs spread over the
//     default --compact-after for every busy partition (target <= 1);
//   - "objects/partition-hour-compacted": objects a busy partition keeps
//     per hour once compacted (its segment, commit entry and time key per
//     --compact-after; flush objects are deleted).
func BenchmarkStoreCost(b *testing.B) {
	for _, layout := range []string{LayoutSegments, LayoutPacked} {
		b.Run("layout="+layout, func(b *testing.B) { benchmarkStoreCost(b, layout) })
	}
}

func benchmarkStoreCost(b *testing.B, layout string) {
	seconds := 60
	if s := os.Getenv("KBACKUP_BENCH_COST_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("KBACKUP_BENCH_COST_SECONDS=%q: want a positive number of seconds", s)
		}
		seconds = n
	}
	const parts, idleParts, recordSize = 1000, 100, 1000
	const warmup = 15 * time.Second
	for b.Loop() {
		c := newCluster(b)
		createTopic(b, c, "busy", parts, nil)
		createTopic(b, c, "idle", idleParts, nil)
		st := &requestCounter{Store: newStore(b), idle: []string{"topics/idle/"}}
		stop := startArchiver(b, c, st, func(o *Options) {
			o.FlushInterval, o.RefreshInterval = 0, 0 // defaults
			o.Group = DefaultGroup
			o.Layout = layout
		})
		cl := newClient(b, c, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5*time.Millisecond))
		r := rand.New(rand.NewPCG(7, 8))
		value := func() []byte {
			v := make([]byte, 0, recordSize)
			for len(v) < recordSize-20 {
				v = append(v, `{"k":"`+strconv.FormatUint(r.Uint64()%100000, 10)+`","v":"x"},`...)
			}
			for len(v) < recordSize {
				v = append(v, ' ')
			}
			return v
		}
		// Every 10 ms, the next tenth of a hundredth of the partitions gets a
		// record: each partition one record a second.
		start := time.Now()
		measureFrom, end := start.Add(warmup), start.Add(warmup+time.Duration(seconds)*time.Second)
		var at0 requestCounts
		var t0 time.Time
		tick := time.NewTicker(10 * time.Millisecond)
		next := int32(0)
		produced := 0
		for now := range tick.C {
			if now.After(end) {
				break
			}
			if t0.IsZero() && now.After(measureFrom) {
				at0, t0 = st.snapshot(), now
			}
			for i := 0; i < parts/100; i++ {
				cl.Produce(context.Background(), &kgo.Record{Topic: "busy", Partition: next, Value: value()}, func(_ *kgo.Record, err error) {
					if err != nil {
						b.Error(err)
					}
				})
				next = (next + 1) % parts
				produced++
			}
		}
		tick.Stop()
		at1, t1 := st.snapshot(), time.Now()
		if err := cl.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
		if err := stop(); err != nil {
			b.Fatal(err)
		}
		window := t1.Sub(t0).Seconds()
		rate := func(n int64) float64 { return float64(n) / window }
		puts, gets := at1.puts-at0.puts, (at1.gets-at0.gets)+(at1.stats-at0.stats)
		lists, dels := at1.lists-at0.lists, at1.dels-at0.dels
		b.ReportMetric(rate(puts), "put/s")
		b.ReportMetric(rate(gets), "get/s")
		b.ReportMetric(rate(lists), "list/s")
		b.ReportMetric(rate(dels), "delete/s")
		b.ReportMetric(float64(at1.idle-at0.idle), "idle-requests")
		b.ReportMetric(float64(at1.created-at0.created)/parts/(window/3600), "objects/partition-hour")
		b.ReportMetric((rate(puts+lists)*s3PutPer1000+rate(gets)*s3GetPer1000)/1000*secondsPerMonth, "requests-$/month")
		b.ReportMetric(rate(at1.putBytes-at0.putBytes)*secondsPerMonth/1e9*s3StoragePerGBMon, "storage-$/month")

		lags := commitLags(b, st, "busy")
		if len(lags) < produced*9/10 {
			b.Fatalf("only %d of %d records archived", len(lags), produced)
		}
		sort.Float64s(lags)
		b.ReportMetric(lags[len(lags)/2], "lag-p50-s")
		b.ReportMetric(lags[len(lags)*99/100], "lag-p99-s")

		if layout != LayoutPacked {
			continue
		}
		// Compact every busy partition now, as the default interval would.
		before := st.snapshot()
		stop = startArchiver(b, c, st, func(o *Options) {
			o.Group, o.Layout = DefaultGroup, LayoutPacked
			o.CompactAfter, o.CompactGrace = time.Millisecond, -1
		})
		// Done when every busy partition has compacted (a segment and a
		// commit entry each at least) and nothing more is written for 3 s.
		deadline := time.Now().Add(10 * time.Minute)
		for last, still := int64(-1), 0; time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
			n := st.snapshot().chainPuts - before.chainPuts
			if n == last && n >= 2*parts {
				if still++; still >= 6 {
					break
				}
			} else {
				still = 0
			}
			last = n
		}
		if err := stop(); err != nil {
			b.Fatal(err)
		}
		after := st.snapshot()
		perPart := float64(after.chainPuts-before.chainPuts) / parts
		b.ReportMetric(perPart, "compaction-puts/partition")
		b.ReportMetric(rate(puts)+perPart*parts/DefaultCompactAfter.Seconds(), "put/s-with-compaction")
		b.ReportMetric(perPart/DefaultCompactAfter.Hours(), "objects/partition-hour-compacted")
		checkLagsAfterCompaction := commitLags(b, st, "busy")
		if len(checkLagsAfterCompaction) < len(lags) {
			b.Fatalf("%d records after compaction, %d before", len(checkLagsAfterCompaction), len(lags))
		}
	}
}
