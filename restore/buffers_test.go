package restore

import (
	"runtime"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/kbackup/kbackup/internal/target"
	"github.com/kbackup/kbackup/manifest"
	"github.com/twmb/franz-go/pkg/kgo"
)

func sameBuf(a, b *blockBuf) bool {
	return unsafe.SliceData(a.b[:1]) == unsafe.SliceData(b.b[:1])
}

// TestBlockFreeReuse: blocks a few bytes apart in length share buffers, a
// buffer too small for one block stays for the next small one, and the
// smallest buffer that fits is taken (a compressed block's stored bytes
// must not take the buffer its records need next).
func TestBlockFreeReuse(t *testing.T) {
	var f blockFree
	// An uncompressed archive: each block a few bytes longer than the last.
	first := f.get(1<<20 - 300)
	if len(first.b) != 1<<20-300 || first.free != &f {
		t.Fatalf("get: len %d, free list %p", len(first.b), first.free)
	}
	f.put(first)
	for _, n := range []int{1<<20 - 200, 1<<20 - 100, 1<<20 - 250} {
		bb := f.get(n)
		if !sameBuf(bb, first) || len(bb.b) != n {
			t.Fatalf("get(%d) after a put of a buffer for %d bytes: a new buffer (len %d)", n, 1<<20-300, len(bb.b))
		}
		f.put(bb)
	}
	// A compressed archive: stored bytes, then the records, per block.
	var c blockFree
	stored, raw := c.get(200<<10), c.get(1<<20-50)
	c.put(raw) // the records' buffer first: a first fit would give it to the stored bytes
	c.put(stored)
	for range 3 {
		s, r := c.get(190<<10), c.get(1<<20-10)
		if !sameBuf(s, stored) {
			t.Fatal("the stored bytes of the next block did not take the smallest buffer that fits")
		}
		if !sameBuf(r, raw) {
			t.Fatal("the records of the next block did not reuse the 1 MiB buffer")
		}
		c.put(r)
		c.put(s)
	}
	if len(c.bufs) != 2 {
		t.Fatalf("%d buffers free, want 2", len(c.bufs))
	}
	// A larger block than any free buffer: a new buffer, and the small
	// ones stay.
	big := c.get(2 << 20)
	if sameBuf(big, raw) || sameBuf(big, stored) || len(c.bufs) != 2 {
		t.Fatalf("get(2 MiB): reused a smaller buffer or dropped one (%d free, want 2)", len(c.bufs))
	}
	c.put(big)
	if allocs := testing.AllocsPerRun(100, func() { f.put(f.get(1<<20 - 7)) }); allocs != 0 {
		t.Errorf("a get and put with a buffer free: %v allocations, want 0", allocs)
	}
}

// TestBlockBufRelease: a claimed block goes back to the free list once its
// reader moved on and every entry made from it was released; the other
// buffers of the scan go back at once.
func TestBlockBufRelease(t *testing.T) {
	var f blockFree
	bufs := blockBuffers{free: &f}
	stored := bufs.Get(100 << 10)
	raw := bufs.Get(1 << 20)
	bufs.Put(stored)
	if len(f.bufs) != 1 || len(bufs.out) != 1 {
		t.Fatalf("after Put: %d free, %d out; want 1 and 1", len(f.bufs), len(bufs.out))
	}
	skipped := bufs.Get(1 << 20) // a block none of whose records were wanted
	bb := bufs.claim(raw)
	if len(f.bufs) != 2 || len(bufs.out) != 0 || unsafe.SliceData(bb.b) != unsafe.SliceData(raw) {
		t.Fatalf("after claim: %d free, %d out; want 2 and 0", len(f.bufs), len(bufs.out))
	}
	if unsafe.SliceData(f.bufs[1].b) != unsafe.SliceData(skipped) {
		t.Fatal("the skipped block's buffer is not back")
	}
	const entries = 3
	bb.release(blockHold - entries) // the reader moves on
	for i := range entries {
		if len(f.bufs) != 2 {
			t.Fatalf("block back after %d of %d entries", i, entries)
		}
		bb.release(1)
	}
	if len(f.bufs) != 3 || f.bufs[2] != bb {
		t.Fatalf("%d free after every entry was released, want 3 (the block last)", len(f.bufs))
	}
	bufs.done()
}

// TestRestoreBlockBuffersReused: a whole restore allocates about its
// working set of block buffers once, not a buffer per block: a released
// buffer serves later blocks (of lengths of their own here: values of 100
// to 3,099 bytes), and collections during the restore do not empty the
// free list, as they would a sync.Pool. A lane's working set: the batches
// it reads ahead and the one being handed over (target.BatchBytes of
// records each), its in-flight window, the block being read (with a
// compressed one's stored bytes) and the last record's pin. Which free
// buffer a block takes (the smallest that holds it) is
// TestBlockFreeReuse's. (The franz-go path's: the direct path reads with
// ScanTransient, one block's buffers per lane.)
func TestRestoreBlockBuffersReused(t *testing.T) {
	for _, codec := range []manifest.Codec{manifest.CodecZstd, manifest.CodecNone} {
		t.Run(codec.String(), func(t *testing.T) {
			st, _ := newStore(t)
			const parts, block, readAhead, window = 2, 128 << 10, 1, 1 << 20
			// Values of 100 to 3,099 bytes: blocks close up to 3 KB short
			// of the block size, each at a length of its own.
			size := func(o int64) int { return 100 + int(o*7919%3000) }
			perPart := synthArchiveSized(t, st, "tp", parts, 48<<20, size, 1600, 3100, 4<<20, block, codec)
			tgt := newCluster(t)
			o := Options{Store: st, KafkaOpts: []kgo.Opt{kgo.SeedBrokers(tgt.ListenAddrs()...)}, Topics: mustSel(t, "tp"),
				Rename: map[string]string{"tp": "tp-restored"}, Logger: testLogger(t), Concurrency: parts,
				ReadAhead: readAhead, MaxInFlightBytes: window, Producer: ProducerFranz}
			var gets, made int64
			o.testBlocks = func(g, m int64) { gets, made = g, m }
			// Collections during the restore must not empty the free list
			// (a sync.Pool's would be).
			stop := make(chan struct{})
			gcs := make(chan struct{})
			go func() {
				defer close(gcs)
				for {
					select {
					case <-stop:
						return
					case <-time.After(5 * time.Millisecond):
						runtime.GC()
					}
				}
			}()
			var once sync.Once
			stopGCs := func() { once.Do(func() { close(stop); <-gcs }) }
			defer stopGCs() // also when run fails: later tests (TestTuneGC) watch the collector
			sum := run(t, o)
			stopGCs()
			if sum.Records != perPart*parts {
				t.Fatalf("restored %d records, want %d", sum.Records, perPart*parts)
			}
			perLane := int64(((readAhead+2)*target.BatchBytes+window)/block + 6)
			t.Logf("%s: %d block buffers taken, %d allocated (bound %d)", codec, gets, made, parts*perLane)
			if gets < 4*parts*perLane {
				t.Fatalf("only %d block buffers taken: the archive is too small to tell", gets)
			}
			if made > parts*perLane {
				t.Fatalf("%d of %d block buffers were allocated, want at most %d (the lanes' working sets)", made, gets, parts*perLane)
			}
		})
	}
}
