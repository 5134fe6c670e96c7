package manifest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Codec is a block compression codec.
type Codec uint8

const (
	// CodecNone stores block payloads uncompressed.
	CodecNone Codec = 0
	// CodecZstd compresses each block as one zstd frame (the default).
	CodecZstd Codec = 1
)

// String names the codec.
func (c Codec) String() string {
	switch c {
	case CodecNone:
		return "none"
	case CodecZstd:
		return "zstd"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

// GapReason says why offsets of a partition have no record in the archive.
type GapReason uint8

// Gap reasons. The codes are part of the format.
const (
	// GapCompacted: the broker did not return these offsets and the topic
	// is compacted (log compaction removed superseded records).
	GapCompacted GapReason = 1
	// GapTransaction: transaction control markers or records of aborted
	// transactions, not returned to a read_committed consumer.
	GapTransaction GapReason = 2
	// GapNotReturned: the broker skipped these offsets for a reason the
	// archiver could not tell (neither compaction nor a transaction).
	GapNotReturned GapReason = 3
	// GapDataLoss: retention deleted the records before they were archived.
	// This is data loss and is always reported loudly.
	GapDataLoss GapReason = 4
	// GapBeforeStart: offsets before the log start offset when archiving of
	// the partition began; history the archive never had in scope.
	GapBeforeStart GapReason = 5
)

// NumGapReasons bounds the reason codes (valid codes are 1..NumGapReasons-1).
const NumGapReasons = 6

// String names the reason as docs/FORMAT.md and `kbackup ls` do.
func (r GapReason) String() string {
	switch r {
	case GapCompacted:
		return "compacted"
	case GapTransaction:
		return "transaction"
	case GapNotReturned:
		return "not-returned"
	case GapDataLoss:
		return "DATA-LOSS"
	case GapBeforeStart:
		return "before-start"
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// Gap is an inclusive offset range [From, To] that has no records, and why.
type Gap struct {
	From, To int64
	Reason   GapReason
}

// Len is the number of offsets in the gap.
func (g Gap) Len() int64 { return g.To - g.From + 1 }

// BlockInfo is one block-index entry.
type BlockInfo struct {
	Position     int64 // byte position of the block header, from the segment start
	Length       int64 // block header plus stored payload, in bytes
	Records      int64
	FirstOffset  int64
	LastOffset   int64
	MinTimestamp int64
	MaxTimestamp int64
	// RunningMaxTimestamp is the largest timestamp in this block and every
	// earlier block of the segment: non-decreasing, so binary-searchable.
	RunningMaxTimestamp int64
}

// Index is a segment's trailer: the block index and the gap table.
type Index struct {
	Blocks []BlockInfo
	Gaps   []Gap
}

// Fixed sizes of the segment structures (see docs/FORMAT.md).
const (
	segHeaderSize   = 8
	blockHeaderSize = 20
	indexHeaderSize = 12
	blockEntrySize  = 56
	gapEntrySize    = 17
	footerSize      = 28
)

var (
	segMagic    = [4]byte{'K', 'B', 'S', 'G'}
	indexMagic  = [4]byte{'K', 'B', 'I', 'X'}
	footerMagic = [8]byte{'K', 'B', 'S', 'G', 'F', 'O', 'O', 'T'}
	castagnoli  = crc32.MakeTable(crc32.Castagnoli)
)

// MaxBlockPayload bounds a block's uncompressed payload, and so the memory a
// reader needs for one block. A record larger than the writer's block target
// gets a block of its own; Kafka records are far below this bound.
const MaxBlockPayload = 256 << 20

// crc32c returns the CRC-32C (Castagnoli) of b.
func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

var (
	encOnce sync.Once
	zenc    *zstd.Encoder
	decOnce sync.Once
	zdec    *zstd.Decoder
)

// zstdEncoder is shared: EncodeAll is safe for concurrent use.
func zstdEncoder() *zstd.Encoder {
	encOnce.Do(func() {
		var err error
		// EncodeAll runs concurrently up to the encoder concurrency (one
		// state per core). No zstd frame checksum: every block already carries a CRC32C
		// over its stored bytes. A 1 MiB window matches the block size.
		zenc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest),
			zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithZeroFrames(true), zstd.WithEncoderCRC(false),
			zstd.WithWindowSize(1<<20))
		if err != nil {
			panic(fmt.Sprintf("zstd encoder with constant options: %v", err)) // cannot happen
		}
	})
	return zenc
}

func zstdDecoder() *zstd.Decoder {
	decOnce.Do(func() {
		var err error
		zdec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0),
			zstd.WithDecoderMaxMemory(MaxBlockPayload), zstd.WithDecodeAllCapLimit(true))
		if err != nil {
			panic(fmt.Sprintf("zstd decoder with constant options: %v", err)) // cannot happen
		}
	})
	return zdec
}

