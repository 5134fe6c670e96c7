package archive

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbackup/kbackup/internal/topicsel"
	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/filestore"
	"github.com/kbackup/kbackup/store/storefault"
)

// producer writes records to topic until stopped, with a transaction
// (alternately committed and aborted) every 50 records.
type producer struct {
	stop  chan struct{}
	done  chan struct{}
	count atomic.Int64
	err   atomic.Value
}

func startProducer(t testing.TB, c *kfake.Cluster, topic string, perTick int) *producer {
	t.Helper()
	p := &producer{stop: make(chan struct{}), done: make(chan struct{})}
	cl := newClient(t, c, kgo.DefaultProduceTopic(topic))
	txn := newClient(t, c, kgo.DefaultProduceTopic(topic), kgo.TransactionalID("p-"+topic))
	go func() {
		defer close(p.done)
		ctx := context.Background()
		for i := 0; ; i++ {
			select {
			case <-p.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			var recs []*kgo.Record
			for j := 0; j < perTick; j++ {
				n := p.count.Add(1)
				recs = append(recs, &kgo.Record{Key: []byte(strconv.FormatInt(n%7, 10)), Value: []byte(strconv.FormatInt(n, 10)),
					Headers: []kgo.RecordHeader{{Key: "n", Value: []byte(strconv.FormatInt(n, 10))}}})
			}
			if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				p.err.Store(err)
				return
			}
			if i%5 == 4 {
				if err := txn.BeginTransaction(); err != nil {
					p.err.Store(err)
					return
				}
				txn.Produce(ctx, &kgo.Record{Value: []byte("txn")}, nil)
				if err := txn.Flush(ctx); err != nil {
					p.err.Store(err)
					return
				}
				if err := txn.EndTransaction(ctx, kgo.TransactionEndTry(i%10 == 4)); err != nil {
					p.err.Store(err)
					return
				}
			}
		}
	}()
	return p
}

func (p *producer) Stop(t testing.TB) {
	t.Helper()
	close(p.stop)
	<-p.done
	if err, _ := p.err.Load().(error); err != nil {
		t.Fatalf("producer: %v", err)
	}
}

// startArchiver runs a continuous archiver; stop cancels it and returns Run's error.
func startArchiver(t testing.TB, c *kfake.Cluster, st store.Store, mod func(*Options)) (stop func() error) {
	t.Helper()
	return startArchiverOn(t, c.ListenAddrs(), st, mod)
}

// startArchiverOn runs a continuous archiver against brokers.
func startArchiverOn(t testing.TB, brokers []string, st store.Store, mod func(*Options)) (stop func() error) {
	t.Helper()
	o := Options{KafkaOpts: []kgo.Opt{kgo.SeedBrokers(brokers...)}, Store: st, Logger: testLogger(t),
		FlushInterval: 100 * time.Millisecond, RefreshInterval: 200 * time.Millisecond, ShutdownTimeout: 20 * time.Second}
	if mod != nil {
		mod(&o)
	}
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- a.Run(ctx) }()
	return func() error {
		cancel()
		select {
		case err := <-errc:
			return err
		case <-time.After(60 * time.Second):
			return fmt.Errorf("archiver did not stop within 60s")
		}
	}
}

// checkExact compares the archive with a read_committed consumer.
func checkExact(t testing.TB, c *kfake.Cluster, st store.Store, topic string) {
	t.Helper()
	want := readCommitted(t, c, topic)
	got, _ := readArchive(t, st, topic)
	sameRecords(t, topic, want, got)
}

// TestStoreFaultsChangeNothing: a store failing a fifth of its calls (some
// after the write landed, so the outcome is unknown) and slow calls leave
// the archive exactly equal to the log, in both layouts (packed: flush
// objects, claims, compactions and deletions under faults).
func TestStoreFaultsChangeNothing(t *testing.T) {
	t.Parallel()
	for _, layout := range []string{LayoutSegments, LayoutPacked} {
		t.Run("layout="+layout, func(t *testing.T) {
			t.Parallel()
			c := newCluster(t)
			createTopic(t, c, "f", 4, nil)
			inner := newStore(t)
			faulty := storefault.New(inner, 7)
			faulty.SetFailRate(0.2, 0.3)
			faulty.SetMaxDelay(20 * time.Millisecond)
			p := startProducer(t, c, "f", 20)
			stop := startArchiver(t, c, faulty, func(o *Options) { o.Layout, o.CompactAfter = layout, 500*time.Millisecond })
			time.Sleep(3 * time.Second)
			p.Stop(t)
			time.Sleep(time.Second)
			if err := stop(); err != nil {
				t.Logf("shutdown under faults: %v (allowed: the next run resumes)", err)
			}
			if faulty.Faults() == 0 {
				t.Fatal("no faults were injected")
			}
			runOnce(t, c, inner, func(o *Options) { o.Layout = layout })
			checkExact(t, c, inner, "f")
		})
	}
}

