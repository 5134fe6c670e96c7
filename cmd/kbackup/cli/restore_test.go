package cli

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/restore"
)

// restoreFixture is a kfake source cluster whose topic "orders" (2
// partitions, 20 records) and group "billing" (committed at orders/0
// offset 4 and orders/1 offset 3) are archived with `archive --once` into
// url, and an empty kfake target cluster.
type restoreFixture struct {
	src, tgt *kfake.Cluster
	url, dir string
}

func newRestoreFixture(t *testing.T) *restoreFixture {
	t.Helper()
	src, cl := kfakeWithTopic(t, "orders", 2, 20)
	adm := kadm.NewClient(cl)
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: "orders", Partition: 0, At: 4, LeaderEpoch: -1})
	offs.Add(kadm.Offset{Topic: "orders", Partition: 1, At: 3, LeaderEpoch: -1})
	resp, err := adm.CommitOffsets(context.Background(), "billing", offs)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatalf("commit billing: %v", err)
	}
	dir := t.TempDir()
	f := &restoreFixture{src: src, dir: dir, url: "file://" + dir}
	_, errOut, code := runCLI(t, nil, "archive", "--once", "--brokers", src.ListenAddrs()[0], "--store", f.url, "--log-level", "error")
	if code != 0 {
		t.Fatalf("archive --once: exit %d: %s", code, errOut)
	}
	if f.tgt, err = kfake.NewCluster(kfake.NumBrokers(1)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.tgt.Close)
	return f
}

func (f *restoreFixture) brokers() string { return f.tgt.ListenAddrs()[0] }

// restoreArgs are the common flags of a restore from the fixture.
func (f *restoreFixture) restoreArgs(extra ...string) []string {
	return append([]string{"restore", "--brokers", f.brokers(), "--store", f.url, "--log-level", "error"}, extra...)
}

// targetRecords reads every record of topic in the target cluster.
func (f *restoreFixture) targetRecords(t *testing.T, topic string) map[int32][]*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.brokers()), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	want, n := map[int32]int64{}, 0
	ends.Each(func(o kadm.ListedOffset) { want[o.Partition] = o.Offset; n += int(o.Offset) })
	out := map[int32][]*kgo.Record{}
	for got := 0; got < n; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s: %d of %d records", topic, got, n)
		}
		fs.EachRecord(func(r *kgo.Record) { out[r.Partition] = append(out[r.Partition], r); got++ })
	}
	return out
}

