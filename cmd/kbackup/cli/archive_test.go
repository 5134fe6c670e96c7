package cli

import (
	"context"
	"encoding/json"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/store/s3store/s3fake"
	"github.com/kbackup/kbackup/store/storeurl"
)

func kfakeWithTopic(t *testing.T, topic string, partitions int32, records int) (*kfake.Cluster, *kgo.Client) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), partitions, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	produceN(t, cl, records)
	return c, cl
}

func produceN(t *testing.T, cl *kgo.Client, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		r := &kgo.Record{Key: []byte{byte(i)}, Value: []byte("v")}
		if i%4 == 0 {
			r.Key, r.Value = nil, nil
		}
		if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestArchiveOnceThenRead: `archive --once` through the CLI, then ls, cat
// and verify --brokers (complete, then behind the live log).
func TestArchiveOnceThenRead(t *testing.T) {
	c, cl := kfakeWithTopic(t, "orders", 2, 20)
	url := "file://" + t.TempDir()
	brokers := c.ListenAddrs()[0]

	_, errOut, code := runCLI(t, nil, "archive", "--once", "--brokers", brokers, "--store", url, "--group", "", "--log-level", "error")
	if code != 0 {
		t.Fatalf("archive --once: exit %d: %s", code, errOut)
	}
	out, errOut, code := runCLI(t, nil, "ls", "--store", url, "--json")
	if code != 0 {
		t.Fatalf("ls: %d %s", code, errOut)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("ls --json: %v\n%s", err, out)
	}
	out, _, code = runCLI(t, nil, "cat", "--store", url, "--topic", "orders")
	if code != 0 || strings.Count(out, "\n") != 20 || !strings.Contains(out, `"key":null,"value":null`) {
		t.Fatalf("cat: exit %d, %d lines:\n%s", code, strings.Count(out, "\n"), out)
	}
	out, errOut, code = runCLI(t, nil, "verify", "--store", url, "--brokers", brokers)
	if code != 0 || !strings.Contains(out, "verify OK") {
		t.Fatalf("verify --brokers on a complete archive: exit %d\n%s%s", code, out, errOut)
	}
	// Records written just now are archiver lag, not a problem (a cron job
	// against a live archiver)...
	produceN(t, cl, 5)
	out, errOut, code = runCLI(t, nil, "verify", "--store", url, "--brokers", brokers)
	if code != 0 || !strings.Contains(out, "archiver lag: 5 offsets in 2 partitions within the allowance") {
		t.Fatalf("verify --brokers, archive behind by new records: exit %d\n%s%s", code, out, errOut)
	}
	// ...listed with --gaps...
	out, _, code = runCLI(t, nil, "verify", "--store", url, "--brokers", brokers, "--gaps")
	if code != 0 || !strings.Contains(out, "info orders/") || !strings.Contains(out, "not archived yet (archiver lag)") {
		t.Fatalf("verify --brokers --gaps: exit %d\n%s", code, out)
	}
	// ...and problems without an allowance.
	out, errOut, code = runCLI(t, nil, "verify", "--store", url, "--brokers", brokers, "--lag-allowance", "0")
	if code == 0 || !strings.Contains(out, "the archive lacks") {
		t.Fatalf("verify --brokers --lag-allowance 0 behind the log: exit %d\n%s%s", code, out, errOut)
	}
	oneLineErr(t, errOut, "verify found")
}

// TestVerifyBrokersAllowance: missing records older than the lag allowance
// are problems, named with their offsets; topics outside --topics/--exclude
// are not judged; --json carries the same.
func TestVerifyBrokersAllowance(t *testing.T) {
	t.Parallel()
	c, cl := kfakeWithTopic(t, "orders", 1, 0)
	url := "file://" + t.TempDir()
	brokers := c.ListenAddrs()[0]
	// Timestamps grow with offsets, as producers' clocks do: three records
	// two hours old are archived...
	for i := range 3 {
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "orders", Value: []byte{byte(i)}, Timestamp: time.Now().Add(-2 * time.Hour)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if _, errOut, code := runCLI(t, nil, "archive", "--once", "--brokers", brokers, "--store", url, "--group", "", "--log-level", "error"); code != 0 {
		t.Fatalf("archive --once: %s", errOut)
	}
	// ...then two records an hour old and a new one are not; neither is
	// topic "scratch" with an old record.
	old := time.Now().Add(-time.Hour)
	for _, r := range []*kgo.Record{{Topic: "orders", Value: []byte("a"), Timestamp: old}, {Topic: "orders", Value: []byte("b"), Timestamp: old},
		{Topic: "orders", Value: []byte("c")}} {
		if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 1, 1, nil, "scratch"); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "scratch", Value: []byte("x"), Timestamp: old}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	out, errOut, code := runCLI(t, nil, "verify", "--store", url, "--brokers", brokers)
	if code == 0 || !strings.Contains(out, "PROBLEM orders/0 offsets 3..4:") || !strings.Contains(out, "PROBLEM scratch/0 offsets 0..0:") ||
		!strings.Contains(out, "archiver lag: 1 offsets in 1 partitions") {
		t.Fatalf("verify --brokers: exit %d\n%s%s", code, out, errOut)
	}
	// scratch is not in the archiver's topics capture (created after it):
	// its problem says so, and how to check only the archived selection;
	// orders is in it.
	hint := "the archiver's newest topics capture, taken "
	if line := lineWith(out, "PROBLEM scratch/0"); !strings.Contains(line, hint) || !strings.Contains(line, "--topics/--exclude") {
		t.Fatalf("verify --brokers: no selection hint for a topic outside the capture:\n%s", out)
	}
	if strings.Contains(lineWith(out, "PROBLEM orders/0"), hint) {
		t.Fatalf("verify --brokers: selection hint for an archived topic:\n%s", out)
	}
	out, errOut, code = runCLI(t, nil, "verify", "--store", url, "--brokers", brokers, "--exclude", "scratch", "--json")
	var doc verifyDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("verify --json: %v\n%s", err, out)
	}
	if code == 0 || doc.OK || doc.Problems != 1 || len(doc.Findings) != 1 || *doc.Findings[0].From != 3 || *doc.Findings[0].To != 4 ||
		doc.Findings[0].Topic != "orders" || doc.Lag.Offsets != 1 || doc.Schema != "kbackup.verify/v1" {
		t.Fatalf("verify --exclude scratch --json: exit %d %+v", code, doc)
	}
	oneLineErr(t, errOut, "verify found 1 problems")
	// Only scratch, explicitly: its old record is the one problem.
	out, _, code = runCLI(t, nil, "verify", "--store", url, "--brokers", brokers, "--topics", "scratch")
	if code == 0 || strings.Contains(out, "orders/0") || !strings.Contains(out, "scratch/0 offsets 0..0") || strings.Contains(out, hint) {
		t.Fatalf("verify --topics scratch: exit %d (no selection hint when topics are selected)\n%s", code, out)
	}
}

