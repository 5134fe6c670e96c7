package manifest

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/kbackup/kbackup/store/filestore"
)

// benchRecords is a realistic batch: JSON-ish values of ~300 bytes with
// keys and two headers, 64 MiB... scaled down to 8 MiB of payload.
func benchRecords() []Record {
	r := rand.New(rand.NewPCG(3, 4))
	var recs []Record
	size := 0
	for i := 0; size < 8<<20; i++ {
		v := []byte(`{"order_id":` + strconv.Itoa(i) + `,"customer":"c-` + strconv.Itoa(r.IntN(10000)) +
			`","amount":` + strconv.Itoa(r.IntN(100000)) + `,"currency":"EUR","items":[{"sku":"sku-` + strconv.Itoa(r.IntN(500)) +
			`","qty":` + strconv.Itoa(1+r.IntN(5)) + `}],"note":"` + strconv.FormatUint(r.Uint64(), 36) + strconv.FormatUint(r.Uint64(), 36) + `"}`)
		rec := Record{Offset: int64(i), Timestamp: 1700000000000 + int64(i), Key: []byte("c-" + strconv.Itoa(r.IntN(10000))), Value: v,
			Headers:    []Header{{Key: "trace-id", Value: []byte(strconv.FormatUint(r.Uint64(), 16))}, {Key: "source", Value: []byte("checkout")}},
			ProducerID: 17, ProducerEpoch: 0, LeaderEpoch: 3}
		size += len(v) + len(rec.Key) + 40
		recs = append(recs, rec)
	}
	return recs
}

func payloadSize(recs []Record) int64 { return int64(len(AppendRecords(nil, recs))) }

// BenchmarkSegmentEncode: records -> finished segment (zstd blocks, index,
// footer, checksums). MB/s of uncompressed record payload.
func BenchmarkSegmentEncode(b *testing.B) {
	for _, codec := range []Codec{CodecZstd, CodecS2} {
		b.Run("codec="+codec.String(), func(b *testing.B) { benchSegmentEncode(b, codec) })
	}
}

func benchSegmentEncode(b *testing.B, codec Codec) {
	recs := benchRecords()
	b.SetBytes(payloadSize(recs))
	b.ReportAllocs()
	for b.Loop() {
		w := NewSegmentWriter(0, SegmentOptions{Codec: codec, BlockSize: 1 << 20})
		for i := range recs {
			if err := w.Append(&recs[i]); err != nil {
				b.Fatal(err)
			}
		}
		w.Finish()
	}
}

// BenchmarkSegmentDecode: segment -> records (index, CRC, zstd, records).
func BenchmarkSegmentDecode(b *testing.B) {
	for _, codec := range []Codec{CodecZstd, CodecS2} {
		b.Run("codec="+codec.String(), func(b *testing.B) { benchSegmentDecode(b, codec) })
	}
}

