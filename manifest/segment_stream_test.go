package manifest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/kbackup/kbackup/store"
)

// memStaged is a store.Staged in memory that can fail its writes.
type memStaged struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	failAfter int // fail every write after this many bytes (<0: never)
	aborted   bool
	published string
	// large and misplaced count writes of a page or more, and those of them
	// whose bytes lie at another offset within a memory page than within
	// the object (see SegmentWriter.takeFullBuf).
	large, misplaced int
}

func (m *memStaged) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.aborted {
		return 0, store.ErrAborted
	}
	if m.failAfter >= 0 && m.buf.Len()+len(p) > m.failAfter {
		return 0, errors.New("disk full")
	}
	if len(p) >= streamAlign {
		m.large++
		if (uintptr(unsafe.Pointer(&p[0]))-uintptr(m.buf.Len()))&(streamAlign-1) != 0 {
			m.misplaced++
		}
	}
	return m.buf.Write(p)
}

func (m *memStaged) Size() int64 { m.mu.Lock(); defer m.mu.Unlock(); return int64(m.buf.Len()) }
func (m *memStaged) Abort()      { m.mu.Lock(); defer m.mu.Unlock(); m.aborted = true }
func (m *memStaged) Publish(context.Context, string, store.PutOptions) error {
	return errors.New("not used here")
}

// streamRecords is records of about size bytes each at offsets from base,
// with a hole (a gap) in the middle.
func streamRecords(base int64, n, size int) []Record {
	recs := make([]Record, 0, n)
	for i := range n {
		off := base + int64(i)
		if i > n/2 {
			off += 5
		}
		recs = append(recs, Record{Offset: off, Timestamp: 1700000000000 + int64(i%17)*1000, Key: []byte(fmt.Sprint("k", i)),
			Value: bytes.Repeat([]byte{byte(i)}, size+i%13), Headers: []Header{{Key: "h", Value: []byte{byte(i)}}}, ProducerID: -1, ProducerEpoch: -1, LeaderEpoch: 1})
	}
	return recs
}

func buildStreamed(t *testing.T, codec Codec, block int, recs []Record, stage func() (store.Staged, error)) (*SegmentWriter, int) {
	t.Helper()
	return buildStreamedAfter(t, codec, block, 1, recs, stage)
}

