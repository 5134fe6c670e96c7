// Package docs holds the docs-as-tests suite: every example README.md and
// docs/*.md tell operators to run is marked (package internal/doctest) and
// run by `make integration` against a real 3-broker Kafka cluster and
// MinIO, exactly as written but for the documented placeholders
// (docs/TESTING.md, "Docs as tests"), with its exit status and effect
// checked. This file is the runner; specs_test.go says, per block, what
// state it needs and what it must do.
package docs

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/internal/doctest"
	"github.com/kbackup/kbackup/testenv"
)

// docFiles are the files whose marked blocks the suite runs, in order.
var docFiles = []string{"../README.md", "OPERATIONS.md"}

// blockSpec is what the suite knows of one marked block.
type blockSpec struct {
	// before prepares the state the block needs (topics, records, groups).
	before func(e *docEnv)
	// running is called while the block's continuous processes run and
	// have caught up (e.g. to scrape /metrics), before they get SIGTERM.
	running func(e *docEnv, r *blockRun)
	// after checks the block's effect.
	after func(e *docEnv, r *blockRun)
	// codes are the expected exit codes by command index (default 0).
	codes map[int]int
	// hosts puts the broker hosts' shims (hosts_test.go) first in PATH
	// while the block and its before run: its commands control brokers.
	hosts bool
}

// blockRun is what running a block produced.
type blockRun struct {
	block doctest.Block
	cmds  []cmdResult
	bg    []*bgProc
	doc   any // what the runner decoded (a CronJob, a Dockerfile's instructions)
}

type cmdResult struct {
	cmd            string // after substitution
	stdout, stderr string
	code           int
}

type bgProc struct {
	cmd  string
	args []string
	proc *testenv.Proc
	env  map[string]string // the session's exported variables when it started
}

// docEnv is one doc file's test environment: a fresh cluster, MinIO, a
// temporary root for local paths, and a shell session whose exported
// variables persist from command to command and block to block.
type docEnv struct {
	t      *testing.T
	k      *testenv.Kafka
	s3     testenv.S3
	root   string // repository root: the commands' working directory
	tmp    string // stands for / in local paths of the examples
	binDir string // holds kbackup, first in PATH
	state  string // the session's exported variables (bash export -p)
	run    string // S3 key prefix of this run
	listen map[string]string
	// ids are the values of placeholders that name what an earlier block
	// made (the restore id r-0123456789abcdef), set by that block's spec.
	ids    map[string]string
	subs   []doctest.Substitution
	values []string // helm-values blocks seen so far (helm_test.go)

	hosts     *hosts        // the broker hosts' shims and their control endpoint
	kube      *kube         // what kubectl applies (kube_test.go)
	kubeCalls chan kubeCall // kubectl requests, answered by shell
	hostsOn   bool          // the running block's commands get the shims
	ec2       *testenv.EC2  // moto, once a snapshot example needs EC2
	snap      *snapState    // what the snapshot examples' specs share
}

