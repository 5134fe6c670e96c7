package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/testenv"
)

// archiverEnv is where a scenario runs: the cluster, and the store as the
// CLI takes it.
type archiverEnv struct {
	brokers    []string
	store      string   // --store URL
	storeFlags []string // e.g. --s3-endpoint ... for MinIO
	env        []string // extra environment (AWS credentials)
	partitions int32
}

var metricsAddrRE = regexp.MustCompile(`msg="serving metrics" addr=(\S+)`)

// startArchiver runs `kbackup archive` exactly as the README's quick start
// and the Deployment do: only --brokers, --store (and the store's
// connection flags) and --listen; every other flag at its default, so
// replicas share partitions through the default consumer group.
func (e archiverEnv) startArchiver(t *testing.T, name string) (*testenv.Proc, string) {
	t.Helper()
	args := append([]string{"archive", "--brokers", strings.Join(e.brokers, ","), "--store", e.store, "--listen", "127.0.0.1:0"}, e.storeFlags...)
	p := testenv.StartProc(t, name, testenv.KbackupBinary(t), e.env, args...)
	return p, p.WaitOutput(t, metricsAddrRE, 60*time.Second)
}

// kbackup runs a one-shot command and returns stdout; a non-zero exit fails
// the test.
func (e archiverEnv) kbackup(t *testing.T, args ...string) string {
	t.Helper()
	p := testenv.StartProc(t, args[0], testenv.KbackupBinary(t), e.env, append(args, e.storeFlags...)...)
	if code := p.Wait(t, 3*time.Minute); code != 0 {
		t.Fatalf("kbackup %s: exit %d\n%s", strings.Join(args, " "), code, p.Stderr())
	}
	return p.Stdout()
}

// flow produces until stopped: plain records with null and empty keys and
// values and headers (duplicate keys, null values), and every few rounds a
// transaction, committed or aborted.
type flow struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	n    int
	err  error
}

func startFlow(t *testing.T, brokers []string, topic string) *flow {
	t.Helper()
	f := &flow{stop: make(chan struct{}), done: make(chan struct{})}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic), kgo.RecordDeliveryTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	txn, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic), kgo.TransactionalID("flow-"+topic),
		kgo.RecordDeliveryTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	go func() {
		defer close(f.done)
		defer cl.Close()
		defer txn.Close()
		ctx := context.Background()
		fail := func(err error) { f.mu.Lock(); f.err = err; f.mu.Unlock() }
		for round := 0; ; round++ {
			select {
			case <-f.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			var recs []*kgo.Record
			for range 20 {
				f.mu.Lock()
				f.n++
				n := f.n
				f.mu.Unlock()
				r := &kgo.Record{Key: fmt.Appendf(nil, "k%d", rng.IntN(50)), Value: fmt.Appendf(nil, "value-%d-%s", n, strings.Repeat("x", rng.IntN(200))),
					Headers: []kgo.RecordHeader{{Key: "n", Value: fmt.Appendf(nil, "%d", n)}, {Key: "dup", Value: nil}, {Key: "dup", Value: []byte{}}}}
				switch n % 11 {
				case 0:
					r.Key, r.Value = nil, nil
				case 5:
					r.Key, r.Value = []byte{}, []byte{}
				}
				recs = append(recs, r)
			}
			if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				fail(err)
				return
			}
			if round%10 == 9 {
				if err := txn.BeginTransaction(); err != nil {
					fail(err)
					return
				}
				txn.Produce(ctx, &kgo.Record{Value: fmt.Appendf(nil, "txn-%d", round)}, nil)
				if err := txn.Flush(ctx); err != nil {
					fail(err)
					return
				}
				if err := txn.EndTransaction(ctx, kgo.TransactionEndTry(round%20 == 9)); err != nil {
					fail(err)
					return
				}
			}
		}
	}()
	return f
}

func (f *flow) Stop(t *testing.T) int {
	t.Helper()
	close(f.stop)
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		t.Fatalf("producer: %v", f.err)
	}
	return f.n
}

