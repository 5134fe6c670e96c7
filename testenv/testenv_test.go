package testenv

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeTB records Skip/Fatal instead of acting on the real test.
type fakeTB struct {
	testing.TB
	mu              sync.Mutex
	skipped, failed bool
	msg             string
	cleanups        []func()
}

func (f *fakeTB) Helper()               {}
func (f *fakeTB) Name() string          { return "Fake/Test" }
func (f *fakeTB) Logf(string, ...any)   {}
func (f *fakeTB) Failed() bool          { return f.failed }
func (f *fakeTB) Cleanup(fn func())     { f.cleanups = append(f.cleanups, fn) }
func (f *fakeTB) Setenv(k, v string)    { os.Setenv(k, v) }
func (f *fakeTB) Errorf(string, ...any) { f.failed = true }
func (f *fakeTB) TempDir() string       { d, _ := os.MkdirTemp("", "fake"); return d }
func (f *fakeTB) Skipf(format string, args ...any) {
	f.mu.Lock()
	f.skipped, f.msg = true, format
	f.mu.Unlock()
	runtime.Goexit()
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.failed, f.msg = true, format
	f.mu.Unlock()
	runtime.Goexit()
}

// run calls fn with a fakeTB in its own goroutine (Skip/Fatal end it).
func run(fn func(tb testing.TB)) *fakeTB {
	f := &fakeTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		f.failed, f.msg = true, "timeout"
	}
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
	return f
}

func TestMissingComponentsSkipOrFail(t *testing.T) {
	t.Setenv(EnvCache, t.TempDir()) // empty cache: nothing installed
	t.Setenv(EnvBrokers, "")
	t.Setenv(EnvS3Endpoint, "")
	t.Setenv(EnvEC2Endpoint, "")
	t.Setenv("KBACKUP_MINIO_BIN", "")
	t.Setenv("KBACKUP_MOTO_BIN", "")
	t.Setenv("PATH", t.TempDir()) // no minio/moto_server on PATH either
	t.Setenv(EnvPython, "")
	helpers := map[string]func(tb testing.TB){
		ComponentKafka: func(tb testing.TB) { StartKafka(tb, KafkaOptions{}) },
		ComponentMinIO: func(tb testing.TB) { UseMinIO(tb) },
		ComponentMoto:  func(tb testing.TB) { UseMoto(tb) },
		"kclient":      func(tb testing.TB) { RdkAvailable(tb) },
	}
	for name, h := range helpers {
		t.Setenv(EnvRequire, "")
		if f := run(h); !f.skipped || f.failed {
			t.Errorf("%s without %s: skipped=%v failed=%v, want a skip", name, EnvRequire, f.skipped, f.failed)
		}
		t.Setenv(EnvRequire, "kafka,minio,moto")
		if f := run(h); f.skipped || !f.failed {
			t.Errorf("%s with %s: skipped=%v failed=%v, want a failure", name, EnvRequire, f.skipped, f.failed)
		}
	}
}

func TestRequired(t *testing.T) {
	t.Setenv(EnvRequire, " Kafka , moto")
	if !Required("kafka") || !Required("moto") || Required("minio") {
		t.Fatal("Required parses the list wrong")
	}
	t.Setenv(EnvRequire, "all")
	if !Required("minio") {
		t.Fatal("all")
	}
}

