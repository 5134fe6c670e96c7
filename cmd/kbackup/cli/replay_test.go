package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/snapshot"
	"github.com/kbackup/kbackup/store/filestore"
)

// replayFixture: topic "orders" (2 partitions) of a persistent kfake
// cluster got 10 records per partition, then its data directory was copied
// ("short"), then 20 more records each, and everything was archived into
// url. Opening a copy of short gives a cluster whose logs end at 10, of
// the same topic incarnation: the state after lost writes, or after a
// snapshot restore from a cycle that recorded 10.
type replayFixture struct {
	short, url, dir string
	t0              int64
	archive         map[int32][]*kgo.Record
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if fi.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, fi.Mode())
	})
	if err != nil {
		t.Fatal(err)
	}
}

func newReplayFixture(t *testing.T) *replayFixture {
	t.Helper()
	f := &replayFixture{t0: 1_700_000_000_000}
	f.dir = t.TempDir()
	f.url = "file://" + f.dir
	data := filepath.Join(t.TempDir(), "data")
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DataDir(data))
	if err != nil {
		t.Fatal(err)
	}
	cl := newKfakeClient(t, c, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 2, 1, nil, "orders"); err != nil {
		t.Fatal(err)
	}
	produce := func(cl *kgo.Client, from, to int) {
		for i := from; i < to; i++ {
			for p := int32(0); p < 2; p++ {
				r := &kgo.Record{Topic: "orders", Partition: p, Key: []byte(fmt.Sprint(i)), Value: []byte(fmt.Sprintf("v%d-%d", p, i)),
					Timestamp: time.UnixMilli(f.t0 + int64(i)*1000)}
				if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	produce(cl, 0, 10)
	cl.Close()
	c.Close()
	f.short = filepath.Join(t.TempDir(), "short")
	copyTree(t, data, f.short)
	if c, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.DataDir(data)); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	produce(newKfakeClient(t, c, kgo.RecordPartitioner(kgo.ManualPartitioner())), 10, 30)
	if _, errOut, code := runCLI(t, nil, "archive", "--once", "--brokers", c.ListenAddrs()[0], "--store", f.url, "--log-level", "error"); code != 0 {
		t.Fatalf("archive --once: exit %d: %s", code, errOut)
	}
	f.archive = kfakeRecords(t, c, "orders")
	return f
}

// live opens a copy of the short state.
func (f *replayFixture) live(t *testing.T) *kfake.Cluster {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "live")
	copyTree(t, f.short, dir)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DataDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// check: every partition of c holds exactly the archived records before
// offset end, at the same offsets.
func (f *replayFixture) check(t *testing.T, c *kfake.Cluster, end int64) {
	t.Helper()
	got := kfakeRecords(t, c, "orders")
	for p := int32(0); p < 2; p++ {
		var want []*kgo.Record
		for _, r := range f.archive[p] {
			if r.Offset < end {
				want = append(want, r)
			}
		}
		if len(got[p]) != len(want) {
			t.Fatalf("orders/%d: %d records, want %d", p, len(got[p]), len(want))
		}
		for i, r := range want {
			g := got[p][i]
			if g.Offset != r.Offset || !bytes.Equal(g.Key, r.Key) || !bytes.Equal(g.Value, r.Value) || !g.Timestamp.Equal(r.Timestamp) {
				t.Fatalf("orders/%d record %d: got offset %d %q=%q, want offset %d %q=%q", p, i, g.Offset, g.Key, g.Value, r.Offset, r.Key, r.Value)
			}
		}
	}
}

func TestRestoreRepairCLI(t *testing.T) {
	f := newReplayFixture(t)
	c := f.live(t)
	args := func(extra ...string) []string {
		return append([]string{"restore", "--repair", "--topics", "orders", "--brokers", c.ListenAddrs()[0], "--store", f.url, "--log-level", "error"}, extra...)
	}
	out, errOut, code := runCLI(t, nil, args("--dry-run")...)
	if code != 0 || !strings.Contains(out, "orders/0") || !strings.Contains(out, "10..29") || !strings.Contains(out, "dry run") {
		t.Fatalf("dry run: exit %d\n%s%s", code, out, errOut)
	}
	f.check(t, c, 10)
	out, errOut, code = runCLI(t, nil, args()...)
	if code != 0 || !strings.Contains(out, "replayed") || !strings.Contains(out, "40 records replayed") {
		t.Fatalf("repair: exit %d\n%s%s", code, out, errOut)
	}
	f.check(t, c, 30)
	out, errOut, code = runCLI(t, nil, args()...)
	if code != 0 || strings.Count(out, "up to date") != 2 {
		t.Fatalf("rerun: exit %d\n%s%s", code, out, errOut)
	}
	f.check(t, c, 30)
}

func TestRestoreRollForwardCLI(t *testing.T) {
	f := newReplayFixture(t)
	c := f.live(t)
	st, err := filestore.New(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	cyc := &snapshot.CycleRecord{FormatVersion: snapshot.FormatVersion, ID: "20261122T010000Z-0badcafe", Cluster: "prod", State: snapshot.StateComplete,
		Mode: snapshot.ModeCold, HighWatermarks: map[string]map[string]int64{"orders": {"0": 10, "1": 10}}}
	if err := snapshot.SaveCycle(context.Background(), st, cyc, true); err != nil {
		t.Fatal(err)
	}
	to := time.UnixMilli(f.t0 + 20*1000).UTC().Format(time.RFC3339Nano) // records 0..20
	args := func(extra ...string) []string {
		return append([]string{"restore", "--topics", "orders", "--brokers", c.ListenAddrs()[0], "--store", f.url, "--log-level", "error"}, extra...)
	}
	out, errOut, code := runCLI(t, nil, args("--since-cycle", cyc.ID, "--cluster", "prod", "--to", to)...)
	if code != 0 || !strings.Contains(out, "roll-forward from cycle "+cyc.ID) || !strings.Contains(out, "10..20") {
		t.Fatalf("roll-forward: exit %d\n%s%s", code, out, errOut)
	}
	f.check(t, c, 21)

	// The same cycle found through the snapshot job's configuration; a
	// rerun to the same time is a no-op, to the end continues.
	cfg := filepath.Join(t.TempDir(), "snapshot.yaml")
	y := fmt.Sprintf(`
cluster: prod
store: %s
kafka: {brokers: [%q]}
provider: {type: dir, dir: {path: /unused}}
hooks: {stop: "false", start: "false", status: "false"}
brokers:
  - {id: 1, host: 127.0.0.1, dirs: [/unused]}
`, f.url, c.ListenAddrs()[0])
	if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = runCLI(t, nil, args("--since-cycle", cyc.ID, "--snapshot-config", cfg, "--to", to)...)
	if code != 0 || strings.Count(out, "up to date") != 2 {
		t.Fatalf("rerun: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = runCLI(t, nil, args("--since-cycle", cyc.ID, "--snapshot-config", cfg)...)
	if code != 0 || !strings.Contains(out, "21..29") {
		t.Fatalf("to the end: exit %d\n%s%s", code, out, errOut)
	}
	f.check(t, c, 30)

	// Bad input: a clear one-line error, nothing written.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--since-cycle", cyc.ID}, "--snapshot-config"},
		{[]string{"--since-cycle", "yesterday", "--cluster", "prod"}, "not a cycle id"},
		{[]string{"--since-cycle", "20261122T010000Z-00000000", "--cluster", "prod"}, "no such snapshot cycle"},
		{[]string{"--since-cycle", cyc.ID, "--cluster", "other"}, "no such snapshot cycle"},
		{[]string{"--since-cycle", cyc.ID, "--cluster", "prod", "--repair"}, "cannot be used together"},
		{[]string{"--since-cycle", cyc.ID, "--cluster", "prod", "--snapshot-config", cfg}, "not both"},
		{[]string{"--repair", "--rename", "orders=x"}, "--rename"},
		{[]string{"--repair", "--groups", "g"}, "consumer groups need no translation"},
		{[]string{"--repair", "--from-offset", "3"}, "live end"},
		{[]string{"--cluster", "prod"}, "only used with --since-cycle"},
	} {
		_, errOut, code := runCLI(t, nil, args(tc.args...)...)
		if code == 0 {
			t.Fatalf("%v: exit 0", tc.args)
		}
		oneLineErr(t, errOut, tc.want)
	}
	// The cycle recorded more than the live log has: refused, named.
	cyc2 := *cyc
	cyc2.ID = "20261122T020000Z-0badcafe"
	cyc2.HighWatermarks = map[string]map[string]int64{"orders": {"0": 35, "1": 35}}
	if err := snapshot.SaveCycle(context.Background(), st, &cyc2, true); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = runCLI(t, nil, args("--since-cycle", cyc2.ID, "--cluster", "prod")...)
	if code == 0 {
		t.Fatal("misaligned roll-forward: exit 0")
	}
	oneLineErr(t, errOut, "orders/0", "orders/1", "offsets would not line up", "nothing written")
	f.check(t, c, 30)
}
