package manifest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"

	"github.com/kbackup/kbackup/store"
)

// checkSegment verifies c's segment: size, CRC32C, header, index, every
// block and the footer, reading it once as a stream. size is the object's
// size (-1 unknown), found whether it exists. The segment is bytes
// [SegmentOffset, SegmentOffset+SegmentSize) of the object: all of a
// segment object, a body of a flush object.
func (v *partitionVerifier) checkSegment(ctx context.Context, c *Commit, size int64, found bool) error {
	key := c.SegmentKey
	problem := func(format string, args ...any) {
		v.finding(SeverityProblem, key, c.Start, c.End, format, args...)
	}
	if !found {
		problem("segment missing (the commit references it; these offsets are lost from the archive)")
		return nil
	}
	if size < 0 {
		return nil // stat failed, reported
	}
	// A tail entry's segment is a byte range of its flush object (§12.2),
	// which holds more: only a segment object must be exactly the segment.
	k, _ := ParseKey(key)
	if want := c.SegmentOffset + c.SegmentSize; size < want || (k.Kind != KeyFlush && size != want) {
		problem("segment is %d bytes, the commit says %d (truncated or overwritten)", size, want)
		return nil
	}
	ix, err := v.p.ReadIndex(ctx, c)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		problem("index unreadable: %v", err)
		return nil
	}
	for _, g := range ix.Gaps {
		v.res.Gaps[g.Reason]++
		v.res.GapOffsets[g.Reason] += g.Len()
		sev, msg := SeverityInfo, fmt.Sprintf("%s gap (explained)", g.Reason)
		if g.Reason == GapDataLoss {
			sev, msg = SeverityProblem, "DATA-LOSS gap: retention deleted these records before they were archived"
		}
		v.emit(Finding{Severity: sev, Topic: c.Topic, TopicID: c.TopicID, Partition: c.Partition, Key: key,
			From: g.From, To: g.To, Gap: g.Reason, Message: msg})
	}
	rc, err := v.p.st.GetRange(ctx, key, c.SegmentOffset, c.SegmentSize)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		problem("cannot read segment: %v", err)
		return nil
	}
	defer rc.Close()
	h := crc32.New(castagnoli)
	r := bufio.NewReaderSize(io.TeeReader(io.LimitReader(rc, c.SegmentSize), h), 64<<10)
	v.res.Segments++
	blockErr := v.checkBlocks(r, c, ix)
	var rest []byte
	if blockErr != nil {
		// Hash whatever is left, so the checksum covers the whole segment.
		_, err = io.Copy(io.Discard, r)
	} else {
		// What is left is the index and the footer: small.
		rest, err = io.ReadAll(r)
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		problem("cannot read segment: %v", err)
		return nil
	}
	v.res.Bytes += c.SegmentSize
	if got := h.Sum32(); got != c.SegmentCRC32C {
		problem("segment CRC32C %08x does not match the commit's %08x (the object is corrupt)", got, c.SegmentCRC32C)
	}
	if blockErr != nil {
		problem("%v", blockErr)
		return nil
	}
	if got := c.IndexPosition + int64(len(rest)); got != c.SegmentSize {
		problem("segment ends after %d bytes, the commit says %d (truncated)", got, c.SegmentSize)
		return nil
	}
	f, err := DecodeFooter(rest[len(rest)-FooterSize:])
	if err == nil && (f.IndexPosition != c.IndexPosition || f.IndexLength != c.IndexLength) {
		err = corruptf("footer points at index %d+%d, the commit at %d+%d", f.IndexPosition, f.IndexLength, c.IndexPosition, c.IndexLength)
	}
	if err != nil {
		problem("%v", err)
	}
	return nil
}

