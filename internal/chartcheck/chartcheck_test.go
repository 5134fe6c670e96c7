package chartcheck

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

const deployment = `---
# Source: kbackup/templates/archiver-deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: kbackup-archiver
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers:
        - name: archiver
          image: ghcr.io/kbackup/kbackup:v1
          args: [archive]
          env:
            - {name: KBACKUP_BROKERS, value: "k:9092"}
            - name: KBACKUP_SASL_PASSWORD
              valueFrom: {secretKeyRef: {name: s, key: password}}
`

// TestDecodeStrict: typed objects come back; an unknown field, a duplicate
// key, an unknown kind, a nameless object and invalid YAML are errors naming
// the template.
func TestDecodeStrict(t *testing.T) {
	objs, err := Decode([]byte(deployment + "---\n# Source: empty.yaml\n---\napiVersion: v1\nkind: Service\nmetadata: {name: svc}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 || objs[0].Kind != "Deployment" || objs[0].Source != "kbackup/templates/archiver-deployment.yaml" || objs[1].Kind != "Service" {
		t.Fatalf("decoded %+v", objs)
	}
	d, ok := objs[0].Obj.(*appsv1.Deployment)
	if !ok {
		t.Fatalf("%T", objs[0].Obj)
	}
	plain, secrets := Env(d.Spec.Template.Spec.Containers[0])
	if plain["KBACKUP_BROKERS"] != "k:9092" || secrets["KBACKUP_SASL_PASSWORD"] != (corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "password"}) {
		t.Errorf("env %v %v", plain, secrets)
	}
	r := &Rendered{Objects: objs}
	if a, err := r.Archiver(); err != nil || a != d {
		t.Errorf("Archiver: %v", err)
	}
	if _, err := r.Get("Job", "x"); err == nil || !strings.Contains(err.Error(), "Deployment/kbackup-archiver") {
		t.Errorf("Get of a missing object: %v", err)
	}

	for name, tc := range map[string]struct{ doc, want string }{
		"unknown field":  {strings.Replace(deployment, "args: [archive]", "args: [archive]\n          commmand: [x]", 1), "commmand"},
		"misplaced":      {strings.Replace(deployment, "  replicas", "  replicas", 1) + "  replica: 2\n", "replica"},
		"duplicate key":  {strings.Replace(deployment, "args: [archive]", "args: [archive]\n          args: [x]", 1), "args"},
		"unknown kind":   {"# Source: x.yaml\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n", "Widget"},
		"no name":        {"# Source: x.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", "metadata.name"},
		"invalid yaml":   {"# Source: x.yaml\napiVersion: v1\nkind: [\n", "x.yaml"},
		"wrong type":     {strings.Replace(deployment, "args: [archive]", "args: archive", 1), "archiver-deployment.yaml"},
		"nothing at all": {"---\n# Source: a.yaml\n", "no objects"},
	} {
		_, err := Decode([]byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, tc.want)
		}
	}
}