// SegmentOptions tune a SegmentWriter. The zero value means zstd with 1 MiB
// blocks.
type SegmentOptions struct {
	// Codec compresses blocks; the zero value is CodecNone, so use
	// DefaultSegmentOptions for the default (zstd).
	Codec Codec
	// BlockSize is the uncompressed payload size at which a block is closed.
	// 0 means 1 MiB.
	BlockSize int
}

// DefaultSegmentOptions is zstd with 1 MiB blocks.
func DefaultSegmentOptions() SegmentOptions {
	return SegmentOptions{Codec: CodecZstd, BlockSize: 1 << 20}
}

// SegmentWriter builds one segment in memory. Every offset from Start to the
// last appended one must be accounted for: either by a record (Append) or by
// a gap (AddGap), in order. It is not safe for concurrent use.
type SegmentWriter struct {
	opts  SegmentOptions
	start int64
	next  int64
	index Index
	// closed holds the closed blocks. Each is compressed in the background
	// as soon as it closes (bounded by compressSlots), so compression
	// overlaps with appending; Finish waits for them and lays out the
	// segment.
	closed  []*closedBlock
	pending sync.WaitGroup
	rawSize int

	// the open block
	payload  []byte
	cur      BlockInfo
	runMax   int64
	records  int64
	minTs    int64
	maxTs    int64
	firstRec int64
	lastRec  int64
}

// NewSegmentWriter starts a segment whose covered range begins at offset
// start.
func NewSegmentWriter(start int64, opts SegmentOptions) *SegmentWriter {
	if opts.BlockSize <= 0 {
		opts.BlockSize = 1 << 20
	}
	w := &SegmentWriter{opts: opts, start: start, next: start, runMax: math.MinInt64,
		minTs: math.MaxInt64, maxTs: math.MinInt64, firstRec: -1, lastRec: -1}
	return w
}

// Next is the next offset the segment expects (Start + offsets covered).
func (w *SegmentWriter) Next() int64 { return w.next }

// Start is the first offset the segment covers.
func (w *SegmentWriter) Start() int64 { return w.start }

// Records is the number of records appended so far.
func (w *SegmentWriter) Records() int64 { return w.records }

// Size is the uncompressed size of the records appended so far: the memory
// the writer holds, and what segment rolling by size counts.
func (w *SegmentWriter) Size() int { return w.rawSize + len(w.payload) }

// Append adds r, whose offset must equal Next(). The record's byte slices
// are copied into the block buffer.
func (w *SegmentWriter) Append(r *Record) error {
	if r.Offset != w.next {
		return fmt.Errorf("append offset %d: segment expects offset %d (add a gap first)", r.Offset, w.next)
	}
	if r.Offset == math.MaxInt64 {
		return fmt.Errorf("append offset %d: out of range", r.Offset)
	}
	if r.TimestampType > LogAppendTime || r.Compression > maxCodec {
		return fmt.Errorf("append offset %d: invalid timestamp type %d or codec %d", r.Offset, r.TimestampType, r.Compression)
	}
	if len(w.payload) > 0 && len(w.payload)+recordSize(r) > w.opts.BlockSize {
		w.closeBlock(false)
	}
	if recordSize(r) > MaxBlockPayload {
		return fmt.Errorf("append offset %d: record of %d bytes exceeds the %d byte block limit", r.Offset, recordSize(r), MaxBlockPayload)
	}
	if w.cur.Records == 0 {
		w.cur = BlockInfo{FirstOffset: r.Offset, MinTimestamp: r.Timestamp, MaxTimestamp: r.Timestamp}
	}
	w.payload = appendRecord(w.payload, r, w.cur.FirstOffset)
	w.cur.Records++
	w.cur.LastOffset = r.Offset
	w.cur.MinTimestamp = min(w.cur.MinTimestamp, r.Timestamp)
	w.cur.MaxTimestamp = max(w.cur.MaxTimestamp, r.Timestamp)
	w.records++
	w.minTs = min(w.minTs, r.Timestamp)
	w.maxTs = max(w.maxTs, r.Timestamp)
	if w.firstRec < 0 {
		w.firstRec = r.Offset
	}
	w.lastRec = r.Offset
	w.next = r.Offset + 1
	return nil
}

// AddGap records that offsets [Next(), to] have no record, for reason.
// Adjacent gaps with the same reason are merged.
func (w *SegmentWriter) AddGap(to int64, reason GapReason) error {
	if to < w.next {
		return fmt.Errorf("gap to offset %d: segment is already at offset %d", to, w.next)
	}
	if to == math.MaxInt64 {
		return fmt.Errorf("gap to offset %d: out of range", to)
	}
	if reason == 0 || reason >= NumGapReasons {
		return fmt.Errorf("gap to offset %d: invalid reason %d", to, reason)
	}
	if n := len(w.index.Gaps); n > 0 && w.index.Gaps[n-1].To == w.next-1 && w.index.Gaps[n-1].Reason == reason {
		w.index.Gaps[n-1].To = to
	} else {
		w.index.Gaps = append(w.index.Gaps, Gap{From: w.next, To: to, Reason: reason})
	}
	w.next = to + 1
	return nil
}