// buildStreamedAfter is buildStreamed staging after stageAfter blocks.
func buildStreamedAfter(t *testing.T, codec Codec, block, stageAfter int, recs []Record, stage func() (store.Staged, error)) (*SegmentWriter, int) {
	t.Helper()
	w := NewSegmentWriter(recs[0].Offset, SegmentOptions{Codec: codec, BlockSize: block, Stage: stage, StageAfter: stageAfter})
	maxHeld := 0
	for i := range recs {
		if recs[i].Offset > w.Next() {
			if err := w.AddGap(recs[i].Offset-1, GapTransaction); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Append(&recs[i]); err != nil {
			t.Fatal(err)
		}
		maxHeld = max(maxHeld, w.Held())
	}
	return w, maxHeld
}

// TestStreamedBlocksPlaced: an uncompressed streamed segment's blocks lie
// in memory at the same offset within a page as in the segment, whatever
// the records' sizes and when staging starts, so that a store writing with
// O_DIRECT can write them without copying (filestore).
func TestStreamedBlocksPlaced(t *testing.T) {
	t.Parallel()
	for _, after := range []int{0, 1, 3} {
		for _, size := range []int{900, 5000, 17} {
			recs := streamRecords(7, 3_000_000/(size+40), size)
			var st *memStaged
			w, _ := buildStreamedAfter(t, CodecNone, 64<<10, after, recs, func() (store.Staged, error) {
				st = &memStaged{failAfter: -1}
				return st, nil
			})
			body, info := w.FinishBody()
			if st == nil || !body.Streamed() {
				t.Fatalf("after %d, records of %d B: not streamed", after, size)
			}
			// Every block's payload is one large write, placed; the
			// index may be another, not placed.
			if st.large < info.Blocks || st.misplaced > st.large-info.Blocks {
				t.Errorf("after %d, records of %d B: %d blocks, %d writes of a page or more, %d of them not placed at their offset within a page",
					after, size, info.Blocks, st.large, st.misplaced)
			}
			body.Release()
		}
	}
}

// TestSegmentStream: a segment streamed to a staged object (Stage) is the
// same bytes, summary, CRC32C and index as the one held in memory, for
// every codec and block count; the writer lets go of what it streamed; a
// segment of one block is not staged; a failed write or stage is reported
// as a lost segment, never as a short one.
func TestSegmentStream(t *testing.T) {
	t.Parallel()
	for _, codec := range []Codec{CodecNone, CodecZstd, CodecS2} {
		for _, n := range []int{1, 3, 30, 40, 400} {
			for _, after := range []int{0, 1, 3} {
				recs := streamRecords(100, n, 900)
				held, _ := buildStreamed(t, codec, 8<<10, recs, nil)
				want, wantInfo := held.Finish()
				var st *memStaged
				w, maxHeld := buildStreamedAfter(t, codec, 8<<10, after, recs, func() (store.Staged, error) {
					st = &memStaged{failAfter: -1}
					return st, nil
				})
				body, info := w.FinishBody()
				if info != wantInfo {
					t.Fatalf("%s/%d: streamed info %+v, want %+v", codec, n, info, wantInfo)
				}
				if wantInfo.Blocks <= max(after, 1) {
					if st != nil || body.Streamed() || !bytes.Equal(body.Bytes(), want) {
						t.Fatalf("%s/%d: a segment of %d blocks was staged after %d", codec, n, wantInfo.Blocks, after)
					}
					continue
				}
				if st == nil || !body.Streamed() || body.Size() != int64(len(want)) {
					t.Fatalf("%s/%d: not streamed (%v) or size %d, want %d", codec, n, st == nil, body.Size(), len(want))
				}
				if !bytes.Equal(st.buf.Bytes(), want) {
					t.Fatalf("%s/%d: the staged bytes differ from the segment held in memory", codec, n)
				}
				if _, got, err := decodeSegment(st.buf.Bytes()); err != nil || len(got) != n {
					t.Fatalf("%s/%d: decode: %d records, %v", codec, n, len(got), err)
				}
				// Uncompressed: the open block, the two the streamer's channel
				// holds and the one it writes (compressed blocks also wait, in
				// order, for a slower compression: no bound that holds under
				// any scheduling). Nothing when finished.
				if codec == CodecNone && maxHeld > (max(after, 1)+4)*(8<<10) {
					t.Errorf("%s/%d: the writer held %d bytes at most, want %d blocks (8 KiB) at most", codec, n, maxHeld, max(after, 1)+4)
				}
				if w.Held() != 0 {
					t.Errorf("%s/%d: the writer holds %d bytes after FinishBody", codec, n, w.Held())
				}
				body.Release()
				if !st.aborted {
					t.Errorf("%s/%d: Release of an unpublished streamed body did not abort it", codec, n)
				}
			}
		}
	}

	// Failures: a write error anywhere, or an aborted stage, loses the
	// segment: publishing it reports ErrSegmentLost and writes nothing.
	a, st := newTestArchive(t)
	p := a.Partition("t", TopicID{1}, 0)
	recs := streamRecords(0, 300, 900)
	for _, fail := range []int{0, 5, 20000, 200000} {
		w, _ := buildStreamed(t, CodecZstd, 8<<10, recs, func() (store.Staged, error) { return &memStaged{failAfter: fail}, nil })
		body, info := w.FinishBody()
		if _, err := p.AppendBody(t.Context(), nil, body, info, "w", 1); !errors.Is(err, ErrSegmentLost) {
			t.Fatalf("write failing after %d bytes: AppendBody %v, want ErrSegmentLost", fail, err)
		}
	}
	w, _ := buildStreamed(t, CodecNone, 8<<10, recs[:100], func() (store.Staged, error) { return &memStaged{failAfter: -1}, nil })
	w.Abort()
	body, info := w.FinishBody()
	if _, err := p.AppendBody(t.Context(), nil, body, info, "w", 1); !errors.Is(err, ErrSegmentLost) {
		t.Fatalf("aborted: AppendBody %v, want ErrSegmentLost", err)
	}
	if h, err := p.Head(t.Context()); err != nil || h != nil {
		t.Fatalf("after lost segments the head is %+v, %v: want none", h, err)
	}
	// Stage failing: held in memory, committed as usual.
	w, _ = buildStreamed(t, CodecZstd, 8<<10, recs, func() (store.Staged, error) { return nil, errors.New("too many open files") })
	body, info = w.FinishBody()
	if body.Streamed() {
		t.Fatal("streamed although Stage failed")
	}
	if _, err := p.AppendBody(t.Context(), nil, body, info, "w", 1); err != nil {
		t.Fatal(err)
	}
	// Stage refused at first (the packed layout's bound on staged objects
	// is reached), then accepted: asked again at each next block, the
	// segment streams from then on, the blocks held so far first.
	held, _ := buildStreamed(t, CodecNone, 8<<10, recs, nil)
	want, _ := held.Finish()
	calls := 0
	var late *memStaged
	w, _ = buildStreamedAfter(t, CodecNone, 8<<10, 2, recs, func() (store.Staged, error) {
		if calls++; calls < 4 {
			return nil, errors.New("streamed flush objects at their bound")
		}
		late = &memStaged{failAfter: -1}
		return late, nil
	})
	body, _ = w.FinishBody()
	if calls != 4 || late == nil || !body.Streamed() || !bytes.Equal(late.buf.Bytes(), want) {
		t.Fatalf("Stage refused 3 times: %d calls, streamed %v; want staged at the 4th, the same bytes", calls, body.Streamed())
	}
	body.Release()
	_ = st
}

// buffersStaged is a memStaged that takes several buffers per call
// (store.BuffersWriter), each call slowed by delay, and counts the calls
// and the most buffers one call had.
type buffersStaged struct {
	memStaged
	delay       time.Duration
	countedMu   sync.Mutex
	calls, most int
}

func (b *buffersStaged) WriteBuffers(bufs [][]byte) error {
	time.Sleep(b.delay)
	b.countedMu.Lock()
	b.calls++
	b.most = max(b.most, len(bufs))
	b.countedMu.Unlock()
	for _, p := range bufs {
		if _, err := b.Write(p); err != nil {
			return err
		}
	}
	return nil
}

// TestSegmentStreamBuffers: a streamed segment's blocks go to a staged
// object taking several buffers (store.BuffersWriter; filestore writes
// them with one writev) as the same bytes, in order, for every codec; the
// blocks queued while a slow write ran go together with their headers in
// the next call; a failed call loses the segment.
func TestSegmentStreamBuffers(t *testing.T) {
	t.Parallel()
	for _, codec := range []Codec{CodecNone, CodecZstd, CodecS2} {
		recs := streamRecords(100, 400, 900)
		held, _ := buildStreamed(t, codec, 8<<10, recs, nil)
		want, wantInfo := held.Finish()
		var st *buffersStaged
		w, _ := buildStreamed(t, codec, 8<<10, recs, func() (store.Staged, error) {
			st = &buffersStaged{memStaged: memStaged{failAfter: -1}, delay: time.Millisecond}
			return st, nil
		})
		body, info := w.FinishBody()
		if info != wantInfo || st == nil || !body.Streamed() {
			t.Fatalf("%s: info %+v (want %+v), streamed %v", codec, info, wantInfo, st != nil && body.Streamed())
		}
		if !bytes.Equal(st.buf.Bytes(), want) {
			t.Fatalf("%s: the staged bytes differ from the segment held in memory", codec)
		}
		// Blocks of 8 KiB appended in far less than a millisecond
		// each: most wait for the write before them.
		if st.calls == 0 || st.calls >= wantInfo.Blocks || st.most < 4 {
			t.Errorf("%s: %d blocks in %d calls, at most %d buffers in one: want blocks batched (a header and a block each)", codec, wantInfo.Blocks, st.calls, st.most)
		}
		body.Release()
	}
	a, _ := newTestArchive(t)
	p := a.Partition("t", TopicID{1}, 0)
	for _, fail := range []int{5, 20000, 200000} {
		w, _ := buildStreamed(t, CodecNone, 8<<10, streamRecords(0, 300, 900), func() (store.Staged, error) {
			return &buffersStaged{memStaged: memStaged{failAfter: fail}}, nil
		})
		body, info := w.FinishBody()
		if _, err := p.AppendBody(t.Context(), nil, body, info, "w", 1); !errors.Is(err, ErrSegmentLost) {
			t.Fatalf("writes failing after %d bytes: AppendBody %v, want ErrSegmentLost", fail, err)
		}
	}
}

// TestStreamerWritesReadyBlocks: a block still being compressed does not
// hold back the ready one queued before it: the streamer writes the ready
// block alone, then the other once compressed.
func TestStreamerWritesReadyBlocks(t *testing.T) {
	t.Parallel()
	st := &buffersStaged{memStaged: memStaged{failAfter: -1}}
	s := &streamer{st: st, codec: CodecZstd, quit: make(chan struct{}), done: make(chan struct{}), blocks: make(chan *closedBlock, 2)}
	compressed := make(chan struct{})
	close(compressed)
	ready := &closedBlock{stored: []byte("ready"), rawLen: 10, done: compressed, records: 1}
	pending := &closedBlock{stored: []byte("pending"), rawLen: 12, done: make(chan struct{}), records: 1}
	s.blocks <- ready // both queued before the streamer looks
	s.blocks <- pending
	go s.run()
	calls := func() int {
		st.countedMu.Lock()
		defer st.countedMu.Unlock()
		return st.calls
	}
	for deadline := time.Now().Add(5 * time.Second); calls() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the ready block was not written while the next one was being compressed")
		}
	}
	if st.most != 2 {
		t.Fatalf("the first write had %d buffers, want the ready block's header and bytes", st.most)
	}
	close(pending.done)
	close(s.blocks)
	<-s.done
	if s.err != nil || calls() != 2 || ready.pos != segHeaderSize || pending.pos != ready.pos+ready.length {
		t.Fatalf("err %v, %d writes, blocks at %d and %d: want 2 writes, the blocks in order after the header", s.err, calls(), ready.pos, pending.pos)
	}
}

