package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
)

// TestSnapshotCommands drives `kbackup snapshot run|list|restore|prune`
// end to end: kfake as the cluster, the dir provider over temporary data
// directories, and real shell hooks that keep a state file per broker.
func TestSnapshotCommands(t *testing.T) {
	t.Parallel()
	kc, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(2, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	tmp := t.TempDir()
	state := filepath.Join(tmp, "state")
	var brokers strings.Builder
	for id := 0; id < 3; id++ {
		data := filepath.Join(tmp, fmt.Sprintf("broker-%d", id))
		if err := os.MkdirAll(data, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(data, "segment.log"), []byte("cycle data"), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&brokers, "  - {id: %d, host: kafka-%d, dirs: [%q]}\n", id, id, data)
	}
	cfg := fmt.Sprintf(`# test configuration
cluster: cli-test
store: file://%s/store
kafka: {brokers: [%q]}
provider: {type: dir, dir: {path: %q}}
mode: cold
hooks:
  stop: "rm -f %[4]s.{{.ID}}"
  start: "touch %[4]s.{{.ID}}"
  status: "test -f %[4]s.{{.ID}}"
brokers:
%[5]s
retention: {keep_last: 1}
timeouts: {stop: 10s, start: 10s, healthy: 30s}
`, tmp, strings.Join(kc.ListenAddrs(), ","), filepath.Join(tmp, "snaps"), state, brokers.String())
	path := filepath.Join(tmp, "snapshot.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	for id := 0; id < 3; id++ {
		if err := os.WriteFile(fmt.Sprintf("%s.%d", state, id), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	kb := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(context.Background(), append([]string{"kbackup", "--log-level", "warn"}, args...), &out, &errb,
			func(string) (string, bool) { return "", false })
		return code, out.String(), errb.String()
	}

	var ids []string
	for i := 0; i < 2; i++ {
		if i == 1 { // the second run in JSON: the cycle record
			code, out, errs := kb("snapshot", "run", "--config", path, "--json")
			var doc snapshotRunDoc
			if err := json.Unmarshal([]byte(out), &doc); code != 0 || err != nil || doc.Schema != "kbackup.snapshot-run/v1" ||
				doc.Cycle == nil || doc.Cycle.State != "complete" || len(doc.Cycle.Brokers) != 3 {
				t.Fatalf("run --json: %d %v\n%s\n%s", code, err, out, errs)
			}
			ids = append(ids, doc.Cycle.ID)
			continue
		}
		code, out, errs := kb("snapshot", "run", "--config", path)
		if code != 0 || !strings.Contains(out, " complete: mode cold, 3 brokers, 3 snapshots") {
			t.Fatalf("run: %d\n%s\n%s", code, out, errs)
		}
		ids = append(ids, strings.Fields(out)[1])
	}
	code, out, errs := kb("snapshot", "list", "--config", path)
	if code != 0 || strings.Count(out, "complete") != 2 || !strings.Contains(out, "30 B") {
		t.Fatalf("list: %d\n%s\n%s", code, out, errs)
	}
	code, out, errs = kb("snapshot", "list", "--config", path, "--json")
	var doc snapshotListDoc
	if err := json.Unmarshal([]byte(out), &doc); code != 0 || err != nil {
		t.Fatalf("list --json: %d %v\n%s\n%s", code, err, out, errs)
	}
	if doc.Schema != "kbackup.snapshot-list/v1" || len(doc.Cycles) != 2 || doc.Cycles[0].ID != ids[1] || doc.Cycles[1].ID != ids[0] ||
		doc.Cycles[0].State != "complete" || doc.Cycles[0].Bytes != 30 || doc.Cycles[0].StartedMs == 0 {
		t.Fatalf("list --json: %+v", doc)
	}
	code, out, _ = kb("snapshot", "restore", "--config", path, "--cycle", ids[0], "--dry-run")
	if code != 0 || !strings.Contains(out, "plan (dry run, nothing changed)") {
		t.Fatalf("restore --dry-run: %d\n%s", code, out)
	}
	code, out, _ = kb("snapshot", "restore", "--config", path, "--cycle", ids[0], "--dry-run", "--json")
	var rdoc snapshotRestoreDoc
	if err := json.Unmarshal([]byte(out), &rdoc); code != 0 || err != nil || rdoc.Schema != "kbackup.snapshot-restore/v1" ||
		!rdoc.DryRun || rdoc.Result == nil || rdoc.Result.CycleID != ids[0] || len(rdoc.Result.Plan) == 0 {
		t.Fatalf("restore --dry-run --json: %d %v\n%s", code, err, out)
	}
	code, out, _ = kb("snapshot", "prune", "--config", path, "--json")
	var pdoc snapshotPruneDoc
	if err := json.Unmarshal([]byte(out), &pdoc); code != 0 || err != nil || pdoc.Schema != "kbackup.snapshot-prune/v1" || pdoc.Confirm ||
		len(pdoc.Cycles) != 2 || !pdoc.Cycles[0].Delete && !pdoc.Cycles[1].Delete {
		t.Fatalf("prune --json: %d %v\n%s", code, err, out)
	}
	code, out, _ = kb("snapshot", "prune", "--config", path)
	if code != 0 || !strings.Contains(out, "would delete "+ids[0]) || !strings.Contains(out, "keep   "+ids[1]) {
		t.Fatalf("prune: %d\n%s", code, out)
	}
	if code, out, errs = kb("snapshot", "prune", "--config", path, "--confirm"); code != 0 {
		t.Fatalf("prune --confirm: %d\n%s\n%s", code, out, errs)
	}
	code, _, errs = kb("snapshot", "restore", "--config", path, "--cycle", ids[0])
	if code != 1 || !strings.Contains(errs, "no such snapshot cycle") {
		t.Fatalf("restore of a pruned cycle: %d %s", code, errs)
	}
	// A broker that will not stop: exit 1, one line, brokers running.
	bad := strings.Replace(cfg, `stop: "rm -f`, `stop: "true || rm -f`, 1)
	if err := os.WriteFile(path, []byte(strings.Replace(bad, "stop: 10s", "stop: 300ms", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs = kb("snapshot", "run", "--config", path)
	lines := strings.Split(strings.TrimSpace(errs), "\n")
	last := lines[len(lines)-1]
	if code != 1 || !strings.HasPrefix(last, "kbackup: snapshot cycle failed: ") || !strings.Contains(last, "not stopped within") || !strings.Contains(out, " failed: ") {
		t.Fatalf("stuck broker: %d\n%s\n%s", code, out, errs)
	}
	for id := 0; id < 3; id++ {
		if _, err := os.Stat(fmt.Sprintf("%s.%d", state, id)); err != nil {
			t.Fatalf("broker %d left stopped", id)
		}
	}
	for _, args := range [][]string{{"snapshot", "run"}, {"snapshot", "restore", "--config", path}, {"snapshot", "run", "--config", path, "--mode", "warm"}, {"snapshot", "nope"}} {
		if code, _, errs := kb(args...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errs)
		}
	}
}
