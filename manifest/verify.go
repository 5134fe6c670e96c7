package manifest

import (
	"context"
	"fmt"
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
	if f.Severity == SeverityInfo && f.Gap == 0 {
		b.WriteString("info") // information that is not a gap (archiver lag)
	} else {
		b.WriteString(f.Severity.String())
	}
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
	// ExpiredPartitions counts the partitions with an archive start, and
	// ExpiredOffsets the offsets below their starts (expired by
	// retention: never a problem). AwaitingDeletion counts the objects
	// still stored below an archive start (the deletion pass removes them
	// once the grace period is over).
	ExpiredPartitions int
	ExpiredOffsets    int64
	AwaitingDeletion  int64
}

// OK reports whether verify found no problem.
func (r *VerifyResult) OK() bool { return r.Problems == 0 }

func (r *VerifyResult) add(o *VerifyResult) {
	if o.ExpiredOffsets > 0 {
		r.ExpiredPartitions++
	}
	r.ExpiredOffsets += o.ExpiredOffsets
	r.AwaitingDeletion += o.AwaitingDeletion
	r.Commits += o.Commits
	r.Segments += o.Segments
	r.Records += o.Records
	r.Bytes += o.Bytes
	for i := range r.Gaps {
		r.Gaps[i] += o.Gaps[i]
		r.GapOffsets[i] += o.GapOffsets[i]
	}
}

// DefaultVerifyConcurrency is VerifyOptions.Concurrency's default.
const DefaultVerifyConcurrency = 8

// Verify checks the integrity of every selected partition and calls report
// for every finding (from one goroutine at a time, in offset order within
// a partition; partitions are verified concurrently, so their findings
// interleave). For every partition it:
//
//   - reads its archive-start markers (format version 2): the chain is
//     verified from the newest one's start (0 without), which must be a
//     commit's start at most the head's; objects below it await deletion
//     and are only counted (expired offsets are never a problem);
//   - walks the commit chain from the archive start to the head: each commit
//     decodes, belongs to the partition, starts where the previous one
//     ended, has the next sequence number and consistent running totals;
//     no commit key lies off the chain;
//   - checks each commit's segment: present, of the committed size, its
//     CRC32C equal to the commit's, its index consistent with the commit,
//     every block decoding with records and gaps tiling the commit's range;
//   - reports every gap with its reason (DATA-LOSS gaps are problems);
//   - checks the time index: every commit whose running maximum timestamp
//     rose has its time key, and no time key lacks its commit;
//   - reports orphan segments (referenced by no commit) as warnings;
//   - in a format-version-3 archive, verifies the tail after the compacted
//     chain (docs/FORMAT.md §12.4): every entry reachable from the newest
//     claim is checked like a commit (its link to the previous one, its
//     segment body inside its flush object) and counted, and the head is
//     the tail's newest entry. An unreadable tail is a problem naming the
//     object. Flush objects (wal/) are not partitions' objects: never
//     reported as orphans.
//
// Memory is bounded by one block and one listing page per partition being
// verified, plus one head commit per partition for the completeness check. Verify returns an error only when it cannot proceed (the topic
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
		conc = DefaultVerifyConcurrency
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
