package manifest

import (
	"bytes"
	"context"
	"errors"
	"math"
	"reflect"
	"slices"
	"sync"
	"testing"
	"unsafe"

	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/filestore"
)

func newTestArchive(t *testing.T) (*Archive, store.Store) {
	t.Helper()
	st, err := filestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, err := Init(context.Background(), st, "test", 1)
	if err != nil {
		t.Fatal(err)
	}
	return a, st
}

// appendRecords commits recs (offsets ascending, holes become compaction
// gaps) as one segment ending at end.
func appendRecords(t *testing.T, p *PartitionLog, head *Commit, end int64, recs []Record) *Commit {
	t.Helper()
	start := int64(0)
	if head != nil {
		start = head.End + 1
	}
	seg, info := buildSegment(t, start, end, recs, GapCompacted, SegmentOptions{Codec: CodecZstd, BlockSize: 200})
	c, err := p.Append(context.Background(), head, seg, info, "test", 1)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mkRecs(from, to int64, ts func(o int64) int64) []Record {
	var out []Record
	for o := from; o <= to; o++ {
		r := Record{Offset: o, Timestamp: ts(o), Key: []byte{byte(o)}, Value: []byte("value"), ProducerID: -1, ProducerEpoch: -1, LeaderEpoch: -1}
		if o%3 == 0 { // headers on some records: readers that reuse header lists show it
			r.Headers = []Header{{Key: "o", Value: []byte{byte(o)}}, {Key: "null", Value: nil}}
		}
		out = append(out, r)
	}
	return out
}

func TestOpenRefusesMissingArchive(t *testing.T) {
	t.Parallel()
	st, err := filestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), st); !errors.Is(err, ErrNoArchive) {
		t.Fatalf("open empty store: %v", err)
	}
}

