//go:build integration

package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/filestore"
	"github.com/kbackup/kbackup/store/s3store"
	"github.com/kbackup/kbackup/store/storetest"
	"github.com/kbackup/kbackup/testenv"
)

// realOnce runs `archive --once` against the real cluster.
func realOnce(t *testing.T, k *testenv.Kafka, st store.Store, topics ...string) {
	t.Helper()
	realOnceLayout(t, k, st, LayoutSegments, topics...)
}

// realOnceLayout is realOnce in the given layout.
func realOnceLayout(t *testing.T, k *testenv.Kafka, st store.Store, layout string, topics ...string) {
	t.Helper()
	o := Options{KafkaOpts: []kgo.Opt{kgo.SeedBrokers(k.Brokers()...)}, Store: st, Once: true, Logger: testLogger(t),
		Topics: selector(t, topics), Layout: layout}
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := a.Run(ctx); err != nil {
		t.Fatalf("archive --once: %v", err)
	}
}

// archiveEqualsConsumer checks, offset for offset, that the archive of
// topic holds exactly what the independent client (librdkafka,
// read_committed) reads, and that every other offset is a gap whose reason
// is one of allowed. It returns the archived records by partition.
func archiveEqualsConsumer(t *testing.T, k *testenv.Kafka, st store.Store, topic string, allowed ...manifest.GapReason) (map[int32][]consumed, map[int32][]manifest.Gap) {
	t.Helper()
	want := testenv.RdkConsume(t, k.Brokers(), topic, testenv.ReadCommitted)
	got, gaps := readArchive(t, st, topic)
	byPart := map[int32][]testenv.Record{}
	for _, r := range want {
		byPart[r.Partition] = append(byPart[r.Partition], r)
	}
	for p, ws := range byPart {
		gs := got[p]
		if len(gs) != len(ws) {
			t.Fatalf("%s/%d: independent client read %d records, archive has %d", topic, p, len(ws), len(gs))
		}
		for i, w := range ws {
			g := gs[i]
			tsType := "CreateTime"
			if g.TsType == manifest.LogAppendTime {
				tsType = "LogAppendTime"
			}
			if w.Offset != g.Offset || w.Timestamp != g.Timestamp || w.TimestampType != tsType ||
				!bytes.Equal(w.Key, g.Key) || (w.Key == nil) != (g.Key == nil) ||
				!bytes.Equal(w.Value, g.Value) || (w.Value == nil) != (g.Value == nil) || !sameHeaders(w.Headers, g.Headers) {
				t.Fatalf("%s/%d offset %d differs:\nclient  %s\narchive %+v", topic, p, w.Offset, w, g)
			}
		}
	}
	for p, gs := range gaps {
		for _, g := range gs {
			ok := false
			for _, r := range allowed {
				ok = ok || g.Reason == r
			}
			if !ok {
				t.Errorf("%s/%d: gap %v not expected here", topic, p, g)
			}
		}
	}
	return got, gaps
}

func sameHeaders(a []testenv.Header, b []manifest.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || !bytes.Equal(a[i].Value, b[i].Value) || (a[i].Value == nil) != (b[i].Value == nil) {
			return false
		}
	}
	return true
}