// checkBlocks reads the header and every block from r, checking that the
// records and the index's gaps tile the commit's range and that the
// records' offsets and timestamps match the commit.
func (v *partitionVerifier) checkBlocks(r io.Reader, c *Commit, ix *Index) error {
	var hdr [segHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return fmt.Errorf("segment header: %w", truncated(err))
	}
	if err := CheckSegmentHeader(hdr[:]); err != nil {
		return err
	}
	next, gi := c.Start, 0
	gapsBefore := func(upTo int64) error {
		for ; gi < len(ix.Gaps) && ix.Gaps[gi].From < upTo; gi++ {
			if g := ix.Gaps[gi]; g.From != next {
				return corruptf("gap %s does not follow offset %d", g, next-1)
			}
			next = ix.Gaps[gi].To + 1
		}
		return nil
	}
	minTs, maxTs := int64(math.MaxInt64), int64(math.MinInt64)
	first, last := int64(-1), int64(-1)
	for _, bi := range ix.Blocks {
		if int64(cap(v.buf)) < bi.Length {
			v.buf = make([]byte, bi.Length, BlockBufferCap(int(bi.Length))) // blocks a few bytes longer fit
		}
		b := v.buf[:bi.Length]
		if _, err := io.ReadFull(r, b); err != nil {
			return fmt.Errorf("block at byte %d (offsets %d..%d): %w", bi.Position, bi.FirstOffset, bi.LastOffset, truncated(err))
		}
		recs, _, err := decodeBlock(v.recs, &v.hdrs, b, bi, v.payload)
		if err != nil {
			return fmt.Errorf("offsets %d..%d: %w", bi.FirstOffset, bi.LastOffset, err)
		}
		for i := range recs {
			o := recs[i].Offset
			if err := gapsBefore(o); err != nil {
				return err
			}
			if o != next {
				return corruptf("record at offset %d, expected offset %d", o, next)
			}
			next++
			if first < 0 {
				first = o
			}
			last = o
			minTs, maxTs = min(minTs, recs[i].Timestamp), max(maxTs, recs[i].Timestamp)
		}
		v.res.Records += int64(len(recs))
		v.recs = recs
	}
	if err := gapsBefore(math.MaxInt64); err != nil {
		return err
	}
	if next != c.End+1 {
		return corruptf("records and gaps cover offsets up to %d, the commit up to %d", next-1, c.End)
	}
	if first != c.FirstOffset || last != c.LastOffset {
		return corruptf("records span offsets %d..%d, the commit says %d..%d", first, last, c.FirstOffset, c.LastOffset)
	}
	if c.Records > 0 && (minTs != c.MinTimestamp || maxTs != c.MaxTimestamp) {
		return corruptf("record timestamps %d..%d, the commit says %d..%d", minTs, maxTs, c.MinTimestamp, c.MaxTimestamp)
	}
	return nil
}

// payload returns the buffer a compressed block is decompressed into: the
// verifier's, reused (no record of a block outlives the next block).
func (v *partitionVerifier) payload(n int) []byte {
	if cap(v.out) < n {
		v.out = make([]byte, n, BlockBufferCap(n))
	}
	return v.out[:n]
}

// truncated maps a short read onto ErrCorrupt.
func truncated(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return corruptf("truncated")
	}
	return err
}

// pager lists keys under a prefix one page at a time, so a long listing
// holds one page of memory.
type pager struct {
	st     store.Store
	prefix string
	after  string
	page   []store.ListEntry
	done   bool
	failed bool // a listing error was reported
}

const pageSize = 1000

func newPager(st store.Store, prefix, after string) *pager {
	return &pager{st: st, prefix: prefix, after: after}
}

// peek returns the next entry without consuming it.
func (pg *pager) peek(ctx context.Context) (store.ListEntry, bool, error) {
	if len(pg.page) == 0 && !pg.done && !pg.failed {
		pg.page = pg.page[:0]
		err := pg.st.List(ctx, store.ListOptions{Prefix: pg.prefix, StartAfter: pg.after, Limit: pageSize}, func(e store.ListEntry) error {
			pg.page = append(pg.page, e)
			return nil
		})
		if err != nil {
			return store.ListEntry{}, false, fmt.Errorf("list %s: %w", pg.prefix, err)
		}
		if len(pg.page) < pageSize {
			pg.done = true
		}
		if n := len(pg.page); n > 0 {
			pg.after = pg.page[n-1].Key
		}
	}
	if len(pg.page) == 0 {
		return store.ListEntry{}, false, nil
	}
	return pg.page[0], true, nil
}

// skip consumes the entry peek returned.
func (pg *pager) skip() { pg.page = pg.page[1:] }

// next returns and consumes the next entry.
func (pg *pager) next(ctx context.Context) (store.ListEntry, bool, error) {
	e, ok, err := pg.peek(ctx)
	if ok {
		pg.skip()
	}
	return e, ok, err
}
