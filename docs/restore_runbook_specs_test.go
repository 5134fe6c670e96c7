package docs

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/kbackup/kbackup/testenv"
)

// The restore runbook's sections before "Started twice": a whole topic,
// a point in time and a window, consumer groups, offsets translate. They
// run on the archive the restore-dry-run spec makes: orders, 3 partitions
// × 2,000 records stamped 2024-05-07T13:00:00Z + i seconds (record i at
// offset i), billing captured at 500, 1000, 1500.
func init() {
	for id, s := range restoreRunbookSpecs {
		specs[id] = s
	}
}

var restoreIDRe = regexp.MustCompile(`restore (r-[0-9a-f]{16}) is complete`)

var restoreRunbookSpecs = map[string]blockSpec{
	"OPERATIONS.md#restore-whole": {
		after: func(e *docEnv, r *blockRun) {
			e.restoredAs("orders-restored")
			m := restoreIDRe.FindStringSubmatch(r.cmds[0].stdout)
			if m == nil {
				e.t.Fatalf("the restore printed no id:\n%s", r.cmds[0].stdout)
			}
			e.ids["r-0123456789abcdef"] = m[1] // for offsets translate below
			b, err := os.ReadFile(filepath.Join(e.tmp, "tmp", "orders.map.json"))
			if err != nil {
				e.t.Fatalf("--offset-map file: %v", err)
			}
			var om struct {
				Partitions []struct {
					SourcePartition int32 `json:"source_partition"`
					Records         int64 `json:"records"`
					Complete        bool  `json:"complete"`
				} `json:"partitions"`
			}
			if err := json.Unmarshal(b, &om); err != nil || len(om.Partitions) != 3 {
				e.t.Fatalf("offset map: %v\n%.500s", err, b)
			}
			for _, p := range om.Partitions {
				if p.Records != 2000 || !p.Complete {
					e.t.Fatalf("offset map partition %+v", p)
				}
			}
		},
	},
	"OPERATIONS.md#restore-window": {
		after: func(e *docEnv, r *blockRun) {
			// --to 13:20:00: each partition's records 0..1200, at their offsets.
			e.window("orders-at-1320", 0, 1200)
			// --from 13:10:00 --to 13:15:00: records 600..900, from offset 0.
			e.window("orders-1310", 600, 900)
		},
	},
	"OPERATIONS.md#restore-groups": {
		after: func(e *docEnv, r *blockRun) {
			e.restoredAs("orders-for-billing")
			if out := r.cmds[0].stdout; !strings.Contains(out, "billing") {
				e.t.Fatalf("the restore does not report the group move:\n%s", out)
			}
			e.groupAt("billing", "orders-for-billing", billingAt, 0)
		},
	},
	"OPERATIONS.md#offsets-translate": {
		before: func(e *docEnv) {
			// The whole restore moved no group.
			fo, err := e.k.Admin(e.t).FetchOffsets(e.t.Context(), "billing")
			if err != nil {
				e.t.Fatal(err)
			}
			if _, ok := fo.Lookup("orders-restored", 0); ok {
				e.t.Fatal("billing already has offsets on orders-restored")
			}
		},
		after: func(e *docEnv, r *blockRun) {
			if out := r.cmds[0].stdout; !strings.Contains(out, "orders-restored") || !strings.Contains(out, "billing") {
				e.t.Fatalf("translate --dry-run:\n%s", out)
			}
			if !strings.Contains(r.cmds[1].stdout, "billing") {
				e.t.Fatalf("translate:\n%s", r.cmds[1].stdout)
			}
			e.groupAt("billing", "orders-restored", billingAt, 0)
		},
	},
}

// window checks that dst holds, in each partition, orders' records
// first..last (by offset) from offset 0 on, with the same timestamp, key,
// value and headers.
func (e *docEnv) window(dst string, first, last int64) {
	e.t.Helper()
	src := testenv.ConsumeAll(e.t, e.k.Brokers(), "orders", testenv.ReadCommitted)
	got := testenv.ConsumeAll(e.t, e.k.Brokers(), dst, testenv.ReadCommitted)
	var want []testenv.Record
	for _, r := range src {
		if r.Offset >= first && r.Offset <= last {
			want = append(want, r)
		}
	}
	if len(got) != len(want) || len(want) != 3*int(last-first+1) {
		e.t.Fatalf("%s: %d records, want %d", dst, len(got), len(want))
	}
	for i := range want {
		w, g := want[i], got[i]
		if g.Partition != w.Partition || g.Offset != w.Offset-first || g.Timestamp != w.Timestamp || !testenv.SameData(w, g) {
			e.t.Fatalf("%s record %d:\n got %s\nwant %s", dst, i, g, w)
		}
	}
}
