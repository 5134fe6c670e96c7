// Package chartcheck renders kbackup's Helm chart (deploy/helm/kbackup) with
// the real helm binary and decodes every rendered object strictly into its
// Kubernetes API type, so that tests (the chart's own, and the docs-as-tests
// suite that runs the documented values file) work on typed objects instead
// of text.
//
// Use:
//
//	helm, err := chartcheck.FindHelm()          // KBACKUP_HELM_BIN, $KBACKUP_CACHE/bin/helm, PATH
//	r, err := chartcheck.Render(ctx, helm, chartcheck.ChartDir(repoRoot),
//		[]string{"deploy/examples/values-prod.yaml"}, []string{"archiver.replicas=1"})
//	d, err := r.Archiver()                       // the archiver *appsv1.Deployment
//	c := d.Spec.Template.Spec.Containers[0]      // c.Args: ["archive", "--listen=:9464", ...]
//	plain, secrets := chartcheck.Env(c)         // KBACKUP_BROKERS=..., KBACKUP_SASL_PASSWORD -> Secret ref
//
// Render runs `helm template` with release name Release in namespace
// Namespace (as docs/OPERATIONS.md's `helm install` does). Strict decoding
// means: a YAML document that is not valid YAML, has a duplicate key, has a
// field its API type does not define, or whose apiVersion/kind is not one of
// the types the chart may render (core/v1, apps/v1, batch/v1, policy/v1 and
// prometheus-operator's monitoring.coreos.com/v1) is an error naming the
// template it came from. Tests call FindHelm and treat its error as
// "helm unavailable" (testenv.Unavailable with testenv.ComponentHelm).
package chartcheck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"sigs.k8s.io/yaml"

	"github.com/kbackup/kbackup/testenv"
)

// Release and Namespace are the release name and namespace Render and Lint
// use: those of `helm install kbackup deploy/helm/kbackup -n kafka` in
// docs/OPERATIONS.md. Object names are then "kbackup-archiver" etc.
const (
	Release   = "kbackup"
	Namespace = "kafka"
)

// ChartDir returns the chart's directory in a checkout rooted at repoRoot.
func ChartDir(repoRoot string) string { return filepath.Join(repoRoot, "deploy", "helm", "kbackup") }

// FindHelm returns the helm binary: $KBACKUP_HELM_BIN, else
// $KBACKUP_CACHE/bin/helm (testenv/install.sh helm builds it there), else
// helm on PATH.
func FindHelm() (string, error) { return testenv.FindTool(testenv.ComponentHelm) }

// Object is one rendered Kubernetes object.
type Object struct {
	// Source is the template that rendered it ("kbackup/templates/archiver-deployment.yaml").
	Source string
	// Kind and Name are the object's kind and metadata.name.
	Kind, Name string
	// Obj is the typed object: *appsv1.Deployment, *corev1.Service,
	// *monitoringv1.PrometheusRule, ...
	Obj runtime.Object
}

// Rendered is what Render returns: every object of the chart, in helm's order.
type Rendered struct {
	Objects []Object
	// YAML is helm template's output as it was decoded.
	YAML []byte
}

var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme,
		policyv1.AddToScheme, monitoringv1.AddToScheme} {
		utilruntime.Must(add(s))
	}
	return s
}()

var strictDecoder = serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()

// Render runs `helm template` on chartDir with the values files (in order,
// later ones win) and --set expressions, then decodes every object strictly
// (see the package comment). A template failure (a required value missing)
// is returned with helm's message.
func Render(ctx context.Context, helmBin, chartDir string, valuesFiles, set []string) (*Rendered, error) {
	return RenderArgs(ctx, helmBin, chartDir, valueArgs(valuesFiles, set))
}

// RenderArgs is Render with helm's own value arguments (--values FILE,
// --set, --set-file KEY=PATH, --set-json ...), in order.
func RenderArgs(ctx context.Context, helmBin, chartDir string, valueArgs []string) (*Rendered, error) {
	args := append([]string{"template", Release, chartDir, "--namespace", Namespace}, valueArgs...)
	out, err := run(ctx, helmBin, args...)
	if err != nil {
		return nil, err
	}
	objs, err := Decode(out)
	if err != nil {
		return nil, err
	}
	return &Rendered{Objects: objs, YAML: out}, nil
}