func newDocEnv(t *testing.T) *docEnv {
	t.Helper()
	e := &docEnv{t: t, listen: map[string]string{}, ids: map[string]string{}}
	e.k = testenv.StartKafka(t, testenv.KafkaOptions{Brokers: 3})
	e.s3 = testenv.UseMinIO(t)
	e.run = strings.TrimSuffix(e.s3.Prefix(t), "/")
	var err error
	if e.root, err = filepath.Abs(".."); err != nil {
		t.Fatal(err)
	}
	e.tmp = t.TempDir()
	e.binDir = filepath.Join(e.tmp, "usr", "local", "bin")
	if err := os.MkdirAll(e.binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(testenv.KbackupBinary(t), filepath.Join(e.binDir, "kbackup")); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"tmp", "etc/kbackup", "var/backups"} {
		if err := os.MkdirAll(filepath.Join(e.tmp, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.state = filepath.Join(e.tmp, "session.env")
	e.hosts = startHosts(t, e.k.Cluster(), filepath.Join(e.tmp, "doctest-hosts"))
	e.kube = &kube{e: e}
	e.kubeCalls = make(chan kubeCall)
	e.hosts.kube = func(in hostCmd) hostResult {
		call := kubeCall{in: in, out: make(chan hostResult, 1)}
		select {
		case e.kubeCalls <- call:
			return <-call.out
		case <-time.After(time.Minute):
			return fail(1, "kubectl (test shim): no command of the suite is running")
		}
	}
	e.snap = &snapState{volumes: map[string]string{}}
	e.subs = e.substitutions()
	return e
}

// substitutions are the documented placeholders (docs/TESTING.md) and
// what they stand for here. Order matters: local paths are rewritten
// before anything inserts the temporary root (itself under /tmp).
func (e *docEnv) substitutions() []doctest.Substitution {
	brokers := strings.Join(e.k.Brokers(), ",")
	host := `(?:localhost|kafka-\d+(?:\.[a-z0-9-]+)*)`
	return []doctest.Substitution{
		{Name: "broker placeholder B", Pattern: regexp.MustCompile(`--brokers B\b`), Replace: func([]string) string { return "--brokers " + brokers }},
		{Name: "store placeholder S", Pattern: regexp.MustCompile(`--store S\b`), Replace: func([]string) string { return "--store s3://backups/kafka" }},
		{Name: "Kafka brokers", Pattern: regexp.MustCompile(host + `:909\d(?:, ?` + host + `:909\d)*`), Replace: func([]string) string { return brokers }},
		{Name: "S3 bucket", Pattern: regexp.MustCompile(`s3://([a-z0-9.-]+)/([A-Za-z0-9._/-]*)`), Replace: func(m []string) string {
			return "s3://" + e.s3.Bucket + "/" + e.run + "/" + m[1] + "/" + m[2]
		}},
		{Name: "local paths", Pattern: regexp.MustCompile(`(^|[\s=:'"\[])/((?:tmp|etc/kbackup|var/backups)/)`), Replace: func(m []string) string {
			return m[1] + e.tmp + "/" + m[2]
		}},
		{Name: "local store", Pattern: regexp.MustCompile(`file:///`), Replace: func([]string) string { return "file://" + e.tmp + "/" }},
		{Name: "listen address", Pattern: regexp.MustCompile(`(?:127\.0\.0\.1)?:(9464)\b`), Replace: func(m []string) string { return e.listenAddr(m[1]) }},
		{Name: "a restore id an earlier block printed", Pattern: regexp.MustCompile(`\br-0123456789abcdef\b`), Replace: func(m []string) string {
			if id, ok := e.ids[m[0]]; ok {
				return id
			}
			e.t.Fatalf("placeholder %s used before a block set it", m[0])
			return ""
		}},
		{Name: "installed binary", Pattern: regexp.MustCompile(`/usr/local/bin/kbackup\b`), Replace: func([]string) string { return filepath.Join(e.binDir, "kbackup") }},
		// After the local paths: these insert paths under $TMPDIR.
		{Name: "broker data directories", Pattern: regexp.MustCompile(`/var/lib/kafka/(\d+)\b`), Replace: func(m []string) string { return e.dataDir(m[1]) }},
		{Name: "EBS volume ids", Pattern: regexp.MustCompile(`\bvol-[0-9a-f]{17}\b`), Replace: func(m []string) string { return e.volume(m[0]) }},
		{Name: "cycle ids", Pattern: regexp.MustCompile(`\b\d{8}T\d{6}Z-[0-9a-f]{8}\b`), Replace: func([]string) string { return e.newestCompleteCycle() }},
	}
}

// listenAddr maps a documented port to a free loopback address.
func (e *docEnv) listenAddr(port string) string {
	if a, ok := e.listen[port]; ok {
		return a
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	a := l.Addr().String()
	l.Close()
	e.listen[port] = a
	return a
}

// sub applies the placeholders to documented text.
func (e *docEnv) sub(s string) string { return doctest.Substitute(s, e.subs) }

// environ is the commands' environment: a clean one, the S3 endpoint and
// credentials of MinIO (the placeholder for AWS), moto's EC2 endpoint once
// started, kbackup first in PATH, and for a block that controls brokers
// the hosts' shims next (hosts_test.go).
func (e *docEnv) environ() []string {
	path := e.binDir + ":" + os.Getenv("PATH")
	if e.hostsOn {
		path = e.binDir + ":" + e.hosts.dir + ":" + os.Getenv("PATH")
	}
	env := []string{"PATH=" + path, "HOME=" + os.Getenv("HOME"), "TMPDIR=" + filepath.Join(e.tmp, "tmp"),
		"KBACKUP_S3_ENDPOINT=" + e.s3.Endpoint, "KBACKUP_S3_PATH_STYLE=true",
		// The snapshot job's store and the EC2 API (YAML configuration,
		// no endpoint in it): the AWS SDK's own endpoint variables.
		"AWS_ENDPOINT_URL_S3=" + e.s3.Endpoint}
	if e.ec2 != nil {
		env = append(env, "AWS_ENDPOINT_URL_EC2="+e.ec2.Endpoint)
	}
	if e.hostsOn {
		env = append(env, e.hosts.env()...)
	}
	// The Go toolchain's settings, for the README's make build.
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GO") || strings.HasPrefix(kv, "KBACKUP_CACHE=") {
			env = append(env, kv)
		}
	}
	return append(env, e.s3.AWSEnv()...)
}

// sessionVars reads the variables the session exported so far.
func (e *docEnv) sessionVars() map[string]string {
	out := map[string]string{}
	f, err := os.Open(e.state)
	if err != nil {
		return out
	}
	defer f.Close()
	re := regexp.MustCompile(`^declare -x ([A-Za-z_][A-Za-z0-9_]*)="(.*)"$`)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			out[m[1]] = m[2]
		}
	}
	return out
}

