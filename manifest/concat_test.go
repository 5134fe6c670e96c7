package manifest

import (
	"bytes"
	"errors"
	"hash/crc32"
	"io"
	"math"
	"math/rand/v2"
	"reflect"
	"runtime"
	"slices"
	"testing"
)

// segOp is one step of building a segment: a record (rec != nil) or a gap
// up to gapTo for reason.
type segOp struct {
	rec    *Record
	gapTo  int64
	reason GapReason
}

func recOps(recs []Record) []segOp {
	ops := make([]segOp, len(recs))
	for i := range recs {
		ops[i] = segOp{rec: &recs[i]}
	}
	return ops
}

func gapOp(to int64, reason GapReason) segOp { return segOp{gapTo: to, reason: reason} }

// applyOps feeds ops to w; a record past w.Next() gets a gap of fill
// before it.
func applyOps(w *SegmentWriter, ops []segOp, fill GapReason) error {
	for _, op := range ops {
		if op.rec == nil {
			if err := w.AddGap(op.gapTo, op.reason); err != nil {
				return err
			}
			continue
		}
		if op.rec.Offset > w.Next() {
			if err := w.AddGap(op.rec.Offset-1, fill); err != nil {
				return err
			}
		}
		if err := w.Append(op.rec); err != nil {
			return err
		}
	}
	return nil
}

// testPart is a part built by a SegmentWriter, with what it holds.
type testPart struct {
	part SegmentPart
	info SegmentInfo
	ops  []segOp
	recs []Record // decoded
}

func makePart(t testing.TB, start int64, ops []segOp, opts SegmentOptions) testPart {
	t.Helper()
	w := NewSegmentWriter(start, opts)
	if err := applyOps(w, ops, GapCompacted); err != nil {
		t.Fatal(err)
	}
	seg, info := w.Finish()
	ix, recs, err := decodeSegment(seg)
	if err != nil {
		t.Fatal(err)
	}
	return testPart{part: SegmentPart{Start: info.Start, End: info.End, Segment: seg, Index: ix}, info: info, ops: ops, recs: recs}
}

func segParts(tps []testPart) []SegmentPart {
	out := make([]SegmentPart, len(tps))
	for i := range tps {
		out[i] = tps[i].part
	}
	return out
}

