package manifest

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/klauspost/compress/s2"

	"github.com/kbackup/kbackup/store"
)

// SegmentOptions tune a SegmentWriter. The zero value means zstd with 1 MiB
// blocks.
type SegmentOptions struct {
	// Codec compresses blocks; the zero value is CodecNone, so use
	// DefaultSegmentOptions for the default (zstd).
	Codec Codec
	// BlockSize is the uncompressed payload size at which a block is closed.
	// 0 means 1 MiB. (An uncompressed block streamed in place, see
	// startStream, closes where it ends the store's upload part instead
	// when that is within an eighth past it.)
	BlockSize int
	// Stage, when set, streams the segment instead of holding it: when its
	// second block starts, the writer stages an object (store.Stager) and
	// from then on writes each closed block to it as soon as it is
	// compressed, in order, and lets go of its memory. FinishBody writes
	// the index and footer; the body it returns is published under its key
	// by PartitionLog.AppendBody (Finish and SegmentBody.Bytes do not
	// apply). A segment of one block is never staged. If Stage fails the
	// segment is held in memory as without it, and Stage is tried again as
	// each next block starts (a refusal may be temporary: the packed
	// layout's bound on staged objects).
	Stage func() (store.Staged, error)
	// StageAfter is how many blocks a segment holds in memory before it is
	// staged (with Stage): when block StageAfter+1 starts, the blocks
	// closed so far are written first. 0 means 1.
	StageAfter int
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
	pooled  [][]byte // uncompressed (CodecNone) full-size block buffers, for SegmentBody.Release
	pending sync.WaitGroup
	rawSize int

	// stream writes the closed blocks to the staged object (Stage).
	stream *streamer
	// res is the open block's reservation in the staged object when it is
	// encoded in place (streamer.rs): the block header's room, then the
	// payload. nil otherwise.
	res []byte
	// cut, for a block encoded in place that can reach the end of the
	// store's part (store.ReservingStaged.PartLeft), is the payload length
	// past which the block closes: the part then ends just after it, at
	// about the part size, instead of a block later. 0: the block closes
	// at the block size, as any other.
	cut int

	// the open block
	payload []byte
	// payBase is the pooled buffer payload lies in (nil if it is not
	// one): payload starts up to streamAlign bytes into it (see
	// streamAlign).
	payBase []byte
	// filePos is where the open block will start in the segment (CodecNone:
	// the stored sizes of the blocks before it are known).
	filePos int64
	// payCRC is the CRC-32C of payload[:payCRCN] (CodecNone, whose stored
	// bytes are the payload): see crcChunk.
	payCRC   uint32
	payCRCN  int
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
		minTs: math.MaxInt64, maxTs: math.MinInt64, firstRec: -1, lastRec: -1, filePos: segHeaderSize}
	return w
}

// Next is the next offset the segment expects (Start + offsets covered).
func (w *SegmentWriter) Next() int64 { return w.next }

// Start is the first offset the segment covers.
func (w *SegmentWriter) Start() int64 { return w.start }

// Records is the number of records appended so far.
func (w *SegmentWriter) Records() int64 { return w.records }

// Size is the uncompressed size of the records appended so far: what
// segment rolling by size counts.
func (w *SegmentWriter) Size() int { return w.rawSize + len(w.payload) }

// Held is the uncompressed size of the records the writer holds in memory:
// Size less what was streamed (Stage).
func (w *SegmentWriter) Held() int {
	if w.stream == nil {
		return w.Size()
	}
	return w.Size() - int(w.stream.raw.Load())
}

// Streaming reports whether the segment is being streamed to a staged
// object (Stage): FinishBody will return a streamed body.
func (w *SegmentWriter) Streaming() bool { return w.stream != nil }

