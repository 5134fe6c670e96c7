package deploy

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kbackup/kbackup/internal/chartcheck"
	"github.com/kbackup/kbackup/internal/doctest"
)

// docBlock returns the text of the block marked kind and name in a
// Markdown file (package internal/doctest, as the docs-as-tests suite reads it).
func docBlock(t *testing.T, file, kind, name string) string {
	t.Helper()
	blocks, err := doctest.Extract(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		if b.Name == name && b.Kind == kind {
			return b.Text
		}
	}
	t.Fatalf("%s: no %s block named %s", file, kind, name)
	return ""
}

// TestDocsValuesFile: the values file shown in docs/OPERATIONS.md is
// deploy/examples/values-prod.yaml byte for byte (TestChartDocsValues
// renders it), and the documented helm install uses it with the release
// and namespace chartcheck renders with.
func TestDocsValuesFile(t *testing.T) {
	block := docBlock(t, "../docs/OPERATIONS.md", "helm-values", "archiver-values")
	file, err := os.ReadFile(docsValues)
	if err != nil {
		t.Fatal(err)
	}
	if block != string(file) {
		t.Errorf("docs/OPERATIONS.md's archiver-values block differs from deploy/%s:\n--- docs\n%s--- file\n%s", docsValues, block, file)
	}
	install := strings.Fields(docBlock(t, "../docs/OPERATIONS.md", "helm-install", "archiver-install"))
	want := []string{"helm", "install", chartcheck.Release, "deploy/" + chartDir, "-n", chartcheck.Namespace, "-f", "deploy/" + docsValues}
	if !slices.Equal(install, want) {
		t.Errorf("documented install %q, want %q", install, want)
	}
}

// TestDocsRestoreJob renders the restore Job exactly as docs/OPERATIONS.md
// shows it (helm template ... --show-only templates/restore-job.yaml).
func TestDocsRestoreJob(t *testing.T) {
	h := helm(t)
	cmds := doctest.Commands(docBlock(t, "../docs/OPERATIONS.md", "sh", "restore-job"))
	if len(cmds) == 0 {
		t.Fatal("no command in the restore Job block")
	}
	helmCmd, _, piped := strings.Cut(cmds[0].Text, "| kubectl apply -f -")
	if !piped {
		t.Fatalf("the restore Job is not applied with kubectl: %q", cmds[0].Text)
	}
	args, err := doctest.Args(helmCmd)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, h, args[1:]...)
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%q: %v", args, err)
	}
	objs, err := chartcheck.Decode(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || objs[0].Kind != "Job" || objs[0].Name != "kbackup-restore-orders-eu-1403" {
		t.Fatalf("rendered %+v, want the Job kbackup-restore-orders-eu-1403", objs)
	}
}

// TestOneImageName: every image reference to kbackup in the repository is
// ghcr.io/kbackup/kbackup with a version tag; the names the issue found
// (a registry.example.com image, a :latest tag) are gone.
func TestOneImageName(t *testing.T) {
	out, err := exec.Command("git", "-C", "..", "ls-files", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	// Built by concatenation so that this file does not match itself.
	tagged := regexp.MustCompile(`[\w.:/-]*/kbackup` + `:([\w.$-]+)`)
	banned := []string{"registry.example.com/" + "kbackup", "kbackup" + ":latest"}
	var refs int
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		path := sc.Text()
		if strings.HasSuffix(path, "go.sum") || strings.HasPrefix(path, "bin/") {
			continue
		}
		b, err := os.ReadFile(filepath.Join("..", path))
		if err != nil || bytes.IndexByte(b, 0) >= 0 {
			continue // deleted, or binary
		}
		for i, line := range strings.Split(string(b), "\n") {
			for _, bad := range banned {
				if strings.Contains(line, bad) {
					t.Errorf("%s:%d: %s", path, i+1, strings.TrimSpace(line))
				}
			}
			for _, m := range tagged.FindAllStringSubmatch(line, -1) {
				refs++
				if !strings.HasPrefix(m[0], imageName+":") {
					t.Errorf("%s:%d: image %s, want %s", path, i+1, m[0], imageName)
				}
				if m[1] == "latest" {
					t.Errorf("%s:%d: %s: tag with a version", path, i+1, m[0])
				}
			}
		}
	}
	if refs < 3 {
		t.Errorf("found %d tagged image references; the scan is broken", refs)
	}
	t.Logf("%d tagged image references, all %s", refs, imageName)
}