// TestArchiveRealKafka proves the archiver against a real 3-broker Kafka
// and MinIO: every codec, null/empty keys and values, duplicate/null
// headers, large values, LogAppendTime, committed and aborted transactions,
// compaction gaps, a broker killed mid-stream, retention racing the
// archiver, and an archiver process killed with SIGKILL repeatedly.
func TestArchiveRealKafka(t *testing.T) {
	k := testenv.UseKafka(t)
	s3 := testenv.UseMinIO(t)
	testenv.RdkAvailable(t)
	brokers := k.Brokers()

	t.Run("fidelity", func(t *testing.T) {
		st := s3.Store(t)
		codecs := testenv.TopicName(t, "codecs")
		k.CreateTopic(t, codecs, 1, 3, nil)
		testenv.ProduceEveryCodec(t, brokers, codecs, 0)
		lat := testenv.TopicName(t, "lat")
		k.CreateTopic(t, lat, 1, 3, testenv.LogAppendTimeConfigs())
		testenv.RdkProduce(t, brokers, lat, testenv.InterestingRecords(lat, 0, "lat"), testenv.ProduceOptions{})
		txn := testenv.TopicName(t, "txn")
		k.CreateTopic(t, txn, 1, 3, nil)
		testenv.ProduceTxnMix(t, brokers, txn, 0)

		realOnce(t, k, st, codecs, lat, txn)
		archiveEqualsConsumer(t, k, st, codecs)
		got, _ := archiveEqualsConsumer(t, k, st, lat)
		for _, r := range got[0] {
			if r.TsType != manifest.LogAppendTime {
				t.Fatalf("LogAppendTime topic archived %v", r.TsType)
			}
		}
		_, gaps := archiveEqualsConsumer(t, k, st, txn, manifest.GapTransaction)
		if len(gaps[0]) == 0 {
			t.Fatal("transaction markers and aborted records left no gaps")
		}
	})

	t.Run("compaction", func(t *testing.T) {
		st := s3.Store(t)
		topic := testenv.TopicName(t, "compact")
		k.CreateTopic(t, topic, 1, 3, testenv.CompactionConfigs())
		produced := testenv.ProduceCompactable(t, brokers, topic, 0, 5, 40)
		testenv.WaitCompactionGaps(t, brokers, topic, 0, 2*time.Minute)
		realOnce(t, k, st, topic)
		got, gaps := readArchive(t, st, topic)
		// The cleaner keeps running, so the log can only shrink after the
		// archive read it: every record the log still holds must be in the
		// archive, identical, and every archived record must be the one
		// produced at its offset.
		byOffset := map[int64]testenv.Record{}
		for _, r := range produced {
			byOffset[r.Offset] = r
		}
		archived := map[int64]consumed{}
		for _, r := range got[0] {
			p, ok := byOffset[r.Offset]
			if !ok || !testenv.SameData(p, testenv.Record{Key: r.Key, Value: r.Value, Headers: toTestenvHeaders(r.Headers)}) {
				t.Fatalf("archived offset %d: %+v was not produced there (%v)", r.Offset, r, p)
			}
			archived[r.Offset] = r
		}
		for _, w := range testenv.RdkConsume(t, brokers, topic, testenv.ReadCommitted) {
			g, ok := archived[w.Offset]
			if !ok || !testenv.SameData(w, testenv.Record{Key: g.Key, Value: g.Value, Headers: toTestenvHeaders(g.Headers)}) {
				t.Fatalf("the log holds offset %d (%s) but the archive has %+v", w.Offset, w, g)
			}
		}
		if len(gaps[0]) == 0 {
			t.Fatal("compaction left no gaps in the archive")
		}
		for _, g := range gaps[0] {
			if g.Reason != manifest.GapCompacted && g.Reason != manifest.GapBeforeStart {
				t.Fatalf("gap %v on a compacted topic", g)
			}
		}
	})

	t.Run("broker-killed-while-archiving", func(t *testing.T) {
		if !k.Controllable() {
			t.Skip("external cluster: cannot kill a broker")
		}
		st := s3.Store(t)
		topic := testenv.TopicName(t, "kill")
		k.CreateTopic(t, topic, 3, 3, nil)
		stop := startArchiverOn(t, brokers, st, func(o *Options) { o.FlushInterval, o.Group = 200*time.Millisecond, "" })
		produced := testenv.ProduceThroughBrokerKill(t, k, topic, 3000, k.Leader(t, topic, 0))
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		realOnce(t, k, st, topic)
		archiveEqualsConsumer(t, k, st, topic)
		var got []testenv.Record
		recs, _ := readArchive(t, st, topic)
		for p, rs := range recs {
			for _, r := range rs {
				got = append(got, testenv.Record{Topic: topic, Partition: p, Offset: r.Offset, Timestamp: r.Timestamp, Key: r.Key, Value: r.Value, Headers: toTestenvHeaders(r.Headers)})
			}
		}
		testenv.CheckExactlyOnce(t, produced, got)
	})

	t.Run("retention-race-is-data-loss", func(t *testing.T) {
		st := s3.Store(t)
		topic := testenv.TopicName(t, "ret")
		k.CreateTopic(t, topic, 1, 3, nil)
		cl := k.Client(t, kgo.DefaultProduceTopic(topic))
		for i := 0; i < 10; i++ {
			produce(t, cl, &kgo.Record{Value: []byte{byte(i)}})
		}
		realOnce(t, k, st, topic)
		for i := 10; i < 20; i++ {
			produce(t, cl, &kgo.Record{Value: []byte{byte(i)}})
		}
		if _, err := k.Admin(t).DeleteRecords(context.Background(), kadm.Offsets{topic: {0: {Topic: topic, Partition: 0, At: 15}}}); err != nil {
			t.Fatal(err)
		}
		realOnce(t, k, st, topic)
		_, gaps := readArchive(t, st, topic)
		if len(gaps[0]) != 1 || gaps[0][0] != (manifest.Gap{From: 10, To: 14, Reason: manifest.GapDataLoss}) {
			t.Fatalf("gaps %v, want DATA-LOSS 10..14", gaps[0])
		}
	})

	t.Run("archiver-sigkill-repeatedly", func(t *testing.T) { sigkillRepeatedly(t, k, LayoutSegments) })

	// The packed layout on real Kafka and MinIO (conditional creates and
	// ranged reads of flush objects on S3): a continuous archiver that
	// compacts while every codec, transactions and aborted records arrive,
	// then --once; the archive equals the independent client's read and
	// verifies clean.
	t.Run("packed-layout", func(t *testing.T) {
		st := s3.Store(t)
		codecs := testenv.TopicName(t, "pcodecs")
		k.CreateTopic(t, codecs, 2, 3, nil)
		txn := testenv.TopicName(t, "ptxn")
		k.CreateTopic(t, txn, 1, 3, nil)
		stop := startArchiverOn(t, brokers, st, func(o *Options) {
			o.Layout, o.Group, o.FlushInterval = LayoutPacked, "", 200*time.Millisecond
			o.CompactAfter, o.CompactGrace = time.Second, -1
			o.Topics = selector(t, []string{codecs, txn})
		})
		testenv.ProduceEveryCodec(t, brokers, codecs, 0)
		testenv.ProduceTxnMix(t, brokers, txn, 0)
		time.Sleep(3 * time.Second)
		testenv.ProduceEveryCodec(t, brokers, codecs, 1)
		time.Sleep(3 * time.Second)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		realOnceLayout(t, k, st, LayoutPacked, codecs, txn)
		archiveEqualsConsumer(t, k, st, codecs)
		archiveEqualsConsumer(t, k, st, txn, manifest.GapTransaction)
		a := openArchive(t, st)
		res, err := a.Verify(context.Background(), manifest.VerifyOptions{}, func(f manifest.Finding) {
			if f.Severity == manifest.SeverityProblem {
				t.Errorf("verify: %v", f)
			}
		})
		if err != nil || res.Commits == 0 {
			t.Fatalf("verify: %+v %v", res, err)
		}
		n := 0
		if err := st.List(context.Background(), store.ListOptions{Prefix: manifest.TopicsPrefix + codecs + "/"}, func(e store.ListEntry) error {
			if strings.Contains(e.Key, "/commits/") {
				n++
			}
			return nil
		}); err != nil || n == 0 {
			t.Fatalf("nothing compacted in the store (%d commit entries, %v)", n, err)
		}
	})

	t.Run("packed-archiver-sigkill-repeatedly", func(t *testing.T) { sigkillRepeatedly(t, k, LayoutPacked) })

	// With S3 a busy partition's segment streams as a multipart upload to
	// its flush object's reserved key (MinIO: 5 MiB parts, If-None-Match
	// on the completion): a continuous catch-up at the default block size,
	// uncompressed, then --once; the archive equals the independent
	// client's read and verifies clean, and flush objects were published
	// from staged uploads.
	t.Run("packed-streamed-s3", func(t *testing.T) {
		st := &keyedCounter{Store: s3.Store(t)}
		topic := testenv.TopicName(t, "pstream")
		k.CreateTopic(t, topic, 3, 3, nil)
		cl := k.Client(t, kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(5*time.Millisecond))
		val := make([]byte, 1000)
		for i := range val {
			val[i] = byte(i*7 + i/13)
		}
		var wg sync.WaitGroup
		var perr atomic.Value
		for i := 0; i < 60_000; i++ {
			wg.Add(1)
			cl.Produce(context.Background(), &kgo.Record{Key: []byte(fmt.Sprint(i)), Value: val}, func(_ *kgo.Record, err error) {
				if err != nil {
					perr.Store(err)
				}
				wg.Done()
			})
		}
		wg.Wait()
		if err, _ := perr.Load().(error); err != nil {
			t.Fatal(err)
		}
		stop := startArchiverOn(t, brokers, st, func(o *Options) {
			o.Layout, o.Group, o.Compression, o.FlushInterval = LayoutPacked, "", "none", time.Second
			o.Topics = selector(t, []string{topic})
		})
		time.Sleep(6 * time.Second)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		realOnceLayout(t, k, st, LayoutPacked, topic)
		archiveEqualsConsumer(t, k, st, topic)
		res, err := openArchive(t, st).Verify(context.Background(), manifest.VerifyOptions{}, func(f manifest.Finding) {
			if f.Severity == manifest.SeverityProblem {
				t.Errorf("verify: %v", f)
			}
		})
		if err != nil || res.Records != 60_000 {
			t.Fatalf("verify: %+v %v", res, err)
		}
		if st.published.Load() == 0 {
			t.Fatalf("%d objects staged, none published: nothing was streamed", st.stages.Load())
		}
		t.Logf("%d objects staged by key, %d published as flush objects", st.stages.Load(), st.published.Load())
	})

	t.Run("throughput-vs-plain-consumer", func(t *testing.T) { realThroughput(t, k, s3) })
}

