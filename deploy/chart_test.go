package deploy

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/kbackup/kbackup/internal/chartcheck"
	"github.com/kbackup/kbackup/testenv"
)

const (
	chartDir      = "helm/kbackup"
	minimalValues = "helm/kbackup/ci/minimal-values.yaml"
	docsValues    = "examples/values-prod.yaml"
	rulesFile     = "prometheus/kbackup-rules.yaml"
	dashboardFile = "grafana/kbackup.json"
	imageName     = "ghcr.io/kbackup/kbackup"
)

func helm(t *testing.T) string {
	t.Helper()
	p, err := chartcheck.FindHelm()
	if err != nil {
		testenv.Unavailable(t, testenv.ComponentHelm, "%v", err)
	}
	return p
}

func render(t *testing.T, values []string, set ...string) *chartcheck.Rendered {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := chartcheck.Render(ctx, helm(t), chartDir, values, set)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func get[T any](t *testing.T, r *chartcheck.Rendered, kind, name string) T {
	t.Helper()
	o, err := r.Get(kind, name)
	if err != nil {
		t.Fatal(err)
	}
	v, ok := o.(T)
	if !ok {
		t.Fatalf("%s %s decoded as %T", kind, name, o)
	}
	return v
}

func chartAppVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c.AppVersion
}

// TestChartLint: helm lint --strict with the defaults (only the required
// values given) and with the documented values file.
func TestChartLint(t *testing.T) {
	h := helm(t)
	for _, values := range []string{minimalValues, docsValues} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		out, err := chartcheck.Lint(ctx, h, chartDir, []string{values}, nil)
		cancel()
		if err != nil {
			t.Errorf("helm lint with %s: %v", values, err)
			continue
		}
		t.Logf("helm lint %s: %s", values, strings.TrimSpace(out))
	}
}

// TestChartRequiredValues: without brokers or store the chart refuses to
// render, naming the value.
func TestChartRequiredValues(t *testing.T) {
	h := helm(t)
	for _, tc := range []struct {
		set  []string
		want string
	}{
		{nil, "kafka.brokers"},
		{[]string{"kafka.brokers={k:9092}"}, "store.url"},
		{[]string{"kafka.brokers={k:9092}", "store.url=s3://b/p", "image.tag=latest"}, "not latest"},
		{[]string{"kafka.brokers={k:9092}", "store.url=s3://b/p", "snapshot.enabled=true"}, "snapshot.config"},
		{[]string{"kafka.brokers={k:9092}", "store.url=s3://b/p", "restore.enabled=true", "restore.name=x"}, "restore.args"},
	} {
		_, err := chartcheck.Render(context.Background(), h, chartDir, nil, tc.set)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--set %v: %v, want an error naming %s", tc.set, err, tc.want)
		}
	}
}