// suiteVars (an extended regular expression) are the variables environ
// sets that a session does not keep.
const suiteVars = `PATH|` + envHostsURL + `|AWS_ENDPOINT_URL_[A-Z0-9_]+`

// shell runs one command in the session: the exported variables of earlier
// commands are set, and those it exports are kept.
func (e *docEnv) shell(cmd string, timeout time.Duration) cmdResult {
	e.t.Helper()
	// The variables the suite sets per block (PATH with or without the
	// hosts' shims, the endpoints) are not kept: each command gets the
	// current block's.
	script := fmt.Sprintf("[ -f %[1]q ] && . %[1]q\n%[2]s\nrc=$?\nexport -p | grep -Ev '^declare -x (%[3]s)=' > %[1]q.new; mv %[1]q.new %[1]q\nexit $rc\n",
		e.state, cmd, suiteVars)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := exec.CommandContext(ctx, "bash", "-c", script)
	c.Dir, c.Env = e.root, e.environ()
	var out, errb strings.Builder
	c.Stdout, c.Stderr = &out, &errb
	err := c.Start()
	if err == nil {
		// While the command runs, its kubectl calls are answered here,
		// on the test's goroutine: they read the suite's state.
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
	wait:
		for {
			select {
			case err = <-done:
				break wait
			case call := <-e.kubeCalls:
				call.out <- e.kube.kubectl(call.in)
			}
		}
	}
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if ctx.Err() != nil {
			e.t.Fatalf("%s: did not finish within %s\n%s", cmd, timeout, errb.String())
		}
	}
	return cmdResult{cmd: cmd, stdout: out.String(), stderr: errb.String(), code: code}
}

// kubeCall is a kubectl shim's request, handed from the hosts' endpoint to
// the goroutine running the command (see shell).
type kubeCall struct {
	in  hostCmd
	out chan hostResult
}

// continuous reports whether cmd runs until stopped: kbackup archive
// without --once.
func continuous(args []string) bool {
	i := slices.IndexFunc(args, func(a string) bool { return a == "kbackup" || strings.HasSuffix(a, "/kbackup") })
	return i >= 0 && i+1 < len(args) && args[i+1] == "archive" && !slices.Contains(args, "--once")
}

