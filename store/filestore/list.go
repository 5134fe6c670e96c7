package filestore

import (
	"context"
	"errors"
	"fmt"
	"io"
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

// readDir returns the usable entries of dir that keep accepts (by
// key-order name: name, or name + "/" for a directory), in no particular
// order: filtering before validating, and ordering only what a listing
// needs (see walk), keeps a LIST with a prefix, start-after or limit in a
// large directory cheap beyond reading it. A directory that vanished
// (concurrent Delete) is empty.
func readDir(dir string, keep func(sortName string) bool) ([]dirItem, error) {
	f, err := os.Open(dir)
	if notFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var items []dirItem
	for {
		ents, err := f.ReadDir(1024)
		for _, e := range ents {
			if it, ok := usable(e, keep); ok {
				items = append(items, it)
			}
		}
		if errors.Is(err, io.EOF) || len(ents) == 0 && err == nil {
			return items, nil
		}
		if notFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// usable reports whether e is an entry a Put made (not a temporary file or
// a foreign name) that keep accepts.
func usable(e fs.DirEntry, keep func(string) bool) (dirItem, bool) {
	name := e.Name()
	it := dirItem{entry: e, sort: name}
	switch {
	case e.IsDir():
		it.sort += "/"
	case !e.Type().IsRegular():
		return it, false
	}
	if !keep(it.sort) || strings.Contains(name, tmpMark) || !validName(name) {
		return it, false
	}
	return it, true
}

// ordered calls fn on items in key order until it returns an error. A
// listing with a small limit (the usual "first key after X") takes the
// smallest items one at a time instead of sorting a large directory.
func ordered(items []dirItem, few bool, fn func(dirItem) error) error {
	cmp := func(a, b dirItem) int { return strings.Compare(a.sort, b.sort) }
	for picked := 0; few && picked < 16 && len(items) > 0; picked++ {
		m := 0
		for i := range items {
			if cmp(items[i], items[m]) < 0 {
				m = i
			}
		}
		it := items[m]
		items[m] = items[len(items)-1]
		items = items[:len(items)-1]
		if err := fn(it); err != nil {
			return err
		}
	}
	slices.SortFunc(items, cmp)
	for _, it := range items {
		if err := fn(it); err != nil {
			return err
		}
	}
	return nil
}

// validName reports whether name can be one segment of a valid key.
func validName(name string) bool {
	return store.ValidateKey(name) == nil
}

// walk lists directory dir, whose keys all start with rel ("" or ending
// in "/").
func (w *walker) walk(dir, rel string) error {
	prefix, after := w.opts.Prefix, w.opts.StartAfter
	items, err := readDir(dir, func(sortName string) bool {
		// (rel + sortName, compared without building it: this runs for
		// every entry of the directory.)
		if !strings.HasSuffix(sortName, "/") {
			return hasPrefixJoined(rel, sortName, prefix) && cmpJoined(rel, sortName, after) > 0
		}
		// A directory: some key below it may match the prefix and
		// follow after.
		return (hasPrefixJoined(rel, sortName, prefix) || isPrefixOfJoined(prefix, rel, sortName)) &&
			(cmpJoined(rel, sortName, after) > 0 || isPrefixOfJoined(after, rel, sortName))
	})
	if err != nil {
		return fmt.Errorf("list: %w", err)
	}
	few := w.opts.Limit > 0 && w.opts.Limit-w.n <= 8
	return ordered(items, few, func(it dirItem) error {
		if err := w.ctx.Err(); err != nil {
			return fmt.Errorf("list: %w", err)
		}
		full := rel + it.sort
		if !it.entry.IsDir() {
			if !strings.HasPrefix(full, prefix) || full <= after {
				return nil
			}
			info, err := it.entry.Info()
			if notFound(err) {
				return nil // deleted meanwhile
			}
			if err != nil {
				return fmt.Errorf("list %s: %w", full, err)
			}
			if err := w.emit(store.ListEntry{Key: full, Size: info.Size()}); err != nil {
				return err
			}
			return nil
		}
		// full is a directory prefix "…/": every key below starts with it.
		if !strings.HasPrefix(full, prefix) && !strings.HasPrefix(prefix, full) {
			return nil
		}
		if after >= full && !strings.HasPrefix(after, full) {
			return nil // every key below is < after
		}
		sub := filepath.Join(dir, it.entry.Name())
		if w.opts.Delimiter != "" && len(full) > len(prefix) {
			// Rolls up into the common prefix full. Like S3 paging with
			// a marker, a prefix equal to StartAfter is not repeated.
			if full == after {
				return nil
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
			return nil
		}
		return w.walk(sub, full)
	})
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
// common prefix, as on S3. It stops at the first such file it reads.
func hasKey(ctx context.Context, dir, rel, after string) (bool, error) {
	keep := func(sortName string) bool {
		return cmpJoined(rel, sortName, after) > 0 || strings.HasSuffix(sortName, "/") && isPrefixOfJoined(after, rel, sortName)
	}
	f, err := os.Open(dir)
	if notFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("list: %w", err)
	}
	defer f.Close()
	var dirs []dirItem
	for {
		if err := ctx.Err(); err != nil {
			return false, fmt.Errorf("list: %w", err)
		}
		ents, err := f.ReadDir(256)
		for _, e := range ents {
			it, ok := usable(e, keep)
			switch {
			case !ok:
			case !e.IsDir():
				return true, nil
			default:
				dirs = append(dirs, it)
			}
		}
		if errors.Is(err, io.EOF) || len(ents) == 0 && err == nil {
			break
		}
		if notFound(err) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("list: %w", err)
		}
	}
	for _, it := range dirs {
		ok, err := hasKey(ctx, filepath.Join(dir, it.entry.Name()), rel+it.sort, after)
		if ok || err != nil {
			return ok, err
		}
	}
	return false, nil
}

// cmpJoined compares a+b with c (as strings.Compare) without building a+b.
func cmpJoined(a, b, c string) int {
	if len(c) <= len(a) {
		if r := strings.Compare(a[:len(c)], c); r != 0 || len(a) == len(c) && b == "" {
			return r
		}
		return 1 // a+b is longer than c and starts with it
	}
	if r := strings.Compare(a, c[:len(a)]); r != 0 {
		return r
	}
	return strings.Compare(b, c[len(a):])
}

// hasPrefixJoined reports whether a+b starts with p.
func hasPrefixJoined(a, b, p string) bool {
	if len(p) <= len(a) {
		return strings.HasPrefix(a, p)
	}
	return strings.HasPrefix(p, a) && strings.HasPrefix(b, p[len(a):])
}

// isPrefixOfJoined reports whether s starts with a+b.
func isPrefixOfJoined(s, a, b string) bool {
	return strings.HasPrefix(s, a) && strings.HasPrefix(s[len(a):], b)
}
