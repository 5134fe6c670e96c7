package storetest

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/kbackup/kbackup/store"
)

// listAll returns the entries List yields; prefixes are shown with their
// trailing "/" (IsPrefix is checked against that).
func listAll(t *testing.T, s store.Store, opts store.ListOptions) []store.ListEntry {
	t.Helper()
	var got []store.ListEntry
	err := s.List(t.Context(), opts, func(e store.ListEntry) error {
		got = append(got, e)
		return nil
	})
	if err != nil {
		t.Fatalf("List(%+v): %v", opts, err)
	}
	return got
}

// assertEntries checks List's output: want holds keys, and common prefixes
// (ending in "/", expected with IsPrefix).
func assertEntries(t *testing.T, s store.Store, opts store.ListOptions, want []string) {
	t.Helper()
	got := listAll(t, s, opts)
	var keys []string
	for _, e := range got {
		keys = append(keys, e.Key)
		if e.IsPrefix != strings.HasSuffix(e.Key, "/") {
			t.Errorf("List(%+v): entry %q has IsPrefix=%v", opts, e.Key, e.IsPrefix)
		}
		if e.IsPrefix && e.Size != 0 {
			t.Errorf("List(%+v): prefix %q has size %d", opts, e.Key, e.Size)
		}
	}
	if !slices.Equal(keys, want) {
		t.Errorf("List(%+v)\n got  %q\n want %q", opts, keys, want)
	}
}

// assertListed checks that List yields exactly the keys want.
func assertListed(t *testing.T, s store.Store, opts store.ListOptions, want []string) {
	t.Helper()
	assertEntries(t, s, opts, want)
}

// listKeys are put by the list tests below p; their byte order is not the
// order of a per-directory walk.
var listKeys = []string{
	"a-b", "a.b", "a/b", "a/c/d", "a/c-", "a0", "ab", "b", "b/x", "c=1/z",
}

func putListKeys(t *testing.T, s store.Store, p string) []string {
	t.Helper()
	var keys []string
	for _, k := range listKeys {
		if k == "b" {
			continue // "b" and "b/x" cannot both exist in a directory store
		}
		put(t, s, p+k, []byte(k))
		keys = append(keys, p+k)
	}
	slices.Sort(keys)
	return keys
}

func testListOrder(t *testing.T, s store.Store, p string) {
	keys := putListKeys(t, s, p)
	want := []string{p + "a-b", p + "a.b", p + "a/b", p + "a/c-", p + "a/c/d", p + "a0", p + "ab", p + "b/x", p + "c=1/z"}
	if !slices.Equal(keys, want) {
		t.Fatalf("test bug: sorted keys %q", keys)
	}
	assertListed(t, s, store.ListOptions{Prefix: p}, want)
	for _, e := range listAll(t, s, store.ListOptions{Prefix: p}) {
		if e.Size != int64(len(strings.TrimPrefix(e.Key, p))) {
			t.Errorf("List: %q has size %d", e.Key, e.Size)
		}
	}
}

func testListPrefix(t *testing.T, s store.Store, p string) {
	putListKeys(t, s, p)
	for _, tc := range []struct{ prefix, want string }{
		{"a", "a-b a.b a/b a/c- a/c/d a0 ab"},
		{"a/", "a/b a/c- a/c/d"},
		{"a/c", "a/c- a/c/d"},
		{"a/c/", "a/c/d"},
		{"a.", "a.b"},
		{"c=", "c=1/z"},
		{"zz", ""},
		{"a/c/d", "a/c/d"},
		{"a/c/d/", ""},
	} {
		assertListed(t, s, store.ListOptions{Prefix: p + tc.prefix}, withPrefix(p, tc.want))
	}
}

func withPrefix(p, keys string) []string {
	var out []string
	for k := range strings.FieldsSeq(keys) {
		out = append(out, p+k)
	}
	return out
}

