package manifest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/kbackup/kbackup/store"
)

// Marker reasons kbackup writes (ArchiveStart.Reason).
const (
	ReasonRetentionAge   = "retention-age"
	ReasonRetentionBytes = "retention-bytes"
)

// Retention is the retention of one partition. The zero value expires
// nothing.
type Retention struct {
	// Age expires the oldest whole commits whose records are all older than
	// now - Age: the commits whose running maximum timestamp (the largest
	// timestamp of theirs and every earlier record) is. 0 = no age limit.
	Age time.Duration
	// Bytes keeps at least the newest Bytes of segments (by the commits'
	// cumulative totals) and expires the whole commits before them. 0 = no
	// size limit.
	Bytes int64
}

// IsZero reports whether r expires nothing.
func (r Retention) IsZero() bool { return r.Age <= 0 && r.Bytes <= 0 }

// ExpireOptions say how Expire expires one partition. The zero value
// expires nothing.
type ExpireOptions struct {
	Retention Retention
	// Now is the policy's clock and the marker's created_ms. Zero = time.Now().
	Now time.Time
	// Writer names the expirer in the marker. "" = "kbackup".
	Writer string
	// DryRun computes the new start and its marker and writes nothing.
	DryRun bool
}

// Expiry is what Expire did (or, with DryRun, would do) to one partition.
type Expiry struct {
	// OldStart is the archive start before (0: nothing was expired), Start
	// the archive start after; Start == OldStart when nothing new expired.
	OldStart, Start int64
	// Reason is the new marker's reason ("" when nothing new expired).
	Reason string
	// Records, Bytes and Commits are what expired now (the difference of the
	// two markers' totals).
	Records, Bytes, Commits int64
	// Marker is the partition's newest marker after the expiry (nil: none).
	Marker *ArchiveStart
	// Created is true when this call created Marker (false: it existed, or
	// another expirer created the same one first, or DryRun).
	Created bool
	// HeadPastRetention is set when every record of the partition, the
	// head commit's too, is older than the age limit: the head commit is
	// kept all the same (the archiver resumes from it), so the partition
	// keeps those records until a newer commit follows.
	HeadPastRetention bool
	// TailOnly is set when the partition (packed layout) holds records
	// only in its uncompacted tail: expiry acts on compacted commits, so
	// nothing of it can expire before its first compaction.
	TailOnly bool
}

// Expired reports whether the call moved the archive start.
func (e *Expiry) Expired() bool { return e.Start > e.OldStart }

