package manifest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"reflect"
	"strconv"
	"testing"
)

// adversarial returns records that exercise every corner of the record
// encoding; offsets start at base and skip where gaps are wanted.
func adversarial(base int64) []Record {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	return []Record{
		{Offset: base, Timestamp: 1700000000000, Key: nil, Value: nil, ProducerID: -1, ProducerEpoch: -1, LeaderEpoch: -1},
		{Offset: base + 1, Timestamp: 0, Key: []byte{}, Value: []byte{}, ProducerID: -1, ProducerEpoch: -1, LeaderEpoch: 0},
		{Offset: base + 2, Timestamp: -1, TimestampType: LogAppendTime, Key: []byte("k"), Value: nil,
			Headers:    []Header{{Key: "dup", Value: []byte("1")}, {Key: "dup", Value: []byte("2")}, {Key: "null", Value: nil}, {Key: "", Value: []byte{}}},
			ProducerID: 42, ProducerEpoch: 7, LeaderEpoch: 3, Compression: 4, Transactional: true},
		{Offset: base + 5, Timestamp: math.MinInt64, Key: []byte{0, 0xff}, Value: big, ProducerID: math.MaxInt64, ProducerEpoch: math.MaxInt16, LeaderEpoch: math.MaxInt32, Compression: 1},
		{Offset: base + 6, Timestamp: math.MaxInt64, Key: big[:100], Value: []byte("v"), ProducerID: math.MinInt64, ProducerEpoch: math.MinInt16, LeaderEpoch: math.MinInt32, Compression: 2},
		{Offset: base + 7, Timestamp: 1600000000000, Value: []byte("out of order"), Headers: []Header{}, ProducerID: -1, ProducerEpoch: -1, LeaderEpoch: -1, Compression: 3},
	}
}

// normalize makes an empty header slice nil, which the encoding cannot tell apart.
func normalize(rs []Record) []Record {
	out := make([]Record, len(rs))
	for i, r := range rs {
		if len(r.Headers) == 0 {
			r.Headers = nil
		}
		out[i] = r
	}
	return out
}

