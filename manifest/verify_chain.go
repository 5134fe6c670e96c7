package manifest

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/kbackup/kbackup/store"
)

// partitionVerifier verifies one partition.
type partitionVerifier struct {
	p    *PartitionLog
	emit func(Finding)
	res  VerifyResult
	buf  []byte // one block, reused
	// recs, hdrs and out are the decoded records of one block, their
	// header lists and its decompressed payload, reused from block to
	// block.
	recs []Record
	hdrs headerArena
	out  []byte
	// holeFrom..holeTo are the offsets of the missing or unreadable
	// commits since the last good one (holeFrom < 0: none). Their segments
	// and time keys are not reported as strays.
	holeFrom, holeTo int64
	// start is the archive start (0: nothing expired), marker its newest
	// marker if readable. Objects below start await deletion: the chain is
	// verified from start.
	start  int64
	marker *ArchiveStart
}

// expiredObject reports whether an object of a commit starting at start
// lies below the archive start (expired, awaiting deletion), counting it.
func (v *partitionVerifier) expiredObject(start int64) bool {
	if start < v.start {
		v.res.AwaitingDeletion++
		return true
	}
	return false
}

// loadStart reads the partition's archive-start markers: the newest sets
// where the chain starts; every marker must decode.
func (v *partitionVerifier) loadStart(ctx context.Context) error {
	pg := newPager(v.p.st, v.p.prefix+"start/", "")
	newest := true
	for {
		e, ok, err := pg.next(ctx)
		if err != nil {
			return v.listErr(ctx, pg, err)
		}
		if !ok {
			return nil
		}
		k, perr := ParseKey(e.Key)
		if perr != nil || k.Kind != KeyStart || k.Topic != v.p.Topic || k.TopicID != v.p.TopicID || k.Partition != v.p.Partition {
			v.finding(SeverityWarning, e.Key, -1, -1, "unexpected object (not an archive start key of this partition)")
			continue
		}
		m, err := v.p.readStart(ctx, e.Key, k.Start)
		if errors.Is(err, store.ErrNotFound) {
			continue // superseded and deleted by a deletion pass since the listing
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			v.finding(SeverityProblem, e.Key, k.Start, -1, "archive start marker unreadable: %v", err)
		}
		if newest {
			v.start, v.marker, newest = k.Start, m, false
		}
	}
}

// startPrev stands for the expired commit ending at the archive start, from
// its marker's totals, so that the first commit of the chain is checked
// like any other (its first timestamp and first record offset, which the
// marker does not carry, are taken from the commit itself).
func (v *partitionVerifier) startPrev(c *Commit) *Commit {
	m := v.marker
	if m == nil || c.Start != m.Start {
		return nil
	}
	prev := &Commit{Topic: c.Topic, TopicID: c.TopicID, Partition: c.Partition, Seq: m.Below.Commits - 1,
		Start: m.Start - 1, End: m.Start - 1, RunningMaxTimestamp: math.MinInt64, TotalRecords: m.Below.Records,
		TotalBytes: m.Below.Bytes, TotalGapOffsets: m.Below.GapOffsets.Array(),
		FirstTimestamp: c.FirstTimestamp, FirstRecordedStart: c.FirstRecordedStart}
	if r := m.Below.RunningMaxTimestamp; r != nil {
		prev.RunningMaxTimestamp = *r
	}
	return prev
}

// inHole reports whether start is the start of a missing or unreadable commit.
func (v *partitionVerifier) inHole(start int64) bool {
	return v.holeFrom >= 0 && start >= v.holeFrom && (v.holeTo < 0 || start <= v.holeTo)
}

func (v *partitionVerifier) finding(sev Severity, key string, from, to int64, format string, args ...any) {
	v.emit(Finding{Severity: sev, Topic: v.p.Topic, TopicID: v.p.TopicID, Partition: v.p.Partition,
		Key: key, From: from, To: to, Message: fmt.Sprintf(format, args...)})
}

// commitStarts lists the partition's commit keys (head first): it returns
// how many there are and the head's start (-1 if none), reporting objects
// that are not commit keys.
func (v *partitionVerifier) commitStarts(ctx context.Context) (n int64, headStart int64, err error) {
	headStart = -1
	pg := newPager(v.p.st, v.p.prefix+"commits/", "")
	for {
		e, ok, err := pg.next(ctx)
		if err != nil || !ok {
			return n, headStart, err
		}
		k, perr := ParseKey(e.Key)
		if perr != nil || k.Kind != KeyCommit || k.Topic != v.p.Topic || k.TopicID != v.p.TopicID || k.Partition != v.p.Partition {
			v.finding(SeverityWarning, e.Key, -1, -1, "unexpected object (not a commit key of this partition)")
			continue
		}
		if headStart < 0 {
			headStart = k.Start
		}
		if v.expiredObject(k.Start) {
			continue
		}
		n++
	}
}

