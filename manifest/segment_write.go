package manifest

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"sync"

	"github.com/klauspost/compress/s2"
)

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
	if w.opts.Codec != CodecNone {
		raw, codec := w.payload, w.opts.Codec
		compressSlots <- struct{}{} // blocks the appender while every core compresses: backpressure
		w.pending.Add(1)
		go func() {
			defer func() { <-compressSlots; w.pending.Done() }()
			cb.stored = compressBlock(codec, raw)
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

// CompressBlock returns a block payload's stored bytes under codec, as
// SegmentWriter stores them (raw itself for CodecNone). It is the codec cost
// alone, the baseline the archiver's benchmarks compare against.
func CompressBlock(codec Codec, raw []byte) []byte {
	if codec == CodecNone {
		return raw
	}
	return compressBlock(codec, raw)
}

// compressBlock compresses a block payload with codec (zstd or s2).
func compressBlock(codec Codec, raw []byte) []byte {
	if codec == CodecS2 {
		out := s2.Encode(nil, raw) // allocates the worst case: keep only what is used
		if cap(out) > 2*len(out) {
			out = append(make([]byte, 0, len(out)), out...)
		}
		return out
	}
	return zstdEncoder().EncodeAll(raw, make([]byte, 0, len(raw)/2+64))
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
	out = binary.LittleEndian.AppendUint16(out, objectVersion)
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
