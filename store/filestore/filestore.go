// Package filestore implements store.Store on a local directory.
//
// Each key is a file at root/key. A Put writes a temporary sibling file
// (its name contains '~', a byte no key may hold, so List never returns
// it), fsyncs it, then publishes it with link(2) (IfNotExists: atomic and
// never overwrites) or rename(2), and fsyncs the directory. Readers
// therefore see either the old object or the complete new one. Staged
// objects and Puts of 1 MiB or more are written, and ranges of 1 MiB or
// more read, with O_DIRECT where the file system is a local disk one
// (writer.go).
//
// A directory cannot hold both a key "a" and a key "a/b": unlike S3, a
// file and a directory cannot share a name. The archive layout never
// needs both; such a Put fails with an error.
package filestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kbackup/kbackup/store"
)

var (
	_ store.Store         = (*Store)(nil)
	_ store.Stager        = (*Store)(nil)
	_ store.BuffersWriter = (*staged)(nil)
)

// Permissions of what the store creates: archived records are private.
const (
	dirPerm = 0o700
	// tmpMark is in every temporary file name and in no key.
	tmpMark = "~"
)

// Store is a store.Store on a local directory. It is safe for concurrent
// use, also by several processes on the same directory.
type Store struct {
	root  string
	swept sync.Map // directories whose stale temporary files were removed (Stage)
}

// staleTemp is the age from which a temporary file may be a dead process's
// leftover: a live Put is written within seconds, a staged segment rolls
// at the flush interval. A live writer's file can be older than that (a
// quiet partition's segment with --flush-interval above an hour): its
// writer holds an flock on it, and the sweep skips locked files.
const staleTemp = time.Hour

// New opens the store rooted at the absolute directory root. root is
// created if missing, but its parent must exist (a typo does not grow a
// directory tree).
func New(root string) (*Store, error) {
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("filestore: root %q is not an absolute path", root)
	}
	root = filepath.Clean(root)
	parent := filepath.Dir(root)
	if fi, err := os.Stat(parent); err != nil {
		return nil, fmt.Errorf("filestore: parent of root %s: %w", root, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("filestore: parent of root %s is not a directory", root)
	}
	if err := os.Mkdir(root, dirPerm); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("filestore: create root: %w", err)
	}
	fi, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("filestore: root: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("filestore: root %s is not a directory", root)
	}
	return &Store{root: root}, nil
}

// Root returns the absolute directory the store lives in.
func (s *Store) Root() string { return s.root }

// String returns the store as a file:// URL.
func (s *Store) String() string { return "file://" + filepath.ToSlash(s.root) }

func (s *Store) path(key string) string {
	return filepath.Join(s.root, filepath.FromSlash(key))
}

// Put implements store.Store.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64, opts store.PutOptions) error {
	if err := store.ValidateKey(key); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("put %s: negative size %d", key, size)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	final := s.path(key)
	dir := filepath.Dir(final)
	tmp, err := s.createTemp(dir, filepath.Base(final))
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	tmpName := tmp.Name()
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()
	w := newFileWriter(tmp, size >= directMin)
	if err := copyExact(ctx, w, r, size); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if err := w.finish(); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	committed = true // publish removes the temporary file, whatever happens
	return s.publish(ctx, tmp, final, key, opts)
}

