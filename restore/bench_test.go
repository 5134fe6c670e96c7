package restore

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/internal/target"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/testenv"
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
	return synthArchiveSized(tb, st, topic, parts, totalBytes, func(int64) int { return valueSize }, valueSize, valueSize, segBytes, blockBytes, codec)
}

// synthArchiveSized is synthArchive with the value of offset o size(o)
// bytes long: avgValue on average (for the record count), at most maxValue.
func synthArchiveSized(tb testing.TB, st store.Store, topic string, parts int32, totalBytes int64, size func(o int64) int, avgValue, maxValue, segBytes, blockBytes int, codec manifest.Codec) int64 {
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
	value := make([]byte, maxValue)
	for i := range value {
		value[i] = byte(i*7 + i>>3)
	}
	perPart := totalBytes / int64(parts) / int64(avgValue+24)
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
			r := &manifest.Record{Offset: o, Timestamp: 1_700_000_000_000 + o, Key: []byte(fmt.Sprintf("key-%d", o%1000)), Value: value[:size(o)],
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

// BenchmarkRestoreThroughput restores a synthetic archive (160 MB of
// 200-byte records on 4 partitions, 1 MiB blocks) and, in the same run and
// against the same cluster, measures the two things a restore cannot avoid
// doing: a plain franz-go producer writing the same records (decoded before
// its round, so its input is free) and decoding the archive alone (reading,
// CRC-checking, decompressing and parsing every block, records discarded).
//
// The broker is kfake in a child process (kfakeProcess), so this process's
// CPU time (getrusage) is the client's alone, whatever else runs on the
// machine. Reported per sub-benchmark (one per archive codec):
//
//   - cpu-ratio: restore CPU / (plain producer CPU + decode CPU), target
//     <= 1.15;
//   - ratio: restore throughput / plain producer throughput (wall clock,
//     noisy on a shared machine), target >= 0.8 from an uncompressed
//     archive;
//   - the CPU seconds per million records of each side;
//   - cpu-ratio-warm: the same for a restore that directly follows
//     another one (its buffer pools and heap warm, as in a long restore
//     after its first hundred megabytes), against the same baseline.
//
// Each iteration runs every side twice, in opposite orders (restore,
// producer, decode; then decode, producer, restore), into fresh target
// topics created beforehand; each side starts from a collected heap. One
// unmeasured round of each side comes first: the comparison is of steady
// state, and a process's first restore costs more (docs/PERFORMANCE.md,
// "First run", measures that).
func BenchmarkRestoreThroughput(b *testing.B) {
	for _, codec := range []manifest.Codec{manifest.CodecZstd, manifest.CodecNone} {
		b.Run("compression="+codec.String(), func(b *testing.B) {
			st, _ := newStore(b)
			const parts = 4
			perPart := synthArchive(b, st, "tp", parts, restoreBenchBytes, 200, 4<<20, 1<<20, codec)
			total := perPart * parts
			addrs := kfakeProcess(b)
			benchRestore(b, st, addrs, parts, total, "warm-up-restore")
			benchPlain(b, st, addrs, parts, "warm-up-plain")
			benchDecode(b, st, parts, total)
			var restore, plain, decode cost
			round := 0
			b.SetBytes(restoreBenchBytes)
			for b.Loop() {
				for _, order := range []string{"rpd", "dpr"} {
					for _, side := range order {
						round++
						switch side {
						case 'r':
							restore.add(benchRestore(b, st, addrs, parts, total, fmt.Sprintf("restored-%d", round)))
						case 'p':
							plain.add(benchPlain(b, st, addrs, parts, fmt.Sprintf("plain-%d", round)))
						case 'd':
							decode.add(benchDecode(b, st, parts, total))
						}
					}
				}
			}
			b.StopTimer()
			benchRestore(b, st, addrs, parts, total, "warm-restore-0")
			warm := benchRestore(b, st, addrs, parts, total, "warm-restore-1")
			m := float64(restore.n) * float64(total) / 1e6 // million records per side
			b.ReportMetric(restore.cpu.Seconds()/(plain.cpu+decode.cpu).Seconds(), "cpu-ratio")
			b.ReportMetric(warm.cpu.Seconds()/(plain.cpu+decode.cpu).Seconds()*float64(restore.n), "cpu-ratio-warm")
			b.ReportMetric(plain.wall.Seconds()/restore.wall.Seconds(), "ratio")
			b.ReportMetric(restore.cpu.Seconds()/m, "restore-cpu-s/Mrec")
			b.ReportMetric(plain.cpu.Seconds()/m, "producer-cpu-s/Mrec")
			b.ReportMetric(decode.cpu.Seconds()/m, "decode-cpu-s/Mrec")
			b.ReportMetric(m*1e6/restore.wall.Seconds(), "restore-records/s")
			b.ReportMetric(m*1e6/plain.wall.Seconds(), "producer-records/s")
		})
	}
}

// cost sums the process CPU time and the wall-clock time of rounds.
type cost struct {
	cpu, wall time.Duration
	n         int
}

func (c *cost) add(o cost) { c.cpu, c.wall, c.n = c.cpu+o.cpu, c.wall+o.wall, c.n+1 }

// measure runs f from a collected heap and returns this process's CPU time
// and the wall-clock time it took.
func measure(f func()) cost {
	runtime.GC()
	cpu, start := testenv.ProcessCPU(), time.Now()
	f()
	return cost{cpu: testenv.ProcessCPU() - cpu, wall: time.Since(start)}
}

// benchRestore restores topic "tp" of st as dst (created beforehand, as
// for the plain producer) into the cluster at addrs.
func benchRestore(b testing.TB, st store.Store, addrs []string, parts int32, total int64, dst string) cost {
	b.Helper()
	return benchRestoreWith(b, st, addrs, parts, total, dst, func(*Options) {})
}

// benchRestoreWith is benchRestore with the options changed by set.
func benchRestoreWith(b testing.TB, st store.Store, addrs []string, parts int32, total int64, dst string, set func(*Options)) cost {
	b.Helper()
	adm := benchAdmin(b, addrs)
	defer adm.Close()
	benchCreate(b, adm, dst, parts)
	o := Options{Store: st, KafkaOpts: []kgo.Opt{kgo.SeedBrokers(addrs...)},
		Topics: mustSel(b, "tp"), Rename: map[string]string{"tp": dst}, ID: dst, Logger: testLogger(b)}
	set(&o)
	c := timeRestore(b, o, total)
	benchDelete(b, adm, dst)
	return c
}

// timeRestore measures the restore o, which must restore total records,
// run as the kbackup restore command runs it (with TuneGC).
func timeRestore(tb testing.TB, o Options, total int64) cost {
	tb.Helper()
	return measure(func() {
		defer TuneGC(o)()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		sum, err := Run(ctx, o)
		if err != nil {
			tb.Fatal(err)
		}
		if sum.Records != total {
			tb.Fatalf("restored %d records, want %d", sum.Records, total)
		}
	})
}

// benchPlain writes the records of "tp" to dst with a plain franz-go
// producer (the restore's producer settings: idempotent, acks=all, 5 ms
// linger, manual partitioning). Its input is decoded before it is timed.
func benchPlain(b testing.TB, st store.Store, addrs []string, parts int32, dst string) cost {
	b.Helper()
	adm := benchAdmin(b, addrs)
	defer adm.Close()
	benchCreate(b, adm, dst, parts)
	c := timePlain(b, st, addrs, parts, dst)
	benchDelete(b, adm, dst)
	return c
}

// timePlain measures a plain producer writing the records of "tp" in st
// to dst (an existing topic) at addrs; the records are decoded first.
func timePlain(tb testing.TB, st store.Store, addrs []string, parts int32, dst string) cost {
	tb.Helper()
	recs := decodedRecords(tb, st, "tp", parts, dst)
	c := measure(func() {
		cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.RecordPartitioner(kgo.ManualPartitioner()),
			kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(1<<20), kgo.RequiredAcks(kgo.AllISRAcks()))
		if err != nil {
			tb.Fatal(err)
		}
		defer cl.Close()
		var perr atomic.Value
		promise := func(_ *kgo.Record, err error) {
			if err != nil {
				perr.Store(err)
			}
		}
		for _, r := range recs {
			cl.Produce(context.Background(), r, promise)
		}
		if err := cl.Flush(context.Background()); err != nil {
			tb.Fatal(err)
		}
		if err, _ := perr.Load().(error); err != nil {
			tb.Fatal(err)
		}
	})
	runtime.KeepAlive(recs)
	return c
}

// benchDecode reads every record of "tp" from st, one goroutine per
// partition, and discards it: decoding alone, done as cheaply as the
// manifest package can (ScanTransient: records and block buffers reused
// from block to block; the restore's lanes reuse theirs once the records
// were acknowledged).
func benchDecode(b testing.TB, st store.Store, parts int32, total int64) cost {
	b.Helper()
	var n atomic.Int64
	return measure(func() {
		a, err := manifest.Open(context.Background(), st)
		if err != nil {
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, parts)
		for p := int32(0); p < parts; p++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var k int64
				errs <- a.Partition("tp", manifest.TopicID{0xbe, 0x7c}, p).ScanTransient(context.Background(), 0, -1, func(it manifest.ScanItem) error {
					if it.Record != nil {
						k++
					}
					return nil
				})
				n.Add(k)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
		if n.Load() != total {
			b.Fatalf("decoded %d records, want %d", n.Load(), total)
		}
	})
}

func benchAdmin(b testing.TB, addrs []string) *kadm.Client {
	b.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		b.Fatal(err)
	}
	return kadm.NewClient(cl)
}

