package logrange

import (
	"context"
	"errors"
	"fmt"

	"github.com/kbackup/kbackup/manifest"
)

// Range selects part of one partition's log. The zero value selects the
// whole log. Every set bound applies: the selection is their intersection.
type Range struct {
	// FromOffset is the first offset selected (inclusive); 0 = the log
	// start: the archive start (offset 0 unless retention expired offsets).
	// A FromOffset above 0, or any with HasFromOffset, is an explicit bound:
	// below the archive start it is an error wrapping manifest.ErrExpired.
	FromOffset    int64
	HasFromOffset bool
	// ToOffset, when HasToOffset, is the last offset selected (inclusive).
	ToOffset    int64
	HasToOffset bool
	// FromTime, when HasFromTime, starts the selection at the first offset
	// whose record has a timestamp >= FromTime (unix ms). Records after it
	// are selected whatever their timestamp; gaps before it are not.
	FromTime    int64
	HasFromTime bool
	// ToTime, when HasToTime, ends the selection before the first record
	// whose timestamp is > ToTime (unix ms): the log prefix up to ToTime.
	ToTime    int64
	HasToTime bool
}

// Validate reports bounds that cannot be meant: negative offsets.
func (r Range) Validate() error {
	if r.FromOffset < 0 {
		return fmt.Errorf("from offset %d is negative", r.FromOffset)
	}
	if r.HasToOffset && r.ToOffset < 0 {
		return fmt.Errorf("to offset %d is negative", r.ToOffset)
	}
	return nil
}

// String describes the range for messages, e.g. "offsets 10..20, time
// 2024-05-01T14:03:00.000Z..".
func (r Range) String() string {
	s := fmt.Sprintf("offsets %d..", r.FromOffset)
	if r.HasToOffset {
		s += fmt.Sprint(r.ToOffset)
	}
	if r.HasFromTime || r.HasToTime {
		s += ", time "
		if r.HasFromTime {
			s += FormatTime(r.FromTime)
		}
		s += ".."
		if r.HasToTime {
			s += FormatTime(r.ToTime)
		}
	}
	return s
}

// Bounds is a Range resolved against one partition: the inclusive offsets
// From..To, To < 0 meaning the archive's end. Empty means nothing can be
// selected.
type Bounds struct {
	From, To int64
	Empty    bool
	// Start is the partition's archive start (0: nothing expired); From is
	// never below it.
	Start int64
}

// LowerBound reports whether r bounds the selection's start (an offset or a
// time): without one it starts at the archive start.
func (r Range) LowerBound() bool { return r.HasFromOffset || r.FromOffset > 0 || r.HasFromTime }

// Resolve turns r into exact offsets for p. A time bound costs one LIST
// and two GETs to find the commit and its block index, and one block read
// to find the exact record, whatever the archive size. An explicit bound
// below the partition's archive start (an offset, or a time whose first
// record may be expired) fails with an error wrapping manifest.ErrExpired
// that names the oldest recoverable offset and time; without a lower bound
// the selection starts at the archive start.
func Resolve(ctx context.Context, p *manifest.PartitionLog, r Range) (Bounds, error) {
	if err := r.Validate(); err != nil {
		return Bounds{}, err
	}
	st, err := p.ArchiveStart(ctx)
	if err != nil {
		return Bounds{}, err
	}
	start := st.StartOffset()
	expired := func(what string, off int64) error {
		return &manifest.ExpiredError{Partition: p.String(), What: fmt.Sprintf("%s %d", what, off), Start: st}
	}
	if (r.HasFromOffset || r.FromOffset > 0) && r.FromOffset < start {
		return Bounds{}, expired("offset", r.FromOffset)
	}
	if r.HasToOffset && r.ToOffset < start {
		return Bounds{}, expired("offset", r.ToOffset)
	}
	b := Bounds{From: max(r.FromOffset, start), To: -1, Start: start}
	if r.HasToOffset {
		b.To = r.ToOffset
	}
	if r.HasFromTime {
		first, ok, err := firstRecordAt(ctx, p, r.FromTime, false)
		if err != nil {
			return Bounds{}, err
		}
		if !ok {
			return Bounds{Empty: true, Start: start}, nil
		}
		b.From = max(b.From, first)
	}
	if r.HasToTime {
		after, ok, err := firstRecordAt(ctx, p, r.ToTime, true)
		if err != nil {
			return Bounds{}, err
		}
		if ok && start > 0 && after <= start {
			// The prefix up to ToTime lies below the archive start.
			return Bounds{}, &manifest.ExpiredError{Partition: p.String(), What: "time up to " + FormatTime(r.ToTime), Start: st}
		}
		if ok {
			if after == 0 {
				return Bounds{Empty: true, Start: start}, nil
			}
			if b.To < 0 || b.To > after-1 {
				b.To = after - 1
			}
		}
	}
	if b.To >= 0 && b.To < b.From {
		return Bounds{Empty: true, Start: start}, nil
	}
	return b, nil
}

// Scan calls fn, in offset order, for every record and gap of p that r
// selects; gaps are clipped to the selection. Nothing archived in the
// range is not an error: fn is simply not called. fn may return
// manifest.StopScan to end the scan early without an error. Memory is
// bounded by one block, whose buffers are reused for the next: a record,
// its bytes included, is valid only until fn returns
// (manifest.PartitionLog.ScanTransient).
func Scan(ctx context.Context, p *manifest.PartitionLog, r Range, fn func(manifest.ScanItem) error) error {
	b, err := Resolve(ctx, p, r)
	if err != nil || b.Empty {
		return err
	}
	err = p.ScanTransient(ctx, b.From, b.To, fn)
	if errors.Is(err, manifest.ErrOutOfRange) {
		return nil // nothing archived at or after From
	}
	return err
}

// firstRecordAt returns the offset of the first record (in offset order)
// whose timestamp is >= ts (after == false) or > ts (after == true), and
// false if no archived record qualifies.
func firstRecordAt(ctx context.Context, p *manifest.PartitionLog, ts int64, after bool) (int64, bool, error) {
	c, err := p.FindTime(ctx, ts, after)
	if errors.Is(err, manifest.ErrOutOfRange) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	qualifies := func(t int64) bool { return t >= ts }
	lo := ts
	if after {
		// FindTime refused ts == MaxInt64 with after, so ts+1 is safe.
		qualifies = func(t int64) bool { return t > ts }
		lo = ts + 1
	}
	ix, err := p.ReadIndex(ctx, c)
	if err != nil {
		return 0, false, err
	}
	// The commit is the first whose partition-wide running maximum reaches
	// lo, so no earlier commit holds a qualifying record and the first
	// block of this segment whose running maximum reaches lo holds it.
	bi := ix.BlockForTime(lo)
	if bi < len(ix.Blocks) {
		recs, err := p.ReadBlock(ctx, c, ix.Blocks[bi])
		if err != nil {
			return 0, false, err
		}
		for i := range recs {
			if qualifies(recs[i].Timestamp) {
				return recs[i].Offset, true, nil
			}
		}
	}
	return 0, false, fmt.Errorf("segment %s: %w: time index says a record reaches timestamp %d, the blocks do not",
		c.SegmentKey, manifest.ErrCorrupt, lo)
}