// lineWith returns the first line of out that contains s ("" if none).
func lineWith(out, s string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

func TestArchiveBadInput(t *testing.T) {
	t.Parallel()
	url := "file://" + t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"archive", "--store", url}, "no Kafka brokers"},
		{[]string{"archive", "--brokers", "127.0.0.1:1"}, "no archive given"},
		{[]string{"archive", "--brokers", "127.0.0.1:1", "--store", url, "--topics", "("}, "invalid regular expression"},
		{[]string{"archive", "--brokers", "127.0.0.1:1", "--store", url, "--segment-bytes", "lots"}, "invalid size"},
		{[]string{"archive", "--brokers", "127.0.0.1:1", "--store", url, "--sasl-mechanism", "NOPE"}, "NOPE"},
		{[]string{"archive", "--brokers", "127.0.0.1:1", "--store", "relative/dir"}, "file:///"},
	} {
		_, errOut, code := runCLI(t, nil, tc.args...)
		if code == 0 {
			t.Fatalf("%v: exit 0", tc.args)
		}
		oneLineErr(t, errOut, tc.want)
	}
	// Unreachable cluster: a clear error within a bounded time.
	_, errOut, code := runCLI(t, nil, "archive", "--once", "--brokers", "127.0.0.1:1", "--store", url, "--dial-timeout", "1s", "--log-level", "error")
	if code != 1 {
		t.Fatalf("unreachable cluster: exit %d", code)
	}
	oneLineErr(t, errOut, "cannot reach Kafka")
}

