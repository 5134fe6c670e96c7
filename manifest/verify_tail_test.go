package manifest

import (
	"context"
	"strings"
	"sync"
	"testing"
)

// tailFixture is a packed archive: partition 0 of topic "tl" written by a
// simWriter in flushes of 4 offsets (every third entry ends with a
// compaction gap), so that it has a tail and, after compact, a compacted
// part. Partition 1 is a version-1 partition (compacted chain only).
type tailFixture struct {
	a       *Archive
	p       *PartitionLog
	w       *simWriter
	next    int64 // the partition's end + 1
	records int64
}

func newTailFixture(t *testing.T, flushes int) *tailFixture {
	t.Helper()
	ctx := context.Background()
	a, _ := newTestArchive(t)
	id := TopicID{9}
	if err := a.EnsureTopic(ctx, "tl", id, 2); err != nil {
		t.Fatal(err)
	}
	f := &tailFixture{a: a, p: a.Partition("tl", id, 0), w: newSimWriter(t, a)}
	vAppend(t, a.Partition("tl", id, 1), nil, 9, vRecs(0, 9), GapBeforeStart, GapCompacted)
	if err := f.w.claim(f.p); err != nil {
		t.Fatal(err)
	}
	f.write(flushes)
	return f
}

func (f *tailFixture) write(n int) {
	for i := 0; i < n; i++ {
		r := mkRecs(f.next, f.next+3, func(o int64) int64 { return 100 + o })
		if i%3 == 0 {
			r = r[:2]
		}
		f.w.flush(map[*PartitionLog]int64{f.p: f.next + 3}, map[*PartitionLog][]Record{f.p: r})
		f.records += int64(len(r))
		f.next += 4
	}
}

// compact compacts the first n entries of the tail (all if n > the tail's).
func (f *tailFixture) compact(t *testing.T, n int) {
	t.Helper()
	ctx := context.Background()
	head, _, commits := tailOf(t, f.p)
	c, err := f.p.Compact(ctx, head, commits[:min(n, len(commits))], "compactor", 1)
	if err != nil {
		t.Fatal(err)
	}
	f.w.parts[f.p].tail.TrimTo(c.End)
}

// tailEntries returns the tail's entries and their refs as a fresh reader
// finds them.
func (f *tailFixture) tailEntries(t *testing.T) ([]EntryRef, []*Commit) {
	t.Helper()
	ctx := context.Background()
	a, err := Open(ctx, f.a.st)
	if err != nil {
		t.Fatal(err)
	}
	_, refs, commits := tailOf(t, a.Partition(f.p.Topic, f.p.TopicID, f.p.Partition))
	return refs, commits
}

