package manifest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"slices"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// SegmentPart is one segment to concatenate: its bytes (the whole segment, header to footer)
// and its decoded, checked index. Parts must tile a range: each part's Start is the previous
// part's End+1.
type SegmentPart struct {
	Start, End int64 // the range its commit covers
	Segment    []byte
	Index      *Index
}

// ConcatSegments builds one segment covering parts[0].Start..parts[len-1].End from the parts'
// blocks, copied verbatim. It returns the segment and its SegmentInfo exactly as
// SegmentWriter.Finish would describe it (Start, End, Records, First/LastOffset, Min/MaxTimestamp,
// Size, IndexPosition, IndexLength, CRC32C, GapOffsets, Blocks; UncompressedSize = sum of the
// blocks' uncompressed lengths read from their headers). It returns an error (never panics) when
// the parts do not tile, a part is empty of offsets, a block position/length falls outside its part,
// or the result would break an index invariant.
//
// Nothing is decompressed. Each part is checked as a reader would check it
// (segment header, footer, index invariants against the part's range) and
// each copied block's header is checked against its index entry, with the
// CRC32C of its stored bytes: a corrupt block is refused rather than given a
// fresh segment checksum. Errors about the parts' data wrap ErrCorrupt.
func ConcatSegments(parts []SegmentPart) ([]byte, SegmentInfo, error) {
	body, info, err := ConcatSegmentsBody(parts)
	if err != nil {
		return nil, SegmentInfo{}, err
	}
	return body.Bytes(), info, nil
}

