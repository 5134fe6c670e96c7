package restore

import (
	"context"
	"testing"

	"github.com/kbackup/kbackup/manifest"
)

// TestProgressTotalIsExact: the progress total starts as the plan's
// commit-granular estimate and becomes the exact number of records the
// pending lanes still have to write (their ranges' archived records, less
// what their checkpoints hold; done lanes count for nothing).
func TestProgressTotalIsExact(t *testing.T) {
	t.Parallel()
	f := buildFixture(t, "orders", 2, 120)
	f.archive(t)
	ctx := context.Background()
	a, err := manifest.Open(ctx, f.st)
	if err != nil {
		t.Fatal(err)
	}
	incs, err := a.Incarnations(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	id := incs[len(incs)-1].TopicID
	count := func(p int32, from, to int64) (n int64) {
		recs, _ := archived(t, f.st, "orders", p)
		for _, r := range recs {
			if r.Offset >= from && r.Offset <= to {
				n++
			}
		}
		return n
	}
	// Ranges that cut commits and gaps: the estimate is off.
	src0 := &source{log: a.Partition("orders", id, 0), from: 17, to: 83, approxRecords: 1000}
	src1 := &source{log: a.Partition("orders", id, 1), from: 5, to: 119, approxRecords: 1000}
	done := &source{log: a.Partition("orders", id, 1), from: 0, to: 4, approxRecords: 1000}
	lanes := []*lane{
		{name: "0", sources: []*source{src0}},
		{name: "1", sources: []*source{src1}, ckpt: &checkpoint{Records: 7}},
		{name: "done", sources: []*source{done}, ckpt: &checkpoint{Done: true, Records: 5}},
	}
	w := pendingRecords(lanes)
	if w.approx-w.done != 1000+1000-7 || len(w.ranges) != 2 {
		t.Fatalf("estimate %d over %d ranges", w.approx-w.done, len(w.ranges))
	}
	p := &progress{}
	p.refine(ctx, w)
	want := count(0, 17, 83) + count(1, 5, 119) - 7
	if !p.exact.Load() || p.total.Load() != want {
		t.Fatalf("total %d (exact %v), want %d", p.total.Load(), p.exact.Load(), want)
	}
	if want == 67+115-7 {
		t.Fatal("the fixture has no gaps in the ranges: the test proves nothing")
	}
}
