//go:build linux

package filestore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"unsafe"

	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/testenv"
	"golang.org/x/sys/unix"
)

// directExpected reports whether setDirect should accept a file in dir:
// on Linux, on the local disk file systems it lists.
func directExpected(t *testing.T, dir string) bool {
	t.Helper()
	if runtime.GOOS != "linux" {
		return false
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	switch uint32(st.Type) {
	case unix.EXT4_SUPER_MAGIC, unix.XFS_SUPER_MAGIC, unix.BTRFS_SUPER_MAGIC, unix.F2FS_SUPER_MAGIC:
		return true
	}
	return false
}

// skipOrFailInCI ends a test of direct I/O whose temporary directory dir
// is on a file system without it (tmpfs): a skip on a developer's machine,
// a failure where KBACKUP_TEST_REQUIRE names "directio" (CI's make test),
// so that tests which did not run cannot pass there.
func skipOrFailInCI(t *testing.T, dir string) {
	t.Helper()
	if testenv.Required(testenv.ComponentDirectIO) {
		t.Fatalf("%s takes no direct I/O, so the direct-I/O tests cannot run (required by %s): set TMPDIR to a directory on ext4, XFS, Btrfs or F2FS", dir, testenv.EnvRequire)
	}
	t.Skipf("%s takes no direct I/O (set TMPDIR to a directory on disk to run this test)", dir)
}

// writeChunks writes data to a new file in dir through a fileWriter, in
// chunks of the given sizes (cycled), and returns the file's contents and
// whether the writer was still writing directly after the last Write.
func writeChunks(t *testing.T, dir string, data []byte, sizes []int) ([]byte, bool) {
	t.Helper()
	got, direct, _ := writeChunksCopied(t, dir, data, sizes)
	return got, direct
}

// writeChunksCopied is writeChunks that also returns how many bytes the
// writer copied into its aligned buffers.
func writeChunksCopied(t *testing.T, dir string, data []byte, sizes []int) ([]byte, bool, int64) {
	t.Helper()
	f, err := os.CreateTemp(dir, "w")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := newFileWriter(f, true)
	for i, rest := 0, data; len(rest) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(rest))
		got, err := w.Write(rest[:n])
		if err != nil || got != n {
			t.Fatalf("Write(%d bytes) = %d, %v", n, got, err)
		}
		rest = rest[n:]
	}
	direct, copied := w.direct, w.copied
	if err := w.finish(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return got, direct, copied
}

// TestFileWriter writes files of sizes around the alignment and the
// buffer, in chunk patterns from single bytes to several buffers, and
// checks every byte lands where it belongs, direct or not.
func TestFileWriter(t *testing.T) {
	dir := t.TempDir()
	want := directExpected(t, dir)
	t.Logf("direct writes expected in %s: %v", dir, want)
	rng := rand.New(rand.NewPCG(1, 2))
	n := 3*directBuf + 5*directAlign + 77
	// The same bytes twice: at a page boundary in memory, so that every
	// chunk lies at the same offset within a page as within the file and
	// whole units are written straight from it (how SegmentWriter places
	// uncompressed blocks), and one byte off, so that every byte is copied
	// into an aligned buffer first.
	room := make([]byte, 2*n+3*directAlign)
	off := int(-uintptr(unsafe.Pointer(&room[0]))) & (directAlign - 1)
	data := room[off : off+n]
	sk := off + (n+directAlign)&^(directAlign-1) + 1
	skewed := room[sk : sk+n]
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	copy(skewed, data)
	for _, size := range []int{0, 1, directAlign - 1, directAlign, directAlign + 1, directBuf, directBuf + 1, n} {
		for _, sizes := range [][]int{{1}, {7, 4093}, {directAlign}, {directAlign + 1}, {directBuf - 1}, {directBuf}, {2*directBuf + 3}, {100, 300000, 5, 1 << 20}, {20, 1 << 20}} {
			if size > 20000 && sizes[0] == 1 {
				continue // byte by byte: only the small sizes
			}
			for _, src := range []struct {
				name string
				b    []byte
			}{{"page-aligned", data[:size]}, {"skewed", skewed[:size]}} {
				got, direct, copied := writeChunksCopied(t, dir, src.b, sizes)
				if direct != want {
					t.Fatalf("direct = %v, want %v", direct, want)
				}
				if !bytes.Equal(got, data[:size]) {
					t.Fatalf("size %d in chunks %v from %s memory: the file differs from what was written (%d bytes)", size, sizes, src.name, len(got))
				}
				if !want {
					continue
				}
				// Skewed, every byte in a whole unit is copied. Aligned, a
				// Write of two units or more copies at most the unit it
				// completes, a smaller one at most itself and the carry.
				if src.name == "skewed" && copied < int64(size&^(directAlign-1)) {
					t.Fatalf("size %d in chunks %v from skewed memory: %d bytes copied, want every whole unit's", size, sizes, copied)
				}
				var bound int64
				for i, rest := 0, size; rest > 0; i++ {
					c := min(sizes[i%len(sizes)], rest)
					rest -= c
					if c >= 2*directAlign {
						bound += directAlign
					} else {
						bound += int64(c + directAlign)
					}
				}
				if src.name == "page-aligned" && copied > bound {
					t.Fatalf("size %d in chunks %v from page-aligned memory: %d bytes copied, want at most %d", size, sizes, copied, bound)
				}
			}
		}
	}
	for range 50 { // random chunkings
		size := rng.IntN(n)
		sizes := make([]int, 1+rng.IntN(5))
		for i := range sizes {
			sizes[i] = 1 + rng.IntN(2*directBuf)
		}
		for _, src := range [][]byte{data[:size], skewed[:size]} {
			if got, _ := writeChunks(t, dir, src, sizes); !bytes.Equal(got, data[:size]) {
				t.Fatalf("size %d in chunks %v: the file differs", size, sizes)
			}
		}
	}
}