// TestRestoreCLI: `kbackup restore` with --rename, --offset-map and
// --groups restores the archive exactly, writes the documented JSON map,
// moves the group; verify still passes with the restore's state in the
// store; `offsets translate` reproduces the translation from the stored
// map; a second run is a no-op.
func TestRestoreCLI(t *testing.T) {
	t.Parallel()
	f := newRestoreFixture(t)
	mapFile := filepath.Join(t.TempDir(), "map.json")
	out, errOut, code := runCLI(t, nil, f.restoreArgs("--topics", "orders", "--rename", "orders=orders-copy",
		"--offset-map", mapFile, "--groups", "billing", "--restore-id", "cli-1")...)
	if code != 0 {
		t.Fatalf("restore: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"orders/0", "orders-copy/1", "complete", "group billing: committed",
		"orders/0 offset 4 -> orders-copy/0 offset 4", "restore cli-1: 20 records"} {
		if !strings.Contains(out, want) {
			t.Fatalf("report lacks %q:\n%s", want, out)
		}
	}
	// The records, key for key (null keys and values stay null).
	src := kfakeRecords(t, f.src, "orders")
	got := f.targetRecords(t, "orders-copy")
	for p, rs := range src {
		if len(got[p]) != len(rs) {
			t.Fatalf("orders-copy/%d: %d records, source has %d", p, len(got[p]), len(rs))
		}
		for i, r := range rs {
			g := got[p][i]
			if string(g.Key) != string(r.Key) || (g.Key == nil) != (r.Key == nil) || (g.Value == nil) != (r.Value == nil) ||
				string(g.Value) != string(r.Value) || !g.Timestamp.Equal(r.Timestamp) {
				t.Fatalf("orders-copy/%d record %d: %+v, source %+v", p, i, g, r)
			}
		}
	}
	// The offset map file: documented JSON, dense runs, complete.
	b, err := os.ReadFile(mapFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Format        string `json:"format"`
		FormatVersion int    `json:"format_version"`
		RestoreID     string `json:"restore_id"`
		Partitions    []struct {
			SourceTopic     string     `json:"source_topic"`
			SourcePartition int32      `json:"source_partition"`
			TargetTopic     string     `json:"target_topic"`
			TargetPartition int32      `json:"target_partition"`
			SourceFrom      int64      `json:"source_from"`
			SourceTo        int64      `json:"source_to"`
			TargetStart     int64      `json:"target_start"`
			TargetEnd       int64      `json:"target_end"`
			Records         int64      `json:"records"`
			Complete        bool       `json:"complete"`
			Runs            [][3]int64 `json:"runs"`
		} `json:"partitions"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("offset map: %v\n%s", err, b)
	}
	if doc.Format != "kbackup-offset-map" || doc.FormatVersion != 1 || doc.RestoreID != "cli-1" || len(doc.Partitions) != 2 {
		t.Fatalf("offset map: %s", b)
	}
	var total int64
	for _, pm := range doc.Partitions {
		n := int64(len(src[pm.SourcePartition]))
		if pm.SourceTopic != "orders" || pm.TargetTopic != "orders-copy" || pm.TargetPartition != pm.SourcePartition || !pm.Complete ||
			pm.Records != n || pm.TargetStart != 0 || pm.TargetEnd != n || pm.SourceFrom != 0 || pm.SourceTo != n-1 ||
			len(pm.Runs) != 1 || pm.Runs[0] != [3]int64{0, 0, n} {
			t.Fatalf("offset map partition: %+v\n%s", pm, b)
		}
		total += n
	}
	if total != 20 {
		t.Fatalf("offset map covers %d records", total)
	}
	if _, err := restore.ReadOffsetMapFile(mapFile); err != nil {
		t.Fatal(err)
	}
	// The group, in the target, under the new name.
	fo, err := kadm.NewClient(newKfakeClient(t, f.tgt)).FetchOffsets(context.Background(), "billing")
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[int32]int64{0: 4, 1: 3} {
		if o, ok := fo.Lookup("orders-copy", p); !ok || o.At != want {
			t.Fatalf("billing orders-copy/%d: %+v %v, want %d", p, o, ok, want)
		}
	}
	// The restore's state under restores/ is not an archive problem.
	out, errOut, code = runCLI(t, nil, "verify", "--store", f.url)
	if code != 0 || !strings.Contains(out, "verify OK") {
		t.Fatalf("verify after a restore: exit %d\n%s%s", code, out, errOut)
	}
	// offsets translate from the stored map: the restore moved billing, so
	// it is left alone (dry run, then for real) unless --again.
	out, errOut, code = runCLI(t, nil, "offsets", "translate", "--brokers", f.brokers(), "--store", f.url, "--restore-id", "cli-1",
		"--groups", "billing", "--dry-run", "--log-level", "error")
	if code != 0 || !strings.Contains(out, "group billing: already moved by restore cli-1: not moved again (--again moves it)") ||
		!strings.Contains(out, "orders/1 offset 3 -> orders-copy/1 offset 3") {
		t.Fatalf("offsets translate --dry-run: exit %d\n%s%s", code, out, errOut)
	}
	out, _, code = runCLI(t, nil, "offsets", "translate", "--brokers", f.brokers(), "--store", f.url, "--restore-id", "cli-1",
		"--groups", "billing", "--dry-run", "--json", "--log-level", "error")
	var tdoc translateDoc
	if err := json.Unmarshal([]byte(out), &tdoc); code != 0 || err != nil || tdoc.Schema != "kbackup.offsets-translate/v1" || !tdoc.DryRun ||
		len(tdoc.Groups) != 1 || tdoc.Groups[0].Group != "billing" || tdoc.Groups[0].State != restore.GroupAlready || len(tdoc.Groups[0].Offsets) == 0 {
		t.Fatalf("offsets translate --json: exit %d %v\n%s", code, err, out)
	}
	// billing's consumers go on: it commits 9 on orders-copy/0.
	commitTarget(t, f, "billing", "orders-copy", 0, 9)
	out, errOut, code = runCLI(t, nil, "offsets", "translate", "--brokers", f.brokers(), "--store", f.url, "--offset-map", mapFile,
		"--groups", "billing", "--log-level", "error")
	if code != 0 || !strings.Contains(out, "not moved again") || groupOffset(t, f, "billing", "orders-copy", 0) != 9 {
		t.Fatalf("offsets translate --offset-map: exit %d\n%s%s", code, out, errOut)
	}
	// Running the same restore again: already complete, nothing produced,
	// billing stays where its consumers committed.
	out, errOut, code = runCLI(t, nil, f.restoreArgs("--topics", "orders", "--rename", "orders=orders-copy", "--restore-id", "cli-1", "--groups", "billing")...)
	if code != 0 || !strings.Contains(out, "already complete") || !strings.Contains(out, ": 0 records") || !strings.Contains(out, "group billing: already moved") {
		t.Fatalf("rerun: exit %d\n%s%s", code, out, errOut)
	}
	if n := len(f.targetRecords(t, "orders-copy")[0]); n != len(src[0]) {
		t.Fatalf("rerun duplicated records: %d", n)
	}
	if got := groupOffset(t, f, "billing", "orders-copy", 0); got != 9 {
		t.Fatalf("the rerun moved billing from 9 to %d", got)
	}
	// Moving it again is explicit.
	out, errOut, code = runCLI(t, nil, "offsets", "translate", "--brokers", f.brokers(), "--store", f.url, "--restore-id", "cli-1",
		"--groups", "billing", "--again", "--log-level", "error")
	if code != 0 || !strings.Contains(out, "group billing: committed") || !strings.Contains(out, "orders/0 offset 4 -> orders-copy/0 offset 4 (committed there now: 9)") {
		t.Fatalf("offsets translate --again: exit %d\n%s%s", code, out, errOut)
	}
	if got := groupOffset(t, f, "billing", "orders-copy", 0); got != 4 {
		t.Fatalf("--again: billing at %d, want 4", got)
	}
}

// commitTarget commits offset at for group on topic/p in the target.
func commitTarget(t *testing.T, f *restoreFixture, group, topic string, p int32, at int64) {
	t.Helper()
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: topic, Partition: p, At: at, LeaderEpoch: -1})
	resp, err := kadm.NewClient(newKfakeClient(t, f.tgt)).CommitOffsets(context.Background(), group, offs)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
}

// groupOffset is group's committed offset on topic/p in the target (-1: none).
func groupOffset(t *testing.T, f *restoreFixture, group, topic string, p int32) int64 {
	t.Helper()
	fo, err := kadm.NewClient(newKfakeClient(t, f.tgt)).FetchOffsets(context.Background(), group)
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := fo.Lookup(topic, p); ok {
		return o.At
	}
	return -1
}

// TestRestoreCLIDryRun: --dry-run prints the plan and writes nothing: no
// topic in the target, no restore state in the store, no map file.
func TestRestoreCLIDryRun(t *testing.T) {
	t.Parallel()
	f := newRestoreFixture(t)
	mapFile := filepath.Join(t.TempDir(), "map.json")
	out, errOut, code := runCLI(t, nil, f.restoreArgs("--topics", "orders", "--rename", "orders=copy", "--groups", "billing",
		"--offset-map", mapFile, "--dry-run")...)
	if code != 0 {
		t.Fatalf("dry run: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"topic orders -> copy: create with 2 partitions", "orders/0", "copy/1", "new", "group billing: 2 offsets to translate"} {
		if !strings.Contains(out, want) {
			t.Fatalf("plan lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(out, "orders/0 offset 4 -> copy/0 offset 4 (predicted; committed there now: none)") {
		t.Fatalf("plan lacks the predicted translation:\n%s", out)
	}
	f.assertNothingWritten(t, "copy")
	if _, err := os.Stat(mapFile); !os.IsNotExist(err) {
		t.Fatalf("dry run wrote the offset map file: %v", err)
	}
	// Into a non-empty target: the whole plan, each refusal with its
	// remedy, exit status 3, still nothing written.
	cl := newKfakeClient(t, f.tgt, kgo.DefaultProduceTopic("full"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 2, 1, nil, "full"); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Partition: 1, Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = runCLI(t, nil, f.restoreArgs("--topics", "orders", "--rename", "orders=full", "--groups", "billing", "--dry-run")...)
	if code != ExitRefused {
		t.Fatalf("dry run into a non-empty target: exit %d, want %d\n%s%s", code, ExitRefused, out, errOut)
	}
	oneLineErr(t, errOut, "the real run would refuse 1 item")
	for _, want := range []string{"orders/0", "full/1", "group billing: 2 offsets to translate", "orders/1 offset 3 -> full/1 offset 4 (predicted",
		"refused: target partition full/1 already holds 1 records (offsets 0..0): use --append"} {
		if !strings.Contains(out, want) {
			t.Fatalf("plan lacks %q:\n%s", want, out)
		}
	}
	// --json: the same plan as one JSON object.
	out, _, code = runCLI(t, nil, f.restoreArgs("--topics", "orders", "--rename", "orders=full", "--dry-run", "--json")...)
	var plan struct {
		Schema string `json:"schema"`
		restore.Plan
	}
	if code != ExitRefused || json.Unmarshal([]byte(out), &plan) != nil || plan.Schema != "kbackup.restore-plan/v1" || len(plan.Partitions) != 2 ||
		len(plan.Refusals) != 1 || plan.Refusals[0].Remedy == "" {
		t.Fatalf("--dry-run --json: exit %d\n%s", code, out)
	}
}

func (f *restoreFixture) assertNothingWritten(t *testing.T, topic string) {
	t.Helper()
	if ents, err := os.ReadDir(filepath.Join(f.dir, "restores")); err == nil && len(ents) > 0 {
		t.Fatalf("restore state written: %v", ents)
	}
	td, err := kadm.NewClient(newKfakeClient(t, f.tgt)).ListTopics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if td.Has(topic) {
		t.Fatalf("topic %s created in the target", topic)
	}
}

// TestRestoreCLIBadInput: rejected input exits non-zero with one line on
// stderr and writes nothing.
func TestRestoreCLIBadInput(t *testing.T) {
	t.Parallel()
	f := newRestoreFixture(t)
	// Non-empty target partitions: 1 record in busy/0, 2 in busy/1 (the
	// manual partitioner makes the layout deterministic).
	cl := newKfakeClient(t, f.tgt, kgo.DefaultProduceTopic("busy"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 2, 1, nil, "busy"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []int32{0, 1, 1} {
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Partition: p, Value: []byte("x")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	mapFile := filepath.Join(t.TempDir(), "map.json")
	for _, tc := range []struct {
		name string
		args []string
		exit int
		want []string
	}{
		{"no topics", f.restoreArgs(), ExitUsage, []string{"--topics"}},
		{"malformed from", f.restoreArgs("--topics", "orders", "--from", "yesterday-ish"), ExitUsage, []string{"--from"}},
		{"malformed to", f.restoreArgs("--topics", "orders", "--to", "2024-13-45T99:00:00Z"), ExitUsage, []string{"--to"}},
		{"to before from", f.restoreArgs("--topics", "orders", "--from", "2024-03-01T00:00:00Z", "--to", "2024-02-01T00:00:00Z"), ExitUsage,
			[]string{"--to 2024-02-01T00:00:00Z is before --from 2024-03-01T00:00:00Z"}},
		{"to-offset before from-offset", f.restoreArgs("--topics", "orders", "--from-offset", "9", "--to-offset", "3"), ExitUsage, []string{"--to-offset 3 is before --from-offset 9"}},
		{"bad regex", f.restoreArgs("--topics", "("), ExitUsage, []string{"--topics"}},
		{"bad rename", f.restoreArgs("--topics", "orders", "--rename", "orders"), ExitUsage, []string{"SRC=DST"}},
		{"bad partitions", f.restoreArgs("--topics", "orders", "--partitions", "0,x"), ExitUsage, []string{"--partitions"}},
		{"bad producer", f.restoreArgs("--topics", "orders", "--producer", "sarama"), ExitUsage, []string{`--producer "sarama": use direct or franz-go`}},
		{"unknown topic", f.restoreArgs("--topics", "nope", "--offset-map", mapFile), ExitFailure, []string{"no archived topic matches --topics nope", "orders"}},
		{"unknown partition", f.restoreArgs("--topics", "orders", "--partitions", "7", "--rename", "orders=p7"), ExitFailure, []string{"no archived partition 7"}},
		{"non-empty target", f.restoreArgs("--topics", "orders", "--rename", "orders=busy", "--offset-map", mapFile), ExitFailure,
			[]string{"target partition busy/0 already holds 1 records", "busy/1 already holds 2 records", "--append"}},
		{"groups with repartition", f.restoreArgs("--topics", "orders", "--rename", "orders=rp", "--repartition", "--groups", "billing"), ExitFailure,
			[]string{"--repartition"}},
		{"no store", []string{"restore", "--brokers", f.brokers(), "--topics", "orders"}, ExitUsage, []string{"no archive given"}},
		{"unreachable target", []string{"restore", "--brokers", "127.0.0.1:1", "--store", f.url, "--topics", "orders", "--dial-timeout", "1s", "--log-level", "error"}, ExitFailure,
			[]string{"cannot reach Kafka at 127.0.0.1:1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runCLI(t, nil, tc.args...)
			if code != tc.exit {
				t.Fatalf("exit %d, want %d\n%s%s", code, tc.exit, out, errOut)
			}
			oneLineErr(t, errOut, tc.want...)
		})
	}
	f.assertNothingWritten(t, "p7")
	f.assertNothingWritten(t, "rp")
	if _, err := os.Stat(mapFile); !os.IsNotExist(err) {
		t.Fatalf("rejected restore wrote the offset map file: %v", err)
	}
	// offsets translate: bad input.
	for _, tc := range []struct {
		args []string
		exit int
		want string
	}{
		{[]string{"offsets", "translate", "--brokers", f.brokers(), "--store", f.url, "--groups", "billing"}, ExitUsage, "--restore-id"},
		{[]string{"offsets", "translate", "--brokers", f.brokers(), "--store", f.url, "--restore-id", "x"}, ExitUsage, "--groups"},
		{[]string{"offsets", "translate", "--brokers", f.brokers(), "--store", f.url, "--restore-id", "x", "--groups", "b", "--at", "soon"}, ExitUsage, "--at"},
		{[]string{"offsets", "translate", "--brokers", f.brokers(), "--store", f.url, "--restore-id", "never-ran", "--groups", "billing"}, ExitFailure, "no offset map for restore \"never-ran\""},
		{[]string{"offsets", "translate", "--brokers", f.brokers(), "--store", f.url, "--offset-map", mapFile, "--groups", "billing"}, ExitFailure, "offset map"},
	} {
		out, errOut, code := runCLI(t, nil, tc.args...)
		if code != tc.exit {
			t.Fatalf("%v: exit %d, want %d\n%s%s", tc.args, code, tc.exit, out, errOut)
		}
		oneLineErr(t, errOut, tc.want)
	}
}

func newKfakeClient(t *testing.T, c *kfake.Cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// kfakeRecords reads every record of topic in c.
func kfakeRecords(t *testing.T, c *kfake.Cluster, topic string) map[int32][]*kgo.Record {
	f := &restoreFixture{tgt: c}
	return f.targetRecords(t, topic)
}
