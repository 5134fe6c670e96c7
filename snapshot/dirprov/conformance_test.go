package dirprov_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kbackup/kbackup/snapshot"
	"github.com/kbackup/kbackup/snapshot/dirprov"
	"github.com/kbackup/kbackup/snapshot/providertest"
)

func TestProviderConformance(t *testing.T) {
	t.Parallel()
	providertest.Run(t, func(t *testing.T) providertest.Harness {
		tmp := t.TempDir()
		root := filepath.Join(tmp, "snaps")
		p, err := dirprov.New(root)
		if err != nil {
			t.Fatal(err)
		}
		data := filepath.Join(tmp, "broker-1", "data")
		file := filepath.Join(data, "orders-0", "00000000000000000000.log")
		write(t, file, "")
		exists := func(path string) bool { _, err := os.Stat(path); return err == nil }
		return providertest.Harness{
			Provider: p,
			Broker:   snapshot.BrokerConfig{ID: 1, Dirs: []string{data}},
			Write:    func(t *testing.T, s string) { write(t, file, s) },
			Read:     func(t *testing.T) string { return read(t, file) },
			Exists:   func(_ *testing.T, s snapshot.Snap) bool { return exists(s.ID) },
			MarkedFailed: func(_ *testing.T, s snapshot.Snap) bool {
				return exists(s.ID + ".failed")
			},
			// A leftover where the copy goes fails it.
			FailNextSnapshot: func(t *testing.T, cycle string) {
				write(t, filepath.Join(root, "c", cycle, "broker-1", "0"), "leftover")
			},
		}
	})
}