// start runs a continuous command in the background (exec'd by bash, so
// signals reach kbackup itself).
func (e *docEnv) start(name, cmd string, args []string) *bgProc {
	e.t.Helper()
	script := fmt.Sprintf("[ -f %[1]q ] && . %[1]q\ncd %[2]q\nexec %[3]s\n", e.state, e.root, cmd)
	p := testenv.StartProc(e.t, name, "/bin/bash", e.environ(), "-c", script)
	return &bgProc{cmd: cmd, args: args, proc: p, env: e.sessionVars()}
}

// flagValues returns every value of --name in args (--name V or --name=V).
func flagValues(args []string, name string) []string {
	var out []string
	for i, a := range args {
		if a == "--"+name && i+1 < len(args) {
			out = append(out, args[i+1])
		} else if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			out = append(out, v)
		}
	}
	return out
}

// setting is a flag's value from args, else from the process's variables.
func setting(args []string, vars map[string]string, flag, env string) []string {
	if v := flagValues(args, flag); len(v) > 0 {
		return v
	}
	if v, ok := vars[env]; ok && v != "" {
		return strings.Split(v, ",")
	}
	return nil
}

// waitCaughtUp waits until a continuous archiver's store holds every
// selected topic up to the cluster's end, as `kbackup verify --brokers
// --lag-allowance 0` judges (no allowance: nothing may be missing).
func (e *docEnv) waitCaughtUp(b *bgProc) {
	e.t.Helper()
	store := setting(b.args, b.env, "store", "KBACKUP_STORE")
	if len(store) == 0 {
		e.t.Fatalf("%s: no --store", b.cmd)
	}
	args := []string{"verify", "--store", store[0], "--brokers", e.k.BrokerList(), "--lag-allowance", "0", "--concurrency", "16"}
	for _, t := range setting(b.args, b.env, "topics", "KBACKUP_TOPICS") {
		args = append(args, "--topics", t)
	}
	for _, x := range setting(b.args, b.env, "exclude", "KBACKUP_EXCLUDE") {
		args = append(args, "--exclude", x)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		r := e.kbackup(args...)
		if r.code == 0 {
			return
		}
		if b.proc.Exited() {
			e.t.Fatalf("%s exited (%d) before catching up:\n%s", b.cmd, b.proc.Wait(e.t, time.Second), b.proc.Stderr())
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s did not catch up within 2m: verify says\n%s", b.cmd, r.stdout+r.stderr)
		}
		time.Sleep(time.Second)
	}
}

// stop sends SIGTERM (as Kubernetes and systemd do) and requires exit 0
// within grace.
func (e *docEnv) stop(b *bgProc, grace time.Duration) {
	e.t.Helper()
	b.proc.Signal(e.t, syscall.SIGTERM)
	if code := b.proc.Wait(e.t, grace); code != 0 {
		e.t.Fatalf("%s: exit %d after SIGTERM (want 0 within %s)\n%s", b.cmd, code, grace, b.proc.Stderr())
	}
	if s := b.proc.Stderr(); strings.Contains(s, "panic") || strings.Contains(s, "level=ERROR") {
		e.t.Fatalf("%s logged errors:\n%s", b.cmd, s)
	}
}

// kbackup runs the binary directly (for the suite's own checks).
func (e *docEnv) kbackup(args ...string) cmdResult {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, filepath.Join(e.binDir, "kbackup"), args...)
	c.Dir, c.Env = e.root, e.environ()
	var out, errb strings.Builder
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("kbackup %v: %v", args, err)
	}
	return cmdResult{cmd: "kbackup " + strings.Join(args, " "), stdout: out.String(), stderr: errb.String(), code: code}
}

