package manifest

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/filestore"
)

// vfixture is a small archive: topic "orders" (id 7) partition 0 with three
// commits, 0..19 (before-start gap 0..2), 20..41 (compacted 25..27 and
// 40..41), 42..60; partition 1 with one commit 0..9.
type vfixture struct {
	a          *Archive
	st         store.Store
	p0, p1     *PartitionLog
	c1, c2, c3 *Commit
}

var vID = TopicID{7}

func vRecs(from, to int64) []Record {
	var out []Record
	for o := from; o <= to; o++ {
		out = append(out, Record{Offset: o, Timestamp: 1000 + o*10, Key: []byte{byte(o)}, Value: []byte("v"),
			ProducerID: -1, ProducerEpoch: -1, LeaderEpoch: -1})
	}
	return out
}

// vAppend commits a segment [start, end] holding recs; offsets without a
// record before the first record get firstGap, the others reason.
func vAppend(t *testing.T, p *PartitionLog, head *Commit, end int64, recs []Record, firstGap, reason GapReason) *Commit {
	t.Helper()
	start := int64(0)
	if head != nil {
		start = head.End + 1
	}
	w := NewSegmentWriter(start, SegmentOptions{Codec: CodecZstd, BlockSize: 100})
	for i := range recs {
		if recs[i].Offset > w.Next() {
			r := reason
			if i == 0 {
				r = firstGap
			}
			if err := w.AddGap(recs[i].Offset-1, r); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Append(&recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if end >= w.Next() {
		if err := w.AddGap(end, reason); err != nil {
			t.Fatal(err)
		}
	}
	seg, info := w.Finish()
	c, err := p.Append(context.Background(), head, seg, info, "test", 1)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newVFixture(t *testing.T) *vfixture {
	t.Helper()
	ctx := context.Background()
	st, err := filestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, err := Init(ctx, st, "test", 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.EnsureTopic(ctx, "orders", vID, 1); err != nil {
		t.Fatal(err)
	}
	f := &vfixture{a: a, st: st, p0: a.Partition("orders", vID, 0), p1: a.Partition("orders", vID, 1)}
	f.c1 = vAppend(t, f.p0, nil, 19, vRecs(3, 19), GapBeforeStart, GapCompacted)
	r2 := vRecs(20, 39)
	r2 = append(r2[:5], r2[8:]...)
	f.c2 = vAppend(t, f.p0, f.c1, 41, r2, GapCompacted, GapCompacted)
	f.c3 = vAppend(t, f.p0, f.c2, 60, vRecs(42, 60), GapCompacted, GapCompacted)
	vAppend(t, f.p1, nil, 9, vRecs(0, 9), GapCompacted, GapCompacted)
	return f
}

func (f *vfixture) verify(t *testing.T) (VerifyResult, []Finding) {
	t.Helper()
	var mu sync.Mutex
	var got []Finding
	res, err := f.a.Verify(context.Background(), VerifyOptions{Concurrency: 3}, func(fd Finding) {
		mu.Lock()
		got = append(got, fd)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	return res, got
}

func TestVerifyClean(t *testing.T) {
	t.Parallel()
	f := newVFixture(t)
	res, got := f.verify(t)
	if !res.OK() || res.Warnings != 0 {
		t.Fatalf("clean archive: %+v\n%v", res, got)
	}
	if res.Topics != 1 || res.Incarnations != 1 || res.Partitions != 2 || res.Commits != 4 || res.Segments != 4 ||
		res.Records != 17+17+19+10 || res.GapOffsets[GapBeforeStart] != 3 || res.GapOffsets[GapCompacted] != 5 ||
		res.Gaps[GapCompacted] != 2 {
		t.Fatalf("counters: %+v", res)
	}
	var gaps []string
	for _, fd := range got {
		if fd.Severity != SeverityInfo {
			t.Fatalf("unexpected finding %s", fd)
		}
		gaps = append(gaps, fd.String())
	}
	want := []string{
		"gap orders/0 offsets 0..2 " + f.c1.SegmentKey + ": before-start gap (explained)",
		"gap orders/0 offsets 25..27 " + f.c2.SegmentKey + ": compacted gap (explained)",
		"gap orders/0 offsets 40..41 " + f.c2.SegmentKey + ": compacted gap (explained)",
	}
	if strings.Join(gaps, "\n") != strings.Join(want, "\n") {
		t.Fatalf("gap findings:\n%s\nwant:\n%s", strings.Join(gaps, "\n"), strings.Join(want, "\n"))
	}
}

// rewrite replaces an object with fn(old bytes).
func rewrite(t *testing.T, st store.Store, key string, fn func([]byte) []byte) {
	t.Helper()
	ctx := context.Background()
	b, err := store.Get(ctx, st, key)
	if err != nil {
		t.Fatal(err)
	}
	b = fn(b)
	if err := st.Put(ctx, key, bytes.NewReader(b), int64(len(b)), store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

func put(t *testing.T, st store.Store, key string, b []byte) {
	t.Helper()
	if err := st.Put(context.Background(), key, bytes.NewReader(b), int64(len(b)), store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

func del(t *testing.T, st store.Store, key string) {
	t.Helper()
	if err := st.Delete(context.Background(), key); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyDamage(t *testing.T) {
	t.Parallel()
	type want struct {
		sev      Severity
		contains []string // all in one finding's String()
	}
	for _, tc := range []struct {
		name     string
		damage   func(t *testing.T, f *vfixture) []want
		problems bool
	}{
		{"flipped byte in a block", func(t *testing.T, f *vfixture) []want {
			rewrite(t, f.st, f.c2.SegmentKey, func(b []byte) []byte { b[30] ^= 0x40; return b })
			return []want{
				{SeverityProblem, []string{f.c2.SegmentKey, "offsets 20..41", "CRC32C"}},
				{SeverityProblem, []string{f.c2.SegmentKey, "offsets 20..41", "block at byte"}},
			}
		}, true},
		{"flipped byte in the index", func(t *testing.T, f *vfixture) []want {
			rewrite(t, f.st, f.c3.SegmentKey, func(b []byte) []byte { b[f.c3.IndexPosition+20] ^= 1; return b })
			return []want{{SeverityProblem, []string{f.c3.SegmentKey, "offsets 42..60", "index unreadable"}}}
		}, true},
		{"deleted segment", func(t *testing.T, f *vfixture) []want {
			del(t, f.st, f.c2.SegmentKey)
			return []want{{SeverityProblem, []string{f.c2.SegmentKey, "offsets 20..41", "segment missing"}}}
		}, true},
		{"truncated segment", func(t *testing.T, f *vfixture) []want {
			rewrite(t, f.st, f.c1.SegmentKey, func(b []byte) []byte { return b[:len(b)-5] })
			return []want{{SeverityProblem, []string{f.c1.SegmentKey, "offsets 0..19", "truncated"}}}
		}, true},
		{"missing commit in the middle", func(t *testing.T, f *vfixture) []want {
			del(t, f.st, CommitKey(f.p0.Prefix(), 20))
			return []want{
				{SeverityProblem, []string{CommitKey(f.p0.Prefix(), 20), "offsets 20..41", "commit missing"}},
				{SeverityWarning, []string{f.c2.SegmentKey, "offsets 20..41", "segment of a missing or unreadable commit"}},
			}
		}, true},
		{"corrupt commit", func(t *testing.T, f *vfixture) []want {
			rewrite(t, f.st, CommitKey(f.p0.Prefix(), 20), func(b []byte) []byte { b[40] ^= 1; return b })
			return []want{
				{SeverityProblem, []string{CommitKey(f.p0.Prefix(), 20), "offsets 20..41", "commit unreadable"}},
				{SeverityWarning, []string{f.c2.SegmentKey, "segment of a missing or unreadable commit"}},
			}
		}, true},
		{"missing head commit", func(t *testing.T, f *vfixture) []want {
			del(t, f.st, CommitKey(f.p0.Prefix(), 42))
			// Indistinguishable from a writer that stopped before its
			// commit: the segment is an orphan, the time key a stray.
			return []want{
				{SeverityWarning, []string{f.c3.SegmentKey, "orphan segment"}},
				{SeverityProblem, []string{TimeKey(f.p0.Prefix(), f.c3.RunningMaxTimestamp, 42), "without a matching commit"}},
			}
		}, true},
		{"orphan segment", func(t *testing.T, f *vfixture) []want {
			key := SegmentKey(f.p0.Prefix(), 61, 70, "00000000000000aa")
			put(t, f.st, key, []byte("junk"))
			return []want{{SeverityWarning, []string{key, "offsets 61..70", "orphan segment"}}}
		}, false},
		{"missing time key", func(t *testing.T, f *vfixture) []want {
			key := TimeKey(f.p0.Prefix(), f.c2.RunningMaxTimestamp, 20)
			del(t, f.st, key)
			return []want{{SeverityProblem, []string{key, "offsets 20..41", "time index key missing"}}}
		}, true},
		{"missing head time key", func(t *testing.T, f *vfixture) []want {
			key := TimeKey(f.p0.Prefix(), f.c3.RunningMaxTimestamp, 42)
			del(t, f.st, key)
			return []want{{SeverityWarning, []string{key, "offsets 42..60", "repairs it"}}}
		}, false},
		{"stray time key", func(t *testing.T, f *vfixture) []want {
			key := TimeKey(f.p0.Prefix(), 1234, 30)
			put(t, f.st, key, nil)
			return []want{{SeverityProblem, []string{key, "without a matching commit"}}}
		}, true},
		{"off-chain commit", func(t *testing.T, f *vfixture) []want {
			// A commit starting inside c2's range (30..41).
			fake := *f.c1
			fake.End, fake.Seq = 29, 1
			w := NewSegmentWriter(30, DefaultSegmentOptions())
			if err := w.AddGap(41, GapCompacted); err != nil {
				t.Fatal(err)
			}
			seg, info := w.Finish()
			segKey := SegmentKey(f.p0.Prefix(), 30, 41, "00000000000000bb")
			put(t, f.st, segKey, seg)
			c, err := Next(&fake, "orders", vID, 0, segKey, info, "rogue", 1)
			if err != nil {
				t.Fatal(err)
			}
			key := CommitKey(f.p0.Prefix(), 30)
			put(t, f.st, key, AppendCommit(nil, c))
			return []want{
				{SeverityProblem, []string{key, "commit off the chain", "20..41"}},
				{SeverityWarning, []string{segKey, "orphan segment"}},
			}
		}, true},
		{"data loss gap", func(t *testing.T, f *vfixture) []want {
			w := NewSegmentWriter(61, DefaultSegmentOptions())
			if err := w.AddGap(80, GapDataLoss); err != nil {
				t.Fatal(err)
			}
			r := vRecs(81, 81)[0]
			if err := w.Append(&r); err != nil {
				t.Fatal(err)
			}
			seg, info := w.Finish()
			c, err := f.p0.Append(context.Background(), f.c3, seg, info, "test", 1)
			if err != nil {
				t.Fatal(err)
			}
			return []want{{SeverityProblem, []string{c.SegmentKey, "offsets 61..80", "DATA-LOSS"}}}
		}, true},
		{"unexpected object", func(t *testing.T, f *vfixture) []want {
			key := f.p1.Prefix() + "segments/README"
			put(t, f.st, key, []byte("x"))
			return []want{{SeverityWarning, []string{key, "unexpected object"}}}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newVFixture(t)
			wants := tc.damage(t, f)
			res, got := f.verify(t)
			if res.OK() == tc.problems {
				t.Errorf("OK() = %v, want %v", res.OK(), !tc.problems)
			}
			var lines []string
			for _, fd := range got {
				if fd.Severity != SeverityInfo {
					lines = append(lines, fd.String())
				}
			}
			if len(lines) != len(wants) {
				t.Errorf("%d findings, want %d:\n%s", len(lines), len(wants), strings.Join(lines, "\n"))
			}
			for _, w := range wants {
				found := false
				for _, fd := range got {
					ok := fd.Severity == w.sev
					for _, s := range w.contains {
						ok = ok && strings.Contains(fd.String(), s)
					}
					found = found || ok
				}
				if !found {
					t.Errorf("no %s finding with %q in:\n%s", w.sev, w.contains, strings.Join(lines, "\n"))
				}
			}
			if int(res.Problems)+int(res.Warnings) != len(lines) {
				t.Errorf("counters %d+%d, %d findings", res.Problems, res.Warnings, len(lines))
			}
		})
	}
}

func TestVerifyCompletenessHook(t *testing.T) {
	t.Parallel()
	f := newVFixture(t)
	var heads []PartitionHead
	res, err := f.a.Verify(context.Background(), VerifyOptions{
		Completeness: func(ctx context.Context, h []PartitionHead, report func(Finding)) error {
			heads = h
			report(Finding{Severity: SeverityProblem, Topic: "orders", Partition: 2, From: 0, To: 5, Message: "not archived"})
			return nil
		},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Problems != 1 || len(heads) != 2 || heads[0].Head == nil || heads[0].Head.End != 60 || heads[1].Head.End != 9 || !heads[0].Current {
		t.Fatalf("res %+v heads %+v", res, heads)
	}
}

func TestVerifyFilterAndCancel(t *testing.T) {
	t.Parallel()
	f := newVFixture(t)
	res, err := f.a.Verify(context.Background(), VerifyOptions{Filter: func(string) bool { return false }}, nil)
	if err != nil || res.Partitions != 0 || res.Topics != 0 {
		t.Fatalf("filtered: %+v %v", res, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.a.Verify(ctx, VerifyOptions{}, nil); err == nil {
		t.Fatal("canceled verify succeeded")
	}
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newVFixture(t)
	// An older incarnation of "orders" and a topic without commits.
	old := TopicID{1}
	if err := f.a.EnsureTopic(ctx, "orders", old, 0); err != nil {
		t.Fatal(err)
	}
	vAppend(t, f.a.Partition("orders", old, 0), nil, 4, nil, GapDataLoss, GapDataLoss)
	if err := f.a.EnsureTopic(ctx, "empty", TopicID{2}, 5); err != nil {
		t.Fatal(err)
	}
	sum, err := f.a.Summarize(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Topics) != 2 || sum.Topics[0].Topic != "empty" || sum.Topics[1].Topic != "orders" {
		t.Fatalf("topics %+v", sum.Topics)
	}
	if inc := sum.Topics[0].Incarnations; len(inc) != 1 || len(inc[0].Partitions) != 0 || !inc[0].Current {
		t.Fatalf("empty topic %+v", inc)
	}
	incs := sum.Topics[1].Incarnations
	if len(incs) != 2 || incs[0].TopicID != old || incs[0].Current || !incs[1].Current {
		t.Fatalf("incarnations %+v", incs)
	}
	oldP := incs[0].Partitions[0]
	if oldP.End != 4 || oldP.FirstRecordOffset != -1 || oldP.HasTimestamps || !oldP.DataLoss() || oldP.Commits != 1 {
		t.Fatalf("old partition %+v", oldP)
	}
	p0, p1 := incs[1].Partitions[0], incs[1].Partitions[1]
	want0 := PartitionSummary{Partition: 0, FirstRecordOffset: 3, End: 60, FirstTimestamp: 1030, MaxTimestamp: 1600,
		HasTimestamps: true, Records: 53, Bytes: f.c3.TotalBytes, Commits: 3, LastCommitMs: 1}
	want0.GapOffsets[GapBeforeStart], want0.GapOffsets[GapCompacted] = 3, 5
	if p0 != want0 {
		t.Fatalf("p0 %+v\nwant %+v", p0, want0)
	}
	tot := incs[1].Totals
	if tot.Records != 63 || tot.Commits != 4 || tot.FirstTimestamp != 1000 || tot.MaxTimestamp != 1600 || tot.Bytes != p0.Bytes+p1.Bytes {
		t.Fatalf("totals %+v", tot)
	}
	sum, err = f.a.Summarize(ctx, func(t string) bool { return t == "empty" })
	if err != nil || len(sum.Topics) != 1 {
		t.Fatalf("filter: %+v %v", sum, err)
	}
	// A corrupt head is an error naming the object.
	rewrite(t, f.st, CommitKey(f.p0.Prefix(), 42), func(b []byte) []byte { return b[:10] })
	if _, err := f.a.Summarize(ctx, nil); err == nil || !strings.Contains(err.Error(), CommitKey(f.p0.Prefix(), 42)) {
		t.Fatalf("corrupt head: %v", err)
	}
}

// TestVerifyDetectsEveryCorruption flips bytes all over a segment and a
// commit entry, and truncates the segment at many lengths: each time
// verify reports a problem naming the object, and never panics.
func TestVerifyDetectsEveryCorruption(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newVFixture(t)
	check := func(what, key string) {
		t.Helper()
		res, got := f.verify(t)
		named := false
		for _, fd := range got {
			named = named || (fd.Severity == SeverityProblem && strings.Contains(fd.String(), key))
		}
		if res.OK() || !named {
			t.Fatalf("%s: not detected (%+v)", what, res)
		}
	}
	for _, key := range []string{f.c2.SegmentKey, CommitKey(f.p0.Prefix(), 20)} {
		orig, err := store.Get(ctx, f.st, key)
		if err != nil {
			t.Fatal(err)
		}
		for i := range orig {
			// Every byte of the first and last 40 (headers, footer,
			// strings, checksums), every 5th in between: each verify
			// costs a full pass.
			if i >= 40 && i < len(orig)-40 && i%5 != 0 {
				continue
			}
			b := append([]byte(nil), orig...)
			b[i] ^= 0x01
			put(t, f.st, key, b)
			check(fmt.Sprintf("%s byte %d flipped", key, i), key)
		}
		if key == f.c2.SegmentKey {
			for n := 0; n < len(orig); n += 11 {
				put(t, f.st, key, orig[:n])
				check(fmt.Sprintf("%s truncated to %d bytes", key, n), key)
			}
		}
		put(t, f.st, key, orig)
	}
	if res, _ := f.verify(t); !res.OK() {
		t.Fatalf("restored archive: %+v", res)
	}
}

func TestVerifyEmptyArchive(t *testing.T) {
	t.Parallel()
	st, err := filestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, err := Init(context.Background(), st, "test", 1)
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.Verify(context.Background(), VerifyOptions{}, func(f Finding) { t.Errorf("finding %s", f) })
	if err != nil || !res.OK() || res.Topics != 0 {
		t.Fatalf("%+v %v", res, err)
	}
	// A partition directory holding only a leftover segment: a warning.
	key := SegmentKey(PartitionPrefix("t", TopicID{3}, 0), 0, 9, "00000000000000cc")
	put(t, st, key, []byte("x"))
	if err := a.EnsureTopic(context.Background(), "t", TopicID{3}, 1); err != nil {
		t.Fatal(err)
	}
	var got []string
	res, err = a.Verify(context.Background(), VerifyOptions{}, func(f Finding) { got = append(got, f.String()) })
	if err != nil || !res.OK() || res.Warnings != 1 || len(got) != 1 || !strings.Contains(got[0], "orphan segment") {
		t.Fatalf("%+v %v %v", res, err, got)
	}
}

// TestVerifyReusesBuffers: verify decodes every block into the same
// record structs, header lists and decompression buffer, so what it
// allocates is a small fraction of the bytes it checks (it was 2.3 times
// them when each block got new ones).
func TestVerifyReusesBuffers(t *testing.T) {
	for _, codec := range []Codec{CodecZstd, CodecNone} {
		t.Run(codec.String(), func(t *testing.T) {
			a, bytes, n := verifyArchive(t, codec, 3)
			verifyAll(t, a, n) // warms what is reused across verifies (decoders)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			verifyAll(t, a, n)
			runtime.ReadMemStats(&after)
			alloc := int64(after.TotalAlloc - before.TotalAlloc)
			t.Logf("verify of %d payload bytes in %d records allocated %d bytes", bytes, n, alloc)
			if alloc > bytes/5 {
				t.Fatalf("verify allocated %d bytes for %d bytes of records, want at most a fifth", alloc, bytes)
			}
		})
	}
}
