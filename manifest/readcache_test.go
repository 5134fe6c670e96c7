package manifest

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/filestore"
	"github.com/kbackup/kbackup/store/storefault"
)

// TestReadCache: immutable ranges are cached while planning and served
// once more after freeze; other keys always go to the store.
func TestReadCache(t *testing.T) {
	t.Parallel()
	inner, err := filestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	seg := SegmentKey(PartitionPrefix("t", TopicID{1}, 0), 0, 9, "0123456789abcdef")
	for _, k := range []string{seg, "catalog/x"} {
		if err := inner.Put(ctx, k, strings.NewReader("0123456789"), 10, store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	cs := storefault.New(inner, 1)
	c := NewReadCache(cs)
	get := func(key string) string {
		rc, err := c.GetRange(ctx, key, 2, 3)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, _ := io.ReadAll(rc)
		return string(b)
	}
	for i := 0; i < 3; i++ {
		if got := get(seg); got != "234" {
			t.Fatalf("got %q", got)
		}
		get("catalog/x")
	}
	if n := cs.Calls(); n != 4 { // 1 segment read, 3 catalog reads
		t.Fatalf("%d store requests, want 4", n)
	}
	c.Freeze()
	get(seg) // served from the cache, then dropped
	get(seg) // read again, not cached
	get(seg)
	if n := cs.Calls(); n != 6 {
		t.Fatalf("%d store requests after freeze, want 6", n)
	}
}

// TestReadCacheDecides: what the cache keeps follows the key layout.
func TestReadCacheDecides(t *testing.T) {
	t.Parallel()
	part := PartitionPrefix("t", TopicID{1}, 0)
	for key, want := range map[string]bool{
		CommitKey(part, 5):                         true,
		SegmentKey(part, 0, 9, "0123456789abcdef"): true,
		FlushKey("0123456789abcdef", 3):            true,
		TailIndexKey("0123456789abcdef", 3):        false,
		ClaimKey(part, 2):                          false,
		TimeKey(part, 1, 5):                        false,
		TopicMarkerKey("t", TopicID{1}):            false,
		CatalogKey(CatalogTopics, 7):               false,
		"restores/r-1/manifest.json":               false,
		"topics/t/x/commits/y":                     false,
	} {
		if _, got := immutableKind(key); got != want {
			t.Errorf("immutableKind(%q) = %t, want %t", key, got, want)
		}
	}
	for _, tc := range []struct {
		o    store.ListOptions
		want bool
	}{
		{store.ListOptions{Prefix: part + "commits/", StartAfter: CommitKey(part, 9), Limit: 1}, true},
		{store.ListOptions{Prefix: part + "time/", StartAfter: TimeKey(part, 9, 1<<62), Limit: 1}, true},
		{store.ListOptions{Prefix: part + "commits/", StartAfter: CommitKey(part, 9), Limit: 2}, false},
		{store.ListOptions{Prefix: part + "commits/", Limit: 1}, false},
		{store.ListOptions{Prefix: part + "time/", StartAfter: CommitKey(part, 9), Limit: 1}, false},
		{store.ListOptions{Prefix: "catalog/topics/", StartAfter: CatalogKey(CatalogTopics, 9), Limit: 1}, false},
	} {
		if got := cachedListing(tc.o); got != tc.want {
			t.Errorf("cachedListing(%+v) = %t, want %t", tc.o, got, tc.want)
		}
	}
}
