package manifest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"testing"
)

// Invariants of every decoder fuzzed here:
//  1. it never panics, whatever the input;
//  2. an input it rejects yields an error wrapping ErrCorrupt or
//     ErrUnsupportedVersion (for the binary decoders);
//  3. what it accepts re-encodes to exactly the input bytes (the encodings
//     are canonical), except segments, whose compressed payloads need not be
//     what this encoder would produce: there, the decoded records re-encode
//     and decode to the same records.

func checkErr(t *testing.T, err error) {
	t.Helper()
	if err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupportedVersion) {
		t.Fatalf("error does not wrap ErrCorrupt/ErrUnsupportedVersion: %v", err)
	}
}

func FuzzDecodeRecords(f *testing.F) {
	recs := normalize(adversarial(0))
	recs[3].Value = recs[3].Value[:300]
	f.Add(AppendRecords(nil, recs), int64(0), int64(len(recs)))
	f.Add(AppendRecords(nil, recs[:1]), int64(math.MaxInt64-1), int64(1))
	f.Add([]byte{0x80, 0x00}, int64(0), int64(1))
	f.Fuzz(func(t *testing.T, b []byte, base, n int64) {
		got, err := DecodeRecords(b, base, n)
		checkErr(t, err)
		if err != nil {
			return
		}
		if re := AppendRecords(nil, got); !bytes.Equal(re, b) {
			t.Fatalf("re-encoding differs:\n%x\n%x", re, b)
		}
	})
}

// FuzzDecodeRecordsFast holds DecodeRecordsInto (recordFast, falling back
// to record) to the general decoder: the same records (null and empty
// byte slices told apart) or the same error, for any input; reusing a
// records slice and a header arena (warmed by the inputs before) changes
// nothing.
func FuzzDecodeRecordsFast(f *testing.F) {
	recs := normalize(adversarial(0))
	recs[3].Value = recs[3].Value[:300]
	f.Add(AppendRecords(nil, recs), int64(0), int64(len(recs)))
	f.Add(AppendRecords(nil, recs[:1]), int64(math.MaxInt64-1), int64(1))
	f.Add(AppendRecords(nil, recs[1:3]), int64(-5), int64(2))
	f.Add([]byte{0x80, 0x00}, int64(0), int64(1))
	f.Add([]byte{0, 0x81, 0x00, 0, 1, 1, 1, 1, 1, 0}, int64(0), int64(1))       // non-minimal timestamp
	f.Add([]byte{0, 2, 0x20, 1, 1, 1, 1, 1, 0}, int64(0), int64(1))             // reserved attribute bit
	f.Add([]byte{0, 2, 0, 1, 0x80, 0x80, 0x08, 1, 1, 1, 0}, int64(0), int64(1)) // producer epoch 65536
	f.Add([]byte{0, 2, 0, 1, 1, 1, 1, 5, 0}, int64(0), int64(1))                // value past the end
	f.Add([]byte{0, 2, 0, 1, 1, 1, 1, 1, 1, 0, 1}, int64(0), int64(1))          // header with an empty key
	reuse := make([]Record, 4)
	var ha headerArena // warmed by the previous inputs' header lists and keys
	f.Fuzz(func(t *testing.T, b []byte, base, n int64) {
		want, werr := decodeRecordsInto(nil, nil, b, base, n, false)
		got, gerr := DecodeRecordsInto(nil, b, base, n)
		again, aerr := decodeRecordsInto(reuse, &ha, b, base, n, true)
		if (werr == nil) != (gerr == nil) || (werr == nil) != (aerr == nil) {
			t.Fatalf("errors differ: general %v, fast %v, fast reusing %v", werr, gerr, aerr)
		}
		if werr != nil {
			if werr.Error() != gerr.Error() || werr.Error() != aerr.Error() {
				t.Fatalf("errors differ: general %q, fast %q, fast reusing %q", werr, gerr, aerr)
			}
			return
		}
		if !reflect.DeepEqual(want, got) || !reflect.DeepEqual(want, again) { // nil and empty slices differ
			t.Fatalf("records differ:\ngeneral %+v\nfast    %+v\nreusing %+v", want, got, again)
		}
	})
}

