package cli

import (
	"strings"
	"testing"
)

// TestDemo runs the zero-setup tour end to end.
func TestDemo(t *testing.T) {
	out, errOut, code := runCLI(t, nil, "demo", "--dir", t.TempDir())
	if code != 0 {
		t.Fatalf("demo: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"$ kbackup archive --once", "3 topics, 6 partitions, 75 records", `"value":null`,
		`"timestamp":1795010580000`, "verify OK: 3 topics, 6 partitions",
		"orders/0 offset 12 -> orders-restored/0 offset 9", `"source_topic": "orders"`, "partition 2: offset 10"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if strings.Contains(out, `"offset":5,"timestamp":1795010625000`) {
		t.Error("--to printed a record after the point in time")
	}
}