// nextStart returns the smallest commit start > x, or -1 if none. It lists
// the commit keys from the head down to x: only used to step over a hole
// in the chain.
func (v *partitionVerifier) nextStart(ctx context.Context, x int64) (int64, error) {
	stopAt := CommitKey(v.p.prefix, x)
	next := int64(-1)
	pg := newPager(v.p.st, v.p.prefix+"commits/", "")
	for {
		e, ok, err := pg.next(ctx)
		if err != nil || !ok || e.Key >= stopAt {
			return next, err
		}
		if k, err := ParseKey(e.Key); err == nil && k.Kind == KeyCommit && k.Start > x {
			next = k.Start
		}
	}
}

// chainVisit is called for every commit key of the chain walk: c is the
// commit at start (nil if missing or unreadable, with err), next the start
// the walk continues at (-1: the end).
type chainVisit func(start int64, c *Commit, err error, next int64) error

// walk visits the chain from the archive start to the head start, stepping
// over missing or unreadable commits to the next commit key.
func (v *partitionVerifier) walk(ctx context.Context, headStart int64, visit chainVisit) error {
	x := v.start
	for x >= 0 && x <= headStart {
		c, err := v.p.CommitAt(ctx, x)
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil {
			if verr := visit(x, c, nil, c.End+1); verr != nil {
				return verr
			}
			x = c.End + 1
			continue
		}
		next, lerr := v.nextStart(ctx, x)
		if lerr != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			v.finding(SeverityProblem, v.p.prefix+"commits/", x, -1, "cannot list commits to step over a broken chain: %v", lerr)
			return nil
		}
		if verr := visit(x, nil, err, next); verr != nil {
			return verr
		}
		x = next
	}
	return nil
}

// run verifies the partition and returns its head (nil if none or unreadable).
func (v *partitionVerifier) run(ctx context.Context) (*Commit, error) {
	if err := v.loadStart(ctx); err != nil {
		return nil, err
	}
	listed, headStart, err := v.commitStarts(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		v.finding(SeverityProblem, v.p.prefix+"commits/", -1, -1, "cannot list commits: %v", err)
		return nil, nil
	}
	if v.start > 0 {
		v.res.ExpiredOffsets = v.start
		if v.start > headStart {
			v.finding(SeverityProblem, StartKey(v.p.prefix, v.start), v.start, -1,
				"archive start %d is beyond the head commit's start %d: an expiry never passes the head (corrupt marker or lost commits)", v.start, headStart)
			return nil, nil
		}
	}
	segs := newPager(v.p.st, v.p.prefix+"segments/", "")
	times := newPager(v.p.st, v.p.prefix+"time/", "")
	var (
		prev    *Commit // the previous commit, if readable and adjacent
		head    *Commit
		visited int64
	)
	err = v.walk(ctx, headStart, func(start int64, c *Commit, cerr error, next int64) error {
		visited++
		if c == nil {
			key := CommitKey(v.p.prefix, start)
			to := next - 1
			what := "commit missing: no commit covers these offsets"
			if start == v.start && start > 0 && errors.Is(cerr, store.ErrNotFound) {
				what = fmt.Sprintf("no commit starts at the archive start %d (its marker %s names an offset that is not a commit's start: corruption)",
					v.start, StartKey(v.p.prefix, v.start))
			}
			if !errors.Is(cerr, store.ErrNotFound) {
				what = fmt.Sprintf("commit unreadable, offsets unverified: %v", cerr)
			} else {
				visited-- // nothing was there
			}
			if next < 0 {
				to = -1
			}
			v.finding(SeverityProblem, key, start, to, "%s", what)
			if v.holeFrom < 0 {
				v.holeFrom = start
			}
			v.holeTo = to
			prev = nil
			return nil
		}
		if start == headStart {
			head = c
		}
		if start == v.start && start > 0 {
			prev = v.startPrev(c)
		}
		v.res.Commits++
		v.checkLink(prev, c, CommitKey(v.p.prefix, c.Start))
		if err := v.checkTimeKey(ctx, times, prev, c, start == headStart); err != nil {
			return err
		}
		size, found, err := v.matchSegment(ctx, segs, c)
		if err != nil {
			return err
		}
		if err := v.checkSegment(ctx, c, size, found); err != nil {
			return err
		}
		prev = c
		v.holeFrom = -1
		return nil
	})
	if err != nil {
		return nil, err
	}
	// The uncompacted tail (format version 3) continues the chain.
	if head, err = v.verifyTail(ctx, head, headStart); err != nil {
		return nil, err
	}
	// Everything left in the listings after the head is unreferenced.
	if err := v.drainSegments(ctx, segs, math.MaxInt64); err != nil {
		return nil, err
	}
	if err := v.drainTimes(ctx, times, ""); err != nil {
		return nil, err
	}
	if listed > visited {
		if err := v.findOffChain(ctx, headStart); err != nil {
			return nil, err
		}
	}
	return head, nil
}

