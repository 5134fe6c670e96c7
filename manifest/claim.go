package manifest

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"sort"
)

// This file: claims and tail indexes (docs/FORMAT.md §12.3, §12.4).

// Claim is a partition's ownership claim, claims/<inv-epoch> (format
// version 3): from Start on, the partition's offsets are committed by
// Writer's flush objects, in entries of this epoch. Tail lists the counted
// entries of the partition's uncompacted tail below Start, as the claimer
// found them (nil when the tail below Start was empty): entries of earlier
// epochs not reachable from it are void.
type Claim struct {
	FormatVersion int       `json:"format_version"`
	Epoch         int64     `json:"epoch"`
	Writer        string    `json:"writer"`
	Start         int64     `json:"start"`
	CreatedMs     int64     `json:"created_ms"`
	Tail          *TailRefs `json:"tail"`
}

// TailRefs find the entries of a partition's uncompacted tail: Newest is
// the last, Sparse every 16th from the oldest on (ascending), and every
// entry names its predecessor (its entry prefix), so any entry is at
// most 15 steps back from a listed one.
type TailRefs struct {
	Newest EntryRef   `json:"newest"`
	Sparse []EntryRef `json:"sparse"`
}

// TailSparseEvery is the spacing of TailRefs.Sparse.
const TailSparseEvery = 16

func (t *TailRefs) validate() error {
	if err := t.Newest.validate(); err != nil {
		return err
	}
	for i, r := range t.Sparse {
		if err := r.validate(); err != nil {
			return fmt.Errorf("sparse ref %d: %w", i, err)
		}
		if i > 0 && r.Start <= t.Sparse[i-1].End {
			return corruptf("sparse refs out of order at %d", i)
		}
		if r.End >= t.Newest.Start {
			return corruptf("sparse ref %d not before the newest entry", i)
		}
	}
	return nil
}

func (c *Claim) validate() error {
	switch {
	case c.Epoch < 1 || c.Epoch == math.MaxInt64:
		return corruptf("claim: epoch %d invalid", c.Epoch)
	case !ValidWriterID(c.Writer):
		return corruptf("claim: writer %q invalid", c.Writer)
	case c.Start < 0 || c.Start == math.MaxInt64:
		return corruptf("claim: start %d invalid", c.Start)
	}
	if c.Tail != nil {
		if err := c.Tail.validate(); err != nil {
			return fmt.Errorf("claim: %w", err)
		}
		if c.Tail.Newest.End != c.Start-1 {
			return corruptf("claim: tail ends at %d, start is %d", c.Tail.Newest.End, c.Start)
		}
	}
	return nil
}

