package filestore

import (
	"fmt"
	"os"
	"sync"
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
	bp := alignedBufs.Get().(*[]byte)
	defer alignedBufs.Put(bp)
	buf := *bp
	n := len(p)
	for w.direct && len(w.carry)+len(p) >= directAlign {
		m := copy(buf, w.carry)
		k := copy(buf[m:], p)
		p = p[k:]
		fill := m + k
		whole := fill &^ (directAlign - 1)
		if err := w.writeUnits(buf[:whole]); err != nil {
			w.err = err
			return 0, err
		}
		w.carry = append(w.carry[:0], buf[whole:fill]...)
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

// writeUnits writes b (aligned, whole units) directly; if the file system
// refuses the direct write after all, it turns O_DIRECT off and writes the
// rest of b through the page cache.
func (w *fileWriter) writeUnits(b []byte) error {
	n, err := w.f.Write(b)
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
