// Package testenv provides real-component test environments for kbackup's
// integration tests: Apache Kafka (KRaft, single node or a 3-broker cluster
// run from jars cached from Maven Central), MinIO (S3), moto_server (EC2 API)
// and an independent Kafka client (Python confluent-kafka / librdkafka), so
// that tests do not only check franz-go against itself.
//
// Every helper takes a testing.TB and is usable from any package's tests.
// When the KBACKUP_TEST_* variables point at running components (see
// `make testenv-up`), helpers reuse them; otherwise they start the
// components themselves from the cache filled by testenv/install.sh, and
// skip the test when the component is not installed. KBACKUP_TEST_REQUIRE
// (e.g. "kafka,minio,moto") turns such a skip into a failure.
//
// docs/TESTING.md describes the environment, variables and troubleshooting.
package testenv

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Environment variables read by this package.
const (
	// EnvCache is the cache directory (default $HOME/.cache/kbackup).
	EnvCache = "KBACKUP_CACHE"
	// EnvRequire lists components (kafka, minio, moto, python) whose absence
	// fails a test instead of skipping it; "all" means every component.
	EnvRequire = "KBACKUP_TEST_REQUIRE"
	// EnvBrokers: comma-separated seed brokers of a running (3-broker) cluster.
	EnvBrokers = "KBACKUP_TEST_BROKERS"
	// EnvKafkaVersion selects the cached Kafka version (default DefaultKafkaVersion).
	EnvKafkaVersion = "KBACKUP_KAFKA_VERSION"
	// EnvKafkaHeap: broker JVM max heap, e.g. "512m" (default).
	EnvKafkaHeap = "KBACKUP_KAFKA_HEAP"
	// EnvKafkaJVMOpts: extra JVM options appended for every broker.
	EnvKafkaJVMOpts = "KBACKUP_KAFKA_JVM_OPTS"
	// EnvS3Endpoint etc. describe a running S3-compatible server (MinIO).
	EnvS3Endpoint  = "KBACKUP_TEST_S3_ENDPOINT"
	EnvS3Bucket    = "KBACKUP_TEST_S3_BUCKET"
	EnvS3AccessKey = "KBACKUP_TEST_S3_ACCESS_KEY"
	EnvS3SecretKey = "KBACKUP_TEST_S3_SECRET_KEY"
	EnvS3Region    = "KBACKUP_TEST_S3_REGION"
	// EnvEC2Endpoint: a running moto_server (EC2 API).
	EnvEC2Endpoint = "KBACKUP_TEST_EC2_ENDPOINT"
	// EnvKeep keeps every test's component directory (data and logs), not
	// only those of failed tests.
	EnvKeep = "KBACKUP_TEST_KEEP"
	// EnvTmp is where component directories are created (default os.TempDir()).
	EnvTmp = "KBACKUP_TEST_TMPDIR"
)

// DefaultKafkaVersion is the Kafka version used when KBACKUP_KAFKA_VERSION is unset.
const DefaultKafkaVersion = "3.9.1"

// Component names used by KBACKUP_TEST_REQUIRE.
const (
	ComponentKafka = "kafka"
	ComponentMinIO = "minio"
	ComponentMoto  = "moto"
	// ComponentPython is the independent client (confluent-kafka in the cache's venv).
	ComponentPython = "python"
	// ComponentDirectIO is a temporary directory that takes O_DIRECT
	// (store/filestore's direct-I/O tests; tmpfs does not).
	ComponentDirectIO = "directio"
)

// CacheDir returns the cache directory holding Kafka jars, the MinIO binary
// and the Python venv.
func CacheDir() string {
	if d := os.Getenv(EnvCache); d != "" {
		return d
	}
	if h, err := os.UserHomeDir(); err == nil && h != "" {
		return filepath.Join(h, ".cache", "kbackup")
	}
	return filepath.Join(os.TempDir(), "kbackup-cache")
}

// KafkaVersion returns the Kafka version tests run against.
func KafkaVersion() string {
	if v := os.Getenv(EnvKafkaVersion); v != "" {
		return v
	}
	return DefaultKafkaVersion
}

// Required reports whether KBACKUP_TEST_REQUIRE names component.
func Required(component string) bool {
	for _, c := range strings.Split(os.Getenv(EnvRequire), ",") {
		c = strings.TrimSpace(strings.ToLower(c))
		if c == component || c == "all" {
			return true
		}
	}
	return false
}

// Unavailable skips the test because component is not available, or fails
// it when KBACKUP_TEST_REQUIRE names the component.
func Unavailable(tb testing.TB, component, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf("%s unavailable: %s", component, fmt.Sprintf(format, args...))
	if Required(component) {
		tb.Fatalf("%s (required by %s=%s; run testenv/install.sh or make testenv-install)", msg, EnvRequire, os.Getenv(EnvRequire))
	}
	tb.Skipf("%s (run make testenv-install, or set the KBACKUP_TEST_* variables)", msg)
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// WorkDir creates a directory for a component's data and logs. Unlike
// tb.TempDir it survives a failed test (its path is logged then) so broker
// logs can be read afterwards; it is removed after a passing test unless
// KBACKUP_TEST_KEEP is set.
func WorkDir(tb testing.TB, what string) string {
	tb.Helper()
	base := os.Getenv(EnvTmp)
	if base == "" {
		base = os.TempDir()
	}
	name := unsafeName.ReplaceAllString(tb.Name()+"-"+what, "_")
	if len(name) > 80 {
		name = name[:80]
	}
	dir, err := os.MkdirTemp(base, "kbackup-testenv-"+name+"-")
	if err != nil {
		tb.Fatalf("testenv: work dir: %v", err)
	}
	tb.Cleanup(func() {
		if tb.Failed() || os.Getenv(EnvKeep) != "" {
			tb.Logf("testenv: %s kept in %s", what, dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	return dir
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// RaceEnabled reports whether the running binary was built with -race (the
// race detector slows everything 5-20x: throughput comparisons then move
// less data and their rates mean little).
func RaceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// PidCPU returns the CPU time (user + system) process pid has used so far
// (Linux /proc; 0 if it cannot be read).
func PidCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: state is the first, utime the 12th, stime the 13th.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return 0
	}
	f := strings.Fields(string(b[i+2:]))
	if len(f) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond // clock ticks (USER_HZ 100)
}

// ProcessCPU returns the CPU time (user + system) this process has used so
// far. Differences around a phase tell the CPU cost of kbackup's side of a
// comparison with a real broker (whose CPU is in another process).
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