// commitInfo is the SegmentInfo c was made from.
func commitInfo(c *Commit) SegmentInfo {
	return SegmentInfo{Start: c.Start, End: c.End, Records: c.Records, FirstOffset: c.FirstOffset,
		LastOffset: c.LastOffset, MinTimestamp: c.MinTimestamp, MaxTimestamp: c.MaxTimestamp,
		Size: c.SegmentSize, IndexPosition: c.IndexPosition, IndexLength: c.IndexLength,
		CRC32C: c.SegmentCRC32C, GapOffsets: c.GapOffsets}
}

// checkLink checks c (named key) against the previous commit of the chain (nil: c is
// the first commit, or follows a hole and cannot be checked).
func (v *partitionVerifier) checkLink(prev, c *Commit, key string) {
	if prev == nil && c.Start != 0 {
		return
	}
	want, err := Next(prev, c.Topic, c.TopicID, c.Partition, c.SegmentKey, commitInfo(c), c.Writer, c.CommittedAt)
	if err != nil {
		v.finding(SeverityProblem, key, c.Start, c.End, "commit does not follow the previous one: %v", err)
		return
	}
	switch {
	case want.Seq != c.Seq:
		v.finding(SeverityProblem, key, c.Start, c.End, "sequence number %d, expected %d", c.Seq, want.Seq)
	case want.TotalRecords != c.TotalRecords || want.TotalBytes != c.TotalBytes || want.TotalGapOffsets != c.TotalGapOffsets:
		v.finding(SeverityProblem, key, c.Start, c.End, "running totals (records %d, bytes %d, gaps %v) do not add up (expected %d, %d, %v)",
			c.TotalRecords, c.TotalBytes, c.TotalGapOffsets, want.TotalRecords, want.TotalBytes, want.TotalGapOffsets)
	case want.RunningMaxTimestamp != c.RunningMaxTimestamp || want.FirstTimestamp != c.FirstTimestamp ||
		want.FirstRecordedStart != c.FirstRecordedStart:
		v.finding(SeverityProblem, key, c.Start, c.End, "running timestamps or first record offset inconsistent with the previous commit")
	}
}

// checkTimeKey matches c against the time index listing, reporting the
// keys before c's as strays and c's key as missing if its running maximum
// rose (known only when prev is known).
func (v *partitionVerifier) checkTimeKey(ctx context.Context, times *pager, prev, c *Commit, isHead bool) error {
	if c.RunningMaxTimestamp == math.MinInt64 {
		return nil // no record yet: no time key
	}
	want := TimeKey(v.p.prefix, c.RunningMaxTimestamp, c.Start)
	if err := v.drainTimes(ctx, times, want); err != nil {
		return err
	}
	e, ok, err := times.peek(ctx)
	if err != nil {
		return v.listErr(ctx, times, err)
	}
	if ok && e.Key == want {
		times.skip()
		return nil
	}
	known := prev != nil || c.Start == 0
	rose := prev == nil || c.RunningMaxTimestamp > prev.RunningMaxTimestamp
	if !known || !rose {
		return nil
	}
	if isHead {
		v.finding(SeverityWarning, want, c.Start, c.End,
			"time index key of the head commit missing (a writer stopped between commit and time key; the next archiver run repairs it); time seeks miss this commit until then")
		return nil
	}
	v.finding(SeverityProblem, want, c.Start, c.End,
		"time index key missing: the running maximum timestamp rose to %d here, so time seeks cannot find this commit", c.RunningMaxTimestamp)
	return nil
}