func benchSegmentDecode(b *testing.B, codec Codec) {
	recs := benchRecords()
	w := NewSegmentWriter(0, SegmentOptions{Codec: codec, BlockSize: 1 << 20})
	for i := range recs {
		_ = w.Append(&recs[i])
	}
	seg, info := w.Finish()
	b.SetBytes(payloadSize(recs))
	b.ReportMetric(float64(payloadSize(recs))/float64(info.Size), "ratio")
	b.ReportAllocs()
	f, err := DecodeFooter(seg[len(seg)-FooterSize:])
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		// What a reader does: index, then every block (records are
		// consumed block by block, never accumulated).
		ix, err := DecodeIndex(seg[f.IndexPosition : f.IndexPosition+f.IndexLength])
		if err != nil {
			b.Fatal(err)
		}
		for _, bl := range ix.Blocks {
			if _, err := DecodeBlock(seg[bl.Position:bl.Position+bl.Length], bl); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkPlainZstdEncode is the baseline: zstd (same level, same 1 MiB
// chunks) over the same uncompressed payload bytes.
func BenchmarkPlainZstdEncode(b *testing.B) {
	payload := AppendRecords(nil, benchRecords())
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	dst := make([]byte, 0, 2<<20)
	for b.Loop() {
		for off := 0; off < len(payload); off += 1 << 20 {
			dst = enc.EncodeAll(payload[off:min(off+1<<20, len(payload))], dst[:0])
		}
	}
}

// BenchmarkPlainZstdDecode is the decode baseline.
func BenchmarkPlainZstdDecode(b *testing.B) {
	payload := AppendRecords(nil, benchRecords())
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	var chunks [][]byte
	for off := 0; off < len(payload); off += 1 << 20 {
		chunks = append(chunks, enc.EncodeAll(payload[off:min(off+1<<20, len(payload))], nil))
	}
	dec, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	dst := make([]byte, 0, 2<<20)
	for b.Loop() {
		for _, c := range chunks {
			var err error
			if dst, err = dec.DecodeAll(c, dst[:0]); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkCRC32CCombine: the segment checksum's combination of a block's
// CRC, once per block written (about 1 MiB).
func BenchmarkCRC32CCombine(b *testing.B) {
	for b.Loop() {
		crc32cCombine(0x12345678, 0x9abcdef0, 1<<20+137)
	}
}

// BenchmarkDecodeRecords: one uncompressed block payload (about 1 MiB)
// decoded into reused records and header lists, as scans do: the benchmark's
// JSON records with two headers, and 200-byte records without headers
// (the restore benchmarks' synthetic archive). MB/s of payload.
func BenchmarkDecodeRecords(b *testing.B) {
	all := benchRecords()
	plain := make([]Record, 0, 5000)
	for i := 0; len(plain) < cap(plain); i++ {
		plain = append(plain, Record{Offset: int64(i), Timestamp: 1700000000000 + int64(i), Key: []byte("key-" + strconv.Itoa(i%1000)),
			Value: make([]byte, 200), ProducerID: -1, ProducerEpoch: -1, LeaderEpoch: 0})
	}
	for _, c := range []struct {
		name string
		recs []Record
	}{{"json-2-headers", all[:1<<20/360]}, {"200B-no-headers", plain}} {
		b.Run(c.name, func(b *testing.B) {
			payload := AppendRecords(nil, c.recs)
			b.SetBytes(int64(len(payload)))
			var recs []Record
			var ha headerArena
			var err error
			for b.Loop() {
				if recs, err = decodeRecordsInto(recs, &ha, payload, 0, int64(len(c.recs)), true); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerify: Archive.Verify (every commit, segment, block and
// record checked) of one partition holding four 8 MiB segments of the
// benchmark's records, from a local directory (in the page cache after
// the first iteration). MB/s of record payload.
func BenchmarkVerify(b *testing.B) {
	for _, codec := range []Codec{CodecZstd, CodecNone} {
		b.Run("codec="+codec.String(), func(b *testing.B) {
			a, bytes, n := verifyArchive(b, codec, 4)
			b.SetBytes(bytes)
			b.ReportAllocs()
			for b.Loop() {
				verifyAll(b, a, n)
			}
		})
	}
}

// verifyArchive writes segs segments of benchRecords (8 MiB of payload
// each, 1 MiB blocks) to one partition of a new archive. It returns the
// archive, its payload bytes and its number of records.
func verifyArchive(tb testing.TB, codec Codec, segs int) (*Archive, int64, int64) {
	tb.Helper()
	ctx := context.Background()
	st, err := filestore.New(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	a, err := Init(ctx, st, "bench", 1)
	if err != nil {
		tb.Fatal(err)
	}
	id := TopicID{0xbe}
	if err := a.EnsureTopic(ctx, "orders", id, 1); err != nil {
		tb.Fatal(err)
	}
	p := a.Partition("orders", id, 0)
	recs := benchRecords()
	var head *Commit
	var bytes int64
	for s := 0; s < segs; s++ {
		start := int64(0)
		if head != nil {
			start = head.End + 1
		}
		w := NewSegmentWriter(start, SegmentOptions{Codec: codec, BlockSize: 1 << 20})
		for i := range recs {
			r := recs[i]
			r.Offset += start
			if err := w.Append(&r); err != nil {
				tb.Fatal(err)
			}
		}
		seg, info := w.Finish()
		if head, err = p.Append(ctx, head, seg, info, "bench", 1); err != nil {
			tb.Fatal(err)
		}
		bytes += payloadSize(recs)
	}
	return a, bytes, int64(segs * len(recs))
}

// verifyAll verifies a, which must hold n records and no problem.
func verifyAll(tb testing.TB, a *Archive, n int64) {
	tb.Helper()
	res, err := a.Verify(context.Background(), VerifyOptions{}, func(f Finding) {
		if f.Severity == SeverityProblem {
			tb.Fatalf("%+v", f)
		}
	})
	if err != nil {
		tb.Fatal(err)
	}
	if res.Records != n {
		tb.Fatalf("verified %d records, want %d", res.Records, n)
	}
}
