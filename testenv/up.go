package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Background environment for `make testenv-up` / `make testenv-down`:
// components started detached, their pids recorded in a state directory.

// UpOptions select what Up starts.
type UpOptions struct {
	// Dir is the state directory (pids, env.sh, component data and logs).
	Dir          string
	KafkaBrokers int    // default 3
	KafkaVersion string // default KafkaVersion()
	NoKafka      bool
	NoMinIO      bool
	NoMoto       bool
	// Log receives progress lines (may be nil).
	Log io.Writer
}

// DefaultUpDir is where Up keeps its state unless told otherwise
// ($KBACKUP_TESTENV_DIR, else <cache>/testenv-up).
func DefaultUpDir() string {
	return envOr("KBACKUP_TESTENV_DIR", filepath.Join(CacheDir(), "testenv-up"))
}

const pidFile = "pids"

// Up starts the components in the background and returns the environment
// (KEY=value lines) that points tests at them; it also writes
// <dir>/env.sh with `export` lines. It refuses to start when a previous Up
// in dir is still running.
func Up(ctx context.Context, o UpOptions) ([]string, error) {
	logf := func(format string, args ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, format+"\n", args...)
		}
	}
	if o.Dir == "" {
		o.Dir = DefaultUpDir()
	}
	if running := upRunning(o.Dir); len(running) > 0 {
		return nil, fmt.Errorf("test environment in %s is already running (%s): run make testenv-down first", o.Dir, strings.Join(running, ", "))
	}
	if err := os.RemoveAll(o.Dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	var pids []string
	var env []string
	var stops []func()
	fail := func(err error) ([]string, error) {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
		return nil, err
	}
	record := func(name string, pid int) error {
		pids = append(pids, fmt.Sprintf("%s %d %d", name, pid, procStartTime(pid)))
		return os.WriteFile(filepath.Join(o.Dir, pidFile), []byte(strings.Join(pids, "\n")+"\n"), 0o644)
	}
	if !o.NoKafka {
		start := time.Now()
		c, err := StartCluster(ctx, ClusterConfig{Brokers: o.KafkaBrokers, Version: o.KafkaVersion,
			Dir: filepath.Join(o.Dir, "kafka"), Detached: true,
			Logf: func(f string, a ...any) { logf(f, a...) }})
		if err != nil {
			return fail(err)
		}
		stops = append(stops, func() { c.Close() })
		for _, id := range c.BrokerIDs() {
			if err := record(fmt.Sprintf("kafka-%d", id), c.Pid(id)); err != nil {
				return fail(err)
			}
		}
		logf("kafka %s: %d brokers at %s in %s (logs %s/broker-*/server.log)", c.Version(), len(c.BrokerIDs()),
			strings.Join(c.Brokers(), ","), time.Since(start).Round(100*time.Millisecond), c.Dir())
		env = append(env, EnvBrokers+"="+strings.Join(c.Brokers(), ","), EnvKafkaVersion+"="+c.Version())
	}
	if !o.NoMinIO {
		srv, cfg, err := StartMinIO(ctx, filepath.Join(o.Dir, "minio"), true)
		if err != nil {
			return fail(err)
		}
		stops = append(stops, func() { srv.Close() })
		if err := record("minio", srv.Pid()); err != nil {
			return fail(err)
		}
		logf("minio: %s bucket %s (log %s)", cfg.Endpoint, cfg.Bucket, srv.LogPath)
		env = append(env, cfg.Env()...)
	}
	if !o.NoMoto {
		srv, cfg, err := StartMoto(ctx, filepath.Join(o.Dir, "moto"), true)
		if err != nil {
			return fail(err)
		}
		stops = append(stops, func() { srv.Close() })
		if err := record("moto", srv.Pid()); err != nil {
			return fail(err)
		}
		logf("moto: %s (log %s)", cfg.Endpoint, srv.LogPath)
		env = append(env, cfg.Env()...)
	}
	var b strings.Builder
	b.WriteString("# kbackup test environment (make testenv-up); stop it with make testenv-down\n")
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		fmt.Fprintf(&b, "export %s=%s\n", k, shellQuote(v))
	}
	if err := os.WriteFile(filepath.Join(o.Dir, "env.sh"), []byte(b.String()), 0o644); err != nil {
		return fail(err)
	}
	return env, nil
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '-' || r == '_' || r == '.' || r == '/' || r == ':' || r == ',' || r == '=' ||
			r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

type upProc struct {
	name  string
	pid   int
	start uint64
}

func readPids(dir string) ([]upProc, error) {
	f, err := os.Open(filepath.Join(dir, pidFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []upProc
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 3 {
			continue
		}
		pid, err1 := strconv.Atoi(fs[1])
		st, err2 := strconv.ParseUint(fs[2], 10, 64)
		if err1 != nil || err2 != nil || pid <= 1 {
			continue
		}
		out = append(out, upProc{fs[0], pid, st})
	}
	return out, sc.Err()
}

// procStartTime returns a process's start time in clock ticks since boot
// (Linux /proc), or 0 when unknown. It tells a recorded pid from a reused one.
func procStartTime(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	fs := strings.Fields(s[i+1:])
	if len(fs) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(fs[19], 10, 64) // field 22 overall
	return v
}

// alive reports whether p still runs as the recorded process.
func (p upProc) alive() bool {
	if err := syscall.Kill(p.pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	st := procStartTime(p.pid)
	return p.start == 0 || st == 0 || st == p.start
}

func upRunning(dir string) []string {
	ps, err := readPids(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, p := range ps {
		if p.alive() {
			out = append(out, fmt.Sprintf("%s pid %d", p.name, p.pid))
		}
	}
	return out
}

// Down stops the components a previous Up started in dir: SIGTERM to each
// process group, SIGKILL to those still running after grace.
func Down(dir string, grace time.Duration, log io.Writer) error {
	if dir == "" {
		dir = DefaultUpDir()
	}
	ps, err := readPids(dir)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(log, "testenv: nothing running (no %s)\n", filepath.Join(dir, pidFile))
		return nil
	}
	if err != nil {
		return err
	}
	for _, p := range ps {
		if p.alive() {
			fmt.Fprintf(log, "testenv: stopping %s (pid %d)\n", p.name, p.pid)
			_ = syscall.Kill(-p.pid, syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		n := 0
		for _, p := range ps {
			if p.alive() {
				n++
			}
		}
		if n == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	var errs []error
	for _, p := range ps {
		if !p.alive() {
			continue
		}
		fmt.Fprintf(log, "testenv: %s (pid %d) did not stop within %s: SIGKILL\n", p.name, p.pid, grace)
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		for i := 0; i < 50 && p.alive(); i++ {
			time.Sleep(100 * time.Millisecond)
		}
		if p.alive() {
			errs = append(errs, fmt.Errorf("%s (pid %d) still running after SIGKILL", p.name, p.pid))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return os.Remove(filepath.Join(dir, pidFile))
}
