package manifest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/kbackup/kbackup/store"
)

// FlushBuilder assembles one flush object (docs/FORMAT.md §12.2): per
// partition its segment body followed by its entry, then the table and
// trailer. Creating the object (PutFlush) commits every entry at once.
type FlushBuilder struct {
	writer string
	seq    int64
	key    string
	pieces [][]byte // the object so far, held where the segments are held
	pos    int64
	rows   []FlushRow
	seen   map[[20]byte]bool
	// staged is the streamed segment body the object is built in (AddBody):
	// the object's only entry, whose body is already in its staged object.
	staged *SegmentBody
}

// NewFlushBuilder starts the flush object seq of writer.
func NewFlushBuilder(writer string, seq int64) (*FlushBuilder, error) {
	if !ValidWriterID(writer) || seq < 0 || seq == math.MaxInt64 {
		return nil, fmt.Errorf("flush object %q/%d: invalid writer or seq", writer, seq)
	}
	return &FlushBuilder{writer: writer, seq: seq, key: FlushKey(writer, seq), seen: map[[20]byte]bool{}}, nil
}

// Key is the flush object's key.
func (b *FlushBuilder) Key() string { return b.key }

// Len is the number of entries added.
func (b *FlushBuilder) Len() int { return len(b.rows) }

// Size is the object's size so far (without the table).
func (b *FlushBuilder) Size() int64 { return b.pos }

// Add appends a partition's next segment under claim epoch: after prev (the
// partition's current head, compacted or in the tail; nil for its first
// commit) and prevRef (where prev is when it is a tail entry, nil when the
// tail is empty). seg reads the segment's info.Size bytes: a SegmentBody's
// Reader stays where the body holds it (the object is its pieces, not a
// copy of them), anything else is read into memory. It returns the entry's
// commit and ref: they count once PutFlush succeeds.
func (b *FlushBuilder) Add(epoch int64, prev *Commit, prevRef *EntryRef, topic string, id TopicID, partition int32,
	seg io.Reader, info SegmentInfo, nowMs int64) (*Commit, EntryRef, error) {
	pieces, err := segmentPieces(seg, info.Size)
	if err != nil {
		return nil, EntryRef{}, fmt.Errorf("flush object %s: %s/%d: %w", b.key, topic, partition, err)
	}
	return b.add(epoch, prev, prevRef, topic, id, partition, pieces, info, nowMs)
}

// add is Add of a segment held as pieces (none: in the staged object).
func (b *FlushBuilder) add(epoch int64, prev *Commit, prevRef *EntryRef, topic string, id TopicID, partition int32,
	segPieces [][]byte, info SegmentInfo, nowMs int64) (*Commit, EntryRef, error) {
	if b.staged != nil {
		return nil, EntryRef{}, fmt.Errorf("flush object %s: built in a streamed segment's staged object: it holds one entry", b.key)
	}
	var k [20]byte
	copy(k[:], id[:])
	k[16], k[17], k[18], k[19] = byte(partition>>24), byte(partition>>16), byte(partition>>8), byte(partition)
	if b.seen[k] {
		return nil, EntryRef{}, fmt.Errorf("flush object %s: %s/%d added twice", b.key, topic, partition)
	}
	if epoch < 1 {
		return nil, EntryRef{}, fmt.Errorf("flush object %s: epoch %d invalid", b.key, epoch)
	}
	if prevRef != nil && prevRef.Writer == b.writer && prevRef.Seq >= b.seq {
		// Readers refuse it (12.2): a writer's entries of a partition are
		// in ascending seqs. A seq reserved before the partition's
		// previous entry was retried under a newer one cannot be used.
		return nil, EntryRef{}, fmt.Errorf("flush object %s: %s/%d's previous entry is in this writer's flush object %d, not an older one",
			b.key, topic, partition, prevRef.Seq)
	}
	c, err := Next(prev, topic, id, partition, b.key, info, b.writer, nowMs)
	if err != nil {
		return nil, EntryRef{}, err
	}
	c.SegmentOffset = b.pos
	entry, err := AppendEntry(nil, prevRef, c)
	if err != nil {
		return nil, EntryRef{}, err
	}
	ref := EntryRef{Writer: b.writer, Seq: b.seq, Pos: b.pos + info.Size, Len: int64(len(entry)),
		Start: c.Start, End: c.End, RunMax: c.RunningMaxTimestamp}
	b.pieces = append(append(b.pieces, segPieces...), entry)
	b.pos += info.Size + int64(len(entry))
	b.rows = append(b.rows, FlushRow{TopicID: id, Partition: partition, Epoch: epoch, Ref: ref})
	b.seen[k] = true
	return c, ref, nil
}