// Abort discards a staged segment's object (Stage) and stops writing it;
// FinishBody then reports the segment lost. It may be called from another
// goroutine than the writer's (once the writer is sealed: FinishBody may
// be running). A writer holding the segment in memory needs no Abort.
func (w *SegmentWriter) Abort() {
	if w.stream != nil {
		w.stream.abort()
	}
}

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
	size := recordSize(r)
	if len(w.payload) > 0 && w.blockFull(size) {
		w.closeBlock(false)
	}
	if size > MaxBlockPayload {
		return fmt.Errorf("append offset %d: record of %d bytes exceeds the %d byte block limit", r.Offset, size, MaxBlockPayload)
	}
	if w.cur.Records == 0 {
		w.cur = BlockInfo{FirstOffset: r.Offset, MinTimestamp: r.Timestamp, MaxTimestamp: r.Timestamp}
	}
	if len(w.payload)+size > cap(w.payload) {
		w.grow(len(w.payload) + size)
	}
	w.payload = appendRecord(w.payload, r, w.cur.FirstOffset)
	if w.opts.Codec == CodecNone && len(w.payload)-w.payCRCN >= crcChunk {
		w.payCRC = crc32.Update(w.payCRC, castagnoli, w.payload[w.payCRCN:])
		w.payCRCN = len(w.payload)
	}
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

// blockFull reports whether the open block closes before a record of size
// bytes: one that would pass the block size, or, encoded in place to end
// the part (cut), once past the cut (or the record would not fit).
func (w *SegmentWriter) blockFull(size int) bool {
	if w.cut > 0 {
		return len(w.payload) >= w.cut || len(w.payload)+size > cap(w.payload)
	}
	return len(w.payload)+size > w.opts.BlockSize
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
	stageAfter := max(w.opts.StageAfter, 1)
	if !final && w.stream == nil && w.opts.Stage != nil && len(w.closed) >= stageAfter-1 {
		w.startStream()
		if w.stream != nil {
			// The blocks held so far go first, in order; the streamer
			// recycles uncompressed ones once written.
			for _, cb := range w.closed {
				w.stream.send(cb)
			}
			w.pooled = nil
		}
	}
	w.runMax = max(w.runMax, w.cur.MaxTimestamp)
	w.cur.RunningMaxTimestamp = w.runMax
	w.index.Blocks = append(w.index.Blocks, w.cur)
	cb := &closedBlock{rawLen: len(w.payload), stored: w.payload, base: w.payBase, records: w.cur.Records}
	if w.opts.Codec == CodecNone {
		cb.crc = crc32.Update(w.payCRC, castagnoli, w.payload[w.payCRCN:])
		w.payCRC, w.payCRCN = 0, 0
		w.filePos += int64(blockHeaderSize + len(w.payload))
	}
	w.closed = append(w.closed, cb)
	w.rawSize += len(w.payload)
	if w.opts.Codec != CodecNone {
		raw, base, codec := w.payload, w.payBase, w.opts.Codec
		cb.base = nil
		cb.done = make(chan struct{})
		compressSlots <- struct{}{} // blocks the appender while every core compresses: backpressure
		w.pending.Add(1)
		go func() {
			defer func() { close(cb.done); <-compressSlots; w.pending.Done() }()
			cb.stored = compressBlock(codec, raw)
			cb.crc = crc32c(cb.stored) // here too: off the appender
			putBlockBuf(base)          // only the stored bytes stay
		}()
	} else if w.stream == nil && w.payBase != nil {
		w.pooled = append(w.pooled, w.payBase)
	}
	w.cur = BlockInfo{}
	if w.stream != nil {
		if w.res != nil {
			w.stream.commitBlock(w.res, cb)
			w.res, w.cut = nil, 0
		} else {
			w.stream.send(cb)
		}
	}
	if final {
		w.payload, w.payBase = nil, nil
		return
	}
	// A partition that filled a block is busy: give the next block its full
	// size up front instead of growing (and copying) it by doubling. The
	// first block of a segment starts small, so idle partitions hold little.
	w.takeFullBuf()
}

