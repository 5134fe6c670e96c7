//go:build integration

package docs

import (
	"path/filepath"
	"testing"
	"time"
)

// TestDocs runs every marked example of README.md and docs/OPERATIONS.md,
// in document order, against a real 3-broker Kafka cluster, MinIO and
// moto (a fresh cluster per file: the README's verify --brokers judges the
// whole cluster), and prints how long each took and how many ran.
func TestDocs(t *testing.T) {
	blocks := docBlocks(t)
	ran, selected := 0, 0
	for _, f := range docFiles {
		t.Run(filepath.Base(f), func(t *testing.T) {
			for _, b := range blocks {
				if b.File == f {
					selected++ // this file's subtest was not filtered out by -run
				}
			}
			e := newDocEnv(t)
			for _, b := range blocks {
				if b.File != f {
					continue
				}
				t.Logf("%s:%d: running %s block %q", b.File, b.Line, b.Kind, b.Name)
				start := time.Now()
				e.runBlock(b, specs[b.ID()])
				t.Logf("%s:%d: %s block %q passed in %s", b.File, b.Line, b.Kind, b.Name, time.Since(start).Round(100*time.Millisecond))
				ran++
			}
		})
	}
	t.Logf("docs as tests: %d of %d marked doc blocks ran", ran, len(blocks))
	if ran != selected && !t.Failed() {
		t.Fatalf("only %d of the %d doc blocks of the files run ran", ran, selected)
	}
}