// TestChartDefaults renders the defaults (only the required values given)
// and checks the archiver's Deployment, PDB and Service.
func TestChartDefaults(t *testing.T) {
	r := render(t, []string{minimalValues})
	var kinds []string
	for _, o := range r.Objects {
		kinds = append(kinds, o.Kind+"/"+o.Name)
	}
	slices.Sort(kinds)
	want := []string{"Deployment/kbackup-archiver", "PodDisruptionBudget/kbackup-archiver", "Service/kbackup-archiver", "ServiceAccount/kbackup"}
	if !slices.Equal(kinds, want) {
		t.Fatalf("rendered %v, want %v", kinds, want)
	}
	d := get[*appsv1.Deployment](t, r, "Deployment", "kbackup-archiver")
	if *d.Spec.Replicas != 2 || d.Spec.Template.Spec.TerminationGracePeriodSeconds == nil || *d.Spec.Template.Spec.TerminationGracePeriodSeconds <= 30 {
		t.Errorf("replicas %d, grace %v: want 2 and more than the 30 s flush", *d.Spec.Replicas, d.Spec.Template.Spec.TerminationGracePeriodSeconds)
	}
	ps := d.Spec.Template.Spec
	if ps.SecurityContext == nil || ps.SecurityContext.RunAsNonRoot == nil || !*ps.SecurityContext.RunAsNonRoot || *ps.SecurityContext.RunAsUser != 65532 {
		t.Errorf("pod security context %+v: want non-root 65532", ps.SecurityContext)
	}
	if len(ps.Containers) != 1 {
		t.Fatalf("%d containers", len(ps.Containers))
	}
	c := ps.Containers[0]
	if c.Image != imageName+":"+chartAppVersion(t) {
		t.Errorf("image %s, want %s:<appVersion %s>", c.Image, imageName, chartAppVersion(t))
	}
	if !slices.Equal(c.Args, []string{"archive", "--listen=:9464", "--group=kbackup-archiver", "--compression=zstd"}) {
		t.Errorf("args %q", c.Args)
	}
	plain, secrets := chartcheck.Env(c)
	if plain["KBACKUP_BROKERS"] != "kafka-0.kafka:9092" || plain["KBACKUP_STORE"] != "s3://kafka-backups/prod" || len(secrets) != 0 {
		t.Errorf("env %v, secrets %v", plain, secrets)
	}
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("container security context %+v", sc)
	}
	for name, p := range map[string]*corev1.Probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != name || p.HTTPGet.Port.String() != "metrics" {
			t.Errorf("probe %s: %+v", name, p)
		}
	}
	if c.StartupProbe == nil || c.StartupProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("startup probe %+v", c.StartupProbe)
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "metrics" || c.Ports[0].ContainerPort != 9464 {
		t.Errorf("ports %+v", c.Ports)
	}
	if c.Resources.Limits.Memory().String() != "1Gi" || c.Resources.Requests.Cpu().String() != "500m" {
		t.Errorf("resources %+v", c.Resources)
	}
	if len(c.VolumeMounts) != 1 || c.VolumeMounts[0].MountPath != "/tmp" {
		t.Errorf("volume mounts %+v: want a writable /tmp only", c.VolumeMounts)
	}

	pdb := get[*policyv1.PodDisruptionBudget](t, r, "PodDisruptionBudget", "kbackup-archiver")
	if pdb.Spec.MaxUnavailable.IntValue() != 1 || !reflect.DeepEqual(pdb.Spec.Selector.MatchLabels, d.Spec.Selector.MatchLabels) {
		t.Errorf("PDB %+v", pdb.Spec)
	}
	svc := get[*corev1.Service](t, r, "Service", "kbackup-archiver")
	if !reflect.DeepEqual(svc.Spec.Selector, d.Spec.Selector.MatchLabels) || svc.Spec.Ports[0].TargetPort.String() != "metrics" {
		t.Errorf("service %+v", svc.Spec)
	}
	for k, v := range d.Spec.Selector.MatchLabels {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("pod labels %v do not match the selector %v", d.Spec.Template.Labels, d.Spec.Selector.MatchLabels)
		}
	}
}

// TestChartDocsValues renders the values file of docs/OPERATIONS.md: IRSA,
// topic selection, ServiceMonitor and PrometheusRule.
func TestChartDocsValues(t *testing.T) {
	r := render(t, []string{docsValues})
	d := get[*appsv1.Deployment](t, r, "Deployment", "kbackup-archiver")
	c := d.Spec.Template.Spec.Containers[0]
	wantArgs := []string{"archive", "--listen=:9464", "--group=kbackup-archiver", `--topics=orders\..*`, "--topics=payments", `--exclude=.*\.tmp`, "--compression=zstd"}
	if !slices.Equal(c.Args, wantArgs) {
		t.Errorf("args %q, want %q", c.Args, wantArgs)
	}
	plain, secrets := chartcheck.Env(c)
	for k, v := range map[string]string{"KBACKUP_BROKERS": "kafka-0.kafka:9092,kafka-1.kafka:9092,kafka-2.kafka:9092",
		"KBACKUP_STORE": "s3://backups/prod-kafka", "KBACKUP_S3_REGION": "eu-west-1", "KBACKUP_LOG_FORMAT": "json"} {
		if plain[k] != v {
			t.Errorf("env %s=%q, want %q", k, plain[k], v)
		}
	}
	if len(secrets) != 0 {
		t.Errorf("secret env %+v", secrets)
	}
	sa := get[*corev1.ServiceAccount](t, r, "ServiceAccount", "kbackup")
	if sa.Annotations["eks.amazonaws.com/role-arn"] == "" || d.Spec.Template.Spec.ServiceAccountName != "kbackup" {
		t.Errorf("service account %+v / %s", sa.Annotations, d.Spec.Template.Spec.ServiceAccountName)
	}
	sm := get[*monitoringv1.ServiceMonitor](t, r, "ServiceMonitor", "kbackup-archiver")
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "metrics" || sm.Spec.Endpoints[0].Path != "/metrics" ||
		!reflect.DeepEqual(sm.Spec.Selector.MatchLabels, d.Spec.Selector.MatchLabels) {
		t.Errorf("ServiceMonitor %+v", sm.Spec)
	}
	pr := get[*monitoringv1.PrometheusRule](t, r, "PrometheusRule", "kbackup")
	checkRuleGroupsAreTheRulesFile(t, pr)
}

