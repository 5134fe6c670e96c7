package testenv

import (
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// procSpec describes an external process to start.
type procSpec struct {
	Name    string   // for messages
	Path    string   // executable
	Args    []string // arguments (without the executable)
	Env     []string // extra environment (appended to os.Environ())
	Dir     string   // working directory
	LogPath string   // stdout+stderr are appended here
	// Detached processes get their own session and outlive this process
	// (make testenv-up); others are killed when this process dies (Linux
	// parent-death signal) and by the owner's cleanup.
	Detached bool
}

// proc is one running external process and its process group.
type proc struct {
	spec    procSpec
	cmd     *exec.Cmd
	logFile *os.File
	done    chan struct{}

	mu      sync.Mutex
	waitErr error
}

func startProc(spec procSpec) (*proc, error) {
	lf, err := os.OpenFile(spec.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: log file: %w", spec.Name, err)
	}
	fmt.Fprintf(lf, "\n==== testenv: starting %s at %s: %s %s\n", spec.Name, time.Now().Format(time.RFC3339), spec.Path, strings.Join(spec.Args, " "))
	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Dir = spec.Dir
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.Stdin = nil
	cmd.Stdout = lf
	cmd.Stderr = lf
	cmd.SysProcAttr = sysProcAttr(spec.Detached)
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("%s: start %s: %w", spec.Name, spec.Path, err)
	}
	p := &proc{spec: spec, cmd: cmd, logFile: lf, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid returns the process id (also its process group id).
func (p *proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended, and how.
func (p *proc) Exited() (bool, error) {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return true, p.waitErr
	default:
		return false, nil
	}
}

// signal sends sig to the process group.
func (p *proc) signal(sig syscall.Signal) error {
	err := syscall.Kill(-p.Pid(), sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// Kill sends SIGKILL to the process group and waits (bounded) for the exit.
func (p *proc) Kill() error {
	if done, _ := p.Exited(); done {
		return nil
	}
	if err := p.signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("%s: kill: %w", p.spec.Name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s (pid %d): still running 30s after SIGKILL", p.spec.Name, p.Pid())
	}
}

// Stop sends SIGTERM, waits up to grace for a clean exit, then kills.
// It reports whether the exit was graceful.
func (p *proc) Stop(grace time.Duration) (graceful bool, err error) {
	if done, _ := p.Exited(); done {
		return true, nil
	}
	if err := p.signal(syscall.SIGTERM); err != nil {
		return false, fmt.Errorf("%s: terminate: %w", p.spec.Name, err)
	}
	select {
	case <-p.done:
		return true, nil
	case <-time.After(grace):
	}
	return false, p.Kill()
}

// tail returns the last n lines of a file (for failure messages).
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	defer f.Close()
	const max = 64 << 10
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	off := st.Size() - max
	if off < 0 {
		off = 0
	}
	b, err := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freePorts returns n distinct TCP ports that were free on 127.0.0.1 a
// moment ago (held open together so they are distinct). They are taken
// below the kernel's ephemeral port range when it leaves room
// (portsBelowEphemeral): a port from the ephemeral range, free when picked,
// may be the local port of some client's outgoing connection by the time a
// broker binds it (a CI run saw "Address already in use" that way, and a
// broker restarted on its old port is exposed the same way).
func freePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	lo, hi := portsBelowEphemeral()
	ports := make([]int, 0, n)
	for tries := 0; len(ports) < n; tries++ {
		addr := "127.0.0.1:0"
		if hi > lo && tries < 50*n {
			addr = "127.0.0.1:" + strconv.Itoa(lo+mrand.IntN(hi-lo))
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			if addr != "127.0.0.1:0" {
				continue // taken: try another
			}
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// portsBelowEphemeral returns the range [lo, hi) that freePorts picks from:
// from 15000 up to the start of the ephemeral range
// (/proc/sys/net/ipv4/ip_local_port_range), or an empty range (lo == hi)
// when that is unknown or leaves fewer than 2,000 ports.
func portsBelowEphemeral() (lo, hi int) {
	const floor = 15000
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0
	}
	start, err := strconv.Atoi(f[0])
	if err != nil || start-floor < 2000 {
		return 0, 0
	}
	return floor, start
}

// waitTCP waits until addr accepts connections or the process exits.
func waitTCP(addr string, p *proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if done, werr := p.Exited(); done {
			return fmt.Errorf("%s exited before listening on %s (%v); log %s:\n%s", p.spec.Name, addr, werr, p.spec.LogPath, tail(p.spec.LogPath, 30))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not listening on %s after %s: %v; log %s:\n%s", p.spec.Name, addr, timeout, err, p.spec.LogPath, tail(p.spec.LogPath, 30))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// tailMatching returns the last n lines of a file's last 64 KiB that
// contain one of the substrings.
func tailMatching(path string, n int, subs ...string) string {
	var out []string
	for _, l := range strings.Split(tail(path, 100000), "\n") {
		for _, s := range subs {
			if strings.Contains(l, s) {
				if len(l) > 300 {
					l = l[:300] + "..."
				}
				out = append(out, l)
				break
			}
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	if len(out) == 0 {
		return "(none)"
	}
	return strings.Join(out, "\n")
}
