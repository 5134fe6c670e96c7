package filestore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kbackup/kbackup/store"
)

// errStop ends a walk early once Limit entries were delivered.
var errStop = errors.New("limit reached")

// List implements store.Store. Output is in byte order of the full keys,
// as on S3: per directory, files sort by their name and subdirectories by
// their name plus "/", which orders "a-b" < "a.b" < "a/…" < "a0".
func (s *Store) List(ctx context.Context, opts store.ListOptions, fn func(store.ListEntry) error) error {
	if opts.Delimiter != "" && opts.Delimiter != "/" {
		return fmt.Errorf("list %s: unsupported delimiter %q (only \"/\")", s, opts.Delimiter)
	}
	if opts.Limit < 0 {
		return fmt.Errorf("list %s: negative limit %d", s, opts.Limit)
	}
	w := &walker{ctx: ctx, opts: opts, fn: fn}
	err := w.walk(s.root, "")
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

type walker struct {
	ctx  context.Context
	opts store.ListOptions
	fn   func(store.ListEntry) error
	n    int
}

type dirItem struct {
	entry fs.DirEntry
	sort  string // name, or name + "/" for a directory
}

// readDir returns the usable entries of dir in key order. A directory that
// vanished (concurrent Delete) is empty.
func readDir(dir string) ([]dirItem, error) {
	ents, err := os.ReadDir(dir)
	if notFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	items := make([]dirItem, 0, len(ents))
	for _, e := range ents {
		name := e.Name()
		if strings.Contains(name, tmpMark) || !validName(name) {
			continue // temporary file, or not something a Put made
		}
		switch {
		case e.IsDir():
			items = append(items, dirItem{e, name + "/"})
		case e.Type().IsRegular():
			items = append(items, dirItem{e, name})
		}
	}
	slices.SortFunc(items, func(a, b dirItem) int { return strings.Compare(a.sort, b.sort) })
	return items, nil
}

// validName reports whether name can be one segment of a valid key.
func validName(name string) bool {
	return store.ValidateKey(name) == nil
}

// walk lists directory dir, whose keys all start with rel ("" or ending
// in "/").
func (w *walker) walk(dir, rel string) error {
	items, err := readDir(dir)
	if err != nil {
		return fmt.Errorf("list: %w", err)
	}
	prefix, after := w.opts.Prefix, w.opts.StartAfter
	for _, it := range items {
		if err := w.ctx.Err(); err != nil {
			return fmt.Errorf("list: %w", err)
		}
		full := rel + it.sort
		if !it.entry.IsDir() {
			if !strings.HasPrefix(full, prefix) || full <= after {
				continue
			}
			info, err := it.entry.Info()
			if notFound(err) {
				continue // deleted meanwhile
			}
			if err != nil {
				return fmt.Errorf("list %s: %w", full, err)
			}
			if err := w.emit(store.ListEntry{Key: full, Size: info.Size()}); err != nil {
				return err
			}
			continue
		}
		// full is a directory prefix "…/": every key below starts with it.
		if !strings.HasPrefix(full, prefix) && !strings.HasPrefix(prefix, full) {
			continue
		}
		if after >= full && !strings.HasPrefix(after, full) {
			continue // every key below is < after
		}
		sub := filepath.Join(dir, it.entry.Name())
		if w.opts.Delimiter != "" && len(full) > len(prefix) {
			// Rolls up into the common prefix full. Like S3 paging with
			// a marker, a prefix equal to StartAfter is not repeated.
			if full == after {
				continue
			}
			ok, err := hasKey(w.ctx, sub, full, after)
			if err != nil {
				return err
			}
			if ok {
				if err := w.emit(store.ListEntry{Key: full, IsPrefix: true}); err != nil {
					return err
				}
			}
			continue
		}
		if err := w.walk(sub, full); err != nil {
			return err
		}
	}
	return nil
}

func (w *walker) emit(e store.ListEntry) error {
	if err := w.fn(e); err != nil {
		return err
	}
	w.n++
	if w.opts.Limit > 0 && w.n >= w.opts.Limit {
		return errStop
	}
	return nil
}

// hasKey reports whether directory dir (keys starting with rel) holds at
// least one key > after. Empty directories left behind do not make a
// common prefix, as on S3.
func hasKey(ctx context.Context, dir, rel, after string) (bool, error) {
	items, err := readDir(dir)
	if err != nil {
		return false, fmt.Errorf("list: %w", err)
	}
	for _, it := range items {
		if err := ctx.Err(); err != nil {
			return false, fmt.Errorf("list: %w", err)
		}
		full := rel + it.sort
		if !it.entry.IsDir() {
			if full > after {
				return true, nil
			}
			continue
		}
		if after >= full && !strings.HasPrefix(after, full) {
			continue
		}
		ok, err := hasKey(ctx, filepath.Join(dir, it.entry.Name()), full, after)
		if ok || err != nil {
			return ok, err
		}
	}
	return false, nil
}
