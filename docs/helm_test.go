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
// installs: `helm template` renders the chart with the block's release,
// namespace and values files (internal/chartcheck decodes every object
// strictly), and every replica of the archiver Deployment runs as a process
// with the container's args and environment, placeholders substituted,
// until caught up. Its probes must answer. It returns the run and the pod's
// termination grace period (how long SIGTERM may take).
func (e *docEnv) runHelmInstall(b doctest.Block) (*blockRun, time.Duration) {
	e.t.Helper()
	cmds := doctest.Commands(b.Text)
	if len(cmds) != 1 {
		e.t.Fatalf("%s: want one helm install command, have %d", b.ID(), len(cmds))
	}
	args, err := doctest.Args(cmds[0].Text)
	if err != nil {
		e.t.Fatalf("%s: %v", b.ID(), err)
	}
	release, chart, ns, files := parseHelmInstall(e, b, args)
	if release != chartcheck.Release || ns != chartcheck.Namespace {
		e.t.Fatalf("%s: release %q namespace %q; chartcheck renders %q in %q", b.ID(), release, ns, chartcheck.Release, chartcheck.Namespace)
	}
	for _, f := range files {
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
	var abs []string
	for _, f := range files {
		abs = append(abs, filepath.Join(e.root, f))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rendered, err := chartcheck.Render(ctx, helm, filepath.Join(e.root, chart), abs, nil)
	if err != nil {
		e.t.Fatalf("%s: %v", b.ID(), err)
	}
	d, err := rendered.Archiver()
	if err != nil {
		e.t.Fatalf("%s: %v", b.ID(), err)
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
	r := &blockRun{block: b}
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
	return r, grace
}

// parseHelmInstall reads `helm install RELEASE CHART [-n NS] [-f FILE]...`.
func parseHelmInstall(e *docEnv, b doctest.Block, args []string) (release, chart, ns string, files []string) {
	e.t.Helper()
	if len(args) < 4 || args[0] != "helm" || args[1] != "install" {
		e.t.Fatalf("%s: not a helm install: %q", b.ID(), args)
	}
	release, chart, ns = args[2], args[3], "default"
	for i := 4; i < len(args); i++ {
		switch a := args[i]; {
		case (a == "-n" || a == "--namespace") && i+1 < len(args):
			ns, i = args[i+1], i+1
		case (a == "-f" || a == "--values") && i+1 < len(args):
			files, i = append(files, args[i+1]), i+1
		default:
			e.t.Fatalf("%s: the suite does not know helm install's %q", b.ID(), a)
		}
	}
	return release, chart, ns, files
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
