// Package dirprov is the snapshot provider for data directories: a
// broker's directories are copied to a snapshot location and back. It
// serves bare metal without volume snapshots, development, and the
// end-to-end tests against real Kafka brokers.
//
// Layout under the configured path:
//
//	<path>/<cluster>/<cycle>/broker-<id>/<n>/   copy of the broker's n-th directory
//	                                  <n>.complete  written after the copy (empty)
//	                                  <n>.failed    written when the cycle failed
//
// A restore moves the broker's directory aside to
// <dir>.kbackup-rollback-<cycle>-<unix-ms> (kept for rollback; delete it
// by hand once the restored cluster is fine) and copies the snapshot in.
package dirprov

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kbackup/kbackup/snapshot"
)

// Provider copies directories. The zero value is not usable; use New.
type Provider struct {
	root string
	now  func() time.Time
}

var _ snapshot.Provider = (*Provider)(nil)

// New returns a provider keeping snapshots under root (an absolute path).
func New(root string) (*Provider, error) {
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("dir provider: path %q must be absolute", root)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("dir provider: %w", err)
	}
	return &Provider{root: root, now: time.Now}, nil
}

// Name implements snapshot.Provider.
func (p *Provider) Name() string { return "dir" }

// Discover implements snapshot.Provider: the configured directories,
// which must exist.
func (p *Provider) Discover(_ context.Context, b snapshot.BrokerConfig) ([]snapshot.Volume, error) {
	out := make([]snapshot.Volume, 0, len(b.Dirs))
	for _, d := range b.Dirs {
		fi, err := os.Stat(d)
		if err != nil {
			return nil, fmt.Errorf("data directory: %w", err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("data directory %s is not a directory", d)
		}
		out = append(out, snapshot.Volume{ID: filepath.Clean(d)})
	}
	return out, nil
}

// Snapshot implements snapshot.Provider: it copies every directory (the
// copy is the point in time, so the snapshots come back completed).
func (p *Provider) Snapshot(ctx context.Context, req snapshot.SnapRequest) ([]snapshot.Snap, error) {
	base := filepath.Join(p.root, req.Cluster, req.Cycle, "broker-"+strconv.Itoa(int(req.Broker)))
	var out []snapshot.Snap
	for i, v := range req.Volumes {
		dst := filepath.Join(base, strconv.Itoa(i))
		s := snapshot.Snap{Volume: v, ID: dst, State: snapshot.SnapPending}
		out = append(out, s)
		n, err := copyTree(ctx, v.ID, dst)
		if err != nil {
			out[i].State, out[i].Message = snapshot.SnapError, err.Error()
			return out, fmt.Errorf("%w: copy %s: %w", snapshot.ErrSnapshotFailed, v.ID, err)
		}
		if err := os.WriteFile(dst+".complete", nil, 0o644); err != nil {
			return out, err
		}
		out[i].State, out[i].Bytes = snapshot.SnapCompleted, n
	}
	return out, nil
}

// Wait implements snapshot.Provider: a snapshot is complete when its
// .complete marker exists.
func (p *Provider) Wait(_ context.Context, snaps []snapshot.Snap) ([]snapshot.Snap, error) {
	out := append([]snapshot.Snap(nil), snaps...)
	for i, s := range out {
		if _, err := os.Stat(s.ID + ".complete"); err != nil {
			out[i].State = snapshot.SnapError
			return out, fmt.Errorf("%w: %s: %w", snapshot.ErrSnapshotFailed, s.ID, err)
		}
		out[i].State = snapshot.SnapCompleted
	}
	return out, nil
}

// MarkFailed implements snapshot.Provider with a .failed marker.
func (p *Provider) MarkFailed(_ context.Context, snaps []snapshot.Snap) error {
	var errs []error
	for _, s := range snaps {
		if err := p.owned(s.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.MkdirAll(filepath.Dir(s.ID), 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, os.WriteFile(s.ID+".failed", nil, 0o644))
	}
	return errors.Join(errs...)
}

// owned refuses paths outside the provider's root (a record edited by hand
// must not make prune delete something else).
func (p *Provider) owned(path string) error {
	rel, err := filepath.Rel(p.root, filepath.Clean(path))
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") || filepath.IsAbs(rel) {
		return fmt.Errorf("dir provider: snapshot %s is not under %s", path, p.root)
	}
	return nil
}

// Delete implements snapshot.Provider; empty parent directories go too.
func (p *Provider) Delete(_ context.Context, snaps []snapshot.Snap) error {
	var errs []error
	for _, s := range snaps {
		if err := p.owned(s.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		for _, path := range []string{s.ID, s.ID + ".complete", s.ID + ".failed"} {
			if err := os.RemoveAll(path); err != nil {
				errs = append(errs, err)
			}
		}
		// Remove broker-<id>, <cycle> and <cluster> when they became empty.
		for d := filepath.Dir(s.ID); d != p.root && strings.HasPrefix(d, p.root); d = filepath.Dir(d) {
			if os.Remove(d) != nil {
				break
			}
		}
	}
	return errors.Join(errs...)
}

// Restore implements snapshot.Provider: each directory is moved aside and
// the snapshot copied into its place (through a temporary sibling that is
// renamed, so a crash never leaves a half-copied data directory in place).
func (p *Provider) Restore(ctx context.Context, _, cycle string, _ int32, snaps []snapshot.Snap) ([]snapshot.Restored, error) {
	var done []snapshot.Restored
	for _, s := range snaps {
		dir := s.Volume.ID
		if _, err := os.Stat(s.ID + ".complete"); err != nil {
			return done, fmt.Errorf("snapshot %s is not complete: %w", s.ID, err)
		}
		tmp := dir + ".kbackup-restoring"
		if err := os.RemoveAll(tmp); err != nil {
			return done, err
		}
		if _, err := copyTree(ctx, s.ID, tmp); err != nil {
			_ = os.RemoveAll(tmp)
			return done, fmt.Errorf("copy %s: %w", s.ID, err)
		}
		old := fmt.Sprintf("%s.kbackup-rollback-%s-%d", dir, cycle, p.now().UnixMilli())
		if err := os.Rename(dir, old); err != nil && !errors.Is(err, fs.ErrNotExist) {
			_ = os.RemoveAll(tmp)
			return done, fmt.Errorf("move %s aside: %w", dir, err)
		}
		if err := os.Rename(tmp, dir); err != nil {
			_ = os.Rename(old, dir)
			return done, fmt.Errorf("put restored %s in place: %w", dir, err)
		}
		done = append(done, snapshot.Restored{Snap: s, New: dir, Old: old})
	}
	return done, nil
}

// Rollback implements snapshot.Provider: the moved-aside directories go back.
func (p *Provider) Rollback(_ context.Context, _ int32, done []snapshot.Restored) error {
	var errs []error
	for _, r := range done {
		if err := os.RemoveAll(r.New); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.Rename(r.Old, r.New); err != nil {
			errs = append(errs, fmt.Errorf("roll back %s: %w", r.New, err))
		}
	}
	return errors.Join(errs...)
}

// copyTree copies directory src to dst (which must not exist) and returns
// the data bytes copied. Regular files (sparse: zero blocks stay holes),
// directories and symlinks are copied; modes are kept.
func copyTree(ctx context.Context, src, dst string) (int64, error) {
	if _, err := os.Lstat(dst); err == nil {
		return 0, fmt.Errorf("%s already exists", dst)
	}
	var total int64
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && path != src {
			return nil // deleted while copying (hot mode: Kafka removed a segment)
		}
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, info.Mode().Perm()|0o700)
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(l, target)
		case d.Type().IsRegular():
			n, err := copyFile(path, target, info.Mode().Perm())
			total += n
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		default:
			return nil // sockets, fifos: not data
		}
	})
	return total, err
}

