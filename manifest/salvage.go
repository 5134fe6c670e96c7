package manifest

import (
	"context"
	"fmt"
)

// Salvage rebuilds, in a new segment writer starting at after+1, the
// records and gaps of a chain of tail entries, ending at newest, that lie
// above after: the entries a writer committed under a claim that a newer
// claim voided, when their records cannot be fetched from Kafka again (the
// topic was deleted). It walks the chain back through the entries' prev
// refs (one ranged GET each) until it covers after+1, then reads their
// indexes and blocks. It returns nil when nothing lies above after, and an
// error when the chain does not reach after+1 (its first entries were
// compacted away, or it starts above it). Records are copied exactly
// (keys, values, headers, timestamps, producer fields) and the gaps keep
// their reasons. With maxBytes > 0 the writer stops before the record that
// would take its Size beyond maxBytes (but holds at least one): the rest
// is for the next call, after the writer's end.
func (p *PartitionLog) Salvage(ctx context.Context, newest EntryRef, after int64, opts SegmentOptions, maxBytes int) (*SegmentWriter, error) {
	if newest.End <= after {
		return nil, nil
	}
	v := &tailView{cache: map[int64]*tailEntry{}, byRef: map[string]*tailEntry{}}
	path, err := p.walkBack(ctx, v, newest, func(c *Commit) bool { return c.Start <= after+1 })
	if err != nil {
		return nil, fmt.Errorf("salvage %s: %w", p, err)
	}
	if first := path[len(path)-1].commit; first.Start > after+1 {
		return nil, fmt.Errorf("salvage %s: the entries start at offset %d, not at %d or below", p, first.Start, after+1)
	}
	chain := make([]*Commit, len(path)) // newest first
	for i, e := range path {
		chain[i] = e.commit
	}
	w := NewSegmentWriter(after+1, opts)
	for i := len(chain) - 1; i >= 0; i-- {
		c := chain[i]
		ix, err := p.ReadIndex(ctx, c)
		if err != nil {
			return nil, fmt.Errorf("salvage %s: %w", p, err)
		}
		for _, bi := range ix.Blocks {
			if bi.LastOffset <= after {
				continue
			}
			recs, err := p.ReadBlock(ctx, c, bi)
			if err != nil {
				return nil, fmt.Errorf("salvage %s: %w", p, err)
			}
			for j := range recs {
				r := &recs[j]
				if r.Offset < w.Next() {
					continue
				}
				if maxBytes > 0 && w.Records() > 0 && w.Size()+recordSize(r) > maxBytes {
					return w, nil
				}
				if err := salvageGaps(w, r.Offset, ix.Gaps); err != nil {
					return nil, fmt.Errorf("salvage %s: %w", p, err)
				}
				if err := w.Append(r); err != nil {
					return nil, fmt.Errorf("salvage %s: %w", p, err)
				}
			}
		}
		if err := salvageGaps(w, c.End+1, ix.Gaps); err != nil {
			return nil, fmt.Errorf("salvage %s: %w", p, err)
		}
	}
	return w, nil
}

// salvageGaps covers the offsets from w.Next() up to to-1 with the gaps of
// the source segment that hold them, with their reasons.
func salvageGaps(w *SegmentWriter, to int64, gaps []Gap) error {
	for w.Next() < to {
		next := w.Next()
		found := false
		for _, g := range gaps {
			if g.From <= next && next <= g.To {
				if err := w.AddGap(min(g.To, to-1), g.Reason); err != nil {
					return err
				}
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("offset %d: neither a record nor a gap of the entry", next)
		}
	}
	return nil
}