// checkConcat concatenates tps and checks the result against the parts and
// against a SegmentWriter fed every part's records and gaps in one go.
func checkConcat(t *testing.T, tps []testPart) ([]byte, SegmentInfo) {
	t.Helper()
	seg, info, err := ConcatSegments(segParts(tps))
	if err != nil {
		t.Fatal(err)
	}
	ix, recs, err := decodeSegment(seg)
	if err != nil {
		t.Fatalf("result does not decode: %v", err)
	}
	var wantRecs []Record
	var blocks int
	var usize int64
	w := NewSegmentWriter(tps[0].part.Start, SegmentOptions{Codec: CodecNone})
	for _, tp := range tps {
		wantRecs = append(wantRecs, tp.recs...)
		blocks += len(tp.part.Index.Blocks)
		usize += tp.info.UncompressedSize
		if err := applyOps(w, tp.ops, GapCompacted); err != nil {
			t.Fatal(err)
		}
	}
	refSeg, ref := w.Finish()
	refIx, refRecs, err := decodeSegment(refSeg)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(recs, wantRecs) || !reflect.DeepEqual(recs, refRecs) {
		t.Fatalf("records differ: %d records, parts hold %d", len(recs), len(wantRecs))
	}
	if !slices.Equal(ix.Gaps, refIx.Gaps) {
		t.Fatalf("gaps %v, want %v", ix.Gaps, refIx.Gaps)
	}
	if info.Start != ref.Start || info.End != ref.End || info.Records != ref.Records || info.FirstOffset != ref.FirstOffset ||
		info.LastOffset != ref.LastOffset || info.MinTimestamp != ref.MinTimestamp || info.MaxTimestamp != ref.MaxTimestamp ||
		info.GapOffsets != ref.GapOffsets {
		t.Fatalf("info %+v, a writer says %+v", info, ref)
	}
	if info.Size != int64(len(seg)) || info.CRC32C != crc32c(seg) || info.Blocks != blocks || info.Blocks != len(ix.Blocks) ||
		info.UncompressedSize != usize {
		t.Fatalf("info %+v: size %d, crc %08x, %d blocks, uncompressed %d", info, len(seg), crc32c(seg), blocks, usize)
	}
	f, err := DecodeFooter(seg[len(seg)-FooterSize:])
	if err != nil || f.IndexPosition != info.IndexPosition || f.IndexLength != info.IndexLength {
		t.Fatalf("footer %+v %v, info %+v", f, err, info)
	}
	if info.Start == 0 {
		c, err := Next(nil, "t", TopicID{1}, 0, SegmentKey(PartitionPrefix("t", TopicID{1}, 0), info.Start, info.End, "0123456789abcdef"), info, "w", 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := CheckIndex(c, ix); err != nil {
			t.Fatal(err)
		}
	}
	return seg, info
}

func smallAdversarial(base int64) []Record {
	r := adversarial(base)
	r[3].Value = r[3].Value[:3000]
	return r
}

func TestConcatSegmentsCodecs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		opts  []SegmentOptions
		small bool
	}{
		{"zstd", []SegmentOptions{DefaultSegmentOptions()}, false},
		{"s2", []SegmentOptions{{Codec: CodecS2}}, false},
		{"none", []SegmentOptions{{Codec: CodecNone}}, false},
		{"zstd-tiny-blocks", []SegmentOptions{{Codec: CodecZstd, BlockSize: 64}}, true},
		{"mixed", []SegmentOptions{DefaultSegmentOptions(), {Codec: CodecS2, BlockSize: 64}, {Codec: CodecNone, BlockSize: 100}}, false},
		{"mixed-tiny", []SegmentOptions{{Codec: CodecNone, BlockSize: 1}, {Codec: CodecZstd, BlockSize: 1}, {Codec: CodecS2, BlockSize: 1}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			recs := adversarial
			if tc.small {
				recs = smallAdversarial
			}
			// Edge gaps merge: part 0 ends with 18..20 compacted, part 1
			// starts with 21..29 compacted. Part 1 ends with a transaction
			// gap, part 2 starts with a compacted one: not merged.
			var tps []testPart
			for i, span := range [][2]int64{{0, 20}, {21, 40}, {41, 60}} {
				ops := recOps(recs(span[0] + 9))
				reason := GapCompacted
				if i == 1 {
					reason = GapTransaction
				}
				ops = append(ops, gapOp(span[1], reason))
				tps = append(tps, makePart(t, span[0], ops, tc.opts[i%len(tc.opts)]))
			}
			seg, _ := checkConcat(t, tps)
			ix, _, _ := decodeSegment(seg)
			want := []Gap{{0, 8, GapCompacted}, {12, 13, GapCompacted}, {17, 29, GapCompacted}, {33, 34, GapCompacted},
				{38, 40, GapTransaction}, {41, 49, GapCompacted}, {53, 54, GapCompacted}, {58, 60, GapCompacted}}
			if !slices.Equal(ix.Gaps, want) {
				t.Fatalf("gaps %v, want %v", ix.Gaps, want)
			}
		})
	}
}

