package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kbackup/kbackup/archive"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store/filestore"
)

// newExpireFixture archives orders/0 as three commits of three records,
// 10 days, 5 days and an hour old (offsets 0..2, 3..5, 6..8), and
// payments/0 as one commit 10 days old.
func newExpireFixture(t *testing.T) (*fixture, time.Time) {
	t.Helper()
	dir := t.TempDir()
	st, err := filestore.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := manifest.Init(t.Context(), st, "test", 1)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ms := func(ago time.Duration, i int64) int64 { return now.Add(-ago).UnixMilli() + i }
	var segs []seg
	for i, ago := range []time.Duration{240 * time.Hour, 120 * time.Hour, time.Hour} {
		o := int64(3 * i)
		segs = append(segs, seg{end: o + 2, recs: []manifest.Record{
			rec(o, ms(ago, 0), []byte("k"), []byte("v")), rec(o+1, ms(ago, 1), nil, []byte("v")), rec(o+2, ms(ago, 2), nil, nil)}})
	}
	for _, tc := range []struct {
		topic string
		id    manifest.TopicID
	}{{"orders", ordersID}, {"payments", paymentsID}} {
		if err := a.EnsureTopic(t.Context(), tc.topic, tc.id, 1); err != nil {
			t.Fatal(err)
		}
	}
	commitSegs(t, a, "orders", ordersID, 0, segs...)
	commitSegs(t, a, "payments", paymentsID, 0, segs[0])
	return &fixture{dir: dir, url: "file://" + dir, st: st, a: a}, now
}

