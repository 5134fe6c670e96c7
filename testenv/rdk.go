package testenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The independent client: testenv/kclient.py, run by the cache's venv
// Python with confluent-kafka (librdkafka).

//go:embed kclient.py
var kclientPy []byte

// EnvPython overrides the Python interpreter that has confluent-kafka.
const EnvPython = "KBACKUP_TEST_PYTHON"

var (
	kclientOnce sync.Once
	kclientPath string
	kclientErr  error
)

// rdkClient returns the interpreter and script path, or an error saying
// what is missing.
func rdkClient() (python, script string, err error) {
	python = os.Getenv(EnvPython)
	if python == "" {
		venv := filepath.Join(CacheDir(), "venv")
		if _, err := os.Stat(filepath.Join(venv, ".complete")); err != nil {
			return "", "", fmt.Errorf("independent client: no venv in %s (run testenv/install.sh python): %w", venv, ErrNotInstalled)
		}
		python = filepath.Join(venv, "bin", "python")
	}
	kclientOnce.Do(func() {
		sum := sha256.Sum256(kclientPy)
		dir := filepath.Join(CacheDir(), "scripts")
		kclientPath = filepath.Join(dir, "kclient-"+hex.EncodeToString(sum[:6])+".py")
		if _, err := os.Stat(kclientPath); err == nil {
			return
		}
		if kclientErr = os.MkdirAll(dir, 0o755); kclientErr != nil {
			return
		}
		tmp := fmt.Sprintf("%s.%d.tmp", kclientPath, os.Getpid())
		if kclientErr = os.WriteFile(tmp, kclientPy, 0o755); kclientErr != nil {
			return
		}
		kclientErr = os.Rename(tmp, kclientPath)
	})
	return python, kclientPath, kclientErr
}

// RdkAvailable skips (or fails, under KBACKUP_TEST_REQUIRE=kafka) the test
// when the independent client is not installed.
func RdkAvailable(tb testing.TB) {
	tb.Helper()
	if _, _, err := rdkClient(); err != nil {
		Unavailable(tb, ComponentKafka, "%v", err)
	}
}

// ProduceOptions configure the independent (librdkafka) producer.
type ProduceOptions struct {
	// Compression: none (default), gzip, snappy, lz4 or zstd.
	Compression string
	// Idempotent enables enable.idempotence.
	Idempotent bool
	// TransactionalID makes the producer transactional (RdkProduceTxns).
	TransactionalID string
	// Acks: "all" (default), "1", "0".
	Acks string
	// Config adds librdkafka properties (e.g. "linger.ms": "100").
	Config map[string]string
	// Timeout bounds the run (default 2 minutes).
	Timeout time.Duration
}

// Txn is one transaction for RdkProduceTxns.
type Txn struct {
	Records []Record
	// Abort aborts the transaction (after its records were written).
	Abort bool
}

type rdkLine struct {
	Record
	Seq *int   `json:"seq,omitempty"`
	Op  string `json:"op,omitempty"`
	OK  bool   `json:"ok,omitempty"`
}

func runRdk(tb testing.TB, timeout time.Duration, stdin []byte, args ...string) []rdkLine {
	tb.Helper()
	python, script, err := rdkClient()
	if err != nil {
		Unavailable(tb, ComponentKafka, "%v", err)
	}
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout+30*time.Second)
	defer cancel()
	args = append([]string{script}, append(args, "--timeout", fmt.Sprint(timeout.Seconds()))...)
	cmd := exec.CommandContext(ctx, python, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		tb.Fatalf("testenv: kclient.py %s: %v after %s\nstderr:\n%s", args[1], err, time.Since(start).Round(time.Millisecond), stderr.String())
	}
	var out []rdkLine
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var l rdkLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			tb.Fatalf("testenv: kclient.py output %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		tb.Fatalf("testenv: kclient.py output: %v", err)
	}
	return out
}

func rdkProduceArgs(brokers []string, topic string, o ProduceOptions) []string {
	args := []string{"produce", "--brokers", strings.Join(brokers, ","), "--topic", topic}
	if o.Compression != "" {
		args = append(args, "--compression", o.Compression)
	}
	if o.Idempotent {
		args = append(args, "--idempotent")
	}
	if o.TransactionalID != "" {
		args = append(args, "--transactional-id", o.TransactionalID)
	}
	if o.Acks != "" {
		args = append(args, "--acks", o.Acks)
	}
	for k, v := range o.Config {
		args = append(args, "-X", k+"="+v)
	}
	return args
}