// takeFullBuf makes the open block's payload an empty full-size pooled
// buffer. A block that may be streamed uncompressed (CodecNone with
// Stage) is placed so that its bytes lie at the same offset within a
// memory page as within the segment: a store writing with O_DIRECT
// (filestore) can then write most of the block straight from the buffer
// instead of copying it into an aligned one.
//
// A segment streamed to a store.ReservingStaged (streamer.rs) encodes the
// block in place instead, in a reservation of the staged object with room
// for its header.
func (w *SegmentWriter) takeFullBuf() {
	full := w.fullBlockCap()
	if s := w.stream; s != nil && s.rs != nil && s.err == nil {
		res, err := s.rs.Reserve(blockHeaderSize + full)
		if err == nil {
			w.res, w.payBase = res, nil
			w.payload = res[blockHeaderSize:blockHeaderSize:len(res)]
			// A block that can reach the end of the part (within its
			// full capacity, up to an eighth past the block size) ends
			// it: a part is then about the part size, not up to a block
			// more, and every byte a part buffer has is the part's.
			if left := s.rs.PartLeft() - blockHeaderSize; left < full {
				w.cut = max(left, 1)
			}
			return
		}
		s.err = err // the segment is lost: the next blocks are dropped
	}
	base := getBlockBuf(full + streamAlign)
	k := 0
	if w.opts.Codec == CodecNone && w.opts.Stage != nil {
		addr := uintptr(unsafe.Pointer(unsafe.SliceData(base[:1])))
		k = int((uintptr(w.filePos+blockHeaderSize) - addr) & (streamAlign - 1))
	}
	w.payBase, w.payload = base, base[k:k:k+full]
}

// startStream stages the segment's object and starts writing it. If
// staging fails the segment stays in memory.
//
// An uncompressed segment whose staged object lends its buffer
// (store.ReservingStaged: S3's part buffers) is written by the appender
// itself: the blocks held so far, then each next block encoded in place
// (takeFullBuf) and committed as it closes. Nothing is copied, and no
// block buffer of the heap is held for it; the appender waits only when
// the store makes a write wait (an upload, when its parts are all in use).
func (w *SegmentWriter) startStream() {
	st, err := w.opts.Stage()
	if err != nil {
		return
	}
	s := &streamer{st: st, codec: w.opts.Codec, quit: make(chan struct{}), done: make(chan struct{})}
	if rs, ok := st.(store.ReservingStaged); ok && w.opts.Codec == CodecNone && blockHeaderSize+w.fullBlockCap() <= rs.MaxReserve() {
		s.rs = rs
		s.write(segmentHeader(), false, 0)
		close(s.done)
	} else {
		s.blocks = make(chan *closedBlock, 2)
		go s.run()
	}
	w.stream = s
}

// streamer writes a segment's closed blocks, in order, to its staged
// object on a goroutine of its own (the appender goes on meanwhile), and
// lets go of each once written. Blocks that queued while it wrote go
// together in one call where the staged object takes several buffers
// (store.BuffersWriter). The channel's small buffer bounds what
// waits: a slow disk slows the appender down. With rs (startStream) it
// has no goroutine: the appender writes and commits the blocks.
type streamer struct {
	st     store.Staged
	rs     store.ReservingStaged // st, when blocks are encoded in place
	codec  Codec
	blocks chan *closedBlock
	quit   chan struct{} // closed by abort
	once   sync.Once
	done   chan struct{} // closed when run returns
	raw    atomic.Int64  // uncompressed bytes written and let go of
	// owned by run until done (rs: by the appender)
	pos int64
	crc uint32
	err error // the first write error: the segment is lost
	hdr [blockHeaderSize]byte
}

// send hands a closed block to the streamer (nothing after an abort), or
// with rs writes it.
func (s *streamer) send(cb *closedBlock) {
	if s.rs != nil {
		s.writeBlock(cb)
		return
	}
	select {
	case s.blocks <- cb:
	case <-s.quit:
	}
}

