package manifest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/kbackup/kbackup/store"
)

// ReadCache serves repeated reads of immutable archive objects from memory
// during one reader's run (a restore). Planning a time-bounded restore reads the commit,
// segment index and block holding each bound (to resolve it and to
// estimate the range), and the lane then starts reading at the same
// commit, index and block: the cache answers those again without a store
// request.
//
// Only what cannot change is cached, as the key layout tells (ParseKey):
// byte ranges of commit entries, segments and flush objects (immutable once
// written; a flush object deleted after its compaction was still what the
// cache holds), and
// non-empty single-key listings of a partition's commits/ or time/ keys
// after a marker (Find and FindTime: later commits sort before the commit
// or after the time key found, so the answer stays the same). Entries
// larger than readCacheMaxEntry are not kept, and the cache holds at most
// readCacheBytes, evicting the oldest. Everything else goes to the store.
type ReadCache struct {
	store.Store
	mu    sync.Mutex
	data  map[string][]byte
	lists map[string]store.ListEntry
	order []string // data keys, oldest first
	size  int64
	// frozen: planning is over (see Freeze).
	frozen bool
}

const (
	readCacheBytes    = 16 << 20
	readCacheMaxEntry = 2 << 20
)

// NewReadCache returns a cache in front of st, filling until Freeze.
func NewReadCache(st store.Store) *ReadCache {
	return &ReadCache{Store: st, data: map[string][]byte{}, lists: map[string]store.ListEntry{}}
}

// immutableKind returns the kind of key when it names an object that never
// changes once written (a commit entry, a segment or a flush object).
func immutableKind(key string) (KeyKind, bool) {
	k, err := ParseKey(key)
	if err != nil || k.Kind != KeyCommit && k.Kind != KeySegment && k.Kind != KeyFlush {
		return 0, false
	}
	return k.Kind, true
}

// cachedListing reports whether o asks for the first commit or time key of
// a partition after a marker (Find, FindTime), whose answer, once there is
// one, never changes.
func cachedListing(o store.ListOptions) bool {
	if o.Limit != 1 || o.StartAfter == "" || o.Delimiter != "" {
		return false
	}
	k, err := ParseKey(o.StartAfter)
	if err != nil {
		return false
	}
	part := PartitionPrefix(k.Topic, k.TopicID, k.Partition)
	switch k.Kind {
	case KeyCommit:
		return o.Prefix == part+"commits/"
	case KeyTime:
		return o.Prefix == part+"time/"
	}
	return false
}

// GetRange serves a cached range or reads it (and caches it while
// planning).
func (c *ReadCache) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	// Whole objects (n < 0) only for commit entries, which are small.
	kind, ok := immutableKind(key)
	if !ok || n > readCacheMaxEntry || n < 0 && kind != KeyCommit {
		return c.Store.GetRange(ctx, key, off, n)
	}
	ck := fmt.Sprintf("%s\x00%d\x00%d", key, off, n)
	c.mu.Lock()
	b, ok := c.data[ck]
	filling := !c.frozen
	if ok && !filling {
		c.dropLocked(ck) // after planning each entry is read once more, by its lane
	}
	c.mu.Unlock()
	if ok {
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	if !filling {
		return c.Store.GetRange(ctx, key, off, n)
	}
	rc, err := c.Store.GetRange(ctx, key, off, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	r := io.Reader(rc)
	if n >= 0 {
		r = io.LimitReader(rc, n)
	}
	if b, err = io.ReadAll(r); err != nil {
		return nil, err
	}
	c.mu.Lock()
	if _, ok := c.data[ck]; !ok && len(b) <= readCacheMaxEntry {
		c.data[ck] = b
		c.order = append(c.order, ck)
		c.size += int64(len(b))
		for c.size > readCacheBytes && len(c.order) > 0 {
			c.dropLocked(c.order[0])
		}
	}
	c.mu.Unlock()
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (c *ReadCache) dropLocked(ck string) {
	b, ok := c.data[ck]
	if !ok {
		return
	}
	delete(c.data, ck)
	c.size -= int64(len(b))
	for i, k := range c.order {
		if k == ck {
			c.order = append(c.order[:i], c.order[i+1:]...)
			break
		}
	}
}

// Freeze ends planning: from now on nothing new is cached, and each cached
// range is dropped once it was served again.
func (c *ReadCache) Freeze() {
	c.mu.Lock()
	c.frozen = true
	c.mu.Unlock()
}

// List serves a cached single-key listing of commits/ or time/ keys after
// a marker, or lists and caches a non-empty answer.
func (c *ReadCache) List(ctx context.Context, o store.ListOptions, fn func(store.ListEntry) error) error {
	if !cachedListing(o) {
		return c.Store.List(ctx, o, fn)
	}
	ck := o.Prefix + "\x00" + o.StartAfter
	c.mu.Lock()
	e, ok := c.lists[ck]
	frozen := c.frozen
	c.mu.Unlock()
	if ok {
		return fn(e)
	}
	if frozen {
		return c.Store.List(ctx, o, fn)
	}
	var got *store.ListEntry
	err := c.Store.List(ctx, o, func(e store.ListEntry) error {
		if got == nil {
			got = &e
		}
		return fn(e)
	})
	if err == nil && got != nil {
		c.mu.Lock()
		if len(c.lists) < 4096 {
			c.lists[ck] = *got
		}
		c.mu.Unlock()
	}
	return err
}
