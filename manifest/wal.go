package manifest

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"sort"
)

// Format version 3 (docs/FORMAT.md §12): packed flush objects. One archiver
// process (a writer) commits the new records of every partition it owns
// with one object per flush, wal/<writer>/<inv-seq>.kwal; per partition,
// claims (claims/<inv-epoch>) say which writer may commit which offsets;
// every few flushes a tail index (wal/<writer>/tail/<inv-seq>.ktix) lets
// readers find a partition's entries without reading every flush object;
// compaction rewrites the entries into the version-1 chain.

// WALPrefix is the key prefix of flush objects and tail indexes.
const WALPrefix = "wal/"

// Versions of the version-3 objects.
const (
	walVersion   = 3
	claimVersion = 3
)

var (
	flushMagic = [4]byte{'K', 'B', 'W', 'L'}
	tailMagic  = [4]byte{'K', 'B', 'T', 'X'}
)

// Sizes of the fixed parts (docs/FORMAT.md §12).
const (
	flushRowSize     = 64
	entryPrefixSize  = 28
	flushTrailerSize = 40
	tailHeaderSize   = 32
	tailRowSize      = 44
	refSize          = 52
)

// NewWriterID returns a random writer id: 16 lowercase hex digits.
func NewWriterID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return hex.EncodeToString(b[:])
}

// ValidWriterID reports whether s is 16 lowercase hex digits.
func ValidWriterID(s string) bool { return isNonce(s) }

func writerBytes(w string) ([8]byte, error) {
	var b [8]byte
	if !ValidWriterID(w) {
		return b, fmt.Errorf("writer id %q is not 16 lowercase hex digits", w)
	}
	_, err := hex.Decode(b[:], []byte(w))
	return b, err
}

// FlushKey is wal/<writer>/<inv-seq>.kwal.
func FlushKey(writer string, seq int64) string {
	return WALPrefix + writer + "/" + dec19(Invert(seq)) + ".kwal"
}

// FlushPrefix is the prefix of a writer's flush objects (and tail indexes).
func FlushPrefix(writer string) string { return WALPrefix + writer + "/" }

// TailIndexKey is wal/<writer>/tail/<inv-seq>.ktix.
func TailIndexKey(writer string, seq int64) string {
	return WALPrefix + writer + "/tail/" + dec19(Invert(seq)) + ".ktix"
}

// ClaimKey is <partition prefix>claims/<inv-epoch>.
func ClaimKey(partPrefix string, epoch int64) string {
	return partPrefix + "claims/" + dec19(Invert(epoch))
}

// EntryRef locates one entry of a flush object: the commit encoding of a
// partition's segment body at bytes [Pos, Pos+Len) of the writer's flush
// object Seq, covering offsets Start..End, with the partition's running
// maximum timestamp through it.
type EntryRef struct {
	Writer string `json:"writer"`
	Seq    int64  `json:"seq"`
	Pos    int64  `json:"pos"`
	Len    int64  `json:"len"`
	Start  int64  `json:"start"`
	End    int64  `json:"end"`
	RunMax int64  `json:"run_max"`
}

// Key is the flush object holding the entry.
func (r EntryRef) Key() string { return FlushKey(r.Writer, r.Seq) }

func (r EntryRef) validate() error {
	switch {
	case !ValidWriterID(r.Writer):
		return corruptf("entry ref: writer %q invalid", r.Writer)
	case r.Seq < 0 || r.Seq == math.MaxInt64:
		return corruptf("entry ref: seq %d invalid", r.Seq)
	case r.Pos < 0 || r.Len < entryPrefixSize+commitFixedSize || r.Len > math.MaxUint32 || r.Pos > math.MaxInt64-r.Len:
		return corruptf("entry ref: byte range %d+%d invalid", r.Pos, r.Len)
	case r.Start < 0 || r.End < r.Start || r.End == math.MaxInt64:
		return corruptf("entry ref: range %d..%d invalid", r.Start, r.End)
	}
	return nil
}

func appendRef(b []byte, r EntryRef) []byte {
	le := binary.LittleEndian
	w, _ := writerBytes(r.Writer)
	b = append(b, w[:]...)
	b = le.AppendUint64(b, uint64(r.Seq))
	b = le.AppendUint64(b, uint64(r.Pos))
	b = le.AppendUint32(b, uint32(r.Len))
	b = le.AppendUint64(b, uint64(r.Start))
	b = le.AppendUint64(b, uint64(r.End))
	return le.AppendUint64(b, uint64(r.RunMax))
}

func decodeRef(b []byte) (EntryRef, error) {
	le := binary.LittleEndian
	r := EntryRef{Writer: hex.EncodeToString(b[:8]), Seq: int64(le.Uint64(b[8:])), Pos: int64(le.Uint64(b[16:])),
		Len: int64(le.Uint32(b[24:])), Start: int64(le.Uint64(b[28:])), End: int64(le.Uint64(b[36:])),
		RunMax: int64(le.Uint64(b[44:]))}
	return r, r.validate()
}

