package manifest

import (
	"context"
	"fmt"
	"math"
	"sync"
)

// Summary is what an archive holds, per topic, incarnation and partition,
// as `kbackup ls` shows it. It is computed from each partition's head
// commit alone (its cumulative totals), so its cost does not grow with the
// archive's size.
type Summary struct {
	Topics []TopicSummary
}

// TopicSummary is one archived topic name.
type TopicSummary struct {
	Topic string
	// Incarnations are the topics that had this name, oldest first; the
	// last one is the current topic (Current is set on it).
	Incarnations []IncarnationSummary
}

// IncarnationSummary is one topic incarnation (one topic id).
type IncarnationSummary struct {
	TopicID     TopicID
	FirstSeenMs int64 // when the archive first saw the incarnation, unix ms
	Current     bool  // the newest incarnation of the name
	Partitions  []PartitionSummary
	// Totals adds up the partitions. Its offsets are unset (-1) and its
	// time range spans all partitions.
	Totals PartitionSummary
}

// PartitionSummary is one partition's archived range and counters: its
// recoverable window, from the archive start (0 unless expired) to the end.
// A partition with no commit yet has Commits == 0 and End == -1.
type PartitionSummary struct {
	Partition int32
	// Start is the archive start: offsets below it are expired (0: none
	// is). StartMarker is its marker (nil: none).
	Start       int64
	StartMarker *ArchiveStart
	// FirstRecordOffset is the offset of the first recoverable record; -1
	// if none is archived (only gaps, or nothing).
	FirstRecordOffset int64
	// End is the last offset the archive covers (the head commit's End,
	// records and gaps); -1 if nothing. Archiving resumes at End+1.
	End int64
	// FirstTimestamp and MaxTimestamp are the smallest and largest record
	// timestamps of the recoverable window (unix ms); valid only if
	// HasTimestamps. After an expiry, FirstTimestamp is the smallest
	// timestamp of the first recoverable commit holding records.
	FirstTimestamp, MaxTimestamp int64
	HasTimestamps                bool
	Records                      int64 // recoverable records
	Bytes                        int64 // segment bytes of the recoverable window
	// GapOffsets counts offsets in gaps of the window, by reason (index 0
	// unused).
	GapOffsets [NumGapReasons]int64
	Commits    int64 // commits of the window
	// Expired counts what lies below the archive start (the marker's totals).
	ExpiredCommits, ExpiredRecords, ExpiredBytes int64
	ExpiredGapOffsets                            [NumGapReasons]int64
	// LastCommitMs is the head commit's time (writer clock, unix ms); 0
	// when there is no commit.
	LastCommitMs int64
}

// DataLoss reports whether the partition has DATA-LOSS gaps.
func (s *PartitionSummary) DataLoss() bool { return s.GapOffsets[GapDataLoss] > 0 }

// summaryConcurrency bounds the partitions whose heads are read at once.
const summaryConcurrency = 16