// publish makes the temporary file tmp (written, still open) the object
// key at path final: fsync, then link(2) (IfNotExists) or rename(2), then
// fsync of the directory. tmp is closed and gone afterwards, whatever the
// outcome.
func (s *Store) publish(ctx context.Context, tmp *os.File, final, key string, opts store.PutOptions) error {
	tmpName := tmp.Name()
	published := false
	defer func() {
		if !published {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("put %s: sync: %w", key, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("put %s: close: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	dir := filepath.Dir(final)
	if filepath.Dir(tmpName) != dir {
		// A staged object published under another prefix than its hint:
		// its directories may be missing.
		if err := s.mkdirs(dir); err != nil {
			return fmt.Errorf("put %s: %w", key, err)
		}
	}
	if opts.IfNotExists {
		err := os.Link(tmpName, final)
		os.Remove(tmpName)
		published = true
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("put %s: %w", key, store.ErrExists)
		}
		if err != nil {
			return fmt.Errorf("put %s: %w", key, err)
		}
	} else {
		if err := os.Rename(tmpName, final); err != nil {
			return fmt.Errorf("put %s: %w", key, err)
		}
		published = true
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("put %s: sync directory: %w", key, err)
	}
	return nil
}

// createTemp creates the directories down to dir and a temporary file in
// it. A concurrent Delete may remove a directory that just became empty,
// so an ENOENT is retried a few times.
func (s *Store) createTemp(dir, base string) (*os.File, error) {
	var err error
	for range 10 {
		if err = s.mkdirs(dir); err != nil {
			return nil, err
		}
		var f *os.File
		f, err = os.CreateTemp(dir, base+tmpMark+"*.tmp")
		if err == nil {
			lockTemp(f)
			return f, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	return nil, err
}

// mkdirs creates dir and its missing parents below the root, fsyncing
// each parent so that the new entries survive a crash.
func (s *Store) mkdirs(dir string) error {
	if dir == s.root {
		return nil
	}
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s exists and is not a directory (a key cannot also be a key prefix in a directory store)", dir)
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if err := s.mkdirs(parent); err != nil {
		return err
	}
	if err := os.Mkdir(dir, dirPerm); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil
		}
		if errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("%s: a key cannot also be a key prefix in a directory store: %w", dir, err)
		}
		return err
	}
	return syncDir(parent)
}

// copyExact copies exactly size bytes from r to w, failing if r yields
// fewer or more, and stops when ctx is done.
func copyExact(ctx context.Context, w io.Writer, r io.Reader, size int64) error {
	// A reader that knows its length and writes itself (bytes.Reader, a
	// manifest.SegmentReader) goes straight to the file: no copy through a
	// 32 KiB buffer, one write per piece.
	if lw, ok := r.(interface {
		Len() int
		io.WriterTo
	}); ok && int64(lw.Len()) == size {
		_, err := lw.WriteTo(w)
		return err
	}
	cr := ctxReader{ctx: ctx, r: r}
	n, err := io.CopyN(w, cr, size)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("body has %d bytes, want %d", n, size)
		}
		return err
	}
	var one [1]byte
	m, err := io.ReadFull(cr, one[:])
	if m > 0 {
		return fmt.Errorf("body is longer than %d bytes", size)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// notFound reports whether err means "no such object".
func notFound(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// GetRange implements store.Store.
func (s *Store) GetRange(ctx context.Context, key string, off, length int64) (io.ReadCloser, error) {
	if err := store.ValidateKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	if off < 0 {
		return nil, fmt.Errorf("get %s: negative offset %d", key, off)
	}
	f, err := os.Open(s.path(key))
	if notFound(err) {
		return nil, fmt.Errorf("get %s: %w", key, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	if fi.IsDir() {
		f.Close()
		return nil, fmt.Errorf("get %s: %w", key, store.ErrNotFound)
	}
	size := fi.Size()
	if off > size {
		f.Close()
		return nil, fmt.Errorf("get %s: offset %d is beyond the end of the object (%d bytes)", key, off, size)
	}
	n := size - off
	if length >= 0 && length < n {
		n = length
	}
	if n >= directMin {
		if dr := newDirectReader(f, off, n); dr != nil {
			return dr, nil
		}
	}
	return &rangeReader{SectionReader: io.NewSectionReader(f, off, n), f: f}, nil
}

type rangeReader struct {
	*io.SectionReader
	f *os.File
}

func (r *rangeReader) Close() error { return r.f.Close() }

// Stat implements store.Store.
func (s *Store) Stat(ctx context.Context, key string) (store.ObjectInfo, error) {
	if err := store.ValidateKey(key); err != nil {
		return store.ObjectInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return store.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, err)
	}
	fi, err := os.Stat(s.path(key))
	if notFound(err) || (err == nil && fi.IsDir()) {
		return store.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, store.ErrNotFound)
	}
	if err != nil {
		return store.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, err)
	}
	return store.ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Delete implements store.Store. Directories left empty are removed up to
// the root, best effort.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := store.ValidateKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	p := s.path(key)
	fi, err := os.Lstat(p)
	if notFound(err) || (err == nil && fi.IsDir()) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	if err := os.Remove(p); err != nil && !notFound(err) {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	for dir := filepath.Dir(p); dir != s.root && strings.HasPrefix(dir, s.root); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil { // not empty (or gone): stop
			break
		}
	}
	return nil
}

// Stage implements store.Stager: the bytes go to a temporary file in the
// directory of prefix (named like Put's, so List never returns it), which
// Publish fsyncs and links or renames to the key. A process killed before
// Publish or Abort leaves the temporary file behind, as a killed Put does:
// the first Stage in a directory by a process removes the temporary files
// there older than an hour that no live process holds locked (every
// temporary file is flocked by its writer while open).
func (s *Store) Stage(ctx context.Context, prefix string) (store.Staged, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("stage %s: %w", prefix, err)
	}
	dir, base := s.root, "staged"
	if prefix != "" {
		if err := store.ValidateKey(strings.TrimSuffix(prefix, "/")); err != nil {
			return nil, fmt.Errorf("stage %s: %w", prefix, err)
		}
		p := s.path(prefix)
		if strings.HasSuffix(prefix, "/") {
			dir = p
		} else {
			dir, base = filepath.Dir(p), filepath.Base(p)
		}
	}
	f, err := s.createTemp(dir, base)
	if err != nil {
		return nil, fmt.Errorf("stage %s: %w", prefix, err)
	}
	if _, done := s.swept.LoadOrStore(dir, true); !done {
		sweepTemps(dir, time.Now().Add(-staleTemp))
	}
	return &staged{s: s, f: f, w: newFileWriter(f, true)}, nil
}

// sweepTemps removes the temporary files in dir last written before
// cutoff: what killed processes left (a staged segment, a Put), which no
// reader sees but which take space. Best effort.
func sweepTemps(dir string, cutoff time.Time) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !strings.Contains(e.Name(), tmpMark) || e.IsDir() {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.ModTime().Before(cutoff) {
			removeIfUnused(filepath.Join(dir, e.Name()))
		}
	}
}

