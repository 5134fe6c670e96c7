package restore

import (
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/manifest"
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
	if s != nil && n != 0 && s.refs.Add(-n) == 0 {
		slabPool.Put(s)
	}
}

// blockBuf is the buffer of an archive block (manifest.ScanBuffered) that
// the franz-go records of its entries alias. It is recycled (to the
// restore's blockFree) once no entry references it: refs starts at
// blockHold while the reader hands out the block's records; when the
// reader moves on it takes blockHold back minus the number of entries it
// made, every entry applied to the acknowledged state releases one, and
// partAck.last pins the block of each partition's last record (checkpoints
// hash it). Entries that never complete keep their block out of the free
// list (the garbage collector takes it then).
type blockBuf struct {
	b    []byte
	refs atomic.Int64
	free *blockFree // where it goes back
}

const blockHold = 1 << 40

func (bb *blockBuf) release(n int64) {
	if bb != nil && n != 0 && bb.refs.Add(-n) == 0 {
		bb.free.put(bb)
	}
}

// blockFree is a restore's free list of block buffers, shared by its
// lanes and dropped with it. Unlike a sync.Pool it is not emptied by the
// garbage collector, and a buffer too small for the block at hand stays
// for a later, smaller one instead of being dropped: with a sync.Pool of
// exactly sized buffers a restore of 160 MB allocated ~95 MB of block
// buffers, twice its working set (blocks differ in length by a few bytes,
// and a compressed block's stored bytes take a small buffer, its records a
// large one).
type blockFree struct {
	mu   sync.Mutex
	bufs []*blockBuf
	// gets counts the buffers handed out, made the new ones among them.
	gets, made int64
}

// get returns a buffer of length n: the smallest free one that holds it,
// else a new one with its capacity rounded up (manifest.BlockBufferCap).
func (f *blockFree) get(n int) *blockBuf {
	f.mu.Lock()
	f.gets++
	best := -1
	for i, bb := range f.bufs {
		if c := cap(bb.b); c >= n && (best < 0 || c < cap(f.bufs[best].b)) {
			best = i
		}
	}
	var bb *blockBuf
	if best >= 0 {
		bb = f.bufs[best]
		last := len(f.bufs) - 1
		f.bufs[best] = f.bufs[last]
		f.bufs[last] = nil
		f.bufs = f.bufs[:last]
	} else {
		f.made++
	}
	f.mu.Unlock()
	if bb == nil {
		bb = &blockBuf{b: make([]byte, 0, manifest.BlockBufferCap(n)), free: f}
	}
	bb.b = bb.b[:n]
	return bb
}

func (f *blockFree) put(bb *blockBuf) {
	f.mu.Lock()
	f.bufs = append(f.bufs, bb)
	f.mu.Unlock()
}

// blockBuffers is a lane reader's manifest.BlockBuffers: buffers from the
// restore's free list. out holds the ones handed to the scan and not yet
// put back or claimed (at most a block's two).
type blockBuffers struct {
	free *blockFree
	out  []*blockBuf
}

func (s *blockBuffers) Get(n int) []byte {
	bb := s.free.get(n)
	s.out = append(s.out, bb)
	return bb.b
}

func (s *blockBuffers) Put(b []byte) {
	for i, bb := range s.out {
		if &bb.b[0] == &b[0] {
			s.out = append(s.out[:i], s.out[i+1:]...)
			s.free.put(bb)
			return
		}
	}
}

// claim returns the blockBuf of b, a buffer records alias (with refs at
// blockHold). The other buffers handed out before it belong to blocks none
// of whose records were wanted: they go back to the free list.
func (s *blockBuffers) claim(b []byte) *blockBuf {
	var found *blockBuf
	for _, bb := range s.out {
		if &bb.b[0] == &b[0] {
			found = bb
		} else {
			s.free.put(bb)
		}
	}
	clear(s.out)
	s.out = s.out[:0]
	if found == nil { // cannot happen: ScanBuffered hands out its buffers only
		found = &blockBuf{b: b, free: s.free}
	}
	found.refs.Store(blockHold)
	return found
}

// done puts back the buffers no record aliases (the scan ended).
func (s *blockBuffers) done() {
	for _, bb := range s.out {
		s.free.put(bb)
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
