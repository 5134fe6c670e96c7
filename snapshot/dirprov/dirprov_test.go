package dirprov_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kbackup/kbackup/snapshot"
	"github.com/kbackup/kbackup/snapshot/dirprov"
)

func write(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSnapshotRestoreRollback(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tmp := t.TempDir()
	data := filepath.Join(tmp, "broker-1", "data")
	write(t, filepath.Join(data, "orders-0", "00000000000000000000.log"), "cycle content")
	write(t, filepath.Join(data, "meta.properties"), "node.id=1")
	p, err := dirprov.New(filepath.Join(tmp, "snaps"))
	if err != nil {
		t.Fatal(err)
	}
	vols, err := p.Discover(ctx, snapshot.BrokerConfig{ID: 1, Dirs: []string{data}})
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := p.Snapshot(ctx, snapshot.SnapRequest{Cluster: "c", Cycle: "20240101T000000Z-00000000", Broker: 1, Volumes: vols})
	if err != nil {
		t.Fatal(err)
	}
	if snaps, err = p.Wait(ctx, snaps); err != nil || snaps[0].State != snapshot.SnapCompleted || snaps[0].Bytes != int64(len("cycle content")+len("node.id=1")) {
		t.Fatalf("snaps %+v err %v", snaps, err)
	}
	// Later data, then a restore brings the cycle's content back.
	write(t, filepath.Join(data, "orders-0", "00000000000000000000.log"), "cycle content + more")
	write(t, filepath.Join(data, "orders-1", "x.log"), "new partition")
	done, err := p.Restore(ctx, "c", "20240101T000000Z-00000000", 1, snaps)
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(data, "orders-0", "00000000000000000000.log")); got != "cycle content" {
		t.Fatalf("restored %q", got)
	}
	if _, err := os.Stat(filepath.Join(data, "orders-1")); !os.IsNotExist(err) {
		t.Fatal("restored directory has later data")
	}
	if !strings.Contains(done[0].Old, ".kbackup-rollback-") || read(t, filepath.Join(done[0].Old, "orders-1", "x.log")) != "new partition" {
		t.Fatalf("old data not kept: %+v", done)
	}
	if err := p.Rollback(ctx, 1, done); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(data, "orders-0", "00000000000000000000.log")); got != "cycle content + more" {
		t.Fatalf("after rollback %q", got)
	}
	// Delete removes the snapshot and its empty parents; paths outside are refused.
	if err := p.Delete(ctx, snaps); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "snaps", "c")); !os.IsNotExist(err) {
		t.Fatalf("snapshot dirs left: %v", err)
	}
	if err := p.Delete(ctx, []snapshot.Snap{{ID: data}}); err == nil {
		t.Fatal("deleted a directory outside the snapshot root")
	}
	if _, err := os.Stat(data); err != nil {
		t.Fatal(err)
	}
}

func TestDiscoverMissingDir(t *testing.T) {
	t.Parallel()
	p, err := dirprov.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Discover(context.Background(), snapshot.BrokerConfig{Dirs: []string{"/nonexistent/kafka"}}); err == nil {
		t.Fatal("missing data dir discovered")
	}
	if _, err := dirprov.New("relative"); err == nil {
		t.Fatal("relative root accepted")
	}
}