func (w *SegmentWriter) closeBlock(final bool) {
	if w.cur.Records == 0 {
		return
	}
	w.runMax = max(w.runMax, w.cur.MaxTimestamp)
	w.cur.RunningMaxTimestamp = w.runMax
	w.index.Blocks = append(w.index.Blocks, w.cur)
	cb := &closedBlock{rawLen: len(w.payload), stored: w.payload}
	w.closed = append(w.closed, cb)
	w.rawSize += len(w.payload)
	if w.opts.Codec == CodecZstd {
		raw := w.payload
		compressSlots <- struct{}{} // blocks the appender while every core compresses: backpressure
		w.pending.Add(1)
		go func() {
			defer func() { <-compressSlots; w.pending.Done() }()
			cb.stored = zstdEncoder().EncodeAll(raw, make([]byte, 0, len(raw)/2+64))
		}()
	}
	w.cur = BlockInfo{}
	if final {
		w.payload = nil
		return
	}
	// A partition that filled a block is busy: give the next block its full
	// size up front instead of growing (and copying) it by doubling. The
	// first block of a segment starts small, so idle partitions hold little.
	w.payload = make([]byte, 0, min(w.opts.BlockSize+w.opts.BlockSize/8, MaxBlockPayload))
}

// closedBlock is a closed block: its uncompressed length and, once its
// compression finished, its stored bytes.
type closedBlock struct {
	rawLen int
	stored []byte
}

// compressSlots bounds concurrent block compressions process-wide to the
// number of cores.
var compressSlots = make(chan struct{}, runtime.GOMAXPROCS(0))

// SegmentInfo summarises a finished segment; it goes into the commit entry.
type SegmentInfo struct {
	Start, End       int64 // covered range, inclusive; End = Start-1 when empty
	Records          int64
	FirstOffset      int64 // first record offset, -1 when no records
	LastOffset       int64 // last record offset, -1 when no records
	MinTimestamp     int64 // 0 when no records
	MaxTimestamp     int64 // 0 when no records
	Size             int64
	IndexPosition    int64
	IndexLength      int64
	CRC32C           uint32
	GapOffsets       [NumGapReasons]int64 // offsets in gaps, by reason
	Blocks           int
	UncompressedSize int64
}

// Finish closes the open block, appends the index and footer and returns the
// segment bytes and their summary. The writer must not be used afterwards.
func (w *SegmentWriter) Finish() ([]byte, SegmentInfo) {
	w.closeBlock(true)
	info := SegmentInfo{Start: w.start, End: w.next - 1, Records: w.records,
		FirstOffset: w.firstRec, LastOffset: w.lastRec, Blocks: len(w.index.Blocks), UncompressedSize: int64(w.rawSize)}
	if w.records > 0 {
		info.MinTimestamp, info.MaxTimestamp = w.minTs, w.maxTs
	}
	for _, g := range w.index.Gaps {
		info.GapOffsets[g.Reason] += g.Len()
	}
	w.pending.Wait()
	size := segHeaderSize + footerSize + indexHeaderSize + 8 + len(w.index.Blocks)*blockEntrySize + len(w.index.Gaps)*gapEntrySize
	for _, cb := range w.closed {
		size += blockHeaderSize + len(cb.stored)
	}
	out := make([]byte, 0, size)
	out = append(out, segMagic[:]...)
	out = binary.LittleEndian.AppendUint16(out, FormatVersion)
	out = binary.LittleEndian.AppendUint16(out, 0)
	for i, cb := range w.closed {
		b := cb.stored
		bl := &w.index.Blocks[i]
		bl.Position = int64(len(out))
		bl.Length = int64(blockHeaderSize + len(b))
		out = append(out, byte(w.opts.Codec), 0, 0, 0)
		out = binary.LittleEndian.AppendUint32(out, uint32(bl.Records))
		out = binary.LittleEndian.AppendUint32(out, uint32(cb.rawLen))
		out = binary.LittleEndian.AppendUint32(out, uint32(len(b)))
		out = binary.LittleEndian.AppendUint32(out, crc32c(b))
		out = append(out, b...)
	}
	info.IndexPosition = int64(len(out))
	out = AppendIndex(out, &w.index)
	info.IndexLength = int64(len(out)) - info.IndexPosition
	out = AppendFooter(out, Footer{IndexPosition: info.IndexPosition, IndexLength: info.IndexLength})
	info.Size = int64(len(out))
	info.CRC32C = crc32c(out)
	w.closed, w.payload = nil, nil
	return out, info
}

