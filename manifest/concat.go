package manifest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"slices"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// SegmentPart is one segment to concatenate and its decoded, checked index.
// Parts must tile a range: each part's Start is the previous part's End+1.
// Its bytes are either Segment (the whole segment, header to footer, in
// memory) or, for a part read as it is copied (a compaction's input in the
// store), Open, Tail and Size.
type SegmentPart struct {
	Start, End int64 // the range its commit covers
	Segment    []byte
	Index      *Index
	// Open reads the segment from its first byte through its last block
	// at least (Segment nil). Tail is its index and footer (the bytes
	// from the index to the end), Size its length. With CheckCRC the
	// whole segment's CRC32C must be CRC32C (what its commit entry says),
	// checked as it is read.
	Open     func() (io.ReadCloser, error)
	Tail     []byte
	Size     int64
	CRC32C   uint32
	CheckCRC bool
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
	c, err := NewConcat(parts)
	if err != nil {
		return nil, SegmentInfo{}, err
	}
	defer c.Close()
	out := make([]byte, c.Size())
	if _, err := io.ReadFull(c, out); err != nil {
		return nil, SegmentInfo{}, err
	}
	info, err := c.Info()
	if err != nil {
		return nil, SegmentInfo{}, err
	}
	return out, info, nil
}

// Concat is ConcatSegments as a reader: the new segment's index, size and
// summary are worked out from the parts' indexes up front, and its bytes
// are produced as they are read, one block at a time, from the parts'
// bytes, so concatenating holds one block (a compaction of parts read from
// the store holds neither its input nor its output). A block that fails its
// checks ends the reading with an error wrapping ErrCorrupt: whoever writes
// the segment from it must then discard what it wrote.
type Concat struct {
	parts []SegmentPart
	ix    Index
	info  SegmentInfo // all but UncompressedSize and CRC32C until read
	head  []byte      // the segment header
	tail  []byte      // the new index and footer
	// reading
	stage   int // 0 header, 1 blocks, 2 tail, 3 done
	pending []byte
	part    int // the part being copied, and its next block
	block   int
	rc      io.ReadCloser
	crcIn   uint32 // the part's own CRC32C so far
	crc     uint32 // the output's CRC32C so far
	ulen    int64
	buf     []byte
	err     error
}

