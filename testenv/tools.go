package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Components for the deploy checks (KBACKUP_TEST_REQUIRE): the helm and
// promtool binaries that testenv/install.sh builds into the cache.
const (
	ComponentHelm     = "helm"
	ComponentPromtool = "promtool"
)

// ToolEnv is the environment variable naming a tool's binary explicitly:
// KBACKUP_HELM_BIN for "helm", KBACKUP_PROMTOOL_BIN for "promtool".
func ToolEnv(name string) string {
	return "KBACKUP_" + strings.ToUpper(name) + "_BIN"
}

// FindTool returns the path of a tool binary: ToolEnv(name) if set (it must
// exist), else $KBACKUP_CACHE/bin/<name> (where testenv/install.sh puts it),
// else <name> on PATH. The error says how to install it.
func FindTool(name string) (string, error) {
	if p := os.Getenv(ToolEnv(name)); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", ToolEnv(name), p, err)
		}
		return p, nil
	}
	if p := filepath.Join(CacheDir(), "bin", name); isExecutable(p) {
		return p, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s not found in %s, %s or PATH (run testenv/install.sh %s, or make testenv-install)",
		name, ToolEnv(name), filepath.Join(CacheDir(), "bin"), name)
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