// verify runs Verify on a freshly opened archive and returns the result,
// the findings and partition 0's head.
func (f *tailFixture) verify(t *testing.T) (VerifyResult, []Finding, *Commit) {
	t.Helper()
	ctx := context.Background()
	a, err := Open(ctx, f.a.st)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []Finding
	var head *Commit
	res, err := a.Verify(ctx, VerifyOptions{Concurrency: 2, Completeness: func(_ context.Context, heads []PartitionHead, _ func(Finding)) error {
		for _, h := range heads {
			if h.Partition == 0 {
				head = h.Head
			}
		}
		return nil
	}}, func(fd Finding) {
		mu.Lock()
		got = append(got, fd)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	return res, got, head
}

func (f *tailFixture) checkClean(t *testing.T, what string, wantCommits int64) {
	t.Helper()
	res, got, head := f.verify(t)
	var bad []string
	for _, fd := range got {
		if fd.Severity != SeverityInfo {
			bad = append(bad, fd.String())
		}
	}
	if !res.OK() || res.Warnings != 0 || len(bad) > 0 {
		t.Fatalf("%s: %+v\n%s", what, res, strings.Join(bad, "\n"))
	}
	if head == nil || head.End != f.next-1 {
		t.Fatalf("%s: head %+v, want end %d", what, head, f.next-1)
	}
	if res.Records != f.records+10 || res.Commits != wantCommits+1 || res.Segments != wantCommits+1 {
		t.Fatalf("%s: records %d commits %d segments %d, want %d, %d", what, res.Records, res.Commits, res.Segments, f.records+10, wantCommits+1)
	}
	var gapOffsets int64
	for _, g := range res.GapOffsets {
		gapOffsets += g
	}
	if res.Records+gapOffsets != f.next+10 {
		t.Fatalf("%s: %d records and %d gap offsets, want %d offsets", what, res.Records, gapOffsets, f.next+10)
	}
}

// TestVerifyTail: a packed partition verifies clean with its tail counted
// and its newest entry as the head: tail only, after compacting part of
// the tail (the first tail entry's seq and total bytes then differ from
// the compacted head's successor's), after a second compaction, and after
// the writer went on.
func TestVerifyTail(t *testing.T) {
	t.Parallel()
	f := newTailFixture(t, 30)
	f.checkClean(t, "tail only", 30)
	f.compact(t, 20)
	f.checkClean(t, "compacted 20 entries", 1+10)
	f.write(5)
	f.compact(t, 7)
	f.checkClean(t, "compacted twice", 2+8)
	f.compact(t, 100)
	f.checkClean(t, "all compacted", 3)
	f.write(3)
	f.checkClean(t, "written on", 3+3)
}

// TestVerifyTailDamage: damage to the tail is a problem naming the flush
// object, never a crash; the compacted part is still verified.
func TestVerifyTailDamage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, f *tailFixture) (key, msg string)
	}{
		{"flipped byte in a tail entry's body", func(t *testing.T, f *tailFixture) (string, string) {
			_, commits := f.tailEntries(t)
			c := commits[len(commits)/2]
			rewrite(t, f.a.st, c.SegmentKey, func(b []byte) []byte {
				b[c.SegmentOffset+segHeaderSize+3] ^= 0x10
				return b
			})
			return c.SegmentKey, "CRC32C"
		}},
		{"deleted flush object", func(t *testing.T, f *tailFixture) (string, string) {
			refs, _ := f.tailEntries(t)
			key := refs[len(refs)/2].Key()
			del(t, f.a.st, key)
			return key, "tail unreadable"
		}},
		{"corrupt tail entry", func(t *testing.T, f *tailFixture) (string, string) {
			refs, _ := f.tailEntries(t)
			r := refs[len(refs)/2]
			rewrite(t, f.a.st, r.Key(), func(b []byte) []byte {
				b[r.Pos+entryPrefixSize+10] ^= 0x01
				return b
			})
			return r.Key(), "tail unreadable"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newTailFixture(t, 25)
			f.compact(t, 8)
			key, msg := tc.damage(t, f)
			res, got, _ := f.verify(t)
			if res.OK() {
				t.Fatalf("damage not detected: %+v", res)
			}
			found := false
			for _, fd := range got {
				if fd.Severity == SeverityProblem && fd.Key == key && strings.Contains(fd.Message, msg) {
					found = true
				}
			}
			if !found {
				var s []string
				for _, fd := range got {
					s = append(s, fd.String())
				}
				t.Fatalf("no problem naming %s (%q):\n%s", key, msg, strings.Join(s, "\n"))
			}
			if res.Commits < 1 {
				t.Fatalf("the compacted part was not verified: %+v", res)
			}
		})
	}
}

// TestVerifyTailHandover: after a handover, the paused writer's void
// entries (an older epoch, unreachable from the newest claim) are neither
// verified nor reported; the tail of both writers verifies clean.
func TestVerifyTailHandover(t *testing.T) {
	t.Parallel()
	f := newTailFixture(t, 12)
	w2 := newSimWriter(t, f.a)
	if err := w2.claim(f.p); err != nil {
		t.Fatal(err)
	}
	for i := int64(0); i < 5; i++ { // the paused writer's void entries
		f.w.flushRange(f.p, f.next+i*2, f.next+i*2+1)
	}
	f.w = w2
	f.write(6)
	f.checkClean(t, "after the handover", 18)
	f.compact(t, 14)
	f.checkClean(t, "compacted across the handover", 1+4)
}
