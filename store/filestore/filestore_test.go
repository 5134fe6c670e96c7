package filestore_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/filestore"
	"github.com/kbackup/kbackup/store/storetest"
)

func newStore(t *testing.T) *filestore.Store {
	t.Helper()
	s, err := filestore.New(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return newStore(t) }, storetest.LargeObject(3<<20))
}

func TestNew(t *testing.T) {
	dir := t.TempDir()
	if _, err := filestore.New("relative/dir"); err == nil {
		t.Error("New accepted a relative root")
	}
	if _, err := filestore.New(filepath.Join(dir, "missing", "root")); err == nil {
		t.Error("New accepted a root whose parent does not exist")
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := filestore.New(file); err == nil {
		t.Error("New accepted a file as root")
	}
	s, err := filestore.New(dir + "/")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.String(), "file://"+dir; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if _, err := filestore.New(dir); err != nil {
		t.Errorf("New on an existing root: %v", err)
	}
}

// TestNoLeftovers checks that failed and successful Puts leave no
// temporary files, and that Delete removes emptied directories.
func TestNoLeftovers(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	if err := s.Put(ctx, "a/b/c", strings.NewReader("xy"), 2, store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "a/b/c", strings.NewReader("x"), 2, store.PutOptions{}); err == nil {
		t.Fatal("short Put succeeded")
	}
	if err := s.Put(ctx, "a/b/c", strings.NewReader("zz"), 2, store.PutOptions{IfNotExists: true}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("IfNotExists: %v", err)
	}
	ents, _ := os.ReadDir(filepath.Join(s.Root(), "a", "b"))
	if len(ents) != 1 || ents[0].Name() != "c" {
		t.Errorf("directory holds %v, want only c", ents)
	}
	if err := s.Delete(ctx, "a/b/c"); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(s.Root()); len(ents) != 0 {
		t.Errorf("root holds %v after deleting the only key", ents)
	}
}

// TestListSkipsForeignFiles checks that temporary files, invalid names
// and empty directories are not listed.
func TestListSkipsForeignFiles(t *testing.T) {
	s := newStore(t)
	root := s.Root()
	for _, d := range []string{"empty/deeper", "x"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"x/k~123.tmp", "x/has space", "x/ok"} {
		if err := os.WriteFile(filepath.Join(root, f), []byte("1"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, opts := range []store.ListOptions{{}, {Delimiter: "/"}} {
		err := s.List(t.Context(), opts, func(e store.ListEntry) error {
			got = append(got, e.Key)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"x/ok", "x/"}; !equal(got, want) {
		t.Errorf("List = %q, want %q", got, want)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestKeyPrefixConflict documents the directory-store limitation: a key
// cannot also be a directory.
func TestKeyPrefixConflict(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	if err := s.Put(ctx, "a", bytes.NewReader(nil), 0, store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	err := s.Put(ctx, "a/b", bytes.NewReader(nil), 0, store.PutOptions{})
	if err == nil || !strings.Contains(err.Error(), "a/b") {
		t.Errorf("Put under an object: err = %v, want an error naming the key", err)
	}
}

// FuzzValidateKey checks that validation never panics, and that every
// accepted key round-trips through Put, Get and List.
func FuzzValidateKey(f *testing.F) {
	for _, k := range []string{"a", "a/b", "a-b.c_d=e", "..", "a//b", "/a", "a/", `a\b`, "a/./b", ".a", "a."} {
		f.Add(k)
	}
	s, err := filestore.New(filepath.Join(f.TempDir(), "store"))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if err := store.ValidateKey(key); err != nil {
			if !errors.Is(err, store.ErrInvalidKey) {
				t.Fatalf("ValidateKey(%q) = %v, not ErrInvalidKey", key, err)
			}
			return
		}
		ctx := t.Context()
		if err := s.Put(ctx, key, strings.NewReader(key), int64(len(key)), store.PutOptions{}); err != nil {
			if strings.Contains(err.Error(), "key prefix") || strings.Contains(err.Error(), "name too long") || strings.Contains(err.Error(), "is a directory") || strings.Contains(err.Error(), "file exists") {
				return // a file/directory clash with an earlier input, or a long name
			}
			t.Fatalf("Put(%q): %v", key, err)
		}
		defer s.Delete(ctx, key)
		b, err := store.Get(ctx, s, key)
		if err != nil || string(b) != key {
			t.Fatalf("Get(%q) = %q, %v", key, b, err)
		}
		found := false
		err = s.List(ctx, store.ListOptions{Prefix: key}, func(e store.ListEntry) error {
			found = found || e.Key == key
			return nil
		})
		if err != nil || !found {
			t.Fatalf("List(prefix %q) found=%v err=%v", key, found, err)
		}
	})
}

// TestStageSweepsStaleTemps: the first Stage in a directory removes the
// temporary files a killed process left there an hour or more ago, and
// keeps younger ones (a live writer's) and every key.
func TestStageSweepsStaleTemps(t *testing.T) {
	s, err := filestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := s.Put(ctx, "p/segments/a", strings.NewReader("x"), 1, store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(s.Root(), "p", "segments")
	old, young := filepath.Join(dir, "staged~1.tmp"), filepath.Join(dir, "b~2.tmp")
	for _, f := range []string{old, young} {
		if err := os.WriteFile(f, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stage(ctx, "p/segments/")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Abort()
	if _, err := os.Stat(old); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the stale temporary file is still there: %v", err)
	}
	if _, err := os.Stat(young); err != nil {
		t.Errorf("a young temporary file was removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "a")); err != nil {
		t.Errorf("a key was removed: %v", err)
	}
}

// TestStageSweepKeepsLiveStaged: a staged object whose writer is alive is
// not swept however old it is (a quiet partition's segment under a flush
// interval above an hour): another store on the same directory (another
// archiver) starting then leaves it, and it publishes.
func TestStageSweepKeepsLiveStaged(t *testing.T) {
	if runtime.GOOS != "linux" && runtime.GOOS != "darwin" && !strings.HasSuffix(runtime.GOOS, "bsd") {
		t.Skip("flock-based liveness only where flock exists")
	}
	root := t.TempDir()
	ctx := t.Context()
	writer, err := filestore.New(root)
	if err != nil {
		t.Fatal(err)
	}
	live, err := writer.Stage(ctx, "p/segments/")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Abort()
	if _, err := live.Write([]byte("first block")); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "p", "segments")
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 1 {
		t.Fatalf("staged files: %v %v", ents, err)
	}
	livePath := filepath.Join(dir, ents[0].Name())
	dead := filepath.Join(dir, "staged~dead.tmp") // a killed writer's: no lock
	if err := os.WriteFile(dead, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-3 * time.Hour)
	for _, f := range []string{livePath, dead} {
		if err := os.Chtimes(f, past, past); err != nil {
			t.Fatal(err)
		}
	}
	other, err := filestore.New(root)
	if err != nil {
		t.Fatal(err)
	}
	st, err := other.Stage(ctx, "p/segments/")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Abort()
	if _, err := os.Stat(dead); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the dead writer's temporary file is still there: %v", err)
	}
	if _, err := os.Stat(livePath); err != nil {
		t.Fatalf("the live writer's staged file was swept: %v", err)
	}
	if _, err := live.Write([]byte(", second block")); err != nil {
		t.Fatal(err)
	}
	if err := live.Publish(ctx, "p/segments/s1", store.PutOptions{IfNotExists: true}); err != nil {
		t.Fatalf("publish after another store's sweep: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "s1"))
	if err != nil || string(got) != "first block, second block" {
		t.Fatalf("published %q, %v", got, err)
	}
}