func FuzzDecodeIndex(f *testing.F) {
	seg, info := buildSegment(f, 0, 40, adversarial(3), GapTransaction, SegmentOptions{Codec: CodecZstd, BlockSize: 64})
	f.Add(seg[info.IndexPosition : info.IndexPosition+info.IndexLength])
	f.Add(AppendIndex(nil, &Index{}))
	f.Fuzz(func(t *testing.T, b []byte) {
		ix, err := DecodeIndex(b)
		checkErr(t, err)
		if err != nil {
			return
		}
		if re := AppendIndex(nil, ix); !bytes.Equal(re, b) {
			t.Fatalf("re-encoding differs")
		}
	})
}

func FuzzDecodeFooter(f *testing.F) {
	f.Add(AppendFooter(nil, Footer{IndexPosition: 8, IndexLength: 20}))
	f.Fuzz(func(t *testing.T, b []byte) {
		ft, err := DecodeFooter(b)
		checkErr(t, err)
		if err == nil && !bytes.Equal(AppendFooter(nil, ft), b) {
			t.Fatalf("re-encoding differs")
		}
	})
}

func FuzzDecodeSegment(f *testing.F) {
	small := adversarial(0)
	small[3].Value = small[3].Value[:1000]
	for _, o := range []SegmentOptions{DefaultSegmentOptions(), {Codec: CodecNone, BlockSize: 100}, {Codec: CodecS2, BlockSize: 100}} {
		seg, _ := buildSegment(f, 0, 9, small, GapCompacted, o)
		f.Add(seg)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, recs, err := decodeSegment(b)
		checkErr(t, err)
		if err != nil || len(recs) == 0 {
			return
		}
		again, err := DecodeRecords(AppendRecords(nil, recs), recs[0].Offset, int64(len(recs)))
		if err != nil || !reflect.DeepEqual(again, recs) {
			t.Fatalf("decoded records do not round-trip: %v", err)
		}
	})
}

func FuzzDecodeCommit(f *testing.F) {
	seg, info := buildSegment(f, 0, 12, adversarial(0), GapCompacted, DefaultSegmentOptions())
	_ = seg
	id := TopicID{0xab, 1}
	c, err := Next(nil, "orders.v1", id, 3, SegmentKey(PartitionPrefix("orders.v1", id, 3), 0, 12, "00112233445566ff"), info, "host-1", 1700000000000)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(AppendCommit(nil, c))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommit(b)
		checkErr(t, err)
		if err == nil && !bytes.Equal(AppendCommit(nil, c), b) {
			t.Fatalf("re-encoding differs")
		}
	})
}

func FuzzParseKey(f *testing.F) {
	id := TopicID{1, 2, 3}
	pp := PartitionPrefix("a.b-c_d", id, 12)
	for _, k := range []string{RootKey, TopicMarkerKey("t", id), CommitKey(pp, 0), CommitKey(pp, math.MaxInt64-1),
		TimeKey(pp, math.MinInt64, 5), TimeKey(pp, -1, 0), SegmentKey(pp, 0, 99, "0123456789abcdef"),
		CatalogKey(CatalogTopics, 1700000000000), CatalogKey(CatalogGroups, 0), "topics/x", "catalog/other/1.json",
		StartKey(pp, 1), StartKey(pp, math.MaxInt64-1), pp + "start/x",
		ClaimKey(pp, 1), ClaimKey(pp, math.MaxInt64-1), pp + "claims/x", FlushKey("0123456789abcdef", 0),
		FlushKey("fedcba9876543210", math.MaxInt64-1), TailIndexKey("0123456789abcdef", 9), "wal/0123456789abcdef/x.kwal",
		"wal/0123456789abcdef/tail/x.ktix", "wal/0123456789ABCDEF/0000000000000000001.kwal"} {
		f.Add(k)
	}
	// The version-3 keys round-trip through their parsed form.
	for _, k := range []Key{{Kind: KeyClaim, Topic: "a.b-c_d", TopicID: id, Partition: 12, Epoch: 3},
		{Kind: KeyFlush, Writer: "0123456789abcdef", Seq: 5}, {Kind: KeyTailIndex, Writer: "0123456789abcdef", Seq: 0}} {
		got, err := ParseKey(k.String())
		if err != nil || got != k {
			f.Fatalf("ParseKey(%q) = %+v, %v; want %+v", k.String(), got, err, k)
		}
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKey(s)
		if err != nil {
			return
		}
		if k.String() != s {
			t.Fatalf("ParseKey(%q).String() = %q", s, k.String())
		}
	})
}

