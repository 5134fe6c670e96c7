package target

import (
	"encoding/binary"
	"hash/crc32"

	"github.com/klauspost/compress/s2"
	"github.com/twmb/franz-go/pkg/kgo"
)

// MaxBatchBytes is the most bytes a Batch holds before Full reports it
// full: a batch of at most this many record bytes, plus its 61-byte header,
// fits Kafka's default max.message.bytes (1000012), also uncompressed.
// (franz-go's default producer batch limit is the same.)
const MaxBatchBytes = 1000012 - batchHeaderLen

// batchHeaderLen is the length of a record batch's header (v2), up to and
// including its record count.
const batchHeaderLen = 61

// BatchCodec is the compression of an encoded batch.
type BatchCodec int8

// The codecs a Batch encodes with (the batch attribute's values).
const (
	BatchNone   BatchCodec = 0
	BatchSnappy BatchCodec = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Batch builds one Kafka record batch (magic 2) of one partition from
// records appended in order: keys, values and headers byte for byte (null
// distinct from empty), timestamps as given, CreateTime. It is what a
// restore's own produce path sends (Writer), one produce request per
// batch; a Batch is reused with Reset.
type Batch struct {
	recs  []byte // the records, encoded and uncompressed
	n     int32
	first int64 // the first record's timestamp (ms): the batch's base
	max   int64 // the largest timestamp
	out   []byte
	scr   []byte // the compressed records
}

// Reset empties the batch, keeping its buffers.
func (b *Batch) Reset() {
	b.recs, b.out, b.n = b.recs[:0], b.out[:0], 0
}

// Records is the number of records appended.
func (b *Batch) Records() int { return int(b.n) }

// Bytes is the length of the records encoded so far, uncompressed.
func (b *Batch) Bytes() int { return len(b.recs) }

// Fits reports whether r can be appended without the batch growing past
// MaxBatchBytes; an empty batch takes any record.
func (b *Batch) Fits(r *kgo.Record) bool {
	return b.n == 0 || len(b.recs)+RecordEncodedLen(r, b.first, b.n) <= MaxBatchBytes
}

// Append adds r (its Key, Value, Headers and Timestamp) as the batch's
// next record. The bytes are copied: r may be reused once it returns.
func (b *Batch) Append(r *kgo.Record) {
	ts := r.Timestamp.UnixMilli()
	if b.n == 0 {
		b.first, b.max = ts, ts
	}
	b.max = max(b.max, ts)
	body := bodyLen(r, ts-b.first, b.n)
	dst := binary.AppendVarint(b.recs, int64(body))
	dst = append(dst, 0) // record attributes: none are defined
	dst = binary.AppendVarint(dst, ts-b.first)
	dst = binary.AppendVarint(dst, int64(b.n))
	dst = appendNullable(dst, r.Key)
	dst = appendNullable(dst, r.Value)
	dst = binary.AppendVarint(dst, int64(len(r.Headers)))
	for _, h := range r.Headers {
		dst = binary.AppendVarint(dst, int64(len(h.Key)))
		dst = append(dst, h.Key...)
		dst = appendNullable(dst, h.Value)
	}
	b.recs = dst
	b.n++
}

// RecordEncodedLen is the length r takes in a batch whose base timestamp
// is base, as its record number i.
func RecordEncodedLen(r *kgo.Record, base int64, i int32) int {
	body := bodyLen(r, r.Timestamp.UnixMilli()-base, i)
	return varintLen(int64(body)) + body
}

// bodyLen is a record's length after its length prefix.
func bodyLen(r *kgo.Record, tsDelta int64, i int32) int {
	n := 1 + varintLen(tsDelta) + varintLen(int64(i)) + nullableLen(r.Key) + nullableLen(r.Value) + varintLen(int64(len(r.Headers)))
	for _, h := range r.Headers {
		n += varintLen(int64(len(h.Key))) + len(h.Key) + nullableLen(h.Value)
	}
	return n
}

func varintLen(v int64) int {
	u := uint64(v<<1) ^ uint64(v>>63) // zigzag
	n := 1
	for u >= 0x80 {
		u >>= 7
		n++
	}
	return n
}

func nullableLen(v []byte) int {
	if v == nil {
		return 1
	}
	return varintLen(int64(len(v))) + len(v)
}

func appendNullable(dst, v []byte) []byte {
	if v == nil {
		return binary.AppendVarint(dst, -1)
	}
	dst = binary.AppendVarint(dst, int64(len(v)))
	return append(dst, v...)
}

// Encode returns the batch as sent: base offset 0, partition leader epoch
// -1, the producer's id, epoch and the first record's sequence number,
// records compressed with codec (uncompressed when that is not smaller).
// The slice is the batch's own, valid until Reset; Encode on an empty batch
// returns nil.
func (b *Batch) Encode(producerID int64, epoch int16, seq int32, codec BatchCodec) []byte {
	if b.n == 0 {
		return nil
	}
	recs := b.recs
	if codec == BatchSnappy {
		if need := s2.MaxEncodedLen(len(recs)); cap(b.scr) < need {
			b.scr = make([]byte, need)
		}
		if c := s2.EncodeSnappy(b.scr[:cap(b.scr)], recs); len(c) < len(recs) {
			recs = c
		} else {
			codec = BatchNone
		}
	} else {
		codec = BatchNone
	}
	dst := b.out[:0]
	dst = binary.BigEndian.AppendUint64(dst, 0)                                   // base offset
	dst = binary.BigEndian.AppendUint32(dst, uint32(batchHeaderLen-12+len(recs))) // length after this field
	dst = binary.BigEndian.AppendUint32(dst, 0xffffffff)                          // partition leader epoch
	dst = append(dst, 2)                                                          // magic
	dst = binary.BigEndian.AppendUint32(dst, 0)                                   // CRC, below
	dst = binary.BigEndian.AppendUint16(dst, uint16(codec))                       // attributes: codec, CreateTime
	dst = binary.BigEndian.AppendUint32(dst, uint32(b.n-1))                       // last offset delta
	dst = binary.BigEndian.AppendUint64(dst, uint64(b.first))
	dst = binary.BigEndian.AppendUint64(dst, uint64(b.max))
	dst = binary.BigEndian.AppendUint64(dst, uint64(producerID))
	dst = binary.BigEndian.AppendUint16(dst, uint16(epoch))
	dst = binary.BigEndian.AppendUint32(dst, uint32(seq))
	dst = binary.BigEndian.AppendUint32(dst, uint32(b.n))
	dst = append(dst, recs...)
	binary.BigEndian.PutUint32(dst[17:], crc32.Checksum(dst[21:], castagnoli))
	b.out = dst
	return dst
}