func encodeLines(tb testing.TB, items []any) []byte {
	tb.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, it := range items {
		if err := enc.Encode(it); err != nil {
			tb.Fatalf("testenv: encode: %v", err)
		}
	}
	return b.Bytes()
}

// produceRecord is the input form of a record (partition -1 = partitioner).
func produceRecord(topic string, r Record) map[string]any {
	m := map[string]any{"key": r.Key, "value": r.Value, "partition": r.Partition}
	if r.Topic != "" && r.Topic != topic {
		m["topic"] = r.Topic
	}
	if r.Timestamp != 0 {
		m["timestamp"] = r.Timestamp
	}
	hs := make([]map[string]any, 0, len(r.Headers))
	for _, h := range r.Headers {
		hs = append(hs, map[string]any{"key": h.Key, "value": h.Value})
	}
	m["headers"] = hs
	return m
}

func delivered(tb testing.TB, lines []rdkLine, n int) []Record {
	tb.Helper()
	out := make([]Record, n)
	seen := make([]bool, n)
	for _, l := range lines {
		if l.Seq == nil {
			continue
		}
		if *l.Seq < 0 || *l.Seq >= n || seen[*l.Seq] {
			tb.Fatalf("testenv: kclient.py: unexpected delivery report seq %d", *l.Seq)
		}
		seen[*l.Seq] = true
		out[*l.Seq] = l.Record
	}
	for i, ok := range seen {
		if !ok {
			tb.Fatalf("testenv: kclient.py: no delivery report for record %d", i)
		}
	}
	return out
}

// RdkProduce produces recs to topic with the independent client
// (librdkafka). A record's Partition -1 means "use the partitioner"; 0 or
// more picks the partition. It returns the records as delivered (partition,
// offset, timestamp as the broker reported them), in input order.
func RdkProduce(tb testing.TB, brokers []string, topic string, recs []Record, o ProduceOptions) []Record {
	tb.Helper()
	items := make([]any, 0, len(recs))
	for _, r := range recs {
		items = append(items, produceRecord(topic, r))
	}
	lines := runRdk(tb, o.Timeout, encodeLines(tb, items), rdkProduceArgs(brokers, topic, o)...)
	return delivered(tb, lines, len(recs))
}

// RdkProduceTxns runs the transactions in order with one transactional
// producer (o.TransactionalID, default "kbackup-testenv-<topic>"),
// committing or aborting each, and returns the delivered records of each
// transaction (aborted ones too: they occupy offsets).
func RdkProduceTxns(tb testing.TB, brokers []string, topic string, txns []Txn, o ProduceOptions) [][]Record {
	tb.Helper()
	if o.TransactionalID == "" {
		o.TransactionalID = "kbackup-testenv-" + topic
	}
	var items []any
	n := 0
	for _, t := range txns {
		items = append(items, map[string]string{"op": "begin"})
		for _, r := range t.Records {
			items = append(items, produceRecord(topic, r))
			n++
		}
		end := "commit"
		if t.Abort {
			end = "abort"
		}
		items = append(items, map[string]string{"op": end})
	}
	lines := runRdk(tb, o.Timeout, encodeLines(tb, items), rdkProduceArgs(brokers, topic, o)...)
	all := delivered(tb, lines, n)
	out := make([][]Record, len(txns))
	i := 0
	for ti, t := range txns {
		out[ti] = all[i : i+len(t.Records)]
		i += len(t.Records)
	}
	return out
}

// RdkConsume reads every partition of topic from the log start to the end
// offsets with the independent client and returns the records ordered by
// partition and offset.
func RdkConsume(tb testing.TB, brokers []string, topic string, iso Isolation) []Record {
	tb.Helper()
	level := "read_committed"
	if iso == ReadUncommitted {
		level = "read_uncommitted"
	}
	lines := runRdk(tb, 2*time.Minute, nil, "consume", "--brokers", strings.Join(brokers, ","), "--topic", topic, "--isolation", level)
	out := make([]Record, 0, len(lines))
	for _, l := range lines {
		out = append(out, l.Record)
	}
	return out
}

// RdkCommitted returns group's committed offset of every partition of
// topic, read with the independent client (-1: none committed).
func RdkCommitted(tb testing.TB, brokers []string, topic, group string) map[int32]int64 {
	tb.Helper()
	lines := runRdk(tb, time.Minute, nil, "committed", "--brokers", strings.Join(brokers, ","), "--topic", topic, "--group", group)
	out := map[int32]int64{}
	for _, l := range lines {
		out[l.Partition] = l.Offset
	}
	return out
}

func lookPython() (string, error) {
	if p := os.Getenv(EnvPython); p != "" {
		return p, nil
	}
	return exec.LookPath("python3")
}

func runCmd(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}
