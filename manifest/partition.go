package manifest

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"sync"

	"github.com/kbackup/kbackup/store"
)

// ErrFenced: another writer committed this range first. The writer must
// drop its segment, reload the head and continue from there.
var ErrFenced = errors.New("fenced: another writer committed this range first")

// ErrOutOfRange: the requested offset or time is not in the archive.
var ErrOutOfRange = errors.New("not in the archive")

// PartitionLog reads and appends the commit chain of one partition.
type PartitionLog struct {
	st        store.Store
	Topic     string
	TopicID   TopicID
	Partition int32
	prefix    string
	arch      *Archive

	tailMu     sync.Mutex
	tail       *tailView // see tailView
	tailLoaded bool

	startMu     sync.Mutex
	start       *ArchiveStart // see ArchiveStart
	startLoaded bool
}

// Prefix is the partition's key prefix.
func (p *PartitionLog) Prefix() string { return p.prefix }

func (p *PartitionLog) String() string { return fmt.Sprintf("%s/%d", p.Topic, p.Partition) }

// readCommit GETs and decodes the commit at key, checking that it is the
// commit of this partition starting at start.
func (p *PartitionLog) readCommit(ctx context.Context, key string, start int64) (*Commit, error) {
	b, err := store.Get(ctx, p.st, key)
	if err != nil {
		return nil, fmt.Errorf("read commit %s: %w", key, err)
	}
	c, err := DecodeCommit(b)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", key, err)
	}
	if c.Topic != p.Topic || c.TopicID != p.TopicID || c.Partition != p.Partition || c.Start != start {
		return nil, fmt.Errorf("commit %s: %w", key, corruptf("holds %s/%d@%d", c.Topic, c.Partition, c.Start))
	}
	if k, _ := ParseKey(c.SegmentKey); k.Kind != KeySegment {
		return nil, fmt.Errorf("commit %s: %w", key, corruptf("names %s, not a segment", c.SegmentKey))
	}
	return c, nil
}