func TestExpireCLI(t *testing.T) {
	t.Parallel()
	f, now := newExpireFixture(t)
	oldest := manifest.FormatTime(now.Add(-120 * time.Hour).UnixMilli())

	// A dry run says what would happen and writes nothing.
	out, errOut, code := runCLI(t, nil, "expire", "--store", f.url, "--retention", "7d", "--dry-run")
	if code != 0 || !strings.Contains(out, "would expire orders/0: archive start 0 -> 3 (retention-age): 3 records") ||
		!strings.Contains(out, "oldest recoverable time "+oldest) || !strings.Contains(out, "(dry run: nothing written)") ||
		// payments/0 is one 10-day-old commit: past 7d, kept as the newest.
		!strings.Contains(out, "\nexpire: 1 partitions hold only records older than the retention in their newest commit, which never expires") ||
		strings.Contains(out, "payments") {
		t.Fatalf("dry run: exit %d %s\n%s", code, errOut, out)
	}
	if got := f.keys(t, "topics/", "/start/"); len(got) != 0 {
		t.Fatalf("the dry run wrote %v", got)
	}

	// The pass: orders/0 expires its first commit, kept for the grace period.
	out, errOut, code = runCLI(t, nil, "expire", "--store", f.url, "--retention", "7d")
	if code != 0 || errOut != "" || !strings.Contains(out, "expire orders/0: archive start 0 -> 3 (retention-age): 3 records") ||
		!strings.Contains(out, "keep orders/0 below offset 3 until ") || !strings.Contains(out, "expire: 2 partitions, 1 expired (3 records), 0 objects deleted") {
		t.Fatalf("expire: exit %d %s\n%s", code, errOut, out)
	}
	// ls shows the window.
	out, _, code = runCLI(t, nil, "ls", "--store", f.url)
	if code != 0 || !strings.Contains(out, "3..8") || !strings.Contains(out, "below 3 (3 records)") || !strings.Contains(out, "EXPIRED") ||
		!strings.Contains(out, "2 topics, 2 partitions, 9 records") || !strings.Contains(out, "expired in 1 partitions: 3 records below their archive start") {
		t.Fatalf("ls:\n%s", out)
	}
	out, _, _ = runCLI(t, nil, "ls", "--store", f.url, "--json", "--topics", "orders")
	var doc lsDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	p0 := doc.Topics[0].Incarnations[0].Partitions[0]
	if doc.FormatVersion != 2 || *p0.ArchiveStart != 3 || p0.ExpiredRecords != 3 || p0.Records != 6 || *p0.FirstRecordOffset != 3 ||
		p0.Commits != 2 || p0.ExpiredCommits != 1 || p0.RecoverableFromMs == nil || *p0.MinTimestampMs != now.Add(-120*time.Hour).UnixMilli() {
		t.Fatalf("ls --json: %s", out)
	}
	// cat below the start fails naming the oldest recoverable time; cat
	// without bounds starts at the archive start and says so.
	for _, bound := range [][]string{{"--from-offset", "0"}, {"--from", "-11d"}, {"--to-offset", "2"}} {
		out, errOut, code = runCLI(t, nil, append([]string{"cat", "--store", f.url, "--topic", "orders"}, bound...)...)
		if code != 1 || out != "" {
			t.Fatalf("cat %v: exit %d\n%s", bound, code, out)
		}
		oneLineErr(t, errOut, "is expired", "the oldest recoverable offset is 3, the oldest recoverable time "+oldest)
	}
	out, errOut, code = runCLI(t, nil, "cat", "--store", f.url, "--topic", "orders")
	if code != 0 || strings.Count(out, "\n") != 6 || !strings.Contains(out, `"offset":3,`) || !strings.Contains(errOut, "archive_start=3") {
		t.Fatalf("cat: exit %d %s\n%s", code, errOut, out)
	}
	// verify: the chain from the start; expired offsets are no problem.
	out, _, code = runCLI(t, nil, "verify", "--store", f.url)
	if code != 0 || !strings.Contains(out, "verify OK") || !strings.Contains(out, "expired: 3 offsets below the archive start of 1 partitions") ||
		!strings.Contains(out, "3 objects await deletion") {
		t.Fatalf("verify: exit %d\n%s", code, out)
	}

	// --grace 0s deletes at once; --json; an override keeps payments.
	out, errOut, code = runCLI(t, nil, "expire", "--store", f.url, "--retention", "3d", "--retention", "pay.*=0", "--grace", "0s", "--json", "--log-level", "error")
	var ed expireDoc
	if code != 0 || json.Unmarshal([]byte(out), &ed) != nil || ed.Schema != "kbackup.expire/v1" || len(ed.Partitions) != 2 ||
		ed.ExpiredPartitions != 1 || ed.ExpiredRecords != 3 || ed.DeletedObjects != 7 || ed.Failed != 0 {
		t.Fatalf("expire --json: exit %d %s\n%s", code, errOut, out)
	}
	if o := ed.Partitions[0]; o.Topic != "orders" || o.OldStart != 3 || o.ArchiveStart != 6 || o.Deleted.Below != 6 || o.Deleted.Segments != 2 ||
		o.Deleted.Markers != 1 || *o.RetentionMs != 3*24*3600*1000 || o.Error != nil || o.HeadPastRetention {
		t.Fatalf("orders/0: %+v", o)
	}
	if pp := ed.Partitions[1]; pp.Topic != "payments" || pp.RetentionMs != nil || pp.ArchiveStart != 0 {
		t.Fatalf("payments/0: %+v", pp)
	}
	if got := f.keys(t, "topics/orders/", "/segments/"); len(got) != 1 {
		t.Fatalf("segments left %v", got)
	}
	out, _, code = runCLI(t, nil, "verify", "--store", f.url, "--json")
	var vd verifyDoc
	if code != 0 || json.Unmarshal([]byte(out), &vd) != nil || !vd.OK || vd.ExpiredOffsets != 6 || vd.AwaitingDeletion != 0 {
		t.Fatalf("verify --json: %s", out)
	}
	// Nothing more to do: a second pass changes nothing.
	out, _, code = runCLI(t, nil, "expire", "--store", f.url, "--retention", "3d", "--retention", "pay.*=0", "--grace", "0s")
	if code != 0 || !strings.HasPrefix(out, "expire: 2 partitions, 0 expired (0 records), 0 objects deleted") || strings.Contains(out, "newest commit") {
		t.Fatalf("second pass: %s", out)
	}
}

