package manifest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
)

// Commit is one commit entry: the atomic commit point of one segment of a
// partition. The chain of commits of a partition covers offsets 0..End of
// its head without holes or overlap: commit n+1 starts at commit n's End+1,
// and the first commit starts at 0.
type Commit struct {
	Topic     string
	TopicID   TopicID
	Partition int32

	Seq         int64 // 0 for the first commit of the partition, then +1 each
	Start, End  int64 // covered offsets, inclusive; every one is a record or in a gap
	CommittedAt int64 // writer's wall clock, unix ms
	Writer      string

	// Where the segment is: the object SegmentKey, bytes [SegmentOffset,
	// SegmentOffset+SegmentSize). Index positions are relative to the
	// segment's first byte. Version 1 writers always write SegmentOffset 0.
	SegmentKey    string
	SegmentOffset int64
	SegmentSize   int64
	IndexPosition int64
	IndexLength   int64
	SegmentCRC32C uint32

	Records      int64
	FirstOffset  int64 // first record offset, -1 when Records == 0
	LastOffset   int64 // last record offset, -1 when Records == 0
	MinTimestamp int64 // 0 when Records == 0
	MaxTimestamp int64 // 0 when Records == 0
	// RunningMaxTimestamp is the largest record timestamp in this commit and
	// all earlier ones of the partition; math.MinInt64 while none had records.
	RunningMaxTimestamp int64
	GapOffsets          [NumGapReasons]int64 // offsets in gaps, by reason (index 0 unused)

	// Cumulative through this commit, so that `ls` needs only the head.
	TotalRecords       int64
	TotalBytes         int64
	TotalGapOffsets    [NumGapReasons]int64
	FirstTimestamp     int64 // smallest record timestamp so far; math.MaxInt64 while none
	FirstRecordedStart int64 // offset of the first record ever archived; -1 while none
}

var commitMagic = [4]byte{'K', 'B', 'C', 'M'}

// commitFixedSize is the encoding's size without its three strings.
const commitFixedSize = 28 + 8*8 + 4 + 8*6 + 8*NumGapReasons + 8*2 + 8*NumGapReasons + 8*2 + 3*2 + 4

// AppendCommit appends the canonical encoding of c.
func AppendCommit(b []byte, c *Commit) []byte {
	le := binary.LittleEndian
	start := len(b)
	b = append(b, commitMagic[:]...)
	b = le.AppendUint16(b, objectVersion)
	b = le.AppendUint16(b, 0)
	b = append(b, c.TopicID[:]...)
	b = le.AppendUint32(b, uint32(c.Partition))
	for _, v := range []int64{c.Seq, c.Start, c.End, c.CommittedAt,
		c.SegmentOffset, c.SegmentSize, c.IndexPosition, c.IndexLength} {
		b = le.AppendUint64(b, uint64(v))
	}
	b = le.AppendUint32(b, c.SegmentCRC32C)
	for _, v := range []int64{c.Records, c.FirstOffset, c.LastOffset, c.MinTimestamp, c.MaxTimestamp, c.RunningMaxTimestamp} {
		b = le.AppendUint64(b, uint64(v))
	}
	for _, v := range c.GapOffsets {
		b = le.AppendUint64(b, uint64(v))
	}
	b = le.AppendUint64(b, uint64(c.TotalRecords))
	b = le.AppendUint64(b, uint64(c.TotalBytes))
	for _, v := range c.TotalGapOffsets {
		b = le.AppendUint64(b, uint64(v))
	}
	b = le.AppendUint64(b, uint64(c.FirstTimestamp))
	b = le.AppendUint64(b, uint64(c.FirstRecordedStart))
	for _, s := range []string{c.Topic, c.SegmentKey, c.Writer} {
		b = le.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}
	return le.AppendUint32(b, crc32c(b[start:]))
}

