package manifest

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/kbackup/kbackup/store"
)

// ScanItem is what Scan yields: a record, or a gap (Record == nil).
type ScanItem struct {
	Record *Record
	Gap    Gap
	Commit *Commit // the commit the item belongs to
	// Buffer is, with ScanBuffered, the buffer (from its BlockBuffers) the
	// record's bytes alias: the caller gives it back with Put once done
	// with every record of it. Records of one block share it.
	Buffer []byte
}

// errStopScan ends a scan early without an error.
var errStopScan = errors.New("stop scan")

// StopScan may be returned by a Scan callback to end the scan successfully.
var StopScan = errStopScan

// Scan calls fn for every record and gap overlapping offsets [from, to]
// (inclusive; to < 0 means the archive's end) in offset order. It seeks
// with one LIST, then reads one commit, one index and the needed blocks at a
// time, so memory is bounded by one block. Gaps are clipped to the range.
func (p *PartitionLog) Scan(ctx context.Context, from, to int64, fn func(ScanItem) error) error {
	return p.scan(ctx, from, to, nil, fn)
}

// ScanReusing is Scan for a caller that is done with each record when fn
// returns: the Record structs and their header lists are reused from block
// to block (one slice and one header slab per scan instead of per block),
// so a *Record handed to fn, and its Headers slice, are valid only until
// fn returns. The byte slices it holds (key, value, header values) stay
// valid: they alias the block's own buffer, which is never reused.
func (p *PartitionLog) ScanReusing(ctx context.Context, from, to int64, fn func(ScanItem) error) error {
	return p.scan(ctx, from, to, &scanBufs{}, fn)
}

// ScanBuffered is ScanReusing with every block read (and decompressed)
// into buffers from bufs; each record's ScanItem.Buffer is the buffer its
// bytes alias, which the caller Puts back once done with all its records
// (one that is never put back is simply garbage).
func (p *PartitionLog) ScanBuffered(ctx context.Context, from, to int64, bufs BlockBuffers, fn func(ScanItem) error) error {
	return p.scan(ctx, from, to, &scanBufs{bufs: bufs}, fn)
}

// ScanTransient is ScanReusing for a caller that is done with each record,
// bytes included, when fn returns (it writes or copies what it keeps):
// the blocks' buffers are reused from block to block too, so a scan
// allocates about one block's buffers in all. A record's key, value and
// header values are valid only until fn returns.
func (p *PartitionLog) ScanTransient(ctx context.Context, from, to int64, fn func(ScanItem) error) error {
	return p.scan(ctx, from, to, &scanBufs{bufs: &transientBuffers{}, transient: true}, fn)
}

// scanBufs are a scan's reused Record structs, their header lists and its
// block buffers.
type scanBufs struct {
	recs []Record
	hdrs headerArena
	bufs BlockBuffers // nil: fresh buffers
	// transient: the buffer the previous block's records alias (prev)
	// goes back to bufs before the next block is read.
	transient bool
	prev      []byte
}

// transientBuffers are ScanTransient's block buffers: the few a scan has
// in use at once (a block's stored bytes and its decompressed payload).
type transientBuffers struct{ free [][]byte }

func (t *transientBuffers) Get(n int) []byte {
	for i, b := range t.free {
		if cap(b) >= n {
			t.free = append(t.free[:i], t.free[i+1:]...)
			return b[:n]
		}
	}
	return make([]byte, n, BlockBufferCap(n))
}

// Put keeps at most four buffers, the largest.
func (t *transientBuffers) Put(b []byte) {
	if len(t.free) < 4 {
		t.free = append(t.free, b)
		return
	}
	small := 0
	for i := range t.free {
		if cap(t.free[i]) < cap(t.free[small]) {
			small = i
		}
	}
	if cap(b) > cap(t.free[small]) {
		t.free[small] = b
	}
}

// BlockBufferCap is the capacity to give a new buffer for a block of n
// bytes, so that blocks that differ by a few bytes share buffers: a power
// of two up to 64 KiB, a multiple of 64 KiB above (at most 1/16 more than
// n for a 1 MiB block).
func BlockBufferCap(n int) int {
	const step = 64 << 10
	if n <= step {
		c := 4 << 10
		for c < n {
			c <<= 1
		}
		return c
	}
	return (n + step - 1) / step * step
}

