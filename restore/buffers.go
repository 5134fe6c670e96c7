package restore

import (
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The memory a lane recycles: entry slabs (the entries and franz-go
// records handed to the producer) and archive block buffers (the bytes
// those records alias), each reference-counted until acknowledged.

// entrySlot is an entry with its franz-go record.
type entrySlot struct {
	e   entry
	rec kgo.Record
}

// slotsPerSlab keeps a slab of entry slots a small allocation (< 32 KiB).
const slotsPerSlab = 96

// slab holds the entries of slotsPerSlab consecutive records of a lane.
// Slabs are recycled (slabPool) once none of their entries is referenced:
// refs starts at slotsPerSlab+1; every entry applied to the acknowledged
// state releases one, the reader (which fills the slabs) releases its
// unused slots plus one when it is done with the slab, and partAck.last pins
// the slab of each partition's last record. Entries that never complete (a failure) keep their slab out
// of the pool; the garbage collector takes it then.
type slab struct {
	slots [slotsPerSlab]entrySlot
	refs  atomic.Int32
}

var slabPool = sync.Pool{New: func() any { return new(slab) }}

func (s *slab) release(n int32) {
	if s.refs.Add(-n) == 0 {
		slabPool.Put(s)
	}
}

// blockBuf is the buffer of an archive block (manifest.ScanBuffered) that
// the franz-go records of its entries alias. It is recycled (blockPool)
// once no entry references it: refs starts at blockHold while the reader
// hands out the block's records; when the reader moves on it takes
// blockHold back minus the number of entries it made, every entry applied
// to the acknowledged state releases one, and partAck.last pins the block
// of each partition's last record (checkpoints hash it). Entries that
// never complete keep their block out of the pool (the garbage collector
// takes it then).
type blockBuf struct {
	b    []byte
	refs atomic.Int64
}

const blockHold = 1 << 40

var blockPool sync.Pool // of *blockBuf

func (bb *blockBuf) release(n int64) {
	if bb != nil && bb.refs.Add(-n) == 0 {
		blockPool.Put(bb)
	}
}

// blockBuffers is a lane reader's manifest.BlockBuffers: buffers from
// blockPool. out holds the ones handed to the scan and not yet put back
// or claimed (at most a block's two).
type blockBuffers struct {
	out []*blockBuf
}

func (s *blockBuffers) Get(n int) []byte {
	bb, _ := blockPool.Get().(*blockBuf)
	if bb == nil || cap(bb.b) < n {
		bb = &blockBuf{b: make([]byte, n)}
	}
	bb.b = bb.b[:n]
	s.out = append(s.out, bb)
	return bb.b
}

func (s *blockBuffers) Put(b []byte) {
	for i, bb := range s.out {
		if &bb.b[0] == &b[0] {
			s.out = append(s.out[:i], s.out[i+1:]...)
			blockPool.Put(bb)
			return
		}
	}
}

// claim returns the blockBuf of b, a buffer records alias (with refs at
// blockHold). The other buffers handed out before it belong to blocks none
// of whose records were wanted: they go back to the pool.
func (s *blockBuffers) claim(b []byte) *blockBuf {
	var found *blockBuf
	for _, bb := range s.out {
		if &bb.b[0] == &b[0] {
			found = bb
		} else {
			blockPool.Put(bb)
		}
	}
	clear(s.out)
	s.out = s.out[:0]
	if found == nil { // cannot happen: ScanBuffered hands out its buffers only
		found = &blockBuf{b: b}
	}
	found.refs.Store(blockHold)
	return found
}

// done puts back the buffers no record aliases (the scan ended).
func (s *blockBuffers) done() {
	for _, bb := range s.out {
		blockPool.Put(bb)
	}
	clear(s.out)
	s.out = s.out[:0]
}

// entryOf returns the entry of a record handed to the producer: the
// record is the rec field of an entrySlot (the produce promise gets the
// record back, so no closure is allocated per record).
func entryOf(r *kgo.Record) *entry {
	return &(*entrySlot)(unsafe.Add(unsafe.Pointer(r), -int(unsafe.Offsetof(entrySlot{}.rec)))).e
}