// checkRuleGroupsAreTheRulesFile: the chart's PrometheusRule holds exactly
// the groups of deploy/prometheus/kbackup-rules.yaml, the file promtool tests.
func checkRuleGroupsAreTheRulesFile(t *testing.T, pr *monitoringv1.PrometheusRule) {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var file monitoringv1.PrometheusRuleSpec
	if err := yaml.UnmarshalStrict(b, &file); err != nil {
		t.Fatalf("%s as a PrometheusRule spec: %v", rulesFile, err)
	}
	if !reflect.DeepEqual(file, pr.Spec) {
		t.Errorf("the chart's PrometheusRule differs from %s", rulesFile)
	}
	var alerts int
	for _, g := range pr.Spec.Groups {
		alerts += len(g.Rules)
	}
	if alerts < 9 {
		t.Errorf("PrometheusRule has %d alerts", alerts)
	}
}

// TestChartEverything renders every optional part at once: TLS and mutual
// TLS from Secrets, S3 endpoint, SSE and static credentials from a Secret,
// every archiver setting, the snapshot CronJobs with their configuration,
// the restore Job, the dashboard ConfigMap.
func TestChartEverything(t *testing.T) {
	r := render(t, []string{docsValues, "helm/kbackup/ci/everything-values.yaml"})
	d := get[*appsv1.Deployment](t, r, "Deployment", "kbackup-archiver")
	c := d.Spec.Template.Spec.Containers[0]
	for _, a := range []string{"--group=", "--groups=billing|shipping", "--flush-interval=5s", "--segment-bytes=16MiB", "--compression=s2",
		"--max-buffered-bytes=512MiB", "--catalog-interval=10m", "--refresh-interval=1m", "--read-uncommitted", "--writer-id=prod",
		"--retention=30d", "--retention=audit.*=365d", "--retention-bytes=2TiB", "--retention-interval=30m", "--grace=2h",
		"--layout=packed", "--compact-bytes=128MiB", "--compact-after=90m", "--compact-grace=30m"} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("archiver args %q lack %s", c.Args, a)
		}
	}
	plain, secrets := chartcheck.Env(c)
	for k, v := range map[string]string{"KBACKUP_S3_ENDPOINT": "https://minio.storage:9000", "KBACKUP_S3_PATH_STYLE": "true",
		"KBACKUP_S3_SSE": "aws:kms", "KBACKUP_S3_SSE_KMS_KEY_ID": "alias/kbackup", "KBACKUP_TLS": "true",
		"KBACKUP_TLS_SERVER_NAME": "kafka.internal", "KBACKUP_TLS_CA": "/etc/kbackup/tls-ca/ca.crt",
		"KBACKUP_TLS_CERT": "/etc/kbackup/tls-client/tls.crt", "KBACKUP_TLS_KEY": "/etc/kbackup/tls-client/tls.key",
		"KBACKUP_SASL_MECHANISM": "AWS_MSK_IAM", "KBACKUP_AWS_REGION": "eu-west-1", "KBACKUP_CLIENT_ID": "kbackup-prod", "HTTPS_PROXY": "http://proxy:3128"} {
		if plain[k] != v {
			t.Errorf("env %s=%q, want %q", k, plain[k], v)
		}
	}
	if secrets["AWS_ACCESS_KEY_ID"].Name != "kbackup-s3" || secrets["AWS_SECRET_ACCESS_KEY"].Key != "secret-key" {
		t.Errorf("S3 credentials %+v", secrets)
	}
	// SCRAM as docs/OPERATIONS.md describes it: the password from a Secret.
	scram := render(t, []string{docsValues}, "kafka.sasl.mechanism=SCRAM-SHA-512", "kafka.sasl.username=kbackup", "kafka.sasl.passwordSecret.name=kbackup-kafka")
	sc := get[*appsv1.Deployment](t, scram, "Deployment", "kbackup-archiver").Spec.Template.Spec.Containers[0]
	splain, ssecrets := chartcheck.Env(sc)
	if splain["KBACKUP_SASL_MECHANISM"] != "SCRAM-SHA-512" || splain["KBACKUP_SASL_USERNAME"] != "kbackup" ||
		ssecrets["KBACKUP_SASL_PASSWORD"] != (corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "kbackup-kafka"}, Key: "password"}) {
		t.Errorf("SCRAM env %v, secrets %v", splain, ssecrets)
	}
	checkNoInlineSecrets(t, scram)
	checkNoInlineSecrets(t, r)
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	vols := map[string]*corev1.SecretVolumeSource{}
	for _, v := range d.Spec.Template.Spec.Volumes {
		vols[v.Name] = v.Secret
	}
	if mounts["tls-ca"] != "/etc/kbackup/tls-ca" || vols["tls-ca"] == nil || vols["tls-ca"].SecretName != "kafka-ca" ||
		mounts["tls-client"] != "/etc/kbackup/tls-client" || vols["tls-client"] == nil || vols["tls-client"].SecretName != "kbackup-tls" {
		t.Errorf("TLS mounts %v, volumes %v", mounts, vols)
	}

	// The verify CronJob: the archiver's selection, store and connection.
	vj := get[*batchv1.CronJob](t, r, "CronJob", "kbackup-verify")
	vs := vj.Spec.JobTemplate.Spec.Template.Spec
	vc := vs.Containers[0]
	if vj.Spec.Schedule != "45 3 * * *" || vj.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent || *vj.Spec.JobTemplate.Spec.BackoffLimit != 0 ||
		vs.RestartPolicy != corev1.RestartPolicyNever || !strings.HasPrefix(vc.Image, "ghcr.io/kbackup/kbackup:") {
		t.Errorf("verify CronJob %+v", vj.Spec)
	}
	if want := []string{"verify", "--topics=orders\\..*", "--topics=payments", "--exclude=.*\\.tmp", "--lag-allowance=5m", "--concurrency=16", "--gaps"}; !slices.Equal(vc.Args, want) {
		t.Errorf("verify args %q, want %q", vc.Args, want)
	}
	vplain, _ := chartcheck.Env(vc)
	if vplain["KBACKUP_BROKERS"] == "" || vplain["KBACKUP_STORE"] != plain["KBACKUP_STORE"] || vplain["KBACKUP_TLS_CA"] != plain["KBACKUP_TLS_CA"] {
		t.Errorf("verify env %v", vplain)
	}

	run := get[*batchv1.CronJob](t, r, "CronJob", "kbackup-snapshot")
	prune := get[*batchv1.CronJob](t, r, "CronJob", "kbackup-snapshot-prune")
	for _, cj := range []*batchv1.CronJob{run, prune} {
		js := cj.Spec.JobTemplate.Spec
		sc := js.Template.Spec.Containers[0]
		if cj.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent || *js.BackoffLimit != 0 || js.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
			t.Errorf("%s: policy %s, backoff %d, restart %s", cj.Name, cj.Spec.ConcurrencyPolicy, *js.BackoffLimit, js.Template.Spec.RestartPolicy)
		}
		if sc.Image != "registry.internal/kafka-snapshot-hooks:v0.1.0-1" || js.Template.Spec.ServiceAccountName != "kbackup-snapshot" {
			t.Errorf("%s: image %s, service account %s", cj.Name, sc.Image, js.Template.Spec.ServiceAccountName)
		}
		var cfg *corev1.ConfigMapVolumeSource
		for _, v := range js.Template.Spec.Volumes {
			if v.Name == "config" {
				cfg = v.ConfigMap
			}
		}
		mounted := slices.ContainsFunc(sc.VolumeMounts, func(m corev1.VolumeMount) bool {
			return m.Name == "config" && m.MountPath == "/etc/kbackup/snapshot"
		})
		if cfg == nil || cfg.Name != "kbackup-snapshot" || !mounted || !slices.Contains(sc.Args, "--config=/etc/kbackup/snapshot/snapshot.yaml") {
			t.Errorf("%s: config volume %+v mounted %v, args %q", cj.Name, cfg, mounted, sc.Args)
		}
	}
	if run.Spec.Schedule != "15 1 * * *" || !slices.Equal(run.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Args[:2], []string{"snapshot", "run"}) ||
		!slices.Equal(prune.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Args[:3], []string{"snapshot", "prune", "--confirm"}) {
		t.Errorf("snapshot %s %q, prune %q", run.Spec.Schedule, run.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Args,
			prune.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Args)
	}
	cm := get[*corev1.ConfigMap](t, r, "ConfigMap", "kbackup-snapshot")
	if !strings.Contains(cm.Data["snapshot.yaml"], "cluster: prod-events\n") {
		t.Errorf("snapshot config %q", cm.Data["snapshot.yaml"])
	}

	job := get[*batchv1.Job](t, r, "Job", "kbackup-restore-orders-1403")
	jc := job.Spec.Template.Spec.Containers[0]
	wantArgs := []string{"restore", "--topics", "orders", "--rename", "orders=orders-at-1403", "--to", "2026-11-20T14:03:00Z", "--dry-run"}
	if !slices.Equal(jc.Args, wantArgs) || jc.Image != imageName+":"+chartAppVersion(t) {
		t.Errorf("restore args %q image %s, want %q", jc.Args, jc.Image, wantArgs)
	}
	jplain, _ := chartcheck.Env(jc)
	if jplain["KBACKUP_BROKERS"] != "recovery-0.kafka:9092" || jplain["KBACKUP_STORE"] != "s3://backups/prod-kafka" {
		t.Errorf("restore env %v", jplain)
	}
	dash := get[*corev1.ConfigMap](t, r, "ConfigMap", "kbackup-dashboard")
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if dash.Data["kbackup.json"] != strings.TrimRight(string(b), "\n") || dash.Labels["grafana_dashboard"] != "1" {
		t.Errorf("dashboard ConfigMap differs from %s (labels %v)", dashboardFile, dash.Labels)
	}
}

// checkNoInlineSecrets: no rendered container has a credential as a plain
// value, and the chart renders no Secret of its own.
func checkNoInlineSecrets(t *testing.T, r *chartcheck.Rendered) {
	t.Helper()
	if s := r.OfKind("Secret"); len(s) > 0 {
		t.Errorf("the chart rendered Secrets %v: credentials must be references", s)
	}
	for _, o := range r.Objects {
		var pod *corev1.PodSpec
		switch v := o.Obj.(type) {
		case *appsv1.Deployment:
			pod = &v.Spec.Template.Spec
		case *batchv1.Job:
			pod = &v.Spec.Template.Spec
		case *batchv1.CronJob:
			pod = &v.Spec.JobTemplate.Spec.Template.Spec
		default:
			continue
		}
		for _, c := range pod.Containers {
			plain, _ := chartcheck.Env(c)
			for k := range plain {
				if strings.Contains(k, "PASSWORD") || strings.Contains(k, "SECRET") || k == "AWS_ACCESS_KEY_ID" {
					t.Errorf("%s %s: %s is a plain value", o.Kind, o.Name, k)
				}
			}
		}
	}
}