// staged is a store.Staged on a temporary file.
type staged struct {
	s    *Store
	mu   sync.Mutex
	f    *os.File // nil once published or aborted
	w    *fileWriter
	size int64
	err  error // why f is nil
}

func (st *staged) Write(p []byte) (int, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.f == nil {
		return 0, st.err
	}
	n, err := st.w.Write(p)
	st.size += int64(n)
	return n, err
}

// WriteBuffers is Write of each of bufs, directly in one writev(2) where
// the file is written directly (fileWriter.WriteBuffers).
func (st *staged) WriteBuffers(bufs [][]byte) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.f == nil {
		return st.err
	}
	if err := st.w.WriteBuffers(bufs); err != nil {
		return err
	}
	for _, b := range bufs {
		st.size += int64(len(b))
	}
	return nil
}

func (st *staged) Size() int64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.size
}

func (st *staged) Publish(ctx context.Context, key string, opts store.PutOptions) error {
	if err := store.ValidateKey(key); err != nil {
		st.Abort()
		return err
	}
	st.mu.Lock()
	f, err := st.f, st.err
	st.f, st.err = nil, fmt.Errorf("staged object already published as %s", key)
	st.mu.Unlock()
	if f == nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if err := st.w.finish(); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("put %s: %w", key, err)
	}
	return st.s.publish(ctx, f, st.s.path(key), key, opts)
}

func (st *staged) Abort() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.f == nil {
		return
	}
	st.f.Close()
	os.Remove(st.f.Name())
	st.f, st.err = nil, store.ErrAborted
}
