package archive

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/testenv"
)

// The archiver's cost against its physical limit (docs/DESIGN.md,
// "Performance targets"): client CPU-seconds per GB of records against a
// plain franz-go consumer reading and discarding the same data plus the
// block codec alone compressing the same bytes, and peak RSS against the
// plain consumer's. Both sides run as child processes so that their CPU and
// peak RSS are their own (rusage of the child), not the test process's
// (which serves kfake and runs the benchmark): the archiver is the real
// binary (`kbackup archive --once`), the consumer is this test binary
// re-executed into TestPlainConsumerChild.

// procCost is what a child process used.
type procCost struct {
	wall   time.Duration
	cpu    time.Duration // user + system
	sys    time.Duration // system alone (file writes, fsync, page faults)
	maxRSS int64         // peak resident set, bytes
	// fileRSS is the most of the resident set that was file pages (the
	// binary's code and read-only data, mapped as they are touched).
	fileRSS int64
}

func (c procCost) add(o procCost) procCost {
	return procCost{wall: c.wall + o.wall, cpu: c.cpu + o.cpu, sys: c.sys + o.sys, maxRSS: max(c.maxRSS, o.maxRSS),
		fileRSS: max(c.fileRSS, o.fileRSS)}
}

// runChild runs cmd to completion and returns its cost; a failure fails tb
// with the child's output. Peak RSS is the child's VmHWM, sampled every
// 10 ms while it runs: the rusage of a child started with vfork counts the
// parent's resident set before the exec.
func runChild(tb testing.TB, cmd *exec.Cmd) procCost {
	tb.Helper()
	return runChildUntil(tb, cmd, nil)
}

// runChildUntil is runChild for a child that runs until stopped: once
// finished (polled every 50 ms) reports true, the child gets SIGTERM and
// must then exit successfully. A nil finished waits for the child to end.
func runChildUntil(tb testing.TB, cmd *exec.Cmd, finished func() bool) procCost {
	tb.Helper()
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		tb.Fatalf("%s: %v", cmd, err)
	}
	done, peak := make(chan struct{}), make(chan [2]int64)
	watched := make(chan struct{}) // the watcher of finished returned: what it wrote is visible
	if finished == nil {
		close(watched)
	} else {
		go func() {
			defer close(watched)
			for {
				select {
				case <-done: // exited by itself
					return
				case <-time.After(50 * time.Millisecond):
				}
				if finished() {
					_ = cmd.Process.Signal(syscall.SIGTERM)
					return
				}
			}
		}()
	}
	go func() {
		status := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/status"
		var top [2]int64
		for {
			hwm, file := rssOf(status)
			top = [2]int64{max(top[0], hwm), max(top[1], file)}
			select {
			case <-done:
				peak <- top
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	<-watched
	c := procCost{wall: time.Since(start), cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(),
		sys: cmd.ProcessState.SystemTime()}
	top := <-peak
	c.maxRSS, c.fileRSS = top[0], top[1]
	if err != nil {
		tb.Fatalf("%s: %v\n%s", cmd, err, out.String())
	}
	if os.Getenv("KBACKUP_TEST_CHILD_OUTPUT") != "" { // e.g. with GODEBUG=gctrace=1 in the environment
		tb.Log(out.String())
	}
	return c
}

// rssOf reads the peak resident set ("VmHWM:  1234 kB") and the file
// pages resident now ("RssFile:") from a /proc/<pid>/status file, in bytes;
// 0 if unreadable (the process ended).
func rssOf(status string) (hwm, file int64) {
	b, err := os.ReadFile(status)
	if err != nil {
		return 0, 0
	}
	kB := func(v string) int64 {
		n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		return n * 1024
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			hwm = kB(v)
		} else if v, ok := strings.CutPrefix(l, "RssFile:"); ok {
			file = kB(v)
		}
	}
	return hwm, file
}

// consumerChildEnv carries "brokers|topic|records" to TestPlainConsumerChild.
const consumerChildEnv = "KBACKUP_TEST_PLAIN_CONSUMER"

// TestPlainConsumerChild is the plain consumer of the cost comparisons, run
// as a child process by plainConsumerProc; it does nothing in a normal test
// run.
func TestPlainConsumerChild(t *testing.T) {
	arg := os.Getenv(consumerChildEnv)
	if arg == "" {
		t.Skip("run by the cost comparisons as a child process")
	}
	f := strings.Split(arg, "|")
	n, err := strconv.Atoi(f[2])
	if len(f) != 3 || err != nil {
		t.Fatalf("%s=%q: want brokers|topic|records", consumerChildEnv, arg)
	}
	consumeAll(t, strings.Split(f[0], ","), f[1], n)
}

// plainConsumerProc reads n records of topic from the start and discards
// them in a child process (read_committed, franz-go's defaults).
func plainConsumerProc(tb testing.TB, brokers []string, topic string, n int) procCost {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestPlainConsumerChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), consumerChildEnv+"="+strings.Join(brokers, ",")+"|"+topic+"|"+strconv.Itoa(n))
	return runChild(tb, cmd)
}

// archiverProc runs `kbackup archive --once` of topic into a local
// directory store dir with codec, standalone (no group), as a child process.
func archiverProc(tb testing.TB, brokers []string, topic, dir, codec string, extra ...string) procCost {
	tb.Helper()
	args := append([]string{"archive", "--once", "--group", "", "--brokers", strings.Join(brokers, ","),
		"--store", "file://" + dir, "--topics", topic, "--compression", codec, "--writer-id", "bench"}, extra...)
	return runChild(tb, exec.Command(testenv.KbackupBinary(tb), args...))
}