// FlushRow is one row of a flush object's table: where the entry of one
// partition is and which claim epoch it was written under.
type FlushRow struct {
	TopicID   TopicID
	Partition int32
	Epoch     int64
	Ref       EntryRef // Writer and Seq are the flush object's
}

// FlushTable is a decoded flush object table: rows sorted by topic id and
// partition, at most one per partition.
type FlushTable struct {
	Writer   string
	Seq      int64
	TablePos int64 // where the table starts: every entry and body lies before it
	Rows     []FlushRow
}

// Row returns the row of a partition, or nil.
func (t *FlushTable) Row(id TopicID, partition int32) *FlushRow {
	i := sort.Search(len(t.Rows), func(i int) bool { return !rowLess(&t.Rows[i], id, partition) })
	if i < len(t.Rows) && t.Rows[i].TopicID == id && t.Rows[i].Partition == partition {
		return &t.Rows[i]
	}
	return nil
}

func rowLess(r *FlushRow, id TopicID, partition int32) bool {
	if c := bytes.Compare(r.TopicID[:], id[:]); c != 0 {
		return c < 0
	}
	return r.Partition < partition
}

// AppendFlushTable appends the table and trailer of a flush object whose
// bodies and entries end at t.TablePos. The rows are sorted here.
func AppendFlushTable(b []byte, t *FlushTable) ([]byte, error) {
	w, err := writerBytes(t.Writer)
	if err != nil {
		return nil, err
	}
	sort.Slice(t.Rows, func(i, j int) bool { return rowLess(&t.Rows[i], t.Rows[j].TopicID, t.Rows[j].Partition) })
	le := binary.LittleEndian
	start := len(b)
	for i := range t.Rows {
		r := &t.Rows[i]
		if i > 0 && !rowLess(&t.Rows[i-1], r.TopicID, r.Partition) {
			return nil, fmt.Errorf("flush table: partition %s/%d twice", r.TopicID, r.Partition)
		}
		b = append(b, r.TopicID[:]...)
		b = le.AppendUint32(b, uint32(r.Partition))
		b = le.AppendUint64(b, uint64(r.Epoch))
		b = le.AppendUint64(b, uint64(r.Ref.Pos))
		b = le.AppendUint32(b, uint32(r.Ref.Len))
		b = le.AppendUint64(b, uint64(r.Ref.Start))
		b = le.AppendUint64(b, uint64(r.Ref.End))
		b = le.AppendUint64(b, uint64(r.Ref.RunMax))
	}
	b = le.AppendUint64(b, uint64(t.TablePos))
	b = le.AppendUint32(b, uint32(len(t.Rows)))
	b = le.AppendUint16(b, walVersion)
	b = le.AppendUint16(b, 0)
	b = le.AppendUint64(b, uint64(t.Seq))
	b = append(b, w[:]...)
	b = le.AppendUint32(b, crc32c(b[start:]))
	b = append(b, flushMagic[:]...)
	if _, err := DecodeFlushTable(b[start:], t.TablePos+int64(len(b)-start)); err != nil {
		return nil, fmt.Errorf("flush table does not validate: %w", err)
	}
	return b, nil
}

// FlushTrailer is the fixed-size end of a flush object.
type FlushTrailer struct {
	TablePos int64
	Rows     int
}

// DecodeFlushTrailer decodes the last flushTrailerSize bytes of a flush
// object of size bytes: where its table starts.
func DecodeFlushTrailer(b []byte, size int64) (FlushTrailer, error) {
	if len(b) < flushTrailerSize {
		return FlushTrailer{}, corruptf("flush object: trailer of %d bytes", len(b))
	}
	b = b[len(b)-flushTrailerSize:]
	le := binary.LittleEndian
	if !bytes.Equal(b[36:], flushMagic[:]) {
		return FlushTrailer{}, corruptf("flush object: bad magic %q", b[36:])
	}
	if v := le.Uint16(b[12:]); v != walVersion {
		return FlushTrailer{}, versionErr("flush object", int(v), fmt.Sprintf("version %d", walVersion))
	}
	t := FlushTrailer{TablePos: int64(le.Uint64(b)), Rows: int(le.Uint32(b[8:]))}
	if t.TablePos < 0 || t.TablePos > size-flushTrailerSize || int64(t.Rows) != (size-flushTrailerSize-t.TablePos)/flushRowSize ||
		(size-flushTrailerSize-t.TablePos)%flushRowSize != 0 {
		return FlushTrailer{}, corruptf("flush object: table at %d with %d rows does not end at the trailer of a %d byte object", t.TablePos, t.Rows, size)
	}
	return t, nil
}

// FlushTableLen is the length of the table plus trailer of a flush object
// with rows rows.
func FlushTableLen(rows int) int64 { return int64(rows)*flushRowSize + flushTrailerSize }