// TestConcatSegmentsGapOnly: parts of gaps only, between parts with
// records and on their own; edge gaps of the same reason merge across
// several parts.
func TestConcatSegmentsGapOnly(t *testing.T) {
	t.Parallel()
	opts := SegmentOptions{Codec: CodecZstd, BlockSize: 64}
	a := makePart(t, 0, append(recOps(smallAdversarial(2)), gapOp(12, GapNotReturned)), opts)
	b := makePart(t, 13, []segOp{gapOp(20, GapNotReturned)}, opts)
	c := makePart(t, 21, []segOp{gapOp(21, GapNotReturned), gapOp(25, GapDataLoss)}, opts)
	d := makePart(t, 26, append([]segOp{gapOp(30, GapDataLoss)}, recOps(smallAdversarial(31))...), opts)
	seg, info := checkConcat(t, []testPart{a, b, c, d})
	ix, _, _ := decodeSegment(seg)
	want := []Gap{{0, 1, GapCompacted}, {5, 6, GapCompacted}, {10, 21, GapNotReturned}, {22, 30, GapDataLoss}, {34, 35, GapCompacted}}
	if !slices.Equal(ix.Gaps, want) {
		t.Fatalf("gaps %v, want %v", ix.Gaps, want)
	}
	if info.GapOffsets[GapNotReturned] != 12 || info.GapOffsets[GapDataLoss] != 9 {
		t.Fatalf("gap offsets %v", info.GapOffsets)
	}

	// Only gaps: no blocks at all.
	seg, info = checkConcat(t, []testPart{
		makePart(t, 0, []segOp{gapOp(4, GapBeforeStart)}, opts),
		makePart(t, 5, []segOp{gapOp(9, GapBeforeStart)}, opts),
		makePart(t, 10, []segOp{gapOp(10, GapCompacted)}, opts),
	})
	ix, _, _ = decodeSegment(seg)
	if info.Blocks != 0 || info.Records != 0 || info.FirstOffset != -1 || info.LastOffset != -1 || info.MinTimestamp != 0 ||
		info.MaxTimestamp != 0 || info.IndexPosition != segHeaderSize || info.UncompressedSize != 0 ||
		!slices.Equal(ix.Gaps, []Gap{{0, 9, GapBeforeStart}, {10, 10, GapCompacted}}) {
		t.Fatalf("gap-only result: %+v %v", info, ix.Gaps)
	}
}

// TestConcatSegmentsSingle: one part concatenates to itself, byte for byte.
func TestConcatSegmentsSingle(t *testing.T) {
	t.Parallel()
	for _, opts := range []SegmentOptions{DefaultSegmentOptions(), {Codec: CodecS2, BlockSize: 64}, {Codec: CodecNone, BlockSize: 10}} {
		for _, ops := range [][]segOp{
			append(recOps(adversarial(5)), gapOp(30, GapTransaction)),
			recOps(smallAdversarial(0)),
			{gapOp(7, GapDataLoss)},
		} {
			tp := makePart(t, 0, ops, opts)
			seg, info := checkConcat(t, []testPart{tp})
			if !bytes.Equal(seg, tp.part.Segment) || info != tp.info {
				t.Fatalf("%s: single part changed: %+v, was %+v", opts.Codec, info, tp.info)
			}
		}
	}
}

// TestConcatSegmentsMany: many random parts (records, gaps of random
// reasons, random codecs and block sizes), not starting at 0.
func TestConcatSegmentsMany(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 20 {
		start := int64(rng.IntN(1000))
		next := start
		var tps []testPart
		for range 1 + rng.IntN(60) {
			var ops []segOp
			for range 1 + rng.IntN(30) {
				if rng.IntN(4) == 0 {
					next += int64(rng.IntN(5))
					ops = append(ops, gapOp(next, GapReason(1+rng.IntN(NumGapReasons-1))))
					next++
					continue
				}
				next += int64(rng.IntN(3)) // a compacted gap before it, often inside a block
				r := Record{Offset: next, Timestamp: rng.Int64N(2000) - 1000, Value: bytes.Repeat([]byte{byte(next)}, rng.IntN(40)),
					ProducerID: -1, ProducerEpoch: -1, LeaderEpoch: -1}
				if rng.IntN(3) == 0 {
					r.Key = []byte{}
				}
				ops = append(ops, segOp{rec: &r})
				next++
			}
			opts := SegmentOptions{Codec: Codec(rng.IntN(3)), BlockSize: 1 + rng.IntN(300)}
			tp := makePart(t, tps0End(tps, start), ops, opts)
			tps = append(tps, tp)
		}
		seg, info := checkConcat(t, tps)
		if info.Start != start || info.End != next-1 || int64(len(seg)) != info.Size {
			t.Fatalf("round %d: %+v, want %d..%d", round, info, start, next-1)
		}
	}
}

