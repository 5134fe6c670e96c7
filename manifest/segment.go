package manifest

import (
	"fmt"
	"hash/crc32"
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
	// CodecS2 compresses each block as one S2 block (the block format of
	// github.com/klauspost/compress/s2, a Snappy extension): about 3×
	// faster to compress than zstd's fastest level, objects ~1.6× larger.
	CodecS2 Codec = 2
)

// ParseCodec returns the codec named s ("zstd", "s2" or "none").
func ParseCodec(s string) (Codec, error) {
	switch s {
	case "zstd":
		return CodecZstd, nil
	case "s2":
		return CodecS2, nil
	case "none":
		return CodecNone, nil
	}
	return 0, fmt.Errorf("unknown compression %q: use zstd, s2 or none", s)
}

// String names the codec.
func (c Codec) String() string {
	switch c {
	case CodecNone:
		return "none"
	case CodecZstd:
		return "zstd"
	case CodecS2:
		return "s2"
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

// crc32cCombine returns the CRC-32C of A||B from crc1 = CRC(A), crc2 =
// CRC(B) and len2 = len(B), without reading the bytes: appending len2 zero
// bytes multiplies crc1 by x^(8·len2) modulo the polynomial, and that
// power is the product of the precomputed x^(2^k) for the bits of 8·len2
// (as zlib's crc32_combine does since 1.2.12). Under a microsecond for a
// megabyte, where squaring a 32×32 GF(2) matrix per bit of len2 (the
// previous way) took ~50–100 µs: the archiver combines one per block.
func crc32cCombine(crc1, crc2 uint32, len2 int64) uint32 {
	if len2 <= 0 {
		return crc1
	}
	op := uint32(1) << 31 // x^0, reflected
	for k := 3; len2 != 0; k, len2 = k+1, len2>>1 {
		if len2&1 != 0 {
			op = crcMulModP(crcX2n[k], op)
		}
	}
	return crcMulModP(op, crc1) ^ crc2
}

// crcX2n[k] is x^(2^k) modulo the Castagnoli polynomial, reflected (bit 31
// is x^0): x^(8·n) for any n < 2^63 is a product of entries 3 to 65.
var crcX2n = func() (t [66]uint32) {
	p := uint32(1) << 30 // x^1
	for k := range t {
		t[k] = p
		p = crcMulModP(p, p)
	}
	return t
}()

// crcMulModP returns a·b modulo the Castagnoli polynomial (both reflected).
func crcMulModP(a, b uint32) uint32 {
	var p uint32
	for m := uint32(1) << 31; m != 0 && a != 0; m >>= 1 {
		if a&m != 0 {
			p ^= b
			a &^= m
		}
		if b&1 != 0 {
			b = b>>1 ^ 0x82F63B78
		} else {
			b >>= 1
		}
	}
	return p
}
