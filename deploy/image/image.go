package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Name is kbackup's image name, the one used everywhere (chart, docs,
// Dockerfile). Tags are kbackup versions, never "latest".
const Name = "ghcr.io/kbackup/kbackup"

// The image layout, shared with the Dockerfile (a test compares them).
const (
	binaryPath = "/kbackup"
	caPath     = "/etc/ssl/certs/ca-certificates.crt"
	uid        = 65532
	user       = "65532:65532"
	metrics    = "9464/tcp"
	sourceURL  = "https://github.com/kbackup/kbackup"
)

// Options say what goes into the image.
type Options struct {
	// Binary is the statically linked kbackup binary for OS/Arch.
	Binary string
	// CACerts is the PEM bundle installed at /etc/ssl/certs/ca-certificates.crt.
	CACerts string
	// Version is the kbackup version: the image's version label and tag.
	Version string
	// Revision is the source commit (label org.opencontainers.image.revision); "" leaves it out.
	Revision string
	// Created stamps the config, history and every file: with the same
	// inputs and Created the image is byte-identical (SOURCE_DATE_EPOCH).
	Created time.Time
	// Arch is the binary's GOARCH (the image is linux/Arch). "" = amd64.
	Arch string
}

// file is one entry of the image's single layer.
type file struct {
	name     string // without leading slash
	mode     int64
	uid, gid int
	dir      bool
	body     []byte
}

// files returns the layer's entries: directories, the CA bundle, passwd and
// group naming the non-root user, and the binary. No shell, no package manager.
func files(o Options) ([]file, error) {
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return nil, fmt.Errorf("binary: %w", err)
	}
	ca, err := os.ReadFile(o.CACerts)
	if err != nil {
		return nil, fmt.Errorf("CA certificates: %w", err)
	}
	if !bytes.Contains(ca, []byte("-----BEGIN CERTIFICATE-----")) {
		return nil, fmt.Errorf("CA certificates %s: no PEM certificate in it", o.CACerts)
	}
	return entries(bin, ca), nil
}

// entries returns the layer's entries, sorted by name.
func entries(bin, ca []byte) []file {
	fs := []file{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/group", mode: 0o644, body: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{name: "etc/passwd", mode: 0o644, body: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{name: "etc/ssl/", mode: 0o755, dir: true},
		{name: "etc/ssl/certs/", mode: 0o755, dir: true},
		{name: caPath[1:], mode: 0o644, body: ca},
		{name: "home/", mode: 0o755, dir: true},
		{name: "home/nonroot/", mode: 0o700, uid: uid, gid: uid, dir: true},
		{name: binaryPath[1:], mode: 0o755, body: bin},
		{name: "tmp/", mode: 0o1777, dir: true},
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].name < fs[j].name })
	return fs
}

// layerTar writes the entries as a deterministic tar: sorted names, fixed
// times, numeric owners only.
func layerTar(fs []file, created time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range fs {
		h := &tar.Header{Name: f.name, Mode: f.mode, Uid: f.uid, Gid: f.gid, ModTime: created, Format: tar.FormatPAX}
		if f.dir {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("tar %s: %w", f.name, err)
		}
		if _, err := tw.Write(f.body); err != nil {
			return nil, fmt.Errorf("tar %s: %w", f.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("tar: %w", err)
	}
	return buf.Bytes(), nil
}

// Labels returns the image's OCI labels.
func Labels(o Options) map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":       "kbackup",
		"org.opencontainers.image.description": "Backs up, restores and replays Apache Kafka",
		"org.opencontainers.image.source":      sourceURL,
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.created":     o.Created.UTC().Format(time.RFC3339),
	}
	if o.Revision != "" {
		l["org.opencontainers.image.revision"] = o.Revision
	}
	return l
}

// Build assembles the image: one layer, an OCI manifest and config.
func Build(o Options) (v1.Image, error) {
	if o.Version == "" {
		return nil, errors.New("no version: the image is tagged with it")
	}
	if o.Arch == "" {
		o.Arch = "amd64"
	}
	o.Created = o.Created.UTC()
	fs, err := files(o)
	if err != nil {
		return nil, err
	}
	tb, err := layerTar(fs, o.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(tb)), nil },
		tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, MediaType: types.OCILayer, History: v1.History{
		Created:   v1.Time{Time: o.Created},
		CreatedBy: "kbackup deploy/image: " + binaryPath + " " + o.Version + ", CA certificates, passwd (uid " + strconv.Itoa(uid) + ")",
		Comment:   "built without a container runtime; see Dockerfile for the equivalent",
	}})
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS, cf.Created = o.Arch, "linux", v1.Time{Time: o.Created}
	cf.Config = v1.Config{
		Entrypoint:   []string{binaryPath},
		Cmd:          []string{"--help"},
		User:         user,
		WorkingDir:   "/home/nonroot",
		Env:          []string{"PATH=/", "SSL_CERT_FILE=" + caPath},
		Labels:       Labels(o),
		ExposedPorts: map[string]struct{}{metrics: {}},
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return img, nil
}