// ConcatSegmentsBody is ConcatSegments returning the segment as a body
// whose blocks are the parts' own bytes (not copied: the parts must not
// change while it is read), so a compaction holds its input once, not
// twice.
func ConcatSegmentsBody(parts []SegmentPart) (*SegmentBody, SegmentInfo, error) {
	if len(parts) == 0 {
		return nil, SegmentInfo{}, errors.New("concatenate segments: no parts")
	}
	size := int64(segHeaderSize)
	nBlocks, nGaps := 0, 0
	for i := range parts {
		p := &parts[i]
		if err := checkPart(p); err != nil {
			return nil, SegmentInfo{}, fmt.Errorf("concatenate segments: part %d (offsets %d..%d): %w", i, p.Start, p.End, err)
		}
		if i > 0 && p.Start != parts[i-1].End+1 {
			return nil, SegmentInfo{}, fmt.Errorf("concatenate segments: part %d starts at offset %d, part %d ends at %d: parts do not tile",
				i, p.Start, i-1, parts[i-1].End)
		}
		for _, bl := range p.Index.Blocks {
			size += bl.Length
		}
		nBlocks += len(p.Index.Blocks)
		nGaps += len(p.Index.Gaps)
	}
	if int64(nBlocks) > math.MaxUint32 || int64(nGaps) > math.MaxUint32 {
		return nil, SegmentInfo{}, fmt.Errorf("concatenate segments: %d blocks and %d gaps do not fit one index", nBlocks, nGaps)
	}

	ix := Index{Blocks: make([]BlockInfo, 0, nBlocks), Gaps: make([]Gap, 0, nGaps)}
	info := SegmentInfo{Start: parts[0].Start, End: parts[len(parts)-1].End, FirstOffset: -1, LastOffset: -1}
	idxSize := int64(indexHeaderSize + 8 + nBlocks*blockEntrySize + nGaps*gapEntrySize)
	head := make([]byte, 0, segHeaderSize)
	head = append(head, segMagic[:]...)
	head = binary.LittleEndian.AppendUint16(head, objectVersion)
	head = binary.LittleEndian.AppendUint16(head, 0)
	crc := crc32c(head)
	body := &SegmentBody{pieces: make([][]byte, 0, len(parts)+2)}
	body.pieces = append(body.pieces, head)
	pos := int64(len(head)) // the output's length so far
	runMax := int64(math.MinInt64)
	minTs, maxTs := int64(math.MaxInt64), int64(math.MinInt64)
	for i := range parts {
		p := &parts[i]
		for j, bl := range p.Index.Blocks {
			blk := p.Segment[bl.Position : bl.Position+bl.Length]
			ulen, storedCRC, err := checkBlockHeader(blk, bl)
			if err != nil {
				return nil, SegmentInfo{}, fmt.Errorf("concatenate segments: part %d (offsets %d..%d) block %d: %w", i, p.Start, p.End, j, err)
			}
			bl.Position = pos
			runMax = max(runMax, bl.MaxTimestamp)
			bl.RunningMaxTimestamp = runMax
			ix.Blocks = append(ix.Blocks, bl)
			pos += int64(len(blk))
			// The stored bytes were just checksummed: combine their CRC
			// rather than read large ones again (as FinishBody does).
			crc = crc32.Update(crc, castagnoli, blk[:blockHeaderSize])
			if stored := blk[blockHeaderSize:]; len(stored) >= 512<<10 {
				crc = crc32cCombine(crc, storedCRC, int64(len(stored)))
			} else {
				crc = crc32.Update(crc, castagnoli, stored)
			}
			info.Records += bl.Records
			info.UncompressedSize += int64(ulen)
			if info.FirstOffset < 0 {
				info.FirstOffset = bl.FirstOffset
			}
			info.LastOffset = bl.LastOffset
			minTs, maxTs = min(minTs, bl.MinTimestamp), max(maxTs, bl.MaxTimestamp)
		}
		if n := len(p.Index.Blocks); n > 0 {
			// A part's blocks are contiguous (checkPart): one piece.
			first, last := p.Index.Blocks[0], p.Index.Blocks[n-1]
			body.pieces = append(body.pieces, p.Segment[first.Position:last.Position+last.Length:last.Position+last.Length])
		}
		for _, g := range p.Index.Gaps {
			// Only a part's edge gaps can touch the previous part's: merge
			// them so the gap table stays canonical.
			if n := len(ix.Gaps); n > 0 && ix.Gaps[n-1].To+1 == g.From && ix.Gaps[n-1].Reason == g.Reason {
				ix.Gaps[n-1].To = g.To
			} else {
				ix.Gaps = append(ix.Gaps, g)
			}
			info.GapOffsets[g.Reason] += g.Len()
		}
	}
	if info.Records > 0 {
		info.MinTimestamp, info.MaxTimestamp = minTs, maxTs
	}
	info.Blocks = len(ix.Blocks)
	info.IndexPosition = pos
	tail := AppendIndex(make([]byte, 0, idxSize+footerSize), &ix)
	info.IndexLength = int64(len(tail))
	tail = AppendFooter(tail, Footer{IndexPosition: info.IndexPosition, IndexLength: info.IndexLength})
	crc = crc32.Update(crc, castagnoli, tail)
	body.pieces = append(body.pieces, tail)
	body.size = pos + int64(len(tail))
	info.Size, info.CRC32C = body.size, crc
	if body.size != size+int64(len(tail)) {
		return nil, SegmentInfo{}, fmt.Errorf("concatenate segments %d..%d: %d bytes of blocks, the indexes say %d", info.Start, info.End, pos, size)
	}

	// Check the result as a reader will: the parts were checked, so this
	// fails only if concatenating broke an invariant.
	dec, err := DecodeIndex(tail[:info.IndexLength])
	if err == nil {
		err = CheckIndex(&Commit{Start: info.Start, End: info.End, Records: info.Records, GapOffsets: info.GapOffsets,
			IndexPosition: info.IndexPosition}, dec)
	}
	if err != nil {
		return nil, SegmentInfo{}, fmt.Errorf("concatenate segments %d..%d: result: %w", info.Start, info.End, err)
	}
	return body, info, nil
}