func testListStartAfter(t *testing.T, s store.Store, p string) {
	putListKeys(t, s, p)
	for _, tc := range []struct{ after, want string }{
		{"", "a-b a.b a/b a/c- a/c/d a0 ab b/x c=1/z"},
		{"a-b", "a.b a/b a/c- a/c/d a0 ab b/x c=1/z"}, // existing key
		{"a/b", "a/c- a/c/d a0 ab b/x c=1/z"},         // existing nested key
		{"a/bb", "a/c- a/c/d a0 ab b/x c=1/z"},        // not a key
		{"a/", "a/b a/c- a/c/d a0 ab b/x c=1/z"},      // a directory prefix
		{"a/c/d", "a0 ab b/x c=1/z"},                  // last key of a subtree
		{"a/c/e", "a0 ab b/x c=1/z"},                  // past a subtree
		{"a1", "ab b/x c=1/z"},                        // between keys
		{"c=1/z", ""},                                 // the last key
		{"zzz", ""},                                   // past everything
	} {
		assertListed(t, s, store.ListOptions{Prefix: p, StartAfter: p + tc.after}, withPrefix(p, tc.want))
	}
	// StartAfter below the prefix: no effect.
	assertListed(t, s, store.ListOptions{Prefix: p + "a/", StartAfter: p + "a"}, withPrefix(p, "a/b a/c- a/c/d"))
	// StartAfter before the prefix, without the prefix string.
	assertListed(t, s, store.ListOptions{Prefix: p + "b", StartAfter: "a"}, withPrefix(p, "b/x"))
}

func testListDelimiter(t *testing.T, s store.Store, p string) {
	putListKeys(t, s, p)
	for _, tc := range []struct{ prefix, want string }{
		{"", "a-b a.b a/ a0 ab b/ c=1/"},
		{"a", "a-b a.b a/ a0 ab"},
		{"a/", "a/b a/c- a/c/"},
		{"a/c", "a/c- a/c/"},
		{"a/c/", "a/c/d"},
		{"b", "b/"},
		{"q", ""},
	} {
		assertEntries(t, s, store.ListOptions{Prefix: p + tc.prefix, Delimiter: "/"}, withPrefix(p, tc.want))
	}
	// With a limit, prefixes count as entries.
	assertEntries(t, s, store.ListOptions{Prefix: p, Delimiter: "/", Limit: 3}, withPrefix(p, "a-b a.b a/"))
	// StartAfter past a whole common prefix.
	assertEntries(t, s, store.ListOptions{Prefix: p, Delimiter: "/", StartAfter: p + "a/c/d"}, withPrefix(p, "a0 ab b/ c=1/"))
}

func testListLimit(t *testing.T, s store.Store, p string) {
	keys := putListKeys(t, s, p)
	for _, n := range []int{1, 2, 5, len(keys), len(keys) + 3} {
		want := keys[:min(n, len(keys))]
		assertListed(t, s, store.ListOptions{Prefix: p, Limit: n}, want)
	}
	assertListed(t, s, store.ListOptions{Prefix: p, StartAfter: keys[2], Limit: 2}, keys[3:5])
	// Paging by StartAfter visits every key once.
	var paged []string
	after := ""
	for {
		got := listAll(t, s, store.ListOptions{Prefix: p, StartAfter: after, Limit: 2})
		if len(got) == 0 {
			break
		}
		for _, e := range got {
			paged = append(paged, e.Key)
		}
		after = got[len(got)-1].Key
	}
	if !slices.Equal(paged, keys) {
		t.Errorf("paged listing %q, want %q", paged, keys)
	}
}

func testListCallbackError(t *testing.T, s store.Store, p string) {
	putListKeys(t, s, p)
	stop := errors.New("stop here")
	n := 0
	err := s.List(t.Context(), store.ListOptions{Prefix: p}, func(store.ListEntry) error {
		n++
		if n == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Errorf("List returned %v, want the callback's error", err)
	}
	if n != 2 {
		t.Errorf("callback called %d times after returning an error at 2", n)
	}
}
