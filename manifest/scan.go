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
		if err := p.scanCommit(ctx, c, from, to, fn); err != nil {
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
		c = next
	}
}

func (p *PartitionLog) scanCommit(ctx context.Context, c *Commit, from, to int64, fn func(ScanItem) error) error {
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
		recs, err := p.ReadBlock(ctx, c, ix.Blocks[bi])
		if err != nil {
			return err
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
			if err := fn(ScanItem{Record: r, Commit: c}); err != nil {
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
