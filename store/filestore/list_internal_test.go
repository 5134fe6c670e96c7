package filestore

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/kbackup/kbackup/store"
)

// TestJoinedComparisons checks the allocation-free comparisons of a+b
// against building the string.
func TestJoinedComparisons(t *testing.T) {
	words := []string{"", "a", "ab", "abc", "b", "a/", "a/b", "topics/", "topics/x", "z"}
	for _, a := range words {
		for _, b := range words {
			for _, c := range words {
				if got, want := cmpJoined(a, b, c), strings.Compare(a+b, c); got != want {
					t.Errorf("cmpJoined(%q, %q, %q) = %d, want %d", a, b, c, got, want)
				}
				if got, want := hasPrefixJoined(a, b, c), strings.HasPrefix(a+b, c); got != want {
					t.Errorf("hasPrefixJoined(%q, %q, %q) = %v, want %v", a, b, c, got, want)
				}
				if got, want := isPrefixOfJoined(c, a, b), strings.HasPrefix(c, a+b); got != want {
					t.Errorf("isPrefixOfJoined(%q, %q, %q) = %v, want %v", c, a, b, got, want)
				}
			}
		}
	}
}

// TestListLargeDirectory: limits and start-after over a directory larger
// than the few-smallest selection (ordered) list the same keys, in order,
// as a full listing.
func TestListLargeDirectory(t *testing.T) {
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	var want []string
	for i := 0; i < 150; i++ {
		// Names whose byte order differs from creation order, and a
		// sibling directory sorting among them.
		k := fmt.Sprintf("d/%03d", (i*37)%150)
		if err := s.Put(ctx, k, strings.NewReader("x"), 1, store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(ctx, "d/050x/inner", strings.NewReader("y"), 1, store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	list := func(o store.ListOptions) []string {
		var out []string
		if err := s.List(ctx, o, func(e store.ListEntry) error { out = append(out, e.Key); return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	want = list(store.ListOptions{Prefix: "d/"})
	if len(want) != 151 || !slices.IsSorted(want) {
		t.Fatalf("full listing: %d keys, sorted %v", len(want), slices.IsSorted(want))
	}
	for _, limit := range []int{1, 3, 8, 9, 20} {
		var paged []string
		after := ""
		for {
			got := list(store.ListOptions{Prefix: "d/", StartAfter: after, Limit: limit})
			if len(got) == 0 {
				break
			}
			paged = append(paged, got...)
			after = got[len(got)-1]
		}
		if !slices.Equal(paged, want) {
			t.Fatalf("paging by %d: %q", limit, paged)
		}
	}
	if got := list(store.ListOptions{Prefix: "d/", StartAfter: "d/050", Limit: 2}); !slices.Equal(got, []string{"d/050x/inner", "d/051"}) {
		t.Fatalf("start-after before a directory: %q", got)
	}
}
