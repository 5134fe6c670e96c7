package manifest

import (
	"context"
	"errors"
	"fmt"

	"github.com/kbackup/kbackup/store"
)

// verifyTail verifies the partition's uncompacted tail (format version 3,
// docs/FORMAT.md §12.4) after its compacted chain: every entry reachable
// from the newest claim's tail is checked like a commit (its link to the
// previous one, its segment body inside its flush object) and counted.
// compacted is the compacted head (nil if none or unreadable), headStart
// the compacted head's start (-1: no compacted chain). It returns the
// partition's head: the tail's newest entry, else compacted.
func (v *partitionVerifier) verifyTail(ctx context.Context, compacted *Commit, headStart int64) (*Commit, error) {
	if !v.p.packed() {
		return compacted, nil
	}
	claims := v.p.prefix + "claims/"
	claim, err := v.p.NewestClaim(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		v.finding(SeverityProblem, claims, -1, -1, "newest claim unreadable, the tail is not verified: %v", err)
		return compacted, nil
	}
	if claim == nil {
		return compacted, nil
	}
	claimKey := ClaimKey(v.p.prefix, claim.Epoch)
	compactedEnd := int64(-1)
	if compacted != nil {
		compactedEnd = compacted.End
	} else if headStart >= 0 {
		v.finding(SeverityProblem, claimKey, -1, -1, "the tail is not verified: the compacted head at offset %d is unreadable (reported), so where the tail starts is unknown", headStart)
		return nil, nil
	}
	refs, commits, err := v.p.TailEntries(ctx, compactedEnd)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		key := claimKey
		var te *TailEntryError
		if errors.As(err, &te) {
			key = te.Key
		}
		v.finding(SeverityProblem, key, compactedEnd+1, -1, "tail unreadable, offsets from %d on unverified: %v", compactedEnd+1, err)
		return nil, nil
	}
	sizes := map[string]int64{} // flush object sizes, -1: stat failed (reported)
	prev, head := compacted, compacted
	for i, c := range commits {
		key := fmt.Sprintf("%s@%d", refs[i].Key(), refs[i].Pos)
		v.res.Commits++
		if i == 0 && c.Start <= compactedEnd {
			// A compaction that raced a change of owner ended inside this
			// entry (§12.4): readers take its offsets above the compacted
			// end from it, and the owner's next compaction rewrites them.
			v.finding(SeverityWarning, key, c.Start, c.End,
				"tail entry straddles the compacted chain's end %d (a compaction raced a change of owner); its offsets %d..%d are read from it until the next compaction",
				compactedEnd, compactedEnd+1, c.End)
		} else {
			v.checkEntryLink(prev, c, key, i == 0 && prev != nil)
		}
		size, found := int64(0), true
		if s, ok := sizes[c.SegmentKey]; ok {
			size = s
		} else {
			info, err := v.p.st.Stat(ctx, c.SegmentKey)
			switch {
			case errors.Is(err, store.ErrNotFound):
				found = false
			case err != nil:
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				v.finding(SeverityProblem, c.SegmentKey, c.Start, c.End, "cannot stat flush object: %v", err)
				size = -1
			default:
				size = info.Size
			}
			if found {
				sizes[c.SegmentKey] = size
			}
		}
		if err := v.checkSegment(ctx, c, size, found); err != nil {
			return nil, err
		}
		prev, head = c, c
	}
	return head, nil
}

// checkEntryLink checks tail entry c (key names it) against its
// predecessor. For the first entry after the compacted head (afterCompacted)
// only what compaction preserves is checked: the record and gap totals, the
// running maximum timestamp, the first timestamp and the first recorded
// start; its seq and total bytes continue the chain as its writer knew it,
// before compaction rewrote the entries below it (§12.4).
func (v *partitionVerifier) checkEntryLink(prev, c *Commit, key string, afterCompacted bool) {
	if !afterCompacted {
		v.checkLink(prev, c, key)
		return
	}
	want, err := Next(prev, c.Topic, c.TopicID, c.Partition, c.SegmentKey, commitInfo(c), c.Writer, c.CommittedAt)
	if err != nil {
		v.finding(SeverityProblem, key, c.Start, c.End, "tail entry does not follow the compacted head: %v", err)
		return
	}
	switch {
	case want.TotalRecords != c.TotalRecords || want.TotalGapOffsets != c.TotalGapOffsets:
		v.finding(SeverityProblem, key, c.Start, c.End, "running totals (records %d, gaps %v) do not add up after the compacted head (expected %d, %v)",
			c.TotalRecords, c.TotalGapOffsets, want.TotalRecords, want.TotalGapOffsets)
	case want.RunningMaxTimestamp != c.RunningMaxTimestamp || want.FirstTimestamp != c.FirstTimestamp ||
		want.FirstRecordedStart != c.FirstRecordedStart:
		v.finding(SeverityProblem, key, c.Start, c.End, "running timestamps or first record offset inconsistent with the compacted head")
	}
}
