package testenv

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// KbackupBinary builds the kbackup command once per test process (with
// -race when the test binary has it, so the real binary's races fail the
// test too) and returns its path. Tests that must drive the product as
// operators do, as a separate process with real signals, use it.
//
// The binary goes to one place per checkout and race setting
// (binaryDir), replaced atomically by each test process's build: every
// test process built a binary of its own (~100 MB) and left it behind,
// which filled a developer's /tmp over a day of runs. A process still
// running the binary it replaced keeps its copy (a rename does not touch
// the file it replaces).
func KbackupBinary(tb testing.TB) string {
	tb.Helper()
	binOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			binErr = err
			return
		}
		dir, err := binaryDir(root)
		if err != nil {
			binErr = err
			return
		}
		out, err := os.CreateTemp(dir, "kbackup-build-*")
		if err != nil {
			binErr = err
			return
		}
		out.Close()
		args := []string{"build", "-o", out.Name(), "-ldflags", "-X github.com/kbackup/kbackup/cmd/kbackup/cli.Version=test"}
		if RaceEnabled() {
			args = append(args, "-race")
		}
		cmd := exec.Command(goTool(), append(args, "./cmd/kbackup")...)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			os.Remove(out.Name())
			binErr = fmt.Errorf("go build ./cmd/kbackup: %v\n%s", err, b)
			return
		}
		binPath = filepath.Join(dir, "kbackup")
		if err := os.Rename(out.Name(), binPath); err != nil {
			os.Remove(out.Name())
			binErr = err
		}
	})
	if binErr != nil {
		tb.Fatalf("testenv: %v", binErr)
	}
	return binPath
}

// binaryDir is the directory KbackupBinary builds into for the checkout
// at root: under the temporary directory, named for the user, a hash of
// root and the race setting, created private. One that exists but is not
// a private directory of this user's (another user's, made in a shared
// /tmp) is not used: a directory of the process's own is made instead.
func binaryDir(root string) (string, error) {
	sum := sha256.Sum256([]byte(root))
	name := fmt.Sprintf("kbackup-testbin-%d-%x", os.Getuid(), sum[:6])
	if RaceEnabled() {
		name += "-race"
	}
	dir := filepath.Join(os.TempDir(), name)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", err
	}
	if fi, err := os.Lstat(dir); err == nil && fi.IsDir() && fi.Mode().Perm() == 0o700 && ownedByUs(fi) {
		return dir, nil
	}
	return os.MkdirTemp("", "kbackup-bin-")
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// moduleRoot finds the directory of kbackup's go.mod from the working
// directory (a package directory while testing).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/kbackup/kbackup\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("go.mod of github.com/kbackup/kbackup not found above the working directory")
		}
		dir = parent
	}
}

// Proc is a kbackup (or any) process started by a test, with its output
// captured. It is killed at cleanup if still running.
type Proc struct {
	Name   string
	cmd    *exec.Cmd
	mu     sync.Mutex
	stdout bytes.Buffer
	stderr bytes.Buffer
	done   chan struct{}
	code   int
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// StartProc starts bin with args and env (added to a minimal environment:
// PATH, HOME, TMPDIR and nothing of the test's KBACKUP_ variables).
func StartProc(tb testing.TB, name, bin string, env []string, args ...string) *Proc {
	tb.Helper()
	p := &Proc{Name: name, done: make(chan struct{}), code: -1}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + os.TempDir()}, env...)
	p.cmd.Stdout = lockedWriter{&p.mu, &p.stdout}
	p.cmd.Stderr = lockedWriter{&p.mu, &p.stderr}
	p.cmd.SysProcAttr = sysProcAttr(false)
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	go func() {
		err := p.cmd.Wait()
		p.mu.Lock()
		p.code = p.cmd.ProcessState.ExitCode()
		if p.code < 0 && err != nil {
			p.code = -1
		}
		p.mu.Unlock()
		close(p.done)
	}()
	tb.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if tb.Failed() {
			tb.Logf("%s (%s) stderr:\n%s", name, p.cmd.String(), p.Stderr())
		}
	})
	return p
}

// Stdout and Stderr return what the process printed so far.
func (p *Proc) Stdout() string { p.mu.Lock(); defer p.mu.Unlock(); return p.stdout.String() }

// Stderr returns what the process printed on stderr so far.
func (p *Proc) Stderr() string { p.mu.Lock(); defer p.mu.Unlock(); return p.stderr.String() }

// Signal sends sig to the process.
func (p *Proc) Signal(tb testing.TB, sig syscall.Signal) {
	tb.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		tb.Fatalf("signal %s %v: %v", p.Name, sig, err)
	}
}

// Kill sends SIGKILL unless the process has exited already (a process
// that exits at that very moment is no error) and waits for it to end.
func (p *Proc) Kill(tb testing.TB) {
	tb.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		tb.Fatalf("kill %s: %v", p.Name, err)
	}
	p.Wait(tb, time.Minute)
}

// Wait waits for the process to exit and returns its exit code (-1 when
// killed by a signal); it fails the test after timeout.
func (p *Proc) Wait(tb testing.TB, timeout time.Duration) int {
	tb.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		tb.Fatalf("%s did not exit within %s; stderr:\n%s", p.Name, timeout, p.Stderr())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.code
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// WaitOutput waits until the process's stderr matches re and returns the
// first submatch (or the whole match); it fails the test if the process
// exits first or after timeout.
func (p *Proc) WaitOutput(tb testing.TB, re *regexp.Regexp, timeout time.Duration) string {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if m := re.FindStringSubmatch(p.Stderr()); m != nil {
			return m[len(m)-1]
		}
		if p.Exited() {
			tb.Fatalf("%s exited (code %d) before printing %q; stderr:\n%s", p.Name, p.Wait(tb, time.Second), re, p.Stderr())
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s did not print %q within %s; stderr:\n%s", p.Name, re, timeout, p.Stderr())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Scrape reads the Prometheus text exposition a kbackup process serves at
// http://addr/metrics.
func Scrape(tb testing.TB, addr string) string {
	tb.Helper()
	if addr == "" {
		tb.Fatal("testenv: scrape: no address")
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		tb.Fatalf("testenv: scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		tb.Fatalf("testenv: scrape %s: status %d %v", addr, resp.StatusCode, err)
	}
	return string(b)
}