// Expire applies o.Retention to the partition: it finds the new archive
// start S (the end+1 of the newest whole commit the retention expires,
// never past the head commit's start: the archiver resumes from the head)
// and, if S is past the current start, creates the marker start/<inv-S>
// with create-if-absent: its creation is the commit point of the expiry
// (docs/FORMAT.md §8, expiry rules). Before the archive's first marker it
// upgrades the root marker to format version 2 (Archive.UpgradeRoot), and
// before its first write it runs the conditional-create probe. It deletes
// nothing (DeleteExpired does, after the grace period).
//
// Expire is idempotent and safe to run by two expirers at once (both may
// create a marker; the newest counts) and while an archiver appends (it
// never touches the head). Requests: one LIST and GET for the start, one
// for the head, one LIST and GET for an age limit (the time index), about
// 2·log2(head offset) for a size limit (a binary search over the commits'
// cumulative totals), then a few GETs to fill the marker and one PUT.
func (p *PartitionLog) Expire(ctx context.Context, o ExpireOptions) (Expiry, error) {
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.Writer == "" {
		o.Writer = "kbackup"
	}
	cur, err := p.LoadStart(ctx)
	if err != nil {
		return Expiry{}, err
	}
	e := Expiry{OldStart: cur.StartOffset(), Start: cur.StartOffset(), Marker: cur}
	if o.Retention.IsZero() {
		return e, nil
	}
	head, err := p.CompactedHead(ctx) // a tail (version 3) is never expired: only compacted commits
	if err != nil || head == nil {
		if err == nil && p.packed() {
			// Say why nothing expires (a few requests, only for partitions
			// with nothing compacted).
			var v *tailView
			if v, err = p.tailView(ctx, true); err == nil {
				e.TailOnly = v.newest() != nil
			}
		}
		return e, err
	}
	start, reason, headPast, err := p.retentionStart(ctx, o.Retention, o.Now, cur, head)
	e.HeadPastRetention = headPast
	if err == nil && start <= e.OldStart {
		return e, nil
	}
	var m *ArchiveStart
	if err == nil {
		m, err = p.newMarker(ctx, start, reason, o, head)
	}
	if err != nil {
		// Another expirer may have moved the start past what this one read
		// and deleted the commits it was reading: then there is nothing
		// left for this one to do.
		if now, lerr := p.LoadStart(ctx); lerr == nil && now.StartOffset() > e.OldStart && (start <= now.StartOffset() || m == nil) {
			return Expiry{OldStart: now.StartOffset(), Start: now.StartOffset(), Marker: now, HeadPastRetention: headPast}, nil
		}
		return e, err
	}
	e.Start, e.Reason, e.Marker = start, reason, m
	below := StartTotals{}
	if cur != nil {
		below = cur.Below
	}
	e.Records, e.Bytes, e.Commits = m.Below.Records-below.Records, m.Below.Bytes-below.Bytes, m.Below.Commits-below.Commits
	if o.DryRun {
		return e, nil
	}
	if err := p.arch.ensureWritable(ctx); err != nil {
		return e, err
	}
	// The root first: a version-1 reader must refuse the archive before it
	// could see a marker it does not know.
	if err := p.arch.UpgradeRoot(ctx); err != nil {
		return e, err
	}
	key := StartKey(p.prefix, start)
	body := EncodeArchiveStart(m)
	err = p.st.Put(ctx, key, bytes.NewReader(body), int64(len(body)), store.PutOptions{IfNotExists: true})
	switch {
	case errors.Is(err, store.ErrExists):
		// Another expirer (or a retried PUT of ours) created it: it counts.
		// It may even be superseded and deleted already: then the newest
		// marker is past it.
		m, err := p.readStart(ctx, key, start)
		if errors.Is(err, store.ErrNotFound) {
			if m, err = p.LoadStart(ctx); err == nil && m.StartOffset() < start {
				err = fmt.Errorf("%s: archive start %d vanished and the newest is %d", p, start, m.StartOffset())
			}
		}
		if err != nil {
			return e, err
		}
		e.Marker = m
	case err != nil:
		return e, fmt.Errorf("create archive start %s (the outcome is unknown: the next pass sees it): %w", key, err)
	default:
		e.Created = true
	}
	p.startMu.Lock()
	p.start, p.startLoaded = e.Marker, true
	p.startMu.Unlock()
	return e, nil
}

// retentionStart returns the archive start r asks for (at most the head's
// start) and its reason; the current start when r expires nothing more.
// headPast reports that the age limit would expire the head commit too.
func (p *PartitionLog) retentionStart(ctx context.Context, r Retention, now time.Time, cur *ArchiveStart, head *Commit) (start int64, reason string, headPast bool, err error) {
	start = cur.StartOffset()
	if r.Age > 0 {
		cutoff := now.Add(-r.Age).UnixMilli()
		s, err := p.ageStart(ctx, cutoff, cur, head)
		if err != nil {
			return 0, "", false, err
		}
		if s > start {
			start, reason = s, ReasonRetentionAge
		}
		// The running maximum of the head is the largest timestamp of the
		// partition: below the cutoff, every record is past the limit.
		headPast = head.Records > 0 && head.RunningMaxTimestamp < cutoff
	}
	if r.Bytes > 0 {
		s, err := p.bytesStart(ctx, head.TotalBytes-r.Bytes, cur, head)
		if err != nil {
			return 0, "", false, err
		}
		if s > start {
			start, reason = s, ReasonRetentionBytes
		}
	}
	return start, reason, headPast, nil
}