func tps0End(tps []testPart, start int64) int64 {
	if len(tps) == 0 {
		return start
	}
	return tps[len(tps)-1].part.End + 1
}

func cloneParts(tps []testPart) []SegmentPart {
	ps := segParts(tps)
	for i := range ps {
		ix := *ps[i].Index
		ix.Blocks, ix.Gaps = slices.Clone(ix.Blocks), slices.Clone(ix.Gaps)
		ps[i].Index, ps[i].Segment = &ix, bytes.Clone(ps[i].Segment)
	}
	return ps
}

func TestConcatSegmentsErrors(t *testing.T) {
	t.Parallel()
	opts := SegmentOptions{Codec: CodecZstd, BlockSize: 64}
	tps := []testPart{
		makePart(t, 0, append(recOps(smallAdversarial(2)), gapOp(12, GapCompacted)), opts),
		makePart(t, 13, []segOp{gapOp(15, GapCompacted)}, opts),
		makePart(t, 16, recOps(smallAdversarial(16)), SegmentOptions{Codec: CodecNone}),
	}
	if _, _, err := ConcatSegments(nil); err == nil {
		t.Fatal("no parts accepted")
	}
	for _, tc := range []struct {
		name    string
		corrupt bool // the error wraps ErrCorrupt
		mutate  func(ps []SegmentPart) []SegmentPart
	}{
		{"hole between parts", false, func(ps []SegmentPart) []SegmentPart { return []SegmentPart{ps[0], ps[2]} }},
		{"out of order", false, func(ps []SegmentPart) []SegmentPart { return []SegmentPart{ps[1], ps[0], ps[2]} }},
		{"overlap", false, func(ps []SegmentPart) []SegmentPart { return []SegmentPart{ps[0], ps[0]} }},
		{"empty range", false, func(ps []SegmentPart) []SegmentPart { ps[1].End = ps[1].Start - 1; return ps }},
		{"range past the index", true, func(ps []SegmentPart) []SegmentPart {
			ps[1].End++
			ps[2].Start++
			return ps
		}},
		{"nil index", false, func(ps []SegmentPart) []SegmentPart { ps[1].Index = nil; return ps }},
		{"truncated segment", true, func(ps []SegmentPart) []SegmentPart { ps[0].Segment = ps[0].Segment[:30]; return ps }},
		{"segment without footer", true, func(ps []SegmentPart) []SegmentPart {
			ps[0].Segment = ps[0].Segment[:len(ps[0].Segment)-1]
			return ps
		}},
		{"block position shifted", true, func(ps []SegmentPart) []SegmentPart { ps[0].Index.Blocks[1].Position++; return ps }},
		{"block length grown", true, func(ps []SegmentPart) []SegmentPart { ps[0].Index.Blocks[0].Length += 3; return ps }},
		{"blocks shifted together", true, func(ps []SegmentPart) []SegmentPart {
			for i := range ps[2].Index.Blocks {
				ps[2].Index.Blocks[i].Position += 8
			}
			return ps
		}},
		{"block past the segment", true, func(ps []SegmentPart) []SegmentPart {
			ps[2].Index.Blocks[0].Position = math.MaxInt64 - 5
			return ps
		}},
		{"negative length", true, func(ps []SegmentPart) []SegmentPart { ps[2].Index.Blocks[0].Length = -100; return ps }},
		{"index record count", true, func(ps []SegmentPart) []SegmentPart { ps[2].Index.Blocks[0].Records++; return ps }},
		{"running maximum", true, func(ps []SegmentPart) []SegmentPart { ps[2].Index.Blocks[0].RunningMaxTimestamp--; return ps }},
		{"gap reason out of range", true, func(ps []SegmentPart) []SegmentPart { ps[1].Index.Gaps[0].Reason = 200; return ps }},
		{"flipped stored byte", true, func(ps []SegmentPart) []SegmentPart {
			bl := ps[0].Index.Blocks[0]
			ps[0].Segment[bl.Position+blockHeaderSize] ^= 1
			return ps
		}},
		{"block header record count", true, func(ps []SegmentPart) []SegmentPart {
			bl := ps[2].Index.Blocks[0]
			ps[2].Segment[bl.Position+4]++
			return ps
		}},
		{"block header payload length", true, func(ps []SegmentPart) []SegmentPart {
			bl := ps[2].Index.Blocks[0]
			ps[2].Segment[bl.Position+8]++
			return ps
		}},
		{"block header codec", true, func(ps []SegmentPart) []SegmentPart {
			bl := ps[0].Index.Blocks[0]
			ps[0].Segment[bl.Position] = 7
			return ps
		}},
	} {
		ps := tc.mutate(cloneParts(tps))
		_, _, err := ConcatSegments(ps)
		if err == nil {
			t.Fatalf("%s: accepted", tc.name)
		}
		t.Logf("%s: %v", tc.name, err)
		if tc.corrupt != errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s: error %v (corrupt %v)", tc.name, err, tc.corrupt)
		}
	}
	// The parts were cloned: the originals still concatenate.
	checkConcat(t, tps)
}