// realThroughput fills a 4-partition topic of the real cluster with
// 300,000 JSON-like records of 500 B (150 MB, as BenchmarkArchiveThroughput)
// and, in two alternating rounds, times a plain franz-go consumer that reads
// everything (read_committed, from the start) and discards it against
// `archive --once` of the topic into a local directory, and logs both
// rates. It measures; it asserts only that every archive holds exactly the
// records a read_committed consumer reads. Under the race detector (make
// integration) it moves a tenth of the data: the rates mean nothing there
// and the full volume would take over a minute. KBACKUP_BENCH_LARGE=1 moves
// 1,200,000 records (600 MB) instead, as BenchmarkArchiveEfficiency does: the
// processes' fixed costs (start, metadata, the archive's commits) weigh a
// quarter as much against the throughput.
func realThroughput(t *testing.T, k *testenv.Kafka, s3 testenv.S3) {
	const parts, size = 4, 500
	n := 300_000
	if os.Getenv("KBACKUP_BENCH_LARGE") != "" {
		n = 1_200_000
	}
	if testenv.RaceEnabled() {
		n = 30_000
		t.Logf("race detector on: %d records only, rates not comparable with a normal build", n)
	}
	began := time.Now()
	topic := testenv.TopicName(t, "tput")
	k.CreateTopic(t, topic, parts, 3, nil)
	payload := fillTopic(t, k.Client(t, kgo.ProducerBatchMaxBytes(1<<20)), topic, n, size)
	t.Logf("produced %d records (%.0f MB) in %s", n, float64(payload)/1e6, time.Since(began).Round(time.Millisecond))

	// Untimed first read: warms the brokers (JIT, page cache) and records
	// what the archive must hold.
	want := logDigests(t, k.Brokers(), topic, n)
	var cpuC, cpuA time.Duration // this process's CPU time in each side's runs
	consumer := func() time.Duration {
		cpu, start := testenv.ProcessCPU(), time.Now()
		consumeAll(t, k.Brokers(), topic, n)
		d := time.Since(start)
		cpuC += testenv.ProcessCPU() - cpu
		return d
	}
	var cpuS2 time.Duration
	archiveWith := func(codec string) time.Duration {
		st := newStore(t)
		o := Options{KafkaOpts: []kgo.Opt{kgo.SeedBrokers(k.Brokers()...)}, Store: st, Once: true, Logger: testLogger(t),
			WriterID: "test", Topics: selector(t, []string{regexp.QuoteMeta(topic)}), Compression: codec}
		a, err := New(o)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cpu, start := testenv.ProcessCPU(), time.Now()
		if err := a.Run(ctx); err != nil {
			t.Fatalf("archive --once: %v", err)
		}
		d := time.Since(start)
		if codec == "s2" {
			cpuS2 += testenv.ProcessCPU() - cpu
		} else {
			cpuA += testenv.ProcessCPU() - cpu
		}
		if got := archiveDigests(t, st, topic); got != want {
			t.Fatalf("archive (%s) differs from the log (records per partition, digest):\narchive %v\nlog     %v", codec, got, want)
		}
		return d
	}
	archiver := func() time.Duration { return archiveWith("zstd") }
	mbps := func(d time.Duration) float64 { return float64(payload) / d.Seconds() / 1e6 }
	var bestC, bestA time.Duration
	for i := 0; i < 2; i++ {
		var c, a time.Duration
		if i%2 == 0 { // alternate the order: neither side always runs on a just-warmed broker
			c, a = consumer(), archiver()
		} else {
			a, c = archiver(), consumer()
		}
		t.Logf("round %d: plain consumer %s (%.0f MB/s), archive --once %s (%.0f MB/s): ratio %.2f",
			i, c.Round(time.Millisecond), mbps(c), a.Round(time.Millisecond), mbps(a), mbps(a)/mbps(c))
		if bestC == 0 || c < bestC {
			bestC = c
		}
		if bestA == 0 || a < bestA {
			bestA = a
		}
	}
	t.Logf("real Kafka (%d brokers, replication factor 3, %d partitions, %d records of %d B): best plain consumer %.0f MB/s, best archive %.0f MB/s: ratio %.2f (subtest %s)",
		len(k.Brokers()), parts, n, size, mbps(bestC), mbps(bestA), mbps(bestA)/mbps(bestC), time.Since(began).Round(time.Millisecond))
	// The client-side CPU per GB (the brokers' is in their JVMs): what
	// the archiver needs in cores at a given rate, whatever this machine
	// has.
	gb := 2 * float64(payload) / 1e9
	blocks := blockPayloads(t, k.Brokers(), topic, n, DefaultBlockBytes)
	codec := codecCost(blocks, manifest.CodecZstd) + codecCost(blocks, manifest.CodecZstd)
	t.Logf("client CPU per GB of records: plain consumer %.2f s + zstd alone %.2f s = %.2f s, archiver %.2f s: ratio %.2f (target <= 1.15)",
		cpuC.Seconds()/gb, codec.Seconds()/gb, (cpuC+codec).Seconds()/gb, cpuA.Seconds()/gb, cpuA.Seconds()/(cpuC+codec).Seconds())
	// --compression s2 (the CPU-light codec), one round beside the consumer.
	c := consumer()
	a := archiveWith("s2")
	t.Logf("--compression s2: plain consumer %.0f MB/s, archive %.0f MB/s: ratio %.2f; archiver CPU per GB %.2f s",
		mbps(c), mbps(a), mbps(a)/mbps(c), cpuS2.Seconds()/(float64(payload)/1e9))
	// The built binary and a plain consumer as child processes: their own
	// CPU and peak RSS (BenchmarkArchiveEfficiency on real Kafka).
	for _, codec := range []string{"zstd", "none"} {
		t.Log(compareCost(t, k.Brokers(), topic, n, payload, blocks, codec, 2))
	}
	// The continuous archiver into S3 (streamed flush objects, part
	// buffers, compaction) against the same consumer.
	for _, codec := range []string{"zstd", "none"} {
		t.Log(s3CatchupCost(t, k.Brokers(), s3, topic, n, payload, want, codec, 2, false))
	}
	// `archive --once` into S3 (the segments layout of a new archive: its
	// busy partitions' segments streamed through temporary objects).
	for _, codec := range []string{"zstd", "none"} {
		t.Log(s3CatchupCost(t, k.Brokers(), s3, topic, n, payload, want, codec, 2, true))
	}
}

