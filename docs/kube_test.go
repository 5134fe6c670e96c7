package docs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	"github.com/kbackup/kbackup/internal/chartcheck"
)

// kube is the Kubernetes the examples' `kubectl apply -f -` and `kubectl
// logs job/NAME` talk to (the kubectl shim, hosts_test.go): a Job's
// manifest is decoded strictly into batch/v1, and its pod runs as the
// kubelet would run it here: the container's args (the image's entrypoint
// is kbackup) with its environment, placeholders substituted, to
// completion. Its output is what `kubectl logs` prints.
type kube struct {
	e       *docEnv
	mu      sync.Mutex
	jobs    map[string]*kubeJob          // by namespace/name
	objects map[string]chartcheck.Object // applied: by kind/namespace/name
}

// applyAll records a release's rendered objects and reports whether its
// Deployments changed (new, or another pod spec: Kubernetes then rolls
// their pods).
func (k *kube) applyAll(ns string, objs []chartcheck.Object) (deploymentsChanged bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.objects == nil {
		k.objects = map[string]chartcheck.Object{}
	}
	for _, o := range objs {
		key := o.Kind + "/" + ns + "/" + o.Name
		if d, ok := o.Obj.(*appsv1.Deployment); ok {
			old, had := k.objects[key]
			if !had || !equality.Semantic.DeepEqual(old.Obj.(*appsv1.Deployment).Spec, d.Spec) {
				deploymentsChanged = true
			}
		}
		k.objects[key] = o
	}
	return deploymentsChanged
}

type kubeJob struct {
	job  *batchv1.Job
	args []string
	logs string
	code int
}

func (k *kube) kubectl(in hostCmd) hostResult {
	ns, args := "default", []string{}
	for i := 0; i < len(in.Args); i++ {
		switch a := in.Args[i]; {
		case (a == "-n" || a == "--namespace") && i+1 < len(in.Args):
			ns, i = in.Args[i+1], i+1
		case strings.HasPrefix(a, "--namespace="):
			ns = strings.TrimPrefix(a, "--namespace=")
		default:
			args = append(args, a)
		}
	}
	switch {
	case len(args) == 3 && args[0] == "apply" && args[1] == "-f" && args[2] == "-":
		return k.apply(ns, in.Stdin)
	case len(args) == 4 && args[0] == "create" && args[1] == "job":
		var from, name string
		for _, a := range args[2:] {
			if f, ok := strings.CutPrefix(a, "--from=cronjob/"); ok {
				from = f
			} else if !strings.HasPrefix(a, "-") {
				name = a
			}
		}
		if from == "" || name == "" {
			break
		}
		return k.jobFromCronJob(ns, from, name)
	case len(args) >= 2 && args[0] == "logs" && strings.HasPrefix(args[len(args)-1], "job/") && (len(args) == 2 || len(args) == 3 && args[1] == "-f"):
		k.mu.Lock()
		j := k.jobs[ns+"/"+strings.TrimPrefix(args[len(args)-1], "job/")]
		k.mu.Unlock()
		if j == nil {
			return fail(1, "error from server (NotFound): jobs.batch %q not found", strings.TrimPrefix(args[len(args)-1], "job/"))
		}
		return hostResult{Stdout: j.logs}
	}
	return fail(1, "kubectl (test shim): want apply -f -, create job NAME --from=cronjob/CRONJOB or logs [-f] job/NAME, have %q", in.Args)
}

// apply creates the Jobs of a manifest stream and runs each to completion.
func (k *kube) apply(ns, manifests string) hostResult {
	objs, err := chartcheck.Decode([]byte(manifests))
	if err != nil {
		return fail(1, "error: %v", err)
	}
	var out strings.Builder
	for _, o := range objs {
		job, ok := o.Obj.(*batchv1.Job)
		if !ok {
			return fail(1, "kubectl (test shim): applies Jobs only, not %s %s", o.Kind, o.Name)
		}
		if job.Namespace != "" && job.Namespace != ns {
			ns = job.Namespace
		}
		j, err := k.run(job)
		if err != nil {
			return fail(1, "kubectl (test shim): job %s: %v", job.Name, err)
		}
		k.mu.Lock()
		if k.jobs == nil {
			k.jobs = map[string]*kubeJob{}
		}
		k.jobs[ns+"/"+job.Name] = j
		k.mu.Unlock()
		fmt.Fprintf(&out, "job.batch/%s created\n", job.Name)
	}
	return hostResult{Stdout: out.String()}
}