func (s *streamer) abort() {
	s.once.Do(func() {
		close(s.quit) // first: commitBlock checks it before writing into a reservation
		s.st.Abort()
	})
}

func (s *streamer) run() {
	defer close(s.done)
	s.write(segmentHeader(), false, 0)
	bw, _ := s.st.(store.BuffersWriter)
	var batch []*closedBlock
	var next *closedBlock // received, still being compressed
	for {
		cb := next
		if cb == nil {
			select {
			case b, ok := <-s.blocks:
				if !ok {
					return
				}
				cb = b
			case <-s.quit:
				s.err = store.ErrAborted
				return
			}
		}
		next = nil
		if cb.done != nil {
			<-cb.done
		}
		if bw == nil {
			s.writeBlock(cb)
			continue
		}
		// The blocks that queued, ready, while the last ones were written
		// go with this one, in one call (filestore: one writev(2)). One
		// still being compressed goes next: waiting for it here would
		// hold the ready ones back.
		batch = append(batch[:0], cb)
		closed := false
	queued:
		for {
			select {
			case b, ok := <-s.blocks:
				if !ok {
					closed = true
					break queued
				}
				if !b.ready() {
					next = b
					break queued
				}
				batch = append(batch, b)
			default:
				break queued
			}
		}
		s.writeBlocks(bw, batch)
		clear(batch)
		if closed {
			return
		}
	}
}

// writeBlocks is writeBlock of each of batch, in order, written with one
// WriteBuffers.
func (s *streamer) writeBlocks(bw store.BuffersWriter, batch []*closedBlock) {
	hdrs := make([]byte, 0, len(batch)*blockHeaderSize) // never grows: the headers stay where bufs points
	bufs := make([][]byte, 0, 2*len(batch))
	for _, cb := range batch {
		b := cb.stored
		cb.pos, cb.length = s.pos, int64(blockHeaderSize+len(b))
		start := len(hdrs)
		hdrs = appendBlockHeader(hdrs, s.codec, cb.records, cb.rawLen, b, cb.crc)
		s.account(hdrs[start:], false, 0)
		s.account(b, true, cb.crc)
		bufs = append(bufs, hdrs[start:], b)
	}
	if s.err == nil {
		if err := bw.WriteBuffers(bufs); err != nil {
			s.err = err
		}
	}
	for _, cb := range batch {
		putBlockBuf(cb.base) // CodecNone: the block's buffer (compressed: nil)
		cb.stored, cb.base = nil, nil
		s.raw.Add(int64(cb.rawLen))
	}
}

// writeBlock writes a closed block (compressed: once compressed) and lets
// go of its bytes.
func (s *streamer) writeBlock(cb *closedBlock) {
	b := cb.stored
	cb.pos, cb.length = s.pos, int64(blockHeaderSize+len(b))
	s.write(appendBlockHeader(s.hdr[:0], s.codec, cb.records, cb.rawLen, b, cb.crc), false, 0)
	s.write(b, true, cb.crc)
	putBlockBuf(cb.base) // CodecNone: the block's buffer (compressed: nil)
	cb.stored, cb.base = nil, nil
	s.raw.Add(int64(cb.rawLen))
}

// commitBlock ends a block encoded in place (rs): its payload lies in res
// after the room for its header, which it writes there; the reservation
// is committed.
//
// After an abort it writes nothing there: an Abort during a reservation
// gives its buffer up (never reused, unmapped minutes later), and a sealed
// segment's FinishBody may run long after it.
func (s *streamer) commitBlock(res []byte, cb *closedBlock) {
	b := cb.stored
	cb.pos, cb.length = s.pos, int64(blockHeaderSize+len(b))
	select {
	case <-s.quit:
		s.release()
		s.err = cmp.Or(s.err, store.ErrAborted)
		cb.stored = nil
		s.raw.Add(int64(cb.rawLen))
		return
	default:
	}
	h := appendBlockHeader(res[:0], s.codec, cb.records, cb.rawLen, b, cb.crc)
	s.account(h, false, 0)
	s.account(b, true, cb.crc)
	if err := s.rs.Commit(int(cb.length)); err != nil && s.err == nil {
		s.err = err
	}
	cb.stored = nil
	s.raw.Add(int64(cb.rawLen))
}

