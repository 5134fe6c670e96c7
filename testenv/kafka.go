package testenv

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// KafkaOptions select the cluster StartKafka runs.
type KafkaOptions struct {
	// Brokers: 1 (single node, replication factor 1) or 3 (default;
	// replication factor 3, min.insync.replicas=2).
	Brokers int
	// Version: a cached Kafka version (default KafkaVersion()).
	Version string
	// Props override or add broker properties.
	Props map[string]string
}

// Kafka is a Kafka cluster a test uses: either started by this test (and
// then controllable: Kill, Restart, StopBroker) or an external one named by
// KBACKUP_TEST_BROKERS.
type Kafka struct {
	brokers []string
	cluster *Cluster
}

// UseKafka returns the cluster named by KBACKUP_TEST_BROKERS when set (it
// must be reachable), else starts a 3-broker cluster for this test. Tests
// that kill or restart brokers use StartKafka instead.
func UseKafka(tb testing.TB) *Kafka {
	tb.Helper()
	if env := os.Getenv(EnvBrokers); env != "" {
		var brokers []string
		for _, b := range strings.Split(env, ",") {
			if b = strings.TrimSpace(b); b != "" {
				brokers = append(brokers, b)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		adm, cl, err := adminFor(brokers)
		if err != nil {
			tb.Fatalf("testenv: %s=%s: %v", EnvBrokers, env, err)
		}
		defer cl.Close()
		if _, err := adm.BrokerMetadata(ctx); err != nil {
			tb.Fatalf("testenv: %s=%s is not reachable: %v", EnvBrokers, env, err)
		}
		return &Kafka{brokers: brokers}
	}
	return StartKafka(tb, KafkaOptions{Brokers: 3})
}

// StartKafka starts a new cluster for this test and stops it at cleanup.
// The test is skipped (or failed, see KBACKUP_TEST_REQUIRE) when Java or
// the Kafka jars are not installed. Broker logs stay in a kept directory
// when the test fails; their paths and tails are logged then.
func StartKafka(tb testing.TB, opts KafkaOptions) *Kafka {
	tb.Helper()
	version := opts.Version
	if version == "" {
		version = KafkaVersion()
	}
	if _, err := KafkaLibs(version); err != nil {
		Unavailable(tb, ComponentKafka, "%v", err)
	}
	if _, err := Java(); err != nil {
		Unavailable(tb, ComponentKafka, "%v", err)
	}
	dir := WorkDir(tb, "kafka")
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, err := StartCluster(ctx, ClusterConfig{
		Brokers: opts.Brokers,
		Version: version,
		Dir:     dir,
		Props:   opts.Props,
		Logf:    tb.Logf,
	})
	if err != nil {
		tb.Fatalf("testenv: start kafka: %v", err)
	}
	tb.Logf("testenv: kafka %s with %d broker(s) ready in %s at %s (dir %s)", version, len(c.nodes), time.Since(start).Round(100*time.Millisecond), strings.Join(c.Brokers(), ","), dir)
	tb.Cleanup(func() {
		if tb.Failed() {
			for _, n := range c.nodes {
				tb.Logf("testenv: kafka broker %d: log %s (JVM output %s); last warnings:\n%s", n.id, n.logPath, n.outPath, tailMatching(n.logPath, 8, " WARN ", " ERROR ", " FATAL "))
			}
		}
		stop := time.Now()
		if err := c.Close(); err != nil {
			tb.Errorf("testenv: stop kafka: %v", err)
		}
		tb.Logf("testenv: kafka stopped in %s", time.Since(stop).Round(100*time.Millisecond))
	})
	return &Kafka{brokers: c.Brokers(), cluster: c}
}

// Brokers returns the seed brokers (host:port).
func (k *Kafka) Brokers() []string { return append([]string(nil), k.brokers...) }

// BrokerList returns the seed brokers joined with commas (for --brokers).
func (k *Kafka) BrokerList() string { return strings.Join(k.brokers, ",") }

// Cluster returns the cluster started by this test, or nil for an external one.
func (k *Kafka) Cluster() *Cluster { return k.cluster }

// Controllable reports whether this test started the cluster (Kill, Restart work).
func (k *Kafka) Controllable() bool { return k.cluster != nil }

// Client returns a franz-go client seeded with the brokers, closed at cleanup.
func (k *Kafka) Client(tb testing.TB, opts ...kgo.Opt) *kgo.Client {
	tb.Helper()
	all := append([]kgo.Opt{kgo.SeedBrokers(k.brokers...)}, opts...)
	cl, err := kgo.NewClient(all...)
	if err != nil {
		tb.Fatalf("testenv: kafka client: %v", err)
	}
	tb.Cleanup(cl.Close)
	return cl
}

// Admin returns an admin client, closed at cleanup.
func (k *Kafka) Admin(tb testing.TB) *kadm.Client {
	tb.Helper()
	return kadm.NewClient(k.Client(tb))
}

func (k *Kafka) mustControl(tb testing.TB, what string) *Cluster {
	tb.Helper()
	if k.cluster == nil {
		tb.Fatalf("testenv: %s needs a cluster started by the test (StartKafka), not %s", what, EnvBrokers)
	}
	return k.cluster
}

// Kill kills broker id with SIGKILL and waits for the process to end.
func (k *Kafka) Kill(tb testing.TB, id int32) {
	tb.Helper()
	if err := k.mustControl(tb, "Kill").Kill(id); err != nil {
		tb.Fatalf("testenv: %v", err)
	}
}

// StopBroker stops broker id gracefully (killed after 30s).
func (k *Kafka) StopBroker(tb testing.TB, id int32) {
	tb.Helper()
	if err := k.mustControl(tb, "StopBroker").StopBroker(id, 30*time.Second); err != nil {
		tb.Fatalf("testenv: %v", err)
	}
}

// Restart starts a stopped or killed broker again and waits until it is
// back in the cluster metadata (not until its replicas caught up: use
// WaitInSync for that).
func (k *Kafka) Restart(tb testing.TB, id int32) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	if err := k.mustControl(tb, "Restart").Restart(ctx, id); err != nil {
		tb.Fatalf("testenv: restart broker %d: %v", id, err)
	}
	tb.Logf("testenv: broker %d back in %s", id, time.Since(start).Round(100*time.Millisecond))
}

// Stop stops every broker (graceful, bounded). Cleanup does this too.
func (k *Kafka) Stop(tb testing.TB) {
	tb.Helper()
	start := time.Now()
	if err := k.mustControl(tb, "Stop").Close(); err != nil {
		tb.Errorf("testenv: stop kafka: %v", err)
	}
	tb.Logf("testenv: kafka stopped in %s", time.Since(start).Round(100*time.Millisecond))
}

// StartAll starts every stopped broker (after Stop) and waits until the
// cluster is ready again; data directories are kept.
func (k *Kafka) StartAll(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	if err := k.mustControl(tb, "StartAll").StartAll(ctx); err != nil {
		tb.Fatalf("testenv: start all brokers: %v", err)
	}
	tb.Logf("testenv: all brokers back in %s", time.Since(start).Round(100*time.Millisecond))
}

// WaitInSync waits (bounded by timeout) until every partition has a leader
// and all replicas in sync.
func (k *Kafka) WaitInSync(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := WaitInSync(ctx, k.brokers); err != nil {
		tb.Fatalf("testenv: %v", err)
	}
}

// Leader returns the current leader broker of topic/partition.
func (k *Kafka) Leader(tb testing.TB, topic string, partition int32) int32 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm, cl, err := adminFor(k.brokers)
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	defer cl.Close()
	// Brokers learn new topics at slightly different times: a broker other
	// than the one CreateTopic asked may not know the topic yet.
	for {
		md, err := adm.Metadata(ctx, topic)
		if err == nil {
			if p, ok := md.Topics[topic].Partitions[partition]; ok && p.Leader >= 0 {
				return p.Leader
			}
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("testenv: %s/%d has no leader in metadata after 30s (last error: %v)", topic, partition, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// CreateTopic creates a topic (replication factor -1 = broker default)
// with the given configs and waits until its partitions have leaders.
func (k *Kafka) CreateTopic(tb testing.TB, topic string, partitions int32, rf int16, configs map[string]string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	adm, cl, err := adminFor(k.brokers)
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	defer cl.Close()
	cfg := make(map[string]*string, len(configs))
	for key, v := range configs {
		cfg[key] = kadm.StringPtr(v)
	}
	resp, err := adm.CreateTopic(ctx, partitions, rf, cfg, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		tb.Fatalf("testenv: create topic %s: %v", topic, err)
	}
	for {
		md, err := adm.Metadata(ctx, topic)
		if err == nil {
			t := md.Topics[topic]
			ok := t.Err == nil && len(t.Partitions) == int(partitions)
			for _, p := range t.Partitions {
				ok = ok && p.Leader >= 0
			}
			if ok {
				return
			}
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("testenv: topic %s created but partitions have no leaders: %v", topic, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// String describes the cluster.
func (k *Kafka) String() string {
	if k.cluster != nil {
		return fmt.Sprintf("kafka %s (%d brokers) at %s", k.cluster.Version(), len(k.cluster.nodes), k.BrokerList())
	}
	return "kafka at " + k.BrokerList()
}

// TopicName returns a topic name unique to this test and run (so tests
// sharing a cluster through KBACKUP_TEST_BROKERS do not collide).
func TopicName(tb testing.TB, base string) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	name := unsafeName.ReplaceAllString(tb.Name(), "_")
	if len(name) > 100 {
		name = name[:100]
	}
	return fmt.Sprintf("%s.%s.%x", base, name, b)
}