// digester keeps, per partition, a SHA-256 over the records' offsets,
// timestamps, keys, values and headers (null distinct from empty), in
// offset order.
type digester map[int32]hash.Hash

func (d digester) add(p int32, r *manifest.Record) {
	h := d[p]
	if h == nil {
		h = sha256.New()
		d[p] = h
	}
	var b [8]byte
	field := func(v []byte) {
		n := uint64(len(v))
		if v == nil {
			n = 1<<64 - 1
		}
		h.Write(binary.BigEndian.AppendUint64(b[:0], n))
		h.Write(v)
	}
	h.Write(binary.BigEndian.AppendUint64(b[:0], uint64(r.Offset)))
	h.Write(binary.BigEndian.AppendUint64(b[:0], uint64(r.Timestamp)))
	field(r.Key)
	field(r.Value)
	h.Write(binary.BigEndian.AppendUint64(b[:0], uint64(len(r.Headers))))
	for _, hd := range r.Headers {
		field([]byte(hd.Key))
		field(hd.Value)
	}
}

// String is the partitions' record counts and digests in partition order.
func (d digester) String(counts map[int32]int) string {
	ps := make([]int32, 0, len(d))
	for p := range d {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "%d:%d records:%x ", p, counts[p], d[p].Sum(nil)[:8])
	}
	return b.String()
}