// scan is Scan; a non-nil reuse holds the Record slice blocks are decoded
// into and the block buffers.
func (p *PartitionLog) scan(ctx context.Context, from, to int64, reuse *scanBufs, fn func(ScanItem) error) error {
	if from < 0 {
		from = 0
	}
	if to >= 0 && to < from {
		return nil
	}
	c, err := p.Find(ctx, from)
	if err != nil {
		return err
	}
	for {
		if err := p.scanCommit(ctx, c, from, to, reuse, fn); err != nil {
			if errors.Is(err, errStopScan) {
				return nil
			}
			return err
		}
		if to >= 0 && c.End >= to {
			return nil
		}
		next, err := p.CommitAt(ctx, c.End+1)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil // the end of the archive
			}
			return err
		}
		// A tail entry may start below it (it straddles the compacted end,
		// docs/FORMAT.md §12.4): its offsets up to c.End were read already.
		from = max(from, c.End+1)
		c = next
	}
}

func (p *PartitionLog) scanCommit(ctx context.Context, c *Commit, from, to int64, reuse *scanBufs, fn func(ScanItem) error) error {
	ix, err := p.ReadIndex(ctx, c)
	if err != nil {
		return err
	}
	last := c.End
	if to >= 0 {
		last = min(last, to)
	}
	// Start at the block holding from; track the next expected offset so a
	// record that falls into a gap, or a hole, is caught while scanning.
	bi := ix.BlockForOffset(from)
	next := c.Start
	if bi > 0 {
		next = ix.Blocks[bi-1].LastOffset + 1
	}
	gi := sort.Search(len(ix.Gaps), func(i int) bool { return ix.Gaps[i].From >= next })
	corrupt := func(format string, args ...any) error {
		return fmt.Errorf("segment %s: %w", c.SegmentKey, corruptf(format, args...))
	}
	gapsBefore := func(upTo int64) error {
		for ; gi < len(ix.Gaps) && ix.Gaps[gi].From < upTo && ix.Gaps[gi].From <= last; gi++ {
			g := ix.Gaps[gi]
			if g.From != next {
				return corrupt("gap %s does not follow offset %d", g, next-1)
			}
			next = g.To + 1
			if g.To < from {
				continue
			}
			g.From, g.To = max(g.From, from), min(g.To, last)
			if err := fn(ScanItem{Gap: g, Commit: c}); err != nil {
				return err
			}
		}
		return nil
	}
	for ; bi < len(ix.Blocks) && ix.Blocks[bi].FirstOffset <= last; bi++ {
		var recs []Record
		var buffer []byte
		switch {
		case reuse == nil:
			recs, err = p.ReadBlock(ctx, c, ix.Blocks[bi])
		case reuse.bufs == nil:
			recs, err = p.readBlockInto(ctx, reuse.recs, &reuse.hdrs, c, ix.Blocks[bi])
		default:
			if reuse.transient && reuse.prev != nil {
				reuse.bufs.Put(reuse.prev)
				reuse.prev = nil
			}
			recs, buffer, err = p.readBlockBuffered(ctx, reuse.recs, &reuse.hdrs, reuse.bufs, c, ix.Blocks[bi])
			if reuse.transient {
				reuse.prev = buffer
			}
		}
		if err != nil {
			return err
		}
		if reuse != nil {
			reuse.recs = recs
		}
		for j := range recs {
			r := &recs[j]
			if r.Offset > last {
				return nil
			}
			if err := gapsBefore(r.Offset); err != nil {
				return err
			}
			if r.Offset != next {
				return corrupt("record at offset %d, expected offset %d", r.Offset, next)
			}
			next++
			if r.Offset < from {
				continue
			}
			if err := fn(ScanItem{Record: r, Commit: c, Buffer: buffer}); err != nil {
				return err
			}
		}
	}
	if err := gapsBefore(last + 1); err != nil {
		return err
	}
	if last == c.End && next != c.End+1 {
		return corrupt("covers offsets up to %d, commit says %d", next-1, c.End)
	}
	return nil
}

// String renders a gap for messages.
func (g Gap) String() string { return fmt.Sprintf("%d..%d (%s)", g.From, g.To, g.Reason) }