// TestSegmentStreamPublish: a streamed segment goes through a real store's
// Stager into the partition log, and an AppendBody retried after its
// commit entry failed reuses the published segment.
func TestSegmentStreamPublish(t *testing.T) {
	t.Parallel()
	a, st := newTestArchive(t)
	if err := a.EnsureTopic(t.Context(), "t", TopicID{1}, 1); err != nil {
		t.Fatal(err)
	}
	p := a.Partition("t", TopicID{1}, 0)
	sg := st.(store.Stager)
	recs := streamRecords(0, 200, 700)
	w, _ := buildStreamed(t, CodecS2, 16<<10, recs, func() (store.Staged, error) { return sg.Stage(t.Context(), p.Prefix()+"segments/") })
	body, info := w.FinishBody()
	if !body.Streamed() {
		t.Fatal("not streamed")
	}
	// A retry after a commit entry whose outcome was unknown (here: it
	// landed, then is removed to let the retry write it again) commits
	// the segment already published, not a second copy.
	c, err := p.AppendBody(t.Context(), nil, body, info, "w", 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(t.Context(), CommitKey(p.Prefix(), c.Start)); err != nil {
		t.Fatal(err)
	}
	c2, err := p.AppendBody(t.Context(), nil, body, info, "w", 2)
	if err != nil || c2.SegmentKey != c.SegmentKey {
		t.Fatalf("retried AppendBody: %v, segment %q, want the published %q", err, c2.SegmentKey, c.SegmentKey)
	}
	var got []Record
	if err := p.Scan(t.Context(), 0, info.End, func(it ScanItem) error {
		if it.Record != nil {
			got = append(got, *it.Record)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(recs) {
		t.Fatalf("scanned %d records, want %d", len(got), len(recs))
	}
	for i := range recs {
		if got[i].Offset != recs[i].Offset || !bytes.Equal(got[i].Value, recs[i].Value) || !bytes.Equal(got[i].Key, recs[i].Key) {
			t.Fatalf("record %d differs", i)
		}
	}
	verifyClean(t, a)
}

// memReserving is a memStaged that lends the writer its buffer
// (store.ReservingStaged), as S3's part buffers: dirty from earlier use.
// Commit copies what it commits into the object. With part, it counts
// parts as s3store cuts them: a write fills parts to exactly part bytes,
// a commit ends the part it takes to part bytes or past them.
type memReserving struct {
	memStaged
	maxReserve int
	room       []byte
	out        int // the reservation out, else -1
	reserves   int
	commits    int // of more than 0 bytes
	part       int
	partFill   int
	parts      []int // the sizes of the parts ended
}

func newMemReserving(maxReserve, failAfter int) *memReserving {
	return &memReserving{memStaged: memStaged{failAfter: failAfter}, maxReserve: maxReserve, out: -1}
}

func (m *memReserving) MaxReserve() int { return m.maxReserve }

func (m *memReserving) PartLeft() int {
	if m.part == 0 {
		return math.MaxInt32
	}
	return m.part - m.partFill
}

func (m *memReserving) Write(p []byte) (int, error) {
	m.mu.Lock()
	out := m.out
	m.mu.Unlock()
	if out >= 0 {
		return 0, errors.New("write during a reservation")
	}
	n, err := m.memStaged.Write(p)
	if m.part > 0 {
		for m.partFill += n; m.partFill >= m.part; m.partFill -= m.part {
			m.parts = append(m.parts, m.part)
		}
	}
	return n, err
}

func (m *memReserving) Reserve(n int) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.out >= 0:
		return nil, errors.New("second reservation")
	case m.aborted:
		return nil, store.ErrAborted
	case n > m.maxReserve:
		return nil, fmt.Errorf("reserve %d > %d", n, m.maxReserve)
	}
	if cap(m.room) < n {
		m.room = make([]byte, n)
	}
	b := m.room[:n]
	for i := range b {
		b[i] = 0xa5
	}
	m.out = n
	m.reserves++
	return b, nil
}

func (m *memReserving) Commit(k int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.out
	m.out = -1
	switch {
	case n < 0:
		return errors.New("commit without a reservation")
	case m.aborted:
		return store.ErrAborted
	case k > n:
		return fmt.Errorf("commit %d of %d", k, n)
	case m.failAfter >= 0 && m.buf.Len()+k > m.failAfter:
		return errors.New("disk full")
	}
	if k > 0 {
		m.commits++
	}
	m.buf.Write(m.room[:k])
	if m.partFill += k; m.part > 0 && m.partFill >= m.part {
		m.parts = append(m.parts, m.partFill)
		m.partFill = 0
	}
	return nil
}

// TestSegmentStreamInPlace: an uncompressed segment streamed to a staged
// object that lends its buffer (store.ReservingStaged) encodes each block
// after staging began in place, one reservation and one commit a block,
// whatever the record sizes (records larger than a block go through the
// heap) and when staging starts; the writer then holds only the open
// block. Without parts it is byte for byte the segment held in memory
// (summary, CRC32C and index too). With parts, the block that can reach
// a part's end ends it: every part but the last is the part size or
// past it by at most a record and a block header, no block is larger
// than its buffer, and the segment holds the same records, gaps and
// summary, its size and CRC32C those of its bytes. Compressed segments,
// and blocks larger than the room, are written as before. A failed
// commit, or an Abort during a reservation, loses the segment.
func TestSegmentStreamInPlace(t *testing.T) {
	t.Parallel()
	const block, part = 8 << 10, 40 << 10
	for _, c := range []struct{ size, part int }{{900, 0}, {20_000, 0}, {17, 0}, {900, part}, {20_000, part}, {17, part}, {3000, part}} {
		size := c.size
		for _, after := range []int{0, 1, 3} {
			recs := streamRecords(100, 2_000_000/(size+40), size)
			held, _ := buildStreamed(t, CodecNone, block, recs, nil)
			want, wantInfo := held.Finish()
			st := newMemReserving(64<<10, -1)
			st.part = c.part
			w, maxHeld := buildStreamedAfter(t, CodecNone, block, after, recs, func() (store.Staged, error) { return st, nil })
			body, info := w.FinishBody()
			if !body.Streamed() {
				t.Fatalf("records of %d B, after %d: not streamed", size, after)
			}
			if c.part == 0 {
				if info != wantInfo || !bytes.Equal(st.buf.Bytes(), want) {
					t.Fatalf("records of %d B, after %d: streamed in place %d bytes, info %+v; want %d bytes, %+v",
						size, after, st.buf.Len(), info, len(want), wantInfo)
				}
			} else {
				samePartsOf(t, fmt.Sprintf("records of %d B, after %d", size, after), st, info, wantInfo, want, w.fullBlockCap(), size+200)
			}
			if size < block {
				if inPlace := info.Blocks - max(after, 1); st.commits != inPlace || st.reserves != inPlace {
					t.Errorf("records of %d B, after %d: %d reservations, %d commits; want %d blocks in place", size, after, st.reserves, st.commits, inPlace)
				}
				if maxHeld > (max(after, 1)+1)*block {
					t.Errorf("records of %d B, after %d: the writer held %d bytes, want %d blocks at most", size, after, maxHeld, max(after, 1)+1)
				}
			} else if st.commits != 0 {
				t.Errorf("records of %d B: %d blocks larger than the block size committed in place", size, st.commits)
			}
			if w.Held() != 0 || st.out >= 0 {
				t.Errorf("records of %d B, after %d: %d bytes held, reservation %d out after FinishBody", size, after, w.Held(), st.out)
			}
			body.Release()
		}
	}

	recs := streamRecords(0, 300, 900)
	held, _ := buildStreamed(t, CodecZstd, block, recs, nil)
	wantZ, _ := held.Finish()
	held, _ = buildStreamed(t, CodecNone, block, recs, nil)
	want, _ := held.Finish()
	for _, c := range []struct {
		codec      Codec
		maxReserve int
		want       []byte
	}{{CodecZstd, 64 << 10, wantZ}, {CodecNone, block, want}} {
		st := newMemReserving(c.maxReserve, -1)
		w, _ := buildStreamed(t, c.codec, block, recs, func() (store.Staged, error) { return st, nil })
		body, _ := w.FinishBody()
		if st.reserves != 0 || !body.Streamed() || !bytes.Equal(st.buf.Bytes(), c.want) {
			t.Errorf("%s, room %d: %d reservations, streamed %v, same bytes %v; want written as before", c.codec, c.maxReserve, st.reserves, body.Streamed(), bytes.Equal(st.buf.Bytes(), c.want))
		}
		body.Release()
	}

	a, _ := newTestArchive(t)
	p := a.Partition("t", TopicID{1}, 0)
	for _, fail := range []int{5, 30_000, 200_000} {
		w, _ := buildStreamed(t, CodecNone, block, recs, func() (store.Staged, error) { return newMemReserving(64<<10, fail), nil })
		body, info := w.FinishBody()
		if _, err := p.AppendBody(t.Context(), nil, body, info, "w", 1); !errors.Is(err, ErrSegmentLost) {
			t.Fatalf("failing after %d bytes: AppendBody %v, want ErrSegmentLost", fail, err)
		}
	}
	st := newMemReserving(64<<10, -1)
	w, _ := buildStreamed(t, CodecNone, block, recs, func() (store.Staged, error) { return st, nil })
	if st.out < 0 {
		t.Fatal("no reservation out for the open block")
	}
	w.Abort() // during the reservation
	body, info := w.FinishBody()
	// Nothing written into the reservation after the Abort: a store gives
	// its buffer up (s3store unmaps it minutes later).
	if !bytes.Equal(st.room[:blockHeaderSize], bytes.Repeat([]byte{0xa5}, blockHeaderSize)) {
		t.Error("FinishBody wrote the block header into the reservation after Abort")
	}
	if _, err := p.AppendBody(t.Context(), nil, body, info, "w", 1); !errors.Is(err, ErrSegmentLost) {
		t.Fatalf("aborted during a reservation: AppendBody %v, want ErrSegmentLost", err)
	}
	if h, err := p.Head(t.Context()); err != nil || h != nil {
		t.Fatalf("after lost segments the head is %+v, %v: want none", h, err)
	}
}

// samePartsOf checks a segment streamed in place into parts (st) against
// the same records' segment held in memory (want, wantInfo): the same
// records, gaps and summary but for the block layout; its size and CRC32C
// those of its bytes; no block of several records above full; every part but the
// last at least the part size and past it by at most a record (of up to
// maxRecord bytes) and a block header.
func samePartsOf(t *testing.T, what string, st *memReserving, info, wantInfo SegmentInfo, want []byte, full, maxRecord int) {
	t.Helper()
	got := st.buf.Bytes()
	ix, recs, err := decodeSegment(got)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	wantIx, wantRecs, _ := decodeSegment(want)
	if !reflect.DeepEqual(recs, wantRecs) || !reflect.DeepEqual(ix.Gaps, wantIx.Gaps) {
		t.Fatalf("%s: %d records, gaps %v; want %d, %v", what, len(recs), ix.Gaps, len(wantRecs), wantIx.Gaps)
	}
	if info.Size != int64(len(got)) || info.CRC32C != crc32c(got) || info.Blocks != len(ix.Blocks) {
		t.Fatalf("%s: info size %d, CRC32C %08x, %d blocks; the bytes: %d, %08x, %d", what, info.Size, info.CRC32C, info.Blocks, len(got), crc32c(got), len(ix.Blocks))
	}
	layout := func(i SegmentInfo) SegmentInfo {
		// (records are encoded relative to their block's first offset:
		// the uncompressed size depends on the layout too)
		i.Size, i.CRC32C, i.IndexPosition, i.IndexLength, i.Blocks, i.UncompressedSize = 0, 0, 0, 0, 0, 0
		return i
	}
	if layout(info) != layout(wantInfo) {
		t.Fatalf("%s: info %+v, want %+v but for the layout", what, info, wantInfo)
	}
	for _, bl := range ix.Blocks {
		if bl.Records > 1 && bl.Length-blockHeaderSize > int64(full) {
			t.Fatalf("%s: a block of %d bytes, above its buffer's %d", what, bl.Length-blockHeaderSize, full)
		}
	}
	if len(st.parts) < 2 {
		t.Fatalf("%s: %d parts: the test needs several", what, len(st.parts))
	}
	for i, n := range st.parts {
		if n < st.part || n > st.part+maxRecord+blockHeaderSize {
			t.Errorf("%s: part %d of %d: %d bytes, want %d to %d", what, i+1, len(st.parts), n, st.part, st.part+maxRecord+blockHeaderSize)
		}
	}
}