// release ends a reservation (rs) unused.
func (s *streamer) release() {
	if err := s.rs.Commit(0); err != nil && s.err == nil {
		s.err = err
	}
}

// finish waits for every block sent to be written.
func (s *streamer) finish() {
	if s.rs != nil {
		return // written as they closed
	}
	close(s.blocks)
	<-s.done
}

// segmentHeader is the segment header: magic, format version, reserved.
func segmentHeader() []byte {
	h := make([]byte, 0, segHeaderSize)
	h = append(h, segMagic[:]...)
	h = binary.LittleEndian.AppendUint16(h, objectVersion)
	return binary.LittleEndian.AppendUint16(h, 0)
}

// appendBlockHeader appends the header of a block of records with rawLen
// uncompressed bytes stored as stored (CRC32C crc) under codec.
func appendBlockHeader(b []byte, codec Codec, records int64, rawLen int, stored []byte, crc uint32) []byte {
	b = append(b, byte(codec), 0, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(records))
	b = binary.LittleEndian.AppendUint32(b, uint32(rawLen))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(stored)))
	return binary.LittleEndian.AppendUint32(b, crc)
}

// write writes p to the staged object and adds it to the segment's
// CRC32C: combined from pcrc when known (a large block), else computed.
// After the first error nothing more is written.
func (s *streamer) write(p []byte, known bool, pcrc uint32) {
	s.account(p, known, pcrc)
	if s.err != nil {
		return
	}
	if _, err := s.st.Write(p); err != nil {
		s.err = err
	}
}

// account adds p, written to the staged object (or committed there), to
// the segment's length and CRC32C (see write).
func (s *streamer) account(p []byte, known bool, pcrc uint32) {
	if known && len(p) >= 512<<10 {
		s.crc = crc32cCombine(s.crc, pcrc, int64(len(p)))
	} else {
		s.crc = crc32.Update(s.crc, castagnoli, p)
	}
	s.pos += int64(len(p))
}

// grow makes room for need bytes in the open block. A segment's first block
// starts empty (an idle partition holds little) and grows fourfold, then
// straight to the full block size: append's own growth (1.25× for large
// slices) would allocate about five times the block.
func (w *SegmentWriter) grow(need int) {
	full := w.fullBlockCap()
	c := max(4*cap(w.payload), 4<<10, need)
	old, oldBase := w.payload, w.payBase
	if w.res != nil {
		// Encoded in place and too small (a record larger than the
		// block target): the reservation ends unused, its bytes stay put
		// until the next write, and the block is written from the heap.
		w.stream.release()
		w.res, w.cut = nil, 0
	}
	switch {
	case need > full:
		w.payload, w.payBase = make([]byte, 0, need), nil // a record larger than the block target
	case c >= full/4:
		w.takeFullBuf()
	default:
		w.payload, w.payBase = make([]byte, 0, c), nil
	}
	w.payload = append(w.payload, old...)
	putBlockBuf(oldBase)
}

// crcChunk: an uncompressed block's CRC-32C is updated as records are
// appended, each time this many bytes were added, while they are still in
// the CPU's cache. Computed when the block is written, from memory, it was
// about 9% of a --compression none archiver's CPU (4x the cost on cached
// bytes); a compressed block's is computed right after compressing it.
const crcChunk = 32 << 10

// fullBlockCap is the capacity of a busy partition's block buffer: the
// block target and room for the record that closes it.
func (w *SegmentWriter) fullBlockCap() int {
	return min(w.opts.BlockSize+w.opts.BlockSize/8, MaxBlockPayload)
}

