// Package storetest is the conformance suite every store.Store
// implementation passes. Implementations call Run from their tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return newStore(t) })
//	}
package storetest

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kbackup/kbackup/store"
)

// Option tunes Run.
type Option func(*config)

type config struct {
	largeSize int64
	noSweep   string
}

// NoUploadSweep skips the upload-sweep test for a server that cannot list
// incomplete uploads by prefix (why says what it does instead).
func NoUploadSweep(why string) Option {
	return func(c *config) { c.noSweep = why }
}

// LargeObject makes Run also round-trip an object of size bytes, so that
// stores which upload big bodies in parts (s3store above its PartSize)
// exercise that path. 0 (the default) skips the large-object test.
func LargeObject(size int64) Option {
	return func(c *config) { c.largeSize = size }
}

// Run runs the conformance suite as subtests of t. newStore is called once
// per subtest and may return a fresh store or a shared one: every subtest
// uses its own key prefix.
func Run(t *testing.T, newStore func(t *testing.T) store.Store, opts ...Option) {
	var c config
	for _, o := range opts {
		o(&c)
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store, p string)
	}{
		{"RoundTrip", testRoundTrip},
		{"Overwrite", testOverwrite},
		{"IfNotExists", testIfNotExists},
		{"IfNotExistsRace", testIfNotExistsRace},
		{"SizeMismatch", testSizeMismatch},
		{"ReaderError", testReaderError},
		{"GetRange", testGetRange},
		{"NotFound", testNotFound},
		{"Stat", testStat},
		{"InvalidKeys", testInvalidKeys},
		{"ListOrder", testListOrder},
		{"ListPrefix", testListPrefix},
		{"ListStartAfter", testListStartAfter},
		{"ListDelimiter", testListDelimiter},
		{"ListLimit", testListLimit},
		{"ListCallbackError", testListCallbackError},
		{"Delete", testDelete},
		{"NestedKeys", testNestedKeys},
		{"Canceled", testCanceled},
		{"AtomicOverwrite", testAtomicOverwrite},
		{"Staged", func(t *testing.T, s store.Store, p string) { testStaged(t, s, p, c.largeSize) }},
		{"KeyedStaged", func(t *testing.T, s store.Store, p string) { testKeyedStaged(t, s, p, c.largeSize) }},
		{"UploadSweep", func(t *testing.T, s store.Store, p string) {
			if c.noSweep != "" {
				t.Skip(c.noSweep)
			}
			testUploadSweep(t, s, p, c.largeSize)
		}},
	}
	if c.largeSize > 0 {
		size := c.largeSize
		tests = append(tests, struct {
			name string
			fn   func(t *testing.T, s store.Store, p string)
		}{"Large", func(t *testing.T, s store.Store, p string) { testLarge(t, s, p, size) }})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t)
			tt.fn(t, s, "conformance/"+strings.ToLower(tt.name)+"/")
		})
	}
}

