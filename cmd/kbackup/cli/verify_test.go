package cli

import (
	"context"
	"strings"
	"testing"

	"github.com/kbackup/kbackup/internal/units"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
)

func TestVerifyClean(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	out, errOut, code := runCLI(t, nil, "verify", "--store", f.url, "--topics", "orders")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q, stdout %s", code, errOut, out)
	}
	want := "verify OK: 1 topics, 3 partitions, 4 commits, 4 segments (" +
		units.Bytes(f.segmentBytes(t, "topics/orders/")) + "), 8 records; gaps: compacted=2 offsets in 1 gaps, before-start=3 offsets in 1 gaps; 0 problems, 0 warnings\n"
	if out != want {
		t.Fatalf("stdout:\n%s\nwant:\n%s", out, want)
	}
	out, _, code = runCLI(t, nil, "verify", "--store", f.url, "--topics", "orders", "--gaps")
	seg0 := f.keys(t, "topics/orders/"+ordersID.String()+"/0000000000/segments/", "-0000000000000000005-")
	if code != 0 || len(seg0) != 1 || !strings.Contains(out, "gap orders/0 offsets 3..4 "+seg0[0]+": compacted gap (explained)\n") ||
		!strings.Contains(out, "gap orders/1 offsets 0..2 ") {
		t.Fatalf("--gaps: exit %d\n%s", code, out)
	}
}

func TestVerifyProblems(t *testing.T) {
	t.Parallel()
	orders0 := "topics/orders/" + ordersID.String() + "/0000000000/"
	for _, tc := range []struct {
		name string
		// damage breaks the archive and returns what the problem line
		// must contain.
		damage func(t *testing.T, f *fixture) []string
	}{
		{"flipped byte", func(t *testing.T, f *fixture) []string {
			key := f.keys(t, orders0+"segments/", "-0000000000000000002-")[0]
			b, err := store.Get(context.Background(), f.st, key)
			if err != nil {
				t.Fatal(err)
			}
			b[25] ^= 0x10
			put(t, f, key, b)
			return []string{"PROBLEM orders/0 offsets 0..2 " + key + ": segment CRC32C"}
		}},
		{"deleted segment", func(t *testing.T, f *fixture) []string {
			key := f.keys(t, orders0+"segments/", "-0000000000000000005-")[0]
			if err := f.st.Delete(context.Background(), key); err != nil {
				t.Fatal(err)
			}
			return []string{"PROBLEM orders/0 offsets 3..5 " + key + ": segment missing"}
		}},
		{"truncated segment", func(t *testing.T, f *fixture) []string {
			key := f.keys(t, orders0+"segments/", "-0000000000000000005-")[0]
			b, err := store.Get(context.Background(), f.st, key)
			if err != nil {
				t.Fatal(err)
			}
			put(t, f, key, b[:len(b)/2])
			return []string{"PROBLEM orders/0 offsets 3..5 " + key + ": segment is"}
		}},
		{"missing commit", func(t *testing.T, f *fixture) []string {
			// Three commits so the missing one is in the middle.
			p := f.a.Partition("orders", ordersID, 0)
			head, err := p.Head(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			w := manifest.NewSegmentWriter(6, manifest.DefaultSegmentOptions())
			r := rec(6, 3000, nil, []byte("x"))
			if err := w.Append(&r); err != nil {
				t.Fatal(err)
			}
			b, info := w.Finish()
			if _, err := p.Append(context.Background(), head, b, info, "test", 1); err != nil {
				t.Fatal(err)
			}
			key := manifest.CommitKey(orders0, 3)
			if err := f.st.Delete(context.Background(), key); err != nil {
				t.Fatal(err)
			}
			return []string{"PROBLEM orders/0 offsets 3..5 " + key + ": commit missing"}
		}},
		{"data loss", func(t *testing.T, f *fixture) []string {
			key := f.keys(t, "topics/payments/", ".kseg")[0]
			return []string{"PROBLEM payments/0 offsets 0..9 " + key + ": DATA-LOSS gap"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			wants := tc.damage(t, f)
			topics := "orders"
			if tc.name == "data loss" {
				topics = ".*"
			}
			out, errOut, code := runCLI(t, nil, "verify", "--store", f.url, "--topics", topics)
			if code != 1 {
				t.Fatalf("exit %d\n%s", code, out)
			}
			oneLineErr(t, errOut, "verify found", "problems", f.url)
			for _, w := range wants {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			if !strings.Contains(out, "verify FAILED: ") {
				t.Errorf("no summary:\n%s", out)
			}
		})
	}
}

func put(t *testing.T, f *fixture, key string, b []byte) {
	t.Helper()
	if err := f.st.Put(context.Background(), key, strings.NewReader(string(b)), int64(len(b)), putOverwrite); err != nil {
		t.Fatal(err)
	}
}