// blockBufs recycles full-size block buffers: a busy archiver fills one
// per block, and allocating (and zeroing) each anew costs CPU and garbage
// collections. A few stay across collections (freeBlockBufs, one per core:
// as many as compressions in flight); more go to a sync.Pool.
var (
	freeBlockBufs = make(chan []byte, runtime.GOMAXPROCS(0))
	blockBufs     sync.Pool
)

// streamAlign is the memory page size SegmentWriter aligns uncompressed
// streamed blocks to (takeFullBuf): filestore's direct writes need the
// buffer's address and the file offset aligned to the disk's block size,
// which divides it.
const streamAlign = 4096

// getBlockBuf returns an empty buffer of capacity c, recycled if possible.
func getBlockBuf(c int) []byte {
	select {
	case b := <-freeBlockBufs:
		if cap(b) == c {
			return b[:0]
		}
	default:
	}
	if p, ok := blockBufs.Get().(*[]byte); ok && cap(*p) == c {
		return (*p)[:0]
	}
	return make([]byte, 0, c)
}

// putBlockBuf recycles b, a pooled block buffer from getBlockBuf which
// nothing may reference any more (nil: nothing to recycle).
func putBlockBuf(b []byte) {
	if b == nil {
		return
	}
	select {
	case freeBlockBufs <- b[:0]:
	default:
		b = b[:0]
		blockBufs.Put(&b)
	}
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
	// Compress into a recycled scratch buffer and keep an exact copy: a
	// segment holds its closed blocks until it is committed, and a buffer
	// sized for the worst case would hold several times the bytes.
	var out []byte
	if codec == CodecS2 {
		out = s2.Encode(getScratch(s2.MaxEncodedLen(len(raw))), raw)
	} else {
		out = zstdEncoder().EncodeAll(raw, getScratch(len(raw)/2+64))
	}
	stored := bytes.Clone(out)
	putScratch(out)
	return stored
}

// scratchBufs recycles the codecs' output buffers (one per compression in
// flight), as blockBufs.
var scratchBufs = make(chan []byte, runtime.GOMAXPROCS(0))

func getScratch(c int) []byte {
	select {
	case b := <-scratchBufs:
		if cap(b) >= c {
			return b[:0]
		}
	default:
	}
	return make([]byte, 0, c)
}

func putScratch(b []byte) {
	select {
	case scratchBufs <- b[:0]:
	default:
	}
}

// closedBlock is a closed block: its uncompressed length and, once its
// compression finished, its stored bytes.
type closedBlock struct {
	rawLen int
	stored []byte
	base   []byte        // CodecNone: the pooled buffer stored lies in, recycled once written (nil: not pooled)
	crc    uint32        // CRC32C of stored
	done   chan struct{} // closed when compressed (nil: CodecNone, stored as it is)
	// streamed (Stage): the block's records, and its place in the segment
	// once written
	records     int64
	pos, length int64
}

// ready reports whether b's stored bytes are final (compressed, or
// stored as they are).
func (b *closedBlock) ready() bool {
	if b.done == nil {
		return true
	}
	select {
	case <-b.done:
		return true
	default:
		return false
	}
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
	body, info := w.FinishBody()
	b := body.Bytes()
	body.Release()
	return b, info
}