// AppendIndex appends the canonical encoding of ix (the segment trailer).
func AppendIndex(b []byte, ix *Index) []byte {
	start := len(b)
	b = append(b, indexMagic[:]...)
	b = binary.LittleEndian.AppendUint16(b, FormatVersion)
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
	if v := binary.LittleEndian.Uint16(b[4:]); v != FormatVersion {
		return nil, versionErr("segment index", int(v))
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
	if v := le.Uint16(b[12:]); v != FormatVersion {
		return Footer{}, versionErr("segment footer", int(v))
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
	b = binary.LittleEndian.AppendUint16(b, FormatVersion)
	b = binary.LittleEndian.AppendUint16(b, 0)
	b = binary.LittleEndian.AppendUint32(b, crc32c(b[start:]))
	return append(b, footerMagic[:]...)
}

// CheckSegmentHeader validates the first 8 bytes of a segment.
func CheckSegmentHeader(b []byte) error {
	if len(b) < segHeaderSize || !bytes.Equal(b[:4], segMagic[:]) {
		return corruptf("segment: bad magic (not a kbackup segment)")
	}
	if v := binary.LittleEndian.Uint16(b[4:]); v != FormatVersion {
		return versionErr("segment", int(v))
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
	if int64(len(b)) != bi.Length || len(b) < blockHeaderSize {
		return nil, corruptf("block at byte %d: %d bytes, index says %d", bi.Position, len(b), bi.Length)
	}
	le := binary.LittleEndian
	codec := Codec(b[0])
	if b[1]|b[2]|b[3] != 0 {
		return nil, corruptf("block at byte %d: reserved bytes set", bi.Position)
	}
	n, ulen, slen, sum := int64(le.Uint32(b[4:])), le.Uint32(b[8:]), le.Uint32(b[12:]), le.Uint32(b[16:])
	stored := b[blockHeaderSize:]
	if int64(slen) != int64(len(stored)) {
		return nil, corruptf("block at byte %d: stored length %d, have %d bytes", bi.Position, slen, len(stored))
	}
	if got := crc32c(stored); got != sum {
		return nil, corruptf("block at byte %d: CRC32C %08x, stored %08x", bi.Position, got, sum)
	}
	if n != bi.Records {
		return nil, corruptf("block at byte %d: %d records, index says %d", bi.Position, n, bi.Records)
	}
	if ulen > MaxBlockPayload {
		return nil, corruptf("block at byte %d: payload of %d bytes exceeds the limit", bi.Position, ulen)
	}
	var payload []byte
	switch codec {
	case CodecNone:
		payload = stored
	case CodecZstd:
		var err error
		payload, err = zstdDecoder().DecodeAll(stored, make([]byte, 0, ulen))
		if err != nil {
			return nil, corruptf("block at byte %d: zstd: %v", bi.Position, err)
		}
	default:
		return nil, corruptf("block at byte %d: unknown codec %d", bi.Position, codec)
	}
	if uint32(len(payload)) != ulen {
		return nil, corruptf("block at byte %d: payload is %d bytes, header says %d", bi.Position, len(payload), ulen)
	}
	recs, err := DecodeRecords(payload, bi.FirstOffset, n)
	if err != nil {
		return nil, fmt.Errorf("block at byte %d: %w", bi.Position, err)
	}
	last := recs[len(recs)-1]
	if last.Offset != bi.LastOffset {
		return nil, corruptf("block at byte %d: last offset %d, index says %d", bi.Position, last.Offset, bi.LastOffset)
	}
	minTs, maxTs := recs[0].Timestamp, recs[0].Timestamp
	for i := range recs {
		minTs, maxTs = min(minTs, recs[i].Timestamp), max(maxTs, recs[i].Timestamp)
	}
	if minTs != bi.MinTimestamp || maxTs != bi.MaxTimestamp {
		return nil, corruptf("block at byte %d: timestamps %d..%d, index says %d..%d", bi.Position, minTs, maxTs, bi.MinTimestamp, bi.MaxTimestamp)
	}
	return recs, nil
}

// DecodeRecords decodes exactly n records from an uncompressed block
// payload whose first record has offset base. Offsets must be strictly
// increasing and the payload fully consumed.
func DecodeRecords(payload []byte, base int64, n int64) ([]Record, error) {
	if n < 1 || n > int64(len(payload)) {
		return nil, corruptf("record count %d does not fit %d payload bytes", n, len(payload))
	}
	d := decoder{b: payload}
	recs := make([]Record, n)
	prev := int64(-1)
	for i := range recs {
		d.record(&recs[i], base)
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
