package manifest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/klauspost/compress/s2"
)

// AppendIndex appends the canonical encoding of ix (the segment trailer).
func AppendIndex(b []byte, ix *Index) []byte {
	start := len(b)
	b = append(b, indexMagic[:]...)
	b = binary.LittleEndian.AppendUint16(b, objectVersion)
	b = binary.LittleEndian.AppendUint16(b, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(ix.Blocks)))
	for _, bl := range ix.Blocks {
		b = binary.LittleEndian.AppendUint64(b, uint64(bl.Position))
		b = binary.LittleEndian.AppendUint32(b, uint32(bl.Length))
		b = binary.LittleEndian.AppendUint32(b, uint32(bl.Records))
		for _, v := range []int64{bl.FirstOffset, bl.LastOffset, bl.MinTimestamp, bl.MaxTimestamp, bl.RunningMaxTimestamp} {
			b = binary.LittleEndian.AppendUint64(b, uint64(v))
		}
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(ix.Gaps)))
	for _, g := range ix.Gaps {
		b = binary.LittleEndian.AppendUint64(b, uint64(g.From))
		b = binary.LittleEndian.AppendUint64(b, uint64(g.To))
		b = append(b, byte(g.Reason))
	}
	return binary.LittleEndian.AppendUint32(b, crc32c(b[start:]))
}