// firstAfter lists the first key strictly after marker under prefix; "" if none.
func (p *PartitionLog) firstAfter(ctx context.Context, prefix, marker string) (string, error) {
	var key string
	err := p.st.List(ctx, store.ListOptions{Prefix: prefix, StartAfter: marker, Limit: 1}, func(e store.ListEntry) error {
		key = e.Key
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("list %s: %w", prefix, err)
	}
	return key, nil
}

// Head returns the partition's latest commit, or nil if it has none. One
// LIST and one GET, whatever the archive size.
//
// In a format-version-3 archive the head may be the newest entry of the
// partition's uncompacted tail (docs/FORMAT.md §12.4): that adds the newest
// claim (LIST, GET), its writer's newest tail index (LIST, two ranged GETs)
// and the tables of the writer's flush objects after it.
func (p *PartitionLog) Head(ctx context.Context) (*Commit, error) {
	c, err := p.compactedHead(ctx)
	if err != nil || !p.packed() {
		return c, err
	}
	v, err := p.tailView(ctx, true)
	if err != nil || v.newest() == nil || c != nil && v.newest().End <= c.End {
		return c, err
	}
	e, err := p.readEntry(ctx, v, *v.newest())
	if err != nil {
		return nil, err
	}
	return e.commit, nil
}

// CompactedHead is the head of the partition's compacted chain (its
// commits/ entries), nil if it has none: the Head of a version-1 or -2
// archive.
func (p *PartitionLog) CompactedHead(ctx context.Context) (*Commit, error) {
	return p.compactedHead(ctx)
}

func (p *PartitionLog) compactedHead(ctx context.Context) (*Commit, error) {
	key, err := p.firstAfter(ctx, p.prefix+"commits/", "")
	if err != nil || key == "" {
		return nil, err
	}
	k, err := ParseKey(key)
	if err != nil || k.Kind != KeyCommit {
		return nil, fmt.Errorf("%s: %w", key, corruptf("not a commit key"))
	}
	return p.readCommit(ctx, key, k.Start)
}

// CommitAt returns the commit whose range starts exactly at start (one GET),
// or an error wrapping store.ErrNotFound.
func (p *PartitionLog) CommitAt(ctx context.Context, start int64) (*Commit, error) {
	c, err := p.readCommit(ctx, CommitKey(p.prefix, start), start)
	if err == nil || !errors.Is(err, store.ErrNotFound) || !p.packed() {
		return c, err
	}
	tc, terr := p.tailLookup(ctx, start)
	if terr != nil {
		return nil, terr
	}
	if tc == nil || tc.Start > start {
		return nil, err
	}
	if tc.Start < start {
		// A tail entry straddling the compacted chain's end (a compaction
		// raced a change of owner, docs/FORMAT.md §12.4) is the next
		// commit after it; anywhere else it is not the commit at start.
		if prev, perr := p.find(ctx, start-1); perr != nil || prev.End != start-1 || !isCompacted(prev) {
			return nil, err
		}
	}
	return tc, nil
}

// isCompacted reports whether c is a commit of the compacted chain (not a
// tail entry).
func isCompacted(c *Commit) bool {
	k, err := ParseKey(c.SegmentKey)
	return err == nil && k.Kind == KeySegment
}

// tailView returns the partition's tail as last found, or finds it anew
// (refresh, or never found): nil without claims.
func (p *PartitionLog) tailView(ctx context.Context, refresh bool) (*tailView, error) {
	p.tailMu.Lock()
	defer p.tailMu.Unlock()
	if p.tailLoaded && !refresh {
		return p.tail, nil
	}
	v, err := p.loadTail(ctx)
	if err != nil {
		return nil, err
	}
	p.tail, p.tailLoaded = v, true
	return v, nil
}

// tailLookup returns the tail entry holding offset (finding the tail anew
// once if the tail as last found ends before it), or nil.
func (p *PartitionLog) tailLookup(ctx context.Context, offset int64) (*Commit, error) {
	for _, refresh := range []bool{false, true} {
		v, err := p.tailView(ctx, refresh)
		if err != nil || v == nil {
			return nil, err
		}
		p.tailMu.Lock()
		c, err := p.tailFind(ctx, v, offset)
		p.tailMu.Unlock()
		if err != nil || c != nil {
			return c, err
		}
	}
	return nil, nil
}

// Find returns the commit whose range contains offset: one LIST (the first
// commit key at or after the inverted offset) and one GET, after the
// archive start (ArchiveStart: one LIST, and a GET if there is a marker, on
// the PartitionLog's first read). It returns an error wrapping
// ErrOutOfRange if offset is past the archive's end, and an *ExpiredError
// (ErrExpired) if it is below the archive start.
func (p *PartitionLog) Find(ctx context.Context, offset int64) (*Commit, error) {
	if offset < 0 {
		return nil, fmt.Errorf("%s offset %d: %w", p, offset, ErrOutOfRange)
	}
	st, err := p.ArchiveStart(ctx)
	if err != nil {
		return nil, err
	}
	if offset < st.StartOffset() {
		return nil, p.expired(st, fmt.Sprintf("offset %d", offset))
	}
	return p.find(ctx, offset)
}

// find is Find without the archive start.
func (p *PartitionLog) find(ctx context.Context, offset int64) (*Commit, error) {
	marker := ""
	if inv := Invert(offset); inv > 0 {
		marker = CommitKey(p.prefix, offset+1) // keys after it have start <= offset
	}
	key, err := p.firstAfter(ctx, p.prefix+"commits/", marker)
	if err != nil {
		return nil, err
	}
	if key == "" {
		return p.findTail(ctx, offset, -1)
	}
	k, err := ParseKey(key)
	if err != nil || k.Kind != KeyCommit {
		return nil, fmt.Errorf("%s: %w", key, corruptf("not a commit key"))
	}
	c, err := p.readCommit(ctx, key, k.Start)
	if err != nil {
		return nil, err
	}
	if !c.Covers(offset) {
		return p.findTail(ctx, offset, c.End)
	}
	return c, nil
}

// findTail is find for an offset above the compacted chain's end.
func (p *PartitionLog) findTail(ctx context.Context, offset, end int64) (*Commit, error) {
	if p.packed() {
		c, err := p.tailLookup(ctx, offset)
		if err != nil || c != nil {
			return c, err
		}
		if v, err := p.tailView(ctx, false); err == nil && v.newest() != nil {
			end = max(end, v.newest().End)
		}
	}
	if end < 0 {
		return nil, fmt.Errorf("%s offset %d: %w (nothing archived)", p, offset, ErrOutOfRange)
	}
	return nil, fmt.Errorf("%s offset %d: %w (archive ends at %d)", p, offset, ErrOutOfRange, end)
}

// FindTime returns the first commit holding a record with timestamp >= ts
// (after == false) or > ts (after == true): the first commit whose
// partition-wide running maximum timestamp reaches it. One LIST and one GET.
// It returns an error wrapping ErrOutOfRange if no archived record
// qualifies, and an *ExpiredError (ErrExpired) if the first record that
// qualifies may be below the archive start: a record below it reaches the
// timestamp (its running maximum timestamp does).
func (p *PartitionLog) FindTime(ctx context.Context, ts int64, after bool) (*Commit, error) {
	what := "time " + FormatTime(ts)
	if after {
		if ts == math.MaxInt64 {
			return nil, fmt.Errorf("%s time > %d: %w", p, ts, ErrOutOfRange)
		}
		what = "time after " + FormatTime(ts)
		ts++
	}
	st, err := p.ArchiveStart(ctx)
	if err != nil {
		return nil, err
	}
	if st != nil && st.Below.RunningMaxTimestamp != nil && ts <= *st.Below.RunningMaxTimestamp {
		return nil, p.expired(st, what)
	}
	c, err := p.findTime(ctx, ts)
	if err == nil || !errors.Is(err, ErrOutOfRange) || !p.packed() {
		return c, err
	}
	floor := int64(-1)
	if h, herr := p.compactedHead(ctx); herr != nil {
		return nil, herr
	} else if h != nil {
		floor = h.End
	}
	for _, refresh := range []bool{false, true} {
		v, verr := p.tailView(ctx, refresh)
		if verr != nil || v == nil {
			return nil, cmp.Or(verr, err)
		}
		p.tailMu.Lock()
		tc, terr := p.tailFindTime(ctx, v, ts, floor)
		p.tailMu.Unlock()
		if terr != nil || tc != nil {
			return tc, terr
		}
	}
	return nil, err
}

// Append commits a finished segment after head (nil for the first commit):
// it writes the segment object, then the commit entry with a conditional
// create (the commit point), then the time-index key. If another writer
// committed the same start first, it deletes its own segment and returns an
// error wrapping ErrFenced.
func (p *PartitionLog) Append(ctx context.Context, head *Commit, seg []byte, info SegmentInfo, writer string, nowMs int64) (*Commit, error) {
	return p.appendSegment(ctx, head, bytes.NewReader(seg), int64(len(seg)), info, writer, nowMs)
}

// AppendBody is Append of a segment held as a SegmentBody (as
// SegmentWriter.FinishBody returns it), written without assembling it.
//
// A streamed body (SegmentBody.Streamed) is published under its key
// instead; an attempt after a failed one reuses the key it was published
// under. If its staged object is incomplete or its publishing failed, the
// segment's bytes are gone and the error wraps ErrSegmentLost: the caller
// must build the segment again from its records.
func (p *PartitionLog) AppendBody(ctx context.Context, head *Commit, seg *SegmentBody, info SegmentInfo, writer string, nowMs int64) (*Commit, error) {
	if !seg.Streamed() {
		return p.appendSegment(ctx, head, seg.Reader(), seg.Size(), info, writer, nowMs)
	}
	write := func(key string) error {
		if seg.streamErr != nil {
			seg.staged.Abort()
			return fmt.Errorf("write segment %s: %w: %w", key, ErrSegmentLost, seg.streamErr)
		}
		if err := seg.staged.Publish(ctx, key, store.PutOptions{IfNotExists: true}); err != nil {
			// The outcome may be unknown (a lost response): look.
			if oi, serr := p.st.Stat(ctx, key); serr != nil || oi.Size != seg.size || errors.Is(err, store.ErrAborted) {
				return fmt.Errorf("write segment %s: %w: %w", key, ErrSegmentLost, err)
			}
		}
		seg.key = key
		return nil
	}
	if seg.key != "" { // published by an earlier attempt
		write = func(string) error { return nil }
	}
	return p.commitSegment(ctx, head, info, writer, nowMs, seg.key, write)
}

// ErrSegmentLost: a streamed segment's staged object could not be
// completed or published, so its bytes are gone.
var ErrSegmentLost = errors.New("the streamed segment is lost: archive its records again")

func (p *PartitionLog) appendSegment(ctx context.Context, head *Commit, seg io.Reader, size int64, info SegmentInfo, writer string, nowMs int64) (*Commit, error) {
	return p.commitSegment(ctx, head, info, writer, nowMs, "", func(segKey string) error {
		// The nonce makes the key ours alone: ErrExists can only mean a
		// retried PUT whose first attempt landed.
		err := p.st.Put(ctx, segKey, seg, size, store.PutOptions{IfNotExists: true})
		if err != nil && !errors.Is(err, store.ErrExists) {
			return fmt.Errorf("write segment %s: %w", segKey, err)
		}
		return nil
	})
}

// commitSegment writes a segment with write under segKey (a new key with a
// nonce if ""), then its commit entry and time-index key.
func (p *PartitionLog) commitSegment(ctx context.Context, head *Commit, info SegmentInfo, writer string, nowMs int64, segKey string, write func(segKey string) error) (*Commit, error) {
	if segKey == "" {
		var err error
		if segKey, err = p.newSegmentKey(info); err != nil {
			return nil, err
		}
	}
	c, err := Next(head, p.Topic, p.TopicID, p.Partition, segKey, info, writer, nowMs)
	if err != nil {
		return nil, err
	}
	if err := write(segKey); err != nil {
		return nil, err
	}
	body := AppendCommit(nil, c)
	key := CommitKey(p.prefix, c.Start)
	if err := p.st.Put(ctx, key, bytes.NewReader(body), int64(len(body)), store.PutOptions{IfNotExists: true}); err != nil {
		if errors.Is(err, store.ErrExists) {
			// A retried PUT may report ErrExists for our own commit.
			if got, gerr := p.CommitAt(ctx, c.Start); gerr == nil && got.SegmentKey == segKey {
				return c, p.writeTimeKey(ctx, head, c)
			}
			_ = p.st.Delete(ctx, segKey) // ours, never referenced; best effort (verify reports leftovers)
			return nil, fmt.Errorf("%s commit at offset %d: %w", p, c.Start, ErrFenced)
		}
		// The outcome is unknown (the PUT may have landed): the caller must
		// reload the head before writing again. The segment stays; if the
		// commit did not land it is an orphan that verify reports.
		return nil, fmt.Errorf("write commit %s: %w", key, err)
	}
	if err := p.writeTimeKey(ctx, head, c); err != nil {
		return c, err
	}
	return c, nil
}

// newSegmentKey is a new key for a segment of info's range: a random
// nonce makes it this writer's alone.
func (p *PartitionLog) newSegmentKey(info SegmentInfo) (string, error) {
	var nonce [8]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return "", fmt.Errorf("segment nonce: %w", err)
	}
	return SegmentKey(p.prefix, info.Start, info.End, hex.EncodeToString(nonce[:])), nil
}