// AddBody is Add of a segment held as a SegmentBody. A streamed body
// (SegmentBody.Streamed) can only be the object's first and only entry:
// the object is then built in the body's staged object, after the segment
// (PutFlush publishes it), so the segment's bytes are never held in
// memory or copied.
func (b *FlushBuilder) AddBody(epoch int64, prev *Commit, prevRef *EntryRef, topic string, id TopicID, partition int32,
	body *SegmentBody, info SegmentInfo, nowMs int64) (*Commit, EntryRef, error) {
	if !body.Streamed() {
		return b.Add(epoch, prev, prevRef, topic, id, partition, body.Reader(), info, nowMs)
	}
	if len(b.rows) > 0 {
		return nil, EntryRef{}, fmt.Errorf("flush object %s: a streamed segment must be its only entry", b.key)
	}
	if info.Size != body.size {
		return nil, EntryRef{}, fmt.Errorf("flush object %s: streamed segment of %d bytes, its summary says %d", b.key, body.size, info.Size)
	}
	// The segment is in the staged object already: none of it is held.
	c, ref, err := b.add(epoch, prev, prevRef, topic, id, partition, nil, info, nowMs)
	if err != nil {
		return nil, EntryRef{}, err
	}
	b.staged = body
	return c, ref, nil
}

// Streamed reports whether the object is built in a streamed segment's
// staged object (AddBody): a failed PutFlush then lost the segment's bytes
// (ErrSegmentLost) and cannot be retried.
func (b *FlushBuilder) Streamed() bool { return b.staged != nil }

// Finish returns the object's bytes as a reader and its size.
func (b *FlushBuilder) Finish() (io.Reader, int64, error) {
	t := &FlushTable{Writer: b.writer, Seq: b.seq, TablePos: b.pos, Rows: b.rows}
	table, err := AppendFlushTable(nil, t)
	if err != nil {
		return nil, 0, fmt.Errorf("flush object %s: %w", b.key, err)
	}
	return newPiecesReader(append(b.pieces[:len(b.pieces):len(b.pieces)], table)), b.pos + int64(len(table)), nil
}

// segmentPieces returns the size bytes of a segment for a flush object: a
// SegmentReader's pieces as they are held, or anything else read into
// memory.
func segmentPieces(seg io.Reader, size int64) ([][]byte, error) {
	if sr, ok := seg.(*SegmentReader); ok {
		if rest := sr.rest(); sr.Len() == int(size) {
			return rest, nil
		}
		return nil, fmt.Errorf("segment of %d bytes, its summary says %d", sr.Len(), size)
	}
	b, err := io.ReadAll(io.LimitReader(seg, size+1))
	if err != nil {
		return nil, fmt.Errorf("read segment: %w", err)
	}
	if int64(len(b)) != size {
		return nil, fmt.Errorf("segment of %d bytes or more, its summary says %d", len(b), size)
	}
	if len(b) == 0 {
		return nil, nil
	}
	return [][]byte{b}, nil
}

// PutFlush creates the flush object with create-if-absent: the commit point
// of all its entries. ErrFenced if the key exists (the writer id is not
// unique: never with NewWriterID).
func (a *Archive) PutFlush(ctx context.Context, b *FlushBuilder) error {
	if err := a.ensureWritable(ctx); err != nil {
		return err
	}
	r, size, err := b.Finish()
	if err != nil {
		return err
	}
	if b.staged != nil {
		return a.publishFlush(ctx, b, r, size)
	}
	if err := a.st.Put(ctx, b.key, r, size, store.PutOptions{IfNotExists: true}); err != nil {
		if errors.Is(err, store.ErrExists) {
			return fmt.Errorf("flush object %s: %w", b.key, ErrFenced)
		}
		return fmt.Errorf("put flush object %s: %w", b.key, err)
	}
	return nil
}