func benchCreate(b testing.TB, adm *kadm.Client, topic string, parts int32) {
	b.Helper()
	resp, err := adm.CreateTopic(context.Background(), parts, 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		b.Fatalf("create topic %s: %v", topic, err)
	}
}

// benchDelete deletes a finished round's topic (kfake keeps every record
// in memory).
func benchDelete(b testing.TB, adm *kadm.Client, topic string) {
	b.Helper()
	resp, err := adm.DeleteTopic(context.Background(), topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		b.Fatalf("delete topic %s: %v", topic, err)
	}
}

// kfakeProcess starts a one-broker kfake cluster in a child process (this
// test binary running TestKfakeProcessChild) and returns its addresses.
// The broker's CPU is then not this process's: getrusage measures the
// client alone. The child exits when its stdin closes (at cleanup, or
// when this process dies).
func kfakeProcess(tb testing.TB) []string {
	tb.Helper()
	addrs, _ := kfakeProcessDelayed(tb)
	return addrs
}

// kfakeProcessDelayed is kfakeProcess with, in the child process, a
// testenv.LatencyProxy per broker and one-way delay given: via[delay] maps
// each broker address to its proxy with that delay (for
// testenv.Redirect). The proxies' CPU is the child's, not the client's.
func kfakeProcessDelayed(tb testing.TB, delays ...time.Duration) (addrs []string, via map[time.Duration]map[string]string) {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKfakeProcessChild$", "-test.count=1")
	var ds []string
	for _, d := range delays {
		ds = append(ds, d.String())
	}
	cmd.Env = append(os.Environ(), "KBACKUP_KFAKE_CHILD=1", "KBACKUP_KFAKE_DELAYS="+strings.Join(ds, ","))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	via = make(map[time.Duration]map[string]string)
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if proxy, ok := strings.CutPrefix(sc.Text(), "kfake proxy "); ok {
			// "<delay> <broker> <proxy>"
			f := strings.Fields(proxy)
			if len(f) != 3 {
				tb.Fatalf("kfake child: bad proxy line %q", sc.Text())
			}
			d, err := time.ParseDuration(f[0])
			if err != nil {
				tb.Fatalf("kfake child: bad proxy line %q: %v", sc.Text(), err)
			}
			if via[d] == nil {
				via[d] = make(map[string]string)
			}
			via[d][f[1]] = f[2]
		}
		if addrs, ok := strings.CutPrefix(sc.Text(), "kfake listening on "); ok {
			go func() { _, _ = io.Copy(io.Discard, stdout) }()
			return strings.Split(addrs, ","), via
		}
	}
	tb.Fatalf("the kfake child process did not start: %v", sc.Err())
	return nil, nil
}

