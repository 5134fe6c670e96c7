package filestore

import (
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// Direct writes. A new file's bytes (a staged segment or flush object, a
// large Put) are written once, fsynced, and rarely read back soon, so where
// the file system allows (setDirect) they go to the disk with O_DIRECT
// instead of through the page cache. The kernel then neither allocates
// cache pages for them nor copies into those pages: on a VM whose freed
// memory returns to the host, that copy into fresh pages was most of a
// --compression none archiver's CPU (docs/PERFORMANCE.md), and an archiver
// beside a broker no longer evicts the broker's cached log. O_DIRECT needs
// the buffer, the length and the file offset aligned, so bytes are copied
// into an aligned buffer and written in whole multiples of directAlign;
// the last partial unit is kept (carry) and written through the page cache
// at the end, with O_DIRECT turned off. The fsync at publish stays: it
// makes the file's size and blocks durable and flushes the disk's cache.
const (
	// directAlign is the alignment of direct writes: the page size, a
	// multiple of every disk's logical block size.
	directAlign = 4096
	// directBuf is the size of the aligned buffers a write is copied into.
	directBuf = 256 << 10
	// directMin is the smallest Put written directly. Smaller objects
	// (commit entries, time keys, an idle partition's segment) stay in the
	// page cache: they are few bytes, and are often read back soon.
	directMin = 1 << 20
)

// alignedBufs recycles the aligned buffers: one is held only during a
// Write, so there are about as many as writes run at once.
var alignedBufs = sync.Pool{New: func() any {
	b := make([]byte, directBuf+directAlign)
	// The Go heap does not move objects, so the address stays aligned.
	off := int(uintptr(unsafe.Pointer(&b[0])) & (directAlign - 1))
	if off != 0 {
		off = directAlign - off
	}
	b = b[off : off+directBuf : off+directBuf]
	return &b
}}

// fileWriter writes a new file from its start: directly where possible
// (see above), through the page cache otherwise or once a direct write
// failed. After an error every later Write and finish fails: a file with
// a hole must never be published.
type fileWriter struct {
	f      *os.File
	direct bool
	carry  []byte // direct: the bytes after the last aligned unit written, < directAlign
	err    error  // sticky
	copied int64  // bytes copied into aligned buffers (what the tests check)
	// tests: the refuseAt-th direct write (from 1) fails as a file system
	// refusing it would, with EINVAL (0: none)
	units, refuseAt int
}

// newFileWriter writes f, which must be new and empty, directly if direct
// and the file system allows it.
func newFileWriter(f *os.File, direct bool) *fileWriter {
	return &fileWriter{f: f, direct: direct && setDirect(f, true)}
}

func (w *fileWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if !w.direct {
		n, err := w.f.Write(p)
		if err != nil {
			w.err = err
		}
		return n, err
	}
	if len(w.carry)+len(p) < directAlign {
		w.carry = append(w.carry, p...)
		return len(p), nil
	}
	n := len(p)
	// Straight from p if its bytes are aligned in memory where they are
	// in the file (manifest.SegmentWriter places uncompressed blocks so):
	// the unit the carry starts is completed through an aligned buffer,
	// the whole units after it are written from p, the rest is carried.
	// Otherwise every unit is copied into an aligned buffer first.
	if head := (directAlign - len(w.carry)) & (directAlign - 1); len(p) >= head+directAlign && aligned(p[head:]) {
		if len(w.carry) > 0 {
			bp := alignedBufs.Get().(*[]byte)
			buf := append(append((*bp)[:0], w.carry...), p[:head]...)
			w.copied += int64(len(buf))
			err := w.writeUnits(buf)
			alignedBufs.Put(bp)
			if err != nil {
				w.err = err
				return 0, err
			}
			p, w.carry = p[head:], w.carry[:0]
		}
		if w.direct {
			whole := len(p) &^ (directAlign - 1)
			if err := w.writeUnits(p[:whole]); err != nil {
				w.err = err
				return 0, err
			}
			p = p[whole:]
		}
	} else {
		bp := alignedBufs.Get().(*[]byte)
		buf := *bp
		for w.direct && len(w.carry)+len(p) >= directAlign {
			m := copy(buf, w.carry)
			k := copy(buf[m:], p)
			p = p[k:]
			fill := m + k
			w.copied += int64(fill)
			whole := fill &^ (directAlign - 1)
			if err := w.writeUnits(buf[:whole]); err != nil {
				alignedBufs.Put(bp)
				w.err = err
				return 0, err
			}
			w.carry = append(w.carry[:0], buf[whole:fill]...)
		}
		alignedBufs.Put(bp)
	}
	if !w.direct { // fell back: the rest through the page cache
		if len(w.carry) > 0 {
			if _, err := w.f.Write(w.carry); err != nil {
				w.err = err
				return 0, err
			}
			w.carry = nil
		}
		if _, err := w.f.Write(p); err != nil {
			w.err = err
			return 0, err
		}
		return n, nil
	}
	w.carry = append(w.carry, p...)
	return n, nil
}

// aligned reports whether b starts on a directAlign boundary in memory.
func aligned(b []byte) bool {
	return uintptr(unsafe.Pointer(unsafe.SliceData(b)))&(directAlign-1) == 0
}

// writeUnits writes b (aligned, whole units) directly; if the file system
// refuses the direct write after all, it turns O_DIRECT off and writes the
// rest of b through the page cache.
func (w *fileWriter) writeUnits(b []byte) error {
	w.units++
	var n int
	var err error
	if w.units == w.refuseAt {
		err = &os.PathError{Op: "write", Path: w.f.Name(), Err: syscall.EINVAL}
	} else {
		n, err = w.f.Write(b)
	}
	if err == nil {
		return nil
	}
	w.direct = false
	if !setDirect(w.f, false) {
		return fmt.Errorf("direct write: %w", err)
	}
	if _, err := w.f.Write(b[n:]); err != nil {
		return err
	}
	return nil
}

// finish writes what is left (the last partial unit) through the page
// cache. f then holds every byte written, for Sync.
func (w *fileWriter) finish() error {
	if w.err != nil {
		return w.err
	}
	if len(w.carry) == 0 {
		return nil
	}
	if w.direct {
		if !setDirect(w.f, false) {
			w.err = fmt.Errorf("turning direct writes off for the last %d bytes failed", len(w.carry))
			return w.err
		}
		w.direct = false
	}
	if _, err := w.f.Write(w.carry); err != nil {
		w.err = err
		return err
	}
	w.carry = nil
	return nil
}

// directReader reads a range of 1 MiB or more of an object directly (see
// "Direct writes"; the compaction of flush objects just written, not a
// restore's blocks, which are smaller): aligned reads into an aligned buffer, served
// from it. If a direct read fails it turns O_DIRECT off and goes on
// through the page cache. O_DIRECT is set on the reader's own descriptor
// (its own open file description): the range is read from the file that
// was opened, even if the key is replaced meanwhile.
type directReader struct {
	f        *os.File
	direct   bool    // f has O_DIRECT
	pos, end int64   // the next byte of the range to return; its end
	bp       *[]byte // the aligned buffer, from alignedBufs
	bufOff   int64   // the file offset of (*bp)[0]
	bufLen   int     // how much of *bp holds the file from bufOff
}

// newDirectReader reads n bytes of f from off directly, or returns nil
// where the file system does not take direct reads (f is then as it was).
func newDirectReader(f *os.File, off, n int64) *directReader {
	if !setDirect(f, true) {
		return nil
	}
	return &directReader{f: f, direct: true, pos: off, end: off + n}
}

func (r *directReader) Read(p []byte) (int, error) {
	if r.pos >= r.end {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if r.direct && (r.pos < r.bufOff || r.pos >= r.bufOff+int64(r.bufLen)) {
		if err := r.fill(); err != nil {
			return 0, err
		}
	}
	if !r.direct {
		n, err := r.f.ReadAt(p[:min(int64(len(p)), r.end-r.pos)], r.pos)
		r.pos += int64(n)
		if err == io.EOF && n > 0 {
			err = nil
		}
		return n, err
	}
	avail := (*r.bp)[r.pos-r.bufOff : min(int64(r.bufLen), r.end-r.bufOff)]
	n := copy(p, avail)
	r.pos += int64(n)
	return n, nil
}

// fill reads the aligned units from the one holding pos into the buffer:
// one pread(2) (os.File.ReadAt would go on after a short read at the end
// of the file, at an unaligned offset, which a direct read refuses).
func (r *directReader) fill() error {
	if r.bp == nil {
		r.bp = alignedBufs.Get().(*[]byte)
	}
	buf := *r.bp
	at := r.pos &^ (directAlign - 1)
	want := min(int64(len(buf)), (r.end-at+directAlign-1)&^(directAlign-1))
	n, err := pread(r.f, buf[:want], at)
	if err != nil {
		// Refused after all: on through the page cache.
		if !setDirect(r.f, false) {
			return fmt.Errorf("direct read failed (%w) and turning it off failed", err)
		}
		r.direct = false
		return nil
	}
	if at+int64(n) <= r.pos { // shorter than when opened: objects never shrink
		return io.ErrUnexpectedEOF
	}
	r.bufOff, r.bufLen = at, n
	return nil
}

func (r *directReader) Close() error {
	if r.bp != nil {
		alignedBufs.Put(r.bp)
		r.bp = nil
	}
	return r.f.Close()
}