// blockPayloads reads n records of topic (read_committed, from the start)
// and returns them encoded as the archiver's block payloads of blockSize
// bytes: the bytes the codec compresses in an archive of the topic.
func blockPayloads(tb testing.TB, brokers []string, topic string, n, blockSize int) [][]byte {
	tb.Helper()
	cl, ctx, done := plainConsumer(tb, brokers, topic)
	defer done()
	open := map[int32][]manifest.Record{}
	size := map[int32]int{}
	var out [][]byte
	flush := func(p int32) {
		if len(open[p]) > 0 {
			out = append(out, manifest.AppendRecords(nil, open[p]))
		}
		open[p], size[p] = nil, 0
	}
	for got := 0; got < n; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			tb.Fatalf("read %d of %d records of %s", got, n, topic)
		}
		fs.EachRecord(func(r *kgo.Record) {
			rec := toRecord(r)
			sz := len(r.Key) + len(r.Value) + 32
			for _, h := range r.Headers {
				sz += len(h.Key) + len(h.Value) + 4
			}
			if size[r.Partition] > 0 && size[r.Partition]+sz > blockSize {
				flush(r.Partition)
			}
			open[r.Partition] = append(open[r.Partition], rec)
			size[r.Partition] += sz
			got++
		})
	}
	for p := range open {
		flush(p)
	}
	return out
}

// codecCost compresses every payload with codec in this process and
// returns the CPU it took (this process's, with nothing else running).
func codecCost(blocks [][]byte, codec manifest.Codec) time.Duration {
	cpu := testenv.ProcessCPU()
	for _, b := range blocks {
		manifest.CompressBlock(codec, b)
	}
	return testenv.ProcessCPU() - cpu
}

// costReport is one comparison's result, as benchmark metrics and a line.
type costReport struct {
	codec              string
	bytes              int64    // record bytes (values + keys) moved per run
	runs               int      // runs of each side
	consumer, archiver procCost // summed over the runs (peak RSS: the highest)
	codecCPU           time.Duration
}

// compareCost runs the plain consumer and `kbackup archive --once` (with
// codec, into a fresh directory each time) rounds times each, alternating
// which goes first, and the codec alone over blocks once per round. bytes
// is the topic's record bytes.
func compareCost(tb testing.TB, brokers []string, topic string, n int, bytes int64, blocks [][]byte, codec string, rounds int, extra ...string) costReport {
	tb.Helper()
	c, err := manifest.ParseCodec(codec)
	if err != nil {
		tb.Fatal(err)
	}
	r := costReport{codec: codec, bytes: bytes, runs: rounds}
	for i := 0; i < rounds; i++ {
		archive := func() {
			r.archiver = r.archiver.add(archiverProc(tb, brokers, topic, tb.TempDir(), codec, extra...))
		}
		if i%2 == 1 {
			archive()
		}
		r.consumer = r.consumer.add(plainConsumerProc(tb, brokers, topic, n))
		if i%2 == 0 {
			archive()
		}
		r.codecCPU += codecCost(blocks, c)
	}
	return r
}

func (r costReport) perGB(d time.Duration) float64 {
	return d.Seconds() / (float64(r.bytes) * float64(r.runs) / 1e9)
}

// cpuRatio is the target's ratio: archiver CPU / (consumer + codec CPU).
func (r costReport) cpuRatio() float64 {
	return r.archiver.cpu.Seconds() / (r.consumer.cpu + r.codecCPU).Seconds()
}

func (r costReport) report(b *testing.B) {
	b.ReportMetric(r.perGB(r.consumer.cpu), "consumer-cpu-s/GB")
	b.ReportMetric(r.perGB(r.codecCPU), "codec-cpu-s/GB")
	b.ReportMetric(r.perGB(r.archiver.cpu), "archive-cpu-s/GB")
	b.ReportMetric(r.perGB(r.archiver.sys), "archive-sys-s/GB")
	b.ReportMetric(r.cpuRatio(), "cpu-ratio")
	b.ReportMetric(r.consumer.wall.Seconds()/r.archiver.wall.Seconds(), "tput-ratio")
	b.ReportMetric(float64(r.consumer.maxRSS)/(1<<20), "consumer-rss-MiB")
	b.ReportMetric(float64(r.archiver.maxRSS)/(1<<20), "archive-rss-MiB")
	b.ReportMetric(float64(r.archiver.maxRSS)/float64(r.consumer.maxRSS), "rss-ratio")
	b.ReportMetric(float64(r.consumer.fileRSS)/(1<<20), "consumer-file-MiB")
	b.ReportMetric(float64(r.archiver.fileRSS)/(1<<20), "archive-file-MiB")
}

func (r costReport) String() string {
	return fmt.Sprintf("--compression %s: client CPU per GB of records: plain consumer %.2f s (system %.2f s) + codec alone %.2f s = %.2f s, archiver %.2f s (system %.2f s): ratio %.2f (target <= 1.15); "+
		"wall-clock throughput archiver/consumer %.2f; peak RSS consumer %.0f MiB, archiver %.0f MiB: ratio %.2f (target <= 2); file pages at most: consumer %.0f MiB, archiver %.0f MiB",
		r.codec, r.perGB(r.consumer.cpu), r.perGB(r.consumer.sys), r.perGB(r.codecCPU), r.perGB(r.consumer.cpu+r.codecCPU), r.perGB(r.archiver.cpu), r.perGB(r.archiver.sys), r.cpuRatio(),
		r.consumer.wall.Seconds()/r.archiver.wall.Seconds(),
		float64(r.consumer.maxRSS)/(1<<20), float64(r.archiver.maxRSS)/(1<<20), float64(r.archiver.maxRSS)/float64(r.consumer.maxRSS),
		float64(r.consumer.fileRSS)/(1<<20), float64(r.archiver.fileRSS)/(1<<20))
}