// fuzzParts builds 1 to 4 tiling parts from a script: each byte appends a
// record (two of four), a gap of 1..8 offsets of reason 1..4, or ends the
// part. cfg picks each part's codec (two bits a part) and the block size.
func fuzzParts(t *testing.T, script []byte, cfg uint16) []testPart {
	if len(script) > 400 {
		script = script[:400]
	}
	var spans [][]segOp
	var cur []segOp
	next := int64(0)
	for i, b := range script {
		switch b & 3 {
		case 0, 1:
			r := Record{Offset: next, Timestamp: int64(int8(b)) * 997, Value: bytes.Repeat([]byte{b}, int(b>>3)&15),
				ProducerID: -1, ProducerEpoch: -1, LeaderEpoch: int32(i)}
			if b&0x80 != 0 {
				r.Timestamp = math.MinInt64 + int64(b)
				r.Key = []byte{}
			}
			cur = append(cur, segOp{rec: &r})
			next++
		case 2:
			next += int64(b>>4) & 7
			cur = append(cur, gapOp(next, GapReason(1+(b>>2)&3)))
			next++
		case 3:
			if len(cur) > 0 && len(spans) < 3 {
				spans, cur = append(spans, cur), nil
			}
		}
	}
	if len(cur) == 0 {
		cur = append(cur, gapOp(next, GapCompacted))
	}
	spans = append(spans, cur)
	tps := make([]testPart, len(spans))
	start := int64(0)
	for i, ops := range spans {
		opts := SegmentOptions{Codec: Codec((cfg >> (2 * i) & 3) % 3), BlockSize: 1 + int(cfg>>8)}
		tps[i] = makePart(t, start, ops, opts)
		start = tps[i].part.End + 1
	}
	return tps
}