// logDigests reads n records of topic with a read_committed consumer from
// the start and digests them per partition (offsets must be dense: the
// topic has no transactions or compaction).
func logDigests(t *testing.T, brokers []string, topic string, n int) string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, counts := digester{}, map[int32]int{}
	for got := 0; got < n; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records of %s", got, n, topic)
		}
		fs.EachError(func(tp string, p int32, err error) { t.Logf("fetch %s/%d: %v", tp, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset != int64(counts[r.Partition]) {
				t.Fatalf("%s/%d: offset %d after %d records", topic, r.Partition, r.Offset, counts[r.Partition])
			}
			rec := toRecord(r)
			d.add(r.Partition, &rec)
			counts[r.Partition]++
			got++
		})
		if got > n {
			t.Fatalf("%s holds more than the %d records produced", topic, n)
		}
	}
	return d.String(counts)
}

// archiveDigests digests every partition of the current incarnation of
// topic in the archive, which must hold records only (no gaps) from 0.
func archiveDigests(t *testing.T, st store.Store, topic string) string {
	t.Helper()
	ctx := context.Background()
	a := openArchive(t, st)
	incs, err := a.Incarnations(ctx, topic)
	if err != nil || len(incs) == 0 {
		t.Fatalf("incarnations of %s: %v %v", topic, incs, err)
	}
	id := incs[len(incs)-1].TopicID
	ps, err := a.Partitions(ctx, topic, id)
	if err != nil {
		t.Fatal(err)
	}
	d, counts := digester{}, map[int32]int{}
	for _, p := range ps {
		err := a.Partition(topic, id, p).Scan(ctx, 0, -1, func(it manifest.ScanItem) error {
			if it.Record == nil {
				return fmt.Errorf("%s/%d: gap %v", topic, p, it.Gap)
			}
			if it.Record.Offset != int64(counts[p]) {
				return fmt.Errorf("%s/%d: offset %d after %d records", topic, p, it.Record.Offset, counts[p])
			}
			d.add(p, it.Record)
			counts[p]++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return d.String(counts)
}

func toTestenvHeaders(hs []manifest.Header) []testenv.Header {
	out := make([]testenv.Header, len(hs))
	for i, h := range hs {
		out[i] = testenv.Header{Key: h.Key, Value: h.Value}
	}
	return out
}

// sigkillRepeatedly SIGKILLs archiver processes (TestArchiverChild) of the
// layout four times while records flow into a 3-partition topic, then
// archives the rest with --once: the archive equals the independent
// client's read, offset for offset.
func sigkillRepeatedly(t *testing.T, k *testenv.Kafka, layout string) {
	brokers := k.Brokers()
	dir := t.TempDir()
	st, err := filestore.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	topic := testenv.TopicName(t, "sigkill")
	k.CreateTopic(t, topic, 3, 3, nil)
	cl := k.Client(t, kgo.DefaultProduceTopic(topic))
	stopProducing := make(chan struct{})
	done := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stopProducing:
				done <- n
				return
			case <-time.After(5 * time.Millisecond):
			}
			if err := cl.ProduceSync(context.Background(), &kgo.Record{Value: []byte(fmt.Sprint(n))}).FirstErr(); err == nil {
				n++
			}
		}
	}()
	for i := 0; i < 4; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestArchiverChild$")
		cmd.Env = append(os.Environ(), "KBACKUP_CHILD_BROKERS="+brokers[0], "KBACKUP_CHILD_STORE="+dir, "KBACKUP_CHILD_LAYOUT="+layout)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(2000+i*700) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	}
	close(stopProducing)
	if n := <-done; n == 0 {
		t.Fatal("nothing produced")
	}
	realOnceLayout(t, k, st, layout, topic)
	archiveEqualsConsumer(t, k, st, topic)
}