// publishFlush completes a flush object built in a streamed segment's
// staged object (AddBody): it appends rest (the entry, table and trailer)
// and publishes it with create-if-absent. Whatever the outcome the staged
// bytes are gone: an error wraps ErrFenced if the key exists, else
// ErrSegmentLost unless the object is found whole under its key.
func (a *Archive) publishFlush(ctx context.Context, b *FlushBuilder, rest io.Reader, size int64) error {
	body := b.staged
	st := body.staged
	if body.streamErr != nil {
		st.Abort()
		return fmt.Errorf("flush object %s: %w: %w", b.key, ErrSegmentLost, body.streamErr)
	}
	if _, err := io.Copy(st, rest); err != nil {
		st.Abort()
		return fmt.Errorf("flush object %s: %w: %w", b.key, ErrSegmentLost, err)
	}
	if st.Size() != size {
		st.Abort()
		return fmt.Errorf("flush object %s: %w: staged %d bytes, want %d", b.key, ErrSegmentLost, st.Size(), size)
	}
	err := st.Publish(ctx, b.key, store.PutOptions{IfNotExists: true})
	if err == nil {
		return nil
	}
	if errors.Is(err, store.ErrExists) {
		return fmt.Errorf("flush object %s: %w", b.key, ErrFenced)
	}
	// The outcome may be unknown (a lost response): look.
	if oi, serr := a.st.Stat(ctx, b.key); serr == nil && oi.Size == size && !errors.Is(err, store.ErrAborted) {
		return nil
	}
	return fmt.Errorf("publish flush object %s: %w: %w", b.key, ErrSegmentLost, err)
}

// CreateClaim creates the claim c of the partition with create-if-absent,
// after upgrading the archive to format version 3. ErrFenced if another
// writer created that epoch first.
func (p *PartitionLog) CreateClaim(ctx context.Context, c *Claim) error {
	c.FormatVersion = claimVersion
	if err := c.validate(); err != nil {
		return err
	}
	if err := p.arch.ensureWritable(ctx); err != nil {
		return err
	}
	if err := p.arch.UpgradeRootTo(ctx, PackedFormatVersion); err != nil {
		return err
	}
	body := EncodeClaim(c)
	key := ClaimKey(p.prefix, c.Epoch)
	if err := p.st.Put(ctx, key, bytes.NewReader(body), int64(len(body)), store.PutOptions{IfNotExists: true}); err != nil {
		if errors.Is(err, store.ErrExists) {
			return fmt.Errorf("claim %s: %w", key, ErrFenced)
		}
		return fmt.Errorf("create claim %s: %w", key, err)
	}
	return nil
}

// PutTailIndex writes a writer's tail index (create-if-absent; an existing
// one of the same seq is the same index written before a crash).
func (a *Archive) PutTailIndex(ctx context.Context, t *TailIndex) error {
	b, err := EncodeTailIndex(t)
	if err != nil {
		return err
	}
	key := TailIndexKey(t.Writer, t.Seq)
	if err := a.st.Put(ctx, key, bytes.NewReader(b), int64(len(b)), store.PutOptions{IfNotExists: true}); err != nil && !errors.Is(err, store.ErrExists) {
		return fmt.Errorf("put tail index %s: %w", key, err)
	}
	return nil
}

// PartitionTail is a writer's compact view of one partition's uncompacted
// tail: the anchors it puts in claims and tail indexes (every
// TailSparseEvery-th entry it appended, those it inherited) and the newest
// entry. Memory is bounded by the anchors, not by the entries. The zero
// value is an empty tail.
type PartitionTail struct {
	anchors []EntryRef // ascending by start, below newest
	newest  *EntryRef
	n       int // entries appended since the last anchor
}