func FuzzDecodeCatalog(f *testing.F) {
	f.Add([]byte(`{"format_version":1,"captured_ms":5,"cluster_id":"c","topics":[{"name":"t","topic_id":"0102030405060708090a0b0c0d0e0f10","partitions":3,"replication_factor":3,"configs":{"cleanup.policy":"compact"}}]}`))
	f.Add([]byte(`{"format_version":1,"captured_ms":5,"cluster_id":"c","groups":[{"group":"g","state":"Empty","offsets":[{"topic":"t","partition":0,"offset":10,"leader_epoch":-1,"metadata":null}]}]}`))
	f.Add([]byte(`{"format":"kbackup-archive","format_version":1,"created_ms":1,"created_by":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Never panics; errors wrap ErrCorrupt or ErrUnsupportedVersion.
		_, err := DecodeTopicsCapture(b)
		checkErr(t, err)
		_, err = DecodeGroupsCapture(b)
		checkErr(t, err)
		_, err = DecodeRoot(b)
		checkErr(t, err)
		_, err = DecodeTopicMarker(b)
		checkErr(t, err)
	})
}

// FuzzDecodeArchiveStart: besides the invariants above (it never panics;
// rejections wrap ErrCorrupt or ErrUnsupportedVersion), an accepted marker
//   - re-encodes to a marker that decodes to the same value;
//   - accounts for every offset below its start: records plus gap offsets
//     equal Start, in 1..Start commits;
//   - has a running maximum timestamp exactly when records lie below it, a
//     first recoverable record at or after its start, and a valid reason.
func FuzzDecodeArchiveStart(f *testing.F) {
	rm, first, oldest := int64(1700000000000), int64(120), int64(1700000000500)
	for _, m := range []*ArchiveStart{
		{FormatVersion: 2, Start: 120, Reason: ReasonRetentionAge, CreatedMs: 1700000001000, Writer: "host/1",
			OldestTimestamp: &oldest, FirstRecordOffset: &first,
			Below: StartTotals{Commits: 3, Records: 110, Bytes: 4096, GapOffsets: GapCounts{Transaction: 4, BeforeStart: 6}, RunningMaxTimestamp: &rm}},
		{FormatVersion: 2, Start: 5, Reason: ReasonRetentionBytes, Writer: "w", Below: StartTotals{Commits: 1, GapOffsets: GapCounts{BeforeStart: 5}}},
	} {
		f.Add(EncodeArchiveStart(m))
	}
	f.Add([]byte(`{"format_version":3,"start":1}`))
	f.Add([]byte(`{"format_version":2,"start":1,"reason":"x","oldest_timestamp":null,"first_record_offset":null,"created_ms":0,"writer":"w",` +
		`"below":{"commits":1,"records":1,"bytes":0,"gap_offsets":{"compacted":0,"transaction":0,"not_returned":0,"data_loss":0,"before_start":0},"running_max_timestamp":null}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeArchiveStart(b)
		checkErr(t, err)
		if err != nil {
			return
		}
		again, err := DecodeArchiveStart(EncodeArchiveStart(m))
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("re-encoding does not round-trip: %v", err)
		}
		var gaps int64
		for _, g := range m.Below.GapOffsets.Array() {
			gaps += g
		}
		if m.Below.Records+gaps != m.Start || m.Below.Commits < 1 || m.Below.Commits > m.Start ||
			(m.Below.RunningMaxTimestamp != nil) != (m.Below.Records > 0) ||
			m.FirstRecordOffset != nil && *m.FirstRecordOffset < m.Start || !validReason(m.Reason) {
			t.Fatalf("accepted an inconsistent marker: %+v", m)
		}
	})
}

// Version-3 decoders (docs/FORMAT.md §12). Seeds are built by the encoders.

// fuzzRef is a valid entry ref of writer w.
func fuzzRef(w string, seq, pos, start, end, runMax int64) EntryRef {
	return EntryRef{Writer: w, Seq: seq, Pos: pos, Len: 400, Start: start, End: end, RunMax: runMax}
}