// s3CatchupCost compares, on real Kafka and MinIO, the peak RSS of the
// continuous archiver catching up on topic (n records, every one from the
// start) with a plain consumer's reading the same: the `kbackup` binary
// runs as a child process (`archive`, the packed layout of a new archive,
// no group, --compression codec) into a fresh prefix until its metrics
// show every record committed, then gets SIGTERM; rounds alternate which
// side goes first. The archive must then equal the log (want, from
// logDigests). The catch-up's wall time is not compared: the archived
// offsets advance at flush commits (every 3 s), so it is quantized. With
// once, the child is `archive --once` (the segments layout of a new
// archive) and runs to its end; its wall time is reported.
func s3CatchupCost(t *testing.T, brokers []string, s3 testenv.S3, topic string, n int, bytes int64, want, codec string, rounds int, once bool) string {
	t.Helper()
	var arch, cons procCost
	peakParts := 0.0
	for i := 0; i < rounds; i++ {
		archive := func() {
			prefix := s3.Prefix(t)
			url, flags := s3.StoreURL(prefix)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			ln.Close()
			args := append([]string{"archive", "--group", "", "--brokers", strings.Join(brokers, ","), "--store", url,
				"--topics", regexp.QuoteMeta(topic), "--compression", codec, "--writer-id", "s3bench", "--listen", addr,
				"--log-level", "warn"}, flags...)
			if once {
				args = append(args, "--once")
			}
			cmd := exec.Command(testenv.KbackupBinary(t), args...)
			cmd.Env = append(os.Environ(), s3.AWSEnv()...)
			if once {
				arch = arch.add(runChild(t, cmd))
				checkS3Archive(t, s3, prefix, topic, want, codec)
				return
			}
			deadline := time.Now().Add(3 * time.Minute)
			caughtUp := false
			arch = arch.add(runChildUntil(t, cmd, func() bool {
				m := scrapeMetrics(addr)
				peakParts = max(peakParts, m[`kbackup_store_part_buffers{state="in_use"}`])
				caughtUp = m["kbackup_archive_offset"] >= float64(n)
				return caughtUp || time.Now().After(deadline)
			}))
			if !caughtUp {
				t.Fatalf("the archiver into MinIO (%s) did not commit %d records within 3 minutes", codec, n)
			}
			checkS3Archive(t, s3, prefix, topic, want, codec)
		}
		if i%2 == 1 {
			archive()
		}
		cons = cons.add(plainConsumerProc(t, brokers, topic, n))
		if i%2 == 0 {
			archive()
		}
	}
	gb := float64(bytes) * float64(rounds) / 1e9
	if once {
		return fmt.Sprintf("archive --once into MinIO, --compression %s: peak RSS archiver %.0f MiB, plain consumer %.0f MiB: ratio %.2f (target <= 2; file pages at most %.0f / %.0f MiB); wall time per round archiver %v, plain consumer %v; client CPU per GB of records: archiver %.2f s, plain consumer %.2f s",
			codec, float64(arch.maxRSS)/(1<<20), float64(cons.maxRSS)/(1<<20), float64(arch.maxRSS)/float64(cons.maxRSS),
			float64(arch.fileRSS)/(1<<20), float64(cons.fileRSS)/(1<<20),
			(arch.wall / time.Duration(rounds)).Round(time.Millisecond), (cons.wall / time.Duration(rounds)).Round(time.Millisecond),
			arch.cpu.Seconds()/gb, cons.cpu.Seconds()/gb)
	}
	return fmt.Sprintf("continuous catch-up into MinIO, --compression %s: peak RSS archiver %.0f MiB (at most %.0f part buffers in use), plain consumer %.0f MiB: ratio %.2f (target <= 2; file pages at most %.0f / %.0f MiB); client CPU per GB of records: archiver %.2f s, plain consumer %.2f s",
		codec, float64(arch.maxRSS)/(1<<20), peakParts, float64(cons.maxRSS)/(1<<20), float64(arch.maxRSS)/float64(cons.maxRSS),
		float64(arch.fileRSS)/(1<<20), float64(cons.fileRSS)/(1<<20),
		arch.cpu.Seconds()/gb, cons.cpu.Seconds()/gb)
}

