package manifest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/s3store"
	"github.com/kbackup/kbackup/store/s3store/s3fake"
	"github.com/kbackup/kbackup/store/storefault"
)

// simWriter is a packed writer of the format's rules (§12.3), driven by
// tests: it claims partitions, adds one segment per partition and flush,
// and writes a tail index every indexEvery flushes.
type simWriter struct {
	t          *testing.T
	a          *Archive
	id         string
	seq        int64
	indexEvery int64
	parts      map[*PartitionLog]*simPart
}

type simPart struct {
	epoch int64
	head  *Commit
	tail  PartitionTail
}

func newSimWriter(t *testing.T, a *Archive) *simWriter {
	return &simWriter{t: t, a: a, id: NewWriterID(), indexEvery: 10, parts: map[*PartitionLog]*simPart{}}
}

// claim takes p over: the next epoch, the tail as a reader finds it.
func (w *simWriter) claim(p *PartitionLog) error {
	ctx := context.Background()
	epoch := int64(1)
	if c, err := p.NewestClaim(ctx); err != nil {
		return err
	} else if c != nil {
		epoch = c.Epoch + 1
	}
	ch, err := p.CompactedHead(ctx)
	if err != nil {
		return err
	}
	end := int64(-1)
	if ch != nil {
		end = ch.End
	}
	sp := &simPart{epoch: epoch, head: ch}
	refs, newest, err := p.TailAnchors(ctx, end)
	if err != nil {
		return err
	}
	sp.tail.Inherit(refs)
	if newest != nil {
		sp.head = newest
	}
	start := int64(0)
	if sp.head != nil {
		start = sp.head.End + 1
	}
	if err := p.CreateClaim(ctx, &Claim{Epoch: epoch, Writer: w.id, Start: start, CreatedMs: 1, Tail: sp.tail.Refs()}); err != nil {
		return err
	}
	w.parts[p] = sp
	return nil
}

// flush commits recs[p] (records from the partition's end on; holes become
// compaction gaps, up to ends[p]) for each partition in one flush object.
func (w *simWriter) flush(ends map[*PartitionLog]int64, recs map[*PartitionLog][]Record) {
	w.t.Helper()
	ctx := context.Background()
	fb, err := NewFlushBuilder(w.id, w.seq)
	if err != nil {
		w.t.Fatal(err)
	}
	type added struct {
		sp  *simPart
		c   *Commit
		ref EntryRef
	}
	var done []added
	for p, end := range ends {
		sp := w.parts[p]
		start := int64(0)
		if sp.head != nil {
			start = sp.head.End + 1
		}
		seg, info := buildSegment(w.t, start, end, recs[p], GapCompacted, SegmentOptions{Codec: CodecZstd, BlockSize: 200})
		c, ref, err := fb.Add(sp.epoch, sp.head, sp.tail.Newest(), p.Topic, p.TopicID, p.Partition, bytes.NewReader(seg), info, 1)
		if err != nil {
			w.t.Fatal(err)
		}
		done = append(done, added{sp, c, ref})
	}
	if err := w.a.PutFlush(ctx, fb); err != nil {
		w.t.Fatal(err)
	}
	for _, d := range done {
		d.sp.head = d.c
		d.sp.tail.Append(d.ref)
	}
	if w.seq%w.indexEvery == w.indexEvery-1 {
		w.index()
	}
	w.seq++
}

func (w *simWriter) index() {
	w.t.Helper()
	ti := &TailIndex{Writer: w.id, Seq: w.seq}
	for p, sp := range w.parts {
		if r := sp.tail.Refs(); r != nil {
			ti.Partitions = append(ti.Partitions, TailPartition{TopicID: p.TopicID, Partition: p.Partition, Epoch: sp.epoch, Refs: *r})
		}
	}
	if err := w.a.PutTailIndex(context.Background(), ti); err != nil {
		w.t.Fatal(err)
	}
}