// sparseBlock is the unit copyFile looks for zeros in: a block of zeros is
// not written, so it stays a hole in the copy (Kafka preallocates its index
// files, e.g. 10 MiB of which a few KiB are used).
const sparseBlock = 64 << 10

// copyFile copies src to dst, keeping runs of zeros as holes, and returns
// the bytes of data written (holes excluded). The copy has src's size and
// content.
func copyFile(src, dst string, perm fs.FileMode) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
	if err != nil {
		return 0, err
	}
	n, size, err := copySparse(out, in)
	if err == nil {
		// Holes at the end have no data to write: the size comes from
		// truncating.
		err = out.Truncate(size)
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// copySparse copies in to out block by block, seeking over all-zero blocks
// instead of writing them. It returns the data bytes written and the size
// read.
func copySparse(out io.WriteSeeker, in io.Reader) (written, size int64, err error) {
	buf := make([]byte, sparseBlock)
	for {
		n, rerr := io.ReadFull(in, buf)
		if n > 0 {
			if allZero(buf[:n]) {
				if _, err := out.Seek(int64(n), io.SeekCurrent); err != nil {
					return written, size, err
				}
			} else {
				if _, err := out.Write(buf[:n]); err != nil {
					return written, size, err
				}
				written += int64(n)
			}
			size += int64(n)
		}
		switch {
		case rerr == io.EOF || rerr == io.ErrUnexpectedEOF:
			return written, size, nil
		case rerr != nil:
			return written, size, rerr
		}
	}
}

var zeros = make([]byte, sparseBlock)

func allZero(b []byte) bool { return bytes.Equal(b, zeros[:len(b)]) }