// checkPart checks a part as a reader checks a segment against its commit
// entry: header, footer, an index that is canonical (it encodes and decodes
// to itself), whose blocks lie in order between the header and the index
// and which, with its gaps, tiles [Start, End].
func checkPart(p *SegmentPart) error {
	if p.Index == nil {
		return errors.New("no index")
	}
	if p.End < p.Start || p.Start < 0 || p.End == math.MaxInt64 {
		return errors.New("the range covers no offsets or is out of range")
	}
	if len(p.Segment) < segHeaderSize+footerSize {
		return corruptf("segment of %d bytes is too short", len(p.Segment))
	}
	if err := CheckSegmentHeader(p.Segment); err != nil {
		return err
	}
	f, err := DecodeFooter(p.Segment[len(p.Segment)-footerSize:])
	if err != nil {
		return err
	}
	if f.IndexPosition+f.IndexLength != int64(len(p.Segment)-footerSize) {
		return corruptf("footer: index at %d+%d does not end at the footer (byte %d)", f.IndexPosition, f.IndexLength, len(p.Segment)-footerSize)
	}
	if int64(len(p.Index.Blocks)) > math.MaxUint32 || int64(len(p.Index.Gaps)) > math.MaxUint32 {
		return corruptf("index of %d blocks and %d gaps", len(p.Index.Blocks), len(p.Index.Gaps))
	}
	// DecodeIndex checks every entry (positions contiguous from the header,
	// lengths, offsets, timestamps, gap reasons and merging); encoding first
	// also refuses values the encoding cannot hold.
	ix, err := DecodeIndex(AppendIndex(nil, p.Index))
	if err != nil {
		return err
	}
	if !slices.Equal(ix.Blocks, p.Index.Blocks) || !slices.Equal(ix.Gaps, p.Index.Gaps) {
		return corruptf("index holds values out of the encoding's range")
	}
	c := &Commit{Start: p.Start, End: p.End, IndexPosition: f.IndexPosition}
	for _, bl := range ix.Blocks {
		c.Records += bl.Records
	}
	for _, g := range ix.Gaps {
		c.GapOffsets[g.Reason] += g.Len()
	}
	if err := CheckIndex(c, ix); err != nil {
		return err
	}
	return nil
}

// checkBlockHeader checks a block's header against its index entry and the
// CRC32C of its stored bytes, without decompressing: codec, reserved bytes,
// record count, stored length, and the uncompressed length where the stored
// bytes tell it cheaply (none: the stored length; S2: its leading varint;
// zstd: the frame content size, when the frame header has one). It returns
// the uncompressed length and the stored bytes' CRC32C.
func checkBlockHeader(b []byte, bl BlockInfo) (ulen, storedCRC uint32, _ error) {
	le := binary.LittleEndian
	if len(b) < blockHeaderSize {
		return 0, 0, corruptf("block of %d bytes is too short", len(b))
	}
	if b[1]|b[2]|b[3] != 0 {
		return 0, 0, corruptf("block header: reserved bytes set")
	}
	n, ulen, slen, sum := int64(le.Uint32(b[4:])), le.Uint32(b[8:]), le.Uint32(b[12:]), le.Uint32(b[16:])
	stored := b[blockHeaderSize:]
	switch {
	case n != bl.Records:
		return 0, 0, corruptf("block header: %d records, index says %d", n, bl.Records)
	case int64(slen) != int64(len(stored)):
		return 0, 0, corruptf("block header: stored length %d, index says %d", slen, len(stored))
	case ulen > MaxBlockPayload || int64(ulen) < n:
		return 0, 0, corruptf("block header: payload of %d bytes for %d records", ulen, n)
	}
	if got := crc32c(stored); got != sum {
		return 0, 0, corruptf("block: CRC32C %08x, stored %08x", got, sum)
	}
	switch codec := Codec(b[0]); codec {
	case CodecNone:
		if slen != ulen {
			return 0, 0, corruptf("uncompressed block: stored length %d, payload length %d", slen, ulen)
		}
	case CodecS2:
		dl, err := s2.DecodedLen(stored)
		if err != nil {
			return 0, 0, corruptf("s2 block: %v", err)
		}
		if int64(dl) != int64(ulen) {
			return 0, 0, corruptf("s2 block: payload of %d bytes, header says %d", dl, ulen)
		}
	case CodecZstd:
		var h zstd.Header
		if err := h.Decode(stored); err != nil {
			return 0, 0, corruptf("zstd block: %v", err)
		}
		if h.Skippable {
			return 0, 0, corruptf("zstd block: a skippable frame")
		}
		if h.HasFCS && h.FrameContentSize != uint64(ulen) {
			return 0, 0, corruptf("zstd block: frame content size %d, header says %d", h.FrameContentSize, ulen)
		}
	default:
		return 0, 0, corruptf("block header: unknown codec %d", codec)
	}
	return ulen, sum, nil
}
