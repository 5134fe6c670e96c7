package manifest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"strings"
	"sync"

	"github.com/kbackup/kbackup/store"
)

// Severity ranks a verify finding.
type Severity int

// Severities, least severe first.
const (
	// SeverityInfo: an explained gap (compaction, transaction markers,
	// offsets the broker did not return, history before archiving began).
	SeverityInfo Severity = iota
	// SeverityWarning: something to clean up or look at that loses no
	// data: an orphan segment left by a fenced or crashed writer, a time
	// index key the next archiver run repairs, a stray object.
	SeverityWarning
	// SeverityProblem: the archive is damaged or incomplete (a checksum
	// mismatch, a missing or truncated object, a broken commit chain, a
	// DATA-LOSS gap). Verify fails.
	SeverityProblem
)

// String returns "gap", "warning" or "PROBLEM", as verify prints them.
func (s Severity) String() string {
	switch s {
	case SeverityInfo:
		return "gap"
	case SeverityWarning:
		return "warning"
	}
	return "PROBLEM"
}

// Finding is one thing Verify reports.
type Finding struct {
	Severity  Severity
	Topic     string
	TopicID   TopicID
	Partition int32 // -1 when the finding is not about one partition
	// Key is the object concerned ("" if none).
	Key string
	// From and To are the offsets concerned, inclusive; From < 0 when
	// none, To < 0 when open-ended.
	From, To int64
	// Gap is the reason of a gap finding, 0 otherwise.
	Gap     GapReason
	Message string
}

// String renders the finding as one line, e.g.
// "PROBLEM orders/0 offsets 20..41 topics/orders/…/segments/….kseg: …".
func (f Finding) String() string {
	var b strings.Builder
	b.WriteString(f.Severity.String())
	if f.Topic != "" {
		b.WriteString(" " + f.Topic)
		if f.Partition >= 0 {
			fmt.Fprintf(&b, "/%d", f.Partition)
		}
	}
	if f.From >= 0 {
		fmt.Fprintf(&b, " offsets %d..", f.From)
		if f.To >= 0 {
			fmt.Fprint(&b, f.To)
		}
	}
	if f.Key != "" {
		b.WriteString(" " + f.Key)
	}
	b.WriteString(": " + f.Message)
	return b.String()
}

// PartitionHead is one verified partition's head, handed to the
// completeness check.
type PartitionHead struct {
	Topic     string
	TopicID   TopicID
	Partition int32
	// Current is set for partitions of a topic name's newest incarnation.
	Current bool
	// Head is the partition's latest commit; nil if it has none or it is
	// unreadable (a problem already reported).
	Head *Commit
}

// VerifyOptions tune Verify. The zero value verifies every topic's
// integrity, 8 partitions at a time, without a completeness check.
type VerifyOptions struct {
	// Filter selects the topics to verify; nil = all.
	Filter func(topic string) bool
	// Concurrency bounds the partitions verified at once; 0 = 8.
	Concurrency int
	// Completeness, when set, runs after the integrity checks with the
	// head of every verified partition (in topic, incarnation, partition
	// order) and reports what a live cluster holds that the archive lacks.
	// Its findings count like the others; an error aborts Verify. nil =
	// no completeness check (verify without --brokers).
	Completeness func(ctx context.Context, heads []PartitionHead, report func(Finding)) error
}

// VerifyResult counts what Verify checked and found.
type VerifyResult struct {
	Topics, Incarnations, Partitions int
	Commits                          int64
	Segments                         int64 // segments read in full
	Records                          int64 // records decoded
	Bytes                            int64 // segment bytes read
	// Gaps counts gap ranges and GapOffsets the offsets in them, by reason.
	Gaps, GapOffsets [NumGapReasons]int64
	Problems         int64
	Warnings         int64
}

// OK reports whether verify found no problem.
func (r *VerifyResult) OK() bool { return r.Problems == 0 }

func (r *VerifyResult) add(o *VerifyResult) {
	r.Commits += o.Commits
	r.Segments += o.Segments
	r.Records += o.Records
	r.Bytes += o.Bytes
	for i := range r.Gaps {
		r.Gaps[i] += o.Gaps[i]
		r.GapOffsets[i] += o.GapOffsets[i]
	}
}

const defaultVerifyConcurrency = 8

