package testenv

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ErrNotInstalled is returned when a component's binaries are not in the
// cache (run testenv/install.sh).
var ErrNotInstalled = errors.New("not installed")

// ClusterConfig describes a Kafka cluster to run from the cached jars.
type ClusterConfig struct {
	// Brokers is the number of nodes (default 3). Every node is a combined
	// broker+controller (KRaft) and a controller-quorum voter.
	Brokers int
	// Version is the cached Kafka version (default KafkaVersion()).
	Version string
	// Dir holds one directory per broker: config, data, server.log.
	Dir string
	// Heap is the JVM max heap per broker (default $KBACKUP_KAFKA_HEAP or 512m).
	Heap string
	// JVMOpts are extra JVM options per broker (default from $KBACKUP_KAFKA_JVM_OPTS).
	JVMOpts []string
	// Props override or add broker properties (server.properties).
	Props map[string]string
	// Detached brokers outlive this process (make testenv-up).
	Detached bool
	// Logf receives progress messages (may be nil).
	Logf func(format string, args ...any)
}

// Cluster is a running Kafka cluster of local JVM processes.
type Cluster struct {
	cfg       ClusterConfig
	java      string
	libs      string
	log4j2    bool
	clusterID string

	mu    sync.Mutex
	nodes []*kafkaNode
}

type kafkaNode struct {
	id        int32
	dir       string
	port      int
	ctrlPort  int
	propsPath string
	logPath   string // server.log (log4j)
	outPath   string // stdout/stderr of the JVM
	log4jPath string
	proc      *proc
}

// KafkaLibs returns the directory with the jars of a cached Kafka version.
func KafkaLibs(version string) (string, error) {
	dir := filepath.Join(CacheDir(), "kafka", version)
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err != nil {
		return "", fmt.Errorf("kafka %s: no complete install in %s (run testenv/install.sh kafka): %w", version, dir, ErrNotInstalled)
	}
	return filepath.Join(dir, "libs"), nil
}

// Java returns the java executable ($JAVA_HOME/bin/java or PATH).
func Java() (string, error) {
	if h := os.Getenv("JAVA_HOME"); h != "" {
		p := filepath.Join(h, "bin", "java")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("java")
	if err != nil {
		return "", fmt.Errorf("java: %w (%v)", ErrNotInstalled, err)
	}
	return p, nil
}

// newClusterID returns a random Kafka cluster id (base64url UUID). Like
// Kafka's Uuid.randomUuid it never starts with '-', which the storage
// tool's argument parser would take for an option.
func newClusterID() (string, error) {
	for i := 0; i < 100; i++ {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", err
		}
		if id := base64.RawURLEncoding.EncodeToString(b[:]); id[0] != '-' {
			return id, nil
		}
	}
	return "", errors.New("kafka: no usable random cluster id")
}

func (c *Cluster) logf(format string, args ...any) {
	if c.cfg.Logf != nil {
		c.cfg.Logf(format, args...)
	}
}

// StartCluster formats and starts a cluster, and waits until it is ready
// (all brokers in the metadata, a topic can be created) or ctx ends. On
// error everything it started is stopped again.
func StartCluster(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	if cfg.Brokers <= 0 {
		cfg.Brokers = 3
	}
	if cfg.Version == "" {
		cfg.Version = KafkaVersion()
	}
	if cfg.Heap == "" {
		cfg.Heap = envOr(EnvKafkaHeap, "512m")
	}
	if cfg.JVMOpts == nil {
		cfg.JVMOpts = strings.Fields(os.Getenv(EnvKafkaJVMOpts))
	}
	if cfg.Dir == "" {
		return nil, errors.New("kafka: ClusterConfig.Dir is required")
	}
	libs, err := KafkaLibs(cfg.Version)
	if err != nil {
		return nil, err
	}
	java, err := Java()
	if err != nil {
		return nil, err
	}
	id, err := newClusterID()
	if err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg, java: java, libs: libs, clusterID: id}
	// Kafka 3.x logs through reload4j (log4j 1 API), 4.x through log4j 2.
	if m, _ := filepath.Glob(filepath.Join(libs, "reload4j-*.jar")); len(m) == 0 {
		c.log4j2 = true
	}
	ports, err := freePorts(2 * cfg.Brokers)
	if err != nil {
		return nil, err
	}
	for i := 0; i < cfg.Brokers; i++ {
		n := &kafkaNode{id: int32(i + 1), port: ports[2*i], ctrlPort: ports[2*i+1]}
		n.dir = filepath.Join(cfg.Dir, fmt.Sprintf("broker-%d", n.id))
		n.propsPath = filepath.Join(n.dir, "server.properties")
		n.logPath = filepath.Join(n.dir, "server.log")
		n.outPath = filepath.Join(n.dir, "stdout.log")
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		if err := c.writeConfig(n); err != nil {
			return nil, err
		}
	}
	// Format every node's storage (one short JVM each, in parallel).
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.format(ctx, n)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	c.logf("kafka %s: starting %d broker(s) in %s", cfg.Version, cfg.Brokers, cfg.Dir)
	for _, n := range c.nodes {
		if err := c.startNode(n); err != nil {
			c.Close()
			return nil, err
		}
	}
	if err := c.WaitReady(ctx); err != nil {
		c.Close()
		return nil, err
	}
	c.logf("kafka %s: ready at %s", cfg.Version, strings.Join(c.Brokers(), ","))
	return c, nil
}