// FinishBody is Finish without assembling the segment in one buffer: the
// body references the blocks' stored bytes as they were compressed. The
// writer must not be used afterwards.
func (w *SegmentWriter) FinishBody() (*SegmentBody, SegmentInfo) {
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
	if w.stream != nil {
		return w.finishStream(info)
	}
	// One buffer for the segment header and every block header, then the
	// stored blocks in place, then one for the index and footer.
	heads := append(make([]byte, 0, segHeaderSize+len(w.closed)*blockHeaderSize), segmentHeader()...)
	body := &SegmentBody{pieces: make([][]byte, 0, 2*len(w.closed)+2)}
	pos := int64(segHeaderSize)
	prev := 0
	for i, cb := range w.closed {
		b := cb.stored
		bl := &w.index.Blocks[i]
		bl.Position = pos
		bl.Length = int64(blockHeaderSize + len(b))
		heads = appendBlockHeader(heads, w.opts.Codec, bl.Records, cb.rawLen, b, cb.crc)
		body.pieces = append(body.pieces, heads[prev:len(heads):len(heads)], b)
		prev = len(heads)
		pos += bl.Length
	}
	info.IndexPosition = pos
	tail := AppendIndex(make([]byte, 0, indexHeaderSize+8+len(w.index.Blocks)*blockEntrySize+len(w.index.Gaps)*gapEntrySize+footerSize), &w.index)
	info.IndexLength = int64(len(tail))
	tail = AppendFooter(tail, Footer{IndexPosition: info.IndexPosition, IndexLength: info.IndexLength})
	if len(w.closed) == 0 {
		body.pieces = append(body.pieces, heads)
	}
	body.pieces = append(body.pieces, tail)
	// The segment's CRC32C: blocks have theirs already, so large blocks are
	// combined rather than read again (pieces alternate header, block).
	// Combining costs about as much as reading 300 KiB: smaller blocks (most
	// compressed ones) are read.
	var crc uint32
	for i, p := range body.pieces {
		body.size += int64(len(p))
		if i%2 == 1 && i/2 < len(w.closed) && len(p) >= 512<<10 {
			crc = crc32cCombine(crc, w.closed[i/2].crc, int64(len(p)))
		} else {
			crc = crc32.Update(crc, castagnoli, p)
		}
	}
	info.Size, info.CRC32C = body.size, crc
	body.pooled = w.pooled
	w.closed, w.payload, w.payBase, w.pooled = nil, nil, nil, nil
	return body, info
}

// finishStream ends a streamed segment (FinishBody with Stage): the blocks
// not yet written, then the index and footer.
func (w *SegmentWriter) finishStream(info SegmentInfo) (*SegmentBody, SegmentInfo) {
	s := w.stream
	if w.res != nil {
		s.release() // the open block was empty
		w.res, w.cut = nil, 0
	}
	s.finish()
	for i, cb := range w.closed {
		w.index.Blocks[i].Position, w.index.Blocks[i].Length = cb.pos, cb.length
	}
	info.IndexPosition = s.pos
	tail := AppendIndex(make([]byte, 0, indexHeaderSize+8+len(w.index.Blocks)*blockEntrySize+len(w.index.Gaps)*gapEntrySize+footerSize), &w.index)
	info.IndexLength = int64(len(tail))
	tail = AppendFooter(tail, Footer{IndexPosition: info.IndexPosition, IndexLength: info.IndexLength})
	s.write(tail, false, 0)
	info.Size, info.CRC32C = s.pos, s.crc
	body := &SegmentBody{size: s.pos, staged: s.st, streamErr: s.err}
	if s.err == nil && s.st.Size() != s.pos {
		body.streamErr = fmt.Errorf("staged %d bytes, want %d", s.st.Size(), s.pos)
	}
	w.closed, w.payload, w.payBase = nil, nil, nil
	return body, info
}

// SegmentBody is a finished segment held as the pieces it was built from,
// or, streamed (SegmentOptions.Stage), as a staged object to publish. It
// is immutable: every Reader reads it from the start.
type SegmentBody struct {
	pieces [][]byte
	size   int64
	pooled [][]byte // block buffers to recycle (getBlockBuf)

	staged    store.Staged // streamed: the object to publish
	streamErr error        // streamed: why the staged object is incomplete
	key       string       // streamed: the key it was published under
}

// Streamed reports whether the body is a staged object (SegmentOptions.Stage)
// rather than bytes in memory: only AppendBody can write it.
func (b *SegmentBody) Streamed() bool { return b.staged != nil }