// FuzzDecodeFlushTable: an accepted table (b is the whole object) re-encodes
// to exactly b's last bytes, and its rows are sorted, unique, valid refs of
// the table's writer and seq lying before the table.
func FuzzDecodeFlushTable(f *testing.F) {
	w := "0123456789abcdef"
	t1 := &FlushTable{Writer: w, Seq: 7, TablePos: 5000, Rows: []FlushRow{
		{TopicID: TopicID{2}, Partition: 0, Epoch: 1, Ref: fuzzRef(w, 7, 100, 0, 9, 1700000000000)},
		{TopicID: TopicID{1}, Partition: 3, Epoch: 4, Ref: fuzzRef(w, 7, 1000, 50, 50, math.MinInt64)},
		{TopicID: TopicID{2}, Partition: 1, Epoch: math.MaxInt64 - 1, Ref: fuzzRef(w, 7, 4600, 10, math.MaxInt64-1, -1)},
	}}
	for _, t := range []*FlushTable{t1, {Writer: w, Seq: 0, TablePos: 0}} {
		b, err := AppendFlushTable(make([]byte, t.TablePos), t)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkFlushTable(t, b)
		// With the checksum made right, so that mutations reach the checks
		// behind it.
		if len(b) >= flushTrailerSize {
			le := binary.LittleEndian
			if n := FlushTableLen(int(le.Uint32(b[len(b)-32:]))); n <= int64(len(b)) {
				c := bytes.Clone(b)
				le.PutUint32(c[len(c)-8:], crc32c(c[int64(len(c))-n:len(c)-8]))
				checkFlushTable(t, c)
			}
		}
	})
}

func checkFlushTable(t *testing.T, b []byte) {
	t.Helper()
	tb, err := DecodeFlushTable(b, int64(len(b)))
	checkErr(t, err)
	if err != nil {
		return
	}
	n := FlushTableLen(len(tb.Rows))
	if tb.TablePos+n != int64(len(b)) {
		t.Fatalf("table at %d with %d rows in %d bytes", tb.TablePos, len(tb.Rows), len(b))
	}
	for i := range tb.Rows {
		r := &tb.Rows[i]
		if err := r.Ref.validate(); err != nil || r.Ref.Writer != tb.Writer || r.Ref.Seq != tb.Seq ||
			r.Ref.Pos+r.Ref.Len > tb.TablePos || r.Partition < 0 || r.Epoch < 1 || r.Epoch == math.MaxInt64 ||
			i > 0 && !rowLess(&tb.Rows[i-1], r.TopicID, r.Partition) {
			t.Fatalf("accepted an invalid row %d: %+v (%v)", i, r, err)
		}
		if got := tb.Row(r.TopicID, r.Partition); got != r {
			t.Fatalf("Row does not find row %d", i)
		}
	}
	re, err := AppendFlushTable(nil, tb)
	if err != nil || !bytes.Equal(re, b[int64(len(b))-n:]) {
		t.Fatalf("re-encoding differs: %v", err)
	}
}

// FuzzDecodeTailIndex: a header and sections that decode re-encode
// (EncodeTailIndex) to exactly the bytes they came from; every section's
// refs are valid.
func FuzzDecodeTailIndex(f *testing.F) {
	w, w2 := "0123456789abcdef", "fedcba9876543210"
	ti := &TailIndex{Writer: w, Seq: 41, Partitions: []TailPartition{
		{TopicID: TopicID{3}, Partition: 2, Epoch: 2, Refs: TailRefs{Newest: fuzzRef(w, 41, 900, 40, 49, 5),
			Sparse: []EntryRef{fuzzRef(w2, 3, 0, 0, 9, 1), fuzzRef(w, 30, 10, 20, 29, 3)}}},
		{TopicID: TopicID{1}, Partition: 0, Epoch: 1, Refs: TailRefs{Newest: fuzzRef(w, 40, 0, 0, 0, math.MinInt64)}},
	}}
	for _, t := range []*TailIndex{ti, {Writer: w2, Seq: 0}} {
		b, err := EncodeTailIndex(t)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkTailIndex(t, b)
		// With the checksums made right.
		n, err := TailHeaderLen(b)
		if err != nil || n > int64(len(b)) {
			return
		}
		le := binary.LittleEndian
		c := bytes.Clone(b)
		for i := int64(0); tailHeaderSize+(i+1)*tailRowSize <= n-4; i++ {
			row := c[tailHeaderSize+i*tailRowSize:]
			pos, l := le.Uint64(row[28:]), le.Uint64(row[36:])
			if l >= 4 && pos <= uint64(len(c)) && l <= uint64(len(c))-pos {
				sec := c[pos : pos+l]
				le.PutUint32(sec[l-4:], crc32c(sec[:l-4]))
			}
		}
		le.PutUint32(c[n-4:], crc32c(c[:n-4]))
		checkTailIndex(t, c)
	})
}

