package target

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbackup/kbackup/manifest"
)

// decodeBatch parses an encoded batch as a broker would, checking its
// header fields, CRC and record lengths, and returns its records.
func decodeBatch(t testing.TB, enc []byte, pid int64, epoch int16, seq int32) []*kgo.Record {
	t.Helper()
	var rb kmsg.RecordBatch
	if err := rb.ReadFrom(enc); err != nil {
		t.Fatalf("read batch: %v", err)
	}
	if int(rb.Length) != len(enc)-12 {
		t.Fatalf("batch length %d, want %d", rb.Length, len(enc)-12)
	}
	if rb.Magic != 2 || rb.PartitionLeaderEpoch != -1 || rb.FirstOffset != 0 {
		t.Fatalf("batch header: magic %d, leader epoch %d, first offset %d", rb.Magic, rb.PartitionLeaderEpoch, rb.FirstOffset)
	}
	if want := crc32.Checksum(enc[21:], castagnoli); uint32(rb.CRC) != want {
		t.Fatalf("batch CRC %08x, want %08x", uint32(rb.CRC), want)
	}
	if rb.ProducerID != pid || rb.ProducerEpoch != epoch || rb.FirstSequence != seq {
		t.Fatalf("producer %d/%d seq %d, want %d/%d seq %d", rb.ProducerID, rb.ProducerEpoch, rb.FirstSequence, pid, epoch, seq)
	}
	raw := rb.Records
	switch rb.Attributes & 7 {
	case 0:
	case 2:
		var err error
		if raw, err = s2.Decode(nil, raw); err != nil {
			t.Fatalf("snappy: %v", err)
		}
	default:
		t.Fatalf("batch codec %d", rb.Attributes&7)
	}
	if rb.Attributes&^7 != 0 {
		t.Fatalf("batch attributes %#x: only the codec may be set", rb.Attributes)
	}
	var out []*kgo.Record
	maxTs := int64(math.MinInt64)
	for i := int32(0); i < rb.NumRecords; i++ {
		var kr kmsg.Record
		if err := kr.ReadFrom(raw); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		l, n := binary.Varint(raw)
		if n <= 0 || int64(kr.Length) != l || int(l)+n > len(raw) {
			t.Fatalf("record %d: bad length", i)
		}
		// The record's own encoding must be exactly its length: re-encode
		// it and compare.
		if got := kr.AppendTo(nil); !bytes.Equal(got, raw[:int(l)+n]) {
			t.Fatalf("record %d: encoding is not canonical", i)
		}
		raw = raw[int(l)+n:]
		if kr.OffsetDelta != i || kr.Attributes != 0 {
			t.Fatalf("record %d: offset delta %d, attributes %d", i, kr.OffsetDelta, kr.Attributes)
		}
		ts := rb.FirstTimestamp + kr.TimestampDelta64
		maxTs = max(maxTs, ts)
		r := &kgo.Record{Key: kr.Key, Value: kr.Value, Timestamp: time.UnixMilli(ts)}
		for _, h := range kr.Headers {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		out = append(out, r)
	}
	if len(raw) != 0 {
		t.Fatalf("%d bytes after the last record", len(raw))
	}
	if rb.LastOffsetDelta != rb.NumRecords-1 || rb.MaxTimestamp != maxTs {
		t.Fatalf("last offset delta %d of %d records, max timestamp %d, want %d", rb.LastOffsetDelta, rb.NumRecords, rb.MaxTimestamp, maxTs)
	}
	return out
}

// sameRecord compares what a batch carries: key, value (null distinct from
// empty), headers in order, timestamp.
func sameRecord(a, b *kgo.Record) error {
	eq := func(x, y []byte) bool { return (x == nil) == (y == nil) && bytes.Equal(x, y) }
	if !eq(a.Key, b.Key) || !eq(a.Value, b.Value) || a.Timestamp.UnixMilli() != b.Timestamp.UnixMilli() || len(a.Headers) != len(b.Headers) {
		return fmt.Errorf("record %q/%q@%d, want %q/%q@%d (%d headers, want %d)", a.Key, a.Value, a.Timestamp.UnixMilli(), b.Key, b.Value, b.Timestamp.UnixMilli(), len(a.Headers), len(b.Headers))
	}
	for i := range a.Headers {
		if a.Headers[i].Key != b.Headers[i].Key || !eq(a.Headers[i].Value, b.Headers[i].Value) {
			return fmt.Errorf("header %d: %q=%q, want %q=%q", i, a.Headers[i].Key, a.Headers[i].Value, b.Headers[i].Key, b.Headers[i].Value)
		}
	}
	return nil
}

func TestBatchRoundTrip(t *testing.T) {
	recs := []*kgo.Record{
		{Key: nil, Value: nil, Timestamp: time.UnixMilli(1700000000000)},
		{Key: []byte{}, Value: []byte{}, Timestamp: time.UnixMilli(1699999999000)}, // earlier: negative delta
		{Key: []byte("k"), Value: bytes.Repeat([]byte("v"), 300), Timestamp: time.UnixMilli(-5),
			Headers: []kgo.RecordHeader{{Key: "a", Value: nil}, {Key: "a", Value: []byte{}}, {Key: "", Value: []byte("x")}}},
		{Key: []byte("k2"), Value: []byte("v2"), Timestamp: time.UnixMilli(math.MaxInt64 / 1000000)},
	}
	for _, codec := range []BatchCodec{BatchNone, BatchSnappy} {
		var b Batch
		for round := 0; round < 2; round++ { // the second round reuses the buffers
			b.Reset()
			size := 0
			for i, r := range recs {
				if !b.Fits(r) {
					t.Fatalf("record %d does not fit", i)
				}
				size += RecordEncodedLen(r, recs[0].Timestamp.UnixMilli(), int32(i))
				b.Append(r)
			}
			if b.Records() != len(recs) || b.Bytes() != size {
				t.Fatalf("%d records of %d bytes, want %d of %d", b.Records(), b.Bytes(), len(recs), size)
			}
			got := decodeBatch(t, b.Encode(7, 3, 11, codec), 7, 3, 11)
			for i := range recs {
				if err := sameRecord(got[i], recs[i]); err != nil {
					t.Fatalf("codec %d record %d: %v", codec, i, err)
				}
			}
		}
	}
	var b Batch
	if b.Encode(1, 0, 0, BatchSnappy) != nil {
		t.Fatal("an empty batch encodes to bytes")
	}
}

// archivedOf is r as the archive holds it.
func archivedOf(r *kgo.Record) *manifest.Record {
	a := &manifest.Record{Key: r.Key, Value: r.Value, Timestamp: r.Timestamp.UnixMilli()}
	for _, h := range r.Headers {
		a.Headers = append(a.Headers, manifest.Header{Key: h.Key, Value: h.Value})
	}
	return a
}

// checkSameBatch: the records appended as franz-go records and as
// archived records encode to the same bytes, fit alike, and LastRecord
// gives back the last one.
func checkSameBatch(t *testing.T, recs []*kgo.Record) {
	t.Helper()
	var a, b Batch
	for i, r := range recs {
		if a.Fits(r) != b.FitsArchived(archivedOf(r)) {
			t.Fatalf("record %d: Fits and FitsArchived differ", i)
		}
		a.Append(r)
		b.AppendArchived(archivedOf(r))
		if err := sameRecord(b.LastRecord(), r); err != nil {
			t.Fatalf("LastRecord after record %d: %v", i, err)
		}
	}
	if !bytes.Equal(a.Encode(1, 2, 3, BatchSnappy), b.Encode(1, 2, 3, BatchSnappy)) {
		t.Fatal("Append and AppendArchived encode differently")
	}
}

func TestBatchArchived(t *testing.T) {
	checkSameBatch(t, []*kgo.Record{
		{Timestamp: time.UnixMilli(5)},
		{Key: []byte{}, Value: []byte("v"), Timestamp: time.UnixMilli(-3), Headers: []kgo.RecordHeader{{Key: "h"}, {Key: "h", Value: []byte{}}}},
	})
	var b Batch
	if b.LastRecord() != nil {
		t.Fatal("an empty batch has a last record")
	}
}

// TestBatchCompresses: snappy is used when it saves bytes, and not when it
// does not (incompressible records go uncompressed).
func TestBatchCompresses(t *testing.T) {
	var b Batch
	for i := 0; i < 100; i++ {
		b.Append(&kgo.Record{Value: bytes.Repeat([]byte("abcd"), 100), Timestamp: time.UnixMilli(int64(i))})
	}
	enc := b.Encode(1, 0, 0, BatchSnappy)
	if enc[22]&7 != 2 || len(enc) > b.Bytes()/4 {
		t.Fatalf("attributes %#x, %d bytes for %d record bytes: not snappy", enc[22], len(enc), b.Bytes())
	}
	b.Reset()
	noise := make([]byte, 4096)
	rnd := uint64(1)
	for i := range noise {
		rnd = rnd*6364136223846793005 + 1442695040888963407
		noise[i] = byte(rnd >> 56)
	}
	b.Append(&kgo.Record{Value: noise, Timestamp: time.UnixMilli(1)})
	enc = b.Encode(1, 0, 0, BatchSnappy)
	if enc[22]&7 != 0 {
		t.Fatalf("attributes %#x: incompressible records were compressed", enc[22])
	}
	decodeBatch(t, enc, 1, 0, 0)
}

// TestBatchFits: a batch stays within MaxBatchBytes, and a record larger
// than that still goes into an empty batch (the broker then decides).
func TestBatchFits(t *testing.T) {
	var b Batch
	r := &kgo.Record{Value: make([]byte, 1000), Timestamp: time.UnixMilli(1)}
	for b.Fits(r) {
		b.Append(r)
	}
	if b.Bytes() > MaxBatchBytes || b.Bytes()+RecordEncodedLen(r, 1, int32(b.Records())) <= MaxBatchBytes {
		t.Fatalf("full at %d bytes, limit %d", b.Bytes(), MaxBatchBytes)
	}
	if n := len(b.Encode(1, 0, 0, BatchNone)); n > 1000012 {
		t.Fatalf("encoded %d bytes, more than max.message.bytes' default", n)
	}
	b.Reset()
	big := &kgo.Record{Value: make([]byte, 2<<20), Timestamp: time.UnixMilli(1)}
	if !b.Fits(big) {
		t.Fatal("an empty batch refuses a large record")
	}
}

// FuzzBatch: any sequence of records encodes to a batch that decodes to
// the same records, with either codec. The fuzz input is read as records:
// per record a control byte (null key, null value, header count), a
// timestamp and lengths.
func FuzzBatch(f *testing.F) {
	f.Add([]byte{0})
	f.Add([]byte{0xff, 1, 2, 3, 4, 5, 6, 7, 8, 3, 'a', 'b', 'c', 2, 'd', 'e'})
	f.Add(bytes.Repeat([]byte{0x13, 0x80, 0, 0, 0, 0, 0, 0, 1, 2, 'k', 'k', 4, 'v', 'v', 'v', 'v', 1, 'h', 0}, 20))
	f.Fuzz(func(t *testing.T, data []byte) {
		recs := fuzzRecords(data)
		if len(recs) == 0 {
			return
		}
		for _, codec := range []BatchCodec{BatchNone, BatchSnappy} {
			var b Batch
			for _, r := range recs {
				b.Append(r)
			}
			got := decodeBatch(t, b.Encode(5, 1, 9, codec), 5, 1, 9)
			if len(got) != len(recs) {
				t.Fatalf("%d records, want %d", len(got), len(recs))
			}
			for i := range recs {
				if err := sameRecord(got[i], recs[i]); err != nil {
					t.Fatalf("record %d: %v", i, err)
				}
			}
		}
		checkSameBatch(t, recs)
	})
}

func fuzzRecords(data []byte) []*kgo.Record {
	take := func(n int) []byte {
		n = min(n, len(data))
		v := data[:n:n]
		data = data[n:]
		return v
	}
	n8 := func(mask byte) int {
		if len(data) == 0 {
			return 0
		}
		return int(take(1)[0] & mask)
	}
	var recs []*kgo.Record
	for len(data) > 0 && len(recs) < 64 {
		ctl := take(1)[0]
		var ts int64
		if tb := take(8); len(tb) == 8 {
			ts = int64(binary.BigEndian.Uint64(tb)) >> 12 // within time.UnixMilli's range
		}
		r := &kgo.Record{Timestamp: time.UnixMilli(ts)}
		if ctl&1 == 0 {
			r.Key = append([]byte{}, take(n8(0xff))...)
		}
		if ctl&2 == 0 {
			r.Value = append([]byte{}, take(n8(0xff))...)
		}
		for h := 0; h < int(ctl>>4); h++ {
			hd := kgo.RecordHeader{Key: string(take(n8(15)))}
			if ctl&4 == 0 {
				hd.Value = append([]byte{}, take(n8(31))...)
			}
			r.Headers = append(r.Headers, hd)
		}
		recs = append(recs, r)
	}
	return recs
}