// DecodeClaim decodes a claim strictly.
func DecodeClaim(b []byte) (*Claim, error) {
	var c Claim
	if err := decodeJSONVersions("claim", b, &c, func() int { return c.FormatVersion }, jsonVersions{claimVersion, claimVersion}); err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// EncodeClaim encodes a claim.
func EncodeClaim(c *Claim) []byte { return encodeJSON(c) }

// TailIndex is a writer's tail index, wal/<writer>/tail/<inv-seq>.ktix:
// for every partition the writer owned when it wrote its flush object Seq,
// the claim epoch and the refs of the partition's uncompacted tail.
type TailIndex struct {
	Writer     string
	Seq        int64
	Partitions []TailPartition // sorted by topic id and partition
}

// TailPartition is one partition of a tail index.
type TailPartition struct {
	TopicID   TopicID
	Partition int32
	Epoch     int64
	Refs      TailRefs
}

// TailIndexHeader is a tail index without its sections: enough to find one
// partition's section.
type TailIndexHeader struct {
	Writer string
	Seq    int64
	Rows   []TailRow
}

// TailRow locates one partition's section.
type TailRow struct {
	TopicID   TopicID
	Partition int32
	Epoch     int64
	Pos, Len  int64
}

// Row returns a partition's row, or nil.
func (h *TailIndexHeader) Row(id TopicID, partition int32) *TailRow {
	i := sort.Search(len(h.Rows), func(i int) bool {
		r := &h.Rows[i]
		if c := bytes.Compare(r.TopicID[:], id[:]); c != 0 {
			return c > 0
		}
		return r.Partition >= partition
	})
	if i < len(h.Rows) && h.Rows[i].TopicID == id && h.Rows[i].Partition == partition {
		return &h.Rows[i]
	}
	return nil
}

// TailHeaderLen is the length of a tail index's header and table, from its
// first bytes (at least tailHeaderSize of them).
func TailHeaderLen(b []byte) (int64, error) {
	if len(b) < tailHeaderSize || !bytes.Equal(b[:4], tailMagic[:]) {
		return 0, corruptf("tail index: bad header")
	}
	return tailHeaderSize + int64(binary.LittleEndian.Uint32(b[24:]))*tailRowSize + 4, nil
}

// EncodeTailIndex encodes a tail index (sorting its partitions).
func EncodeTailIndex(t *TailIndex) ([]byte, error) {
	w, err := writerBytes(t.Writer)
	if err != nil {
		return nil, err
	}
	sort.Slice(t.Partitions, func(i, j int) bool {
		a, b := &t.Partitions[i], &t.Partitions[j]
		if c := bytes.Compare(a.TopicID[:], b.TopicID[:]); c != 0 {
			return c < 0
		}
		return a.Partition < b.Partition
	})
	le := binary.LittleEndian
	b := append([]byte{}, tailMagic[:]...)
	b = le.AppendUint16(b, walVersion)
	b = le.AppendUint16(b, 0)
	b = append(b, w[:]...)
	b = le.AppendUint64(b, uint64(t.Seq))
	b = le.AppendUint32(b, uint32(len(t.Partitions)))
	b = le.AppendUint32(b, 0)
	pos := int64(tailHeaderSize + len(t.Partitions)*tailRowSize + 4)
	for _, p := range t.Partitions {
		n := int64(4+(1+len(p.Refs.Sparse))*refSize) + 4
		b = append(b, p.TopicID[:]...)
		b = le.AppendUint32(b, uint32(p.Partition))
		b = le.AppendUint64(b, uint64(p.Epoch))
		b = le.AppendUint64(b, uint64(pos))
		b = le.AppendUint64(b, uint64(n))
		pos += n
	}
	b = le.AppendUint32(b, crc32c(b))
	for _, p := range t.Partitions {
		s := len(b)
		b = le.AppendUint32(b, uint32(len(p.Refs.Sparse)))
		b = appendRef(b, p.Refs.Newest)
		for _, r := range p.Refs.Sparse {
			b = appendRef(b, r)
		}
		b = le.AppendUint32(b, crc32c(b[s:]))
	}
	h, err := DecodeTailHeader(b)
	if err != nil {
		return nil, fmt.Errorf("tail index does not validate: %w", err)
	}
	for _, r := range h.Rows {
		if _, err := DecodeTailSection(b[r.Pos : r.Pos+r.Len]); err != nil {
			return nil, fmt.Errorf("tail index does not validate: %w", err)
		}
	}
	return b, nil
}

// DecodeTailHeader decodes a tail index's header and table from its first
// TailHeaderLen bytes (more are ignored).
func DecodeTailHeader(b []byte) (*TailIndexHeader, error) {
	n, err := TailHeaderLen(b)
	if err != nil {
		return nil, err
	}
	if int64(len(b)) < n {
		return nil, corruptf("tail index: header of %d bytes, want %d", len(b), n)
	}
	le := binary.LittleEndian
	if v := le.Uint16(b[4:]); v != walVersion {
		return nil, versionErr("tail index", int(v), fmt.Sprintf("version %d", walVersion))
	}
	if got, want := crc32c(b[:n-4]), le.Uint32(b[n-4:]); got != want {
		return nil, corruptf("tail index: header checksum %08x, stored %08x", got, want)
	}
	if le.Uint16(b[6:]) != 0 || le.Uint32(b[28:]) != 0 {
		return nil, corruptf("tail index: reserved field set")
	}
	h := &TailIndexHeader{Writer: hex.EncodeToString(b[8:16]), Seq: int64(le.Uint64(b[16:]))}
	if h.Seq < 0 || h.Seq == math.MaxInt64 {
		return nil, corruptf("tail index: seq %d invalid", h.Seq)
	}
	rows := int(le.Uint32(b[24:]))
	h.Rows = make([]TailRow, rows)
	pos := n
	for i := range h.Rows {
		p := b[tailHeaderSize+i*tailRowSize:]
		r := &h.Rows[i]
		copy(r.TopicID[:], p)
		r.Partition = int32(le.Uint32(p[16:]))
		r.Epoch = int64(le.Uint64(p[20:]))
		r.Pos, r.Len = int64(le.Uint64(p[28:])), int64(le.Uint64(p[36:]))
		if r.Partition < 0 || r.Epoch < 1 || r.Epoch == math.MaxInt64 || r.Pos != pos || r.Len < 4+refSize+4 || (r.Len-8)%refSize != 0 || r.Len > math.MaxInt32 {
			return nil, corruptf("tail index row %d invalid", i)
		}
		if i > 0 {
			q := &h.Rows[i-1]
			if c := bytes.Compare(q.TopicID[:], r.TopicID[:]); c > 0 || c == 0 && q.Partition >= r.Partition {
				return nil, corruptf("tail index: rows out of order at %d", i)
			}
		}
		pos += r.Len
	}
	return h, nil
}

// DecodeTailSection decodes one partition's section of a tail index.
func DecodeTailSection(b []byte) (TailRefs, error) {
	le := binary.LittleEndian
	if len(b) < 8+refSize || (len(b)-8)%refSize != 0 {
		return TailRefs{}, corruptf("tail section: %d bytes", len(b))
	}
	if got, want := crc32c(b[:len(b)-4]), le.Uint32(b[len(b)-4:]); got != want {
		return TailRefs{}, corruptf("tail section: checksum %08x, stored %08x", got, want)
	}
	n := int(le.Uint32(b))
	if n != (len(b)-8)/refSize-1 {
		return TailRefs{}, corruptf("tail section: %d sparse refs in %d bytes", n, len(b))
	}
	var t TailRefs
	var err error
	if t.Newest, err = decodeRef(b[4:]); err != nil {
		return TailRefs{}, err
	}
	t.Sparse = make([]EntryRef, n)
	for i := range t.Sparse {
		if t.Sparse[i], err = decodeRef(b[4+(i+1)*refSize:]); err != nil {
			return TailRefs{}, err
		}
	}
	return t, t.validate()
}