// ageStart: the first commit whose running maximum timestamp reaches the
// cutoff starts the window (every commit before it holds only records older
// than the cutoff); the head's start if none does.
func (p *PartitionLog) ageStart(ctx context.Context, cutoff int64, cur *ArchiveStart, head *Commit) (int64, error) {
	if cur != nil && cur.Below.RunningMaxTimestamp != nil && cutoff <= *cur.Below.RunningMaxTimestamp {
		return 0, nil // the current start already keeps a record at or after the cutoff
	}
	c, err := p.findTime(ctx, cutoff)
	if errors.Is(err, ErrOutOfRange) {
		return head.Start, nil
	}
	if err != nil {
		return 0, err
	}
	return min(c.Start, head.Start), nil
}

// bytesStart: the end+1 of the last commit whose cumulative segment bytes
// are at most limit (so at least head.TotalBytes-limit bytes stay), found
// by a binary search over offsets; 0 if none qualifies.
func (p *PartitionLog) bytesStart(ctx context.Context, limit int64, cur *ArchiveStart, head *Commit) (int64, error) {
	lo := cur.StartOffset()
	if limit <= 0 || cur != nil && limit <= cur.Below.Bytes || head.Start == lo {
		return 0, nil
	}
	// Invariant: the answer is the End+1 of a commit in [lo, hi]; best is
	// the best found so far.
	hi, best := head.Start-1, int64(0)
	for lo <= hi {
		mid := lo + (hi-lo)/2
		c, err := p.find(ctx, mid)
		if err != nil {
			return 0, err
		}
		if c.TotalBytes <= limit {
			best = c.End + 1
			lo = c.End + 1
		} else {
			hi = c.Start - 1
		}
	}
	return min(best, head.Start), nil
}

// newMarker builds the marker of archive start start from the commit
// ending at start-1 (its totals) and the first recoverable record.
func (p *PartitionLog) newMarker(ctx context.Context, start int64, reason string, o ExpireOptions, head *Commit) (*ArchiveStart, error) {
	prev, err := p.find(ctx, start-1)
	if err != nil {
		return nil, fmt.Errorf("%s: the commit before the new archive start %d: %w", p, start, err)
	}
	if prev.End != start-1 {
		return nil, fmt.Errorf("%s: %w", p, corruptf("the new archive start %d is not a commit's start (commit %d..%d)", start, prev.Start, prev.End))
	}
	m := &ArchiveStart{FormatVersion: 2, Start: start, Reason: reason, CreatedMs: o.Now.UnixMilli(), Writer: o.Writer,
		Below: StartTotals{Commits: prev.Seq + 1, Records: prev.TotalRecords, Bytes: prev.TotalBytes,
			GapOffsets: GapCountsOf(prev.TotalGapOffsets)}}
	if prev.TotalRecords > 0 {
		m.Below.RunningMaxTimestamp = &prev.RunningMaxTimestamp
	}
	first, err := p.firstRecordCommit(ctx, start, head)
	if err != nil {
		return nil, err
	}
	if first != nil {
		m.FirstRecordOffset, m.OldestTimestamp = &first.FirstOffset, &first.MinTimestamp
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("%s: archive start %d from commit %d..%d: %w", p, start, prev.Start, prev.End, err)
	}
	return m, nil
}

// DefaultExpiryGrace is how long objects below a new archive start stay
// readable before DeleteExpired removes them (DeleteOptions.Grace's default):
// a restore or cat planned before the expiry still reads what it planned.
const DefaultExpiryGrace = time.Hour

// DeleteOptions say what DeleteExpired deletes. The zero value deletes,
// after DefaultExpiryGrace.
type DeleteOptions struct {
	// Grace is how old (by its created_ms) a marker must be before what lies
	// below it is deleted. 0 = DefaultExpiryGrace; negative = at once.
	Grace time.Duration
	// Now is the clock the grace is measured on. Zero = time.Now().
	Now time.Time
	// DryRun counts what would be deleted and deletes nothing.
	DryRun bool
}