func TestPartitionChain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, _ := newTestArchive(t)
	id := TopicID{9}
	if err := a.EnsureTopic(ctx, "orders", id, 5); err != nil {
		t.Fatal(err)
	}
	p := a.Partition("orders", id, 2)
	if h, err := p.Head(ctx); err != nil || h != nil {
		t.Fatalf("empty head: %v %v", h, err)
	}
	// Timestamps: offset*10, except a late record at 25 with ts 5.
	ts := func(o int64) int64 {
		if o == 25 {
			return 5
		}
		return o * 10
	}
	// Log starts at 3 (retention before archiving): a before-start gap.
	w := NewSegmentWriter(0, SegmentOptions{Codec: CodecZstd, BlockSize: 100})
	if err := w.AddGap(2, GapBeforeStart); err != nil {
		t.Fatal(err)
	}
	for _, r := range mkRecs(3, 19, ts) {
		if err := w.Append(&r); err != nil {
			t.Fatal(err)
		}
	}
	seg, info := w.Finish()
	c1, err := p.Append(ctx, nil, seg, info, "test", 1)
	if err != nil {
		t.Fatal(err)
	}
	recs2 := mkRecs(20, 39, ts)
	recs2 = append(recs2[:5], recs2[8:]...) // 25..27 compacted away
	c2 := appendRecords(t, p, c1, 41, recs2)
	c3 := appendRecords(t, p, c2, 60, mkRecs(42, 60, ts))

	head, err := p.Head(ctx)
	if err != nil || !reflect.DeepEqual(head, c3) {
		t.Fatalf("head %+v, %v", head, err)
	}
	if head.Seq != 2 || head.TotalRecords != 17+17+19 || head.TotalGapOffsets[GapBeforeStart] != 3 ||
		head.TotalGapOffsets[GapCompacted] != 3+2 || head.FirstTimestamp != 30 || head.RunningMaxTimestamp != 600 {
		t.Fatalf("cumulative fields: %+v", head)
	}
	for _, tc := range []struct {
		off  int64
		want *Commit
	}{{0, c1}, {19, c1}, {20, c2}, {41, c2}, {42, c3}, {60, c3}} {
		got, err := p.Find(ctx, tc.off)
		if err != nil || got.Start != tc.want.Start {
			t.Fatalf("Find(%d) = %v, %v; want start %d", tc.off, got, err, tc.want.Start)
		}
	}
	if _, err := p.Find(ctx, 61); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("Find past end: %v", err)
	}
	for _, tc := range []struct {
		ts    int64
		after bool
		want  int64 // commit start, -1 out of range
	}{{math.MinInt64, false, 0}, {190, false, 0}, {190, true, 20}, {200, false, 20}, {410, false, 42}, {600, false, 42}, {600, true, -1}} {
		got, err := p.FindTime(ctx, tc.ts, tc.after)
		if tc.want < 0 {
			if !errors.Is(err, ErrOutOfRange) {
				t.Fatalf("FindTime(%d,%v) = %v, %v; want out of range", tc.ts, tc.after, got, err)
			}
			continue
		}
		if err != nil || got.Start != tc.want {
			t.Fatalf("FindTime(%d,%v) = %+v, %v; want start %d", tc.ts, tc.after, got, err, tc.want)
		}
	}

	// Scan 18..44: every offset exactly once, as a record or inside a gap.
	seen := map[int64]string{}
	err = p.Scan(ctx, 18, 44, func(it ScanItem) error {
		if it.Record != nil {
			if _, dup := seen[it.Record.Offset]; dup {
				t.Fatalf("offset %d twice", it.Record.Offset)
			}
			seen[it.Record.Offset] = "record"
			return nil
		}
		for o := it.Gap.From; o <= it.Gap.To; o++ {
			if _, dup := seen[o]; dup {
				t.Fatalf("offset %d twice", o)
			}
			seen[o] = it.Gap.Reason.String()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for o := int64(18); o <= 44; o++ {
		want := "record"
		if o >= 25 && o <= 27 || o == 40 || o == 41 {
			want = "compacted"
		}
		if seen[o] != want {
			t.Fatalf("offset %d: %q, want %q", o, seen[o], want)
		}
	}
	if len(seen) != 27 {
		t.Fatalf("scan saw %d offsets", len(seen))
	}

	// ScanReusing yields what Scan does (its Record structs and header
	// lists are reused from block to block: copied here before the
	// callback returns).
	var kept []any // header lists as yielded, read again below
	collect := func(scan func(context.Context, int64, int64, func(ScanItem) error) error) (recs []Record, gaps []Gap) {
		kept = kept[:0]
		err := scan(ctx, 0, -1, func(it ScanItem) error {
			if it.Record != nil {
				r := *it.Record
				kept = append(kept, r.Headers)
				r.Headers = slices.Clone(r.Headers)
				recs = append(recs, r)
			} else {
				gaps = append(gaps, it.Gap)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return recs, gaps
	}
	wantRecs, wantGaps := collect(p.Scan)
	gotRecs, gotGaps := collect(p.ScanReusing)
	if len(wantRecs) < 50 || !reflect.DeepEqual(gotRecs, wantRecs) || !reflect.DeepEqual(gotGaps, wantGaps) {
		t.Fatalf("ScanReusing differs from Scan:\n%+v %+v\n%+v %+v", gotRecs, gotGaps, wantRecs, wantGaps)
	}
	// changed counts the yielded values (read again now) that differ from
	// the records': memory a later block reused.
	changed := func(yielded []any, want func(i int) any) int {
		n := 0
		for i, v := range yielded {
			if !reflect.DeepEqual(v, want(i)) {
				n++
			}
		}
		return n
	}
	if changed(kept, func(i int) any { return wantRecs[i].Headers }) == 0 {
		t.Fatal("no header list yielded by ScanReusing was overwritten by a later block's: the header slab is not reused")
	}
	// ScanBuffered too; every buffer it gets is put back or handed out
	// with the records that alias it.
	bufs := &countingBuffers{out: map[*byte]bool{}}
	var handed [][]byte
	gotRecs, gotGaps = collect(func(ctx context.Context, from, to int64, fn func(ScanItem) error) error {
		return p.ScanBuffered(ctx, from, to, bufs, func(it ScanItem) error {
			if it.Record != nil {
				if len(it.Buffer) == 0 || !bufs.out[&it.Buffer[0]] {
					t.Fatalf("record %d: buffer not from the BlockBuffers", it.Record.Offset)
				}
				if v := it.Record.Value; len(v) > 0 && !aliases(it.Buffer, v) {
					t.Fatalf("record %d: value does not alias its buffer", it.Record.Offset)
				}
				if len(handed) == 0 || &handed[len(handed)-1][0] != &it.Buffer[0] {
					handed = append(handed, it.Buffer)
				}
			}
			return fn(it)
		})
	})
	if !reflect.DeepEqual(gotRecs, wantRecs) || !reflect.DeepEqual(gotGaps, wantGaps) {
		t.Fatalf("ScanBuffered differs from Scan:\n%+v %+v\n%+v %+v", gotRecs, gotGaps, wantRecs, wantGaps)
	}
	for _, b := range handed {
		delete(bufs.out, &b[0])
	}
	if len(bufs.out) != 0 {
		t.Fatalf("%d buffers neither put back nor handed out with records", len(bufs.out))
	}
	// ScanTransient too, its records copied with their bytes before the
	// callback returns: the blocks' buffers are reused, so a record's
	// bytes are overwritten by a later block's (which the copies would
	// show if a buffer were reused too early). Its blocks share a few
	// buffers.
	blocks := map[*byte]bool{}
	var values []any // the values as yielded, read again at the end
	var copied []Record
	err = p.ScanTransient(ctx, 0, -1, func(it ScanItem) error {
		if it.Record != nil {
			blocks[&it.Buffer[0]] = true
			r := *it.Record
			values = append(values, r.Value)
			r.Key, r.Value = bytes.Clone(r.Key), bytes.Clone(r.Value)
			if r.Headers != nil {
				r.Headers = slices.Clone(r.Headers)
				for i := range r.Headers {
					r.Headers[i].Value = bytes.Clone(r.Headers[i].Value)
				}
			}
			copied = append(copied, r)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(copied, wantRecs) {
		t.Fatalf("ScanTransient differs from Scan:\n%+v\n%+v", copied, wantRecs)
	}
	if len(blocks) > 3 || len(handed) < 6 {
		t.Fatalf("ScanTransient used %d buffers for %d blocks", len(blocks), len(handed))
	}
	if changed(values, func(i int) any { return wantRecs[i].Value }) == 0 {
		t.Fatal("no yielded value was overwritten by a later block: the buffers were not reused")
	}
}

func TestFencing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, st := newTestArchive(t)
	p := a.Partition("t", TopicID{1}, 0)
	c1 := appendRecords(t, p, nil, 9, mkRecs(0, 9, func(o int64) int64 { return o }))
	// Eight writers race to commit the next range from the same head, with
	// different contents: exactly one wins, the others are fenced.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, fenced := 0, 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			seg, info := buildSegment(t, 10, 10+int64(i), mkRecs(10, 10+int64(i), func(o int64) int64 { return o }), GapCompacted, DefaultSegmentOptions())
			_, err := p.Append(ctx, c1, seg, info, "w", 1)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, ErrFenced):
				fenced++
			default:
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	if wins != 1 || fenced != 7 {
		t.Fatalf("wins %d fenced %d", wins, fenced)
	}
	// The losers' segments are gone: one segment per commit.
	var segs int
	_ = st.List(ctx, store.ListOptions{Prefix: p.Prefix() + "segments/"}, func(store.ListEntry) error { segs++; return nil })
	if segs != 2 {
		t.Fatalf("%d segments left, want 2", segs)
	}
	// A stale writer still holding c1 as head cannot commit either.
	seg, info := buildSegment(t, 10, 30, nil, GapNotReturned, DefaultSegmentOptions())
	if _, err := p.Append(ctx, c1, seg, info, "stale", 1); !errors.Is(err, ErrFenced) {
		t.Fatalf("stale writer: %v", err)
	}
}

func TestRepairHead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, st := newTestArchive(t)
	p := a.Partition("t", TopicID{1}, 0)
	c1 := appendRecords(t, p, nil, 9, mkRecs(0, 9, func(o int64) int64 { return 100 + o }))
	c2 := appendRecords(t, p, c1, 19, mkRecs(10, 19, func(o int64) int64 { return 100 + o }))
	// Simulate a writer that died between the commit and the time key.
	if err := st.Delete(ctx, TimeKey(p.Prefix(), c2.RunningMaxTimestamp, c2.Start)); err != nil {
		t.Fatal(err)
	}
	if got, err := p.FindTime(ctx, 115, false); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("before repair: %v %v", got, err)
	}
	if err := p.RepairHead(ctx, c2); err != nil {
		t.Fatal(err)
	}
	if got, err := p.FindTime(ctx, 115, false); err != nil || got.Start != 10 {
		t.Fatalf("after repair: %+v %v", got, err)
	}
}

func TestCatalogAtOrBefore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, _ := newTestArchive(t)
	for _, ms := range []int64{1000, 2000, 3000} {
		if err := a.PutCatalog(ctx, &GroupsCapture{CapturedMs: ms, Groups: []GroupCatalog{{Group: "g"}}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ at, want int64 }{{999, -1}, {1000, 1000}, {2500, 2000}, {math.MaxInt64, 3000}} {
		got, err := a.GroupsAt(ctx, tc.at)
		if tc.want < 0 {
			if !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("GroupsAt(%d): %v", tc.at, err)
			}
			continue
		}
		if err != nil || got.CapturedMs != tc.want {
			t.Fatalf("GroupsAt(%d) = %+v, %v", tc.at, got, err)
		}
	}
}

// countingBuffers is a BlockBuffers that hands out fresh buffers and
// tracks those not put back.
type countingBuffers struct{ out map[*byte]bool }

func (c *countingBuffers) Get(n int) []byte {
	b := make([]byte, n)
	c.out[&b[0]] = true
	return b
}

func (c *countingBuffers) Put(b []byte) {
	if !c.out[&b[0]] {
		panic("Put of a buffer not from Get")
	}
	delete(c.out, &b[0])
}

// aliases reports whether v lies within b.
func aliases(b, v []byte) bool {
	start, end := uintptr(unsafe.Pointer(&b[0])), uintptr(unsafe.Pointer(&b[0]))+uintptr(len(b))
	p := uintptr(unsafe.Pointer(&v[0]))
	return p >= start && p < end
}

func TestBlockBufferCap(t *testing.T) {
	for _, c := range []struct{ n, want int }{
		{1, 4 << 10}, {4 << 10, 4 << 10}, {4<<10 + 1, 8 << 10}, {40 << 10, 64 << 10}, {64 << 10, 64 << 10},
		{64<<10 + 1, 128 << 10}, {1<<20 - 20, 1 << 20}, {1 << 20, 1 << 20}, {1<<20 + 20, 1<<20 + 64<<10},
	} {
		if got := BlockBufferCap(c.n); got != c.want {
			t.Errorf("BlockBufferCap(%d) = %d, want %d", c.n, got, c.want)
		}
	}
}
