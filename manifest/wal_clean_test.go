package manifest

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/kbackup/kbackup/store"
)

// TestCleanWAL: the flush objects of a writer that stopped are deleted
// once every entry in them is compacted or void, and only then; readers
// read the same records before and after, and the writer's tail indexes
// go with its last flush object.
func TestCleanWAL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, st := newTestArchive(t)
	id := TopicID{5}
	if err := a.EnsureTopic(ctx, "w", id, 1); err != nil {
		t.Fatal(err)
	}
	p, q := a.Partition("w", id, 0), a.Partition("w", id, 1)
	w1, w2 := newSimWriter(t, a), newSimWriter(t, a)
	for _, x := range []*PartitionLog{p, q} {
		if err := w1.claim(x); err != nil {
			t.Fatal(err)
		}
	}
	want := map[*PartitionLog][]Record{}
	next := map[*PartitionLog]int64{}
	both := func(w *simWriter, n int) {
		for i := 0; i < n; i++ {
			ends, recs := map[*PartitionLog]int64{}, map[*PartitionLog][]Record{}
			for _, x := range []*PartitionLog{p, q} {
				r := mkRecs(next[x], next[x]+2, func(o int64) int64 { return 10 + o })
				ends[x], recs[x] = next[x]+2, r
				want[x] = append(want[x], r...)
				next[x] += 3
			}
			w.flush(ends, recs)
		}
	}
	both(w1, 25) // 2 tail indexes
	for _, x := range []*PartitionLog{p, q} {
		if err := w2.claim(x); err != nil {
			t.Fatal(err)
		}
	}
	// w1, paused, writes 3 more flushes: void.
	for i := 0; i < 3; i++ {
		ends, recs := map[*PartitionLog]int64{}, map[*PartitionLog][]Record{}
		for _, x := range []*PartitionLog{p, q} {
			ends[x], recs[x] = next[x]+2+int64(i*3), mkRecs(next[x]+int64(i*3), next[x]+2+int64(i*3), func(o int64) int64 { return 10 + o })
		}
		w1.flush(ends, recs)
	}
	both(w2, 5)
	clean := func(dry bool) CleanResult {
		t.Helper()
		a2, err := Open(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		res, err := a2.CleanWAL(ctx, CleanOptions{Self: w2.id, DryRun: dry})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	checkReads := func(what string) {
		t.Helper()
		a2, err := Open(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range []*PartitionLog{p, q} {
			got, _ := scanAll(t, a2.Partition(x.Topic, x.TopicID, x.Partition))
			if !reflect.DeepEqual(normalize(got), normalize(want[x])) {
				t.Fatalf("%s: %s: %d records, want %d", what, x, len(got), len(want[x]))
			}
		}
	}
	// Nothing compacted: only the void flushes (all their rows void) go.
	if res := clean(true); res.FlushObjects != 3 || res.KeptObjects != 25 ||
		!reflect.DeepEqual(res.Kept, []KeptPartition{{"w", id, 0}, {"w", id, 1}}) {
		t.Fatalf("dry run before compaction: %+v", res)
	}
	if res := clean(false); res.FlushObjects != 3 || res.TailIndexes != 0 {
		t.Fatalf("before compaction: %+v", res)
	}
	checkReads("after deleting the void flushes")
	// Compact all of p and the first 10 entries of q: w1's flushes with a
	// q entry above q's compacted end stay.
	compact := func(x *PartitionLog, n int) {
		t.Helper()
		head, _, commits := tailOf(t, x)
		if n > len(commits) || n < 0 {
			n = len(commits)
		}
		if _, err := x.Compact(ctx, head, commits[:n], "c", 1); err != nil {
			t.Fatal(err)
		}
	}
	compact(p, -1)
	compact(q, 10)
	if res := clean(false); res.FlushObjects != 10 || res.KeptObjects != 15 || res.TailIndexes != 0 ||
		!reflect.DeepEqual(res.Kept, []KeptPartition{{"w", id, 1}}) {
		t.Fatalf("after compacting p and part of q: %+v", res)
	}
	checkReads("after the first clean")
	compact(q, -1)
	if res := clean(false); res.FlushObjects != 15 || res.EmptyWriters != 1 || res.TailIndexes != 2 {
		t.Fatalf("after compacting q: %+v", res)
	}
	checkReads("after the second clean")
	if n, _ := countKeys(t, st, FlushPrefix(w1.id)); n != 0 {
		t.Fatalf("%d objects of the stopped writer left", n)
	}
	// A writer active within Idle is not examined.
	a2, _ := Open(ctx, st)
	if res, err := a2.CleanWAL(ctx, CleanOptions{Idle: time.Hour}); err != nil || res.Writers != 0 {
		t.Fatalf("recent writers examined: %+v %v", res, err)
	}
}

// countKeys counts the keys under prefix.
func countKeys(t *testing.T, st store.Store, prefix string) (int, error) {
	t.Helper()
	n := 0
	err := st.List(context.Background(), store.ListOptions{Prefix: prefix}, func(store.ListEntry) error { n++; return nil })
	if err != nil {
		t.Fatal(err)
	}
	return n, nil
}

// TestV1ArchivePacked: an archive written by the version-1 code
// (testdata/v1-archive) is extended by a packed writer (claims, flush
// objects: the root becomes version 3), read across the compacted chain
// and the tail, compacted, expired and cleaned, and verifies clean at
// every step.
func TestV1ArchivePacked(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, a := v1Fixture(t)
	const base = int64(1700000000000)
	ts := func(o int64) int64 { return base + (o/10)*dayMs + o }
	id := TopicID{0x0e, 0x01}
	p := a.Partition("orders", id, 0)
	w := newSimWriter(t, a)
	if err := w.claim(p); err != nil {
		t.Fatal(err)
	}
	if sp := w.parts[p]; sp.head == nil || sp.head.End != 39 || !sp.tail.Empty() {
		t.Fatalf("claim after the v1 chain: %+v", sp)
	}
	for o := int64(40); o < 100; o += 5 {
		w.flush(map[*PartitionLog]int64{p: o + 4}, map[*PartitionLog][]Record{p: mkRecs(o, o+4, ts)})
	}
	scanOK := func(what string, from int64) {
		t.Helper()
		a2, err := Open(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		if a2.FormatVersion() != PackedFormatVersion {
			t.Fatalf("%s: root version %d", what, a2.FormatVersion())
		}
		n := from
		if err := a2.Partition("orders", id, 0).Scan(ctx, from, -1, func(it ScanItem) error {
			if it.Record == nil || it.Record.Offset != n || it.Record.Timestamp != ts(n) {
				t.Fatalf("%s: record %d: %+v", what, n, it)
			}
			n++
			return nil
		}); err != nil || n != 100 {
			t.Fatalf("%s: scan ended at %d, %v", what, n, err)
		}
		verifyClean(t, a2)
	}
	scanOK("extended", 0)
	head, _, commits := tailOf(t, p)
	if len(commits) != 12 {
		t.Fatalf("tail: %d entries", len(commits))
	}
	if _, err := p.Compact(ctx, head, commits[:8], "compactor", 1); err != nil {
		t.Fatal(err)
	}
	scanOK("compacted", 0)
	e, err := p.Expire(ctx, ExpireOptions{Retention: Retention{Age: 2 * 24 * time.Hour}, Now: time.UnixMilli(base + 3*dayMs + 20)})
	if err != nil || e.Start != 20 {
		t.Fatalf("expire %+v %v", e, err)
	}
	if _, err := p.DeleteExpired(ctx, DeleteOptions{Grace: -1}); err != nil {
		t.Fatal(err)
	}
	scanOK("expired", 20)
	if res, err := a.CleanWAL(ctx, CleanOptions{}); err != nil || res.FlushObjects != 8 || res.KeptObjects != 4 {
		t.Fatalf("clean: %+v %v", res, err)
	}
	scanOK("cleaned", 20)
}