// put stores data under key or fails the test.
func put(t *testing.T, s store.Store, key string, data []byte) {
	t.Helper()
	if err := s.Put(t.Context(), key, bytes.NewReader(data), int64(len(data)), store.PutOptions{}); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

// get reads the whole of key or fails the test.
func get(t *testing.T, s store.Store, key string) []byte {
	t.Helper()
	b, err := store.Get(t.Context(), s, key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return b
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func testRoundTrip(t *testing.T, s store.Store, p string) {
	for _, n := range []int{0, 1, 100, 64 << 10} {
		key := fmt.Sprintf("%sobj-%d", p, n)
		data := randomBytes(t, n)
		put(t, s, key, data)
		if got := get(t, s, key); !bytes.Equal(got, data) {
			t.Errorf("%s: got %d bytes, want %d bytes equal to what was put", key, len(got), n)
		}
	}
}

func testLarge(t *testing.T, s store.Store, p string, size int64) {
	data := randomBytes(t, int(size))
	key := p + "large"
	put(t, s, key, data)
	if got := get(t, s, key); !bytes.Equal(got, data) {
		t.Fatalf("large object: got %d bytes, want %d equal bytes", len(got), size)
	}
	rc, err := s.GetRange(t.Context(), key, size-10, 20)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if got, _ := io.ReadAll(rc); !bytes.Equal(got, data[size-10:]) {
		t.Errorf("tail range: got %x, want %x", got, data[size-10:])
	}
	// IfNotExists on an existing large object must fail and keep it.
	err = s.Put(t.Context(), key, bytes.NewReader(data[:size-1]), size-1, store.PutOptions{IfNotExists: true})
	if !errors.Is(err, store.ErrExists) {
		t.Errorf("IfNotExists on existing large object: err = %v, want ErrExists", err)
	}
	if info, err := s.Stat(t.Context(), key); err != nil || info.Size != size {
		t.Errorf("after refused large Put: Stat = %+v, %v; want size %d", info, err, size)
	}
	key2 := p + "large-new"
	if err := s.Put(t.Context(), key2, bytes.NewReader(data), size, store.PutOptions{IfNotExists: true}); err != nil {
		t.Fatalf("IfNotExists large Put on a new key: %v", err)
	}
	if got := get(t, s, key2); !bytes.Equal(got, data) {
		t.Errorf("large IfNotExists object differs")
	}
	// A large body that is only a reader (a store may copy it in parts),
	// and one readable at any offset, put from its middle.
	key3 := p + "large-reader"
	if err := s.Put(t.Context(), key3, struct{ io.Reader }{bytes.NewReader(data)}, size, store.PutOptions{IfNotExists: true}); err != nil {
		t.Fatalf("large Put of a plain reader: %v", err)
	}
	if got := get(t, s, key3); !bytes.Equal(got, data) {
		t.Errorf("large object from a plain reader differs")
	}
	r := bytes.NewReader(data)
	if _, err := r.Seek(7, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	key4 := p + "large-offset"
	if err := s.Put(t.Context(), key4, r, size-7, store.PutOptions{}); err != nil {
		t.Fatalf("large Put from offset 7: %v", err)
	}
	if got := get(t, s, key4); !bytes.Equal(got, data[7:]) {
		t.Errorf("large object put from offset 7 differs")
	}
}

func testOverwrite(t *testing.T, s store.Store, p string) {
	key := p + "k"
	put(t, s, key, []byte("first version"))
	put(t, s, key, []byte("v2"))
	if got := get(t, s, key); string(got) != "v2" {
		t.Errorf("after overwrite got %q, want %q", got, "v2")
	}
}

func testIfNotExists(t *testing.T, s store.Store, p string) {
	ctx := t.Context()
	key := p + "fence"
	if err := s.Put(ctx, key, strings.NewReader("mine"), 4, store.PutOptions{IfNotExists: true}); err != nil {
		t.Fatalf("IfNotExists on a new key: %v", err)
	}
	err := s.Put(ctx, key, strings.NewReader("theirs"), 6, store.PutOptions{IfNotExists: true})
	if !errors.Is(err, store.ErrExists) {
		t.Fatalf("IfNotExists on an existing key: err = %v, want ErrExists", err)
	}
	if got := get(t, s, key); string(got) != "mine" {
		t.Errorf("existing object changed to %q", got)
	}
	// An empty body is fenced the same way.
	if err := s.Put(ctx, p+"empty", bytes.NewReader(nil), 0, store.PutOptions{IfNotExists: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, p+"empty", bytes.NewReader(nil), 0, store.PutOptions{IfNotExists: true}); !errors.Is(err, store.ErrExists) {
		t.Errorf("second empty IfNotExists: err = %v, want ErrExists", err)
	}
}

func testIfNotExistsRace(t *testing.T, s store.Store, p string) {
	const n = 8
	for round := range 3 {
		key := fmt.Sprintf("%srace-%d", p, round)
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				body := fmt.Sprintf("writer-%d", i)
				errs[i] = s.Put(t.Context(), key, strings.NewReader(body), int64(len(body)), store.PutOptions{IfNotExists: true})
			})
		}
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil:
				if winner >= 0 {
					t.Fatalf("%s: writers %d and %d both won", key, winner, i)
				}
				winner = i
			case !errors.Is(err, store.ErrExists):
				t.Fatalf("%s: writer %d: %v, want nil or ErrExists", key, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("%s: no writer won", key)
		}
		if got, want := string(get(t, s, key)), fmt.Sprintf("writer-%d", winner); got != want {
			t.Errorf("%s holds %q, want the winner's %q", key, got, want)
		}
	}
}

func testSizeMismatch(t *testing.T, s store.Store, p string) {
	ctx := t.Context()
	for _, tc := range []struct {
		name string
		body string
		size int64
		opts store.PutOptions
	}{
		{"short", "abc", 5, store.PutOptions{}},
		{"long", "abcdef", 3, store.PutOptions{}},
		{"short-ifnotexists", "abc", 5, store.PutOptions{IfNotExists: true}},
		{"long-ifnotexists", "abcdef", 3, store.PutOptions{IfNotExists: true}},
	} {
		// A body readable at any offset (a store may send it as it is) and
		// one that is only a reader.
		for _, body := range []io.Reader{strings.NewReader(tc.body), struct{ io.Reader }{strings.NewReader(tc.body)}} {
			key := p + tc.name
			if err := s.Put(ctx, key, body, tc.size, tc.opts); err == nil {
				t.Errorf("%s: Put of %d bytes (%T) with size %d succeeded", tc.name, len(tc.body), body, tc.size)
			}
			if _, err := s.Stat(ctx, key); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("%s: after failed Put, Stat err = %v, want ErrNotFound", tc.name, err)
			}
		}
	}
	// A body is read from where it is: a reader partly read puts the rest.
	r := strings.NewReader("skip:rest")
	if _, err := r.Seek(5, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, p+"rest", r, 4, store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := get(t, s, p+"rest"); string(got) != "rest" {
		t.Errorf("Put from a reader at offset 5: got %q, want %q", got, "rest")
	}
	// A failed overwrite keeps the old object.
	key := p + "keep"
	put(t, s, key, []byte("old"))
	if err := s.Put(ctx, key, strings.NewReader("ne"), 3, store.PutOptions{}); err == nil {
		t.Error("short overwrite succeeded")
	}
	if got := get(t, s, key); string(got) != "old" {
		t.Errorf("after failed overwrite got %q, want %q", got, "old")
	}
	assertListed(t, s, store.ListOptions{Prefix: p}, []string{key, p + "rest"})
}

type failingReader struct{ n int }

func (r *failingReader) Read(b []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("disk on fire")
	}
	m := min(len(b), r.n)
	clear(b[:m])
	r.n -= m
	return m, nil
}

func testReaderError(t *testing.T, s store.Store, p string) {
	key := p + "k"
	if err := s.Put(t.Context(), key, &failingReader{n: 10}, 100, store.PutOptions{}); err == nil {
		t.Fatal("Put with a failing reader succeeded")
	}
	if _, err := s.Stat(t.Context(), key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after failed Put, Stat err = %v, want ErrNotFound", err)
	}
}

// Keys returns every key under prefix p of s, or fails t.
func Keys(t *testing.T, s store.Store, p string) []string {
	t.Helper()
	var keys []string
	for _, e := range listAll(t, s, store.ListOptions{Prefix: p}) {
		keys = append(keys, e.Key)
	}
	return keys
}

// testStaged: a store.Stager publishes exactly what was written, never
// shows a staged object before Publish, keeps IfNotExists's fencing
// whether or not the bytes filled a part (large: the store's multipart
// threshold, if it has one), and leaves nothing after Abort. Stores
// without Stager skip it.
func testStaged(t *testing.T, s store.Store, p string, large int64) {
	sg, ok := s.(store.Stager)
	if !ok {
		t.Skip("the store does not implement store.Stager")
	}
	ctx := t.Context()
	stage := func(prefix string) store.Staged {
		t.Helper()
		st, err := sg.Stage(ctx, prefix)
		if err != nil {
			t.Fatalf("Stage(%q): %v", prefix, err)
		}
		return st
	}
	data := randomBytes(t, int(max(large, 300<<10)))
	st := stage(p + "seg/")
	for off := 0; off < len(data); off += 70 << 10 {
		if _, err := st.Write(data[off:min(off+70<<10, len(data))]); err != nil {
			t.Fatalf("Write: %v", err)
		}
		if keys := Keys(t, s, p); len(keys) != 0 {
			t.Fatalf("a staged object is listed before Publish: %q", keys)
		}
	}
	if st.Size() != int64(len(data)) {
		t.Fatalf("Size = %d, want %d", st.Size(), len(data))
	}
	key := p + "seg/a"
	if err := st.Publish(ctx, key, store.PutOptions{IfNotExists: true}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if got := get(t, s, key); !bytes.Equal(got, data) {
		t.Fatalf("published %d bytes, want the %d written", len(got), len(data))
	}
	if _, err := st.Write([]byte("x")); err == nil {
		t.Error("Write after Publish succeeded")
	}
	if err := st.Publish(ctx, p+"seg/again", store.PutOptions{}); err == nil {
		t.Error("a second Publish succeeded")
	}
	st.Abort() // a no-op after Publish
	if got := get(t, s, key); !bytes.Equal(got, data) {
		t.Fatal("Abort after Publish changed the object")
	}

	checkStagedFencing(t, s, key, data, func(string) store.Staged { return stage(p + "seg/") }, []byte("other"), data[:len(data)-1])
	// Under another prefix than the hint, and empty, it works too.
	st = stage(p + "seg/")
	if err := st.Publish(ctx, p+"elsewhere/deep/b", store.PutOptions{IfNotExists: true}); err != nil {
		t.Fatalf("Publish elsewhere: %v", err)
	}
	if got := get(t, s, p+"elsewhere/deep/b"); len(got) != 0 {
		t.Fatalf("empty staged object published as %d bytes", len(got))
	}

	// Abort leaves nothing, and the staged object is dead.
	checkStagedAbort(t, stage(p+"seg/"), data, p+"seg/c")
	if keys := Keys(t, s, p); len(keys) != 2 {
		t.Errorf("after Abort the keys are %q, want only the two published", keys)
	}
	// An invalid key is refused.
	st = stage(p + "seg/")
	if err := st.Publish(ctx, p+"bad key", store.PutOptions{}); err == nil {
		t.Error("Publish under an invalid key succeeded")
	}
}

// checkStagedFencing: over key, which holds data, an object staged by
// stageFor(key) with each of others published with IfNotExists is refused
// (ErrExists) and leaves data; one published without it overwrites.
func checkStagedFencing(t *testing.T, s store.Store, key string, data []byte, stageFor func(key string) store.Staged, others ...[]byte) {
	t.Helper()
	for _, other := range others {
		st := stageFor(key)
		if _, err := st.Write(other); err != nil {
			t.Fatalf("Write: %v", err)
		}
		if err := st.Publish(t.Context(), key, store.PutOptions{IfNotExists: true}); !errors.Is(err, store.ErrExists) {
			t.Fatalf("Publish of %d bytes over an existing key with IfNotExists: %v, want ErrExists", len(other), err)
		}
		if got := get(t, s, key); !bytes.Equal(got, data) {
			t.Fatal("a fenced Publish changed the existing object")
		}
	}
	st := stageFor(key)
	st.Write([]byte("new"))
	if err := st.Publish(t.Context(), key, store.PutOptions{}); err != nil {
		t.Fatalf("Publish overwrite: %v", err)
	}
	if got := get(t, s, key); string(got) != "new" {
		t.Fatalf("overwrite published %q", got)
	}
}

// checkStagedAbort: st, aborted after data was written, takes no more
// writes and cannot be published (under key).
func checkStagedAbort(t *testing.T, st store.Staged, data []byte, key string) {
	t.Helper()
	st.Write(data)
	st.Abort()
	if _, err := st.Write([]byte("x")); !errors.Is(err, store.ErrAborted) {
		t.Errorf("Write after Abort: %v, want ErrAborted", err)
	}
	if err := st.Publish(t.Context(), key, store.PutOptions{}); !errors.Is(err, store.ErrAborted) {
		t.Errorf("Publish after Abort: %v, want ErrAborted", err)
	}
}

// testKeyedStaged: a store.KeyedStager publishes exactly what was written
// under the key it was staged for (and under no other), never shows it
// before Publish, keeps IfNotExists's fencing whether or not the bytes
// filled a part, and leaves nothing after Abort. large (the store's
// multipart threshold, if it has one) sizes the big objects. Stores
// without KeyedStager skip it.
func testKeyedStaged(t *testing.T, s store.Store, p string, large int64) {
	ks, ok := s.(store.KeyedStager)
	if !ok {
		t.Skip("the store does not implement store.KeyedStager")
	}
	ctx := t.Context()
	stage := func(key string) store.Staged {
		t.Helper()
		st, err := ks.StageAt(ctx, key)
		if err != nil {
			t.Fatalf("StageAt(%q): %v", key, err)
		}
		return st
	}
	write := func(st store.Staged, data []byte) {
		t.Helper()
		for off := 0; off < len(data); off += 70 << 10 {
			if _, err := st.Write(data[off:min(off+70<<10, len(data))]); err != nil {
				t.Fatalf("Write: %v", err)
			}
		}
	}
	data := randomBytes(t, int(max(large, 300<<10)))
	key := p + "wal/a"
	st := stage(key)
	write(st, data)
	if keys := Keys(t, s, p); len(keys) != 0 {
		t.Fatalf("a staged object is listed before Publish: %q", keys)
	}
	if st.Size() != int64(len(data)) {
		t.Fatalf("Size = %d, want %d", st.Size(), len(data))
	}
	if err := st.Publish(ctx, key, store.PutOptions{IfNotExists: true}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if got := get(t, s, key); !bytes.Equal(got, data) {
		t.Fatalf("published %d bytes, want the %d written", len(got), len(data))
	}
	if _, err := st.Write([]byte("x")); err == nil {
		t.Error("Write after Publish succeeded")
	}
	if err := st.Publish(ctx, key, store.PutOptions{}); err == nil {
		t.Error("a second Publish succeeded")
	}
	st.Abort() // a no-op after Publish
	if got := get(t, s, key); !bytes.Equal(got, data) {
		t.Fatal("Abort after Publish changed the object")
	}

	// Small or large (a multipart upload).
	checkStagedFencing(t, s, key, data, stage, []byte("other"), data[:len(data)-1])
	st = stage(p + "wal/empty")
	if err := st.Publish(ctx, p+"wal/empty", store.PutOptions{IfNotExists: true}); err != nil {
		t.Fatalf("Publish empty: %v", err)
	}
	if got := get(t, s, p+"wal/empty"); len(got) != 0 {
		t.Fatalf("empty staged object published as %d bytes", len(got))
	}
	// Only under its key.
	st = stage(p + "wal/b")
	write(st, data)
	if err := st.Publish(ctx, p+"wal/c", store.PutOptions{}); err == nil {
		t.Error("Publish under another key than staged succeeded")
	}

	// Abort leaves nothing, and the staged object is dead.
	checkStagedAbort(t, stage(p+"wal/d"), data, p+"wal/d")
	if keys := Keys(t, s, p); len(keys) != 2 {
		t.Errorf("after Abort the keys are %q, want only the two published", keys)
	}
	if _, err := ks.StageAt(ctx, p+"bad key"); err == nil {
		t.Error("StageAt an invalid key succeeded")
	}
}

// testUploadSweep: what a writer killed mid-upload leaves (a keyed staged
// object never published nor aborted) is removed by SweepUploads under its
// prefix once older than the cutoff, and only then. Stores without
// KeyedStager and UploadSweeper skip it.
func testUploadSweep(t *testing.T, s store.Store, p string, large int64) {
	ks, ok1 := s.(store.KeyedStager)
	sw, ok2 := s.(store.UploadSweeper)
	if !ok1 || !ok2 {
		t.Skip("the store does not implement store.KeyedStager and store.UploadSweeper")
	}
	ctx := t.Context()
	st, err := ks.StageAt(ctx, p+"wal/w/left")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write(randomBytes(t, int(max(large, 300<<10)))); err != nil {
		t.Fatal(err)
	}
	if n, err := sw.SweepUploads(ctx, p+"wal/", time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("sweeping what is older than an hour: %d, %v; want nothing", n, err)
	}
	// The upload starts in the background: sweep until it is found.
	for deadline := time.Now().Add(10 * time.Second); ; {
		n, err := sw.SweepUploads(ctx, p+"wal/", time.Now().Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if n > 1 || time.Now().After(deadline) {
			t.Fatalf("sweeping: %d removed, want the one upload left", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := st.Publish(ctx, p+"wal/w/left", store.PutOptions{}); err == nil {
		t.Error("an upload swept away was published")
	}
	if keys := Keys(t, s, p); len(keys) != 0 {
		t.Errorf("keys after the sweep: %q", keys)
	}
}
