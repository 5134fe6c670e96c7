package manifest

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/filestore"
	"github.com/kbackup/kbackup/store/storefault"
)

const dayMs = int64(24 * time.Hour / time.Millisecond)

// expiryTs: commit i (offsets 10i..10i+9) holds records of day i.
func expiryTs(o int64) int64 { return (o/10)*dayMs + o }

var expiryID = TopicID{0xe, 0x1}

// newExpiryFixture writes 10 commits of 10 records each (offsets 0..99,
// commit i on day i) into a fresh directory store.
func newExpiryFixture(t *testing.T) (store.Store, []*Commit) {
	t.Helper()
	a, st := newTestArchive(t)
	if err := a.EnsureTopic(context.Background(), "orders", expiryID, 1); err != nil {
		t.Fatal(err)
	}
	p := a.Partition("orders", expiryID, 0)
	var cs []*Commit
	var head *Commit
	for i := int64(0); i < 10; i++ {
		head = appendRecords(t, p, head, 10*i+9, mkRecs(10*i, 10*i+9, expiryTs))
		cs = append(cs, head)
	}
	return st, cs
}

func openPartition(t *testing.T, st store.Store) (*Archive, *PartitionLog) {
	t.Helper()
	a, err := Open(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	return a, a.Partition("orders", expiryID, 0)
}

// keys lists every key under the partition, segment nonces left out.
func keys(t *testing.T, st store.Store) []string {
	t.Helper()
	var out []string
	err := st.List(context.Background(), store.ListOptions{Prefix: PartitionPrefix("orders", expiryID, 0)}, func(e store.ListEntry) error {
		k := strings.TrimPrefix(e.Key, PartitionPrefix("orders", expiryID, 0))
		if strings.HasSuffix(k, ".kseg") {
			k = k[:len(k)-len("0123456789abcdef.kseg")]
		}
		out = append(out, k)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// verifyProblems lists the problems verify finds.
func verifyProblems(t *testing.T, a *Archive) []string {
	t.Helper()
	var out []string
	if _, err := a.Verify(context.Background(), VerifyOptions{}, func(f Finding) {
		if f.Severity == SeverityProblem {
			out = append(out, f.String())
		}
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func verifyClean(t *testing.T, a *Archive) VerifyResult {
	t.Helper()
	var fs []string
	res, err := a.Verify(context.Background(), VerifyOptions{}, func(f Finding) {
		if f.Severity >= SeverityWarning {
			fs = append(fs, f.String())
		}
	})
	if err != nil || len(fs) > 0 {
		t.Fatalf("verify: %v\n%s", err, strings.Join(fs, "\n"))
	}
	return res
}

func TestExpireByAge(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, cs := newExpiryFixture(t)
	a, p := openPartition(t, st)
	if a.FormatVersion() != 1 {
		t.Fatalf("a new archive is version %d", a.FormatVersion())
	}
	now := time.UnixMilli(10 * dayMs)
	// 5.5 days: commits 0..4 (days 0..4) are older, commit 5 is not.
	e, err := p.Expire(ctx, ExpireOptions{Retention: Retention{Age: 132 * time.Hour}, Now: now, Writer: "w1"})
	if err != nil {
		t.Fatal(err)
	}
	if e.OldStart != 0 || e.Start != 50 || !e.Created || e.Reason != ReasonRetentionAge || e.Records != 50 || e.Commits != 5 ||
		e.Bytes != cs[4].TotalBytes || *e.Marker.OldestTimestamp != expiryTs(50) || *e.Marker.FirstRecordOffset != 50 ||
		*e.Marker.Below.RunningMaxTimestamp != expiryTs(49) {
		t.Fatalf("expiry %+v marker %+v", e, e.Marker)
	}
	if a2, _ := openPartition(t, st); a2.FormatVersion() != 2 {
		t.Fatalf("root not upgraded: %d", a2.FormatVersion())
	}
	// Again: nothing new, nothing written.
	if e2, err := p.Expire(ctx, ExpireOptions{Retention: Retention{Age: 132 * time.Hour}, Now: now}); err != nil || e2.Expired() || e2.Start != 50 {
		t.Fatalf("second expiry %+v %v", e2, err)
	}

	// A fresh reader sees the start.
	_, r := openPartition(t, st)
	_, err = r.Find(ctx, 49)
	var ee *ExpiredError
	if !errors.As(err, &ee) || !errors.Is(err, ErrExpired) ||
		!strings.Contains(err.Error(), "the oldest recoverable offset is 50, the oldest recoverable time "+FormatTime(expiryTs(50))) {
		t.Fatalf("Find(49): %v", err)
	}
	if c, err := r.Find(ctx, 50); err != nil || c.Start != 50 {
		t.Fatalf("Find(50): %v %v", c, err)
	}
	if _, err := r.FindTime(ctx, expiryTs(49), false); !errors.Is(err, ErrExpired) {
		t.Fatalf("FindTime(day 4): %v", err)
	}
	if _, err := r.FindTime(ctx, expiryTs(49)-1, true); !errors.Is(err, ErrExpired) {
		t.Fatalf("FindTime(> day 4 - 1): %v", err)
	}
	if c, err := r.FindTime(ctx, expiryTs(49)+1, false); err != nil || c.Start != 50 {
		t.Fatalf("FindTime(after day 4): %v %v", c, err)
	}
	if err := r.Scan(ctx, 0, -1, func(ScanItem) error { return nil }); !errors.Is(err, ErrExpired) {
		t.Fatalf("Scan(0): %v", err)
	}
	var n int64
	if err := r.Scan(ctx, 50, -1, func(it ScanItem) error { n++; return nil }); err != nil || n != 50 {
		t.Fatalf("Scan(50): %d %v", n, err)
	}
	if got, err := r.RecordsBefore(ctx, 50); err != nil || got != 50 {
		t.Fatalf("RecordsBefore(50) = %d %v", got, err)
	}
	if got, err := r.RecordsBefore(ctx, 55); err != nil || got != 55 {
		t.Fatalf("RecordsBefore(55) = %d %v", got, err)
	}

	sum, err := a.Summarize(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	ps := sum.Topics[0].Incarnations[0].Partitions[0]
	if ps.Start != 50 || ps.Records != 50 || ps.ExpiredRecords != 50 || ps.Commits != 5 || ps.ExpiredCommits != 5 ||
		ps.FirstRecordOffset != 50 || ps.FirstTimestamp != expiryTs(50) || ps.MaxTimestamp != expiryTs(99) || ps.End != 99 ||
		ps.Bytes != cs[9].TotalBytes-cs[4].TotalBytes || ps.ExpiredBytes != cs[4].TotalBytes {
		t.Fatalf("summary %+v", ps)
	}
	if tot := sum.Topics[0].Incarnations[0].Totals; tot.ExpiredRecords != 50 || tot.Records != 50 {
		t.Fatalf("totals %+v", tot)
	}

	res := verifyClean(t, a)
	if res.ExpiredPartitions != 1 || res.ExpiredOffsets != 50 || res.AwaitingDeletion != 15 || res.Commits != 5 || res.Records != 50 {
		t.Fatalf("verify %+v", res)
	}

	// Within the grace period nothing is deleted.
	created := time.UnixMilli(e.Marker.CreatedMs)
	d, err := p.DeleteExpired(ctx, DeleteOptions{Now: created.Add(59 * time.Minute)})
	if err != nil || d.Objects() != 0 || d.Pending != 50 || d.PendingUntil != created.Add(time.Hour).UnixMilli() {
		t.Fatalf("within grace: %+v %v", d, err)
	}
	// A reader that loaded the start before a newer expiry still reads below it.
	e3, err := p.Expire(ctx, ExpireOptions{Retention: Retention{Age: 84 * time.Hour}, Now: created.Add(30 * time.Minute)}) // 3.5 days: up to commit 6
	if err != nil || e3.Start != 70 || e3.OldStart != 50 || e3.Records != 20 {
		t.Fatalf("third expiry %+v %v", e3, err)
	}
	if c, err := r.Find(ctx, 55); err != nil || c.Start != 50 {
		t.Fatalf("a reader that planned before the expiry: %v %v", c, err)
	}
	// After the grace period of the first marker (the second's is not over).
	d, err = p.DeleteExpired(ctx, DeleteOptions{Now: created.Add(61 * time.Minute), Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if d.Below != 50 || d.TimeKeys != 5 || d.Commits != 5 || d.Segments != 5 || d.Markers != 0 || d.Pending != 70 {
		t.Fatalf("deletion %+v", d)
	}
	res = verifyClean(t, a)
	if res.ExpiredOffsets != 70 || res.AwaitingDeletion != 6 {
		t.Fatalf("verify after the first deletion %+v", res)
	}
	// Grace < 0: at once. The superseded marker goes last.
	d, err = p.DeleteExpired(ctx, DeleteOptions{Grace: -1})
	if err != nil || d.Below != 70 || d.Objects() != 7 || d.Markers != 1 {
		t.Fatalf("deletion %+v %v", d, err)
	}
	if got := keys(t, st); len(got) != 10 || got[0] != "commits/"+dec19(Invert(90)) || got[3] != "segments/"+dec19(70)+"-"+dec19(79)+"-" {
		t.Fatalf("keys %v", got) // 3 commits, segments and time keys, the marker
	}
	if d, err := p.DeleteExpired(ctx, DeleteOptions{Grace: -1}); err != nil || d.Objects() != 0 {
		t.Fatalf("idempotent: %+v %v", d, err)
	}
	if res := verifyClean(t, a); res.AwaitingDeletion != 0 || res.Commits != 3 {
		t.Fatalf("verify after deletion %+v", res)
	}
	if _, err := r.Find(ctx, 55); err == nil {
		t.Fatal("a deleted commit was found")
	}
}

func TestExpireBySizeAndHead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, cs := newExpiryFixture(t)
	a, p := openPartition(t, st)
	// Keep the bytes of the last two commits exactly: start 80.
	keep := cs[9].TotalBytes - cs[7].TotalBytes
	e, err := p.Expire(ctx, ExpireOptions{Retention: Retention{Bytes: keep}})
	if err != nil || e.Start != 80 || e.Reason != ReasonRetentionBytes || e.HeadPastRetention {
		t.Fatalf("size expiry %+v %v", e, err)
	}
	// One byte more to keep: commit 7 stays.
	_, p2 := openPartition(t, st)
	if e, err := p2.Expire(ctx, ExpireOptions{Retention: Retention{Bytes: keep + 1}}); err != nil || e.Expired() {
		t.Fatalf("no more: %+v %v", e, err)
	}
	// Both limits: the larger start wins; everything is old, but the head stays.
	e, err = p.Expire(ctx, ExpireOptions{Retention: Retention{Age: time.Hour, Bytes: 1 << 40}, Now: time.UnixMilli(100 * dayMs)})
	if err != nil || e.Start != 90 || e.Reason != ReasonRetentionAge || e.OldStart != 80 || !e.HeadPastRetention {
		t.Fatalf("everything old: %+v %v", e, err)
	}
	// Again: nothing more expires, and the head is still reported as kept
	// past the retention.
	if e, err := p.Expire(ctx, ExpireOptions{Retention: Retention{Age: time.Hour}, Now: time.UnixMilli(100 * dayMs)}); err != nil || e.Expired() || !e.HeadPastRetention {
		t.Fatalf("everything old, again: %+v %v", e, err)
	}
	// A size that keeps nothing: still the head.
	if e, err := p.Expire(ctx, ExpireOptions{Retention: Retention{Bytes: 1}}); err != nil || e.Expired() || e.Start != 90 {
		t.Fatalf("size 1: %+v %v", e, err)
	}
	if _, err := p.DeleteExpired(ctx, DeleteOptions{Grace: -1}); err != nil {
		t.Fatal(err)
	}
	// The head's time key is repaired from the marker when the commit
	// before the head is expired and deleted.
	if err := st.Delete(ctx, TimeKey(p.Prefix(), cs[9].RunningMaxTimestamp, 90)); err != nil {
		t.Fatal(err)
	}
	if err := p.RepairHead(ctx, cs[9]); err != nil {
		t.Fatal(err)
	}
	if c, err := p.FindTime(ctx, expiryTs(95), false); err != nil || c.Start != 90 {
		t.Fatalf("FindTime after repair: %v %v", c, err)
	}
	// The archiver extends the chain after the expiry.
	head := appendRecords(t, p, cs[9], 109, mkRecs(100, 109, expiryTs))
	if err := p.RepairHead(ctx, head); err != nil {
		t.Fatal(err)
	}
	res := verifyClean(t, a)
	if res.Commits != 2 || res.ExpiredOffsets != 90 || res.AwaitingDeletion != 0 {
		t.Fatalf("verify %+v", res)
	}
	sum, err := a.Summarize(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ps := sum.Topics[0].Incarnations[0].Partitions[0]; ps.Records != 20 || ps.Commits != 2 || ps.End != 109 || ps.FirstRecordOffset != 90 {
		t.Fatalf("summary %+v", ps)
	}
	// Nothing to expire without a retention, and in an empty partition.
	if e, err := a.Partition("orders", expiryID, 7).Expire(ctx, ExpireOptions{Retention: Retention{Bytes: 1}}); err != nil || e.Expired() {
		t.Fatalf("empty partition: %+v %v", e, err)
	}
	if e, err := p.Expire(ctx, ExpireOptions{}); err != nil || e.Expired() {
		t.Fatalf("no retention: %+v %v", e, err)
	}
}

func TestExpireDryRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, _ := newExpiryFixture(t)
	before := keys(t, st)
	_, p := openPartition(t, st)
	e, err := p.Expire(ctx, ExpireOptions{Retention: Retention{Age: time.Hour}, Now: time.UnixMilli(100 * dayMs), DryRun: true})
	if err != nil || e.Start != 90 || e.Created {
		t.Fatalf("dry run %+v %v", e, err)
	}
	if !slices.Equal(before, keys(t, st)) {
		t.Fatal("a dry run wrote")
	}
	if a, _ := openPartition(t, st); a.FormatVersion() != 1 {
		t.Fatal("a dry run upgraded the root")
	}
}

func TestVerifyArchiveStartDamage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		start int64
		want  string
	}{
		{"inside a commit", 55, "no commit starts at the archive start 55"},
		{"beyond the head", 100, "beyond the head commit's start 90"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st, cs := newExpiryFixture(t)
			a, p := openPartition(t, st)
			m := &ArchiveStart{FormatVersion: 2, Start: tc.start, Reason: "manual", Writer: "test",
				Below: StartTotals{Commits: 5, Records: tc.start, RunningMaxTimestamp: &cs[4].RunningMaxTimestamp}}
			put(t, st, StartKey(p.Prefix(), tc.start), EncodeArchiveStart(m))
			problems := verifyProblems(t, a)
			if len(problems) == 0 || !strings.Contains(strings.Join(problems, "\n"), tc.want) {
				t.Fatalf("problems:\n%s", strings.Join(problems, "\n"))
			}
		})
	}
	// A marker whose totals do not match the commit it names.
	st, cs := newExpiryFixture(t)
	a, p := openPartition(t, st)
	m := &ArchiveStart{FormatVersion: 2, Start: 50, Reason: "manual", Writer: "test",
		Below: StartTotals{Commits: 5, Records: 49, GapOffsets: GapCounts{Compacted: 1}, Bytes: cs[4].TotalBytes, RunningMaxTimestamp: &cs[4].RunningMaxTimestamp}}
	put(t, st, StartKey(p.Prefix(), 50), EncodeArchiveStart(m))
	problems := verifyProblems(t, a)
	if len(problems) != 1 || !strings.Contains(problems[0], "running totals") {
		t.Fatalf("problems:\n%s", strings.Join(problems, "\n"))
	}
	// An unreadable marker.
	put(t, st, StartKey(p.Prefix(), 60), []byte(`{"format_version":2}`))
	problems = verifyProblems(t, a)
	if len(problems) == 0 || !strings.Contains(problems[0], "archive start marker unreadable") {
		t.Fatalf("problems:\n%s", strings.Join(problems, "\n"))
	}
}

// TestTwoExpirers: expirers racing each other (and a new archive start
// every round) leave a verified archive and the same objects as one.
func TestTwoExpirers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, _ := newExpiryFixture(t)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for day := int64(2); day <= 12; day += 2 {
				a, err := Open(ctx, st)
				if err != nil {
					t.Error(err)
					return
				}
				p := a.Partition("orders", expiryID, 0)
				if _, err := p.Expire(ctx, ExpireOptions{Retention: Retention{Age: time.Millisecond}, Now: time.UnixMilli(day * dayMs)}); err != nil {
					t.Error(err)
				}
				if _, err := p.DeleteExpired(ctx, DeleteOptions{Grace: -1}); err != nil {
					t.Error(err)
				}
			}
		}(w)
	}
	wg.Wait()
	a, p := openPartition(t, st)
	if _, err := p.DeleteExpired(ctx, DeleteOptions{Grace: -1}); err != nil {
		t.Fatal(err)
	}
	res := verifyClean(t, a)
	if res.ExpiredOffsets != 90 || res.AwaitingDeletion != 0 || res.Commits != 1 {
		t.Fatalf("verify %+v", res)
	}
	if got := keys(t, st); len(got) != 4 { // head commit, segment, time key, marker
		t.Fatalf("keys %v", got)
	}
}

// TestExpireCrashAtEveryStoreCall kills an expiry pass (Expire then
// DeleteExpired) after each of its store calls in turn: the archive
// verifies with every offset from its start readable, and a second pass
// ends where an uninterrupted one does.
func TestExpireCrashAtEveryStoreCall(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pass := func(st store.Store) error {
		a, err := Open(ctx, st)
		if err != nil {
			return err
		}
		p := a.Partition("orders", expiryID, 0)
		if _, err := p.Expire(ctx, ExpireOptions{Retention: Retention{Age: 132 * time.Hour}, Now: time.UnixMilli(10 * dayMs), Writer: "w"}); err != nil {
			return err
		}
		_, err = p.DeleteExpired(ctx, DeleteOptions{Grace: -1})
		return err
	}
	ref, _ := newExpiryFixture(t)
	counting := storefault.New(ref, 1)
	if err := pass(counting); err != nil {
		t.Fatal(err)
	}
	calls := counting.Calls()
	want := keys(t, ref)
	if calls < 10 {
		t.Fatalf("a pass made only %d store calls", calls)
	}
	for n := int64(0); n < calls; n++ {
		st, _ := newExpiryFixture(t)
		fs := storefault.New(st, 1)
		fs.FreezeAfter(n)
		if err := pass(fs); err == nil {
			t.Fatalf("crash after %d calls: the pass succeeded", n)
		}
		a, p := openPartition(t, st)
		verifyClean(t, a)
		s, err := p.LoadStart(ctx)
		if err != nil {
			t.Fatal(err)
		}
		next := s.StartOffset()
		if err := p.Scan(ctx, next, -1, func(it ScanItem) error {
			if it.Record == nil || it.Record.Offset != next {
				t.Fatalf("crash after %d calls: scan at %d got %+v", n, next, it)
			}
			next++
			return nil
		}); err != nil || next != 100 {
			t.Fatalf("crash after %d calls: scan to %d: %v", n, next, err)
		}
		if err := pass(st); err != nil {
			t.Fatalf("crash after %d calls: rerun: %v", n, err)
		}
		if got := keys(t, st); !slices.Equal(got, want) {
			t.Fatalf("crash after %d calls: after the rerun\n%v\nwant\n%v", n, got, want)
		}
	}
}

// TestV1ArchiveContinues: an archive written by the version-1 code
// (testdata/v1-archive) is read, extended, expired and verified by this
// code, and its root marker becomes version 2 only with the first expiry.
func TestV1ArchiveContinues(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, a := v1Fixture(t)
	verifyClean(t, a)
	const base, day = int64(1700000000000), dayMs
	ts := func(o int64) int64 { return base + (o/10)*day + o }
	id := TopicID{0x0e, 0x01}
	p := a.Partition("orders", id, 0)
	head, err := p.Head(ctx)
	if err != nil || head.End != 39 || head.Writer != "v1-writer" {
		t.Fatalf("head %+v %v", head, err)
	}
	var n int64
	if err := p.Scan(ctx, 0, -1, func(it ScanItem) error {
		if it.Record == nil || it.Record.Offset != n || it.Record.Timestamp != ts(n) || string(it.Record.Value) != "v1 record" {
			t.Fatalf("record %d: %+v", n, it)
		}
		n++
		return nil
	}); err != nil || n != 40 {
		t.Fatalf("scan: %d records, %v", n, err)
	}
	// Extend it (the archiver after an upgrade), then expire days 0 and 1.
	head = appendRecords(t, p, head, 49, mkRecs(40, 49, ts))
	if err := p.RepairHead(ctx, head); err != nil {
		t.Fatal(err)
	}
	if a2, _ := Open(ctx, st); a2.FormatVersion() != 1 {
		t.Fatal("appending upgraded the root")
	}
	for part := int32(0); part < 2; part++ {
		e, err := a.Partition("orders", id, part).Expire(ctx, ExpireOptions{Retention: Retention{Age: 2 * 24 * time.Hour}, Now: time.UnixMilli(base + 3*day + 20)})
		if err != nil || e.Start != 20 {
			t.Fatalf("partition %d: expire %+v %v", part, e, err)
		}
		if _, err := a.Partition("orders", id, part).DeleteExpired(ctx, DeleteOptions{Grace: -1}); err != nil {
			t.Fatal(err)
		}
	}
	b, err := store.Get(ctx, st, RootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, err := DecodeRoot(b)
	if err != nil || root.FormatVersion != 2 || root.CreatedBy != "kbackup v1 (412c96a)" || root.CreatedMs != base {
		t.Fatalf("root after the first expiry: %+v %v", root, err)
	}
	res := verifyClean(t, a)
	if res.ExpiredOffsets != 40 || res.AwaitingDeletion != 0 || res.Commits != 5 {
		t.Fatalf("verify %+v", res)
	}
	sum, err := a.Summarize(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	p0, p1 := sum.Topics[0].Incarnations[0].Partitions[0], sum.Topics[0].Incarnations[0].Partitions[1]
	if p0.Start != 20 || p0.Records != 30 || p0.ExpiredRecords != 20 || p0.End != 49 ||
		p1.Start != 20 || p1.Records != 20 || p1.ExpiredRecords != 13 || p1.ExpiredGapOffsets[GapBeforeStart] != 5 ||
		p1.ExpiredGapOffsets[GapCompacted] != 2 || p1.GapOffsets != [NumGapReasons]int64{} {
		t.Fatalf("summary %+v\n%+v", p0, p1)
	}
}

// v1Fixture copies the archive written by the version-1 code
// (testdata/v1-archive) to a temporary directory and opens it.
func v1Fixture(t *testing.T) (store.Store, *Archive) {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("testdata/v1-archive")); err != nil {
		t.Fatal(err)
	}
	st, err := filestore.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := Open(context.Background(), st)
	if err != nil || a.FormatVersion() != 1 {
		t.Fatalf("open: %v", err)
	}
	return st, a
}

// TestDeleteExpiredDryRunCounts: a dry run counts what the real deletion
// deletes (it counted each commit entry twice: once with its segment and
// again as a commit entry left below the start, which it still is).
func TestDeleteExpiredDryRunCounts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, _ := newExpiryFixture(t)
	_, p := openPartition(t, st)
	if e, err := p.Expire(ctx, ExpireOptions{Retention: Retention{Age: 108 * time.Hour}, Now: time.UnixMilli(10 * dayMs)}); err != nil || e.Start != 60 {
		t.Fatalf("expire %+v %v", e, err)
	}
	before := keys(t, st)
	dry, err := p.DeleteExpired(ctx, DeleteOptions{Grace: -1, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(before, keys(t, st)) {
		t.Fatal("a dry run deleted")
	}
	real, err := p.DeleteExpired(ctx, DeleteOptions{Grace: -1})
	if err != nil {
		t.Fatal(err)
	}
	if real.Commits != 6 || real.Segments != 6 || real.TimeKeys != 6 {
		t.Fatalf("deletion %+v", real)
	}
	if dry != real {
		t.Fatalf("dry run %+v, real %+v", dry, real)
	}
}