// TestBrokerFaultsChangeNothing: fetch and metadata errors injected into
// kfake change nothing in the result.
func TestBrokerFaultsChangeNothing(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "b", 3, nil)
	var n atomic.Int64
	c.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if n.Add(1)%4 != 0 {
			return nil, nil, false
		}
		r := req.(*kmsg.FetchRequest)
		resp := r.ResponseKind().(*kmsg.FetchResponse)
		for _, rt := range r.Topics {
			st := kmsg.NewFetchResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewFetchResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = 6 // NOT_LEADER_FOR_PARTITION
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	p := startProducer(t, c, "b", 10)
	st := newStore(t)
	stop := startArchiver(t, c, st, nil)
	time.Sleep(2 * time.Second)
	p.Stop(t)
	time.Sleep(500 * time.Millisecond)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	runOnce(t, c, st, nil)
	checkExact(t, c, st, "b")
	if n.Load() < 4 {
		t.Fatal("no broker faults injected")
	}
}

// TestConcurrentArchiversFence: two standalone archivers (as if a paused
// replica woke up) and two group members all archive the same partitions
// at once, in both layouts (packed: claims fence, compaction runs):
// fencing leaves one clean archive.
func TestConcurrentArchiversFence(t *testing.T) {
	t.Parallel()
	for _, v := range []struct{ group, layout string }{{"", LayoutSegments}, {"archivers", LayoutSegments}, {"", LayoutPacked}, {"archivers", LayoutPacked}} {
		group := v.group
		t.Run("group="+group+",layout="+v.layout, func(t *testing.T) {
			t.Parallel()
			c := newCluster(t)
			createTopic(t, c, "two", 3, nil)
			st := newStore(t)
			p := startProducer(t, c, "two", 10)
			var stops []func() error
			for i := 0; i < 2; i++ {
				stops = append(stops, startArchiver(t, c, st, func(o *Options) {
					o.Group, o.WriterID = group, "w"+strconv.Itoa(i)
					o.FlushInterval = 50 * time.Millisecond
					o.Layout, o.CompactAfter = v.layout, 300*time.Millisecond
				}))
			}
			time.Sleep(3 * time.Second)
			p.Stop(t)
			time.Sleep(500 * time.Millisecond)
			var wg sync.WaitGroup
			for _, stop := range stops {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := stop(); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			runOnce(t, c, st, func(o *Options) { o.Layout = v.layout })
			checkExact(t, c, st, "two")
		})
	}
}

// TestTopicsComeAndGo: topics created while the archiver runs are found;
// a deleted and re-created topic becomes a new incarnation.
func TestTopicsComeAndGo(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "first", 1, nil)
	st := newStore(t)
	stop := startArchiver(t, c, st, func(o *Options) { o.Topics = selector(t, []string{"first|second"}, "ignored") })
	cl := newClient(t, c)
	produce(t, cl, &kgo.Record{Topic: "first", Value: []byte("1")})
	createTopic(t, c, "second", 2, nil)
	createTopic(t, c, "ignored", 1, nil)
	produce(t, cl, &kgo.Record{Topic: "second", Value: []byte("2")}, &kgo.Record{Topic: "ignored", Value: []byte("x")})
	waitArchived(t, st, "second", 1)
	adm := kadm.NewClient(cl)
	if _, err := adm.DeleteTopics(context.Background(), "first"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	createTopic(t, c, "first", 1, nil)
	produce(t, newClient(t, c), &kgo.Record{Topic: "first", Value: []byte("new life")}) // a client without the old topic id
	waitIncarnations(t, st, "first", 2)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	got, _ := readArchive(t, st, "first")
	if len(got[0]) != 1 || string(got[0][0].Value) != "new life" {
		t.Fatalf("current incarnation of first: %+v", got)
	}
	a := openArchive(t, st)
	if topics, _ := a.Topics(context.Background()); len(topics) != 2 {
		t.Fatalf("archived topics %v, want first and second only", topics)
	}
}

// selector compiles include and exclude expressions (topicsel's rule).
func selector(t testing.TB, include []string, exclude ...string) *topicsel.Selector {
	t.Helper()
	s, err := topicsel.Compile(include, exclude)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func waitArchived(t testing.TB, st store.Store, topic string, records int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if n := archivedRecords(t, st, topic); n >= records {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: %d records not archived within 20s", topic, records)
}

func waitIncarnations(t testing.TB, st store.Store, topic string, n int) {
	t.Helper()
	a := openArchive(t, st)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		incs, _ := a.Incarnations(context.Background(), topic)
		if len(incs) >= n && archivedRecords(t, st, topic) > 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: %d incarnations not seen within 20s", topic, n)
}

// TestKillResume: an archiver process killed with SIGKILL at random
// instants while data flows, then resumed, leaves no missing and no
// duplicate offset.
func TestKillResume(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "k", 3, nil)
	dir := t.TempDir()
	st, err := filestore.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	p := startProducer(t, c, "k", 10)
	for i := 0; i < 5; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestArchiverChild$")
		cmd.Env = append(os.Environ(), "KBACKUP_CHILD_BROKERS="+c.ListenAddrs()[0], "KBACKUP_CHILD_STORE="+dir)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(700+i*300) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	}
	p.Stop(t)
	runOnce(t, c, st, nil)
	checkExact(t, c, st, "k")
	if n := archivedRecords(t, st, "k"); n == 0 {
		t.Fatal("nothing archived")
	}
}

// TestArchiverChild is the process TestKillResume kills.
func TestArchiverChild(t *testing.T) {
	brokers, dir := os.Getenv("KBACKUP_CHILD_BROKERS"), os.Getenv("KBACKUP_CHILD_STORE")
	if brokers == "" {
		t.Skip("only runs as TestKillResume's child process")
	}
	st, err := filestore.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Options{KafkaOpts: []kgo.Opt{kgo.SeedBrokers(brokers)}, Store: st, FlushInterval: 50 * time.Millisecond,
		Layout: os.Getenv("KBACKUP_CHILD_LAYOUT"), CompactAfter: 300 * time.Millisecond, CompactGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	_ = a.Run(context.Background()) // runs until killed
}

// TestGroupFindsNewTopics: archivers of a group started before a topic
// exists archive it soon after it is created (within the metadata refresh
// of the membership client, not franz-go's default 5 minutes).
func TestGroupFindsNewTopics(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	st := newStore(t)
	stop := startArchiver(t, c, st, func(o *Options) { o.Group = "late-topics" })
	time.Sleep(time.Second)
	createTopic(t, c, "late", 2, nil)
	cl := newClient(t, c)
	for i := 0; i < 10; i++ {
		produce(t, cl, &kgo.Record{Topic: "late", Value: []byte{byte(i)}})
	}
	waitArchived(t, st, "late", 10)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// slowCatalogStore delays catalog writes and notes any that lands after
// the archiver's Run returned.
type slowCatalogStore struct {
	store.Store
	started chan struct{}
	once    sync.Once
	stopped atomic.Bool
	late    atomic.Int32
}

func (s *slowCatalogStore) Put(ctx context.Context, key string, r io.Reader, size int64, opts store.PutOptions) error {
	if strings.HasPrefix(key, "catalog/") {
		s.once.Do(func() { close(s.started) })
		time.Sleep(300 * time.Millisecond)
		if s.stopped.Load() {
			s.late.Add(1)
		}
	}
	return s.Store.Put(ctx, key, r, size, opts)
}

// TestRunWaitsForCatalogCapture: the continuous archiver's Run returns only
// after a catalog capture in flight (it runs off the loop) has ended, so
// nothing writes to the store after Run returned.
func TestRunWaitsForCatalogCapture(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "cat", 1, nil)
	st := &slowCatalogStore{Store: newStore(t), started: make(chan struct{})}
	stop := startArchiver(t, c, st, nil)
	select {
	case <-st.started:
	case <-time.After(20 * time.Second):
		t.Fatal("no catalog capture")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	st.stopped.Store(true)
	time.Sleep(time.Second)
	if n := st.late.Load(); n > 0 {
		t.Fatalf("%d catalog writes after Run returned", n)
	}
}
