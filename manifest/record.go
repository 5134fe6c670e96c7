package manifest

import (
	"encoding/binary"
	"math"
)

// TimestampType is a Kafka record timestamp type.
type TimestampType uint8

const (
	// CreateTime: the producer set the timestamp.
	CreateTime TimestampType = 0
	// LogAppendTime: the broker set the timestamp when it appended.
	LogAppendTime TimestampType = 1
)

// String returns "CreateTime" or "LogAppendTime".
func (t TimestampType) String() string {
	if t == LogAppendTime {
		return "LogAppendTime"
	}
	return "CreateTime"
}

// Header is one record header. Kafka header keys are non-null strings;
// a nil Value is a null header value, distinct from an empty one.
type Header struct {
	Key   string
	Value []byte
}

// Record is one archived Kafka record with every field a faithful restore
// needs. Nil Key/Value mean null; a non-nil empty slice is empty.
type Record struct {
	Offset        int64
	Timestamp     int64 // unix milliseconds, may be negative
	TimestampType TimestampType
	Key           []byte
	Value         []byte
	Headers       []Header

	// Producer-side attributes of the batch the record came in.
	Compression   uint8 // original batch codec: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd
	Transactional bool
	ProducerID    int64 // -1 when none
	ProducerEpoch int16 // -1 when none
	LeaderEpoch   int32 // -1 when unknown
}

// Record attribute bits (the attrs byte of the record encoding).
const (
	attrLogAppendTime = 1 << 0
	attrCodecShift    = 1
	attrCodecMask     = 0x7 << attrCodecShift
	attrTransactional = 1 << 4
	attrReservedMask  = 0xE0
)

// maxCodec is the highest original-compression code a record may carry.
const maxCodec = 4

// appendRecord appends the block-payload encoding of r; base is the block's
// first offset.
func appendRecord(b []byte, r *Record, base int64) []byte {
	b = binary.AppendUvarint(b, uint64(r.Offset-base))
	b = binary.AppendVarint(b, r.Timestamp)
	var attrs byte
	if r.TimestampType == LogAppendTime {
		attrs |= attrLogAppendTime
	}
	attrs |= (r.Compression & 0x7) << attrCodecShift
	if r.Transactional {
		attrs |= attrTransactional
	}
	b = append(b, attrs)
	b = binary.AppendVarint(b, r.ProducerID)
	b = binary.AppendVarint(b, int64(r.ProducerEpoch))
	b = binary.AppendVarint(b, int64(r.LeaderEpoch))
	b = appendNullable(b, r.Key)
	b = appendNullable(b, r.Value)
	b = binary.AppendUvarint(b, uint64(len(r.Headers)))
	for _, h := range r.Headers {
		b = binary.AppendUvarint(b, uint64(len(h.Key)))
		b = append(b, h.Key...)
		b = appendNullable(b, h.Value)
	}
	return b
}

// recordSize is an upper bound of the encoded size of r.
func recordSize(r *Record) int {
	n := 4*binary.MaxVarintLen64 + 1 + 2*binary.MaxVarintLen64 + len(r.Key) + len(r.Value) + binary.MaxVarintLen64
	for _, h := range r.Headers {
		n += 2*binary.MaxVarintLen64 + len(h.Key) + len(h.Value)
	}
	return n
}

// appendNullable writes uvarint(len+1) and the bytes; 0 means null.
func appendNullable(b, v []byte) []byte {
	if v == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(v))+1)
	return append(b, v...)
}

// decoder reads the canonical encodings; the first error sticks.
type decoder struct {
	b   []byte
	err error
	// hdrs is a slab the records' header slices are cut from, and keys
	// interns header keys: both cut per-record allocations in a block.
	hdrs []Header
	keys map[string]string
	// nhdrs counts the headers decoded (a headerArena sizes its next
	// slab by it).
	nhdrs int
}

// headerArena is what decoding reuses from block to block for a caller
// that is done with one block's records when it decodes the next: the
// slab the records' header lists are cut from (one slab the size of the
// previous block's headers) and the interned header keys. The zero value
// is ready.
type headerArena struct {
	slab []Header
	need int
	keys map[string]string
}

// start readies d to cut its header lists from the arena's slab.
func (ha *headerArena) start(d *decoder) {
	if ha.need > cap(ha.slab) {
		ha.slab = make([]Header, 0, ha.need)
	}
	d.hdrs, d.keys = ha.slab[:0], ha.keys
}

// end keeps what d grew for the next block.
func (ha *headerArena) end(d *decoder) {
	ha.keys, ha.need = d.keys, d.nhdrs
	if cap(d.hdrs) > cap(ha.slab) {
		ha.slab = d.hdrs
	}
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = corruptf(format, args...)
	}
}

