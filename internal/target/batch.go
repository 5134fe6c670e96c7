package target

import (
	"encoding/binary"
	"hash/crc32"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbackup/kbackup/manifest"
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
	first int64         // the first record's timestamp (ms): the batch's base
	max   int64         // the largest timestamp
	last  int           // where the last record begins in recs
	enc   *batchEncoder // Encode's buffers
}

// Reset empties the batch, keeping its buffers.
func (b *Batch) Reset() {
	b.recs, b.n = b.recs[:0], 0
}

// Records is the number of records appended.
func (b *Batch) Records() int { return int(b.n) }

// Bytes is the length of the records encoded so far, uncompressed.
func (b *Batch) Bytes() int { return len(b.recs) }

// Fits reports whether r can be appended without the batch growing past
// MaxBatchBytes; an empty batch takes any record.
func (b *Batch) Fits(r *kgo.Record) bool {
	return b.n == 0 || len(b.recs)+recordLen(b, r.Key, r.Value, r.Timestamp.UnixMilli(), r.Headers) <= MaxBatchBytes
}

// FitsArchived is Fits for an archived record.
func (b *Batch) FitsArchived(r *manifest.Record) bool {
	return b.n == 0 || len(b.recs)+recordLen(b, r.Key, r.Value, r.Timestamp, r.Headers) <= MaxBatchBytes
}

// Append adds r (its Key, Value, Headers and Timestamp) as the batch's
// next record. The bytes are copied: r may be reused once it returns.
func (b *Batch) Append(r *kgo.Record) {
	appendRecord(b, r.Key, r.Value, r.Timestamp.UnixMilli(), r.Headers)
}

// AppendArchived adds an archived record as the batch's next record: key,
// value, headers and timestamp (the archive's other fields describe the
// source batch, which a restore does not reproduce). The bytes are copied.
func (b *Batch) AppendArchived(r *manifest.Record) {
	appendRecord(b, r.Key, r.Value, r.Timestamp, r.Headers)
}

// header is a record header: kgo.RecordHeader and manifest.Header.
type header interface {
	~struct {
		Key   string
		Value []byte
	}
}

func appendRecord[H header](b *Batch, key, value []byte, ts int64, hs []H) {
	if b.n == 0 {
		b.first, b.max = ts, ts
	}
	b.max = max(b.max, ts)
	b.last = len(b.recs)
	body := bodyLen(ts-b.first, b.n, key, value, hs)
	dst := binary.AppendVarint(b.recs, int64(body))
	dst = append(dst, 0) // record attributes: none are defined
	dst = binary.AppendVarint(dst, ts-b.first)
	dst = binary.AppendVarint(dst, int64(b.n))
	dst = appendNullable(dst, key)
	dst = appendNullable(dst, value)
	dst = binary.AppendVarint(dst, int64(len(hs)))
	for _, h := range hs {
		h := (struct {
			Key   string
			Value []byte
		})(h)
		dst = binary.AppendVarint(dst, int64(len(h.Key)))
		dst = append(dst, h.Key...)
		dst = appendNullable(dst, h.Value)
	}
	b.recs = dst
	b.n++
}

// recordLen is the length a record takes as the batch's next record.
func recordLen[H header](b *Batch, key, value []byte, ts int64, hs []H) int {
	base := b.first
	if b.n == 0 {
		base = ts
	}
	body := bodyLen(ts-base, b.n, key, value, hs)
	return varintLen(int64(body)) + body
}

// RecordEncodedLen is the length r takes in a batch whose base timestamp
// is base, as its record number i.
func RecordEncodedLen(r *kgo.Record, base int64, i int32) int {
	body := bodyLen(r.Timestamp.UnixMilli()-base, i, r.Key, r.Value, r.Headers)
	return varintLen(int64(body)) + body
}

// bodyLen is a record's length after its length prefix.
func bodyLen[H header](tsDelta int64, i int32, key, value []byte, hs []H) int {
	n := 1 + varintLen(tsDelta) + varintLen(int64(i)) + nullableLen(key) + nullableLen(value) + varintLen(int64(len(hs)))
	for _, h := range hs {
		h := (struct {
			Key   string
			Value []byte
		})(h)
		n += varintLen(int64(len(h.Key))) + len(h.Key) + nullableLen(h.Value)
	}
	return n
}

// LastRecord decodes the batch's last record (nil when it is empty): its
// key, value, headers and timestamp, as appended.
func (b *Batch) LastRecord() *kgo.Record {
	if b.n == 0 {
		return nil
	}
	var kr kmsg.Record
	if err := kr.ReadFrom(b.recs[b.last:]); err != nil {
		return nil // not reached: the bytes are the batch's own encoding
	}
	r := &kgo.Record{Key: kr.Key, Value: kr.Value, Timestamp: time.UnixMilli(b.first + kr.TimestampDelta64)}
	for _, h := range kr.Headers {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
	}
	return r
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
// The slice is the batch's own, valid until the next Encode or Reset;
// Encode on an empty batch returns nil.
func (b *Batch) Encode(producerID int64, epoch int16, seq int32, codec BatchCodec) []byte {
	if b.enc == nil {
		b.enc = new(batchEncoder)
	}
	return b.encode(b.enc, producerID, epoch, seq, codec)
}

// batchEncoder holds the buffers a batch is encoded and compressed into
// (a PartitionWriter's own: one set per partition, not per batch).
type batchEncoder struct {
	out, scr []byte
}

func (b *Batch) encode(e *batchEncoder, producerID int64, epoch int16, seq int32, codec BatchCodec) []byte {
	if b.n == 0 {
		return nil
	}
	recs := b.recs
	if codec == BatchSnappy {
		if need := s2.MaxEncodedLen(len(recs)); cap(e.scr) < need {
			e.scr = make([]byte, need)
		}
		if c := s2.EncodeSnappy(e.scr[:cap(e.scr)], recs); len(c) < len(recs) {
			recs = c
		} else {
			codec = BatchNone
		}
	} else {
		codec = BatchNone
	}
	dst := e.out[:0]
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
	e.out = dst
	return dst
}