// writeTimeKey writes c's time-index key if its running max rose above prev's.
func (p *PartitionLog) writeTimeKey(ctx context.Context, prev, c *Commit) error {
	if c.RunningMaxTimestamp == math.MinInt64 || (prev != nil && prev.RunningMaxTimestamp >= c.RunningMaxTimestamp) {
		return nil
	}
	key := TimeKey(p.prefix, c.RunningMaxTimestamp, c.Start)
	if err := p.st.Put(ctx, key, bytes.NewReader(nil), 0, store.PutOptions{}); err != nil {
		return fmt.Errorf("write time index %s (the commit landed; rerun repairs it): %w", key, err)
	}
	return nil
}

// RepairHead makes sure the head commit's time-index key exists (a writer
// may have stopped between the commit and the time key). Writers MUST call
// it after loading the head and before their first commit.
func (p *PartitionLog) RepairHead(ctx context.Context, head *Commit) error {
	if head == nil || head.RunningMaxTimestamp == math.MinInt64 {
		return nil
	}
	var prev *Commit
	if head.Start > 0 {
		var err error
		if prev, err = p.find(ctx, head.Start-1); err != nil {
			// The previous commit may be expired and deleted: the newest
			// marker carries its running maximum.
			st, lerr := p.LoadStart(ctx)
			if lerr != nil || head.Start > st.StartOffset() {
				return err
			}
			prev = &Commit{RunningMaxTimestamp: math.MinInt64}
			if r := st.Below.RunningMaxTimestamp; r != nil {
				prev.RunningMaxTimestamp = *r
			}
		}
	}
	if prev != nil && prev.RunningMaxTimestamp >= head.RunningMaxTimestamp {
		return nil
	}
	key := TimeKey(p.prefix, head.RunningMaxTimestamp, head.Start)
	if _, err := p.st.Stat(ctx, key); err == nil {
		return nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("stat %s: %w", key, err)
	}
	return p.writeTimeKey(ctx, prev, head)
}