// scrape reads and parses an archiver's /metrics.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(testenv.Scrape(t, addr)))
	if err != nil {
		t.Fatalf("parse /metrics of %s: %v", addr, err)
	}
	return mfs
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// checkMetrics: both archivers export franz-go's client metrics for their
// data and group clients, the partitions are shared (every partition owned
// exactly once), and each owned partition has its DATA-LOSS counter at 0.
// It waits up to two minutes: a member SIGKILLed while the group was
// rebalancing is dropped by kfake only at the rebalance timeout (franz-go's
// default, 60 s; Kafka drops it at the 10 s session timeout), and the
// survivors get no partitions until then.
func checkMetrics(t *testing.T, partitions int32, addrs ...string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		owned := map[string]int{}
		var problems []string
		for _, addr := range addrs {
			mfs := scrape(t, addr)
			clients := map[string]bool{}
			for name, mf := range mfs {
				if strings.HasPrefix(name, "kbackup_kafka_") {
					for _, m := range mf.GetMetric() {
						clients[label(m, "client")] = true
					}
				}
			}
			if !clients["data"] || !clients["group"] {
				problems = append(problems, fmt.Sprintf("%s: kbackup_kafka_* clients %v, want data and group", addr, clients))
			}
			for _, m := range mfs["kbackup_archive_gap_offsets_total"].GetMetric() {
				if label(m, "reason") == "DATA-LOSS" {
					owned[label(m, "partition")]++
					if v := m.GetCounter().GetValue(); v != 0 {
						t.Fatalf("%s: DATA-LOSS counter %v for partition %s", addr, v, label(m, "partition"))
					}
				}
			}
		}
		if len(owned) != int(partitions) {
			problems = append(problems, fmt.Sprintf("DATA-LOSS series for partitions %v, want all %d", owned, partitions))
		}
		for p, n := range owned {
			if n != 1 {
				problems = append(problems, fmt.Sprintf("partition %s owned by %d archivers", p, n))
			}
		}
		if len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics: %s", strings.Join(problems, "; "))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// waitArchived waits until the archive covers each partition of topic up
// to its last stable offset.
func (e archiverEnv) waitArchived(t *testing.T, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	ends, err := kadm.NewClient(cl).ListCommittedOffsets(ctx, topic)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var doc struct {
			Topics []struct {
				Topic        string `json:"topic"`
				Incarnations []struct {
					Current    bool `json:"current"`
					Partitions []struct {
						Partition *int32 `json:"partition"`
						EndOffset *int64 `json:"end_offset"`
					} `json:"partitions"`
				} `json:"incarnations"`
			} `json:"topics"`
		}
		if err := json.Unmarshal([]byte(e.kbackup(t, "ls", "--store", e.store, "--json")), &doc); err != nil {
			t.Fatal(err)
		}
		at := map[int32]int64{}
		for _, tp := range doc.Topics {
			for _, inc := range tp.Incarnations {
				if tp.Topic != topic || !inc.Current {
					continue
				}
				for _, p := range inc.Partitions {
					if p.EndOffset != nil {
						at[*p.Partition] = *p.EndOffset + 1
					}
				}
			}
		}
		behind := map[int32]string{}
		ends.Each(func(o kadm.ListedOffset) {
			if at[o.Partition] < o.Offset {
				behind[o.Partition] = fmt.Sprintf("%d/%d", at[o.Partition], o.Offset)
			}
		})
		if len(behind) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("archive behind the log (archived/end): %v", behind)
		}
		time.Sleep(time.Second)
	}
}

// checkExact: the archive equals a read_committed read of the topic,
// record for record (offset, timestamp and type, key, value, headers; null
// distinct from empty), and verify --brokers passes.
func (e archiverEnv) checkExact(t *testing.T, topic string) int {
	t.Helper()
	want := testenv.ConsumeAll(t, e.brokers, topic, testenv.ReadCommitted)
	var got []testenv.Record
	for _, line := range strings.Split(strings.TrimSpace(e.kbackup(t, "cat", "--store", e.store, "--topic", topic)), "\n") {
		var r testenv.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("cat line %q: %v", line, err)
		}
		got = append(got, r)
	}
	testenv.SortRecords(got)
	if len(got) != len(want) {
		t.Fatalf("archive holds %d records, the topic %d", len(got), len(want))
	}
	for i := range want {
		if !testenv.Identical(want[i], got[i]) {
			t.Fatalf("record %d differs:\ntopic   %s\narchive %s", i, want[i], got[i])
		}
	}
	out := e.kbackup(t, "verify", "--store", e.store, "--brokers", strings.Join(e.brokers, ","))
	if !strings.Contains(out, "verify OK") {
		t.Fatalf("verify --brokers:\n%s", out)
	}
	return len(want)
}

// runArchiversScenario is the operator's deployment under churn: two
// continuous archivers with default flags share a topic while records
// flow; one is SIGKILLed and restarted, the other SIGTERMed (it must flush
// and exit 0) and restarted; /metrics of both is scraped; at the end both
// are SIGTERMed, exit 0, and the archive is exact.
func runArchiversScenario(t *testing.T, e archiverEnv, topic string) {
	start := time.Now()
	step := func(what string) { t.Logf("%6.1fs %s", time.Since(start).Seconds(), what) }
	defer step("done")
	f := startFlow(t, e.brokers, topic)
	a, addrA := e.startArchiver(t, "archiver-a")
	b, addrB := e.startArchiver(t, "archiver-b")
	checkMetrics(t, e.partitions, addrA, addrB)
	step("two archivers share the partitions")

	a.Signal(t, syscall.SIGKILL)
	a.Wait(t, 10*time.Second)
	a, addrA = e.startArchiver(t, "archiver-a2")
	time.Sleep(2 * time.Second)

	b.Signal(t, syscall.SIGTERM)
	if code := b.Wait(t, 60*time.Second); code != 0 {
		t.Fatalf("archiver-b: SIGTERM while records flow: exit %d\n%s", code, b.Stderr())
	}
	step("a killed and restarted, b stopped")
	b, addrB = e.startArchiver(t, "archiver-b2")
	checkMetrics(t, e.partitions, addrA, addrB)
	step("both restarted and sharing")

	produced := f.Stop(t)
	e.waitArchived(t, topic)
	step("archive caught up")
	for _, p := range []*testenv.Proc{a, b} {
		p.Signal(t, syscall.SIGTERM)
	}
	for _, p := range []*testenv.Proc{a, b} {
		if code := p.Wait(t, 60*time.Second); code != 0 {
			t.Fatalf("%s: SIGTERM: exit %d\n%s", p.Name, code, p.Stderr())
		}
		if strings.Contains(p.Stderr(), "panic") || strings.Contains(p.Stderr(), "DATA LOSS") {
			t.Fatalf("%s:\n%s", p.Name, p.Stderr())
		}
	}
	n := e.checkExact(t, topic)
	t.Logf("%d records produced (plus transactions), %d archived exactly", produced, n)
}
