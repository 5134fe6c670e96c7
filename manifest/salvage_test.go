package manifest

import (
	"context"
	"reflect"
	"testing"
)

// TestSalvage: writer 1's entries after writer 2's claim are void; Salvage
// rebuilds, from writer 1's newest entry, exactly the records and gaps
// writer 1 committed above where writer 2's chain ends (cut inside an
// entry and a block), and nothing when the chain already covers them.
func TestSalvage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, _, p, w1, w2 := simHandover(t, "s", TopicID{9})
	// Records with holes: every flush commits up to end, holes are
	// compaction gaps.
	var void []Record
	flush := func(w *simWriter, from, to int64) []Record {
		var recs []Record
		for _, r := range mkRecs(from, to, func(o int64) int64 { return 7000 + o }) {
			if r.Offset%7 != 3 { // a hole every 7 offsets
				recs = append(recs, r)
			}
		}
		w.flush(map[*PartitionLog]int64{p: to}, map[*PartitionLog][]Record{p: recs})
		return recs
	}
	next := int64(0)
	for i := 0; i < 6; i++ {
		flush(w1, next, next+9)
		next += 10
	}
	if err := w2.claim(p); err != nil { // at offset 60
		t.Fatal(err)
	}
	for i := 0; i < 8; i++ { // writer 1 goes on, void: 60..139
		void = append(void, flush(w1, next+int64(i)*10, next+int64(i)*10+9)...)
	}
	flush(w2, 60, 84) // writer 2's chain ends at 84, inside writer 1's entry 80..89
	newest := *w1.parts[p].tail.Newest()

	w, err := p.Salvage(ctx, newest, 84, SegmentOptions{Codec: CodecS2, BlockSize: 64}, 0)
	if err != nil || w == nil {
		t.Fatalf("Salvage: %v, %v", w, err)
	}
	seg, info := w.Finish()
	if info.Start != 85 || info.End != 139 {
		t.Fatalf("salvaged %d..%d, want 85..139", info.Start, info.End)
	}
	ix, got, err := decodeSegment(seg)
	if err != nil {
		t.Fatal(err)
	}
	var want []Record
	for _, r := range void {
		if r.Offset > 84 {
			want = append(want, r)
		}
	}
	if !reflect.DeepEqual(normalize(got), normalize(want)) {
		t.Fatalf("salvaged %d records, want %d equal to writer 1's", len(got), len(want))
	}
	var holes []int64
	for _, g := range ix.Gaps {
		if g.Reason != GapCompacted {
			t.Fatalf("gap %+v: reason changed", g)
		}
		for o := g.From; o <= g.To; o++ {
			holes = append(holes, o)
		}
	}
	for i, o := range holes {
		if o%7 != 3 || o <= 84 || (i > 0 && o <= holes[i-1]) {
			t.Fatalf("gap offsets %v: want the holes of writer 1's entries above 84", holes)
		}
	}
	if int64(len(got)+len(holes)) != info.End-info.Start+1 {
		t.Fatalf("%d records and %d gap offsets cover %d..%d", len(got), len(holes), info.Start, info.End)
	}

	// Covered already: nothing to salvage. Below the entries' reach: an error.
	if w, err := p.Salvage(ctx, newest, 139, SegmentOptions{}, 0); w != nil || err != nil {
		t.Fatalf("Salvage above the newest entry: %v, %v", w, err)
	}
	if _, err := p.Salvage(ctx, *w2.parts[p].tail.Newest(), -5, SegmentOptions{}, 0); err == nil {
		t.Fatal("Salvage below the chain's first offset succeeded")
	}

	// In pieces of at most 300 bytes of records, each after the last.
	var pieces []Record
	for after := int64(84); after < 139; {
		w, err := p.Salvage(ctx, newest, after, SegmentOptions{Codec: CodecNone}, 300)
		if err != nil || w == nil || w.Records() == 0 || w.Size() > 300 {
			t.Fatalf("piece after %d: %v, %v", after, w, err)
		}
		seg, info := w.Finish()
		_, got, err := decodeSegment(seg)
		if err != nil || info.Start != after+1 {
			t.Fatalf("piece after %d starts at %d: %v", after, info.Start, err)
		}
		pieces = append(pieces, got...)
		after = info.End
	}
	if !reflect.DeepEqual(normalize(pieces), normalize(want)) {
		t.Fatalf("salvaged in pieces %d records, want %d equal to writer 1's", len(pieces), len(want))
	}
}