// Append records a new entry (its commit succeeded).
func (t *PartitionTail) Append(r EntryRef) {
	if t.newest != nil {
		if t.n++; t.n >= TailSparseEvery || len(t.anchors) == 0 {
			t.anchors, t.n = append(t.anchors, *t.newest), 0
		}
	}
	t.newest = &r
}

// Inherit starts the tail from refs found by a reader (TailAnchors), nil
// for an empty tail.
func (t *PartitionTail) Inherit(refs *TailRefs) {
	*t = PartitionTail{}
	if refs == nil {
		return
	}
	t.anchors = append([]EntryRef{}, refs.Sparse...)
	n := refs.Newest
	t.newest, t.n = &n, TailSparseEvery-1 // the next Append makes it an anchor
}

// Newest is the last entry, or nil.
func (t *PartitionTail) Newest() *EntryRef { return t.newest }

// Empty reports whether the tail has no entry.
func (t *PartitionTail) Empty() bool { return t.newest == nil }

// TrimTo drops the entries ending at or below end (compacted).
func (t *PartitionTail) TrimTo(end int64) {
	if t.newest != nil && t.newest.End <= end {
		*t = PartitionTail{}
		return
	}
	i := 0
	for i < len(t.anchors) && t.anchors[i].End <= end {
		i++
	}
	t.anchors = append(t.anchors[:0], t.anchors[i:]...)
}

// Refs returns the refs of a claim or tail index, nil for an empty tail.
func (t *PartitionTail) Refs() *TailRefs {
	if t.newest == nil {
		return nil
	}
	return &TailRefs{Newest: *t.newest, Sparse: append([]EntryRef(nil), t.anchors...)}
}

// EntryCommit reads the commit of one tail entry of the partition (one
// ranged GET), checking that the entry is the partition's.
func (p *PartitionLog) EntryCommit(ctx context.Context, ref EntryRef) (*Commit, error) {
	e, err := p.readEntry(ctx, &tailView{cache: map[int64]*tailEntry{}, byRef: map[string]*tailEntry{}}, ref)
	if err != nil {
		return nil, err
	}
	return e.commit, nil
}

// TailAnchors returns what a reader finds of the partition's tail above
// compactedEnd (the compacted head's end, -1 for none): its anchors (the
// newest entry and the sparse refs below it) and the newest entry's commit;
// nil, nil for an empty tail. A handful of requests, whatever the tail's
// length: what a new owner carries into its claim.
func (p *PartitionLog) TailAnchors(ctx context.Context, compactedEnd int64) (*TailRefs, *Commit, error) {
	v, err := p.tailView(ctx, true)
	if err != nil || v.newest() == nil || v.newest().End <= compactedEnd {
		return nil, nil, err
	}
	p.tailMu.Lock()
	defer p.tailMu.Unlock()
	e, err := p.readEntry(ctx, v, *v.newest())
	if err != nil {
		return nil, nil, err
	}
	refs := &TailRefs{Newest: e.ref}
	for _, a := range v.anchors[:len(v.anchors)-1] {
		if a.End > compactedEnd {
			refs.Sparse = append(refs.Sparse, a)
		}
	}
	return refs, e.commit, nil
}

// TailEntries returns every entry of the partition's tail above the
// compacted chain, oldest first, as a reader finds them (walking back from
// the newest). compactedEnd is the compacted head's end (-1 for none).
func (p *PartitionLog) TailEntries(ctx context.Context, compactedEnd int64) ([]EntryRef, []*Commit, error) {
	v, err := p.tailView(ctx, true)
	if err != nil || v.newest() == nil || v.newest().End <= compactedEnd {
		return nil, nil, err
	}
	return p.EntriesAfter(ctx, *v.newest(), compactedEnd)
}