func TestExpireCLISizeAndErrors(t *testing.T) {
	t.Parallel()
	f, _ := newExpireFixture(t)
	out, errOut, code := runCLI(t, nil, "expire", "--store", f.url, "--retention-bytes", "1", "--topics", "orders", "--grace", "0s")
	if code != 0 || !strings.Contains(out, "expire orders/0: archive start 0 -> 6 (retention-bytes)") || strings.Contains(out, "payments") {
		t.Fatalf("size: exit %d %s\n%s", code, errOut, out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--retention", "7"}, `--retention "7": invalid duration`},
		{[]string{"--retention", "1d", "--retention", "2d"}, "--retention given twice without REGEX="},
		{[]string{"--retention", "(=1d"}, "invalid regular expression"},
		{[]string{"--retention-bytes", "lots"}, "invalid size"},
		{[]string{"--topics", "("}, "--topics/--exclude"},
	} {
		_, errOut, code := runCLI(t, nil, append([]string{"expire", "--store", f.url}, tc.args...)...)
		if code != ExitUsage {
			t.Fatalf("%v: exit %d %s", tc.args, code, errOut)
		}
		oneLineErr(t, errOut, tc.want)
	}
	// A failing partition: the others are done, exit 1.
	if err := f.st.Put(t.Context(), manifest.StartKey(manifest.PartitionPrefix("payments", paymentsID, 0), 1), strings.NewReader("{}"), 2, putOverwrite); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = runCLI(t, nil, "expire", "--store", f.url, "--retention", "1d", "--log-level", "error")
	if code != ExitFailure || !strings.Contains(out, "FAILED payments/0:") {
		t.Fatalf("failure: exit %d\n%s", code, out)
	}
	oneLineErr(t, errOut, "expire failed for 1 partitions")
}

// TestExpireCLIEnv: the retention flags read KBACKUP_EXPIRE_RETENTION, then
// KBACKUP_RETENTION (shared with the archiver).
func TestExpireCLIEnv(t *testing.T) {
	f, _ := newExpireFixture(t)
	t.Setenv("KBACKUP_RETENTION", "7d")
	t.Setenv("KBACKUP_EXPIRE_DRY_RUN", "true")
	out, errOut, code := runCLI(t, nil, "expire", "--store", f.url)
	if code != 0 || !strings.Contains(out, "would expire orders/0: archive start 0 -> 3") {
		t.Fatalf("env: exit %d %s\n%s", code, errOut, out)
	}
	t.Setenv("KBACKUP_EXPIRE_RETENTION", "3d")
	out, _, _ = runCLI(t, nil, "expire", "--store", f.url)
	if !strings.Contains(out, "would expire orders/0: archive start 0 -> 6") {
		t.Fatalf("command-scoped env:\n%s", out)
	}
	out, _, _ = runCLI(t, nil, "expire", "--help")
	for _, want := range []string{"(default: 1h)", "$KBACKUP_EXPIRE_RETENTION, $KBACKUP_RETENTION", "$KBACKUP_EXPIRE_TOPICS]"} {
		if !strings.Contains(out, want) {
			t.Fatalf("expire --help lacks %q:\n%s", want, out)
		}
	}
}

// TestRestoreExpired: a restore without bounds starts at the archive start
// and its plan says so; a bound below it fails naming the oldest
// recoverable time.
func TestRestoreExpired(t *testing.T) {
	t.Parallel()
	f, now := newExpireFixture(t)
	oldest := manifest.FormatTime(now.Add(-120 * time.Hour).UnixMilli())
	if _, errOut, code := runCLI(t, nil, "expire", "--store", f.url, "--retention", "7d", "--grace", "0s"); code != 0 {
		t.Fatalf("expire: %s", errOut)
	}
	tgt, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.Close()
	args := func(extra ...string) []string {
		return append([]string{"restore", "--brokers", tgt.ListenAddrs()[0], "--store", f.url, "--topics", "orders", "--log-level", "error"}, extra...)
	}
	out, errOut, code := runCLI(t, nil, args("--dry-run")...)
	if code != 0 || !strings.Contains(out, "3..8") || !strings.Contains(out, "orders/0: expired below 3 (retention); the oldest recoverable offset is 3, time "+oldest) {
		t.Fatalf("dry run: exit %d %s\n%s", code, errOut, out)
	}
	for _, bound := range [][]string{{"--from-offset", "1"}, {"--from", "-11d"}, {"--to", "-8d"}} {
		out, errOut, code = runCLI(t, nil, args(append(bound, "--dry-run")...)...)
		if code != ExitFailure {
			t.Fatalf("%v: exit %d\n%s", bound, code, out)
		}
		oneLineErr(t, errOut, "orders/0", "is expired", "the oldest recoverable offset is 3, the oldest recoverable time "+oldest)
	}
	if out, errOut, code = runCLI(t, nil, args()...); code != 0 {
		t.Fatalf("restore: exit %d %s\n%s", code, errOut, out)
	}
	got := kfakeRecords(t, tgt, "orders")
	if len(got[0]) != 6 || string(got[0][0].Key) != "k" {
		t.Fatalf("restored %d records", len(got[0]))
	}
}

func TestArchiveRetentionFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, errOut, code := runCLI(t, nil, "archive", "--once", "--brokers", "127.0.0.1:1", "--store", "file://"+dir, "--retention", "30d")
	if code != ExitUsage {
		t.Fatalf("archive --once --retention: exit %d %s", code, errOut)
	}
	oneLineErr(t, errOut, "with --once run kbackup expire")
	out, _, _ := runCLI(t, nil, "archive", "--help")
	for _, want := range []string{"--retention AGE", "--retention-bytes SIZE", "--retention-interval value", "(default: 1h)", "$KBACKUP_ARCHIVE_RETENTION, $KBACKUP_RETENTION"} {
		if !strings.Contains(out, want) {
			t.Fatalf("archive --help lacks %q:\n%s", want, out)
		}
	}
}

