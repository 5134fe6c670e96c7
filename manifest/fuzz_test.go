package manifest

import (
	"bytes"
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
		StartKey(pp, 1), StartKey(pp, math.MaxInt64-1), pp + "start/x"} {
		f.Add(k)
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