// Summarize reads the summary of every topic that filter accepts (nil
// accepts all). Requests: one LIST for the topics, per topic one LIST of
// incarnations and one GET per incarnation marker, per incarnation one
// LIST of partitions, per partition one LIST and one GET for its head and,
// in an archive of format version 2, one LIST (and a GET if something
// expired) for its archive start; the partitions are read concurrently (at
// most 16 at a time).
func (a *Archive) Summarize(ctx context.Context, filter func(topic string) bool) (*Summary, error) {
	topics, err := a.Topics(ctx)
	if err != nil {
		return nil, err
	}
	sum := &Summary{}
	type job struct {
		topic string
		id    TopicID
		out   *PartitionSummary
	}
	var jobs []job
	for _, t := range topics {
		if filter != nil && !filter(t) {
			continue
		}
		incs, err := a.Incarnations(ctx, t)
		if err != nil {
			return nil, err
		}
		ts := TopicSummary{Topic: t, Incarnations: make([]IncarnationSummary, len(incs))}
		for i, m := range incs {
			parts, err := a.Partitions(ctx, t, m.TopicID)
			if err != nil {
				return nil, err
			}
			ts.Incarnations[i] = IncarnationSummary{TopicID: m.TopicID, FirstSeenMs: m.FirstSeenMs,
				Current: i == len(incs)-1, Partitions: make([]PartitionSummary, len(parts))}
			for pi, pn := range parts {
				ts.Incarnations[i].Partitions[pi].Partition = pn
			}
		}
		sum.Topics = append(sum.Topics, ts)
	}
	// Collect the jobs only once every slice is allocated: they point into them.
	for ti := range sum.Topics {
		ts := &sum.Topics[ti]
		for ii := range ts.Incarnations {
			inc := &ts.Incarnations[ii]
			for pi := range inc.Partitions {
				jobs = append(jobs, job{ts.Topic, inc.TopicID, &inc.Partitions[pi]})
			}
		}
	}
	err = forEach(ctx, len(jobs), summaryConcurrency, func(i int) error {
		j := jobs[i]
		p := a.Partition(j.topic, j.id, j.out.Partition)
		// The start first: a head read after it is at or past it (an
		// expiry never passes the head's start, and heads only grow).
		st, err := p.ArchiveStart(ctx)
		if err != nil {
			return fmt.Errorf("partition %s: %w", p, err)
		}
		head, err := p.Head(ctx)
		if err != nil {
			return fmt.Errorf("partition %s: %w", p, err)
		}
		*j.out = summarizeHead(j.out.Partition, head)
		if st != nil && head != nil {
			if err := p.applyStart(ctx, j.out, st, head); err != nil {
				return fmt.Errorf("partition %s: %w", p, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for ti := range sum.Topics {
		for ii := range sum.Topics[ti].Incarnations {
			inc := &sum.Topics[ti].Incarnations[ii]
			inc.Totals = totals(inc.Partitions)
		}
	}
	return sum, nil
}

// summarizeHead derives a partition's summary from its head commit (nil:
// no commit yet).
func summarizeHead(partition int32, h *Commit) PartitionSummary {
	s := PartitionSummary{Partition: partition, FirstRecordOffset: -1, End: -1}
	if h == nil {
		return s
	}
	s.FirstRecordOffset = h.FirstRecordedStart
	s.End = h.End
	if h.TotalRecords > 0 && h.FirstTimestamp != math.MaxInt64 && h.RunningMaxTimestamp != math.MinInt64 {
		s.FirstTimestamp, s.MaxTimestamp, s.HasTimestamps = h.FirstTimestamp, h.RunningMaxTimestamp, true
	}
	s.Records = h.TotalRecords
	s.Bytes = h.TotalBytes
	s.GapOffsets = h.TotalGapOffsets
	s.Commits = h.Seq + 1
	s.LastCommitMs = h.CommittedAt
	return s
}

// applyStart narrows a summary to the recoverable window of st: the head's
// totals minus the marker's. The first record of the window comes from the
// marker, or (when the window held none when it was written) from the
// first commit at or after the start holding records.
func (p *PartitionLog) applyStart(ctx context.Context, s *PartitionSummary, st *ArchiveStart, head *Commit) error {
	b := &st.Below
	s.Start, s.StartMarker = st.Start, st
	s.ExpiredCommits, s.ExpiredRecords, s.ExpiredBytes = b.Commits, b.Records, b.Bytes
	s.ExpiredGapOffsets = b.GapOffsets.Array()
	s.Commits -= b.Commits
	s.Records -= b.Records
	s.Bytes -= b.Bytes
	for i, v := range s.ExpiredGapOffsets {
		s.GapOffsets[i] -= v
	}
	s.FirstRecordOffset, s.HasTimestamps = -1, false
	if s.Records <= 0 {
		return nil
	}
	first, minTs := st.FirstRecordOffset, st.OldestTimestamp
	if first == nil {
		c, err := p.firstRecordCommit(ctx, st.Start, head)
		if err != nil || c == nil {
			return err
		}
		first, minTs = &c.FirstOffset, &c.MinTimestamp
	}
	s.FirstRecordOffset = *first
	s.FirstTimestamp, s.MaxTimestamp, s.HasTimestamps = *minTs, head.RunningMaxTimestamp, true
	return nil
}

// firstRecordCommit returns the first commit at or after start, up to the
// head, that holds records (nil if none does), walking the chain with one
// GET per commit.
func (p *PartitionLog) firstRecordCommit(ctx context.Context, start int64, head *Commit) (*Commit, error) {
	for x := start; x <= head.Start; {
		c := head
		if x != head.Start {
			var err error
			if c, err = p.CommitAt(ctx, x); err != nil {
				return nil, err
			}
		}
		if c.Records > 0 {
			return c, nil
		}
		x = c.End + 1
	}
	return nil, nil
}

// totals adds up partition summaries.
func totals(parts []PartitionSummary) PartitionSummary {
	t := PartitionSummary{Partition: -1, FirstRecordOffset: -1, End: -1}
	for i := range parts {
		p := &parts[i]
		t.Records += p.Records
		t.Bytes += p.Bytes
		t.Commits += p.Commits
		t.ExpiredCommits += p.ExpiredCommits
		t.ExpiredRecords += p.ExpiredRecords
		t.ExpiredBytes += p.ExpiredBytes
		for r, v := range p.GapOffsets {
			t.GapOffsets[r] += v
			t.ExpiredGapOffsets[r] += p.ExpiredGapOffsets[r]
		}
		t.LastCommitMs = max(t.LastCommitMs, p.LastCommitMs)
		if p.HasTimestamps {
			if !t.HasTimestamps {
				t.FirstTimestamp, t.MaxTimestamp, t.HasTimestamps = p.FirstTimestamp, p.MaxTimestamp, true
			}
			t.FirstTimestamp = min(t.FirstTimestamp, p.FirstTimestamp)
			t.MaxTimestamp = max(t.MaxTimestamp, p.MaxTimestamp)
		}
	}
	return t
}

// forEach runs fn(0..n-1) on at most limit goroutines. It stops starting
// new calls after the first error or when ctx is done, and returns the
// first error.
func forEach(ctx context.Context, n, limit int, fn func(i int) error) error {
	var (
		mu       sync.Mutex
		firstErr error
		next     int
		wg       sync.WaitGroup
	)
	take := func() (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		if firstErr != nil || next >= n {
			return 0, false
		}
		if err := ctx.Err(); err != nil {
			firstErr = err
			return 0, false
		}
		i := next
		next++
		return i, true
	}
	for w := 0; w < min(limit, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i, ok := take()
				if !ok {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}