// TestExpireReportsConcurrentPass: when another expiry pass created the
// marker first (Expiry.Created false), the text and --json say so and the
// totals do not count the partition as expired by this pass.
func TestExpireReportsConcurrentPass(t *testing.T) {
	t.Parallel()
	res := &archive.ExpireResult{Partitions: []archive.PartitionExpiry{
		{Topic: "a", Partition: 0, Current: true, Expiry: manifest.Expiry{OldStart: 0, Start: 3, Reason: manifest.ReasonRetentionAge, Records: 3, Created: false, Marker: &manifest.ArchiveStart{Start: 3}}},
		{Topic: "b", Partition: 0, Current: true, Expiry: manifest.Expiry{OldStart: 0, Start: 5, Reason: manifest.ReasonRetentionAge, Records: 5, Created: true, Marker: &manifest.ArchiveStart{Start: 5}}},
	}}
	var b strings.Builder
	if err := writeExpireText(&b, false, res); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.Contains(out, "expire a/0: archive start 0 -> 3 (retention-age): created meanwhile by another expiry pass\n") ||
		!strings.Contains(out, "expire b/0: archive start 0 -> 5 (retention-age): 5 records") ||
		!strings.Contains(out, "expire: 2 partitions, 1 expired (5 records)") {
		t.Fatalf("text:\n%s", out)
	}
	doc := expireDocFor("file:///x", false, res)
	if doc.ExpiredPartitions != 1 || doc.ExpiredRecords != 5 || doc.Partitions[0].ByThisPass || !doc.Partitions[1].ByThisPass {
		t.Fatalf("json: %+v", doc)
	}
	// A dry run creates nothing: what it would expire is its own.
	if d := expireDocFor("file:///x", true, res); d.ExpiredPartitions != 2 || !d.Partitions[0].ByThisPass {
		t.Fatalf("dry run json: %+v", d)
	}
}