// Verify checks the integrity of every selected partition and calls report
// for every finding (from one goroutine at a time, in offset order within
// a partition; partitions are verified concurrently, so their findings
// interleave). For every partition it:
//
//   - walks the commit chain from offset 0 to the head: each commit
//     decodes, belongs to the partition, starts where the previous one
//     ended, has the next sequence number and consistent running totals;
//     no commit key lies off the chain;
//   - checks each commit's segment: present, of the committed size, its
//     CRC32C equal to the commit's, its index consistent with the commit,
//     every block decoding with records and gaps tiling the commit's range;
//   - reports every gap with its reason (DATA-LOSS gaps are problems);
//   - checks the time index: every commit whose running maximum timestamp
//     rose has its time key, and no time key lacks its commit;
//   - reports orphan segments (referenced by no commit) as warnings.
//
// Memory is bounded by one block and one listing page per partition being
// verified. Verify returns an error only when it cannot proceed (the topic
// listing fails, ctx ends, the completeness check fails); everything wrong
// with the archive itself is a finding, counted in the result.
func (a *Archive) Verify(ctx context.Context, opts VerifyOptions, report func(Finding)) (VerifyResult, error) {
	var (
		mu  sync.Mutex
		res VerifyResult
	)
	emit := func(f Finding) {
		mu.Lock()
		defer mu.Unlock()
		switch f.Severity {
		case SeverityProblem:
			res.Problems++
		case SeverityWarning:
			res.Warnings++
		}
		if report != nil {
			report(f)
		}
	}
	topics, err := a.Topics(ctx)
	if err != nil {
		return res, err
	}
	var heads []PartitionHead
	for _, t := range topics {
		if opts.Filter != nil && !opts.Filter(t) {
			continue
		}
		res.Topics++
		ids, err := a.verifyIncarnations(ctx, t, emit)
		if err != nil {
			return res, err
		}
		for i, id := range ids {
			res.Incarnations++
			parts, err := a.Partitions(ctx, t, id)
			if err != nil {
				return res, err
			}
			for _, p := range parts {
				heads = append(heads, PartitionHead{Topic: t, TopicID: id, Partition: p, Current: i == len(ids)-1})
			}
		}
	}
	res.Partitions = len(heads)
	conc := opts.Concurrency
	if conc <= 0 {
		conc = defaultVerifyConcurrency
	}
	err = forEach(ctx, len(heads), conc, func(i int) error {
		h := &heads[i]
		v := &partitionVerifier{p: a.Partition(h.Topic, h.TopicID, h.Partition), emit: emit, holeFrom: -1}
		head, err := v.run(ctx)
		if err != nil {
			return err
		}
		h.Head = head
		mu.Lock()
		res.add(&v.res)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return res, err
	}
	if opts.Completeness != nil {
		if err := opts.Completeness(ctx, heads, emit); err != nil {
			return res, fmt.Errorf("completeness check: %w", err)
		}
	}
	return res, nil
}

// verifyIncarnations lists a topic's incarnations, oldest first, reporting
// unreadable markers instead of failing on them (their partitions are
// still verified, and sort last).
func (a *Archive) verifyIncarnations(ctx context.Context, topic string, emit func(Finding)) ([]TopicID, error) {
	names, err := a.listPrefixes(ctx, TopicPrefix(topic))
	if err != nil {
		return nil, err
	}
	var good, bad []TopicID
	var seen []int64
	for _, n := range names {
		id, err := ParseTopicID(n)
		if err != nil {
			emit(Finding{Severity: SeverityWarning, Topic: topic, Partition: -1, From: -1,
				Key: TopicPrefix(topic) + n + "/", Message: "unexpected objects (not a topic id): not part of the archive"})
			continue
		}
		key := TopicMarkerKey(topic, id)
		m, err := a.readMarker(ctx, key)
		if err == nil && (m.Topic != topic || m.TopicID != id) {
			err = corruptf("marker names %s/%s", m.Topic, m.TopicIDHex)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			emit(Finding{Severity: SeverityProblem, Topic: topic, TopicID: id, Partition: -1, From: -1, Key: key,
				Message: fmt.Sprintf("topic incarnation marker unreadable: %v", err)})
			bad = append(bad, id)
			continue
		}
		// Insertion by first-seen time, as Incarnations orders them.
		i := len(good)
		for i > 0 && seen[i-1] > m.FirstSeenMs {
			i--
		}
		good = append(good[:i], append([]TopicID{id}, good[i:]...)...)
		seen = append(seen[:i], append([]int64{m.FirstSeenMs}, seen[i:]...)...)
	}
	return append(bad, good...), nil
}

func (a *Archive) readMarker(ctx context.Context, key string) (*TopicMarker, error) {
	b, err := store.Get(ctx, a.st, key)
	if err != nil {
		return nil, err
	}
	return DecodeTopicMarker(b)
}

// partitionVerifier verifies one partition.
type partitionVerifier struct {
	p    *PartitionLog
	emit func(Finding)
	res  VerifyResult
	buf  []byte // one block, reused
	// holeFrom..holeTo are the offsets of the missing or unreadable
	// commits since the last good one (holeFrom < 0: none). Their segments
	// and time keys are not reported as strays.
	holeFrom, holeTo int64
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

// walk visits the chain from offset 0 to the head start, stepping over
// missing or unreadable commits to the next commit key.
func (v *partitionVerifier) walk(ctx context.Context, headStart int64, visit chainVisit) error {
	x := int64(0)
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
	listed, headStart, err := v.commitStarts(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		v.finding(SeverityProblem, v.p.prefix+"commits/", -1, -1, "cannot list commits: %v", err)
		return nil, nil
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
		v.res.Commits++
		v.checkLink(prev, c)
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

// checkLink checks c against the previous commit of the chain (nil: c is
// the first commit, or follows a hole and cannot be checked).
func (v *partitionVerifier) checkLink(prev, c *Commit) {
	key := CommitKey(v.p.prefix, c.Start)
	if prev == nil && c.Start != 0 {
		return
	}
	info := SegmentInfo{Start: c.Start, End: c.End, Records: c.Records, FirstOffset: c.FirstOffset,
		LastOffset: c.LastOffset, MinTimestamp: c.MinTimestamp, MaxTimestamp: c.MaxTimestamp,
		Size: c.SegmentSize, IndexPosition: c.IndexPosition, IndexLength: c.IndexLength,
		CRC32C: c.SegmentCRC32C, GapOffsets: c.GapOffsets}
	want, err := Next(prev, c.Topic, c.TopicID, c.Partition, c.SegmentKey, info, c.Writer, c.CommittedAt)
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
		if v.inHole(k.Start) {
			continue // the key of a missing or unreadable commit, reported
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

// checkSegment verifies c's segment: size, CRC32C, header, index, every
// block and the footer, reading it once as a stream. size is the object's
// size (-1 unknown), found whether it exists.
func (v *partitionVerifier) checkSegment(ctx context.Context, c *Commit, size int64, found bool) error {
	key := c.SegmentKey
	problem := func(format string, args ...any) {
		v.finding(SeverityProblem, key, c.Start, c.End, format, args...)
	}
	if !found {
		problem("segment missing (the commit references it; these offsets are lost from the archive)")
		return nil
	}
	if size < 0 {
		return nil // stat failed, reported
	}
	if want := c.SegmentOffset + c.SegmentSize; size < want || (c.SegmentOffset == 0 && size != want) {
		problem("segment is %d bytes, the commit says %d (truncated or overwritten)", size, want)
		return nil
	}
	ix, err := v.p.ReadIndex(ctx, c)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		problem("index unreadable: %v", err)
		return nil
	}
	for _, g := range ix.Gaps {
		v.res.Gaps[g.Reason]++
		v.res.GapOffsets[g.Reason] += g.Len()
		sev, msg := SeverityInfo, fmt.Sprintf("%s gap (explained)", g.Reason)
		if g.Reason == GapDataLoss {
			sev, msg = SeverityProblem, "DATA-LOSS gap: retention deleted these records before they were archived"
		}
		v.emit(Finding{Severity: sev, Topic: c.Topic, TopicID: c.TopicID, Partition: c.Partition, Key: key,
			From: g.From, To: g.To, Gap: g.Reason, Message: msg})
	}
	rc, err := v.p.st.GetRange(ctx, key, c.SegmentOffset, c.SegmentSize)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		problem("cannot read segment: %v", err)
		return nil
	}
	defer rc.Close()
	h := crc32.New(castagnoli)
	r := bufio.NewReaderSize(io.TeeReader(io.LimitReader(rc, c.SegmentSize), h), 64<<10)
	v.res.Segments++
	blockErr := v.checkBlocks(r, c, ix)
	var rest []byte
	if blockErr != nil {
		// Hash whatever is left, so the checksum covers the whole segment.
		_, err = io.Copy(io.Discard, r)
	} else {
		// What is left is the index and the footer: small.
		rest, err = io.ReadAll(r)
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		problem("cannot read segment: %v", err)
		return nil
	}
	v.res.Bytes += c.SegmentSize
	if got := h.Sum32(); got != c.SegmentCRC32C {
		problem("segment CRC32C %08x does not match the commit's %08x (the object is corrupt)", got, c.SegmentCRC32C)
	}
	if blockErr != nil {
		problem("%v", blockErr)
		return nil
	}
	if got := c.IndexPosition + int64(len(rest)); got != c.SegmentSize {
		problem("segment ends after %d bytes, the commit says %d (truncated)", got, c.SegmentSize)
		return nil
	}
	f, err := DecodeFooter(rest[len(rest)-FooterSize:])
	if err == nil && (f.IndexPosition != c.IndexPosition || f.IndexLength != c.IndexLength) {
		err = corruptf("footer points at index %d+%d, the commit at %d+%d", f.IndexPosition, f.IndexLength, c.IndexPosition, c.IndexLength)
	}
	if err != nil {
		problem("%v", err)
	}
	return nil
}

// checkBlocks reads the header and every block from r, checking that the
// records and the index's gaps tile the commit's range and that the
// records' offsets and timestamps match the commit.
func (v *partitionVerifier) checkBlocks(r io.Reader, c *Commit, ix *Index) error {
	var hdr [segHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return fmt.Errorf("segment header: %w", truncated(err))
	}
	if err := CheckSegmentHeader(hdr[:]); err != nil {
		return err
	}
	next, gi := c.Start, 0
	gapsBefore := func(upTo int64) error {
		for ; gi < len(ix.Gaps) && ix.Gaps[gi].From < upTo; gi++ {
			if g := ix.Gaps[gi]; g.From != next {
				return corruptf("gap %s does not follow offset %d", g, next-1)
			}
			next = ix.Gaps[gi].To + 1
		}
		return nil
	}
	minTs, maxTs := int64(math.MaxInt64), int64(math.MinInt64)
	first, last := int64(-1), int64(-1)
	for _, bi := range ix.Blocks {
		if int64(cap(v.buf)) < bi.Length {
			v.buf = make([]byte, bi.Length)
		}
		b := v.buf[:bi.Length]
		if _, err := io.ReadFull(r, b); err != nil {
			return fmt.Errorf("block at byte %d (offsets %d..%d): %w", bi.Position, bi.FirstOffset, bi.LastOffset, truncated(err))
		}
		recs, err := DecodeBlock(b, bi)
		if err != nil {
			return fmt.Errorf("offsets %d..%d: %w", bi.FirstOffset, bi.LastOffset, err)
		}
		for i := range recs {
			o := recs[i].Offset
			if err := gapsBefore(o); err != nil {
				return err
			}
			if o != next {
				return corruptf("record at offset %d, expected offset %d", o, next)
			}
			next++
			if first < 0 {
				first = o
			}
			last = o
			minTs, maxTs = min(minTs, recs[i].Timestamp), max(maxTs, recs[i].Timestamp)
		}
		v.res.Records += int64(len(recs))
	}
	if err := gapsBefore(math.MaxInt64); err != nil {
		return err
	}
	if next != c.End+1 {
		return corruptf("records and gaps cover offsets up to %d, the commit up to %d", next-1, c.End)
	}
	if first != c.FirstOffset || last != c.LastOffset {
		return corruptf("records span offsets %d..%d, the commit says %d..%d", first, last, c.FirstOffset, c.LastOffset)
	}
	if c.Records > 0 && (minTs != c.MinTimestamp || maxTs != c.MaxTimestamp) {
		return corruptf("record timestamps %d..%d, the commit says %d..%d", minTs, maxTs, c.MinTimestamp, c.MaxTimestamp)
	}
	return nil
}

// truncated maps a short read onto ErrCorrupt.
func truncated(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return corruptf("truncated")
	}
	return err
}

// pager lists keys under a prefix one page at a time, so a long listing
// holds one page of memory.
type pager struct {
	st     store.Store
	prefix string
	after  string
	page   []store.ListEntry
	done   bool
	failed bool // a listing error was reported
}

const pageSize = 1000

func newPager(st store.Store, prefix, after string) *pager {
	return &pager{st: st, prefix: prefix, after: after}
}

// peek returns the next entry without consuming it.
func (pg *pager) peek(ctx context.Context) (store.ListEntry, bool, error) {
	if len(pg.page) == 0 && !pg.done && !pg.failed {
		pg.page = pg.page[:0]
		err := pg.st.List(ctx, store.ListOptions{Prefix: pg.prefix, StartAfter: pg.after, Limit: pageSize}, func(e store.ListEntry) error {
			pg.page = append(pg.page, e)
			return nil
		})
		if err != nil {
			return store.ListEntry{}, false, fmt.Errorf("list %s: %w", pg.prefix, err)
		}
		if len(pg.page) < pageSize {
			pg.done = true
		}
		if n := len(pg.page); n > 0 {
			pg.after = pg.page[n-1].Key
		}
	}
	if len(pg.page) == 0 {
		return store.ListEntry{}, false, nil
	}
	return pg.page[0], true, nil
}

// skip consumes the entry peek returned.
func (pg *pager) skip() { pg.page = pg.page[1:] }

// next returns and consumes the next entry.
func (pg *pager) next(ctx context.Context) (store.ListEntry, bool, error) {
	e, ok, err := pg.peek(ctx)
	if ok {
		pg.skip()
	}
	return e, ok, err
}