// DecodeFlushTable decodes a flush object's table and trailer (the object's
// last bytes, b) of an object of size bytes, checking the CRC, the order of
// the rows and that every entry lies before the table.
func DecodeFlushTable(b []byte, size int64) (*FlushTable, error) {
	tr, err := DecodeFlushTrailer(b, size)
	if err != nil {
		return nil, err
	}
	n := FlushTableLen(tr.Rows)
	if int64(len(b)) < n {
		return nil, corruptf("flush object: %d table bytes, want %d", len(b), n)
	}
	b = b[int64(len(b))-n:]
	le := binary.LittleEndian
	tb := b[len(b)-flushTrailerSize:]
	if got, want := crc32c(b[:len(b)-8]), le.Uint32(tb[32:]); got != want {
		return nil, corruptf("flush object: table checksum %08x, stored %08x", got, want)
	}
	if le.Uint16(tb[14:]) != 0 {
		return nil, corruptf("flush object: reserved field set")
	}
	t := &FlushTable{Writer: hex.EncodeToString(tb[24:32]), Seq: int64(le.Uint64(tb[16:])), TablePos: tr.TablePos,
		Rows: make([]FlushRow, tr.Rows)}
	if t.Seq < 0 || t.Seq == math.MaxInt64 {
		return nil, corruptf("flush object: seq %d invalid", t.Seq)
	}
	for i := range t.Rows {
		p := b[i*flushRowSize:]
		r := &t.Rows[i]
		copy(r.TopicID[:], p)
		r.Partition = int32(le.Uint32(p[16:]))
		r.Epoch = int64(le.Uint64(p[20:]))
		r.Ref = EntryRef{Writer: t.Writer, Seq: t.Seq, Pos: int64(le.Uint64(p[28:])), Len: int64(le.Uint32(p[36:])),
			Start: int64(le.Uint64(p[40:])), End: int64(le.Uint64(p[48:])), RunMax: int64(le.Uint64(p[56:]))}
		if err := r.Ref.validate(); err != nil {
			return nil, fmt.Errorf("flush object row %d: %w", i, err)
		}
		if r.Partition < 0 || r.Epoch < 1 || r.Epoch == math.MaxInt64 || r.Ref.Pos+r.Ref.Len > t.TablePos {
			return nil, corruptf("flush object row %d: partition %d, epoch %d or entry %d+%d invalid", i, r.Partition, r.Epoch, r.Ref.Pos, r.Ref.Len)
		}
		if i > 0 && !rowLess(&t.Rows[i-1], r.TopicID, r.Partition) {
			return nil, corruptf("flush object: rows out of order at %d", i)
		}
	}
	return t, nil
}

// AppendEntry appends a flush entry: the ref of the partition's previous
// entry (nil: none; only Writer, Seq, Pos and Len are stored), then the
// commit encoding (§5.3) of c, whose segment is a byte range of the flush
// object.
func AppendEntry(b []byte, prev *EntryRef, c *Commit) ([]byte, error) {
	le := binary.LittleEndian
	if prev == nil {
		b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)
		b = le.AppendUint64(b, math.MaxUint64)
		b = append(b, make([]byte, 12)...)
	} else {
		w, err := writerBytes(prev.Writer)
		if err != nil {
			return nil, err
		}
		b = append(b, w[:]...)
		b = le.AppendUint64(b, uint64(prev.Seq))
		b = le.AppendUint64(b, uint64(prev.Pos))
		b = le.AppendUint32(b, uint32(prev.Len))
	}
	return AppendCommit(b, c), nil
}

// DecodeEntry decodes a flush entry (AppendEntry). The returned prev has
// only Writer, Seq, Pos and Len.
func DecodeEntry(b []byte) (*EntryRef, *Commit, error) {
	if len(b) < entryPrefixSize {
		return nil, nil, corruptf("flush entry: %d bytes", len(b))
	}
	le := binary.LittleEndian
	c, err := DecodeCommit(b[entryPrefixSize:])
	if err != nil {
		return nil, nil, fmt.Errorf("flush entry: %w", err)
	}
	if le.Uint64(b[8:]) == math.MaxUint64 {
		if !bytes.Equal(b[:8], make([]byte, 8)) || !bytes.Equal(b[16:28], make([]byte, 12)) {
			return nil, nil, corruptf("flush entry: no previous entry but its fields are set")
		}
		return nil, c, nil
	}
	prev := &EntryRef{Writer: hex.EncodeToString(b[:8]), Seq: int64(le.Uint64(b[8:])), Pos: int64(le.Uint64(b[16:])),
		Len: int64(le.Uint32(b[24:]))}
	if prev.Seq < 0 || prev.Seq == math.MaxInt64 || prev.Pos < 0 || prev.Len < entryPrefixSize+commitFixedSize || prev.Pos > math.MaxInt64-prev.Len {
		return nil, nil, corruptf("flush entry: previous entry %s@%d+%d invalid", prev.Key(), prev.Pos, prev.Len)
	}
	return prev, c, nil
}