// readRange reads bytes [off, off+n) of the commit's segment.
func (p *PartitionLog) readRange(ctx context.Context, c *Commit, off, n int64) ([]byte, error) {
	if n >= 0 && n <= maxPreallocRead {
		// The length is known: one buffer, no growing and copying.
		b := make([]byte, n)
		return b, p.readRangeInto(ctx, c, off, b)
	}
	rc, err := p.st.GetRange(ctx, c.SegmentKey, c.SegmentOffset+off, n)
	if err != nil {
		return nil, fmt.Errorf("read segment %s: %w", c.SegmentKey, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, n))
	if err != nil {
		return nil, fmt.Errorf("read segment %s: %w", c.SegmentKey, err)
	}
	if int64(len(b)) != n {
		return nil, fmt.Errorf("segment %s: %w", c.SegmentKey, corruptf("truncated: %d of %d bytes at %d", len(b), n, off))
	}
	return b, nil
}

// maxPreallocRead is the largest range readRange reads into a buffer of the
// range's length allocated up front (larger ones, whose lengths come from
// possibly corrupt metadata, grow with what the store returns).
const maxPreallocRead = 64 << 20

// readRangeInto reads len(b) bytes at off of the commit's segment into b.
func (p *PartitionLog) readRangeInto(ctx context.Context, c *Commit, off int64, b []byte) error {
	n := int64(len(b))
	rc, err := p.st.GetRange(ctx, c.SegmentKey, c.SegmentOffset+off, n)
	if err != nil {
		return fmt.Errorf("read segment %s: %w", c.SegmentKey, err)
	}
	defer rc.Close()
	k, err := io.ReadFull(rc, b)
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("segment %s: %w", c.SegmentKey, corruptf("truncated: %d of %d bytes at %d", k, n, off))
	}
	if err != nil {
		return fmt.Errorf("read segment %s: %w", c.SegmentKey, err)
	}
	return nil
}