// jobFromCronJob is `kubectl create job NAME --from=cronjob/CRONJOB`: the
// CronJob's job template runs now, as the Job NAME.
func (k *kube) jobFromCronJob(ns, cronJob, name string) hostResult {
	k.mu.Lock()
	o, ok := k.objects["CronJob/"+ns+"/"+cronJob]
	k.mu.Unlock()
	if !ok {
		return fail(1, "error: from must be an existing cronjob: cronjobs.batch %q not found", cronJob)
	}
	cj := o.Obj.(*batchv1.CronJob)
	job := &batchv1.Job{Spec: cj.Spec.JobTemplate.Spec}
	job.Name, job.Namespace = name, ns
	j, err := k.run(job)
	if err != nil {
		return fail(1, "kubectl (test shim): job %s: %v", name, err)
	}
	k.mu.Lock()
	if k.jobs == nil {
		k.jobs = map[string]*kubeJob{}
	}
	k.jobs[ns+"/"+name] = j
	k.mu.Unlock()
	return hostResult{Stdout: fmt.Sprintf("job.batch/%s created\n", name)}
}

// mount writes the ConfigMap volumes of a pod at their mountPaths and makes
// its emptyDir ones (under the suite's root, where the local-path
// placeholders point).
func (k *kube) mount(ns string, pod corev1.PodSpec, c corev1.Container) error {
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	for _, m := range c.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			return fmt.Errorf("volumeMount %s: no such volume", m.Name)
		}
		if v.EmptyDir != nil { // scratch space: a directory
			if err := os.MkdirAll(filepath.Join(k.e.tmp, m.MountPath), 0o755); err != nil {
				return err
			}
			continue
		}
		if v.ConfigMap == nil {
			return fmt.Errorf("volume %s: only ConfigMap and emptyDir volumes are supported here", m.Name)
		}
		k.mu.Lock()
		o, ok := k.objects["ConfigMap/"+ns+"/"+v.ConfigMap.Name]
		k.mu.Unlock()
		if !ok {
			return fmt.Errorf("volume %s: ConfigMap %s not found", m.Name, v.ConfigMap.Name)
		}
		data := o.Obj.(*corev1.ConfigMap).Data
		files := map[string]string{}
		for key, val := range data {
			files[key] = val
		}
		if len(v.ConfigMap.Items) > 0 {
			files = map[string]string{}
			for _, it := range v.ConfigMap.Items {
				files[it.Path] = data[it.Key]
			}
		}
		dir := filepath.Join(k.e.tmp, m.MountPath)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for name, val := range files {
			if m.SubPath != "" && m.SubPath != name {
				continue
			}
			dst := filepath.Join(dir, name)
			if m.SubPath != "" {
				dst = dir // the file itself is mounted at mountPath
				if err := os.Remove(dir); err != nil {
					return err
				}
			}
			if err := os.WriteFile(dst, []byte(val), 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// run runs a Job's one container to completion.
func (k *kube) run(job *batchv1.Job) (*kubeJob, error) {
	e := k.e
	cs := job.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		return nil, fmt.Errorf("%d containers, want 1", len(cs))
	}
	c := cs[0]
	if len(c.Command) > 0 && !(len(c.Command) == 1 && c.Command[0] == "/kbackup") {
		return nil, fmt.Errorf("command %q: the image's entrypoint is /kbackup", c.Command)
	}
	// kbackup's image, or one built FROM it (the snapshot hooks'), pinned.
	if _, tag, ok := strings.Cut(c.Image, ":"); !ok || tag == "" || tag == "latest" {
		return nil, fmt.Errorf("image %q has no pinned tag", c.Image)
	}
	if err := k.mount(job.Namespace, job.Spec.Template.Spec, c); err != nil {
		return nil, err
	}
	plain, secrets := chartcheck.Env(c)
	if len(secrets) > 0 {
		return nil, fmt.Errorf("needs Secrets %v, which the test cluster does not have", secrets)
	}
	env := e.environ()
	for name, v := range plain {
		env = append(env, name+"="+e.sub(v))
	}
	args := make([]string, len(c.Args))
	for i, a := range c.Args {
		args[i] = e.sub(a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(e.binDir, "kbackup"), args...)
	cmd.Dir, cmd.Env = filepath.Join(e.tmp, "tmp"), env
	b, err := cmd.CombinedOutput()
	j := &kubeJob{job: job, args: args, logs: string(b)}
	if ee, ok := err.(*exec.ExitError); ok {
		j.code = ee.ExitCode()
	} else if err != nil {
		return nil, err
	}
	return j, nil
}

// job returns the Job kubectl applied under namespace/name.
func (k *kube) job(ns, name string) *kubeJob {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.jobs[ns+"/"+name]
}

// helmOnPath puts the installed helm next to kbackup in the commands' PATH.
func (e *docEnv) helmOnPath() {
	e.t.Helper()
	helm, err := chartcheck.FindHelm()
	if err != nil {
		e.t.Fatalf("helm: %v", err)
	}
	link := filepath.Join(e.binDir, "helm")
	if _, err := os.Lstat(link); err == nil {
		return
	}
	if err := os.Symlink(helm, link); err != nil {
		e.t.Fatal(err)
	}
}
