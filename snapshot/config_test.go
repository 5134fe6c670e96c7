package snapshot_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kbackup/kbackup/snapshot"
)

func TestParseConfig(t *testing.T) {
	t.Parallel()
	cfg, err := snapshot.ParseConfig([]byte(testConfig + "mode: rolling\n"))
	if err != nil {
		t.Fatal(err)
	}
	if kms, err := snapshot.ParseConfig([]byte(testConfig + "s3: {region: eu-west-1, sse: aws:kms, sse_kms_key_id: alias/kbackup}\n")); err != nil ||
		kms.S3.SSE != "aws:kms" || kms.S3.SSEKMSKeyID != "alias/kbackup" {
		t.Fatalf("s3 sse: %+v %v", kms, err)
	}
	if cfg.Mode != snapshot.ModeRolling || len(cfg.Brokers) != 3 || cfg.Timeouts.StopTimeout() != 200*time.Millisecond ||
		cfg.Timeouts.LockTTL() != 24*time.Hour || cfg.Retention.KeepLast != 2 {
		t.Fatalf("config %+v", cfg)
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown key", testConfig + "retension: {keep_last: 1}\n", "field retension not found"},
		{"empty", "", "empty"},
		{"bad mode", testConfig + "mode: lukewarm\n", `mode: "lukewarm"`},
		{"bad duration", strings.Replace(testConfig, "stop: 200ms", "stop: soon", 1), `invalid duration "soon"`},
		{"bad cluster", strings.Replace(testConfig, "cluster: unit", "cluster: a/b", 1), "cluster:"},
		{"dup broker", strings.Replace(testConfig, "id: 2,", "id: 1,", 1), "duplicate id"},
		{"no volumes", strings.Replace(testConfig, `volume_tags: {kafka-broker: "1"}`, "", 1), "volumes or volume_tags required"},
		{"bad template", strings.Replace(testConfig, `stop: "true"`, `stop: "ssh {{.Hots}}"`, 1), "stop hook"},
		{"dir without path", strings.Replace(testConfig, "provider: {type: ebs}", "provider: {type: dir}", 1), "provider.dir.path"},
		{"not yaml", "cluster: [", "invalid snapshot configuration"},
		{"bad sse", testConfig + "s3: {sse: aes}\n", `s3.sse: "aes"`},
		{"kms key without kms", testConfig + "s3: {sse: AES256, sse_kms_key_id: k}\n", "s3.sse_kms_key_id: needs s3.sse aws:kms"},
	} {
		_, err := snapshot.ParseConfig([]byte(tc.yaml))
		if !errors.Is(err, snapshot.ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want ErrConfig containing %q", tc.name, err, tc.want)
		}
	}
	if d, err := snapshot.ParseDuration("30d"); err != nil || d != 30*24*time.Hour {
		t.Errorf("30d = %v %v", d, err)
	}
	if _, err := snapshot.LoadConfig(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("missing file loaded")
	}
}

// TestShellControl runs real shell hooks: a state file per broker, the
// template fields, the environment, exit codes and the timeout.
func TestShellControl(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	y := strings.NewReplacer("STATE", dir).Replace(`
cluster: unit
store: file:///unused
kafka: {brokers: ["127.0.0.1:9092"]}
provider: {type: dir, dir: {path: /tmp}}
hooks:
  stop: "rm -f STATE/{{.ID}}.up && echo stopped {{.Host}} $KBACKUP_CLUSTER >> STATE/log"
  start: "touch STATE/{{.ID}}.up"
  status: "test -f STATE/{{.ID}}.up"
brokers:
  - {id: 1, host: kafka-1, dirs: [/data]}
  - {id: 2, host: kafka-2, dirs: [/data], hooks: {stop: "echo refusing; exit 7"}}
  - {id: 3, host: kafka-3, dirs: [/data], hooks: {stop: "sleep 30"}}
timeouts: {hook: 300ms}
`)
	cfg, err := snapshot.ParseConfig([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	ctl := snapshot.NewShellControl(cfg, testLogger(t))
	ctx := context.Background()
	b1 := snapshot.Broker{ID: 1, Host: "kafka-1", Cluster: "unit"}
	if err := ctl.Start(ctx, b1); err != nil {
		t.Fatal(err)
	}
	if up, err := ctl.Running(ctx, b1); err != nil || !up {
		t.Fatalf("running %v %v", up, err)
	}
	if err := ctl.Stop(ctx, b1); err != nil {
		t.Fatal(err)
	}
	if up, err := ctl.Running(ctx, b1); err != nil || up {
		t.Fatalf("running after stop %v %v", up, err)
	}
	if log, _ := os.ReadFile(filepath.Join(dir, "log")); string(log) != "stopped kafka-1 unit\n" {
		t.Fatalf("hook log %q", log)
	}
	err = ctl.Stop(ctx, snapshot.Broker{ID: 2, Host: "kafka-2", Cluster: "unit"})
	if err == nil || !strings.Contains(err.Error(), "exited 7: refusing") {
		t.Fatalf("err = %v", err)
	}
	start := time.Now()
	err = ctl.Stop(ctx, snapshot.Broker{ID: 3, Host: "kafka-3", Cluster: "unit"})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 10*time.Second {
		t.Fatalf("err = %v after %s", err, time.Since(start))
	}
}

// TestDocumentedExample parses the full example of docs/OPERATIONS.md.
func TestDocumentedExample(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/OPERATIONS.md")
	if err != nil {
		t.Skip("docs/OPERATIONS.md not found:", err)
	}
	_, rest, ok := strings.Cut(string(doc), "### Configuration\n")
	if !ok {
		t.Fatal("no Configuration section in docs/OPERATIONS.md")
	}
	_, rest, _ = strings.Cut(rest, "```yaml\n")
	example, _, _ := strings.Cut(rest, "```")
	cfg, err := snapshot.ParseConfig([]byte(example))
	if err != nil {
		t.Fatalf("documented example: %v", err)
	}
	if cfg.Cluster != "prod-events" || len(cfg.Brokers) != 3 || cfg.Retention.MaxAge != snapshot.Duration(30*24*time.Hour) {
		t.Fatalf("documented example decoded as %+v", cfg)
	}
}
