package manifest_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/filestore"
	"github.com/kbackup/kbackup/store/s3store"
	"github.com/kbackup/kbackup/store/s3store/s3fake"
)

// TestProbeConditionalCreate: stores that honour If-None-Match pass and
// keep no scratch object; one that ignores it is refused, by the probe and
// by Init (the archiver's start), which then writes nothing.
func TestProbeConditionalCreate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fs, err := filestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv, opts := s3fake.Start(t, "probe")
	s3, err := s3store.New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []store.Store{fs, s3} {
		if err := manifest.ProbeConditionalCreate(ctx, st); err != nil {
			t.Fatalf("%s: %v", st, err)
		}
		var left []string
		_ = st.List(ctx, store.ListOptions{Prefix: manifest.ProbesPrefix}, func(e store.ListEntry) error { left = append(left, e.Key); return nil })
		if len(left) != 0 {
			t.Fatalf("%s: probe left %v", st, left)
		}
	}

	srv.IgnoreIfNoneMatch(true)
	err = manifest.ProbeConditionalCreate(ctx, s3)
	if !errors.Is(err, manifest.ErrNoConditionalCreate) || !strings.Contains(err.Error(), "two writers could both commit") {
		t.Fatalf("probe on a store ignoring If-None-Match: %v", err)
	}
	if _, err := manifest.Init(ctx, s3, "test", 1); !errors.Is(err, manifest.ErrNoConditionalCreate) {
		t.Fatalf("Init on a store ignoring If-None-Match: %v", err)
	}
	var keys []string
	_ = s3.List(ctx, store.ListOptions{}, func(e store.ListEntry) error { keys = append(keys, e.Key); return nil })
	if len(keys) != 0 {
		t.Fatalf("refused Init wrote %v", keys)
	}
}
