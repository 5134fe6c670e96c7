package main

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// buildBinary builds the kbackup binary as make image does (static,
// trimmed paths, stripped) with version, or takes KBACKUP_IMAGE_BINARY
// (built with KBACKUP_IMAGE_VERSION) when make deploy-check has built one.
func buildBinary(t *testing.T) (bin, version string) {
	t.Helper()
	if b := os.Getenv("KBACKUP_IMAGE_BINARY"); b != "" {
		return b, os.Getenv("KBACKUP_IMAGE_VERSION")
	}
	version = "v0.0.0-imagetest"
	bin = filepath.Join(t.TempDir(), "kbackup")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags",
		"-s -w -X github.com/kbackup/kbackup/cmd/kbackup/cli.Version="+version, "-o", bin, "github.com/kbackup/kbackup/cmd/kbackup")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin, version
}

// TestImage builds the image twice into OCI layouts and tarballs, checks
// that both are byte-identical (reproducible), that a third build with
// another SOURCE_DATE_EPOCH differs only by time, and verifies the image
// read back from the layout: config, contents, and `version` run from the
// binary extracted from its layer.
func TestImage(t *testing.T) {
	bin, version := buildBinary(t)
	dir := t.TempDir()
	build := func(name string, created time.Time) (layoutDir, tarPath string) {
		t.Helper()
		o := Options{Binary: bin, CACerts: "/etc/ssl/certs/ca-certificates.crt", Version: version, Created: created, Arch: runtime.GOARCH}
		img, err := Build(o)
		if err != nil {
			t.Fatal(err)
		}
		layoutDir, tarPath = filepath.Join(dir, name), filepath.Join(dir, name+".tar")
		if err := WriteLayout(layoutDir, img, version); err != nil {
			t.Fatal(err)
		}
		if err := WriteTarball(tarPath, img, version); err != nil {
			t.Fatal(err)
		}
		return layoutDir, tarPath
	}
	epoch := time.Unix(1764547200, 0)
	l1, t1 := build("one", epoch)
	l2, t2 := build("two", epoch)
	if !sameTree(t, l1, l2) || !sameFile(t, t1, t2) {
		t.Fatal("two builds of the same inputs differ")
	}
	l3, _ := build("three", epoch.Add(time.Hour))
	if sameTree(t, l1, l3) {
		t.Fatal("SOURCE_DATE_EPOCH does not reach the image")
	}

	img, err := ReadLayout(l1)
	if err != nil {
		t.Fatal(err)
	}
	report, err := Verify(context.Background(), img, Want{Version: version, CACerts: "/etc/ssl/certs/ca-certificates.crt"})
	for _, l := range report {
		t.Log(l)
	}
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(report, "\n"), `prints "kbackup `+version+`"`) {
		t.Fatalf("the binary did not run: %q", report)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !cf.Created.Time.Equal(epoch) || cf.Config.Labels["org.opencontainers.image.created"] != "2025-12-01T00:00:00Z" {
		t.Errorf("created %s, label %s", cf.Created, cf.Config.Labels["org.opencontainers.image.created"])
	}
}

// TestVerifyRefuses: a binary that does not print the version, and a
// dynamically linked one, are refused.
func TestVerifyRefuses(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	img, err := Build(Options{Binary: self, CACerts: "/etc/ssl/certs/ca-certificates.crt", Version: "v1.2.3", Created: time.Unix(0, 0), Arch: runtime.GOARCH})
	if err != nil {
		t.Fatal(err)
	}
	// The test binary is not kbackup: either it is dynamically linked (-race
	// needs cgo) or it does not print "kbackup v1.2.3".
	if _, err := Verify(context.Background(), img, Want{Version: "v1.2.3"}); err == nil {
		t.Fatal("an image whose binary is not kbackup passed")
	}
	if _, err := Verify(context.Background(), img, Want{Version: "v9"}); err == nil || !strings.Contains(err.Error(), "version label") {
		t.Fatalf("a wrong version label: %v", err)
	}
	notCA := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notCA, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(Options{Binary: self, CACerts: notCA, Version: "v1"}); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("a CA file without certificates: %v", err)
	}
	if _, err := Build(Options{Binary: self, CACerts: "/etc/ssl/certs/ca-certificates.crt"}); err == nil {
		t.Fatal("an image without version")
	}
}

// TestDockerfile: the Dockerfile builds the same image: a static binary at
// /kbackup from a multi-stage build on scratch, CA certificates at the same
// path, user 65532, the same entrypoint, exposed port and labels.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	for _, want := range []string{
		"CGO_ENABLED=0", "FROM scratch", "AS build",
		"COPY --from=build /etc/ssl/certs/ca-certificates.crt " + caPath,
		"COPY --from=build /out/kbackup " + binaryPath,
		"USER " + user,
		`ENTRYPOINT ["` + binaryPath + `"]`,
		`CMD ["--help"]`,
		"EXPOSE " + strings.TrimSuffix(metrics, "/tcp"),
		"ENV SSL_CERT_FILE=" + caPath,
		"-trimpath", "-s -w",
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	for k := range Labels(Options{Revision: "x"}) {
		if !regexp.MustCompile(`(^|\s)` + regexp.QuoteMeta(k) + `=`).MatchString(df) {
			t.Errorf("Dockerfile lacks label %s", k)
		}
	}
	for _, f := range entries(nil, nil) {
		if f.name == "tmp/" || strings.HasPrefix(binaryPath[1:], f.name) {
			continue
		}
		if !strings.Contains(df, "/"+strings.TrimSuffix(f.name, "/")) {
			t.Errorf("Dockerfile does not install /%s", f.name)
		}
	}
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(x, y)
}

// sameTree reports whether two directories hold the same files with the same bytes.
func sameTree(t *testing.T, a, b string) bool {
	t.Helper()
	files := func(root string) map[string]string {
		m := map[string]string{}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			body, err := os.ReadFile(p)
			m[rel] = string(body)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	x, y := files(a), files(b)
	if len(x) != len(y) {
		return false
	}
	for k, v := range x {
		if y[k] != v {
			return false
		}
	}
	return true
}