// tailOf returns p's compacted head (nil for none) and the commits of its
// tail as a reader finds them.
func tailOf(t *testing.T, p *PartitionLog) (*Commit, []EntryRef, []*Commit) {
	t.Helper()
	ctx := context.Background()
	head, err := p.CompactedHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	end := int64(-1)
	if head != nil {
		end = head.End
	}
	refs, commits, err := p.TailEntries(ctx, end)
	if err != nil {
		t.Fatal(err)
	}
	return head, refs, commits
}

func scanAll(t *testing.T, p *PartitionLog) ([]Record, []Gap) {
	t.Helper()
	var recs []Record
	var gaps []Gap
	err := p.Scan(context.Background(), 0, -1, func(it ScanItem) error {
		if it.Record == nil {
			gaps = append(gaps, it.Gap)
		} else {
			recs = append(recs, *it.Record)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return recs, gaps
}

// TestPackedTail: three partitions written by one packed writer over 45
// flushes (one idle in most of them); every offset, time and the head are
// found through claims, the tail index and the walk back, and a scan reads
// exactly what was written.
func TestPackedTail(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, st := newTestArchive(t)
	id := TopicID{7}
	if err := a.EnsureTopic(ctx, "orders", id, 1); err != nil {
		t.Fatal(err)
	}
	w := newSimWriter(t, a)
	var ps []*PartitionLog
	for i := int32(0); i < 3; i++ {
		p := a.Partition("orders", id, i)
		if err := w.claim(p); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	want := map[*PartitionLog][]Record{}
	next := map[*PartitionLog]int64{}
	for f := 0; f < 45; f++ {
		ends, recs := map[*PartitionLog]int64{}, map[*PartitionLog][]Record{}
		for i, p := range ps {
			if i == 2 && f%7 != 3 {
				continue // mostly idle
			}
			from, to := next[p], next[p]+int64(3+f%5)
			r := mkRecs(from, to, func(o int64) int64 { return 1000 + o*10 })
			if f%4 == 1 {
				r = r[1:] // a compaction gap
			}
			ends[p], recs[p] = to, r
			want[p] = append(want[p], r...)
			next[p] = to + 1
		}
		w.flush(ends, recs)
	}
	for _, p := range ps {
		a2, err := Open(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		r := a2.Partition(p.Topic, p.TopicID, p.Partition)
		h, err := r.Head(ctx)
		if err != nil || h == nil || h.End != next[p]-1 {
			t.Fatalf("%s head: %+v %v, want end %d", p, h, err, next[p]-1)
		}
		got, _ := scanAll(t, r)
		if !reflect.DeepEqual(normalize(got), normalize(want[p])) {
			t.Fatalf("%s: scan read %d records, want %d", p, len(got), len(want[p]))
		}
		for o := int64(0); o < next[p]; o++ {
			c, err := r.Find(ctx, o)
			if err != nil || !c.Covers(o) {
				t.Fatalf("%s find %d: %+v %v", p, o, c, err)
			}
		}
		if _, err := r.Find(ctx, next[p]); !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("%s find past the end: %v", p, err)
		}
		for i := 0; i < len(want[p]); i += max(1, len(want[p])/10) {
			rec := want[p][i]
			c, err := r.FindTime(ctx, rec.Timestamp, false)
			if err != nil || !c.Covers(rec.Offset) {
				t.Fatalf("%s find time %d (offset %d): %+v %v", p, rec.Timestamp, rec.Offset, c, err)
			}
		}
	}
	// A seek from a fresh reader costs a handful of requests.
	fs := storefault.New(st, 1)
	a3, err := Open(ctx, fs)
	if err != nil {
		t.Fatal(err)
	}
	before := fs.Calls()
	r := a3.Partition("orders", id, 0)
	if _, err := r.Find(ctx, next[ps[0]]/2); err != nil {
		t.Fatal(err)
	}
	n := fs.Calls() - before
	t.Logf("seek in the tail: %d requests", n)
	if n > 30 {
		t.Fatalf("a seek in the tail took %d requests", n)
	}
}

// flushRange has w commit offsets from..to of p (all records) in one flush
// object of its own, and returns the records.
// simHandover is a new archive with one partition of topic (incarnation
// id) and two simulated writers, the first of which has claimed it.
func simHandover(t *testing.T, topic string, id TopicID) (*Archive, store.Store, *PartitionLog, *simWriter, *simWriter) {
	t.Helper()
	a, st := newTestArchive(t)
	if err := a.EnsureTopic(context.Background(), topic, id, 1); err != nil {
		t.Fatal(err)
	}
	p := a.Partition(topic, id, 0)
	w1, w2 := newSimWriter(t, a), newSimWriter(t, a)
	if err := w1.claim(p); err != nil {
		t.Fatal(err)
	}
	return a, st, p, w1, w2
}

func (w *simWriter) flushRange(p *PartitionLog, from, to int64) []Record {
	r := mkRecs(from, to, func(o int64) int64 { return 5000 + o })
	w.flush(map[*PartitionLog]int64{p: to}, map[*PartitionLog][]Record{p: r})
	return r
}

// TestPackedHandover: writer 1 commits, writer 2 claims the partition (the
// next epoch, carrying writer 1's tail), writer 1 (paused, unaware) keeps
// committing: its later entries are void; writer 1 then claims it back.
// Readers see each offset once, from the writer that held it.
func TestPackedHandover(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	id := TopicID{3}
	_, st, p, w1, w2 := simHandover(t, "pay", id)
	var want []Record
	next := int64(0)
	for i := 0; i < 23; i++ {
		want = append(want, w1.flushRange(p, next, next+4)...)
		next += 5
	}
	if err := w2.claim(p); err != nil {
		t.Fatal(err)
	}
	// Writer 1's late commits: its own keys, epoch 1, void.
	for i := 0; i < 12; i++ {
		w1.flushRange(p, next+int64(i)*5, next+int64(i)*5+4)
	}
	for i := 0; i < 17; i++ {
		want = append(want, w2.flushRange(p, next, next+2)...)
		next += 3
	}
	check := func(what string) {
		t.Helper()
		a2, err := Open(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		r := a2.Partition("pay", id, 0)
		h, err := r.Head(ctx)
		if err != nil || h == nil || h.End != next-1 {
			t.Fatalf("%s: head %+v %v, want end %d", what, h, err, next-1)
		}
		got, gaps := scanAll(t, r)
		if !reflect.DeepEqual(normalize(got), normalize(want)) || len(gaps) != 0 {
			t.Fatalf("%s: scan read %d records and %d gaps, want %d records", what, len(got), len(gaps), len(want))
		}
	}
	check("after the handover")
	// Writer 1 learns of the claim (ErrFenced on a stale claim) and claims
	// the partition back: the next epoch.
	if err := p.CreateClaim(ctx, &Claim{Epoch: 2, Writer: w1.id, Start: next}); !errors.Is(err, ErrFenced) {
		t.Fatalf("a claim of a taken epoch: %v", err)
	}
	if err := w1.claim(p); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		want = append(want, w1.flushRange(p, next, next+6)...)
		next += 7
	}
	check("after the claim back")
}

// TestPackedCompaction: the tail is compacted in pieces into the version-1
// chain while the writer goes on; readers read the same records at every
// step, the tail shrinks, and a second compactor of the same start is
// fenced.
func TestPackedCompaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, st := newTestArchive(t)
	id := TopicID{4}
	if err := a.EnsureTopic(ctx, "c", id, 1); err != nil {
		t.Fatal(err)
	}
	p := a.Partition("c", id, 0)
	w := newSimWriter(t, a)
	if err := w.claim(p); err != nil {
		t.Fatal(err)
	}
	var want []Record
	next := int64(0)
	write := func(n int) {
		for i := 0; i < n; i++ {
			r := mkRecs(next, next+3, func(o int64) int64 { return 100 + o })
			if i%3 == 0 {
				r = r[:2] // a gap at the end, merged with the next entry's? no: next starts with a record
			}
			w.flush(map[*PartitionLog]int64{p: next + 3}, map[*PartitionLog][]Record{p: r})
			want = append(want, r...)
			next += 4
		}
	}
	write(30)
	for round := 0; round < 3; round++ {
		head, _, commits := tailOf(t, p)
		n := len(commits) * 2 / 3
		c, err := p.Compact(ctx, head, commits[:n], "compactor", 1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Compact(ctx, head, commits[:n/2], "other", 1); !errors.Is(err, ErrFenced) {
			t.Fatalf("second compactor of the same start: %v", err)
		}
		if c.End != commits[n-1].End || c.Records == 0 {
			t.Fatalf("compacted %+v", c)
		}
		w.parts[p].tail.TrimTo(c.End)
		write(7)
		a2, err := Open(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		r := a2.Partition("c", id, 0)
		got, _ := scanAll(t, r)
		if !reflect.DeepEqual(normalize(got), normalize(want)) {
			t.Fatalf("round %d: scan read %d records, want %d", round, len(got), len(want))
		}
		for o := int64(0); o < next; o++ {
			if c, err := r.Find(ctx, o); err != nil || !c.Covers(o) {
				t.Fatalf("round %d find %d: %v", round, o, err)
			}
		}
		if h, err := r.Head(ctx); err != nil || h.End != next-1 {
			t.Fatalf("round %d head: %v", round, err)
		}
	}
}

// TestPackedStraddle: a compactor that lost its claim while compacting (it
// passed its claim check just before the next owner claimed) commits
// entries the next owner's claim voided, ending inside one of the new
// owner's entries. Readers read every offset once (the compacted chain up
// to its end, the rest of the straddling entry after it), verify warns, and
// the owner's next compaction rewrites the rest of that entry.
func TestPackedStraddle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, st := newTestArchive(t)
	id := TopicID{8}
	if err := a.EnsureTopic(ctx, "s", id, 1); err != nil {
		t.Fatal(err)
	}
	p := a.Partition("s", id, 0)
	w1, w2 := newSimWriter(t, a), newSimWriter(t, a)
	if err := w1.claim(p); err != nil {
		t.Fatal(err)
	}
	rec := func(from, to int64) []Record { return mkRecs(from, to, func(o int64) int64 { return 700 + o }) }
	for o := int64(0); o < 40; o += 5 {
		w1.flush(map[*PartitionLog]int64{p: o + 4}, map[*PartitionLog][]Record{p: rec(o, o+4)})
	}
	if err := w2.claim(p); err != nil { // start 40
		t.Fatal(err)
	}
	for o := int64(40); o < 50; o += 5 { // w1's void entries
		w1.flush(map[*PartitionLog]int64{p: o + 4}, map[*PartitionLog][]Record{p: rec(o, o+4)})
	}
	for _, r := range [][2]int64{{40, 42}, {43, 47}, {48, 55}} {
		w2.flush(map[*PartitionLog]int64{p: r[1]}, map[*PartitionLog][]Record{p: rec(r[0], r[1])})
	}
	// w1 compacts what it wrote, void entries included: 0..49.
	_, commits, err := p.EntriesAfter(ctx, *w1.parts[p].tail.Newest(), -1)
	if err != nil || len(commits) != 10 {
		t.Fatalf("w1's entries: %d, %v", len(commits), err)
	}
	if c, err := p.Compact(ctx, nil, commits, "w1", 1); err != nil || c.End != 49 {
		t.Fatalf("zombie compaction: %+v %v", c, err)
	}
	want := rec(0, 55)
	check := func(what string, warnings int) {
		t.Helper()
		a2, err := Open(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		r := a2.Partition("s", id, 0)
		got, gaps := scanAll(t, r)
		if !reflect.DeepEqual(normalize(got), normalize(want)) || len(gaps) != 0 {
			t.Fatalf("%s: %d records, %d gaps, want %d records", what, len(got), len(gaps), len(want))
		}
		for o := int64(0); o <= 55; o++ {
			if c, err := r.Find(ctx, o); err != nil || !c.Covers(o) {
				t.Fatalf("%s: find %d: %v", what, o, err)
			}
		}
		var ws []string
		if _, err := a2.Verify(ctx, VerifyOptions{}, func(f Finding) {
			if f.Severity == SeverityProblem {
				t.Errorf("%s: verify: %v", what, f)
			}
			if f.Severity == SeverityWarning {
				ws = append(ws, f.String())
			}
		}); err != nil {
			t.Fatal(err)
		}
		if len(ws) != warnings {
			t.Fatalf("%s: warnings %q, want %d", what, ws, warnings)
		}
	}
	check("straddling", 1)
	// w2 compacts its tail: the straddling entry's rest is rewritten.
	head, _, commits := tailOf(t, p)
	if head.End != 49 || len(commits) != 1 || commits[0].Start != 48 {
		t.Fatalf("w2's tail after the zombie's compaction: head %d, %d entries", head.End, len(commits))
	}
	if c, err := p.Compact(ctx, head, commits, "w2", 1); err != nil || c.Start != 50 || c.End != 55 {
		t.Fatalf("compacting the straddling entry: %+v %v", c, err)
	}
	check("compacted", 0)
}

// flushStreamed commits recs (from p's end to end) in a flush object of its
// own built in the segment's staged object (AddBody), the segment staged
// after stageAfter blocks of 4 KiB; abort aborts the segment before it is
// finished, as a reclaim does. It returns PutFlush's error.
func (w *simWriter) flushStreamed(p *PartitionLog, end int64, recs []Record, stageAfter int, abort bool) error {
	w.t.Helper()
	sp := w.parts[p]
	start := int64(0)
	if sp.head != nil {
		start = sp.head.End + 1
	}
	sg := w.a.st.(store.Stager)
	stage := func() (store.Staged, error) { return sg.Stage(context.Background(), "wal/"+w.id+"/") }
	sw := NewSegmentWriter(start, SegmentOptions{Codec: CodecZstd, BlockSize: 4 << 10, Stage: stage, StageAfter: stageAfter})
	for i := range recs {
		if recs[i].Offset > sw.Next() {
			if err := sw.AddGap(recs[i].Offset-1, GapCompacted); err != nil {
				w.t.Fatal(err)
			}
		}
		if err := sw.Append(&recs[i]); err != nil {
			w.t.Fatal(err)
		}
	}
	if !sw.Streaming() {
		w.t.Fatalf("%d records in 4 KiB blocks not streamed", len(recs))
	}
	if abort {
		sw.Abort()
	}
	body, info := sw.FinishBody()
	if info.End != end {
		w.t.Fatalf("segment ends at %d, want %d", info.End, end)
	}
	fb, err := NewFlushBuilder(w.id, w.seq)
	if err != nil {
		w.t.Fatal(err)
	}
	w.seq++
	c, ref, err := fb.AddBody(sp.epoch, sp.head, sp.tail.Newest(), p.Topic, p.TopicID, p.Partition, body, info, 1)
	if err != nil {
		w.t.Fatal(err)
	}
	if !fb.Streamed() {
		w.t.Fatal("a flush object of a streamed segment is not built in its staged object")
	}
	if _, _, err := fb.Add(sp.epoch, c, &ref, p.Topic, p.TopicID, p.Partition+1, bytes.NewReader(nil), info, 1); err == nil {
		w.t.Fatal("a second entry was added to a flush object built in a staged segment")
	}
	if err := w.a.PutFlush(context.Background(), fb); err != nil {
		return err
	}
	sp.head = c
	sp.tail.Append(ref)
	return nil
}

// TestPackedStreamedFlush: a partition's segment streamed to a staged
// object (staged after its third block) becomes a flush object of its own
// between ordinary ones: readers find every record through it, compaction
// reads it, verify accepts it. A streamed segment cannot join an object
// that has entries; a lost staged segment commits nothing, and one whose
// key exists is fenced.
func TestPackedStreamedFlush(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, st := newTestArchive(t)
	id := TopicID{9}
	if err := a.EnsureTopic(ctx, "big", id, 2); err != nil {
		t.Fatal(err)
	}
	w := newSimWriter(t, a)
	p0, p1 := a.Partition("big", id, 0), a.Partition("big", id, 1)
	for _, p := range []*PartitionLog{p0, p1} {
		if err := w.claim(p); err != nil {
			t.Fatal(err)
		}
	}
	ts := func(o int64) int64 { return 1000 + o }
	var want []Record
	r := mkRecs(0, 9, ts)
	want = append(want, r...)
	w.flush(map[*PartitionLog]int64{p0: 9, p1: 4}, map[*PartitionLog][]Record{p0: r, p1: mkRecs(0, 4, ts)})
	big := streamRecords(10, 400, 300)
	want = append(want, big...)
	if err := w.flushStreamed(p0, 414, big, 3, false); err != nil {
		t.Fatal(err)
	}
	r = mkRecs(415, 424, ts)
	want = append(want, r...)
	w.flush(map[*PartitionLog]int64{p0: 424}, map[*PartitionLog][]Record{p0: r})

	// A streamed body cannot follow another entry.
	sw := NewSegmentWriter(0, SegmentOptions{Codec: CodecNone, BlockSize: 1 << 10, Stage: func() (store.Staged, error) { return st.(store.Stager).Stage(ctx, "") }})
	for _, rec := range mkRecs(0, 19, ts) {
		rec.Value = bytes.Repeat([]byte{1}, 300)
		if err := sw.Append(&rec); err != nil {
			t.Fatal(err)
		}
	}
	body, info := sw.FinishBody()
	fb, err := NewFlushBuilder(w.id, 1000)
	if err != nil {
		t.Fatal(err)
	}
	seg, sinfo := buildSegment(t, 0, 6, mkRecs(0, 6, ts), GapCompacted, DefaultSegmentOptions())
	if _, _, err := fb.Add(1, nil, nil, "big", id, 1, bytes.NewReader(seg), sinfo, 1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := fb.AddBody(1, nil, nil, "big", id, 0, body, info, 1); err == nil {
		t.Fatal("a streamed segment was added after another entry")
	}
	body.Release()
	// An entry whose previous entry is in a flush object of the same
	// writer with a seq not below this one's (a seq reserved before the
	// previous entry was retried under a newer one) is refused: readers
	// would refuse it.
	for _, prevSeq := range []int64{1000, 1001} {
		fb, _ := NewFlushBuilder(w.id, 1000)
		prev := &EntryRef{Writer: w.id, Seq: prevSeq, Pos: 0, Len: 100, Start: 0, End: 6}
		if _, _, err := fb.Add(1, nil, prev, "big", id, 1, bytes.NewReader(seg), sinfo, 1); err == nil {
			t.Fatalf("an entry in flush object 1000 after one in %d was added", prevSeq)
		}
	}

	// A lost staged segment (aborted, as a reclaim does) commits nothing.
	lostKey := FlushKey(w.id, w.seq)
	if err := w.flushStreamed(p0, 629, streamRecords(425, 200, 300), 1, true); !errors.Is(err, ErrSegmentLost) {
		t.Fatalf("a flush of an aborted streamed segment returned %v, want ErrSegmentLost", err)
	}
	if _, err := st.Stat(ctx, lostKey); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the lost flush object exists (%v)", err)
	}
	// An existing key: fenced.
	if err := st.Put(ctx, FlushKey(w.id, w.seq), bytes.NewReader([]byte("x")), 1, store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := w.flushStreamed(p0, 629, streamRecords(425, 200, 300), 1, false); !errors.Is(err, ErrFenced) {
		t.Fatalf("a flush onto an existing key returned %v, want ErrFenced", err)
	}
	if err := st.Delete(ctx, FlushKey(w.id, w.seq-1)); err != nil {
		t.Fatal(err)
	}

	check := func(what string, entries int) {
		t.Helper()
		a, err := Open(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		p0 := a.Partition(p0.Topic, p0.TopicID, p0.Partition)
		got, _ := scanAll(t, p0)
		if len(got) != len(want) {
			t.Fatalf("%s: read %d records, want %d", what, len(got), len(want))
		}
		for i := range got {
			if got[i].Offset != want[i].Offset || !bytes.Equal(got[i].Value, want[i].Value) || got[i].Timestamp != want[i].Timestamp {
				t.Fatalf("%s: record %d: %+v, want %+v", what, i, got[i], want[i])
			}
		}
		if _, refs, _ := tailOf(t, p0); len(refs) != entries {
			t.Fatalf("%s: tail of %d entries, want %d", what, len(refs), entries)
		}
		if _, err := a.Verify(ctx, VerifyOptions{}, func(f Finding) {
			if f.Severity != SeverityInfo {
				t.Errorf("%s: verify: %v", what, f)
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	check("fresh", 3)
	head, _, commits := tailOf(t, p0)
	if _, err := p0.Compact(ctx, head, commits, w.id, 1); err != nil {
		t.Fatal(err)
	}
	check("compacted", 0)
}

// TestCompactStreamedFailures: compaction copies the entries' blocks as it
// reads them; a corrupt block ends it with ErrCorrupt before anything is
// committed or left behind, and so does a failing check (a newer claim),
// which now runs after the segment is written and before its commit entry.
// With S3 the new segment streams into a multipart upload as it is read:
// a failed compaction leaves no upload either.
func TestCompactStreamedFailures(t *testing.T) {
	t.Parallel()
	t.Run("dir", func(t *testing.T) {
		t.Parallel()
		a, st := newTestArchive(t)
		testCompactStreamedFailures(t, a, st)
	})
	t.Run("s3", func(t *testing.T) {
		t.Parallel()
		srv, opts := s3fake.Start(t, "compact")
		opts.PartSize = 256                   // several parts per segment (s3fake has no 5 MiB minimum)
		var creates, parts, ends atomic.Int64 // ends: completed or aborted
		srv.SetHook(func(_ http.ResponseWriter, r *http.Request) bool {
			switch q := r.URL.Query(); {
			case r.Method == http.MethodPost && q.Has("uploads"):
				creates.Add(1)
			case r.Method == http.MethodPut && q.Has("partNumber"):
				parts.Add(1)
			case r.Method == http.MethodPost && q.Has("uploadId"), r.Method == http.MethodDelete && q.Has("uploadId"):
				ends.Add(1)
			}
			return false
		})
		st, err := s3store.New(t.Context(), opts)
		if err != nil {
			t.Fatal(err)
		}
		a, err := Init(t.Context(), st, "test", 1)
		if err != nil {
			t.Fatal(err)
		}
		testCompactStreamedFailures(t, a, st)
		// Every upload created ends (a failed one's abort runs in the
		// background), and none is left.
		for deadline := time.Now().Add(10 * time.Second); creates.Load() != ends.Load(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d multipart uploads created, %d completed or aborted", creates.Load(), ends.Load())
			}
		}
		if n, err := st.SweepUploads(t.Context(), "", time.Now().Add(time.Hour)); err != nil || n != 0 {
			t.Fatalf("%d incomplete multipart uploads left (%v)", n, err)
		}
		if parts.Load() < 4 {
			t.Fatalf("%d parts uploaded: want the segments streamed in parts", parts.Load())
		}
	})
}

func testCompactStreamedFailures(t *testing.T, a *Archive, st store.Store) {
	ctx := context.Background()
	id := TopicID{5}
	if err := a.EnsureTopic(ctx, "cf", id, 1); err != nil {
		t.Fatal(err)
	}
	p := a.Partition("cf", id, 0)
	w := newSimWriter(t, a)
	if err := w.claim(p); err != nil {
		t.Fatal(err)
	}
	next := int64(0)
	for range 6 {
		r := mkRecs(next, next+9, func(o int64) int64 { return 100 + o })
		w.flush(map[*PartitionLog]int64{p: next + 9}, map[*PartitionLog][]Record{p: r})
		next += 10
	}
	keys := func() int {
		n := 0
		if err := st.List(ctx, store.ListOptions{Prefix: p.Prefix()}, func(e store.ListEntry) error {
			if !strings.Contains(e.Key, "/claims/") {
				n++
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := keys()
	head, _, commits := tailOf(t, p)
	c := commits[2]
	orig, err := store.Get(ctx, st, c.SegmentKey)
	if err != nil {
		t.Fatal(err)
	}
	put := func(b []byte) {
		t.Helper()
		if err := st.Delete(ctx, c.SegmentKey); err != nil {
			t.Fatal(err)
		}
		if err := st.Put(ctx, c.SegmentKey, bytes.NewReader(b), int64(len(b)), store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	bad := slices.Clone(orig)
	bad[c.SegmentOffset+c.IndexPosition-1] ^= 1 // the last block's last byte
	put(bad)
	if _, err := p.Compact(ctx, head, commits, "compactor", 1); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("compacting a corrupt entry: %v, want ErrCorrupt", err)
	}
	if n := keys(); n != before {
		t.Fatalf("%d keys after a failed compaction, %d before", n, before)
	}
	put(orig)
	lost := errors.New("a newer claim exists")
	if _, err := p.CompactChecked(ctx, head, commits, "compactor", 1, func(context.Context) error { return lost }); !errors.Is(err, lost) {
		t.Fatalf("compacting with a failing check: %v", err)
	}
	if n := keys(); n != before {
		t.Fatalf("%d keys after a compaction stopped by its check, %d before", n, before)
	}
	cm, err := p.Compact(ctx, head, commits, "compactor", 1)
	if err != nil || cm.End != next-1 {
		t.Fatalf("compaction: %+v %v", cm, err)
	}
	if got, _ := scanAll(t, p); len(got) != int(next) {
		t.Fatalf("read %d records after compaction, want %d", len(got), next)
	}
}

// TestFlushBuilderHeldPieces: a flush object of held segment bodies reads
// (at any offset: s3store sends it in sections without copying) as the
// same bytes as the segments and entries it was built of; a segment whose
// bytes differ in length from its summary is refused.
func TestFlushBuilderHeldPieces(t *testing.T) {
	t.Parallel()
	id := TopicID{7}
	fb, err := NewFlushBuilder(NewWriterID(), 3)
	if err != nil {
		t.Fatal(err)
	}
	var segs [][]byte
	for p := int32(0); p < 3; p++ {
		w := NewSegmentWriter(0, SegmentOptions{Codec: CodecNone, BlockSize: 256})
		for _, rec := range mkRecs(0, 40, func(o int64) int64 { return 1000 + o }) {
			if err := w.Append(&rec); err != nil {
				t.Fatal(err)
			}
		}
		body, info := w.FinishBody()
		segs = append(segs, body.Bytes())
		if _, _, err := fb.AddBody(1, nil, nil, "t", id, p, body, info, 1); err != nil {
			t.Fatal(err)
		}
	}
	seg, info := buildSegment(t, 0, 6, mkRecs(0, 6, func(o int64) int64 { return 1000 + o }), GapCompacted, DefaultSegmentOptions())
	for _, n := range []int{len(seg) - 1, len(seg) + 1} {
		b := append(append([]byte(nil), seg...), 0)[:n]
		if _, _, err := fb.Add(1, nil, nil, "t", id, 9, bytes.NewReader(b), info, 1); err == nil {
			t.Fatalf("a segment of %d bytes added with a summary of %d", n, len(seg))
		}
	}
	r, size, err := fb.Finish()
	if err != nil {
		t.Fatal(err)
	}
	ra, ok := r.(io.ReaderAt)
	if !ok {
		t.Fatalf("flush object reader %T does not read at an offset", r)
	}
	whole, err := io.ReadAll(r)
	if err != nil || int64(len(whole)) != size {
		t.Fatalf("read %d of %d bytes: %v", len(whole), size, err)
	}
	for i, s := range segs {
		row := fb.rows[i]
		_, c, err := DecodeEntry(whole[row.Ref.Pos : row.Ref.Pos+row.Ref.Len])
		if err != nil {
			t.Fatal(err)
		}
		if got := whole[c.SegmentOffset : c.SegmentOffset+c.SegmentSize]; !bytes.Equal(got, s) {
			t.Fatalf("partition %d: the segment in the object differs", i)
		}
	}
	for _, off := range []int64{0, 1, size / 3, size - 5} {
		p := make([]byte, 5)
		if n, err := ra.ReadAt(p, off); n != 5 || err != nil || !bytes.Equal(p, whole[off:off+5]) {
			t.Fatalf("ReadAt %d: %d, %v", off, n, err)
		}
	}
}
