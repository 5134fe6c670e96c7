package manifest

import (
	"context"
	"errors"
	"fmt"

	"github.com/kbackup/kbackup/store"
)

// RecordsBefore returns the number of archived records of the partition
// with an offset below offset, from the commits' cumulative totals, one
// segment index and at most one block: one LIST and up to three GETs,
// whatever the archive's size. Offsets past the archive's end count every
// archived record. Expired records count too (the archive start's totals):
// at the archive start it returns the number of expired records; below it,
// an *ExpiredError.
func (p *PartitionLog) RecordsBefore(ctx context.Context, offset int64) (int64, error) {
	if offset <= 0 {
		return 0, nil
	}
	st, err := p.ArchiveStart(ctx)
	if err != nil {
		return 0, err
	}
	if st != nil && offset == st.Start {
		return st.Below.Records, nil
	}
	c, err := p.Find(ctx, offset-1)
	if errors.Is(err, ErrOutOfRange) {
		head, herr := p.Head(ctx)
		if herr != nil {
			return 0, herr
		}
		if head == nil || head.End >= offset-1 {
			return 0, err // nothing archived, or a real out-of-range error
		}
		return head.TotalRecords, nil
	}
	if err != nil {
		return 0, err
	}
	n := c.TotalRecords - c.Records // records of the commits before c
	switch {
	case c.Records == 0 || c.FirstOffset >= offset:
		return n, nil
	case c.LastOffset < offset:
		return n + c.Records, nil
	}
	ix, err := p.ReadIndex(ctx, c)
	if err != nil {
		return 0, err
	}
	for _, bl := range ix.Blocks {
		switch {
		case bl.LastOffset < offset:
			n += bl.Records
		case bl.FirstOffset >= offset:
			return n, nil
		default:
			recs, err := p.ReadBlock(ctx, c, bl)
			if err != nil {
				return 0, err
			}
			for _, r := range recs {
				if r.Offset < offset {
					n++
				}
			}
			return n, nil
		}
	}
	return n, nil
}

// CaptureAfter returns the time of the oldest catalog capture of kind
// (CatalogTopics or CatalogGroups) taken after ms, and false if there is
// none. It bisects on time with LIST requests only (about 45 for any
// range), never listing every capture.
func (a *Archive) CaptureAfter(ctx context.Context, kind string, ms int64) (int64, bool, error) {
	newest, ok, err := a.captureAtOrBefore(ctx, kind, 1<<62)
	if err != nil || !ok || newest <= ms {
		return 0, false, err
	}
	lo, hi := ms+1, newest // the answer is in [lo, hi]; hi is a capture
	for lo < hi {
		mid := lo + (hi-lo)/2
		t, ok, err := a.captureAtOrBefore(ctx, kind, mid)
		if err != nil {
			return 0, false, err
		}
		if ok && t > ms {
			hi = t
		} else {
			lo = mid + 1
		}
	}
	return hi, true, nil
}

// captureAtOrBefore returns the time of the newest capture of kind at or
// before ms: one LIST, no GET.
func (a *Archive) captureAtOrBefore(ctx context.Context, kind string, ms int64) (int64, bool, error) {
	prefix := "catalog/" + kind + "/"
	var key string
	err := a.st.List(ctx, store.ListOptions{Prefix: prefix, StartAfter: CatalogKey(kind, ms+1), Limit: 1}, func(e store.ListEntry) error {
		key = e.Key
		return nil
	})
	if err != nil {
		return 0, false, fmt.Errorf("list %s: %w", prefix, err)
	}
	if key == "" {
		return 0, false, nil
	}
	k, err := ParseKey(key)
	if err != nil {
		return 0, false, err
	}
	return k.Time, true, nil
}