// ReadIndex reads the commit's segment index with one ranged GET and checks
// it against the commit.
func (p *PartitionLog) ReadIndex(ctx context.Context, c *Commit) (*Index, error) {
	b, err := p.readRange(ctx, c, c.IndexPosition, c.IndexLength)
	if err != nil {
		return nil, err
	}
	ix, err := DecodeIndex(b)
	if err != nil {
		return nil, fmt.Errorf("segment %s: %w", c.SegmentKey, err)
	}
	if err := CheckIndex(c, ix); err != nil {
		return nil, fmt.Errorf("segment %s: %w", c.SegmentKey, err)
	}
	return ix, nil
}

// CheckIndex checks that ix accounts for exactly the commit's offsets: the
// blocks' records and the gaps tile [Start, End] in order.
func CheckIndex(c *Commit, ix *Index) error {
	next := c.Start
	var records int64
	var gaps [NumGapReasons]int64
	gi := 0
	consumeGaps := func(upTo int64) error { // gaps before upTo
		for gi < len(ix.Gaps) && ix.Gaps[gi].From < upTo {
			g := ix.Gaps[gi]
			if g.From != next || g.To >= upTo {
				return corruptf("gap %d..%d does not follow offset %d", g.From, g.To, next-1)
			}
			gaps[g.Reason] += g.Len()
			next = g.To + 1
			gi++
		}
		return nil
	}
	var lastPos int64 = segHeaderSize
	for i, bl := range ix.Blocks {
		if err := consumeGaps(bl.FirstOffset); err != nil {
			return err
		}
		if bl.FirstOffset != next {
			return corruptf("block %d starts at offset %d, expected %d", i, bl.FirstOffset, next)
		}
		// Offsets inside a block without a record must be gaps: the block's
		// span is its records plus the gaps strictly inside it.
		var inner int64
		for ; gi < len(ix.Gaps) && ix.Gaps[gi].From < bl.LastOffset; gi++ {
			g := ix.Gaps[gi]
			if g.From <= bl.FirstOffset || g.To >= bl.LastOffset {
				return corruptf("gap %d..%d straddles block %d (%d..%d)", g.From, g.To, i, bl.FirstOffset, bl.LastOffset)
			}
			gaps[g.Reason] += g.Len()
			inner += g.Len()
		}
		if bl.Records+inner != bl.LastOffset-bl.FirstOffset+1 {
			return corruptf("block %d spans %d offsets but holds %d records and %d gap offsets", i, bl.LastOffset-bl.FirstOffset+1, bl.Records, inner)
		}
		next = bl.LastOffset + 1
		records += bl.Records
		lastPos = bl.Position + bl.Length
	}
	if err := consumeGaps(math.MaxInt64); err != nil {
		return err
	}
	if next != c.End+1 {
		return corruptf("index covers up to offset %d, commit says %d", next-1, c.End)
	}
	if records != c.Records || gaps != c.GapOffsets {
		return corruptf("index holds %d records and gaps %v, commit says %d and %v", records, gaps, c.Records, c.GapOffsets)
	}
	if lastPos != c.IndexPosition {
		return corruptf("blocks end at byte %d, index starts at %d", lastPos, c.IndexPosition)
	}
	return nil
}