// uvarint reads a minimally encoded unsigned varint.
func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	// Minimal encoding: the last byte of a multi-byte varint is never 0.
	if n > 1 && d.b[n-1] == 0 {
		d.fail("non-minimal varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// varint reads a zig-zag signed varint, minimally encoded.
func (d *decoder) varint() int64 { return unzigzag(d.uvarint()) }

func (d *decoder) byte1() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.fail("truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) bytes(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("length %d exceeds remaining %d bytes", n, len(d.b))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// nullable reads uvarint(len+1)+bytes; returns nil for null and a non-nil
// (possibly empty) slice otherwise. The slice aliases the input.
func (d *decoder) nullable() []byte {
	n := d.uvarint()
	if d.err != nil || n == 0 {
		return nil
	}
	v := d.bytes(n - 1)
	if v == nil && d.err == nil {
		v = []byte{}
	}
	return v
}

// record reads one record of a block payload.
func (d *decoder) record(r *Record, base int64) {
	delta := d.uvarint()
	if d.err == nil && delta > math.MaxInt64-uint64(base) {
		d.fail("offset delta %d overflows", delta)
	}
	r.Offset = base + int64(delta)
	r.Timestamp = d.varint()
	attrs := d.byte1()
	if attrs&attrReservedMask != 0 {
		d.fail("reserved record attribute bits set (%#x)", attrs)
	}
	r.TimestampType = CreateTime
	if attrs&attrLogAppendTime != 0 {
		r.TimestampType = LogAppendTime
	}
	r.Compression = (attrs & attrCodecMask) >> attrCodecShift
	if r.Compression > maxCodec {
		d.fail("unknown original compression %d", r.Compression)
	}
	r.Transactional = attrs&attrTransactional != 0
	r.ProducerID = d.varint()
	pe := d.varint()
	le := d.varint()
	if pe < math.MinInt16 || pe > math.MaxInt16 {
		d.fail("producer epoch %d out of range", pe)
	}
	if le < math.MinInt32 || le > math.MaxInt32 {
		d.fail("leader epoch %d out of range", le)
	}
	r.ProducerEpoch, r.LeaderEpoch = int16(pe), int32(le)
	r.Key = d.nullable()
	r.Value = d.nullable()
	nh := d.uvarint()
	if d.err != nil {
		return
	}
	d.headers(r, nh)
}

// recordFast is record for a well-formed record, decoded with a local
// index and without the sticky error (record's calls were most of the
// cost of reading an uncompressed block). It reports false, with d.b
// unchanged, on anything record would fail on before the headers; record
// then decodes the same bytes again (setting every field of r) and names
// the error. The headers, if any, are read by record's code.
func (d *decoder) recordFast(r *Record, base int64) bool {
	if d.err != nil {
		return false
	}
	b := d.b
	// uv reads the next varint: uvarintAtSlow, with the one-byte case
	// inlined (a function with the call exceeds the inliner's budget).
	var i int
	uv := func() (v uint64) {
		if uint(i) < uint(len(b)) && b[i] < 0x80 {
			v = uint64(b[i])
			i++
			return v
		}
		v, i = uvarintAtSlow(b, i)
		return v
	}
	delta := uv()
	ts := uv()
	if uint(i) >= uint(len(b)) || delta > math.MaxInt64-uint64(base) {
		return false
	}
	attrs := b[i]
	i++
	if attrs&attrReservedMask != 0 || (attrs&attrCodecMask)>>attrCodecShift > maxCodec {
		return false
	}
	pid := uv()
	pe, le := unzigzag(uv()), unzigzag(uv())
	if i < 0 || pe < math.MinInt16 || pe > math.MaxInt16 || le < math.MinInt32 || le > math.MaxInt32 {
		return false
	}
	nullable := func() []byte {
		n := uv()
		if i < 0 || n == 0 {
			return nil
		}
		n--
		if n > uint64(len(b)-i) {
			i = -1
			return nil
		}
		j := i + int(n)
		v := b[i:j:j]
		i = j
		return v
	}
	key := nullable()
	value := nullable()
	nh := uv()
	if i < 0 {
		return false
	}
	r.Offset = base + int64(delta)
	r.Timestamp = unzigzag(ts)
	r.TimestampType = CreateTime
	if attrs&attrLogAppendTime != 0 {
		r.TimestampType = LogAppendTime
	}
	r.Compression = (attrs & attrCodecMask) >> attrCodecShift
	r.Transactional = attrs&attrTransactional != 0
	r.ProducerID = unzigzag(pid)
	r.ProducerEpoch, r.LeaderEpoch = int16(pe), int32(le)
	r.Key, r.Value = key, value
	d.b = b[i:]
	d.headers(r, nh)
	return true
}

// uvarintAtSlow reads the minimally encoded unsigned varint at b[i:] and
// returns it with the index after it; the index is -1 (and stays -1
// through further calls) when there is none.
func uvarintAtSlow(b []byte, i int) (uint64, int) {
	if uint(i) >= uint(len(b)) {
		return 0, -1
	}
	v, n := binary.Uvarint(b[i:])
	if n <= 0 || b[i+n-1] == 0 { // the last byte of a multi-byte varint is never 0
		return 0, -1
	}
	return v, i + n
}

func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// headers reads the nh headers of r (nh read already).
func (d *decoder) headers(r *Record, nh uint64) {
	if nh > uint64(len(d.b)) { // every header takes at least two bytes
		d.fail("header count %d exceeds remaining bytes", nh)
		return
	}
	r.Headers = nil
	if nh == 0 {
		return
	}
	if uint64(cap(d.hdrs)-len(d.hdrs)) < nh {
		d.hdrs = make([]Header, 0, max(1024, nh)) // a new chunk; earlier records keep theirs
	}
	d.nhdrs += int(nh)
	start := len(d.hdrs)
	for i := uint64(0); i < nh; i++ {
		k := d.bytes(d.uvarint())
		if d.err != nil {
			return
		}
		key, ok := d.keys[string(k)]
		if !ok {
			if d.keys == nil {
				d.keys = map[string]string{}
			}
			key = string(k)
			if len(d.keys) < 1024 {
				d.keys[key] = key
			}
		}
		d.hdrs = append(d.hdrs, Header{Key: key, Value: d.nullable()})
	}
	r.Headers = d.hdrs[start:len(d.hdrs):len(d.hdrs)]
}