// Deletion is what DeleteExpired deleted (or would delete).
type Deletion struct {
	// Below is the start below which objects were deleted (0: none, no
	// marker is past its grace period).
	Below int64
	// TimeKeys, Commits, Segments and Markers count the objects deleted
	// (Markers: superseded markers), SegmentBytes the segments' sizes.
	// Commits counts the commit entries at the starts of the segments
	// deleted: after an interrupted pass, one the earlier pass deleted may
	// count again.
	TimeKeys, Commits, Segments, Markers, SegmentBytes int64
	// Pending is the start of the newest marker still in its grace period
	// (0: none), PendingUntil when its grace period ends (unix ms).
	Pending, PendingUntil int64
}

// Objects is the number of objects deleted.
func (d *Deletion) Objects() int64 { return d.TimeKeys + d.Commits + d.Segments + d.Markers }

// segBatch bounds the segments DeleteExpired holds at once.
const segBatch = 256

// DeleteExpired deletes the objects below the newest archive start whose
// marker is older than the grace period, in the order docs/FORMAT.md §8
// prescribes, so that a reader never sees a commit whose segment is gone:
// the time keys below it, then per batch of segments (ascending starts) the
// commit entries at their starts, lowest start first, then the segments
// (orphans below the start too), then any commit entry left below it, and
// last the superseded markers. It never deletes the newest marker, nor
// anything at or above the newest start of any marker: the head and the
// archiver's appends are never touched.
//
// It is idempotent and crash-safe at every step (a rerun continues; a
// missing object is not an error) and safe with two deleters at once.
// Memory is bounded by one listing page and one batch of segments.
func (p *PartitionLog) DeleteExpired(ctx context.Context, o DeleteOptions) (Deletion, error) {
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	switch {
	case o.Grace == 0:
		o.Grace = DefaultExpiryGrace
	case o.Grace < 0:
		o.Grace = 0
	}
	var d Deletion
	m, err := p.graceOver(ctx, o, &d)
	if err != nil || m == nil {
		return d, err
	}
	d.Below = m.Start
	del := func(key string, n *int64) error {
		if !o.DryRun {
			if err := p.st.Delete(ctx, key); err != nil {
				return fmt.Errorf("delete %s: %w", key, err)
			}
		}
		*n++
		return nil
	}
	// 1. Time keys: those below the start sort first (their running
	// maximum is at most the marker's; every later commit whose running
	// maximum rose has a larger one).
	if r := m.Below.RunningMaxTimestamp; r != nil {
		err := p.eachKey(ctx, "time/", "", func(e store.ListEntry, k Key) (bool, error) {
			if k.Kind != KeyTime || k.Start >= m.Start {
				return k.Kind == KeyTime && k.RunMax > *r, nil
			}
			return false, del(e.Key, &d.TimeKeys)
		})
		if err != nil {
			return d, err
		}
	}
	// 2. Commit entries lowest start first, each batch's before its
	// segments (orphans below the start too).
	var batch []store.ListEntry
	var batchStarts []int64
	flush := func() error {
		for _, s := range batchStarts {
			if o.DryRun {
				break // step 3 counts them: a dry run leaves every commit entry below the start there
			}
			if err := del(CommitKey(p.prefix, s), &d.Commits); err != nil {
				return err
			}
		}
		for _, e := range batch {
			if err := del(e.Key, &d.Segments); err != nil {
				return err
			}
			d.SegmentBytes += e.Size
		}
		batch, batchStarts = batch[:0], batchStarts[:0]
		return nil
	}
	err = p.eachKey(ctx, "segments/", "", func(e store.ListEntry, k Key) (bool, error) {
		if k.Kind != KeySegment {
			return false, nil // not ours to delete; verify reports it
		}
		if k.Start >= m.Start {
			return true, nil
		}
		batch = append(batch, e)
		if n := len(batchStarts); n == 0 || batchStarts[n-1] != k.Start {
			batchStarts = append(batchStarts, k.Start)
		}
		if len(batch) < segBatch {
			return false, nil
		}
		return false, flush()
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return d, err
	}
	// 3. Commit entries below the start whose segment was not listed
	// (normally none): the listing after the start's key holds exactly the
	// starts below it. 4. Superseded markers, last: until now they told
	// readers where the data they would not find was.
	for _, step := range []struct {
		dir  string
		kind KeyKind
		n    *int64
	}{{"commits/", KeyCommit, &d.Commits}, {"start/", KeyStart, &d.Markers}} {
		after := p.prefix + step.dir + dec19(Invert(m.Start)) // CommitKey and StartKey of m.Start
		err := p.eachKey(ctx, step.dir, after, func(e store.ListEntry, k Key) (bool, error) {
			if k.Kind != step.kind || k.Start >= m.Start {
				return false, nil
			}
			return false, del(e.Key, step.n)
		})
		if err != nil {
			return d, err
		}
	}
	return d, nil
}

// graceOver returns the newest marker whose grace period is over (nil if
// none), noting in d the newest marker still within it.
func (p *PartitionLog) graceOver(ctx context.Context, o DeleteOptions, d *Deletion) (*ArchiveStart, error) {
	var over *ArchiveStart
	err := p.eachKey(ctx, "start/", "", func(e store.ListEntry, k Key) (bool, error) {
		if k.Kind != KeyStart {
			return false, nil
		}
		m, err := p.readStart(ctx, e.Key, k.Start)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil // superseded and deleted by another pass since the listing
		}
		if err != nil {
			return true, err
		}
		until := m.CreatedMs + o.Grace.Milliseconds()
		if o.Grace.Milliseconds() > math.MaxInt64-m.CreatedMs {
			until = math.MaxInt64
		}
		if o.Now.UnixMilli() >= until {
			over = m
			return true, nil
		}
		if d.Pending == 0 {
			d.Pending, d.PendingUntil = m.Start, until
		}
		return false, nil
	})
	return over, err
}