// NewConcat checks the parts' indexes and lays out their concatenation.
func NewConcat(parts []SegmentPart) (*Concat, error) {
	if len(parts) == 0 {
		return nil, errors.New("concatenate segments: no parts")
	}
	nBlocks, nGaps := 0, 0
	maxBlock := int64(0)
	for i := range parts {
		p := &parts[i]
		if err := checkPart(p); err != nil {
			return nil, fmt.Errorf("concatenate segments: part %d (offsets %d..%d): %w", i, p.Start, p.End, err)
		}
		if i > 0 && p.Start != parts[i-1].End+1 {
			return nil, fmt.Errorf("concatenate segments: part %d starts at offset %d, part %d ends at %d: parts do not tile",
				i, p.Start, i-1, parts[i-1].End)
		}
		for _, bl := range p.Index.Blocks {
			maxBlock = max(maxBlock, bl.Length)
		}
		nBlocks += len(p.Index.Blocks)
		nGaps += len(p.Index.Gaps)
	}
	if int64(nBlocks) > math.MaxUint32 || int64(nGaps) > math.MaxUint32 {
		return nil, fmt.Errorf("concatenate segments: %d blocks and %d gaps do not fit one index", nBlocks, nGaps)
	}
	c := &Concat{parts: parts, ix: Index{Blocks: make([]BlockInfo, 0, nBlocks), Gaps: make([]Gap, 0, nGaps)}}
	info := SegmentInfo{Start: parts[0].Start, End: parts[len(parts)-1].End, FirstOffset: -1, LastOffset: -1}
	c.head = make([]byte, 0, segHeaderSize)
	c.head = append(c.head, segMagic[:]...)
	c.head = binary.LittleEndian.AppendUint16(c.head, objectVersion)
	c.head = binary.LittleEndian.AppendUint16(c.head, 0)
	pos := int64(len(c.head))
	runMax := int64(math.MinInt64)
	minTs, maxTs := int64(math.MaxInt64), int64(math.MinInt64)
	for i := range parts {
		p := &parts[i]
		for _, bl := range p.Index.Blocks {
			bl.Position = pos
			runMax = max(runMax, bl.MaxTimestamp)
			bl.RunningMaxTimestamp = runMax
			c.ix.Blocks = append(c.ix.Blocks, bl)
			pos += bl.Length
			info.Records += bl.Records
			if info.FirstOffset < 0 {
				info.FirstOffset = bl.FirstOffset
			}
			info.LastOffset = bl.LastOffset
			minTs, maxTs = min(minTs, bl.MinTimestamp), max(maxTs, bl.MaxTimestamp)
		}
		for _, g := range p.Index.Gaps {
			// Only a part's edge gaps can touch the previous part's: merge
			// them so the gap table stays canonical.
			if n := len(c.ix.Gaps); n > 0 && c.ix.Gaps[n-1].To+1 == g.From && c.ix.Gaps[n-1].Reason == g.Reason {
				c.ix.Gaps[n-1].To = g.To
			} else {
				c.ix.Gaps = append(c.ix.Gaps, g)
			}
			info.GapOffsets[g.Reason] += g.Len()
		}
	}
	if info.Records > 0 {
		info.MinTimestamp, info.MaxTimestamp = minTs, maxTs
	}
	info.Blocks = len(c.ix.Blocks)
	info.IndexPosition = pos
	c.tail = AppendIndex(make([]byte, 0, indexHeaderSize+8+nBlocks*blockEntrySize+nGaps*gapEntrySize+footerSize), &c.ix)
	info.IndexLength = int64(len(c.tail))
	c.tail = AppendFooter(c.tail, Footer{IndexPosition: info.IndexPosition, IndexLength: info.IndexLength})
	info.Size = pos + int64(len(c.tail))
	// Check the result as a reader will: the parts were checked, so this
	// fails only if concatenating broke an invariant.
	dec, err := DecodeIndex(c.tail[:info.IndexLength])
	if err == nil {
		err = CheckIndex(&Commit{Start: info.Start, End: info.End, Records: info.Records, GapOffsets: info.GapOffsets,
			IndexPosition: info.IndexPosition}, dec)
	}
	if err != nil {
		return nil, fmt.Errorf("concatenate segments %d..%d: result: %w", info.Start, info.End, err)
	}
	c.info = info
	c.buf = make([]byte, 0, maxBlock)
	c.crc = crc32c(c.head)
	c.pending = c.head
	return c, nil
}

// Size is the new segment's length in bytes.
func (c *Concat) Size() int64 { return c.info.Size }

// Info is the new segment's summary, complete once every byte was read
// (its CRC32C and uncompressed size come from the blocks).
func (c *Concat) Info() (SegmentInfo, error) {
	if c.err != nil && c.err != io.EOF {
		return SegmentInfo{}, c.err
	}
	if c.stage != 3 || len(c.pending) > 0 {
		return SegmentInfo{}, errors.New("concatenate segments: not read to its end")
	}
	info := c.info
	info.UncompressedSize, info.CRC32C = c.ulen, c.crc
	return info, nil
}

// Err is the error that ended the reading early, if any (a corrupt part).
func (c *Concat) Err() error {
	if c.err == io.EOF {
		return nil
	}
	return c.err
}

// Close closes the part being read, if any.
func (c *Concat) Close() error {
	if c.rc != nil {
		err := c.rc.Close()
		c.rc = nil
		return err
	}
	return nil
}