// DecodeIndex decodes a segment trailer and checks its internal consistency
// (checksum, ordering, non-overlap). It does not check it against a commit
// entry; Segment.Check does.
func DecodeIndex(b []byte) (*Index, error) {
	if len(b) < indexHeaderSize+8 {
		return nil, corruptf("index: %d bytes is too short", len(b))
	}
	if !bytes.Equal(b[:4], indexMagic[:]) {
		return nil, corruptf("index: bad magic %q", b[:4])
	}
	if v := binary.LittleEndian.Uint16(b[4:]); v != objectVersion {
		return nil, versionErr("segment index", int(v), objectVersionText)
	}
	if r := binary.LittleEndian.Uint16(b[6:]); r != 0 {
		return nil, corruptf("index: reserved field %d", r)
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if got := crc32c(body); got != sum {
		return nil, corruptf("index: checksum %08x, stored %08x", got, sum)
	}
	nb := uint64(binary.LittleEndian.Uint32(b[8:]))
	p := b[indexHeaderSize:]
	if nb*blockEntrySize+4 > uint64(len(p)) {
		return nil, corruptf("index: %d blocks do not fit in %d bytes", nb, len(b))
	}
	ix := &Index{}
	if nb > 0 {
		ix.Blocks = make([]BlockInfo, nb)
	}
	le := binary.LittleEndian
	runMax := int64(math.MinInt64)
	var prevEnd int64 = segHeaderSize
	var prevLast int64 = -1
	for i := range ix.Blocks {
		e := p[i*blockEntrySize:]
		bl := BlockInfo{Position: int64(le.Uint64(e)), Length: int64(le.Uint32(e[8:])), Records: int64(le.Uint32(e[12:])),
			FirstOffset: int64(le.Uint64(e[16:])), LastOffset: int64(le.Uint64(e[24:])), MinTimestamp: int64(le.Uint64(e[32:])),
			MaxTimestamp: int64(le.Uint64(e[40:])), RunningMaxTimestamp: int64(le.Uint64(e[48:]))}
		runMax = max(runMax, bl.MaxTimestamp)
		switch {
		case bl.Position != prevEnd:
			return nil, corruptf("index: block %d at byte %d, expected %d", i, bl.Position, prevEnd)
		case bl.Length <= blockHeaderSize || bl.Length > MaxBlockPayload+blockHeaderSize+(MaxBlockPayload>>7)+1024:
			return nil, corruptf("index: block %d length %d out of range", i, bl.Length)
		case bl.Records < 1:
			return nil, corruptf("index: block %d has %d records", i, bl.Records)
		case bl.FirstOffset <= prevLast || bl.FirstOffset < 0 || bl.LastOffset < bl.FirstOffset ||
			bl.LastOffset-bl.FirstOffset+1 < bl.Records || bl.LastOffset == math.MaxInt64:
			return nil, corruptf("index: block %d offsets %d..%d (%d records) out of order", i, bl.FirstOffset, bl.LastOffset, bl.Records)
		case bl.MinTimestamp > bl.MaxTimestamp || bl.RunningMaxTimestamp != runMax:
			return nil, corruptf("index: block %d timestamps inconsistent", i)
		}
		prevEnd, prevLast = bl.Position+bl.Length, bl.LastOffset
		ix.Blocks[i] = bl
	}
	p = p[nb*blockEntrySize:]
	ng := uint64(le.Uint32(p))
	p = p[4:]
	if ng*gapEntrySize != uint64(len(p))-4 {
		return nil, corruptf("index: %d gaps do not match %d bytes", ng, len(p)-4)
	}
	if ng > 0 {
		ix.Gaps = make([]Gap, ng)
	}
	for i := range ix.Gaps {
		e := p[i*gapEntrySize:]
		g := Gap{From: int64(le.Uint64(e)), To: int64(le.Uint64(e[8:])), Reason: GapReason(e[16])}
		if g.Reason == 0 || g.Reason >= NumGapReasons || g.From < 0 || g.To < g.From || g.To == math.MaxInt64 {
			return nil, corruptf("index: gap %d (%d..%d reason %d) invalid", i, g.From, g.To, g.Reason)
		}
		if i > 0 {
			pg := ix.Gaps[i-1]
			if g.From <= pg.To || (g.From == pg.To+1 && g.Reason == pg.Reason) {
				return nil, corruptf("index: gap %d overlaps or is not merged with gap %d", i, i-1)
			}
		}
		ix.Gaps[i] = g
	}
	return ix, nil
}

// Footer is the fixed-size end of a segment: where its index is.
type Footer struct {
	IndexPosition int64
	IndexLength   int64
}

// FooterSize is the size of a segment footer in bytes.
const FooterSize = footerSize

// DecodeFooter decodes the last FooterSize bytes of a segment.
func DecodeFooter(b []byte) (Footer, error) {
	if len(b) != footerSize {
		return Footer{}, corruptf("footer: %d bytes, want %d", len(b), footerSize)
	}
	if !bytes.Equal(b[20:], footerMagic[:]) {
		return Footer{}, corruptf("footer: bad magic (not a kbackup segment, or truncated)")
	}
	le := binary.LittleEndian
	if got, want := crc32c(b[:16]), le.Uint32(b[16:]); got != want {
		return Footer{}, corruptf("footer: checksum %08x, stored %08x", got, want)
	}
	if v := le.Uint16(b[12:]); v != objectVersion {
		return Footer{}, versionErr("segment footer", int(v), objectVersionText)
	}
	if le.Uint16(b[14:]) != 0 {
		return Footer{}, corruptf("footer: reserved field set")
	}
	f := Footer{IndexPosition: int64(le.Uint64(b)), IndexLength: int64(le.Uint32(b[8:]))}
	if f.IndexPosition < segHeaderSize || f.IndexPosition > math.MaxInt64/2 || f.IndexLength < indexHeaderSize+8 {
		return Footer{}, corruptf("footer: index at %d+%d out of range", f.IndexPosition, f.IndexLength)
	}
	return f, nil
}

// AppendFooter appends the canonical encoding of f.
func AppendFooter(b []byte, f Footer) []byte {
	start := len(b)
	b = binary.LittleEndian.AppendUint64(b, uint64(f.IndexPosition))
	b = binary.LittleEndian.AppendUint32(b, uint32(f.IndexLength))
	b = binary.LittleEndian.AppendUint16(b, objectVersion)
	b = binary.LittleEndian.AppendUint16(b, 0)
	b = binary.LittleEndian.AppendUint32(b, crc32c(b[start:]))
	return append(b, footerMagic[:]...)
}

// CheckSegmentHeader validates the first 8 bytes of a segment.
func CheckSegmentHeader(b []byte) error {
	if len(b) < segHeaderSize || !bytes.Equal(b[:4], segMagic[:]) {
		return corruptf("segment: bad magic (not a kbackup segment)")
	}
	if v := binary.LittleEndian.Uint16(b[4:]); v != objectVersion {
		return versionErr("segment", int(v), objectVersionText)
	}
	if binary.LittleEndian.Uint16(b[6:]) != 0 {
		return corruptf("segment: reserved header field set")
	}
	return nil
}

// DecodeBlock verifies and decompresses one block (header plus stored
// payload, exactly bi.Length bytes) and returns its records, which alias a
// fresh buffer. It checks the records against bi.
func DecodeBlock(b []byte, bi BlockInfo) ([]Record, error) {
	return DecodeBlockInto(nil, b, bi)
}

// DecodeBlockInto is DecodeBlock decoding into recs[:0] (grown when too
// short): a caller done with one block's Record structs reuses them for the
// next. The byte slices of the records alias a fresh buffer, as with
// DecodeBlock.
func DecodeBlockInto(recs []Record, b []byte, bi BlockInfo) ([]Record, error) {
	recs, _, err := decodeBlock(recs, nil, b, bi, nil)
	return recs, err
}

// decodeBlock is DecodeBlockInto; a non-nil alloc supplies the buffer a
// compressed block is decompressed into, and a non-nil ha the records'
// header lists (the previous block's records are done with). inB reports
// whether the records alias b (an uncompressed block) rather than that
// buffer.
func decodeBlock(recs []Record, ha *headerArena, b []byte, bi BlockInfo, alloc func(n int) []byte) (_ []Record, inB bool, _ error) {
	if int64(len(b)) != bi.Length || len(b) < blockHeaderSize {
		return nil, false, corruptf("block at byte %d: %d bytes, index says %d", bi.Position, len(b), bi.Length)
	}
	le := binary.LittleEndian
	codec := Codec(b[0])
	if b[1]|b[2]|b[3] != 0 {
		return nil, false, corruptf("block at byte %d: reserved bytes set", bi.Position)
	}
	n, ulen, slen, sum := int64(le.Uint32(b[4:])), le.Uint32(b[8:]), le.Uint32(b[12:]), le.Uint32(b[16:])
	stored := b[blockHeaderSize:]
	if int64(slen) != int64(len(stored)) {
		return nil, false, corruptf("block at byte %d: stored length %d, have %d bytes", bi.Position, slen, len(stored))
	}
	if got := crc32c(stored); got != sum {
		return nil, false, corruptf("block at byte %d: CRC32C %08x, stored %08x", bi.Position, got, sum)
	}
	if n != bi.Records {
		return nil, false, corruptf("block at byte %d: %d records, index says %d", bi.Position, n, bi.Records)
	}
	if ulen > MaxBlockPayload {
		return nil, false, corruptf("block at byte %d: payload of %d bytes exceeds the limit", bi.Position, ulen)
	}
	var payload []byte
	switch codec {
	case CodecNone:
		payload = stored
	case CodecZstd:
		var err error
		payload, err = zstdDecoder().DecodeAll(stored, newPayload(alloc, ulen)[:0])
		if err != nil {
			return nil, false, corruptf("block at byte %d: zstd: %v", bi.Position, err)
		}
	case CodecS2:
		dl, err := s2.DecodedLen(stored)
		if err != nil {
			return nil, false, corruptf("block at byte %d: s2: %v", bi.Position, err)
		}
		if dl != int(ulen) {
			return nil, false, corruptf("block at byte %d: s2 payload of %d bytes, header says %d", bi.Position, dl, ulen)
		}
		if payload, err = s2.Decode(newPayload(alloc, ulen), stored); err != nil {
			return nil, false, corruptf("block at byte %d: s2: %v", bi.Position, err)
		}
	default:
		return nil, false, corruptf("block at byte %d: unknown codec %d", bi.Position, codec)
	}
	if uint32(len(payload)) != ulen {
		return nil, false, corruptf("block at byte %d: payload is %d bytes, header says %d", bi.Position, len(payload), ulen)
	}
	recs, err := decodeRecordsInto(recs, ha, payload, bi.FirstOffset, n, true)
	if err != nil {
		return nil, false, fmt.Errorf("block at byte %d: %w", bi.Position, err)
	}
	last := recs[len(recs)-1]
	if last.Offset != bi.LastOffset {
		return nil, false, corruptf("block at byte %d: last offset %d, index says %d", bi.Position, last.Offset, bi.LastOffset)
	}
	minTs, maxTs := recs[0].Timestamp, recs[0].Timestamp
	for i := range recs {
		minTs, maxTs = min(minTs, recs[i].Timestamp), max(maxTs, recs[i].Timestamp)
	}
	if minTs != bi.MinTimestamp || maxTs != bi.MaxTimestamp {
		return nil, false, corruptf("block at byte %d: timestamps %d..%d, index says %d..%d", bi.Position, minTs, maxTs, bi.MinTimestamp, bi.MaxTimestamp)
	}
	return recs, codec == CodecNone, nil
}

// newPayload returns a buffer of n bytes for a decompressed payload: from
// alloc when given, else a fresh one.
func newPayload(alloc func(n int) []byte, n uint32) []byte {
	if alloc != nil {
		return alloc(int(n))
	}
	return make([]byte, n)
}

// DecodeRecords decodes exactly n records from an uncompressed block
// payload whose first record has offset base. Offsets must be strictly
// increasing and the payload fully consumed.
func DecodeRecords(payload []byte, base int64, n int64) ([]Record, error) {
	return DecodeRecordsInto(nil, payload, base, n)
}

// DecodeRecordsInto is DecodeRecords decoding into recs[:0], grown when
// shorter than n (every field of every record is set).
func DecodeRecordsInto(recs []Record, payload []byte, base int64, n int64) ([]Record, error) {
	return decodeRecordsInto(recs, nil, payload, base, n, true)
}

// decodeRecordsInto is DecodeRecordsInto with the header lists from ha
// when it is not nil; fast=false decodes every record with the general
// decoder only (the reference FuzzDecodeRecordsFast holds the fast path
// to).
func decodeRecordsInto(recs []Record, ha *headerArena, payload []byte, base int64, n int64, fast bool) ([]Record, error) {
	if n < 1 || n > int64(len(payload)) {
		return nil, corruptf("record count %d does not fit %d payload bytes", n, len(payload))
	}
	d := decoder{b: payload}
	if ha != nil {
		ha.start(&d)
		defer ha.end(&d)
	}
	if int64(cap(recs)) < n {
		recs = make([]Record, n)
	}
	recs = recs[:n]
	prev := int64(-1)
	for i := range recs {
		if !fast || !d.recordFast(&recs[i], base) {
			d.record(&recs[i], base)
		}
		if d.err != nil {
			return nil, fmt.Errorf("record %d: %w", i, d.err)
		}
		if recs[i].Offset <= prev || (i == 0 && recs[i].Offset != base) {
			return nil, corruptf("record %d: offset %d out of order", i, recs[i].Offset)
		}
		prev = recs[i].Offset
	}
	if len(d.b) != 0 {
		return nil, corruptf("%d trailing bytes after %d records", len(d.b), n)
	}
	return recs, nil
}

// AppendRecords is the inverse of DecodeRecords: the block payload of recs,
// whose first offset is the base.
func AppendRecords(b []byte, recs []Record) []byte {
	if len(recs) == 0 {
		return b
	}
	base := recs[0].Offset
	for i := range recs {
		b = appendRecord(b, &recs[i], base)
	}
	return b
}
