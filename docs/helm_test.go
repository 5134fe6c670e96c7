package docs

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/kbackup/kbackup/internal/chartcheck"
	"github.com/kbackup/kbackup/internal/doctest"
	"github.com/kbackup/kbackup/testenv"
)

// helmValues records a helm-values block: the values file a later
// helm-install block of the same doc must install.
func (e *docEnv) helmValues(b doctest.Block) {
	e.values = append(e.values, b.Text)
}

// runHelmInstall runs a helm-install block as Kubernetes would run what it
// installs: `helm install` or `helm upgrade [--install]` renders the chart
// with `helm template` and the block's release, namespace, values files and
// --set-file values (internal/chartcheck decodes every object strictly);
// the objects are applied to the suite's Kubernetes (kube_test.go); every
// replica of the archiver Deployment runs as a process with the
// container's args and environment, placeholders substituted, until caught
// up, unless an upgrade left the Deployment unchanged (Kubernetes would not
// restart its pods). Its probes must answer. The block's other commands
// (kubectl) then run in the shell session. It returns the run and the
// pod's termination grace period (how long SIGTERM may take).
func (e *docEnv) runHelmInstall(b doctest.Block, spec blockSpec) (*blockRun, time.Duration) {
	e.t.Helper()
	cmds := doctest.Commands(b.Text)
	if len(cmds) == 0 {
		e.t.Fatalf("%s: no helm command", b.ID())
	}
	args, err := doctest.Args(cmds[0].Text)
	if err != nil {
		e.t.Fatalf("%s: %v", b.ID(), err)
	}
	hi := parseHelmInstall(e, b, args)
	if hi.release != chartcheck.Release || hi.ns != chartcheck.Namespace {
		e.t.Fatalf("%s: release %q namespace %q; chartcheck renders %q in %q", b.ID(), hi.release, hi.ns, chartcheck.Release, chartcheck.Namespace)
	}
	for _, f := range hi.files {
		body, err := os.ReadFile(filepath.Join(e.root, f))
		if err != nil {
			e.t.Fatalf("%s: %v", b.ID(), err)
		}
		if !slices.Contains(e.values, string(body)) {
			e.t.Fatalf("%s: %s is not the values file the docs show (a helm-values block before it)", b.ID(), f)
		}
	}
	helm, err := chartcheck.FindHelm()
	if err != nil {
		e.t.Fatalf("%s: %v", b.ID(), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rendered, err := chartcheck.RenderArgs(ctx, helm, filepath.Join(e.root, hi.chart), hi.valueArgs)
	if err != nil {
		e.t.Fatalf("%s: %v", b.ID(), err)
	}
	d, err := rendered.Archiver()
	if err != nil {
		e.t.Fatalf("%s: %v", b.ID(), err)
	}
	r := &blockRun{block: b}
	if changed := e.kube.applyAll(hi.ns, rendered.Objects); !changed {
		r.cmds = append(r.cmds, cmdResult{cmd: cmds[0].Text})
		e.kubectlSteps(b, spec, cmds[1:], r)
		return r, 0
	}
	c := d.Spec.Template.Spec.Containers[0]
	plain, secrets := chartcheck.Env(c)
	if len(secrets) > 0 {
		e.t.Fatalf("%s: the archiver needs Secrets %v, which the test cluster does not have", b.ID(), secrets)
	}
	replicas := 1
	if d.Spec.Replicas != nil {
		replicas = int(*d.Spec.Replicas)
	}
	grace := 30 * time.Second
	if g := d.Spec.Template.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	vars := map[string]string{}
	env := e.environ()
	for k, v := range plain {
		vars[k] = e.sub(v)
		env = append(env, k+"="+vars[k])
	}
	for i := 0; i < replicas; i++ {
		pargs := make([]string, len(c.Args))
		for j, a := range c.Args {
			pargs[j] = e.sub(a)
			if i > 0 && strings.HasPrefix(a, "--listen=") {
				pargs[j] = "--listen=" + e.listenAddr(fmt.Sprintf("%s-replica-%d", strings.TrimPrefix(a, "--listen=:"), i))
			}
		}
		name := fmt.Sprintf("%s-%d", b.Name, i)
		p := testenv.StartProc(e.t, name, filepath.Join(e.binDir, "kbackup"), env, pargs...)
		r.bg = append(r.bg, &bgProc{cmd: "kbackup " + strings.Join(pargs, " "), args: pargs, proc: p, env: vars})
		r.cmds = append(r.cmds, cmdResult{cmd: "kbackup " + strings.Join(pargs, " ")})
	}
	for _, bg := range r.bg {
		e.waitCaughtUp(bg)
	}
	for _, bg := range r.bg {
		addr := listenOf(bg.args)
		for _, probe := range []string{c.LivenessProbe.HTTPGet.Path, c.ReadinessProbe.HTTPGet.Path} {
			resp, err := http.Get("http://" + addr + probe)
			if err != nil {
				e.t.Fatalf("%s: probe %s: %v", b.ID(), probe, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				e.t.Fatalf("%s: probe %s on %s: %s", b.ID(), probe, addr, resp.Status)
			}
		}
	}
	e.kubectlSteps(b, spec, cmds[1:], r)
	return r, grace
}

// kubectlSteps runs the commands after a helm-install block's helm command
// (kubectl create job, kubectl logs) in the shell session.
func (e *docEnv) kubectlSteps(b doctest.Block, spec blockSpec, cmds []doctest.Command, r *blockRun) {
	e.t.Helper()
	for _, c := range cmds {
		res := e.shell(e.sub(c.Text), 10*time.Minute)
		if want := spec.codes[len(r.cmds)]; res.code != want {
			e.t.Fatalf("%s line %d: %s\nexit %d, want %d\nstdout:\n%s\nstderr:\n%s", b.ID(), c.Line, res.cmd, res.code, want, res.stdout, res.stderr)
		}
		r.cmds = append(r.cmds, res)
	}
}

// helmInstall is a parsed helm install or upgrade command.
type helmInstall struct {
	release, chart, ns string
	files              []string // values files, as the docs name them
	valueArgs          []string // --values/--set-file arguments for helm template, in order
}

// parseHelmInstall reads `helm install RELEASE CHART` or `helm upgrade
// [--install] RELEASE CHART` with `-n NS`, `-f FILE` and `--set-file
// KEY=PATH` (PATH a documented placeholder path).
func parseHelmInstall(e *docEnv, b doctest.Block, args []string) helmInstall {
	e.t.Helper()
	if len(args) < 2 || args[0] != "helm" || (args[1] != "install" && args[1] != "upgrade") {
		e.t.Fatalf("%s: not a helm install or upgrade: %q", b.ID(), args)
	}
	rest := args[2:]
	if args[1] == "upgrade" && len(rest) > 0 && rest[0] == "--install" {
		rest = rest[1:]
	}
	if len(rest) < 2 {
		e.t.Fatalf("%s: want RELEASE CHART: %q", b.ID(), args)
	}
	hi := helmInstall{release: rest[0], chart: rest[1], ns: "default"}
	for i := 2; i < len(rest); i++ {
		switch a := rest[i]; {
		case (a == "-n" || a == "--namespace") && i+1 < len(rest):
			hi.ns, i = rest[i+1], i+1
		case (a == "-f" || a == "--values") && i+1 < len(rest):
			hi.files = append(hi.files, rest[i+1])
			hi.valueArgs = append(hi.valueArgs, "--values", filepath.Join(e.root, rest[i+1]))
			i++
		case a == "--set-file" && i+1 < len(rest):
			hi.valueArgs = append(hi.valueArgs, "--set-file", e.sub(rest[i+1]))
			i++
		default:
			e.t.Fatalf("%s: the suite does not know helm's %q", b.ID(), a)
		}
	}
	return hi
}

var listenFlag = regexp.MustCompile(`^--listen=(.+)$`)

// listenOf returns the --listen address of a process's args.
func listenOf(args []string) string {
	for _, a := range args {
		if m := listenFlag.FindStringSubmatch(a); m != nil {
			return m[1]
		}
	}
	return ""
}