// DecodeCommit decodes a commit entry and checks its internal consistency.
func DecodeCommit(b []byte) (*Commit, error) {
	if len(b) < commitFixedSize {
		return nil, corruptf("commit: %d bytes is too short", len(b))
	}
	if !bytes.Equal(b[:4], commitMagic[:]) {
		return nil, corruptf("commit: bad magic %q", b[:4])
	}
	le := binary.LittleEndian
	if v := le.Uint16(b[4:]); v != objectVersion {
		return nil, versionErr("commit entry", int(v), objectVersionText)
	}
	if got, want := crc32c(b[:len(b)-4]), le.Uint32(b[len(b)-4:]); got != want {
		return nil, corruptf("commit: checksum %08x, stored %08x", got, want)
	}
	if le.Uint16(b[6:]) != 0 {
		return nil, corruptf("commit: reserved field set")
	}
	c := &Commit{}
	copy(c.TopicID[:], b[8:24])
	c.Partition = int32(le.Uint32(b[24:]))
	p := b[28:]
	next := func() int64 { v := int64(le.Uint64(p)); p = p[8:]; return v }
	c.Seq, c.Start, c.End, c.CommittedAt = next(), next(), next(), next()
	c.SegmentOffset, c.SegmentSize, c.IndexPosition, c.IndexLength = next(), next(), next(), next()
	c.SegmentCRC32C = le.Uint32(p)
	p = p[4:]
	c.Records, c.FirstOffset, c.LastOffset = next(), next(), next()
	c.MinTimestamp, c.MaxTimestamp, c.RunningMaxTimestamp = next(), next(), next()
	for i := range c.GapOffsets {
		c.GapOffsets[i] = next()
	}
	c.TotalRecords, c.TotalBytes = next(), next()
	for i := range c.TotalGapOffsets {
		c.TotalGapOffsets[i] = next()
	}
	c.FirstTimestamp, c.FirstRecordedStart = next(), next()
	p = p[:len(p)-4]
	for _, s := range []*string{&c.Topic, &c.SegmentKey, &c.Writer} {
		if len(p) < 2 || int(le.Uint16(p)) > len(p)-2 {
			return nil, corruptf("commit: truncated string")
		}
		n := int(le.Uint16(p))
		*s = string(p[2 : 2+n])
		p = p[2+n:]
	}
	if len(p) != 0 {
		return nil, corruptf("commit: %d trailing bytes", len(p))
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// validate checks what a commit must satisfy on its own.
func (c *Commit) validate() error {
	bad := func(format string, args ...any) error {
		return corruptf("commit %s/%d@%d: %s", c.Topic, c.Partition, c.Start, fmt.Sprintf(format, args...))
	}
	if err := ValidTopic(c.Topic); err != nil {
		return bad("%v", err)
	}
	k, err := ParseKey(c.SegmentKey)
	switch {
	case c.Partition < 0:
		return bad("negative partition")
	case c.Seq < 0 || c.Start < 0 || c.End < c.Start || c.End == math.MaxInt64:
		return bad("range %d..%d (seq %d) invalid", c.Start, c.End, c.Seq)
	case err != nil || k.Kind != KeyFlush && (k.Kind != KeySegment || k.Topic != c.Topic || k.TopicID != c.TopicID || k.Partition != c.Partition):
		return bad("segment key %q does not belong to it", c.SegmentKey)
	case c.SegmentOffset < 0 || c.SegmentSize < segHeaderSize+footerSize || c.SegmentOffset > math.MaxInt64-c.SegmentSize:
		return bad("segment byte range %d+%d invalid", c.SegmentOffset, c.SegmentSize)
	case c.IndexPosition < segHeaderSize || c.IndexLength < indexHeaderSize+8 ||
		c.IndexPosition+c.IndexLength+footerSize != c.SegmentSize:
		return bad("index %d+%d does not end at the footer of a %d byte segment", c.IndexPosition, c.IndexLength, c.SegmentSize)
	case c.Records < 0 || c.Records > c.End-c.Start+1:
		return bad("%d records in %d offsets", c.Records, c.End-c.Start+1)
	}
	if c.Records == 0 {
		if c.FirstOffset != -1 || c.LastOffset != -1 || c.MinTimestamp != 0 || c.MaxTimestamp != 0 {
			return bad("empty segment with record fields set")
		}
	} else if c.FirstOffset < c.Start || c.LastOffset > c.End || c.LastOffset-c.FirstOffset+1 < c.Records ||
		c.MinTimestamp > c.MaxTimestamp || c.RunningMaxTimestamp < c.MaxTimestamp {
		return bad("record fields inconsistent")
	}
	var gaps int64
	for i, v := range c.GapOffsets {
		if v < 0 || (i == 0 && v != 0) {
			return bad("gap counters invalid")
		}
		gaps += v
	}
	if gaps+c.Records != c.End-c.Start+1 {
		return bad("%d records + %d gap offsets != %d covered offsets", c.Records, gaps, c.End-c.Start+1)
	}
	for i, v := range c.TotalGapOffsets {
		if v < c.GapOffsets[i] {
			return bad("cumulative gap counters below this commit's")
		}
	}
	if c.TotalRecords < c.Records || c.TotalBytes < c.SegmentSize {
		return bad("cumulative totals below this commit's")
	}
	return nil
}

// Covers reports whether offset is inside the commit's range.
func (c *Commit) Covers(offset int64) bool { return offset >= c.Start && offset <= c.End }

// Next builds the commit that follows prev (nil for the partition's first
// commit) for a finished segment stored under segKey. It fills the
// sequence number and the cumulative fields.
func Next(prev *Commit, topic string, id TopicID, partition int32, segKey string, info SegmentInfo, writer string, nowMs int64) (*Commit, error) {
	c := &Commit{Topic: topic, TopicID: id, Partition: partition, Start: info.Start, End: info.End,
		CommittedAt: nowMs, Writer: writer, SegmentKey: segKey, SegmentSize: info.Size,
		IndexPosition: info.IndexPosition, IndexLength: info.IndexLength, SegmentCRC32C: info.CRC32C,
		Records: info.Records, FirstOffset: info.FirstOffset, LastOffset: info.LastOffset,
		MinTimestamp: info.MinTimestamp, MaxTimestamp: info.MaxTimestamp, GapOffsets: info.GapOffsets,
		RunningMaxTimestamp: math.MinInt64, FirstTimestamp: math.MaxInt64, FirstRecordedStart: -1}
	if prev != nil {
		if prev.Topic != topic || prev.TopicID != id || prev.Partition != partition {
			return nil, fmt.Errorf("commit for %s/%d follows a commit of %s/%d", topic, partition, prev.Topic, prev.Partition)
		}
		if info.Start != prev.End+1 {
			return nil, fmt.Errorf("segment of %s/%d starts at %d, but the archive ends at %d", topic, partition, info.Start, prev.End)
		}
		c.Seq = prev.Seq + 1
		c.RunningMaxTimestamp, c.FirstTimestamp, c.FirstRecordedStart = prev.RunningMaxTimestamp, prev.FirstTimestamp, prev.FirstRecordedStart
		c.TotalRecords, c.TotalBytes, c.TotalGapOffsets = prev.TotalRecords, prev.TotalBytes, prev.TotalGapOffsets
	} else if info.Start != 0 {
		return nil, fmt.Errorf("first segment of %s/%d starts at %d, not 0 (cover earlier offsets with a gap)", topic, partition, info.Start)
	}
	if info.End < info.Start {
		return nil, fmt.Errorf("segment of %s/%d covers no offsets", topic, partition)
	}
	if info.Records > 0 {
		c.RunningMaxTimestamp = max(c.RunningMaxTimestamp, info.MaxTimestamp)
		c.FirstTimestamp = min(c.FirstTimestamp, info.MinTimestamp)
		if c.FirstRecordedStart < 0 {
			c.FirstRecordedStart = info.FirstOffset
		}
	}
	c.TotalRecords += info.Records
	c.TotalBytes += info.Size
	for i, v := range info.GapOffsets {
		c.TotalGapOffsets[i] += v
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}