// runSh runs an sh block command by command.
func (e *docEnv) runSh(b doctest.Block, spec blockSpec) *blockRun {
	e.t.Helper()
	r := &blockRun{block: b}
	for i, c := range doctest.Commands(b.Text) {
		cmd := e.sub(c.Text)
		args, err := doctest.Args(cmd)
		if err != nil {
			e.t.Fatalf("%s line %d: %v", b.ID(), c.Line, err)
		}
		if continuous(args) {
			bg := e.start(fmt.Sprintf("%s-%d", b.Name, i), cmd, args)
			e.waitCaughtUp(bg)
			r.bg = append(r.bg, bg)
			r.cmds = append(r.cmds, cmdResult{cmd: cmd})
			continue
		}
		var res cmdResult
		if out, ok := e.makeTestRan(args); ok {
			res = cmdResult{cmd: cmd, stdout: out}
		} else {
			res = e.shell(cmd, 15*time.Minute) // make test is the longest
		}
		if want := spec.codes[i]; res.code != want {
			e.t.Fatalf("%s line %d: %s\nexit %d, want %d\nstdout:\n%s\nstderr:\n%s", b.ID(), c.Line, cmd, res.code, want, res.stdout, res.stderr)
		}
		r.cmds = append(r.cmds, res)
	}
	return r
}

// envMakeTestOutput names the saved output of a `make test` that passed
// earlier in the same CI run on this very tree: .ci/run sets it only then
// (it compares the tree's fingerprint before and after). The README's
// `make test` is then not run a second time (the unit tests again, two
// minutes on 2 cores); its spec checks that output instead.
const envMakeTestOutput = "KBACKUP_DOCS_MAKE_TEST_OUTPUT"

// makeTestRan returns the output of the `make test` .ci/run already ran
// (envMakeTestOutput) when args are `make test`.
func (e *docEnv) makeTestRan(args []string) (string, bool) {
	e.t.Helper()
	path := os.Getenv(envMakeTestOutput)
	if path == "" || !slices.Equal(args, []string{"make", "test"}) {
		return "", false
	}
	out, err := os.ReadFile(path)
	if err != nil || len(out) == 0 {
		e.t.Fatalf("%s=%s: %v (empty: %v)", envMakeTestOutput, path, err, len(out) == 0)
	}
	e.t.Logf("make test: not run again; CI ran it on this tree and it passed: its output (%s) is checked", path)
	return string(out), true
}

// envFile writes an env-file block to its documented path (attribute
// path=), placeholders substituted.
func (e *docEnv) envFile(b doctest.Block) {
	e.t.Helper()
	if b.Attrs["path"] == "" {
		e.t.Fatalf("%s: env-file block without path=", b.ID())
	}
	e.writeBlock(b, 0o600)
}

// writeBlock writes a block with a path= attribute there (under the
// temporary root), placeholders substituted, and returns where; "" when
// the block has no path=.
func (e *docEnv) writeBlock(b doctest.Block, mode os.FileMode) string {
	e.t.Helper()
	path := b.Attrs["path"]
	if path == "" {
		return ""
	}
	dst := filepath.Join(e.tmp, path)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(dst, []byte(e.sub(b.Text)), mode); err != nil {
		e.t.Fatal(err)
	}
	return dst
}