// buildSegment writes recs into a segment starting at start, filling holes
// with gaps of the given reason, and covering up to end.
func buildSegment(t testing.TB, start, end int64, recs []Record, reason GapReason, opts SegmentOptions) ([]byte, SegmentInfo) {
	t.Helper()
	w := NewSegmentWriter(start, opts)
	for i := range recs {
		if recs[i].Offset > w.Next() {
			if err := w.AddGap(recs[i].Offset-1, reason); err != nil {
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
	return w.Finish()
}

// decodeSegment decodes a whole in-memory segment the way a reader does:
// footer, index, then every block.
func decodeSegment(seg []byte) (*Index, []Record, error) {
	if len(seg) < segHeaderSize+FooterSize {
		return nil, nil, corruptf("segment too short")
	}
	if err := CheckSegmentHeader(seg); err != nil {
		return nil, nil, err
	}
	f, err := DecodeFooter(seg[len(seg)-FooterSize:])
	if err != nil {
		return nil, nil, err
	}
	if f.IndexPosition+f.IndexLength != int64(len(seg)-FooterSize) {
		return nil, nil, corruptf("index does not end at the footer")
	}
	ix, err := DecodeIndex(seg[f.IndexPosition : f.IndexPosition+f.IndexLength])
	if err != nil {
		return nil, nil, err
	}
	var all []Record
	for _, bl := range ix.Blocks {
		if bl.Position+bl.Length > f.IndexPosition {
			return nil, nil, corruptf("block past index")
		}
		recs, err := DecodeBlock(seg[bl.Position:bl.Position+bl.Length], bl)
		if err != nil {
			return nil, nil, err
		}
		all = append(all, recs...)
	}
	return ix, all, nil
}

func TestSegmentRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts SegmentOptions
	}{
		{"zstd", DefaultSegmentOptions()},
		{"none", SegmentOptions{Codec: CodecNone}},
		{"tiny-blocks", SegmentOptions{Codec: CodecZstd, BlockSize: 64}},
		{"s2", SegmentOptions{Codec: CodecS2}},
		{"s2-tiny-blocks", SegmentOptions{Codec: CodecS2, BlockSize: 64}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			recs := adversarial(100)
			seg, info := buildSegment(t, 90, 120, recs, GapCompacted, tc.opts)
			ix, got, err := decodeSegment(seg)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, normalize(recs)) {
				t.Fatalf("records differ after round trip")
			}
			// null stays null, empty stays empty
			if got[0].Key != nil || got[0].Value != nil || got[1].Key == nil || got[1].Value == nil {
				t.Fatalf("null/empty not kept: %#v %#v", got[0], got[1])
			}
			wantGaps := []Gap{{90, 99, GapCompacted}, {103, 104, GapCompacted}, {108, 120, GapCompacted}}
			if !reflect.DeepEqual(ix.Gaps, wantGaps) {
				t.Fatalf("gaps %v, want %v", ix.Gaps, wantGaps)
			}
			if info.Start != 90 || info.End != 120 || info.Records != int64(len(recs)) || info.FirstOffset != 100 || info.LastOffset != 107 ||
				info.MinTimestamp != math.MinInt64 || info.MaxTimestamp != math.MaxInt64 || info.Size != int64(len(seg)) {
				t.Fatalf("info %+v", info)
			}
			if info.GapOffsets[GapCompacted] != 10+2+13 {
				t.Fatalf("gap offsets %v", info.GapOffsets)
			}
			c, err := Next(nil, "t", TopicID{1}, 0, SegmentKey(PartitionPrefix("t", TopicID{1}, 0), 90, 120, "0123456789abcdef"), info, "w", 1)
			if err == nil {
				t.Fatalf("first commit not starting at 0 accepted: %+v", c)
			}
		})
	}
}

func TestSegmentWriterRejects(t *testing.T) {
	t.Parallel()
	w := NewSegmentWriter(10, DefaultSegmentOptions())
	if err := w.Append(&Record{Offset: 11}); err == nil {
		t.Fatal("append past a hole accepted")
	}
	if err := w.AddGap(9, GapCompacted); err == nil {
		t.Fatal("gap going backwards accepted")
	}
	if err := w.AddGap(12, 0); err == nil {
		t.Fatal("gap without reason accepted")
	}
	if err := w.Append(&Record{Offset: 10, TimestampType: 2}); err == nil {
		t.Fatal("bad timestamp type accepted")
	}
	if err := w.AddGap(12, GapTransaction); err != nil {
		t.Fatal(err)
	}
	if err := w.AddGap(14, GapTransaction); err != nil { // merges
		t.Fatal(err)
	}
	seg, info := w.Finish()
	ix, recs, err := decodeSegment(seg)
	if err != nil || len(recs) != 0 || len(ix.Gaps) != 1 || ix.Gaps[0] != (Gap{10, 14, GapTransaction}) || info.Records != 0 {
		t.Fatalf("gap-only segment: %v %v %+v", err, ix, info)
	}
}

func TestCorruptSegmentsError(t *testing.T) {
	t.Parallel()
	seg, _ := buildSegment(t, 0, 10, adversarial(0), GapCompacted, DefaultSegmentOptions())
	// Flip every byte in turn (sampled) and truncate at many lengths: always
	// an error wrapping ErrCorrupt or ErrUnsupportedVersion, never a panic
	// and never a silent success with different records.
	_, want, _ := decodeSegment(seg)
	for i := 0; i < len(seg); i += 1 + len(seg)/4000 {
		b := bytes.Clone(seg)
		b[i] ^= 0x5a
		_, got, err := decodeSegment(b)
		if err == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("flip at %d decoded to different records without error", i)
		}
		if err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupportedVersion) {
			t.Fatalf("flip at %d: error %v does not wrap ErrCorrupt", i, err)
		}
	}
	for n := 0; n < len(seg); n += 1 + len(seg)/500 {
		if _, _, err := decodeSegment(seg[:n]); err == nil {
			t.Fatalf("truncated to %d bytes decoded", n)
		}
	}
}