func checkTailIndex(t *testing.T, b []byte) {
	t.Helper()
	if _, err := TailHeaderLen(b); err != nil {
		checkErr(t, err)
		return
	}
	h, err := DecodeTailHeader(b)
	checkErr(t, err)
	if err != nil {
		return
	}
	idx := &TailIndex{Writer: h.Writer, Seq: h.Seq}
	end, _ := TailHeaderLen(b)
	for _, r := range h.Rows {
		if r.Pos+r.Len > int64(len(b)) {
			return // a section beyond the input
		}
		refs, err := DecodeTailSection(b[r.Pos : r.Pos+r.Len])
		checkErr(t, err)
		if err != nil {
			return
		}
		if err := refs.validate(); err != nil {
			t.Fatalf("accepted invalid refs: %v", err)
		}
		idx.Partitions = append(idx.Partitions, TailPartition{TopicID: r.TopicID, Partition: r.Partition, Epoch: r.Epoch, Refs: refs})
		end = r.Pos + r.Len
	}
	re, err := EncodeTailIndex(idx)
	if err != nil || !bytes.Equal(re, b[:end]) {
		t.Fatalf("re-encoding differs: %v", err)
	}
}

// FuzzDecodeClaim: an accepted claim is valid and re-encodes to a claim
// that decodes to the same value (JSON: the bytes need not be canonical).
func FuzzDecodeClaim(f *testing.F) {
	w := "0123456789abcdef"
	for _, c := range []*Claim{
		{FormatVersion: 3, Epoch: 2, Writer: w, Start: 1200, CreatedMs: 1700000000000,
			Tail: &TailRefs{Newest: fuzzRef(w, 41, 1234, 1190, 1199, 1700000000000), Sparse: []EntryRef{fuzzRef(w, 1, 0, 0, 9, 5)}}},
		{FormatVersion: 3, Epoch: 1, Writer: w, Start: 0},
	} {
		f.Add(EncodeClaim(c))
	}
	f.Add([]byte(`{"format_version":3,"epoch":1,"writer":"0123456789abcdef","start":5,"created_ms":0,"tail":{"newest":{"writer":"0123456789abcdef","seq":0,"pos":0,"len":200,"start":0,"end":4,"run_max":0},"sparse":null}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeClaim(b)
		checkErr(t, err)
		if err != nil {
			return
		}
		if err := c.validate(); err != nil {
			t.Fatalf("accepted an invalid claim: %v", err)
		}
		again, err := DecodeClaim(EncodeClaim(c))
		if err != nil || !reflect.DeepEqual(again, c) {
			t.Fatalf("re-encoding does not round-trip: %v\n%+v\n%+v", err, c, again)
		}
	})
}

// FuzzDecodeEntry: an accepted flush entry re-encodes (AppendEntry) to
// exactly the input, and its commit is valid.
func FuzzDecodeEntry(f *testing.F) {
	_, info := buildSegment(f, 0, 12, adversarial(0), GapCompacted, DefaultSegmentOptions())
	w := "0123456789abcdef"
	id := TopicID{0xab, 1}
	c, err := Next(nil, "orders.v1", id, 3, FlushKey(w, 5), info, w, 1700000000000)
	if err != nil {
		f.Fatal(err)
	}
	c.SegmentOffset = 4096
	for _, prev := range []*EntryRef{nil, {Writer: "fedcba9876543210", Seq: 4, Pos: 77, Len: 350}} {
		b, err := AppendEntry(nil, prev, c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkEntry(t, b)
		if len(b) >= entryPrefixSize+4 { // with the commit's checksum made right
			c := bytes.Clone(b)
			binary.LittleEndian.PutUint32(c[len(c)-4:], crc32c(c[entryPrefixSize:len(c)-4]))
			checkEntry(t, c)
		}
	})
}

func checkEntry(t *testing.T, b []byte) {
	t.Helper()
	prev, c, err := DecodeEntry(b)
	checkErr(t, err)
	if err != nil {
		return
	}
	if err := c.validate(); err != nil {
		t.Fatalf("accepted an invalid commit: %v", err)
	}
	re, err := AppendEntry(nil, prev, c)
	if err != nil || !bytes.Equal(re, b) {
		t.Fatalf("re-encoding differs: %v", err)
	}
}
