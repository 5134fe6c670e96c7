package archive

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/twmb/franz-go/pkg/kgo"
)

// fetchPool recycles the data client's record slices and the buffers it
// decompresses fetched batches into (kgo.WithPools). Without it every
// fetched batch is decompressed into a new allocation and decoded into a
// new slice of records, about the fetched bytes again in garbage: most of
// the archiver's allocation, and so of the collector's work and of the
// pages a catch-up faults in. The archiver copies every record into its
// segment as soon as it reads it and recycles it there (appendFetch), so a
// batch's buffers come back as soon as its last record is archived.
//
// Buffers are kept by size class (four per doubling, so a buffer is at
// most a quarter larger than asked for: franz-go zeroes a buffer's whole
// capacity before putting it back) in sync.Pools, which the collector
// empties when they go unused.
type fetchPool struct {
	bytes classPool[byte]       // decompressed batches
	recs  classPool[kgo.Record] // decoded batches
}

const (
	fetchBytesMinShift = 12 // smallest pooled buffer: 4 KiB
	fetchBytesMaxShift = 25 // largest: under 64 MiB
	fetchBytesClasses  = (fetchBytesMaxShift - fetchBytesMinShift + 1) * 4
	fetchRecsMinShift  = 3 // 8 records
	fetchRecsMaxShift  = 17
	fetchRecsClasses   = (fetchRecsMaxShift - fetchRecsMinShift + 1) * 4

	// fetchGuessRatio guesses a batch's decompressed size from its
	// compressed size where the codec's frame does not say (gzip, lz4,
	// zstd without a content size). A guess too small costs a grown
	// copy, and the grown buffer is what comes back to the pool.
	fetchGuessRatio = 4
)

func newFetchPool() *fetchPool {
	return &fetchPool{
		bytes: newClassPool[byte](fetchBytesMinShift, fetchBytesClasses),
		recs:  newClassPool[kgo.Record](fetchRecsMinShift, fetchRecsClasses),
	}
}

var (
	_ kgo.PoolDecompressBytes = (*fetchPool)(nil)
	_ kgo.PoolRecords         = (*fetchPool)(nil)
)

// GetDecompressBytes returns a buffer with room for src decompressed, or
// nil (franz-go then allocates) where that is beyond the largest class.
func (p *fetchPool) GetDecompressBytes(src []byte, codec kgo.CompressionCodecType) []byte {
	return p.bytes.get(decompressedSize(src, codec))
}

// PutDecompressBytes takes back a buffer franz-go has zeroed.
func (p *fetchPool) PutDecompressBytes(b []byte) { p.bytes.put(b) }

// GetRecords returns a slice of at least n records (zeroed: franz-go
// zeroes a record when it is recycled).
func (p *fetchPool) GetRecords(n int) []kgo.Record { return p.recs.get(n) }

// PutRecords takes back a slice whose records were all recycled.
func (p *fetchPool) PutRecords(rs []kgo.Record) { p.recs.put(rs) }

// classPool keeps slices by the size class of their capacity.
type classPool[T any] struct {
	minShift int
	pools    []sync.Pool // *[]T

	// Gets served from the pool, and slices taken back: for the tests.
	reused, taken atomic.Int64
}

func newClassPool[T any](minShift, classes int) classPool[T] {
	return classPool[T]{minShift: minShift, pools: make([]sync.Pool, classes)}
}

// get returns an empty slice with room for n, or nil beyond the largest
// class.
func (p *classPool[T]) get(n int) []T {
	c := ceilClass(n, p.minShift, len(p.pools))
	if c < 0 {
		return nil
	}
	if v, ok := p.pools[c].Get().(*[]T); ok {
		p.reused.Add(1)
		return *v
	}
	return make([]T, 0, classSize(c, p.minShift))
}

// put takes s back into the largest class its capacity covers; a slice
// below the smallest class or beyond the largest is left to the collector.
func (p *classPool[T]) put(s []T) {
	c := floorClass(cap(s), p.minShift, len(p.pools))
	if c < 0 {
		return
	}
	s = s[:0]
	p.taken.Add(1)
	p.pools[c].Put(&s)
}

// classSize is the size of class c of a pool whose smallest class is
// 1<<minShift: four classes per doubling, 1, 1.25, 1.5 and 1.75 times a
// power of two.
func classSize(c, minShift int) int {
	shift := c/4 + minShift
	return 1<<shift + (c%4)<<(shift-2)
}

// ceilClass is the smallest class at least n large, or -1 if n is larger
// than the largest class (n <= 0 is class 0).
func ceilClass(n, minShift, classes int) int {
	if n <= 1<<minShift {
		return 0
	}
	shift := bits.Len(uint(n-1)) - 1 // 1<<shift < n <= 1<<(shift+1)
	step := 1 << (shift - 2)
	sub := (n - 1<<shift + step - 1) / step // 1..4
	c := (shift-minShift)*4 + sub
	if c >= classes {
		return -1
	}
	return c
}

// floorClass is the largest class at most n large, or -1 if n is smaller
// than the smallest class or beyond the largest class's next doubling.
func floorClass(n, minShift, classes int) int {
	if n < 1<<minShift {
		return -1
	}
	shift := bits.Len(uint(n)) - 1 // 1<<shift <= n < 1<<(shift+1)
	c := (shift-minShift)*4 + (n-1<<shift)>>(shift-2)
	if c >= classes {
		return -1
	}
	return c
}

var xerialMagic = []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

// decompressedSize is what src decompresses to with codec: read from the
// frame where it says (snappy, framed or not; zstd with a content size),
// else guessed. A malformed frame is franz-go's to report; it is guessed.
func decompressedSize(src []byte, codec kgo.CompressionCodecType) int {
	guess := len(src) * fetchGuessRatio
	switch codec {
	case kgo.CodecSnappy:
		if len(src) > 16 && bytes.HasPrefix(src, xerialMagic) {
			total := 0
			for rem := src[16:]; len(rem) >= 4; {
				size := int(binary.BigEndian.Uint32(rem))
				rem = rem[4:]
				if size < 0 || size > len(rem) {
					return guess
				}
				l, err := s2.DecodedLen(rem[:size])
				if err != nil {
					return guess
				}
				total += l
				rem = rem[size:]
			}
			return total
		}
		if l, err := s2.DecodedLen(src); err == nil {
			return l
		}
	case kgo.CodecZstd:
		var h zstd.Header
		if h.Decode(src) == nil && h.HasFCS && h.FrameContentSize < 1<<(fetchBytesMaxShift+1) {
			return int(h.FrameContentSize)
		}
	}
	return guess
}
