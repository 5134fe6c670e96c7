package manifest

import (
	"context"
	"testing"
)

// TestRecordsBefore compares RecordsBefore with counting by hand over a
// log of three segments with gaps inside and between blocks.
func TestRecordsBefore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, _ := newTestArchive(t)
	id := TopicID{7}
	if err := a.EnsureTopic(ctx, "t", id, 1); err != nil {
		t.Fatal(err)
	}
	p := a.Partition("t", id, 0)
	if n, err := p.RecordsBefore(ctx, 10); err == nil || n != 0 {
		t.Fatalf("empty log: %d %v, want an out-of-range error", n, err)
	}
	var all []Record
	keep := func(from, to int64, skip func(int64) bool) []Record {
		var out []Record
		for _, r := range mkRecs(from, to, func(o int64) int64 { return o }) {
			if !skip(r.Offset) {
				out = append(out, r)
			}
		}
		all = append(all, out...)
		return out
	}
	h := appendRecords(t, p, nil, 99, keep(0, 99, func(o int64) bool { return o%7 == 3 }))
	h = appendRecords(t, p, h, 149, keep(100, 149, func(o int64) bool { return o >= 120 && o < 130 }))
	appendRecords(t, p, h, 260, keep(150, 260, func(o int64) bool { return o > 255 }))
	for _, off := range []int64{0, 1, 3, 4, 50, 99, 100, 101, 120, 125, 130, 149, 150, 200, 255, 256, 260, 261, 1000} {
		want := int64(0)
		for _, r := range all {
			if r.Offset < off {
				want++
			}
		}
		got, err := p.RecordsBefore(ctx, off)
		if err != nil || got != want {
			t.Fatalf("RecordsBefore(%d) = %d, %v; want %d", off, got, err, want)
		}
	}
}

// TestCaptureAfter finds the oldest capture after a time by bisection.
func TestCaptureAfter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, _ := newTestArchive(t)
	if _, ok, err := a.CaptureAfter(ctx, CatalogGroups, 0); ok || err != nil {
		t.Fatalf("no captures: %v %v", ok, err)
	}
	for _, ms := range []int64{1_000, 5_000, 5_001, 90_000} {
		if err := a.PutCatalog(ctx, &GroupsCapture{CapturedMs: ms}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		after, want int64
		ok          bool
	}{{0, 1_000, true}, {999, 1_000, true}, {1_000, 5_000, true}, {5_000, 5_001, true}, {5_001, 90_000, true}, {90_000, 0, false}} {
		got, ok, err := a.CaptureAfter(ctx, CatalogGroups, tc.after)
		if err != nil || ok != tc.ok || got != tc.want {
			t.Fatalf("CaptureAfter(%d) = %d %v %v, want %d %v", tc.after, got, ok, err, tc.want, tc.ok)
		}
	}
}