func TestRecordJSONKeepsNullVsEmpty(t *testing.T) {
	in := Record{Topic: "t", Key: nil, Value: []byte{}, Headers: []Header{{Key: "a", Value: nil}, {Key: "b", Value: []byte{}}}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"key":null`) || !strings.Contains(string(b), `"value":""`) {
		t.Fatalf("json %s", b)
	}
	var out Record
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !Identical(in, out) {
		t.Fatalf("round trip: %s -> %s", in, out)
	}
	out.Headers[1].Value = nil
	if SameData(in, out) {
		t.Fatal("null header value equal to empty")
	}
}

func TestGaps(t *testing.T) {
	rs := []Record{{Offset: 2}, {Offset: 3}, {Offset: 7}}
	got := Gaps(rs, 0)
	want := [][2]int64{{0, 2}, {4, 7}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("Gaps = %v, want %v", got, want)
	}
	if g := Gaps(rs, 2); len(g) != 1 {
		t.Fatalf("from log start 2: %v", g)
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:9092,127.0.0.1:9093": "127.0.0.1:9092,127.0.0.1:9093",
		"a b":                           "'a b'",
		"it's":                          `'it'\''s'`,
		"":                              "''",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestFreePortsDistinct(t *testing.T) {
	ps, err := freePorts(6)
	if err != nil {
		t.Fatal(err)
	}
	lo, hi := portsBelowEphemeral()
	seen := map[int]bool{}
	for _, p := range ps {
		if seen[p] || p <= 0 {
			t.Fatalf("ports %v", ps)
		}
		if hi > lo && (p < lo || p >= hi) {
			t.Fatalf("port %d is outside [%d, %d), below the ephemeral range", p, lo, hi)
		}
		seen[p] = true
	}
}

func TestProcStopAndKill(t *testing.T) {
	dir := t.TempDir()
	sleep := "/bin/sleep"
	if _, err := os.Stat(sleep); err != nil {
		t.Skip("no /bin/sleep")
	}
	p, err := startProc(procSpec{Name: "sleep", Path: sleep, Args: []string{"60"}, LogPath: filepath.Join(dir, "log")})
	if err != nil {
		t.Fatal(err)
	}
	if done, _ := p.Exited(); done {
		t.Fatal("exited at once")
	}
	graceful, err := p.Stop(5 * time.Second)
	if err != nil || !graceful {
		t.Fatalf("Stop: graceful=%v err=%v", graceful, err)
	}
	p, err = startProc(procSpec{Name: "sleep", Path: sleep, Args: []string{"60"}, LogPath: filepath.Join(dir, "log")})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if done, _ := p.Exited(); !done {
		t.Fatal("running after Kill")
	}
	if !strings.Contains(tail(filepath.Join(dir, "log"), 5), "starting sleep") {
		t.Fatal("log header missing")
	}
}

func TestDownWithoutUp(t *testing.T) {
	var b strings.Builder
	if err := Down(t.TempDir(), time.Second, &b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "nothing running") {
		t.Fatal(b.String())
	}
}

func TestKclientScriptCompiles(t *testing.T) {
	py, err := lookPython()
	if err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "kclient.py")
	if err := os.WriteFile(p, kclientPy, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runCmd(py, "-m", "py_compile", p); err != nil {
		t.Fatalf("py_compile: %v\n%s", err, out)
	}
}

func TestClusterIDNeverLooksLikeAnOption(t *testing.T) {
	for i := 0; i < 2000; i++ {
		id, err := newClusterID()
		if err != nil {
			t.Fatal(err)
		}
		if len(id) != 22 || id[0] == '-' {
			t.Fatalf("cluster id %q", id)
		}
	}
}

// TestBinaryDir: KbackupBinary's directory is one per checkout, the same
// for every test process (so builds replace each other instead of piling
// up in /tmp), private; one that is not private is not used.
func TestBinaryDir(t *testing.T) {
	root := filepath.Join(t.TempDir(), "checkout")
	d1, err := binaryDir(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d1) })
	d2, err := binaryDir(root)
	if err != nil || d2 != d1 {
		t.Fatalf("second call: %q, %v; want %q", d2, err, d1)
	}
	if other, _ := binaryDir(root + "2"); other == d1 {
		t.Fatalf("two checkouts share %q", d1)
	} else {
		os.RemoveAll(other)
	}
	if fi, err := os.Stat(d1); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("%q: %v, %v; want a private directory", d1, fi.Mode(), err)
	}
	if err := os.Chmod(d1, 0o777); err != nil {
		t.Fatal(err)
	}
	d3, err := binaryDir(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d3) })
	if d3 == d1 {
		t.Fatalf("a directory others can write (%q) was used", d1)
	}
}

// TestPidCPU: another process's CPU time is read from /proc, grows while
// it works, and is 0 for a process that does not exist; a nil Cluster
// (brokers this test did not start) reports 0.
func TestPidCPU(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	cmd := exec.Command("sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; sleep 5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for PidCPU(cmd.Process.Pid) < 100*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("a busy child's CPU time stays at %s", PidCPU(cmd.Process.Pid))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if self := PidCPU(os.Getpid()); self <= 0 {
		t.Fatalf("this process's CPU time: %s", self)
	}
	if got := PidCPU(1 << 30); got != 0 {
		t.Fatalf("a process that does not exist: %s", got)
	}
	var c *Cluster
	if got := c.CPU(); got != 0 {
		t.Fatalf("nil Cluster: %s", got)
	}
}
