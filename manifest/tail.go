package manifest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/kbackup/kbackup/store"
)

// The uncompacted tail of a partition (format version 3, docs/FORMAT.md
// §12.4): the entries of flush objects above the compacted chain's head,
// found from the partition's newest claim, its writer's newest tail index
// and the writer's flush objects after it, then by walking entries back.

// tailView is what a reader found of a partition's tail.
type tailView struct {
	claim   *Claim
	anchors []EntryRef           // ascending by Start, no two alike; the last is the newest entry
	cache   map[int64]*tailEntry // by start
	byRef   map[string]*tailEntry
}

type tailEntry struct {
	ref    EntryRef
	prev   *EntryRef
	commit *Commit
}

// walCache holds decoded flush tables and tail index headers (immutable
// objects) of one Archive, bounded by count.
type walCache struct {
	mu     sync.Mutex
	tables map[string]*FlushTable
	heads  map[string]*TailIndexHeader
}

const walCacheMax = 4096

func (w *walCache) table(key string) *FlushTable {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.tables[key]
}

func (w *walCache) putTable(key string, t *FlushTable) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.tables == nil || len(w.tables) >= walCacheMax {
		w.tables = map[string]*FlushTable{}
	}
	w.tables[key] = t
}

func (w *walCache) head(key string) *TailIndexHeader {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.heads[key]
}

func (w *walCache) putHead(key string, h *TailIndexHeader) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.heads == nil || len(w.heads) >= walCacheMax {
		w.heads = map[string]*TailIndexHeader{}
	}
	w.heads[key] = h
}

// readAt reads n bytes at off of key (exactly n, or a corruption error).
func readAt(ctx context.Context, st store.Store, key string, off, n int64) ([]byte, error) {
	rc, err := st.GetRange(ctx, key, off, n)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	defer rc.Close()
	b := make([]byte, n)
	k, err := io.ReadFull(rc, b)
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %w", key, corruptf("truncated: %d of %d bytes at %d", k, n, off))
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	return b, nil
}

// flushTableReadSize is how much of a flush object's end a reader GETs to
// find its table: one request for tables of up to ~1,000 rows.
const flushTableReadSize = 64 << 10

