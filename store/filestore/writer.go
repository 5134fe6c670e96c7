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

// alignedBufs recycles the aligned buffers of directBuf bytes that direct
// writes copy bytes into (held until the write's system call returns) and
// direct reads read into (held by a directReader until it is closed).
var alignedBufs = sync.Pool{New: func() any { return newAligned(directBuf) }}

// unitBufs recycles aligned buffers of one unit: the unit a zero-copy
// write completes (the carry and the start of the next block).
var unitBufs = sync.Pool{New: func() any { return newAligned(directAlign) }}

// newAligned returns a buffer of n bytes starting on a directAlign
// boundary in memory (the Go heap does not move objects, so the address
// stays aligned).
func newAligned(n int) *[]byte {
	b := make([]byte, n+directAlign)
	off := int(uintptr(unsafe.Pointer(&b[0])) & (directAlign - 1))
	if off != 0 {
		off = directAlign - off
	}
	b = b[off : off+n : off+n]
	return &b
}

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
	if err := w.WriteBuffers([][]byte{p}); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteBuffers writes bufs in order, as a Write of each would. Directly,
// the whole units they make are written with one writev(2) per
// directVecBytes or so (a streamed segment's blocks queued meanwhile, each
// with its header: one system call and one disk request where a Write
// each took two of both). A buffer whose bytes lie in memory at their
// offset within a page in the file (manifest.SegmentWriter places
// uncompressed blocks so) is written straight from its memory: the unit
// the carry starts is completed through an aligned buffer, the whole units
// after it go as they are, the rest is carried. Any other bytes are copied
// into aligned buffers first.
func (w *fileWriter) WriteBuffers(bufs [][]byte) error {
	if w.err != nil {
		return w.err
	}
	if !w.direct {
		return w.cached(bufs)
	}
	v := vecWriter{w: w}
	defer v.release()
	for i, p := range bufs {
		for len(w.carry)+len(p) >= directAlign {
			if head := (directAlign - len(w.carry)) & (directAlign - 1); len(p) >= head+directAlign && aligned(p[head:]) {
				if len(w.carry) > 0 {
					u := append(append(v.unit(), w.carry...), p[:head]...)
					w.copied += int64(len(u))
					v.add(u)
					p, w.carry = p[head:], w.carry[:0]
				}
				whole := len(p) &^ (directAlign - 1)
				v.add(p[:whole])
				p = p[whole:]
			} else {
				buf := v.buffer()
				m := copy(buf, w.carry)
				k := copy(buf[m:], p)
				p = p[k:]
				fill := m + k
				whole := fill &^ (directAlign - 1)
				w.copied += int64(fill)
				v.add(buf[:whole])
				w.carry = append(w.carry[:0], buf[whole:fill]...)
			}
			if v.full() {
				if err := v.flush(); err != nil {
					return err
				}
				if !w.direct { // refused: the rest through the page cache
					rest := append([][]byte{w.carry, p}, bufs[i+1:]...)
					w.carry = nil
					return w.cached(rest)
				}
			}
		}
		w.carry = append(w.carry, p...)
	}
	if err := v.flush(); err != nil {
		return err
	}
	if !w.direct && len(w.carry) > 0 {
		carry := w.carry
		w.carry = nil
		return w.cached([][]byte{carry})
	}
	return nil
}

// cached writes bufs through the page cache (f without O_DIRECT).
func (w *fileWriter) cached(bufs [][]byte) error {
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		if _, err := w.f.Write(b); err != nil {
			w.err = err
			return err
		}
	}
	return nil
}

// directVecBytes and directVecBufs bound what one writev(2) takes: the
// aligned buffers copies hold until it returns, and the bytes a single
// system call keeps the thread (and the disk's queue) for.
const (
	directVecBytes = 8 << 20
	directVecBufs  = 4
	directVecIovs  = 64
)

// vecWriter gathers one direct writev(2): the whole units to write, in
// order, and the aligned buffers holding the copied ones.
type vecWriter struct {
	w     *fileWriter
	iov   [][]byte
	bytes int
	held  []*[]byte // from alignedBufs (directBuf) and unitBufs (one unit)
	bufs  int       // of held, from alignedBufs
}

// unit returns an empty aligned buffer of one unit, held until the flush.
func (v *vecWriter) unit() []byte {
	bp := unitBufs.Get().(*[]byte)
	v.held = append(v.held, bp)
	return (*bp)[:0]
}

// buffer returns an aligned buffer of directBuf bytes, held until the
// flush.
func (v *vecWriter) buffer() []byte {
	bp := alignedBufs.Get().(*[]byte)
	v.held = append(v.held, bp)
	v.bufs++
	return *bp
}

func (v *vecWriter) add(b []byte) {
	if len(b) > 0 {
		v.iov = append(v.iov, b)
		v.bytes += len(b)
	}
}

// full reports whether the gathered write should go now.
func (v *vecWriter) full() bool {
	return v.bytes >= directVecBytes || v.bufs >= directVecBufs || len(v.iov) >= directVecIovs
}

// flush writes what was gathered directly; if the file system refuses
// the direct write after all, it turns O_DIRECT off and writes the rest
// through the page cache (w.direct false after it).
func (v *vecWriter) flush() error {
	defer v.release()
	if len(v.iov) == 0 {
		return nil
	}
	w := v.w
	w.units++
	var n int
	var err error
	if w.units == w.refuseAt {
		err = &os.PathError{Op: "write", Path: w.f.Name(), Err: syscall.EINVAL}
	} else if n, err = writev(w.f, v.iov); err == nil && n < v.bytes {
		err = io.ErrShortWrite // (a direct write is all or an error; handled as a refusal)
	}
	if err == nil {
		return nil
	}
	w.direct = false
	if !setDirect(w.f, false) {
		w.err = fmt.Errorf("direct write: %w", err)
		return w.err
	}
	for _, b := range v.iov { // from the first byte not written
		if n >= len(b) {
			n -= len(b)
			continue
		}
		if _, err := w.f.Write(b[n:]); err != nil {
			w.err = err
			return err
		}
		n = 0
	}
	return nil
}

// release gives the held buffers back and empties v.
func (v *vecWriter) release() {
	for _, bp := range v.held {
		if cap(*bp) == directAlign {
			unitBufs.Put(bp)
		} else {
			alignedBufs.Put(bp)
		}
	}
	clear(v.iov)
	v.iov, v.held, v.bytes, v.bufs = v.iov[:0], v.held[:0], 0, 0
}

// aligned reports whether b starts on a directAlign boundary in memory.
func aligned(b []byte) bool {
	return uintptr(unsafe.Pointer(unsafe.SliceData(b)))&(directAlign-1) == 0
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