// Lint runs `helm lint --strict` on chartDir with the values files and --set
// expressions and returns its output; a lint error or warning is an error.
func Lint(ctx context.Context, helmBin, chartDir string, valuesFiles, set []string) (string, error) {
	args := append([]string{"lint", "--strict", chartDir, "--namespace", Namespace}, valueArgs(valuesFiles, set)...)
	out, err := run(ctx, helmBin, args...)
	return string(out), err
}

func valueArgs(valuesFiles, set []string) []string {
	var args []string
	for _, f := range valuesFiles {
		args = append(args, "--values", f)
	}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	return args
}

func run(ctx context.Context, bin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String() + "\n" + stdout.String())
		return nil, fmt.Errorf("%s %s: %w\n%s", filepath.Base(bin), strings.Join(args, " "), err, msg)
	}
	return stdout.Bytes(), nil
}

// Decode splits a multi-document YAML stream as `helm template` prints it
// and decodes every non-empty document strictly into its typed object.
func Decode(stream []byte) ([]Object, error) {
	var objs []Object
	for i, doc := range splitDocuments(stream) {
		src := fmt.Sprintf("document %d", i+1)
		body := &strings.Builder{}
		for _, line := range strings.Split(doc, "\n") {
			if s, ok := strings.CutPrefix(line, "# Source: "); ok {
				src = s
			}
			if strings.TrimSpace(line) != "" && !strings.HasPrefix(strings.TrimSpace(line), "#") {
				body.WriteString(line)
				body.WriteString("\n")
			}
		}
		if body.Len() == 0 {
			continue
		}
		js, err := yaml.YAMLToJSONStrict([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", src, err)
		}
		obj, gvk, err := strictDecoder.Decode(js, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", src, err)
		}
		meta, ok := obj.(interface{ GetName() string })
		if !ok {
			return nil, fmt.Errorf("%s: %s has no metadata", src, gvk.Kind)
		}
		if meta.GetName() == "" {
			return nil, fmt.Errorf("%s: %s without metadata.name", src, gvk.Kind)
		}
		objs = append(objs, Object{Source: src, Kind: gvk.Kind, Name: meta.GetName(), Obj: obj})
	}
	if len(objs) == 0 {
		return nil, errors.New("helm template rendered no objects")
	}
	return objs, nil
}

// splitDocuments splits a YAML stream at lines that are exactly "---".
func splitDocuments(stream []byte) []string {
	var docs []string
	var cur strings.Builder
	for _, line := range strings.SplitAfter(string(stream), "\n") {
		if strings.TrimRight(line, "\r\n") == "---" {
			docs = append(docs, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteString(line)
	}
	return append(docs, cur.String())
}

// OfKind returns the objects of one kind ("Deployment", "CronJob", ...).
func (r *Rendered) OfKind(kind string) []Object {
	var out []Object
	for _, o := range r.Objects {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// Get returns the object of kind and name, or an error listing what was rendered.
func (r *Rendered) Get(kind, name string) (runtime.Object, error) {
	var have []string
	for _, o := range r.Objects {
		if o.Kind == kind && o.Name == name {
			return o.Obj, nil
		}
		have = append(have, o.Kind+"/"+o.Name)
	}
	return nil, fmt.Errorf("no %s %q rendered (have %s)", kind, name, strings.Join(have, ", "))
}

// Archiver returns the archiver Deployment (Release + "-archiver").
func (r *Rendered) Archiver() (*appsv1.Deployment, error) {
	o, err := r.Get("Deployment", Release+"-archiver")
	if err != nil {
		return nil, err
	}
	return o.(*appsv1.Deployment), nil
}

// Env splits a container's environment into plain values and Secret
// references (name -> Secret and key). A variable taken from elsewhere
// (a ConfigMap, a field) is in neither map.
func Env(c corev1.Container) (plain map[string]string, secrets map[string]corev1.SecretKeySelector) {
	plain, secrets = map[string]string{}, map[string]corev1.SecretKeySelector{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			plain[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			secrets[e.Name] = *e.ValueFrom.SecretKeyRef
		}
	}
	return plain, secrets
}
