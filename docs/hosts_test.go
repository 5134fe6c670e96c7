package docs

// The hosts the snapshot examples control. Their hooks say
// `ssh kafka-2.internal sudo systemctl stop kafka` or `sudo systemctl stop
// kafka@2`; on the test machine, `ssh`, `sudo`, `systemctl` and `pgrep` are
// shims (this test binary, started under those names) put first in PATH for
// the blocks that run snapshot jobs (docs/TESTING.md, "What the test machine
// provides"):
//
//   - ssh HOST CMD...: HOST kafka-N or kafka-N.<domain> is broker N (anything
//     else does not resolve, exit 255); CMD runs here with sh -c, "on" that
//     host (DOCTEST_HOST=N);
//   - sudo CMD...: runs CMD;
//   - systemctl stop|start|is-active [--quiet] UNIT: the unit kafka (on a
//     broker's host) or kafka@N is test broker N: stop sends SIGTERM
//     (SIGKILL after stopGrace) and returns once the broker exited, start
//     starts the broker's process and returns, is-active exits 0 while it runs and 3 when it does not;
//   - pgrep -f PATTERN: on a broker's host, the broker's pid when its
//     command line matches PATTERN;
//   - kubectl apply -f - and kubectl logs job/NAME: the Kubernetes API for
//     the Jobs the examples render (kube_test.go).
//
// systemctl and pgrep ask the test over a loopback HTTP endpoint, which
// controls the brokers through testenv and records every stop and start.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kbackup/kbackup/testenv"
)

const (
	envHostsURL = "DOCTEST_HOSTS_URL" // the test's control endpoint
	envHost     = "DOCTEST_HOST"      // the broker whose host a command runs on (set by ssh)
)

var shimNames = []string{"ssh", "sudo", "systemctl", "pgrep", "kubectl"}

// TestMain runs the shims when this binary is started under their names.
func TestMain(m *testing.M) {
	if name := filepath.Base(os.Args[0]); slices.Contains(shimNames, name) {
		os.Exit(runShim(name, os.Args[1:]))
	}
	os.Exit(m.Run())
}

func runShim(name string, args []string) int {
	switch name {
	case "sudo":
		if len(args) == 0 || strings.HasPrefix(args[0], "-") {
			fmt.Fprintln(os.Stderr, "sudo (test shim): want sudo COMMAND [ARG...]")
			return 1
		}
		bin, err := exec.LookPath(args[0])
		if err != nil {
			fmt.Fprintf(os.Stderr, "sudo: %s: command not found\n", args[0])
			return 1
		}
		err = syscall.Exec(bin, args, os.Environ())
		fmt.Fprintf(os.Stderr, "sudo: %s: %v\n", args[0], err)
		return 1
	case "ssh":
		return sshShim(args)
	}
	in := hostCmd{Cmd: name, Args: args, Host: os.Getenv(envHost)}
	if name == "kubectl" && slices.Contains(args, "-") { // apply -f -: the manifests
		b, err := io.ReadAll(os.Stdin)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kubectl (test shim): read stdin: %v\n", err)
			return 1
		}
		in.Stdin = string(b)
	}
	out, err := askHosts(in)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s (test shim): %v\n", name, err)
		return 1
	}
	os.Stdout.WriteString(out.Stdout)
	os.Stderr.WriteString(out.Stderr)
	return out.Code
}

func sshShim(args []string) int {
	if len(args) < 2 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(os.Stderr, "ssh (test shim): want ssh HOST COMMAND... (no options, no interactive login)")
		return 255
	}
	out, err := askHosts(hostCmd{Cmd: "resolve", Args: args[:1]})
	if err != nil {
		fmt.Fprintf(os.Stderr, "ssh (test shim): %v\n", err)
		return 255
	}
	if out.Code != 0 {
		os.Stderr.WriteString(out.Stderr)
		return 255
	}
	// As sshd does: the words are joined and run by the remote shell.
	c := exec.Command("/bin/sh", "-c", strings.Join(args[1:], " "))
	c.Env = append(os.Environ(), envHost+"="+out.Stdout)
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
	err = c.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ssh (test shim): %v\n", err)
		return 255
	}
	return 0
}

