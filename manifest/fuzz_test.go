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
		CatalogKey(CatalogTopics, 1700000000000), CatalogKey(CatalogGroups, 0), "topics/x", "catalog/other/1.json"} {
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