// fuzzMutate changes one thing in ps, chosen by mut (0: nothing): a byte
// of a segment, an index field or a part's range.
func fuzzMutate(ps []SegmentPart, mut uint64) {
	if mut == 0 {
		return
	}
	p := &ps[int(mut>>8)%len(ps)]
	delta := int64(int8(mut >> 16))
	if delta == 0 {
		delta = 1
	}
	at := int(mut >> 24)
	switch mut % 8 {
	case 0:
		p.Segment[at%len(p.Segment)] ^= byte(delta)
	case 1:
		if n := len(p.Index.Blocks); n > 0 {
			p.Index.Blocks[at%n].Position += delta
		}
	case 2:
		if n := len(p.Index.Blocks); n > 0 {
			p.Index.Blocks[at%n].Length += delta
		}
	case 3:
		if n := len(p.Index.Blocks); n > 0 {
			bl := &p.Index.Blocks[at%n]
			switch at / n % 4 {
			case 0:
				bl.Records += delta
			case 1:
				bl.FirstOffset += delta
			case 2:
				bl.LastOffset += delta
			default:
				bl.MaxTimestamp += delta
				bl.RunningMaxTimestamp += delta
			}
		}
	case 4:
		if n := len(p.Index.Gaps); n > 0 {
			g := &p.Index.Gaps[at%n]
			switch at / n % 3 {
			case 0:
				g.From += delta
			case 1:
				g.To += delta
			default:
				g.Reason += GapReason(delta)
			}
		}
	case 5:
		p.Start += delta
	case 6:
		p.End += delta
	default:
		p.Segment = p.Segment[:at%len(p.Segment)]
	}
}

// FuzzConcatSegments: ConcatSegments never panics. Without a mutation it
// succeeds, and the result decodes to the parts' records and the gaps a
// SegmentWriter fed everything in one go writes. With one, whenever it
// succeeds the result is a valid segment (size, checksum, footer, index
// tiling its range) whose blocks decode exactly when the parts' blocks do,
// to the same records.
func FuzzConcatSegments(f *testing.F) {
	f.Add([]byte{0, 1, 0x12, 0x80, 3, 0x26, 0x05, 3, 0x2a, 3, 0x40, 0x41}, uint16(0x0824), uint64(0))
	f.Add([]byte{0x22, 3, 0x22, 3, 0x26, 3, 0x26}, uint16(0), uint64(0))
	f.Add([]byte{0xf0, 0x81, 0x06, 0x7c, 0x02, 0xfc, 0xff, 0x03, 0x31}, uint16(0xff39), uint64(0))
	f.Add([]byte{0, 1, 0x12, 0x80, 3, 0x26, 0x05, 3, 0x2a, 3, 0x40, 0x41}, uint16(0x0310), uint64(0x05010101))
	f.Add([]byte{0, 1, 0x12, 0x80, 3, 0x26, 0x05}, uint16(0x0312), uint64(0x44ff0109))
	f.Add([]byte{0, 4, 8, 12, 3, 0x6e, 16}, uint16(0x0001), uint64(0x1003010a))
	f.Fuzz(func(t *testing.T, script []byte, cfg uint16, mut uint64) {
		tps := fuzzParts(t, script, cfg)
		ps := cloneParts(tps)
		fuzzMutate(ps, mut)
		seg, info, err := ConcatSegments(ps)
		if err != nil {
			if mut == 0 {
				t.Fatalf("valid parts refused: %v", err)
			}
			return
		}
		if mut == 0 {
			checkConcat(t, tps)
			return
		}
		if info.Size != int64(len(seg)) || info.CRC32C != crc32c(seg) || CheckSegmentHeader(seg) != nil {
			t.Fatalf("info %+v for %d bytes", info, len(seg))
		}
		ft, err := DecodeFooter(seg[len(seg)-FooterSize:])
		if err != nil || ft.IndexPosition != info.IndexPosition || ft.IndexLength != info.IndexLength ||
			ft.IndexPosition+ft.IndexLength != int64(len(seg)-FooterSize) {
			t.Fatalf("footer %+v %v, info %+v", ft, err, info)
		}
		ix, err := DecodeIndex(seg[ft.IndexPosition : ft.IndexPosition+ft.IndexLength])
		if err == nil {
			err = CheckIndex(&Commit{Start: info.Start, End: info.End, Records: info.Records, GapOffsets: info.GapOffsets,
				IndexPosition: info.IndexPosition}, ix)
		}
		if err != nil {
			t.Fatalf("result index: %v", err)
		}
		var want []Record
		partsOK := true
		for _, p := range ps {
			for _, bl := range p.Index.Blocks {
				recs, err := DecodeBlock(p.Segment[bl.Position:bl.Position+bl.Length], bl)
				partsOK = partsOK && err == nil
				want = append(want, recs...)
			}
		}
		_, got, err := decodeSegment(seg)
		if (err == nil) != partsOK {
			t.Fatalf("result decodes: %v; parts decode: %v", err, partsOK)
		}
		if err == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("records differ: %d, parts hold %d", len(got), len(want))
		}
	})
}

