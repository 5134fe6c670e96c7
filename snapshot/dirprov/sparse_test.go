package dirprov

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestCopyKeepsSparseFiles: a preallocated Kafka index (10 MiB, a few KiB
// used) is copied with its holes: same size and content, a few KiB of disk.
func TestCopyKeepsSparseFiles(t *testing.T) {
	t.Parallel()
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "copy")
	idx := filepath.Join(src, "00000000000000000000.index")
	f, err := os.Create(idx)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(10 << 20); err != nil {
		t.Fatal(err)
	}
	used := bytes.Repeat([]byte{1, 2, 3, 4}, 1024)
	if _, err := f.WriteAt(used, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(used, 5<<20+17); err != nil { // data not aligned to a block
		t.Fatal(err)
	}
	f.Close()
	dense := filepath.Join(src, "00000000000000000000.log")
	if err := os.WriteFile(dense, bytes.Repeat([]byte("record"), 100000), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := copyTree(context.Background(), src, dst)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{filepath.Base(idx), filepath.Base(dense)} {
		a, _ := os.ReadFile(filepath.Join(src, name))
		b, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil || !bytes.Equal(a, b) {
			t.Fatalf("%s: copy differs (%d vs %d bytes): %v", name, len(a), len(b), err)
		}
	}
	if n >= 1<<20 {
		t.Errorf("copyTree reports %d bytes written; want the data only (< 1 MiB)", n)
	}
	if alloc, ok := allocated(t, filepath.Join(dst, filepath.Base(idx))); ok && alloc > 1<<20 {
		t.Errorf("the copied index occupies %d bytes on disk: holes were filled", alloc)
	}
}