// Release hands the body's buffers back for reuse by later segments, and
// discards a staged object that was not published. The body and every
// reader of it must not be used afterwards; a body that is never released
// is simply garbage collected (but a staged one leaves its object).
func (b *SegmentBody) Release() {
	for _, p := range b.pooled {
		putBlockBuf(p)
	}
	if b.staged != nil {
		b.staged.Abort()
	}
	b.pieces, b.pooled, b.size = nil, nil, 0
}

// Size is the segment's length in bytes.
func (b *SegmentBody) Size() int64 { return b.size }

// Bytes returns the segment in one new buffer.
func (b *SegmentBody) Bytes() []byte {
	out := make([]byte, 0, b.size)
	for _, p := range b.pieces {
		out = append(out, p...)
	}
	return out
}

// Reader returns a reader of the whole segment.
func (b *SegmentBody) Reader() *SegmentReader { return newPiecesReader(b.pieces) }

// SegmentReader reads a SegmentBody (or a flush object built of segment
// bodies, FlushBuilder) where it is held, in pieces. It reads at any offset
// (io.ReaderAt, io.Seeker), so a store can send it without copying it
// (s3store sends sections of it as the parts of an upload); WriteTo hands
// the pieces to the writer as they are.
type SegmentReader struct {
	pieces [][]byte // shared with the body: never written
	ends   []int64  // ends[i]: the offset after pieces[i]
	pos    int64
}

func newPiecesReader(pieces [][]byte) *SegmentReader {
	r := &SegmentReader{pieces: pieces, ends: make([]int64, len(pieces))}
	var end int64
	for i, p := range pieces {
		end += int64(len(p))
		r.ends[i] = end
	}
	return r
}

// size is the length of everything the reader reads.
func (r *SegmentReader) size() int64 {
	if len(r.ends) == 0 {
		return 0
	}
	return r.ends[len(r.ends)-1]
}

// Len is the number of bytes not yet read.
func (r *SegmentReader) Len() int { return int(max(r.size()-r.pos, 0)) }

// Read implements io.Reader.
func (r *SegmentReader) Read(p []byte) (int, error) {
	n, err := r.ReadAt(p, r.pos)
	r.pos += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// ReadAt implements io.ReaderAt.
func (r *SegmentReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("segment reader: negative offset")
	}
	// The first piece ending after off.
	i := sort.Search(len(r.ends), func(i int) bool { return r.ends[i] > off })
	n := 0
	for ; n < len(p) && i < len(r.pieces); i++ {
		start := r.ends[i] - int64(len(r.pieces[i]))
		n += copy(p[n:], r.pieces[i][off+int64(n)-start:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Seek implements io.Seeker.
func (r *SegmentReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.pos
	case io.SeekEnd:
		offset += r.size()
	default:
		return 0, errors.New("segment reader: invalid whence")
	}
	if offset < 0 {
		return 0, errors.New("segment reader: negative position")
	}
	r.pos = offset
	return offset, nil
}

// WriteTo implements io.WriterTo.
func (r *SegmentReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	i := sort.Search(len(r.ends), func(i int) bool { return r.ends[i] > r.pos })
	for ; i < len(r.pieces); i++ {
		start := r.ends[i] - int64(len(r.pieces[i]))
		n, err := w.Write(r.pieces[i][r.pos-start:])
		total += int64(n)
		r.pos += int64(n)
		if err != nil {
			return total, err
		}
		if r.pos < r.ends[i] {
			return total, io.ErrShortWrite
		}
	}
	return total, nil
}

// rest returns the pieces not yet read (the first one sliced).
func (r *SegmentReader) rest() [][]byte {
	i := sort.Search(len(r.ends), func(i int) bool { return r.ends[i] > r.pos })
	if i == len(r.pieces) {
		return nil
	}
	out := append([][]byte(nil), r.pieces[i:]...)
	out[0] = out[0][r.pos-(r.ends[i]-int64(len(r.pieces[i]))):]
	return out
}