// TestConcatStreamed: parts read as they are copied (a compaction's input
// in the store) concatenate to the same bytes and summary as parts in
// memory, holding about one block; a corrupt block or header, a wrong
// segment checksum or a truncated part ends the reading with ErrCorrupt.
func TestConcatStreamed(t *testing.T) {
	var tps []testPart
	start := int64(0)
	for i := range 4 {
		recs := mkRecs(start, start+1999, func(o int64) int64 { return o })
		for i := range recs {
			recs[i].Value = bytes.Repeat([]byte{7}, 500)
		}
		if i == 2 {
			recs = recs[3:] // a gap at a part's edge
		}
		tp := makePart(t, start, recOps(recs), SegmentOptions{Codec: CodecNone, BlockSize: 64 << 10})
		tps = append(tps, tp)
		start = tp.info.End + 1
	}
	want, wantInfo, err := ConcatSegments(segParts(tps))
	if err != nil {
		t.Fatal(err)
	}
	streamed := func(mod func(i int, seg []byte) []byte, crcDelta uint32) []SegmentPart {
		var ps []SegmentPart
		for i, tp := range tps {
			seg := slices.Clone(tp.part.Segment)
			if mod != nil {
				seg = mod(i, seg)
			}
			ps = append(ps, SegmentPart{Start: tp.part.Start, End: tp.part.End, Index: tp.part.Index,
				Tail: tp.part.Segment[tp.info.IndexPosition:], Size: tp.info.Size, CRC32C: tp.info.CRC32C + crcDelta, CheckCRC: true,
				Open: func() (io.ReadCloser, error) {
					return io.NopCloser(bytes.NewReader(seg[:min(int64(len(seg)), tp.info.IndexPosition)])), nil
				}})
		}
		return ps
	}
	var in int64
	for _, tp := range tps {
		in += tp.info.Size
	}
	ps := streamed(nil, 0)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	c, err := NewConcat(ps)
	if err != nil {
		t.Fatal(err)
	}
	h := crc32.New(castagnoli)
	n, err := io.Copy(h, c)
	runtime.ReadMemStats(&after)
	if err != nil || n != int64(len(want)) || h.Sum32() != wantInfo.CRC32C {
		t.Fatalf("streamed concatenation: %d bytes (%v), want %d with ConcatSegments' checksum", n, err, len(want))
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > uint64(in/20) {
		t.Fatalf("concatenating %d bytes allocated %d bytes: more than about a block", in, alloc)
	}
	if info, err := c.Info(); err != nil || info != wantInfo {
		t.Fatalf("streamed info %+v (%v), want %+v", info, err, wantInfo)
	}
	for name, ps := range map[string][]SegmentPart{
		"block":     streamed(func(i int, seg []byte) []byte { seg[tps[i].part.Index.Blocks[1].Position+100] ^= 1; return seg }, 0),
		"header":    streamed(func(i int, seg []byte) []byte { seg[0] ^= 1; return seg }, 0),
		"checksum":  streamed(nil, 1),
		"truncated": streamed(func(i int, seg []byte) []byte { return seg[:tps[i].part.Index.Blocks[2].Position+5] }, 0),
	} {
		c, err := NewConcat(ps)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, c); !errors.Is(err, ErrCorrupt) || !errors.Is(c.Err(), ErrCorrupt) {
			t.Fatalf("%s: reading returned %v (Err %v), want ErrCorrupt", name, err, c.Err())
		}
		if _, err := c.Info(); err == nil {
			t.Fatalf("%s: Info after a failed read", name)
		}
	}
}