func TestUnknownVersionRefused(t *testing.T) {
	t.Parallel()
	seg, _ := buildSegment(t, 0, 2, adversarial(0)[:2], GapCompacted, DefaultSegmentOptions())
	b := bytes.Clone(seg)
	b[4] = 9
	if err := CheckSegmentHeader(b); !errors.Is(err, ErrUnsupportedVersion) {
		t.Fatalf("segment header v9: %v", err)
	}
	f := AppendFooter(nil, Footer{IndexPosition: 8, IndexLength: 100})
	f[12] = 2
	binary.LittleEndian.PutUint32(f[16:], crc32c(f[:16])) // a valid v2 footer
	if _, err := DecodeFooter(f); !errors.Is(err, ErrUnsupportedVersion) {
		t.Fatalf("footer v2: %v", err)
	}
	ix := AppendIndex(nil, &Index{})
	ix[4] = 2
	if _, err := DecodeIndex(ix); !errors.Is(err, ErrUnsupportedVersion) {
		t.Fatalf("index v2: %v", err)
	}
}

func TestRecordsCanonical(t *testing.T) {
	t.Parallel()
	recs := normalize(adversarial(7))
	b := AppendRecords(nil, recs)
	got, err := DecodeRecords(b, 7, int64(len(recs)))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, recs) {
		t.Fatal("records differ")
	}
	if !bytes.Equal(AppendRecords(nil, got), b) {
		t.Fatal("re-encoding differs")
	}
	// A non-minimal varint (0x80 0x00 for 0) is refused.
	bad := append([]byte{0x80, 0x00}, b[1:]...)
	if _, err := DecodeRecords(bad, 7, int64(len(recs))); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("non-minimal varint: %v", err)
	}
}

// TestS2BlockCorruption: an s2 block whose CRC matches but whose content is
// not a valid S2 block of the stated length is reported as corrupt.
func TestS2BlockCorruption(t *testing.T) {
	t.Parallel()
	seg, _ := buildSegment(t, 0, 9, adversarial(0), GapCompacted, SegmentOptions{Codec: CodecS2})
	ix, _, err := decodeSegment(seg)
	if err != nil {
		t.Fatal(err)
	}
	bi := ix.Blocks[0]
	for _, mutate := range []func(stored []byte){
		func(s []byte) { s[0] ^= 0x01 },        // the varint length
		func(s []byte) { s[len(s)-1] ^= 0xff }, // the last literal or copy
		func(s []byte) { s[len(s)/2] = 0xff },  // a tag in the middle
	} {
		blk := append([]byte(nil), seg[bi.Position:bi.Position+bi.Length]...)
		stored := blk[blockHeaderSize:]
		mutate(stored)
		binary.LittleEndian.PutUint32(blk[16:], crc32c(stored))
		recs, err := DecodeBlock(blk, bi)
		if err == nil {
			// A flipped literal byte can still decode; then the records
			// must differ or fail the index checks, never panic.
			continue
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("corrupt s2 block: %v (records %d)", err, len(recs))
		}
	}
	if s := CodecS2.String(); s != "s2" {
		t.Fatalf("CodecS2.String() = %q", s)
	}
	for _, name := range []string{"zstd", "s2", "none"} {
		c, err := ParseCodec(name)
		if err != nil || c.String() != name {
			t.Fatalf("ParseCodec(%q) = %v, %v", name, c, err)
		}
	}
	if _, err := ParseCodec("lz4"); err == nil {
		t.Fatal("ParseCodec accepted lz4")
	}
}