// EntriesAfter walks back from the entry newest (one ranged GET per entry,
// no listing) to the entry starting at after+1 and returns the entries
// from there to newest, oldest first: what compaction reads.
func (p *PartitionLog) EntriesAfter(ctx context.Context, newest EntryRef, after int64) ([]EntryRef, []*Commit, error) {
	// A view of its own: what it reads is not kept (a long-running writer
	// calls it once per compaction).
	v := &tailView{cache: map[int64]*tailEntry{}, byRef: map[string]*tailEntry{}}
	path, err := p.walkBack(ctx, v, newest, func(c *Commit) bool { return c.Start <= after+1 })
	if err != nil {
		return nil, nil, err
	}
	refs := make([]EntryRef, 0, len(path))
	commits := make([]*Commit, 0, len(path))
	for i := len(path) - 1; i >= 0; i-- {
		if path[i].commit.End <= after {
			continue
		}
		refs = append(refs, path[i].ref)
		commits = append(commits, path[i].commit)
	}
	// The first entry starts right after the compacted end, or straddles it
	// (a compaction raced a change of owner, §12.4).
	if len(commits) == 0 || commits[0].Start > after+1 {
		return nil, nil, fmt.Errorf("%s: %w", p, corruptf("tail reached from %s@%d does not start right after the compacted chain's end %d", newest.Key(), newest.Pos, after))
	}
	return refs, commits, nil
}

// Compact rewrites tail entries into the compacted chain (docs/FORMAT.md
// §12.5): it reads the entries' segment bodies (commits, consecutive, the
// first starting right after head, the compacted head), concatenates their
// blocks into one version-1 segment and appends it after head (segment,
// commit entry with create-if-absent: the commit point, time key). The
// blocks are copied as they are read (Concat: one block in memory, each
// checked, and each entry's body against its CRC32C); a corrupt one stops
// the compaction before its commit entry. It returns ErrFenced when
// another compactor committed that start first.
func (p *PartitionLog) Compact(ctx context.Context, head *Commit, commits []*Commit, writer string, nowMs int64) (*Commit, error) {
	return p.CompactChecked(ctx, head, commits, writer, nowMs, nil)
}

// CompactChecked is Compact with check called right before the commit
// entry is written (after the segment is): an error from it stops the
// compaction, and the segment is deleted. The archiver checks there that no
// newer claim exists, keeping the window in which a compactor that lost its
// partition can still commit as short as one request.
func (p *PartitionLog) CompactChecked(ctx context.Context, head *Commit, commits []*Commit, writer string, nowMs int64, check func(context.Context) error) (*Commit, error) {
	if len(commits) == 0 {
		return nil, fmt.Errorf("%s: nothing to compact", p)
	}
	start := int64(0)
	if head != nil {
		start = head.End + 1
	}
	parts := make([]SegmentPart, len(commits))
	for i, c := range commits {
		if i == 0 && c.Start < start && c.End >= start {
			// It straddles the compacted end: rewrite its offsets from
			// start on (its blocks below start hold offsets compacted
			// already).
			part, err := p.trimmedPart(ctx, c, start)
			if err != nil {
				return nil, err
			}
			parts[i] = part
			start = c.End + 1
			continue
		}
		if c.Start != start {
			return nil, fmt.Errorf("%s: tail entry %d..%d does not follow %d", p, c.Start, c.End, start-1)
		}
		// The index and footer now; the header and blocks as they are
		// copied (checked block by block, and the whole segment against
		// its entry's CRC32C).
		if c.IndexPosition < segHeaderSize || c.IndexPosition > c.SegmentSize-footerSize {
			return nil, fmt.Errorf("%s@%d: %w", c.SegmentKey, c.SegmentOffset, corruptf("entry %d..%d: index at %d of %d bytes", c.Start, c.End, c.IndexPosition, c.SegmentSize))
		}
		tail, err := p.readRange(ctx, c, c.IndexPosition, c.SegmentSize-c.IndexPosition)
		if err != nil {
			return nil, err
		}
		ix, err := DecodeIndex(tail[:min(int64(len(tail)), c.IndexLength)])
		if err != nil {
			return nil, fmt.Errorf("%s@%d: %w", c.SegmentKey, c.SegmentOffset, err)
		}
		if err := CheckIndex(c, ix); err != nil {
			return nil, fmt.Errorf("%s@%d: %w", c.SegmentKey, c.SegmentOffset, err)
		}
		parts[i] = SegmentPart{Start: c.Start, End: c.End, Index: ix, Tail: tail, Size: c.SegmentSize, CRC32C: c.SegmentCRC32C, CheckCRC: true,
			Open: func() (io.ReadCloser, error) {
				rc, err := p.st.GetRange(ctx, c.SegmentKey, c.SegmentOffset, c.IndexPosition)
				if err != nil {
					return nil, fmt.Errorf("read segment %s: %w", c.SegmentKey, err)
				}
				return rc, nil
			}}
		start = c.End + 1
	}
	cc, err := NewConcat(parts)
	if err != nil {
		return nil, fmt.Errorf("%s: compact %d..%d: %w", p, parts[0].Start, start-1, err)
	}
	defer cc.Close()
	return p.appendConcat(ctx, head, cc, writer, nowMs, check)
}