// ReadBlock reads and decodes one block of the commit's segment.
func (p *PartitionLog) ReadBlock(ctx context.Context, c *Commit, bi BlockInfo) ([]Record, error) {
	return p.readBlockInto(ctx, nil, nil, c, bi)
}

// BlockBuffers supplies the buffers ScanBuffered reads and decompresses
// blocks into, e.g. recycled ones.
type BlockBuffers interface {
	// Get returns a buffer of length n (its contents are overwritten).
	Get(n int) []byte
	// Put takes back a buffer from Get that no record aliases (a
	// compressed block's stored bytes, or the buffers of a block that
	// failed to read or decode).
	Put(b []byte)
}

// readBlockBuffered is readBlockInto with the block's buffers from bufs.
// It returns the buffer the records alias (ScanItem.Buffer).
func (p *PartitionLog) readBlockBuffered(ctx context.Context, recs []Record, ha *headerArena, bufs BlockBuffers, c *Commit, bi BlockInfo) ([]Record, []byte, error) {
	if bi.Length < blockHeaderSize || bi.Length > blockHeaderSize+MaxBlockPayload {
		return nil, nil, fmt.Errorf("segment %s: %w", c.SegmentKey, corruptf("block at byte %d: length %d out of range", bi.Position, bi.Length))
	}
	raw := bufs.Get(int(bi.Length))
	if err := p.readRangeInto(ctx, c, bi.Position, raw); err != nil {
		bufs.Put(raw)
		return nil, nil, err
	}
	var out []byte
	recs, inRaw, err := decodeBlock(recs, ha, raw, bi, func(n int) []byte {
		out = bufs.Get(n)
		return out
	})
	if err != nil {
		bufs.Put(raw)
		if out != nil {
			bufs.Put(out)
		}
		return nil, nil, fmt.Errorf("segment %s: %w", c.SegmentKey, err)
	}
	if inRaw {
		return recs, raw, nil
	}
	bufs.Put(raw)
	return recs, out, nil
}

// readBlockInto is ReadBlock decoding into recs (DecodeBlockInto), with
// the header lists from ha when it is not nil.
func (p *PartitionLog) readBlockInto(ctx context.Context, recs []Record, ha *headerArena, c *Commit, bi BlockInfo) ([]Record, error) {
	b, err := p.readRange(ctx, c, bi.Position, bi.Length)
	if err != nil {
		return nil, err
	}
	recs, _, err = decodeBlock(recs, ha, b, bi, nil)
	if err != nil {
		return nil, fmt.Errorf("segment %s: %w", c.SegmentKey, err)
	}
	return recs, nil
}

// BlockForOffset returns the index of the first block whose last offset is
// >= offset, or len(Blocks).
func (ix *Index) BlockForOffset(offset int64) int {
	return sort.Search(len(ix.Blocks), func(i int) bool { return ix.Blocks[i].LastOffset >= offset })
}

// BlockForTime returns the index of the first block holding a record with
// timestamp >= ts, or len(Blocks), using the running maximum.
func (ix *Index) BlockForTime(ts int64) int {
	return sort.Search(len(ix.Blocks), func(i int) bool { return ix.Blocks[i].RunningMaxTimestamp >= ts })
}