// drainTimes reports every listed time key before upTo ("" = all) as
// having no commit.
func (v *partitionVerifier) drainTimes(ctx context.Context, times *pager, upTo string) error {
	for {
		e, ok, err := times.peek(ctx)
		if err != nil {
			return v.listErr(ctx, times, err)
		}
		if !ok || (upTo != "" && e.Key >= upTo) {
			return nil
		}
		times.skip()
		k, perr := ParseKey(e.Key)
		if perr != nil || k.Kind != KeyTime {
			v.finding(SeverityWarning, e.Key, -1, -1, "unexpected object (not a time index key)")
			continue
		}
		if v.inHole(k.Start) || v.expiredObject(k.Start) {
			continue // the key of a missing or unreadable commit (reported), or expired
		}
		v.finding(SeverityProblem, e.Key, k.Start, -1,
			"time index key without a matching commit (no readable commit at offset %d with running maximum timestamp %d)", k.Start, k.RunMax)
	}
}

// matchSegment finds c's segment in the segment listing, reporting the
// segments listed before it as orphans. It returns the segment's size and
// whether it exists.
func (v *partitionVerifier) matchSegment(ctx context.Context, segs *pager, c *Commit) (int64, bool, error) {
	if err := v.drainSegments(ctx, segs, c.Start); err != nil {
		return 0, false, err
	}
	var size int64
	found := false
	for {
		e, ok, err := segs.peek(ctx)
		if err != nil {
			return 0, false, v.listErr(ctx, segs, err)
		}
		if !ok {
			break
		}
		k, perr := ParseKey(e.Key)
		if perr == nil && k.Kind == KeySegment && k.Start > c.Start {
			break
		}
		segs.skip()
		if e.Key == c.SegmentKey {
			size, found = e.Size, true
			continue
		}
		v.orphan(e.Key, k, perr)
	}
	if found {
		return size, true, nil
	}
	// Not where version 1 writers put it: ask the store directly.
	info, err := v.p.st.Stat(ctx, c.SegmentKey)
	if errors.Is(err, store.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return 0, false, ctx.Err()
		}
		v.finding(SeverityProblem, c.SegmentKey, c.Start, c.End, "cannot stat segment: %v", err)
		return -1, true, nil
	}
	return info.Size, true, nil
}

// drainSegments reports every listed segment whose start is before upTo
// as an orphan.
func (v *partitionVerifier) drainSegments(ctx context.Context, segs *pager, upTo int64) error {
	for {
		e, ok, err := segs.peek(ctx)
		if err != nil {
			return v.listErr(ctx, segs, err)
		}
		if !ok {
			return nil
		}
		k, perr := ParseKey(e.Key)
		if perr == nil && k.Kind == KeySegment && k.Start >= upTo {
			return nil
		}
		segs.skip()
		v.orphan(e.Key, k, perr)
	}
}

func (v *partitionVerifier) orphan(key string, k Key, perr error) {
	if perr != nil || k.Kind != KeySegment {
		v.finding(SeverityWarning, key, -1, -1, "unexpected object (not a segment key)")
		return
	}
	if v.expiredObject(k.Start) {
		return // below the archive start: the deletion pass removes it
	}
	if v.inHole(k.Start) {
		v.finding(SeverityWarning, key, k.Start, k.End,
			"segment of a missing or unreadable commit: not part of the archive until the commit is restored; keep it for recovery")
		return
	}
	v.finding(SeverityWarning, key, k.Start, k.End,
		"orphan segment: no commit references it (left by a fenced or crashed writer; not part of the archive, safe to delete)")
}

// listErr turns a failed listing into a problem (or the context's error).
func (v *partitionVerifier) listErr(ctx context.Context, pg *pager, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if pg.failed {
		return nil
	}
	pg.failed = true
	v.finding(SeverityProblem, pg.prefix, -1, -1, "cannot list: %v", err)
	return nil
}

// findOffChain reports commit keys the chain walk did not reach: keys
// whose start lies inside another commit's range. It walks the chain again
// (commit GETs only) and lists the keys inside each commit's range.
func (v *partitionVerifier) findOffChain(ctx context.Context, headStart int64) error {
	return v.walk(ctx, headStart, func(start int64, c *Commit, _ error, _ int64) error {
		if c == nil || c.End == start {
			return nil
		}
		// Keys after CommitKey(End+1) have start <= End; stop at our own.
		own := CommitKey(v.p.prefix, c.Start)
		pg := newPager(v.p.st, v.p.prefix+"commits/", CommitKey(v.p.prefix, c.End+1))
		for {
			e, ok, err := pg.next(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				v.finding(SeverityProblem, v.p.prefix+"commits/", -1, -1, "cannot list: %v", err)
				return nil
			}
			if !ok || e.Key >= own {
				return nil
			}
			k, _ := ParseKey(e.Key)
			v.finding(SeverityProblem, e.Key, k.Start, -1,
				"commit off the chain: it starts inside the range %d..%d of commit %s", c.Start, c.End, own)
		}
	})
}