// Read implements io.Reader.
func (c *Concat) Read(b []byte) (int, error) {
	for len(c.pending) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		c.err = c.next()
	}
	n := copy(b, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// next makes the next bytes pending: a block, or the tail, or io.EOF.
func (c *Concat) next() error {
	for c.stage < 2 {
		if c.part == len(c.parts) {
			c.stage = 2
			break
		}
		p := &c.parts[c.part]
		if c.rc == nil {
			if err := c.openPart(p); err != nil {
				return fmt.Errorf("concatenate segments: part %d (offsets %d..%d): %w", c.part, p.Start, p.End, err)
			}
		}
		if c.block < len(p.Index.Blocks) {
			if err := c.copyBlock(p); err != nil {
				return fmt.Errorf("concatenate segments: part %d (offsets %d..%d) block %d: %w", c.part, p.Start, p.End, c.block, err)
			}
			c.block++
			return nil
		}
		if err := c.endPart(p); err != nil {
			return fmt.Errorf("concatenate segments: part %d (offsets %d..%d): %w", c.part, p.Start, p.End, err)
		}
		c.part, c.block = c.part+1, 0
	}
	if c.stage == 2 {
		c.stage = 3
		c.crc = crc32.Update(c.crc, castagnoli, c.tail)
		c.pending = c.tail
		return nil
	}
	return io.EOF
}

// openPart starts reading a part: its header.
func (c *Concat) openPart(p *SegmentPart) error {
	var err error
	if p.Segment != nil {
		c.rc = io.NopCloser(bytes.NewReader(p.Segment))
	} else if c.rc, err = p.Open(); err != nil {
		return err
	}
	h := make([]byte, segHeaderSize)
	if err := readFull(c.rc, h); err != nil {
		return err
	}
	if err := CheckSegmentHeader(h); err != nil {
		return err
	}
	c.crcIn = crc32c(h)
	return nil
}

// copyBlock reads the part's next block, checks it and makes it pending.
func (c *Concat) copyBlock(p *SegmentPart) error {
	bl := p.Index.Blocks[c.block]
	blk := c.buf[:bl.Length]
	if err := readFull(c.rc, blk); err != nil {
		return err
	}
	ulen, storedCRC, err := checkBlockHeader(blk, bl)
	if err != nil {
		return err
	}
	// The stored bytes were just checksummed: combine their CRC rather
	// than read large ones again (as FinishBody does).
	stored := blk[blockHeaderSize:]
	for _, crc := range []*uint32{&c.crc, &c.crcIn} {
		*crc = crc32.Update(*crc, castagnoli, blk[:blockHeaderSize])
		if len(stored) >= 512<<10 {
			*crc = crc32cCombine(*crc, storedCRC, int64(len(stored)))
		} else {
			*crc = crc32.Update(*crc, castagnoli, stored)
		}
	}
	c.ulen += int64(ulen)
	c.pending = blk
	return nil
}

// endPart finishes a part: its whole checksum, with CheckCRC.
func (c *Concat) endPart(p *SegmentPart) error {
	err := c.Close()
	if !p.CheckCRC {
		return err
	}
	tail := p.Tail
	if p.Segment != nil {
		f, _ := DecodeFooter(p.Segment[len(p.Segment)-footerSize:]) // checked by checkPart
		tail = p.Segment[f.IndexPosition:]
	}
	if got := crc32.Update(c.crcIn, castagnoli, tail); got != p.CRC32C {
		return corruptf("segment checksum %08x, its entry says %08x", got, p.CRC32C)
	}
	return err
}

// readFull reads len(b) bytes; a short read is a truncated segment.
func readFull(r io.Reader, b []byte) error {
	if n, err := io.ReadFull(r, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return corruptf("segment truncated: %d of %d bytes", n, len(b))
		}
		return err
	}
	return nil
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
	size, tail := int64(len(p.Segment)), p.Segment
	if p.Segment == nil {
		if p.Open == nil {
			return errors.New("no bytes")
		}
		size, tail = p.Size, p.Tail
	}
	if size < segHeaderSize+footerSize || len(tail) < footerSize || p.Segment == nil && int64(len(tail)) > size-segHeaderSize {
		return corruptf("segment of %d bytes (index and footer %d) is too short", size, len(tail))
	}
	if p.Segment != nil {
		if err := CheckSegmentHeader(p.Segment); err != nil {
			return err
		}
	}
	f, err := DecodeFooter(tail[len(tail)-footerSize:])
	if err != nil {
		return err
	}
	if f.IndexPosition+f.IndexLength != size-footerSize {
		return corruptf("footer: index at %d+%d does not end at the footer (byte %d)", f.IndexPosition, f.IndexLength, size-footerSize)
	}
	if p.Segment == nil && f.IndexPosition != size-int64(len(tail)) {
		return corruptf("footer: index at %d, the tail read starts at %d", f.IndexPosition, size-int64(len(tail)))
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