// putConcat writes the segment cc produces under key, create-if-absent. A
// store that stages by key (S3) takes it as it is read, into a multipart
// upload whose 5 MiB parts upload while the next is read (two held),
// instead of a Put's one part buffer (16 MiB) filled, then sent.
func (p *PartitionLog) putConcat(ctx context.Context, key string, cc *Concat) error {
	ks, ok := p.st.(store.KeyedStager)
	if !ok {
		return p.st.Put(ctx, key, cc, cc.Size(), store.PutOptions{IfNotExists: true})
	}
	st, err := ks.StageAt(ctx, key)
	if err != nil {
		return err
	}
	if _, err := io.Copy(st, cc); err != nil {
		st.Abort()
		return err
	}
	if n := st.Size(); n != cc.Size() {
		st.Abort()
		return fmt.Errorf("staged %d bytes, want %d", n, cc.Size())
	}
	return st.Publish(ctx, key, store.PutOptions{IfNotExists: true})
}

// appendConcat writes the segment cc produces as it is read (a new key with
// a nonce), then, after check, its commit entry and time key. If reading
// fails (a corrupt part), the segment is not written; if check fails, or
// another writer committed that start first, it is deleted.
func (p *PartitionLog) appendConcat(ctx context.Context, head *Commit, cc *Concat, writer string, nowMs int64, check func(context.Context) error) (*Commit, error) {
	segKey, err := p.newSegmentKey(cc.info)
	if err != nil {
		return nil, err
	}
	if err := p.putConcat(ctx, segKey, cc); err != nil {
		if cerr := cc.Err(); cerr != nil {
			err = cerr // the reason, not how the store reports a failed body
		}
		return nil, fmt.Errorf("%s: compact %d..%d: write segment %s: %w", p, cc.info.Start, cc.info.End, segKey, err)
	}
	info, err := cc.Info()
	if err == nil && check != nil {
		err = check(ctx)
	}
	if err != nil {
		_ = p.st.Delete(ctx, segKey) // ours, never referenced; best effort (verify reports leftovers)
		return nil, err
	}
	return p.commitSegment(ctx, head, info, writer, nowMs, segKey, func(string) error { return nil })
}

// trimmedPart re-encodes the records and gaps of c from offset from on as a
// segment of their own (the one case where compaction decodes: a tail entry
// straddling the compacted end).
func (p *PartitionLog) trimmedPart(ctx context.Context, c *Commit, from int64) (SegmentPart, error) {
	w := NewSegmentWriter(from, DefaultSegmentOptions())
	err := p.scanCommit(ctx, c, from, c.End, nil, func(it ScanItem) error {
		if it.Record != nil {
			return w.Append(it.Record)
		}
		return w.AddGap(it.Gap.To, it.Gap.Reason)
	})
	if err != nil {
		return SegmentPart{}, fmt.Errorf("%s: rewrite %d..%d of %s: %w", p, from, c.End, c.SegmentKey, err)
	}
	seg, info := w.Finish()
	ix, err := DecodeIndex(seg[info.IndexPosition : info.IndexPosition+info.IndexLength])
	if err != nil {
		return SegmentPart{}, err
	}
	return SegmentPart{Start: from, End: c.End, Segment: seg, Index: ix}, nil
}