// TestSegmentBody: FinishBody's pieces are the segment Finish returns,
// through Read (in small steps), WriteTo and Bytes, with the summary's size
// and CRC32C, for every codec and for a segment of gaps only.
func TestSegmentBody(t *testing.T) {
	t.Parallel()
	for _, codec := range []Codec{CodecNone, CodecZstd, CodecS2} {
		for _, recs := range [][]Record{adversarial(10), nil} {
			build := func() *SegmentWriter {
				w := NewSegmentWriter(10, SegmentOptions{Codec: codec, BlockSize: 64})
				for i := range recs {
					if recs[i].Offset > w.Next() {
						if err := w.AddGap(recs[i].Offset-1, GapTransaction); err != nil {
							t.Fatal(err)
						}
					}
					if err := w.Append(&recs[i]); err != nil {
						t.Fatal(err)
					}
				}
				if err := w.AddGap(w.Next()+3, GapCompacted); err != nil {
					t.Fatal(err)
				}
				return w
			}
			want, wantInfo := build().Finish()
			body, info := build().FinishBody()
			if info != wantInfo || body.Size() != int64(len(want)) || info.Size != body.Size() || info.CRC32C != crc32c(want) {
				t.Fatalf("%s: info %+v size %d, want %+v size %d", codec, info, body.Size(), wantInfo, len(want))
			}
			if !bytes.Equal(body.Bytes(), want) {
				t.Fatalf("%s: Bytes differ from Finish", codec)
			}
			var small []byte
			r := body.Reader()
			buf := make([]byte, 7)
			for {
				n, err := r.Read(buf)
				small = append(small, buf[:n]...)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			var wt bytes.Buffer
			r = body.Reader()
			if n, err := r.WriteTo(&wt); err != nil || n != body.Size() || r.Len() != 0 {
				t.Fatalf("%s: WriteTo %d %v, %d left", codec, n, err, r.Len())
			}
			if !bytes.Equal(small, want) || !bytes.Equal(wt.Bytes(), want) {
				t.Fatalf("%s: Read or WriteTo differ from Finish", codec)
			}
			if _, _, err := decodeSegment(want); err != nil {
				t.Fatalf("%s: %v", codec, err)
			}
		}
	}
}

// TestCRC32CCombine: combining the CRCs of two parts gives the CRC of the
// whole, at every split of a buffer, including empty parts, and for block
// sized parts (every bit of the length up to 2^22 is used).
func TestCRC32CCombine(t *testing.T) {
	t.Parallel()
	b := make([]byte, 5<<20)
	for i := range b {
		b[i] = byte(i*7 + i>>8 + i>>16)
	}
	for _, n := range []int{0, 1, 2, 3, 4, 5, 7, 8, 100, 1024, 2999, 3000, 1<<20 + 17, 5 << 20} {
		for _, split := range []int{0, n / 3, n / 2, n} {
			a, c := b[:split], b[split:n]
			if got, want := crc32cCombine(crc32c(a), crc32c(c), int64(len(c))), crc32c(b[:n]); got != want {
				t.Fatalf("n=%d split=%d: combined %08x, want %08x", n, split, got, want)
			}
		}
	}
}

// TestSegmentReader: a reader of pieces (a held segment or flush object)
// reads the same bytes as their concatenation through Read, ReadAt at
// every offset, Seek, WriteTo and rest, with empty pieces anywhere.
func TestSegmentReader(t *testing.T) {
	t.Parallel()
	var pieces [][]byte
	var whole []byte
	for i, n := range []int{0, 5, 1, 0, 0, 13, 64, 2, 0} {
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(i*31 + j)
		}
		pieces = append(pieces, p)
		whole = append(whole, p...)
	}
	size := int64(len(whole))
	r := newPiecesReader(pieces)
	if r.Len() != len(whole) {
		t.Fatalf("Len %d, want %d", r.Len(), len(whole))
	}
	// Read in small steps.
	var got []byte
	buf := make([]byte, 3)
	for {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil || n == 0 {
			t.Fatalf("Read: %d, %v", n, err)
		}
	}
	if !bytes.Equal(got, whole) || r.Len() != 0 {
		t.Fatalf("Read: %x, want %x (Len %d)", got, whole, r.Len())
	}
	for off := int64(0); off <= size+1; off++ {
		for _, n := range []int64{0, 1, 4, 7, 20, size} {
			p := make([]byte, n)
			k, err := r.ReadAt(p, off)
			want := whole[min(off, size):min(off+n, size)]
			if !bytes.Equal(p[:k], want) || (k < int(n)) != (err == io.EOF) || err != nil && err != io.EOF {
				t.Fatalf("ReadAt(%d bytes, %d): %x, %v; want %x", n, off, p[:k], err, want)
			}
		}
		if pos, err := r.Seek(off, io.SeekStart); err != nil || pos != off {
			t.Fatalf("Seek(%d): %d, %v", off, pos, err)
		}
		if rest := bytes.Join(r.rest(), nil); !bytes.Equal(rest, whole[min(off, size):]) {
			t.Fatalf("rest at %d: %x", off, rest)
		}
		var w bytes.Buffer
		if n, err := r.WriteTo(&w); err != nil || n != int64(len(whole[min(off, size):])) || !bytes.Equal(w.Bytes(), whole[min(off, size):]) {
			t.Fatalf("WriteTo at %d: %d, %v, %x", off, n, err, w.Bytes())
		}
	}
	if pos, err := r.Seek(-2, io.SeekEnd); err != nil || pos != size-2 {
		t.Fatalf("Seek(-2, end): %d, %v", pos, err)
	}
	if pos, err := r.Seek(1, io.SeekCurrent); err != nil || pos != size-1 {
		t.Fatalf("Seek(1, current): %d, %v", pos, err)
	}
	if _, err := r.Seek(-1, io.SeekStart); err == nil {
		t.Fatal("Seek before the start succeeded")
	}
	if _, err := r.ReadAt(make([]byte, 1), -1); err == nil {
		t.Fatal("ReadAt a negative offset succeeded")
	}
}