// TestFileWriterFallback: a direct write the file system refuses (here an
// unaligned buffer, refused with EINVAL; then refusals injected at each
// write in turn, on the copying and the zero-copy path) is written through
// the page cache instead, and so is everything after it, in order.
func TestFileWriterFallback(t *testing.T) {
	dir := t.TempDir()
	if !directExpected(t, dir) {
		skipOrFailInCI(t, dir)
	}
	f, err := os.CreateTemp(dir, "w")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := newFileWriter(f, true)
	if !w.direct {
		t.Fatal("not direct")
	}
	bp := alignedBufs.Get().(*[]byte)
	defer alignedBufs.Put(bp)
	first := (*bp)[1 : 1+directAlign] // misaligned by one byte
	for i := range first {
		first[i] = byte(i)
	}
	v := vecWriter{w: w}
	v.add(first)
	if err := v.flush(); err != nil {
		t.Fatalf("a direct write of a misaligned buffer: %v (want the page-cache fallback)", err)
	}
	if w.direct {
		t.Fatal("still direct after a refused direct write")
	}
	rest := bytes.Repeat([]byte("x"), directBuf+3)
	if _, err := w.Write(rest); err != nil {
		t.Fatal(err)
	}
	if err := w.finish(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if want := append(append([]byte{}, first...), rest...); !bytes.Equal(got, want) {
		t.Fatalf("file has %d bytes, want %d, or differs", len(got), len(want))
	}

	// A refusal at any write of a streamed segment's pattern (a block
	// header, then a block placed at its file offset within a page, written
	// from it; or from skewed memory, copied), or of small writes that
	// leave part of a unit carried when refused, then the rest through the
	// page cache: the file is still every byte in order.
	room := make([]byte, 8<<20)
	off := int(-uintptr(unsafe.Pointer(&room[0]))) & (directAlign - 1)
	for _, c := range []struct {
		skew   int
		chunks []int
	}{{0, []int{20, 1 << 20}}, {1, []int{20, 1 << 20}}, {0, []int{3000, 5000}}} {
		skew := c.skew
		data := room[off+skew : off+skew+3*(20+1<<20)+77]
		for i := range data {
			data[i] = byte(i*13 + skew)
		}
		for refuseAt := 1; refuseAt <= 12; refuseAt++ {
			f, w := refusingWriter(t, dir, refuseAt)
			for rest, i := data, 0; len(rest) > 0; i++ {
				n := min(len(rest), c.chunks[i%2])
				if k, err := w.Write(rest[:n]); err != nil || k != n {
					t.Fatalf("skew %d, refusal at write %d: Write(%d bytes) = %d, %v", skew, refuseAt, n, k, err)
				}
				rest = rest[n:]
			}
			if w.direct != (w.units < refuseAt) {
				t.Fatalf("skew %d, refusal at write %d of %d: direct = %v after it", skew, refuseAt, w.units, w.direct)
			}
			if skew == 0 && c.chunks[1] == 1<<20 && w.copied >= 1<<20 {
				t.Fatalf("skew 0: %d bytes copied: the blocks were not written from their memory", w.copied)
			}
			if got := finishedBytes(t, f, w); !bytes.Equal(got, data) {
				t.Fatalf("skew %d, refusal at write %d: the file (%d bytes) differs from the %d written", skew, refuseAt, len(got), len(data))
			}
		}
	}
}

// TestFileWriterBuffers writes a streamed segment's pattern (a 20-byte
// block header, then a block of about 1 MiB placed at its file offset
// within a page) several blocks per WriteBuffers, from page-aligned memory
// and from skewed memory: every byte lands in order; the blocks placed so
// are written from their memory with one direct write per call (not two
// per block), copying only the unit each header completes; a refusal at any
// of those writes sends it and everything after it through the page cache.
func TestFileWriterBuffers(t *testing.T) {
	dir := t.TempDir()
	if !directExpected(t, dir) {
		skipOrFailInCI(t, dir)
	}
	const hdr, block, blocks, perCall = 20, 1<<20 + 1234, 7, 3
	size := blocks * (hdr + block)
	room := make([]byte, size+2*directAlign)
	for _, skew := range []int{0, 1} {
		// data is the file: the segment header (4 bytes first, as
		// SegmentWriter's), then headers and blocks; each block lies in
		// room at its file offset within a page (skew 0) or a byte past it.
		base := int(-uintptr(unsafe.Pointer(&room[0]))) & (directAlign - 1)
		data := room[base+skew : base+skew+size+4]
		for i := range data {
			data[i] = byte(i*7 + i>>12 + skew)
		}
		var parts [][]byte
		parts = append(parts, data[:4])
		for off := 4; off < len(data); off += hdr + block {
			parts = append(parts, data[off:off+hdr], data[off+hdr:min(off+hdr+block, len(data))])
		}
		for refuseAt := 0; refuseAt <= 4; refuseAt++ {
			f, w := refusingWriter(t, dir, refuseAt)
			calls := 0
			for rest := parts; len(rest) > 0; calls++ {
				n := min(len(rest), 2*perCall)
				if calls == 0 {
					n = 1 // the segment header alone
				}
				if err := w.WriteBuffers(rest[:n]); err != nil {
					t.Fatalf("skew %d, refusal at %d: WriteBuffers: %v", skew, refuseAt, err)
				}
				rest = rest[n:]
			}
			refused := refuseAt > 0 && refuseAt <= w.units
			if w.direct == refused {
				t.Fatalf("skew %d, refusal at write %d of %d: direct = %v after it", skew, refuseAt, w.units, w.direct)
			}
			if skew == 0 && refuseAt == 0 {
				// one direct write per call after the first (whose 4
				// bytes are carried), each of 3 blocks: far under the
				// writev bounds
				if want := calls - 1; w.units != want {
					t.Fatalf("%d direct writes for %d calls of %d blocks, want %d", w.units, calls-1, perCall, want)
				}
				if w.copied > blocks*directAlign {
					t.Fatalf("%d bytes copied, want at most a unit per block (%d)", w.copied, blocks*directAlign)
				}
			}
			if got := finishedBytes(t, f, w); !bytes.Equal(got, data) {
				t.Fatalf("skew %d, refusal at write %d: the file (%d bytes) differs from the %d written", skew, refuseAt, len(got), len(data))
			}
		}
	}
}

// refusingWriter is a fileWriter on a new file in dir whose refuseAt-th
// direct write (from 1; 0: none) is refused as a file system would.
func refusingWriter(t *testing.T, dir string, refuseAt int) (*os.File, *fileWriter) {
	t.Helper()
	f, err := os.CreateTemp(dir, "w")
	if err != nil {
		t.Fatal(err)
	}
	w := newFileWriter(f, true)
	w.refuseAt = refuseAt
	return f, w
}

// finishedBytes finishes w, closes f and returns the file's bytes.
func finishedBytes(t *testing.T, f *os.File, w *fileWriter) []byte {
	t.Helper()
	if err := w.finish(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(f.Name())
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestDirectRefusedOnTmpfs: tmpfs (no disk under it) keeps the page cache.
func TestDirectRefusedOnTmpfs(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("direct writes are Linux only")
	}
	var st unix.Statfs_t
	if unix.Statfs("/dev/shm", &st) != nil || uint32(st.Type) != unix.TMPFS_MAGIC {
		t.Skip("no tmpfs at /dev/shm")
	}
	f, err := os.CreateTemp("/dev/shm", "kbackup-direct-test")
	if err != nil {
		t.Skip(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if setDirect(f, true) {
		t.Fatal("setDirect accepted a file on tmpfs")
	}
}

// residentPages returns how many of the file's pages are in the page cache
// (mincore(2) of a mapping of it) and how many it has.
func residentPages(t *testing.T, path string) (resident, pages int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	pages = (len(m) + os.Getpagesize() - 1) / os.Getpagesize()
	vec := make([]byte, pages)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatalf("mincore: %v", e)
	}
	for _, v := range vec {
		resident += int(v & 1)
	}
	return resident, pages
}

// TestStoreWritesDirect: what the archiver writes through the store (a
// staged object, a large Put) does not land in the page cache where the
// file system takes direct writes, and reads back intact.
func TestStoreWritesDirect(t *testing.T) {
	dir := t.TempDir()
	if !directExpected(t, dir) {
		skipOrFailInCI(t, dir)
	}
	s, err := New(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	data := bytes.Repeat([]byte("0123456789abcdef"), (3<<20+1000)/16)
	st, err := s.Stage(ctx, "segments/")
	if err != nil {
		t.Fatal(err)
	}
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 1<<20+77) // block-sized writes, as the streamer's
		if _, err := st.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	if err := st.Publish(ctx, "segments/staged", store.PutOptions{IfNotExists: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "segments/put", bytes.NewReader(data), int64(len(data)), store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	small := data[:64<<10]
	if err := s.Put(ctx, "segments/small", bytes.NewReader(small), int64(len(small)), store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"segments/staged", "segments/put", "segments/small"} {
		got, err := store.Get(ctx, s, key)
		if err != nil {
			t.Fatal(err)
		}
		want := data
		if key == "segments/small" {
			want = small
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: %d bytes read back, differs from the %d written", key, len(got), len(want))
		}
	}
	// Read back through the page cache above: check residency on fresh
	// objects instead.
	for _, key := range []string{"segments/staged2", "segments/put2"} {
		if key == "segments/staged2" {
			st, err := s.Stage(ctx, "segments/")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Write(data); err != nil {
				t.Fatal(err)
			}
			if err := st.Publish(ctx, key, store.PutOptions{}); err != nil {
				t.Fatal(err)
			}
		} else if err := s.Put(ctx, key, bytes.NewReader(data), int64(len(data)), store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		res, pages := residentPages(t, s.path(key))
		t.Logf("%s: %d of %d pages in the page cache", key, res, pages)
		if res > 1 { // the last partial unit is written through the cache
			t.Errorf("%s: %d of its %d pages are in the page cache: not written directly", key, res, pages)
		}
	}
}

// TestDirectReader reads ranges of 1 MiB and more (read directly) at
// offsets around the alignment, in chunks of several sizes, and checks
// every byte; then the fallback when a direct read fails midway, and a
// file found shorter than when the range was opened.
func TestDirectReader(t *testing.T) {
	dir := t.TempDir()
	direct := directExpected(t, dir)
	s, err := New(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(5, 6))
	data := make([]byte, 3<<20+1234)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	if err := s.Put(ctx, "obj", bytes.NewReader(data), int64(len(data)), store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	size := int64(len(data))
	for _, rg := range [][2]int64{{0, -1}, {1, 1 << 20}, {4095, 2<<20 + 5}, {size - 1<<20, -1}, {5000, 1<<20 + 4096}, {directBuf - 3, directMin + 1}} {
		want := data[rg[0]:]
		if rg[1] >= 0 {
			want = want[:rg[1]]
		}
		for _, chunk := range []int{7, directAlign, 100000, 4 << 20} {
			rc, err := s.GetRange(ctx, "obj", rg[0], rg[1])
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := rc.(*directReader); ok != direct {
				t.Fatalf("range %v: read directly %v, want %v", rg, ok, direct)
			}
			var got []byte
			buf := make([]byte, chunk)
			for {
				n, err := rc.Read(buf)
				got = append(got, buf[:n]...)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if dr, ok := rc.(*directReader); ok && !dr.direct {
				t.Fatalf("range %v in chunks of %d: fell back to the page cache", rg, chunk)
			}
			rc.Close()
			if !bytes.Equal(got, want) {
				t.Fatalf("range %v in chunks of %d: %d bytes read, want %d, or they differ", rg, chunk, len(got), len(want))
			}
		}
	}
	if !direct {
		skipOrFailInCI(t, dir)
	}

	rc, err := s.GetRange(ctx, "obj", 10, -1)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 2*directBuf-10) // to the end of the second buffer
	if _, err := io.ReadFull(rc, head); err != nil {
		t.Fatal(err)
	}
	dr := rc.(*directReader)
	aligned := *dr.bp
	*dr.bp = aligned[1:] // misaligned: the next direct read is refused (EINVAL)
	rest, err := io.ReadAll(rc)
	*dr.bp = aligned // back to the pool as it came
	if err != nil {
		t.Fatalf("after a refused direct read: %v (want the page-cache fallback)", err)
	}
	if dr.direct {
		t.Fatal("still reading directly after a refused direct read")
	}
	rc.Close()
	if got := append(head, rest...); !bytes.Equal(got, data[10:]) {
		t.Fatalf("with the fallback: %d bytes read, want %d, or they differ", len(got), len(data)-10)
	}

	rc, err = s.GetRange(ctx, "obj", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := os.Truncate(s.path("obj"), 2<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(rc); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("reading a range the file no longer has: %v, want %v", err, io.ErrUnexpectedEOF)
	}
}
