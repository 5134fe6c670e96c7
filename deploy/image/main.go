// Command image builds kbackup's container image without a container
// runtime (go-containerregistry): one layer holding the static binary, the
// CA certificates and a passwd naming the non-root user 65532, written as an
// OCI image layout directory and a tarball that `docker load` and `podman
// load` read. The Dockerfile at the repository root builds the same image
// with Docker. Used by `make image`; docs/OPERATIONS.md and deploy/README.md
// describe it.
//
//	go run ./deploy/image -binary bin/linux_amd64/kbackup -version v0.1.0 -out bin/image -tar bin/kbackup-image.tar
//	go run ./deploy/image -verify bin/image -version v0.1.0
//
// The image is reproducible: every timestamp is SOURCE_DATE_EPOCH (default
// 0), the layer's entries are sorted with numeric owners, so the same binary
// and CA bundle give the same digest.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func main() {
	if err := run(context.Background(), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("image", flag.ContinueOnError)
	var o Options
	fl.StringVar(&o.Binary, "binary", "", "static kbackup binary for linux/`ARCH`")
	fl.StringVar(&o.CACerts, "ca", "/etc/ssl/certs/ca-certificates.crt", "PEM CA bundle to install")
	fl.StringVar(&o.Version, "version", "", "kbackup version: version label and tag")
	fl.StringVar(&o.Revision, "revision", "", "source commit (label)")
	fl.StringVar(&o.Arch, "arch", "amd64", "the binary's GOARCH")
	out := fl.String("out", "", "write an OCI image layout to `DIR` (replaced)")
	tarPath := fl.String("tar", "", "also write a docker/podman-loadable tarball to `FILE`")
	verify := fl.String("verify", "", "check the image in the OCI layout `DIR` instead of building")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if o.Version == "" {
		return errors.New("-version is required")
	}
	if *verify != "" {
		img, err := ReadLayout(*verify)
		if err != nil {
			return err
		}
		report, err := Verify(ctx, img, Want{Version: o.Version})
		for _, l := range report {
			fmt.Println("ok  ", l)
		}
		return err
	}
	if o.Binary == "" || *out == "" {
		return errors.New("-binary and -out are required")
	}
	created, err := sourceDateEpoch()
	if err != nil {
		return err
	}
	o.Created = created
	img, err := Build(o)
	if err != nil {
		return err
	}
	if err := WriteLayout(*out, img, o.Version); err != nil {
		return err
	}
	if *tarPath != "" {
		if err := WriteTarball(*tarPath, img, o.Version); err != nil {
			return err
		}
	}
	d, err := img.Digest()
	if err != nil {
		return fmt.Errorf("digest: %w", err)
	}
	fmt.Printf("%s:%s linux/%s %s -> %s\n", Name, o.Version, o.Arch, d, *out)
	return nil
}

// sourceDateEpoch reads SOURCE_DATE_EPOCH (seconds; default 0).
func sourceDateEpoch() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: %w", s, err)
	}
	return time.Unix(n, 0).UTC(), nil
}

// WriteLayout writes img as the only image of a fresh OCI layout in dir,
// annotated with its tag.
func WriteLayout(dir string, img v1.Image, version string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("replace %s: %w", dir, err)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": version,
		"io.kbackup.image.name":             Name + ":" + version,
	})); err != nil {
		return fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	return nil
}

// ReadLayout returns the only image of the OCI layout in dir.
func ReadLayout(dir string) (v1.Image, error) {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	if len(im.Manifests) != 1 {
		return nil, fmt.Errorf("OCI layout %s: %d images, want 1", dir, len(im.Manifests))
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	return img, nil
}

// WriteTarball writes img as Name:version in the tarball format of docker save.
func WriteTarball(path string, img v1.Image, version string) error {
	tag, err := name.NewTag(Name + ":" + version)
	if err != nil {
		return fmt.Errorf("tag: %w", err)
	}
	if err := tarball.WriteToFile(path, tag, img); err != nil {
		return fmt.Errorf("tarball %s: %w", path, err)
	}
	return nil
}