// hostCmd is a shim's request; hostResult the answer.
type hostCmd struct {
	Cmd  string   `json:"cmd"`
	Args []string `json:"args"`
	Host string   `json:"host"` // broker id of the host, "" on the job's own machine
	// Stdin is what the command read (kubectl apply -f -).
	Stdin string `json:"stdin,omitempty"`
}

type hostResult struct {
	Code   int    `json:"code"`
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
}

func askHosts(c hostCmd) (hostResult, error) {
	url := os.Getenv(envHostsURL)
	if url == "" {
		return hostResult{}, fmt.Errorf("%s is not set: run by the docs-as-tests suite only", envHostsURL)
	}
	body, _ := json.Marshal(c)
	cl := &http.Client{Timeout: 3 * time.Minute} // a graceful stop takes up to a minute
	resp, err := cl.Post(url+"/run", "application/json", bytes.NewReader(body))
	if err != nil {
		return hostResult{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return hostResult{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return hostResult{}, fmt.Errorf("control endpoint: %s: %s", resp.Status, b)
	}
	var out hostResult
	if err := json.Unmarshal(b, &out); err != nil {
		return hostResult{}, fmt.Errorf("control endpoint: %w", err)
	}
	return out, nil
}

// hostCall is one stop or start the shims made.
type hostCall struct {
	Broker int32
	Verb   string // "stop" or "start"
}

// hosts is the control endpoint behind the shims.
type hosts struct {
	c   *testenv.Cluster
	dir string // holds the shims
	url string
	srv *http.Server

	// kube answers kubectl (kube_test.go); nil: no Kubernetes here.
	kube func(hostCmd) hostResult

	mu       sync.Mutex
	closed   bool // the test is over
	calls    []hostCall
	failStop map[int32]string // injected: systemctl stop of broker N fails with this message
}

// stopGrace is the unit's stop timeout: SIGTERM, then SIGKILL (systemd's
// TimeoutStopSec). The last broker of a cold stop waits for a controlled
// shutdown its gone KRaft quorum never answers: 15 s instead of systemd's
// 90 s keeps each cold cycle short; the logs are whole (the copy reads the
// page cache), the broker recovers them at start.
const stopGrace = 15 * time.Second

var hostRE = regexp.MustCompile(`^kafka-(\d+)(?:\.[A-Za-z0-9-]+)*$`)

// startHosts makes the shims in dir and serves their requests for c.
func startHosts(t *testing.T, c *testenv.Cluster, dir string) *hosts {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range shimNames {
		if err := os.Symlink(self, filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hosts{c: c, dir: dir, url: "http://" + l.Addr().String(), failStop: map[int32]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /run", func(w http.ResponseWriter, r *http.Request) {
		var in hostCmd
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		out := h.run(in)
		if in.Cmd != "resolve" || out.Code != 0 {
			host := in.Host
			if host == "" {
				host = "(job)"
			}
			h.logf(t, "host %s: %s %s -> exit %d %s", host, in.Cmd, strings.Join(in.Args, " "), out.Code, strings.TrimSpace(out.Stderr))
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	h.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = h.srv.Serve(l) }()
	t.Cleanup(func() {
		h.mu.Lock()
		h.closed = true // a request still running logs nothing after the test
		h.mu.Unlock()
		_ = h.srv.Close()
	})
	return h
}

func (h *hosts) logf(t *testing.T, format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		t.Logf(format, args...)
	}
}

// env is what the commands of a block that controls brokers get.
func (h *hosts) env() []string { return []string{envHostsURL + "=" + h.url} }

// takeCalls returns the stops and starts made since the last call.
func (h *hosts) takeCalls() []hostCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.calls
	h.calls = nil
	return out
}

// failStops makes `systemctl stop` of the given broker fail (msg "" ends it).
func (h *hosts) failStops(id int32, msg string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if msg == "" {
		delete(h.failStop, id)
	} else {
		h.failStop[id] = msg
	}
}

func (h *hosts) broker(s string) (int32, bool) {
	n, err := strconv.Atoi(s)
	return int32(n), err == nil && slices.Contains(h.c.BrokerIDs(), int32(n))
}

func fail(code int, format string, args ...any) hostResult {
	return hostResult{Code: code, Stderr: fmt.Sprintf(format, args...) + "\n"}
}

func (h *hosts) run(in hostCmd) hostResult {
	switch in.Cmd {
	case "resolve":
		if m := hostRE.FindStringSubmatch(in.Args[0]); m != nil {
			if _, ok := h.broker(m[1]); ok {
				return hostResult{Stdout: m[1]}
			}
		}
		return fail(255, "ssh: Could not resolve hostname %s: Name or service not known", in.Args[0])
	case "systemctl":
		return h.systemctl(in)
	case "pgrep":
		return h.pgrep(in)
	case "kubectl":
		if h.kube != nil && in.Host == "" {
			return h.kube(in)
		}
	}
	return fail(127, "%s: command not found", in.Cmd)
}

var unitRE = regexp.MustCompile(`^kafka(?:@(\d+))?(?:\.service)?$`)

func (h *hosts) systemctl(in hostCmd) hostResult {
	quiet := false
	var words []string
	for _, a := range in.Args {
		switch {
		case a == "--quiet" || a == "-q":
			quiet = true
		case strings.HasPrefix(a, "-"):
			return fail(1, "systemctl (test shim): option %s not supported", a)
		default:
			words = append(words, a)
		}
	}
	if len(words) != 2 {
		return fail(1, "systemctl (test shim): want stop|start|is-active UNIT")
	}
	verb, unit := words[0], words[1]
	m := unitRE.FindStringSubmatch(unit)
	var id int32
	ok := false
	switch {
	case m == nil:
	case m[1] != "": // kafka@N: the job's machine runs the brokers
		id, ok = h.broker(m[1])
		ok = ok && in.Host == ""
	default: // kafka: a broker's own host
		id, ok = h.broker(in.Host)
	}
	if !ok {
		return fail(5, "Unit %s could not be found.", unit)
	}
	switch verb {
	case "stop":
		h.mu.Lock()
		msg := h.failStop[id]
		h.mu.Unlock()
		if msg != "" {
			return fail(1, "%s", msg)
		}
		if err := h.c.StopBroker(id, stopGrace); err != nil {
			return fail(1, "Failed to stop %s: %v", unit, err)
		}
	case "start":
		if err := h.c.Start(id); err != nil {
			return fail(1, "Failed to start %s: %v", unit, err)
		}
	case "is-active":
		if h.c.Pid(id) == 0 {
			if quiet {
				return hostResult{Code: 3}
			}
			return hostResult{Code: 3, Stdout: "inactive\n"}
		}
		if quiet {
			return hostResult{}
		}
		return hostResult{Stdout: "active\n"}
	default:
		return fail(1, "systemctl (test shim): verb %q not supported", verb)
	}
	h.mu.Lock()
	h.calls = append(h.calls, hostCall{Broker: id, Verb: verb})
	h.mu.Unlock()
	return hostResult{}
}

func (h *hosts) pgrep(in hostCmd) hostResult {
	id, ok := h.broker(in.Host)
	if !ok {
		return fail(2, "pgrep (test shim): runs on a broker's host only (through ssh)")
	}
	if len(in.Args) != 2 || in.Args[0] != "-f" {
		return fail(2, "pgrep (test shim): want pgrep -f PATTERN")
	}
	re, err := regexp.Compile(in.Args[1])
	if err != nil {
		return fail(2, "pgrep: %v", err)
	}
	pid := h.c.Pid(id)
	if pid == 0 {
		return hostResult{Code: 1}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !re.Match(bytes.ReplaceAll(b, []byte{0}, []byte{' '})) {
		return hostResult{Code: 1}
	}
	return hostResult{Stdout: fmt.Sprintf("%d\n", pid)}
}