func (c *Cluster) writeConfig(n *kafkaNode) error {
	if err := os.MkdirAll(filepath.Join(n.dir, "data"), 0o755); err != nil {
		return err
	}
	var voters []string
	for _, o := range c.nodes {
		voters = append(voters, fmt.Sprintf("%d@127.0.0.1:%d", o.id, o.ctrlPort))
	}
	rf, minISR := 3, 2
	if len(c.nodes) < 3 {
		rf, minISR = len(c.nodes), 1
	}
	props := map[string]string{
		"process.roles":                            "broker,controller",
		"node.id":                                  strconv.Itoa(int(n.id)),
		"controller.quorum.voters":                 strings.Join(voters, ","),
		"listeners":                                fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d", n.port, n.ctrlPort),
		"advertised.listeners":                     fmt.Sprintf("PLAINTEXT://127.0.0.1:%d", n.port),
		"controller.listener.names":                "CONTROLLER",
		"inter.broker.listener.name":               "PLAINTEXT",
		"listener.security.protocol.map":           "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
		"log.dirs":                                 filepath.Join(n.dir, "data"),
		"num.partitions":                           "1",
		"default.replication.factor":               strconv.Itoa(rf),
		"min.insync.replicas":                      strconv.Itoa(minISR),
		"offsets.topic.replication.factor":         strconv.Itoa(rf),
		"offsets.topic.num.partitions":             "5",
		"transaction.state.log.replication.factor": strconv.Itoa(rf),
		"transaction.state.log.min.isr":            strconv.Itoa(minISR),
		"transaction.state.log.num.partitions":     "5",
		"group.initial.rebalance.delay.ms":         "0",
		"auto.create.topics.enable":                "false",
		"unclean.leader.election.enable":           "false",
		"num.network.threads":                      "2",
		"num.io.threads":                           "4",
		"num.recovery.threads.per.data.dir":        "1",
		"background.threads":                       "4",
		"log.cleaner.threads":                      "1",
		"log.cleaner.backoff.ms":                   "500",
		"log.cleaner.dedupe.buffer.size":           "8388608",
		"log.retention.check.interval.ms":          "1000",
		"log.segment.delete.delay.ms":              "1000",
		"log.initial.task.delay.ms":                "1000",
		"broker.heartbeat.interval.ms":             "500",
		"broker.session.timeout.ms":                "6000",
		"replica.lag.time.max.ms":                  "10000",
		"controlled.shutdown.enable":               "true",
		"delete.topic.enable":                      "true",
	}
	for k, v := range c.cfg.Props {
		props[k] = v
	}
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "# written by kbackup testenv for Kafka %s, broker %d\n", c.cfg.Version, n.id)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, props[k])
	}
	if err := os.WriteFile(n.propsPath, []byte(b.String()), 0o644); err != nil {
		return err
	}
	var l4j string
	if c.log4j2 {
		n.log4jPath = filepath.Join(n.dir, "log4j2.xml")
		l4j = fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <File name="file" fileName="%s"><PatternLayout pattern="[%%d] %%p %%m (%%c)%%n"/></File>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="warn"/>
    <Logger name="org.apache.kafka.clients.NetworkClient" level="warn"/>
    <Root level="info"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
`, n.logPath)
	} else {
		n.log4jPath = filepath.Join(n.dir, "log4j.properties")
		l4j = fmt.Sprintf(`log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=%s
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%%d] %%p %%m (%%c)%%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.clients.NetworkClient=WARN
`, n.logPath)
	}
	return os.WriteFile(n.log4jPath, []byte(l4j), 0o644)
}

func (c *Cluster) jvmArgs(n *kafkaNode, heap string) []string {
	args := []string{
		"-Xms64m", "-Xmx" + heap,
		"-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:+ExitOnOutOfMemoryError",
		// C1 only: far less compile CPU at start-up, enough for tests on 2 cores.
		"-XX:TieredStopAtLevel=1",
		"-Djava.awt.headless=true",
	}
	if c.log4j2 {
		args = append(args, "-Dlog4j2.configurationFile="+n.log4jPath)
	} else {
		args = append(args, "-Dlog4j.configuration=file:"+n.log4jPath)
	}
	return append(args, c.cfg.JVMOpts...)
}

func (c *Cluster) format(ctx context.Context, n *kafkaNode) error {
	args := append(c.jvmArgs(n, "256m"), "-cp", filepath.Join(c.libs, "*"),
		"kafka.tools.StorageTool", "format", "-t", c.clusterID, "-c", n.propsPath, "--ignore-formatted")
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.java, args...)
	cmd.Dir = n.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("kafka broker %d: storage format: %w\n%s", n.id, err, out)
	}
	return nil
}

func (c *Cluster) startNode(n *kafkaNode) error {
	args := append(c.jvmArgs(n, c.cfg.Heap), "-cp", filepath.Join(c.libs, "*"), "kafka.Kafka", n.propsPath)
	p, err := startProc(procSpec{
		Name:     fmt.Sprintf("kafka broker %d", n.id),
		Path:     c.java,
		Args:     args,
		Dir:      n.dir,
		LogPath:  n.outPath,
		Detached: c.cfg.Detached,
	})
	if err != nil {
		return err
	}
	c.mu.Lock()
	n.proc = p
	c.mu.Unlock()
	return nil
}

func (c *Cluster) node(id int32) (*kafkaNode, error) {
	for _, n := range c.nodes {
		if n.id == id {
			return n, nil
		}
	}
	return nil, fmt.Errorf("kafka: no broker %d (have 1..%d)", id, len(c.nodes))
}

// Version returns the Kafka version the cluster runs.
func (c *Cluster) Version() string { return c.cfg.Version }

// Dir returns the cluster's directory (per-broker config, data and logs).
func (c *Cluster) Dir() string { return c.cfg.Dir }

// Brokers returns the client addresses (host:port) of all brokers.
func (c *Cluster) Brokers() []string {
	out := make([]string, 0, len(c.nodes))
	for _, n := range c.nodes {
		out = append(out, fmt.Sprintf("127.0.0.1:%d", n.port))
	}
	return out
}

// BrokerIDs returns the node ids, 1..n.
func (c *Cluster) BrokerIDs() []int32 {
	out := make([]int32, 0, len(c.nodes))
	for _, n := range c.nodes {
		out = append(out, n.id)
	}
	return out
}

// BrokerAddr returns broker id's client address.
func (c *Cluster) BrokerAddr(id int32) (string, error) {
	n, err := c.node(id)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("127.0.0.1:%d", n.port), nil
}

// Pid returns broker id's JVM pid, or 0 if it is not running.
func (c *Cluster) Pid(id int32) int {
	n, err := c.node(id)
	if err != nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n.proc == nil {
		return 0
	}
	if done, _ := n.proc.Exited(); done {
		return 0
	}
	return n.proc.Pid()
}

// CPU returns the CPU time (user + system) the running brokers' JVMs have
// used so far (0 for one not running). Differences around a phase tell
// the brokers' share of a comparison on shared cores. A nil Cluster (one
// this test did not start) reports 0.
func (c *Cluster) CPU() time.Duration {
	var sum time.Duration
	if c == nil {
		return 0
	}
	for _, id := range c.BrokerIDs() {
		if pid := c.Pid(id); pid > 0 {
			sum += PidCPU(pid)
		}
	}
	return sum
}

// LogPaths returns every broker's server.log and JVM stdout log.
func (c *Cluster) LogPaths() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.logPath, n.outPath)
	}
	return out
}

// admin returns a short-lived admin client seeded with the given brokers.
func adminFor(brokers []string) (*kadm.Client, *kgo.Client, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RetryTimeout(5*time.Second),
		kgo.DialTimeout(3*time.Second), kgo.RequestTimeoutOverhead(5*time.Second))
	if err != nil {
		return nil, nil, err
	}
	return kadm.NewClient(cl), cl, nil
}

// running returns the addresses of brokers whose process is alive.
func (c *Cluster) running() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, n := range c.nodes {
		if n.proc == nil {
			continue
		}
		if done, _ := n.proc.Exited(); !done {
			out = append(out, fmt.Sprintf("127.0.0.1:%d", n.port))
		}
	}
	return out
}

// checkAlive returns an error naming brokers that should run but exited.
func (c *Cluster) checkAlive(ids []int32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		for _, n := range c.nodes {
			if n.id != id || n.proc == nil {
				continue
			}
			if done, err := n.proc.Exited(); done {
				return fmt.Errorf("kafka broker %d exited (%v); %s:\n%s\n%s:\n%s", n.id, err, n.outPath, tail(n.outPath, 15), n.logPath, tail(n.logPath, 30))
			}
		}
	}
	return nil
}

// WaitReady waits until every broker is in the cluster metadata and a topic
// with the cluster's replication factor can be created (and is deleted again).
func (c *Cluster) WaitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := c.WaitBrokers(ctx, c.BrokerIDs()...); err != nil {
		return err
	}
	return waitTopicCreatable(ctx, c.running(), min(3, len(c.nodes)), func() error { return c.checkAlive(c.BrokerIDs()) })
}

// WaitBrokers waits until each broker in ids answers metadata requests
// itself and lists every broker in ids as alive (so a restarted broker
// counts only once its new process has registered, not while the cluster
// still remembers the killed one).
func (c *Cluster) WaitBrokers(ctx context.Context, ids ...int32) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	var last error
	check := func(id int32) error {
		addr, err := c.BrokerAddr(id)
		if err != nil {
			return err
		}
		adm, cl, err := adminFor([]string{addr})
		if err != nil {
			return err
		}
		defer cl.Close()
		actx, acancel := context.WithTimeout(ctx, 10*time.Second)
		defer acancel()
		md, err := adm.BrokerMetadata(actx)
		if err != nil {
			return fmt.Errorf("broker %d: %w", id, err)
		}
		have := map[int32]bool{}
		for _, b := range md.Brokers {
			have[b.NodeID] = true
		}
		for _, want := range ids {
			if !have[want] {
				return fmt.Errorf("broker %d does not list broker %d yet (has %v)", id, want, md.Brokers.NodeIDs())
			}
		}
		return nil
	}
	for {
		if err := c.checkAlive(ids); err != nil {
			return err
		}
		last = nil
		for _, id := range ids {
			if last = check(id); last != nil {
				break
			}
		}
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka: brokers %v not ready: %v (last: %v); logs: %s", ids, ctx.Err(), last, strings.Join(c.LogPaths(), " "))
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// waitTopicCreatable creates and deletes a probe topic until it works.
func waitTopicCreatable(ctx context.Context, seeds []string, rf int, alive func() error) error {
	adm, cl, err := adminFor(seeds)
	if err != nil {
		return err
	}
	defer cl.Close()
	name := fmt.Sprintf("_testenv_probe_%d", time.Now().UnixNano())
	var last error
	for {
		if alive != nil {
			if err := alive(); err != nil {
				return err
			}
		}
		actx, acancel := context.WithTimeout(ctx, 15*time.Second)
		resp, err := adm.CreateTopic(actx, 1, int16(rf), nil, name)
		if err == nil {
			err = resp.Err
		}
		if err == nil || errors.Is(err, kerr.TopicAlreadyExists) {
			_, _ = adm.DeleteTopics(actx, name)
			acancel()
			return nil
		}
		acancel()
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka: cannot create a topic with replication factor %d: %v (last: %v)", rf, ctx.Err(), last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// WaitInSync waits until every partition of every topic has a leader and
// all its replicas in the ISR (e.g. after a broker restart).
func (c *Cluster) WaitInSync(ctx context.Context) error {
	return WaitInSync(ctx, c.running())
}

// WaitInSync waits until every partition of every topic of the cluster
// reachable through seeds has a leader and its full replica set in sync.
func WaitInSync(ctx context.Context, seeds []string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	adm, cl, err := adminFor(seeds)
	if err != nil {
		return err
	}
	defer cl.Close()
	var last error
	for {
		last = func() error {
			actx, acancel := context.WithTimeout(ctx, 10*time.Second)
			defer acancel()
			md, err := adm.Metadata(actx)
			if err != nil {
				return err
			}
			for _, t := range md.Topics.Sorted() {
				if t.Err != nil {
					return fmt.Errorf("topic %s: %w", t.Topic, t.Err)
				}
				for _, p := range t.Partitions.Sorted() {
					if p.Leader < 0 || len(p.ISR) < len(p.Replicas) {
						return fmt.Errorf("%s/%d: leader %d, replicas %v, isr %v", t.Topic, p.Partition, p.Leader, p.Replicas, p.ISR)
					}
				}
			}
			return nil
		}()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka: replicas not in sync: %v (last: %v)", ctx.Err(), last)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// Kill kills broker id with SIGKILL (no controlled shutdown, no flush).
func (c *Cluster) Kill(id int32) error {
	n, err := c.node(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	p := n.proc
	c.mu.Unlock()
	if p == nil {
		return nil
	}
	c.logf("kafka: kill -9 broker %d (pid %d)", id, p.Pid())
	return p.Kill()
}

// StopBroker stops broker id gracefully (SIGTERM, controlled shutdown),
// killing it if it has not exited within grace.
func (c *Cluster) StopBroker(id int32, grace time.Duration) error {
	n, err := c.node(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	p := n.proc
	c.mu.Unlock()
	if p == nil {
		return nil
	}
	graceful, err := p.Stop(grace)
	if err == nil && !graceful {
		c.logf("kafka: broker %d did not stop within %s; killed", id, grace)
	}
	return err
}

// Restart starts a stopped or killed broker again on the same ports and
// data directory and waits until it is back in the metadata.
func (c *Cluster) Restart(ctx context.Context, id int32) error {
	n, err := c.node(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	p := n.proc
	c.mu.Unlock()
	if p != nil {
		if done, _ := p.Exited(); !done {
			return fmt.Errorf("kafka: broker %d is still running (pid %d)", id, p.Pid())
		}
	}
	c.logf("kafka: restarting broker %d", id)
	if err := c.startNode(n); err != nil {
		return err
	}
	return c.WaitBrokers(ctx, id)
}

// Start starts a stopped or killed broker's process without waiting for
// it to be ready (several brokers started this way can form a quorum
// together; Restart would wait for one alone). Use WaitBrokers/WaitReady.
func (c *Cluster) Start(id int32) error {
	n, err := c.node(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	p := n.proc
	c.mu.Unlock()
	if p != nil {
		if done, _ := p.Exited(); !done {
			return nil
		}
	}
	c.logf("kafka: starting broker %d", id)
	return c.startNode(n)
}

// StartAll starts every broker that is not running and waits until the
// cluster is ready (after Close, or a whole-cluster restore of the data
// directories).
func (c *Cluster) StartAll(ctx context.Context) error {
	for _, id := range c.BrokerIDs() {
		if err := c.Start(id); err != nil {
			return err
		}
	}
	return c.WaitReady(ctx)
}

// DataDir returns broker id's data directory (log.dirs).
func (c *Cluster) DataDir(id int32) string {
	n, err := c.node(id)
	if err != nil {
		return ""
	}
	return filepath.Join(n.dir, "data")
}

// Close stops every broker (SIGTERM to all at once, SIGKILL after a grace
// period). It is safe to call more than once.
func (c *Cluster) Close() error {
	c.mu.Lock()
	var ps []*proc
	for _, n := range c.nodes {
		if n.proc != nil {
			ps = append(ps, n.proc)
		}
	}
	c.mu.Unlock()
	errs := make([]error, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			graceful, err := p.Stop(20 * time.Second)
			if err == nil && !graceful {
				c.logf("kafka: %s did not stop within 20s; killed", p.spec.Name)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