// ReadFlushTable reads the table of the flush object key of size bytes
// (from a listing): usually one ranged GET, cached per Archive.
func (a *Archive) ReadFlushTable(ctx context.Context, key string, size int64) (*FlushTable, error) {
	if t := a.wal.table(key); t != nil {
		return t, nil
	}
	if size < flushTrailerSize {
		return nil, fmt.Errorf("%s: %w", key, corruptf("%d bytes is too short for a flush object", size))
	}
	n := min(size, flushTableReadSize)
	b, err := readAt(ctx, a.st, key, size-n, n)
	if err != nil {
		return nil, err
	}
	tr, err := DecodeFlushTrailer(b, size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	if need := FlushTableLen(tr.Rows); need > n {
		if b, err = readAt(ctx, a.st, key, size-need, need); err != nil {
			return nil, err
		}
	}
	t, err := DecodeFlushTable(b, size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	if k, _ := ParseKey(key); k.Kind != KeyFlush || k.Writer != t.Writer || k.Seq != t.Seq {
		return nil, fmt.Errorf("%s: %w", key, corruptf("table of writer %s flush %d", t.Writer, t.Seq))
	}
	a.wal.putTable(key, t)
	return t, nil
}

// readTailIndex reads a partition's section of the tail index key: the
// header (cached) and the section, usually two ranged GETs. ok is false when
// the index has no section for the partition.
func (a *Archive) readTailIndex(ctx context.Context, key string, id TopicID, partition int32) (*TailRow, TailRefs, bool, error) {
	h := a.wal.head(key)
	if h == nil {
		b, err := readAt(ctx, a.st, key, 0, tailHeaderSize)
		if err != nil {
			return nil, TailRefs{}, false, err
		}
		n, err := TailHeaderLen(b)
		if err != nil {
			return nil, TailRefs{}, false, fmt.Errorf("%s: %w", key, err)
		}
		if b, err = readAt(ctx, a.st, key, 0, n); err != nil {
			return nil, TailRefs{}, false, err
		}
		if h, err = DecodeTailHeader(b); err != nil {
			return nil, TailRefs{}, false, fmt.Errorf("%s: %w", key, err)
		}
		if k, _ := ParseKey(key); k.Kind != KeyTailIndex || k.Writer != h.Writer || k.Seq != h.Seq {
			return nil, TailRefs{}, false, fmt.Errorf("%s: %w", key, corruptf("tail index of writer %s flush %d", h.Writer, h.Seq))
		}
		a.wal.putHead(key, h)
	}
	r := h.Row(id, partition)
	if r == nil {
		return nil, TailRefs{}, false, nil
	}
	b, err := readAt(ctx, a.st, key, r.Pos, r.Len)
	if err != nil {
		return nil, TailRefs{}, false, err
	}
	refs, err := DecodeTailSection(b)
	if err != nil {
		return nil, TailRefs{}, false, fmt.Errorf("%s: %w", key, err)
	}
	return r, refs, true, nil
}

// NewestClaim returns the partition's newest claim, or nil if it has none
// (a partition only ever written by version-1 or -2 writers). One LIST, and
// a GET when there is a claim.
func (p *PartitionLog) NewestClaim(ctx context.Context) (*Claim, error) {
	key, err := p.firstAfter(ctx, p.prefix+"claims/", "")
	if err != nil || key == "" {
		return nil, err
	}
	k, err := ParseKey(key)
	if err != nil || k.Kind != KeyClaim {
		return nil, fmt.Errorf("%s: %w", key, corruptf("not a claim key"))
	}
	return p.ReadClaim(ctx, k.Epoch)
}

// ReadClaim reads the claim of an epoch; an error wrapping
// store.ErrNotFound if there is none.
func (p *PartitionLog) ReadClaim(ctx context.Context, epoch int64) (*Claim, error) {
	key := ClaimKey(p.prefix, epoch)
	b, err := store.Get(ctx, p.st, key)
	if err != nil {
		return nil, fmt.Errorf("read claim %s: %w", key, err)
	}
	c, err := DecodeClaim(b)
	if err != nil {
		return nil, fmt.Errorf("claim %s: %w", key, err)
	}
	if c.Epoch != epoch {
		return nil, fmt.Errorf("claim %s: %w", key, corruptf("holds epoch %d", c.Epoch))
	}
	return c, nil
}

// packed reports whether the archive may hold claims (format version 3).
func (p *PartitionLog) packed() bool {
	return p.arch != nil && p.arch.FormatVersion() >= PackedFormatVersion
}

// loadTail finds the partition's tail anew (docs/FORMAT.md §12.4, "Head"):
// nil when the partition has no claim.
func (p *PartitionLog) loadTail(ctx context.Context) (*tailView, error) {
	if !p.packed() {
		return nil, nil
	}
	claim, err := p.NewestClaim(ctx)
	if err != nil || claim == nil {
		return nil, err
	}
	v := &tailView{claim: claim, cache: map[int64]*tailEntry{}, byRef: map[string]*tailEntry{}}
	var refs *TailRefs
	if claim.Tail != nil {
		refs = claim.Tail
	}
	// The writer's newest tail index, if it has a section of this epoch.
	indexSeq := int64(-1)
	ikey, err := p.firstAfter(ctx, FlushPrefix(claim.Writer)+"tail/", "")
	if err != nil {
		return nil, err
	}
	if ikey != "" {
		k, err := ParseKey(ikey)
		if err != nil || k.Kind != KeyTailIndex {
			return nil, fmt.Errorf("%s: %w", ikey, corruptf("not a tail index key"))
		}
		indexSeq = k.Seq
		row, r, ok, err := p.arch.readTailIndex(ctx, ikey, p.TopicID, p.Partition)
		if err != nil {
			return nil, err
		}
		if ok && row.Epoch == claim.Epoch {
			refs = &r
		}
	}
	if refs != nil {
		v.anchors = append(v.anchors, refs.Sparse...)
		v.anchors = append(v.anchors, refs.Newest)
	}
	// The writer's flush objects after the index, newest first: the newest
	// entry of this epoch is the tail's head (older ones are reached by
	// walking back).
	var newer []store.ListEntry
	stop := ""
	if indexSeq >= 0 {
		stop = FlushKey(claim.Writer, indexSeq)
	}
	err = p.st.List(ctx, store.ListOptions{Prefix: FlushPrefix(claim.Writer)}, func(e store.ListEntry) error {
		if strings.HasPrefix(e.Key, FlushPrefix(claim.Writer)+"tail/") || stop != "" && e.Key >= stop {
			return errStopList
		}
		newer = append(newer, e)
		return nil
	})
	if err != nil && !errors.Is(err, errStopList) {
		return nil, fmt.Errorf("list %s: %w", FlushPrefix(claim.Writer), err)
	}
	for _, e := range newer {
		t, err := p.arch.ReadFlushTable(ctx, e.Key, e.Size)
		if err != nil {
			return nil, err
		}
		if r := t.Row(p.TopicID, p.Partition); r != nil && r.Epoch == claim.Epoch {
			v.anchors = append(v.anchors, r.Ref)
			break
		}
	}
	sort.Slice(v.anchors, func(i, j int) bool { return v.anchors[i].Start < v.anchors[j].Start })
	out := v.anchors[:0]
	for _, a := range v.anchors {
		if len(out) > 0 && out[len(out)-1].Start == a.Start {
			out[len(out)-1] = a
			continue
		}
		out = append(out, a)
	}
	v.anchors = out
	return v, nil
}

var errStopList = errors.New("stop listing")

// newest is the tail's last entry, or nil.
func (v *tailView) newest() *EntryRef {
	if v == nil || len(v.anchors) == 0 {
		return nil
	}
	return &v.anchors[len(v.anchors)-1]
}

// TailEntryError is a failure to read or link one tail entry: Key is the
// flush object holding it. Its message is Err's (which names the object).
type TailEntryError struct {
	Key string
	Pos int64
	Err error
}

func (e *TailEntryError) Error() string { return e.Err.Error() }

func (e *TailEntryError) Unwrap() error { return e.Err }

// readEntry reads one entry (one ranged GET, cached in the view) and checks
// it is an entry of the partition; a ref with End >= 0 must match it.
func (p *PartitionLog) readEntry(ctx context.Context, v *tailView, ref EntryRef) (*tailEntry, error) {
	id := fmt.Sprintf("%s@%d", ref.Key(), ref.Pos)
	if e, ok := v.byRef[id]; ok {
		return e, nil
	}
	b, err := readAt(ctx, p.st, ref.Key(), ref.Pos, ref.Len)
	if err != nil {
		return nil, &TailEntryError{Key: ref.Key(), Pos: ref.Pos, Err: err}
	}
	prev, c, err := DecodeEntry(b)
	if err != nil {
		return nil, &TailEntryError{Key: ref.Key(), Pos: ref.Pos, Err: fmt.Errorf("%s: %w", id, err)}
	}
	if c.Topic != p.Topic || c.TopicID != p.TopicID || c.Partition != p.Partition || c.SegmentKey != ref.Key() ||
		c.SegmentOffset+c.SegmentSize > ref.Pos || (ref.End >= 0 && (c.Start != ref.Start || c.End != ref.End)) {
		return nil, &TailEntryError{Key: ref.Key(), Pos: ref.Pos,
			Err: fmt.Errorf("%s: %w", id, corruptf("entry holds %s/%d %d..%d in %s", c.Topic, c.Partition, c.Start, c.End, c.SegmentKey))}
	}
	ref.Start, ref.End, ref.RunMax = c.Start, c.End, c.RunningMaxTimestamp
	e := &tailEntry{ref: ref, prev: prev, commit: c}
	v.cache[c.Start] = e
	v.byRef[id] = e
	return e, nil
}

// tailFind returns the tail entry holding offset, or nil if the tail (as
// v found it) ends before it.
func (p *PartitionLog) tailFind(ctx context.Context, v *tailView, offset int64) (*Commit, error) {
	if e, ok := v.cache[offset]; ok {
		return e.commit, nil
	}
	i := sort.Search(len(v.anchors), func(i int) bool { return v.anchors[i].End >= offset })
	if i == len(v.anchors) {
		return nil, nil
	}
	path, err := p.walkBack(ctx, v, v.anchors[i], func(c *Commit) bool { return c.Start <= offset })
	if err != nil {
		return nil, err
	}
	if c := path[len(path)-1].commit; c.Covers(offset) {
		return c, nil
	}
	return nil, fmt.Errorf("%s offset %d: %w", p, offset, corruptf("not in the tail entry reached"))
}

// walkBack reads entries from ref backwards until stop(entry) holds or the
// entry has no predecessor, checking that each is its successor's
// predecessor. It returns the entries read, newest first.
func (p *PartitionLog) walkBack(ctx context.Context, v *tailView, ref EntryRef, stop func(*Commit) bool) ([]*tailEntry, error) {
	var path []*tailEntry
	for len(path) < maxTailWalk {
		e, err := p.readEntry(ctx, v, ref)
		if err != nil {
			return nil, err
		}
		if len(path) > 0 && e.commit.End != path[len(path)-1].commit.Start-1 {
			last := path[len(path)-1].commit
			return nil, &TailEntryError{Key: e.ref.Key(), Pos: e.ref.Pos,
				Err: fmt.Errorf("%s: %w", p, corruptf("tail entry %d..%d follows %d..%d (%s@%d)", last.Start, last.End, e.commit.Start, e.commit.End, e.ref.Key(), e.ref.Pos))}
		}
		path = append(path, e)
		if stop(e.commit) || e.prev == nil {
			return path, nil
		}
		ref = *e.prev
		ref.Start, ref.End = -1, -1
	}
	return nil, fmt.Errorf("%s: %w", p, corruptf("tail walk of more than %d entries", maxTailWalk))
}

// maxTailWalk bounds a walk back (anchors are TailSparseEvery apart; a
// reader may start from an older anchor than the next one).
const maxTailWalk = 1 << 16

// tailFindTime returns the first tail entry above floor whose running
// maximum timestamp reaches ts, or nil.
func (p *PartitionLog) tailFindTime(ctx context.Context, v *tailView, ts, floor int64) (*Commit, error) {
	i := sort.Search(len(v.anchors), func(i int) bool { return v.anchors[i].RunMax >= ts })
	if i == len(v.anchors) {
		return nil, nil
	}
	path, err := p.walkBack(ctx, v, v.anchors[i], func(c *Commit) bool { return c.RunningMaxTimestamp < ts || c.Start <= floor+1 })
	if err != nil {
		return nil, err
	}
	for j := len(path) - 1; j >= 0; j-- {
		if c := path[j].commit; c.RunningMaxTimestamp >= ts && c.End > floor {
			return c, nil
		}
	}
	return nil, nil
}