// eachKey calls fn for every key of the partition's directory dir
// ("time/", "segments/", ...) after the key after ("" = from the first),
// in listing order, one page at a time, until fn says stop or fails. Keys
// that do not parse are passed with a zero Key.
func (p *PartitionLog) eachKey(ctx context.Context, dir, after string, fn func(store.ListEntry, Key) (stop bool, err error)) error {
	pg := newPager(p.st, p.prefix+dir, after)
	for {
		e, ok, err := pg.next(ctx)
		if err != nil || !ok {
			return err
		}
		k, _ := ParseKey(e.Key)
		if stop, err := fn(e, k); stop || err != nil {
			return err
		}
	}
}

// findTime returns the first commit whose running maximum timestamp is >=
// ts, by the time index, without regard to the archive start.
func (p *PartitionLog) findTime(ctx context.Context, ts int64) (*Commit, error) {
	marker := ""
	if ts != math.MinInt64 {
		marker = TimeKey(p.prefix, ts-1, math.MaxInt64)
	}
	key, err := p.firstAfter(ctx, p.prefix+"time/", marker)
	if err != nil {
		return nil, err
	}
	if key == "" {
		return nil, fmt.Errorf("%s: no record with timestamp >= %d: %w", p, ts, ErrOutOfRange)
	}
	k, err := ParseKey(key)
	if err != nil || k.Kind != KeyTime {
		return nil, fmt.Errorf("%s: %w", key, corruptf("not a time index key"))
	}
	c, err := p.CommitAt(ctx, k.Start)
	if err != nil {
		return nil, fmt.Errorf("time index %s: %w", key, err)
	}
	if c.RunningMaxTimestamp != k.RunMax {
		return nil, fmt.Errorf("time index %s: %w", key, corruptf("commit's running max is %d", c.RunningMaxTimestamp))
	}
	return c, nil
}
