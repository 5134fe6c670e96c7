package main

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Want is what Verify expects of an image.
type Want struct {
	// Version the binary prints and the version label carries.
	Version string
	// CACerts, when set, is the bundle the image must carry byte for byte.
	CACerts string
}

// Verify checks an image's manifest, config and contents, extracts the
// binary, checks it is statically linked and runs `version` with it (when
// the image's architecture is this machine's: there is no container runtime
// here, so the binary runs directly). It returns one line per check.
func Verify(ctx context.Context, img v1.Image, w Want) ([]string, error) {
	var report []string
	ok := func(format string, args ...any) { report = append(report, fmt.Sprintf(format, args...)) }

	mt, err := img.MediaType()
	if err != nil || mt != types.OCIManifestSchema1 {
		return report, fmt.Errorf("manifest media type %q (%v), want %s", mt, err, types.OCIManifestSchema1)
	}
	m, err := img.Manifest()
	if err != nil {
		return report, fmt.Errorf("manifest: %w", err)
	}
	if m.Config.MediaType != types.OCIConfigJSON || len(m.Layers) != 1 || m.Layers[0].MediaType != types.OCILayer {
		return report, fmt.Errorf("manifest: config %s, %d layers: want an OCI config and one OCI gzip layer", m.Config.MediaType, len(m.Layers))
	}
	digest, err := img.Digest()
	if err != nil {
		return report, fmt.Errorf("digest: %w", err)
	}
	ok("manifest: OCI, one gzip layer, digest %s", digest)

	cf, err := img.ConfigFile()
	if err != nil {
		return report, fmt.Errorf("config: %w", err)
	}
	c := cf.Config
	switch {
	case cf.OS != "linux":
		return report, fmt.Errorf("config: os %q, want linux", cf.OS)
	case !slices.Equal(c.Entrypoint, []string{binaryPath}):
		return report, fmt.Errorf("config: entrypoint %q, want [%s]", c.Entrypoint, binaryPath)
	case c.User != user:
		return report, fmt.Errorf("config: user %q, want %s (non-root)", c.User, user)
	case !slices.Contains(c.Env, "SSL_CERT_FILE="+caPath):
		return report, fmt.Errorf("config: env %q lacks SSL_CERT_FILE=%s", c.Env, caPath)
	case c.Labels["org.opencontainers.image.version"] != w.Version:
		return report, fmt.Errorf("config: version label %q, want %q", c.Labels["org.opencontainers.image.version"], w.Version)
	}
	for k, v := range Labels(Options{Version: w.Version, Created: cf.Created.Time}) {
		if c.Labels[k] != v {
			return report, fmt.Errorf("config: label %s=%q, want %q", k, c.Labels[k], v)
		}
	}
	if _, exposed := c.ExposedPorts[metrics]; !exposed {
		return report, fmt.Errorf("config: %s not exposed", metrics)
	}
	ok("config: %s/%s, entrypoint %q, user %s, labels %d (version %s), created %s", cf.OS, cf.Architecture,
		c.Entrypoint, c.User, len(c.Labels), w.Version, cf.Created.UTC().Format(time.RFC3339))

	layers, err := img.Layers()
	if err != nil {
		return report, fmt.Errorf("layers: %w", err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		return report, fmt.Errorf("layer: %w", err)
	}
	defer rc.Close()
	contents := map[string]*tar.Header{}
	bodies := map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return report, fmt.Errorf("layer: %w", err)
		}
		if _, dup := contents[h.Name]; dup {
			return report, fmt.Errorf("layer: %s twice", h.Name)
		}
		contents[h.Name] = h
		if h.Typeflag == tar.TypeReg {
			if bodies[h.Name], err = io.ReadAll(tr); err != nil {
				return report, fmt.Errorf("layer %s: %w", h.Name, err)
			}
		}
	}
	fs := expectedEntries()
	var names []string
	for n := range contents {
		names = append(names, n)
	}
	slices.Sort(names)
	if !slices.Equal(names, fs) {
		return report, fmt.Errorf("layer: entries %q, want exactly %q (no shell, nothing else)", names, fs)
	}
	bin := contents[binaryPath[1:]]
	if bin.Mode != 0o755 || bin.Uid != 0 {
		return report, fmt.Errorf("layer: %s mode %o uid %d, want 0755 owned by root", binaryPath, bin.Mode, bin.Uid)
	}
	if !strings.Contains(string(bodies["etc/passwd"]), "nonroot:x:65532:65532:") {
		return report, errors.New("layer: /etc/passwd lacks the nonroot user 65532")
	}
	ca := bodies[caPath[1:]]
	if n := bytes.Count(ca, []byte("-----BEGIN CERTIFICATE-----")); n == 0 {
		return report, fmt.Errorf("layer: %s holds no certificate", caPath)
	}
	if w.CACerts != "" {
		want, err := os.ReadFile(w.CACerts)
		if err != nil {
			return report, fmt.Errorf("CA certificates: %w", err)
		}
		if !bytes.Equal(ca, want) {
			return report, fmt.Errorf("layer: %s differs from %s", caPath, w.CACerts)
		}
	}
	ok("contents: %d entries (%s), %d CA certificates, %s %d bytes", len(names), strings.Join(names, " "),
		bytes.Count(ca, []byte("-----BEGIN CERTIFICATE-----")), binaryPath, len(bodies[binaryPath[1:]]))

	dir, err := os.MkdirTemp("", "kbackup-image-verify-")
	if err != nil {
		return report, fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	exe := filepath.Join(dir, "kbackup")
	if err := os.WriteFile(exe, bodies[binaryPath[1:]], 0o755); err != nil {
		return report, fmt.Errorf("extract binary: %w", err)
	}
	if err := checkStatic(exe); err != nil {
		return report, err
	}
	ok("binary: statically linked ELF")
	if cf.Architecture != runtime.GOARCH {
		ok("binary: not run (image %s, this machine %s)", cf.Architecture, runtime.GOARCH)
		return report, nil
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, exe, "version").CombinedOutput()
	if err != nil {
		return report, fmt.Errorf("%s version: %w\n%s", binaryPath, err, out)
	}
	first, _, _ := strings.Cut(string(out), "\n")
	if first != "kbackup "+w.Version {
		return report, fmt.Errorf("%s version printed %q, want \"kbackup %s\"", binaryPath, out, w.Version)
	}
	ok("binary: `version` from the image prints %q", first)
	return report, nil
}

// expectedEntries lists the layer's entry names, as entries builds them.
func expectedEntries() []string {
	var names []string
	for _, f := range entries(nil, nil) {
		names = append(names, f.name)
	}
	return names
}

// checkStatic fails unless path is an ELF executable without a program
// interpreter or shared-library dependencies.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("binary: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("binary: dynamically linked (has a program interpreter): build with CGO_ENABLED=0")
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("binary: %w", err)
	}
	if len(libs) > 0 {
		return fmt.Errorf("binary: needs shared libraries %q", libs)
	}
	return nil
}