// readEnvFile parses a systemd EnvironmentFile: KEY=VALUE lines, # comments,
// optional quotes around the value.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("EnvironmentFile: %v", err)
	}
	out := map[string]string{}
	for n, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || !regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`).MatchString(k) {
			t.Fatalf("%s:%d: not KEY=VALUE: %q", path, n+1, line)
		}
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		out[k] = v
	}
	return out
}

// unit is a parsed systemd unit block.
type unit struct {
	execStart, execStartPost []string
	envFiles                 []string
	oneshot                  bool
	stopTimeout              time.Duration
}

func parseUnit(t *testing.T, b doctest.Block, text string) unit {
	t.Helper()
	u := unit{stopTimeout: 90 * time.Second}
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s line %d: not Key=Value: %q", b.ID(), n+1, line)
		}
		switch k {
		case "ExecStart":
			u.execStart = append(u.execStart, v)
		case "ExecStartPost":
			u.execStartPost = append(u.execStartPost, v)
		case "EnvironmentFile":
			if strings.ContainsAny(v, " #") {
				t.Fatalf("%s line %d: EnvironmentFile=%q: systemd takes the whole value as the path (no comments after it)", b.ID(), n+1, v)
			}
			u.envFiles = append(u.envFiles, v)
		case "Type":
			u.oneshot = v == "oneshot"
		case "TimeoutStopSec":
			d, err := time.ParseDuration(v + "s")
			if err != nil {
				t.Fatalf("%s: TimeoutStopSec=%s", b.ID(), v)
			}
			u.stopTimeout = d
		}
	}
	return u
}

// runSystemd runs a service unit as systemd would: ExecStart with the
// EnvironmentFile's variables; a simple service until caught up, then
// SIGTERM (systemctl stop) within TimeoutStopSec; a oneshot to completion.
func (e *docEnv) runSystemd(b doctest.Block, spec blockSpec) *blockRun {
	e.t.Helper()
	u := parseUnit(e.t, b, e.sub(b.Text))
	if len(u.execStart) != 1 {
		e.t.Fatalf("%s: want one ExecStart, have %q", b.ID(), u.execStart)
	}
	vars := map[string]string{}
	for _, f := range u.envFiles {
		for k, v := range readEnvFile(e.t, strings.TrimPrefix(f, "-")) {
			vars[k] = v
		}
	}
	r := &blockRun{block: b}
	for i, line := range append(u.execStart, u.execStartPost...) {
		args, err := doctest.Args(line)
		if err != nil {
			e.t.Fatalf("%s: %v", b.ID(), err)
		}
		env := e.environ()
		for k, v := range vars {
			env = append(env, k+"="+v)
		}
		if !u.oneshot {
			p := testenv.StartProc(e.t, b.Name, args[0], env, args[1:]...)
			bg := &bgProc{cmd: line, args: args, proc: p, env: vars}
			e.waitCaughtUp(bg)
			r.bg = append(r.bg, bg)
			r.cmds = append(r.cmds, cmdResult{cmd: line})
			continue
		}
		p := testenv.StartProc(e.t, b.Name, args[0], env, args[1:]...)
		code := p.Wait(e.t, 10*time.Minute)
		if want := spec.codes[i]; code != want {
			e.t.Fatalf("%s: %s: exit %d, want %d\n%s", b.ID(), line, code, want, p.Stderr())
		}
		r.cmds = append(r.cmds, cmdResult{cmd: line, stdout: p.Stdout(), stderr: p.Stderr(), code: code})
	}
	_ = u.stopTimeout
	return r
}

// blockKinds are the kinds runBlock runs.
var blockKinds = []string{"sh", "env-file", "systemd", "systemd-timer", "helm-values", "helm-install", "snapshot-config", "cronjob", "dockerfile"}

// runBlock runs one block by its kind, with its spec's hooks, and stops its
// continuous processes with SIGTERM at the end.
func (e *docEnv) runBlock(b doctest.Block, spec blockSpec) {
	e.t.Helper()
	e.hostsOn = spec.hosts
	defer func() { e.hostsOn = false }()
	if spec.before != nil {
		spec.before(e)
	}
	var r *blockRun
	grace := 45 * time.Second // the documented terminationGracePeriodSeconds / TimeoutStopSec
	switch b.Kind {
	case "sh":
		r = e.runSh(b, spec)
	case "env-file":
		e.envFile(b)
		r = &blockRun{block: b}
	case "systemd":
		u := parseUnit(e.t, b, e.sub(b.Text))
		grace = u.stopTimeout
		e.writeBlock(b, 0o644)
		r = e.runSystemd(b, spec)
	case "helm-values":
		e.helmValues(b)
		r = &blockRun{block: b}
	case "helm-install":
		r, grace = e.runHelmInstall(b, spec)
	case "systemd-timer":
		r = e.runTimer(b)
	case "snapshot-config":
		r = e.runSnapshotConfig(b)
	case "cronjob":
		r = e.runCronJob(b, spec)
	case "dockerfile":
		r = e.runDockerfile(b)
	default:
		e.t.Fatalf("%s: no runner for kind %q", b.ID(), b.Kind)
	}
	if spec.running != nil {
		spec.running(e, r)
	}
	for _, bg := range r.bg {
		e.stop(bg, grace)
	}
	if spec.after != nil {
		spec.after(e, r)
	}
}

// ---- helpers the specs use ----

// topic creates a topic (replication factor 3) on the cluster. Retention is
// off: the examples' records carry timestamps days old (the docs' dates),
// which the default 7-day retention would delete within a minute.
func (e *docEnv) topic(name string, partitions int32) {
	e.k.CreateTopic(e.t, name, partitions, 3, map[string]string{"retention.ms": "-1"})
}

// produce writes n records to every partition of topic, record i of a
// partition stamped at first + i*step, with keys, values and headers that
// exercise null and empty.
func (e *docEnv) produce(topic string, partitions int32, n int, first time.Time, step time.Duration) []testenv.Record {
	e.t.Helper()
	var recs []testenv.Record
	for p := int32(0); p < partitions; p++ {
		for i := 0; i < n; i++ {
			r := testenv.Record{Topic: topic, Partition: p, Timestamp: first.Add(time.Duration(i) * step).UnixMilli(),
				Key: fmt.Appendf(nil, "k%d", i%17), Value: fmt.Appendf(nil, "%s/%d/%d", topic, p, i),
				Headers: []testenv.Header{{Key: "i", Value: fmt.Appendf(nil, "%d", i)}, {Key: "dup"}, {Key: "dup", Value: []byte{}}}}
			switch i % 10 {
			case 3:
				r.Key = nil
			case 7:
				r.Key, r.Value = []byte{}, nil
			}
			recs = append(recs, r)
		}
	}
	// No delivery timeout: franz-go measures it from the record timestamp,
	// which is days old here.
	return testenv.ProduceSync(e.t, e.k.Brokers(), recs, kgo.RecordDeliveryTimeout(0))
}

// cat reads a topic from a store with kbackup cat (docURL is the store as
// the docs name it).
func (e *docEnv) cat(docURL, topic string, extra ...string) []testenv.Record {
	e.t.Helper()
	r := e.kbackup(append([]string{"cat", "--store", e.sub(docURL), "--topic", topic}, extra...)...)
	if r.code != 0 {
		e.t.Fatalf("cat %s %s: %s", docURL, topic, r.stderr)
	}
	return parseCat(e.t, r.stdout)
}

func parseCat(t *testing.T, out string) []testenv.Record {
	t.Helper()
	var recs []testenv.Record
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var r testenv.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("cat line %q: %v", line, err)
		}
		recs = append(recs, r)
	}
	testenv.SortRecords(recs)
	return recs
}

// archivedTopics lists the topics of a store (ls --json).
func (e *docEnv) archivedTopics(docURL string) []string {
	e.t.Helper()
	r := e.kbackup("ls", "--store", e.sub(docURL), "--json", "--topics", ".*")
	if r.code != 0 {
		e.t.Fatalf("ls %s: %s", docURL, r.stderr)
	}
	var doc struct {
		Topics []struct {
			Topic string `json:"topic"`
		} `json:"topics"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, t := range doc.Topics {
		out = append(out, t.Topic)
	}
	slices.Sort(out)
	return out
}

// exact checks that a store holds topic exactly as a read_committed
// consumer reads it from the cluster.
func (e *docEnv) exact(docURL, topic string) {
	e.t.Helper()
	want := testenv.ConsumeAll(e.t, e.k.Brokers(), topic, testenv.ReadCommitted)
	got := e.cat(docURL, topic)
	sameRecords(e.t, docURL+" "+topic, want, got)
}

func sameRecords(t *testing.T, what string, want, got []testenv.Record) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("%s: %d records, want %d", what, len(got), len(want))
	}
	for i := range want {
		if !testenv.Identical(want[i], got[i]) {
			t.Fatalf("%s: record %d:\n got %s\nwant %s", what, i, got[i], want[i])
		}
	}
}