// TestArchiveSignalFlushes: the archiver runs with a flush interval far in
// the future, so records stay in open segments; the signal (the context
// main cancels on SIGTERM/SIGINT) makes it commit them and exit 0.
func TestArchiveSignalFlushes(t *testing.T) {
	c, _ := kfakeWithTopic(t, "sig", 2, 30)
	url := "file://" + t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb strings.Builder
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"kbackup", "archive", "--brokers", c.ListenAddrs()[0], "--store", url, "--group", "",
			"--flush-interval", "1h", "--log-level", "error"}, &out, &errb, func(string) (string, bool) { return "", false })
	}()
	time.Sleep(3 * time.Second) // fetched, buffered, not committed
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d after the signal: %s", code, errb.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatal("archiver did not exit within 40s of the signal")
	}
	got, _, code := runCLI(t, nil, "cat", "--store", url, "--topic", "sig")
	if code != 0 || strings.Count(got, "\n") != 30 {
		t.Fatalf("after the signal the archive holds %d records (exit %d), want 30", strings.Count(got, "\n"), code)
	}
}

// TestArchivePacked: the packed layout through the CLI, as OPERATIONS.md
// shows it: --once, then a continuous archiver that compacts, stopped by a
// signal; ls, cat and verify read every record of both, and a bad --layout
// is a usage error.
func TestArchivePacked(t *testing.T) {
	c, cl := kfakeWithTopic(t, "orders", 3, 20)
	url := "file://" + t.TempDir()
	brokers := c.ListenAddrs()[0]
	_, errOut, code := runCLI(t, nil, "archive", "--once", "--layout", "packed", "--brokers", brokers, "--store", url, "--log-level", "error")
	if code != 0 {
		t.Fatalf("archive --once --layout packed: exit %d: %s", code, errOut)
	}
	check := func(what string, records int) {
		t.Helper()
		out, errOut, code := runCLI(t, nil, "ls", "--store", url, "--json")
		var doc struct {
			FormatVersion int `json:"format_version"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || doc.FormatVersion != 3 {
			t.Fatalf("%s: ls --json: exit %d %s\n%s", what, code, errOut, out)
		}
		out, _, code = runCLI(t, nil, "cat", "--store", url, "--topic", "orders")
		if code != 0 || strings.Count(out, "\n") != records {
			t.Fatalf("%s: cat: exit %d, %d lines, want %d", what, code, strings.Count(out, "\n"), records)
		}
		out, errOut, code = runCLI(t, nil, "verify", "--store", url, "--brokers", brokers, "--lag-allowance", "0")
		if code != 0 || !strings.Contains(out, "verify OK") {
			t.Fatalf("%s: verify --brokers: exit %d\n%s%s", what, code, out, errOut)
		}
	}
	check("after --once", 20)
	// Nothing is compacted yet: expire says why it expires nothing.
	out, errOut, code := runCLI(t, nil, "expire", "--store", url, "--retention", "1s", "--grace", "0s", "--log-level", "error")
	if code != 0 || !strings.Contains(out, "0 expired") || !strings.Contains(out, "3 partitions hold records only in their uncompacted tail") {
		t.Fatalf("expire of an uncompacted packed archive: exit %d\n%s%s", code, out, errOut)
	}
	out, _, code = runCLI(t, nil, "expire", "--store", url, "--retention", "1s", "--grace", "0s", "--json", "--log-level", "error")
	if code != 0 || strings.Count(out, `"tail_only": true`) != 3 {
		t.Fatalf("expire --json of an uncompacted packed archive: exit %d\n%s", code, out)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var sout, errb strings.Builder
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"kbackup", "archive", "--layout", "packed", "--brokers", brokers, "--store", url,
			"--flush-interval", "200ms", "--compact-after", "1s", "--compact-grace", "0s", "--log-level", "error"},
			&sout, &errb, func(string) (string, bool) { return "", false })
	}()
	produceN(t, cl, 30)
	time.Sleep(4 * time.Second) // flushed, compacted
	produceN(t, cl, 10)
	time.Sleep(time.Second)
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d after the signal: %s", code, errb.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatal("archiver did not exit within 40s of the signal")
	}
	check("after the continuous archiver", 60)

	_, errOut, code = runCLI(t, nil, "archive", "--once", "--layout", "bogus", "--brokers", brokers, "--store", url)
	if code != 2 || !strings.Contains(errOut, "--layout") {
		t.Fatalf("--layout bogus: exit %d %s", code, errOut)
	}
}

// An archiver into S3 paces the collector at archiveS3GCPercent and puts
// the previous pace back; a local directory, or GOGC or GOMEMLIMIT set by
// the operator, leave it alone.
func TestPaceArchiveGC(t *testing.T) {
	current := func() int {
		p := debug.SetGCPercent(100)
		debug.SetGCPercent(p)
		return p
	}
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	debug.SetGCPercent(100)
	s3, _ := storeurl.Parse("s3://bucket/prefix")
	dir, _ := storeurl.Parse("file:///var/lib/kbackup")
	for _, tc := range []struct {
		name, gogc, memlimit string
		u                    storeurl.URL
		want                 int
	}{
		{"s3", "", "", s3, archiveS3GCPercent},
		{"directory", "", "", dir, 100},
		{"s3 with GOGC", "80", "", s3, 100},
		{"s3 with GOMEMLIMIT", "", "1GiB", s3, 100},
	} {
		t.Setenv("GOGC", tc.gogc)
		t.Setenv("GOMEMLIMIT", tc.memlimit)
		restore, set := paceArchiveGC(tc.u)
		if got := current(); got != tc.want || (set != 0) != (tc.want != 100) {
			t.Errorf("%s: GC percent %d (reported %d), want %d", tc.name, got, set, tc.want)
		}
		restore()
		if got := current(); got != 100 {
			t.Errorf("%s: GC percent %d after restore, want 100", tc.name, got)
		}
	}
}

// The archive command paces the collector for an S3 store, says so in its
// log, and puts the pace back when it returns; into a directory it leaves
// the pace alone. Not parallel: it sets the process's environment.
func TestArchiveS3PacesGC(t *testing.T) {
	fakeAWSEnv(t)
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	srv, err := s3fake.New()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := srv.CreateBucket("archive"); err != nil {
		t.Fatal(err)
	}
	c, _ := kfakeWithTopic(t, "orders", 2, 20)
	env := map[string]string{"KBACKUP_S3_REGION": "us-east-1"}
	const paced = "garbage collector paced"
	for _, tc := range []struct {
		name  string
		store []string
		want  bool
	}{
		{"s3", []string{"--store", "s3://archive/paced", "--s3-endpoint", srv.URL, "--s3-path-style"}, true},
		{"directory", []string{"--store", "file://" + t.TempDir()}, false},
	} {
		args := append([]string{"archive", "--once", "--brokers", c.ListenAddrs()[0], "--group", ""}, tc.store...)
		out, errOut, code := runCLI(t, env, args...)
		if code != 0 || !strings.Contains(out, "20 records") {
			t.Fatalf("%s: archive --once: exit %d\n%s%s", tc.name, code, out, errOut)
		}
		if got := strings.Contains(errOut, paced) && strings.Contains(errOut, "gogc=50"); got != tc.want {
			t.Errorf("%s: paced %v, want %v; log:\n%s", tc.name, got, tc.want, errOut)
		}
		if p := debug.SetGCPercent(100); p != 100 {
			t.Errorf("%s: GC percent %d after the command, want 100", tc.name, p)
		}
	}
}