// checkS3Archive fails t unless the archive at prefix of s3 holds exactly
// the log of topic (want, from logDigests) and no temporary object of a
// streamed segment is left under s3store.StagingPrefix.
func checkS3Archive(t *testing.T, s3 testenv.S3, prefix, topic, want, codec string) {
	t.Helper()
	st, err := s3store.New(context.Background(), s3.StoreOptions(prefix))
	if err != nil {
		t.Fatal(err)
	}
	if got := archiveDigests(t, st, topic); got != want {
		t.Fatalf("archive in MinIO (%s) differs from the log (records per partition, digest):\narchive %v\nlog     %v", codec, got, want)
	}
	if left := storetest.Keys(t, st, s3store.StagingPrefix); len(left) > 0 {
		t.Fatalf("temporary objects left in MinIO (%s): %q", codec, left)
	}
}

// scrapeMetrics reads http://addr/metrics: each metric's value summed over
// its series, by name, and each series by name{label="value",...} (empty
// if unreachable: the child may not listen yet, or have exited).
func scrapeMetrics(addr string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return out
	}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue() + m.GetUntyped().GetValue()
			out[name] += v
			if len(m.GetLabel()) > 0 {
				var ls []string
				for _, l := range m.GetLabel() {
					ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
				}
				out[name+"{"+strings.Join(ls, ",")+"}"] = v
			}
		}
	}
	return out
}