// TestHeaderArenaReuse: decoding block after block with a headerArena
// yields what fresh decoding does, and once the arena has seen a block,
// decoding a like block allocates nothing (header lists and interned keys
// come from the arena; here 3,000 headers, more than one default slab).
func TestHeaderArenaReuse(t *testing.T) {
	mk := func(base int64, salt byte) []Record {
		var recs []Record
		for i := int64(0); i < 1000; i++ {
			r := Record{Offset: base + i, Timestamp: 1700000000000 + i, Key: []byte{salt, byte(i)}, Value: []byte("v"), ProducerID: -1, ProducerEpoch: -1, LeaderEpoch: -1}
			if i%4 != 0 {
				r.Headers = []Header{{Key: "trace", Value: []byte{salt, byte(i)}}, {Key: "null", Value: nil}, {Key: "e", Value: []byte{}}, {Key: "k" + strconv.Itoa(int(i%7)), Value: []byte{salt}}}
			}
			recs = append(recs, r)
		}
		return recs
	}
	a, b := AppendRecords(nil, mk(0, 1)), AppendRecords(nil, mk(1000, 2))
	var ha headerArena
	var recs []Record
	var err error
	for i, c := range []struct {
		payload []byte
		base    int64
	}{{a, 0}, {b, 1000}, {a, 0}, {b, 1000}} {
		want, err := DecodeRecords(c.payload, c.base, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if recs, err = decodeRecordsInto(recs, &ha, c.payload, c.base, 1000, true); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(recs, want) {
			t.Fatalf("decode %d with the arena differs from a fresh decode", i)
		}
	}
	allocs := testing.AllocsPerRun(20, func() {
		if recs, err = decodeRecordsInto(recs, &ha, b, 1000, 1000, true); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("a block decoded with a warm arena allocated %.0f times", allocs)
	}
}
