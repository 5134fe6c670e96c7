package archive

import (
	"bytes"
	"encoding/binary"
	"strconv"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The size classes: a class holds what it is asked for, at most a quarter
// more (beyond the smallest class), and a buffer goes back into a class no
// larger than its capacity.
func TestFetchPoolClasses(t *testing.T) {
	const minShift, classes = fetchBytesMinShift, fetchBytesClasses
	largest := classSize(classes-1, minShift)
	for c := 1; c < classes; c++ {
		if classSize(c, minShift) <= classSize(c-1, minShift) {
			t.Fatalf("class %d (%d) not above class %d (%d)", c, classSize(c, minShift), c-1, classSize(c-1, minShift))
		}
	}
	sizes := []int{0, 1, 4095, 4096, 4097, 5119, 5120, 5121, 6 << 10, 7<<10 + 1, 8<<10 - 1, 8 << 10, 1 << 20, 1<<20 + 1, 1_300_000, largest - 1, largest}
	for n := 1; n < 1<<26; n = n*3/2 + 1 {
		sizes = append(sizes, n)
	}
	for _, n := range sizes {
		c := ceilClass(n, minShift, classes)
		if n > largest {
			if c != -1 {
				t.Errorf("ceilClass(%d) = %d beyond the largest class %d", n, c, largest)
			}
			continue
		}
		if c < 0 {
			t.Fatalf("ceilClass(%d) = -1", n)
		}
		sz := classSize(c, minShift)
		if sz < n || n > 1<<minShift && 4*sz > 5*n {
			t.Errorf("ceilClass(%d): class %d of %d bytes", n, c, sz)
		}
		if c > 0 && classSize(c-1, minShift) >= n {
			t.Errorf("ceilClass(%d) = %d, but class %d (%d bytes) holds it", n, c, c-1, classSize(c-1, minShift))
		}
		f := floorClass(n, minShift, classes)
		switch {
		case n < 1<<minShift:
			if f != -1 {
				t.Errorf("floorClass(%d) = %d below the smallest class", n, f)
			}
		case f < 0 || classSize(f, minShift) > n || f+1 < classes && classSize(f+1, minShift) <= n:
			t.Errorf("floorClass(%d) = %d", n, f)
		}
	}
	if f := floorClass(1<<(fetchBytesMaxShift+1), minShift, classes); f != -1 {
		t.Errorf("floorClass past the largest doubling = %d", f)
	}
}

// A buffer taken back is handed out again for a batch its class holds,
// with room for the batch, and never for a batch larger than it.
func TestFetchPoolReuse(t *testing.T) {
	p := newFetchPool()
	src := s2.EncodeSnappy(nil, bytes.Repeat([]byte("kbackup "), 40_000)) // 320,000 bytes decoded
	seen := map[*byte]bool{}
	for i := 0; i < 50; i++ { // the race detector's sync.Pool drops some puts
		b := p.GetDecompressBytes(src, kgo.CodecSnappy)
		if len(b) != 0 || cap(b) < 320_000 {
			t.Fatalf("got len %d cap %d for 320,000 bytes", len(b), cap(b))
		}
		b = b[:cap(b)]
		seen[&b[0]] = true
		p.PutDecompressBytes(b)
	}
	if len(seen) == 50 || p.bytes.reused.Load() == 0 || p.bytes.taken.Load() != 50 {
		t.Fatalf("50 gets and puts: %d buffers, %d reused, %d put", len(seen), p.bytes.reused.Load(), p.bytes.taken.Load())
	}
	if b := p.GetDecompressBytes(s2.EncodeSnappy(nil, make([]byte, 600_000)), kgo.CodecSnappy); cap(b) < 600_000 {
		t.Fatalf("a larger batch got a buffer of %d bytes", cap(b))
	}
	p.PutDecompressBytes(make([]byte, 100)) // below the smallest class: dropped
	p.PutDecompressBytes(make([]byte, 0, 1<<(fetchBytesMaxShift+1)))
	if b := p.GetDecompressBytes(make([]byte, 1<<fetchBytesMaxShift), kgo.CodecGzip); b != nil {
		t.Fatalf("a batch guessed beyond the largest class got %d bytes", cap(b))
	}

	for i := 0; i < 50; i++ {
		rs := p.GetRecords(300)
		if len(rs) != 0 || cap(rs) < 300 {
			t.Fatalf("GetRecords(300): len %d cap %d", len(rs), cap(rs))
		}
		p.PutRecords(rs[:cap(rs)])
	}
	if p.recs.reused.Load() == 0 {
		t.Fatal("no record slice reused")
	}
	if rs := p.GetRecords(1 << 20); rs != nil {
		t.Fatalf("GetRecords beyond the largest class: cap %d", cap(rs))
	}
}

// The decompressed size is read from snappy's and zstd's frames and
// guessed for the rest; a malformed frame is guessed, never a panic.
func TestDecompressedSize(t *testing.T) {
	raw := bytes.Repeat([]byte("0123456789abcdef"), 10_000) // 160,000 bytes
	snappy := s2.EncodeSnappy(nil, raw)
	xerial := append([]byte{}, xerialMagic...)
	xerial = append(xerial, 0, 0, 0, 1, 0, 0, 0, 1) // version, compatible version
	for _, chunk := range [][]byte{raw[:100_000], raw[100_000:]} {
		enc := s2.EncodeSnappy(nil, chunk)
		xerial = binary.BigEndian.AppendUint32(xerial, uint32(len(enc)))
		xerial = append(xerial, enc...)
	}
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	zst := enc.EncodeAll(raw, nil)
	for _, tc := range []struct {
		name  string
		src   []byte
		codec kgo.CompressionCodecType
		want  int
	}{
		{"snappy", snappy, kgo.CodecSnappy, len(raw)},
		{"xerial", xerial, kgo.CodecSnappy, len(raw)},
		{"xerial truncated", xerial[:len(xerial)-10], kgo.CodecSnappy, (len(xerial) - 10) * fetchGuessRatio},
		{"snappy garbage", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, kgo.CodecSnappy, 6 * fetchGuessRatio},
		{"zstd", zst, kgo.CodecZstd, len(raw)},
		{"zstd garbage", []byte("not a zstd frame"), kgo.CodecZstd, 16 * fetchGuessRatio},
		{"gzip", make([]byte, 1000), kgo.CodecGzip, 1000 * fetchGuessRatio},
		{"lz4", make([]byte, 1000), kgo.CodecLz4, 1000 * fetchGuessRatio},
	} {
		if got := decompressedSize(tc.src, tc.codec); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}

// The archiver recycles what it fetched: after a run over many compressed
// batches its pool handed buffers and record slices out again, and the
// archive holds exactly what a read_committed consumer reads (a record
// read after its buffer went back would not be).
func TestArchiveRecyclesFetches(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "pooled", 2, nil)
	for _, codec := range []kgo.CompressionCodec{kgo.SnappyCompression(), kgo.ZstdCompression(), kgo.NoCompression()} {
		cl := newClient(t, c, kgo.ProducerBatchCompression(codec), kgo.ProducerLinger(0))
		for i := 0; i < 40; i++ {
			var recs []*kgo.Record
			for j := 0; j < 100; j++ {
				n := strconv.Itoa(i*100 + j)
				recs = append(recs, &kgo.Record{Topic: "pooled", Partition: int32(j % 2), Key: []byte("k" + n),
					Value: bytes.Repeat([]byte(n), 50), Headers: []kgo.RecordHeader{{Key: "h" + n, Value: []byte(n)}},
					Timestamp: time.UnixMilli(1_700_000_000_000 + int64(i*100+j))})
			}
			produce(t, cl, recs...) // one batch per partition and call
		}
	}
	st := newStore(t)
	a, err := New(onceOptions(t, c, st, func(o *Options) {
		o.KafkaOpts = append(o.KafkaOpts, kgo.FetchMaxPartitionBytes(4<<10))
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	p := a.pool
	t.Logf("decompression buffers: %d reused, %d taken back; record slices: %d reused, %d taken back",
		p.bytes.reused.Load(), p.bytes.taken.Load(), p.recs.reused.Load(), p.recs.taken.Load())
	if p.bytes.taken.Load() == 0 || p.bytes.reused.Load() == 0 || p.recs.taken.Load() == 0 || p.recs.reused.Load() == 0 {
		t.Fatal("the archiver did not recycle its fetches")
	}
	got, _ := readArchive(t, st, "pooled")
	sameRecords(t, "pooled", readCommitted(t, c, "pooled"), got)
}

// FuzzDecompressedSize: decompressedSize reads bytes a broker sent; on any
// input and codec it returns a size at least 0 without panicking, and for
// a snappy block that decodes it returns the decoded length.
func FuzzDecompressedSize(f *testing.F) {
	raw := bytes.Repeat([]byte("kbackup fuzz "), 100)
	xerial := append(append([]byte{}, xerialMagic...), 0, 0, 0, 1, 0, 0, 0, 1)
	enc := s2.EncodeSnappy(nil, raw)
	xerial = append(binary.BigEndian.AppendUint32(xerial, uint32(len(enc))), enc...)
	zenc, err := zstd.NewWriter(nil)
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range [][]byte{nil, {0}, enc, xerial, xerial[:20], zenc.EncodeAll(raw, nil), []byte("\x82SNAPPY\x00 truncated chunk")} {
		for codec := range 5 {
			f.Add(seed, uint8(codec))
		}
	}
	f.Fuzz(func(t *testing.T, src []byte, codec uint8) {
		c := kgo.CompressionCodecType(codec % 5)
		n := decompressedSize(src, c)
		if n < 0 {
			t.Fatalf("decompressedSize = %d", n)
		}
		if c == kgo.CodecSnappy && !bytes.HasPrefix(src, xerialMagic) {
			if dec, err := s2.Decode(nil, src); err == nil && n != len(dec) {
				t.Fatalf("snappy block of %d decoded bytes: size %d", len(dec), n)
			}
		}
	})
}