// TestKfakeProcessChild is kfakeProcess's child: it serves a kfake cluster
// until its stdin closes.
func TestKfakeProcessChild(t *testing.T) {
	if os.Getenv("KBACKUP_KFAKE_CHILD") == "" {
		t.Skip("only runs as kfakeProcess's child process")
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ds := os.Getenv("KBACKUP_KFAKE_DELAYS"); ds != "" {
		for _, f := range strings.Split(ds, ",") {
			d, err := time.ParseDuration(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range c.ListenAddrs() {
				p, err := testenv.NewLatencyProxy(a, d)
				if err != nil {
					t.Fatal(err)
				}
				defer p.Close()
				fmt.Printf("kfake proxy %s %s %s\n", d, a, p.Addr())
			}
		}
	}
	fmt.Printf("kfake listening on %s\n", strings.Join(c.ListenAddrs(), ","))
	_, _ = io.Copy(io.Discard, os.Stdin)
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

// BenchmarkRestoreWindowLatency asks whether a smaller MaxInFlightBytes
// caps a restore's throughput on a link with latency (docs/PERFORMANCE.md,
// "Restore"): it restores the same archive (160 MB of 200-byte records,
// zstd, 1 MiB blocks) into kfake through testenv.LatencyProxy (in kfake's
// child process; the restore's client dials the proxy for every broker
// address, so every request and response crosses the delay) with windows
// of 2, 4, 8 and 16 MiB per lane, at round-trip times of 10 and 50 ms, on 4
// partitions (4 lanes) and on 1. Each iteration runs every window twice
// per RTT, in opposite orders. Reported per sub-benchmark:
//
//   - ratio-XMiB: throughput with X MiB / throughput with 8 MiB (wall
//     clock, same run);
//   - cpu-s/Mrec-XMiB: restore client CPU per million records;
//   - MB/s-8MiB: the 8 MiB window's throughput.
func BenchmarkRestoreWindowLatency(b *testing.B) {
	rtts := []time.Duration{10 * time.Millisecond, 50 * time.Millisecond}
	var delays []time.Duration
	for _, r := range rtts {
		delays = append(delays, r/2)
	}
	addrs, via := kfakeProcessDelayed(b, delays...)
	windows := []int64{2 << 20, 4 << 20, 8 << 20, 16 << 20} // 16: does 8 cap it?
	round := 0
	for _, parts := range []int32{4, 1} {
		st, _ := newStore(b)
		perPart := synthArchive(b, st, "tp", parts, restoreBenchBytes, 200, 4<<20, 1<<20, manifest.CodecZstd)
		total := perPart * int64(parts)
		for _, rtt := range rtts {
			b.Run(fmt.Sprintf("parts=%d/rtt=%s", parts, rtt), func(b *testing.B) {
				to := via[rtt/2]
				if len(to) != len(addrs) {
					b.Fatalf("no proxy for every broker at RTT %s: %v", rtt, to)
				}
				redirect := testenv.Redirect(to)
				dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
					if _, ok := to[addr]; !ok {
						return nil, fmt.Errorf("dial %s: not a proxied broker", addr)
					}
					return redirect(ctx, network, addr)
				}
				restore := func(w int64) cost {
					round++ // restore ids and topics unique in the run
					return benchRestoreWith(b, st, addrs, parts, total, fmt.Sprintf("w%d-%d", w>>20, round), func(o *Options) {
						o.KafkaOpts = append(o.KafkaOpts, kgo.Dialer(dial))
						o.MaxInFlightBytes = w
					})
				}
				restore(8 << 20) // unmeasured
				costs := make(map[int64]*cost)
				for _, w := range windows {
					costs[w] = new(cost)
				}
				for b.Loop() {
					for i := range windows {
						w := windows[i]
						costs[w].add(restore(w))
					}
					for i := range windows {
						w := windows[len(windows)-1-i]
						costs[w].add(restore(w))
					}
				}
				base := costs[8<<20]
				for _, w := range windows {
					c := costs[w]
					m := float64(c.n) * float64(total) / 1e6
					b.ReportMetric(c.cpu.Seconds()/m, fmt.Sprintf("cpu-s/Mrec-%dMiB", w>>20))
					if w != 8<<20 {
						b.ReportMetric(base.wall.Seconds()/c.wall.Seconds(), fmt.Sprintf("ratio-%dMiB", w>>20))
					}
				}
				b.ReportMetric(float64(base.n)*float64(restoreBenchBytes)/1e6/base.wall.Seconds(), "MB/s-8MiB")
			})
		}
	}
}
