package docs

import (
	"context"
	"regexp"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/kbackup/kbackup/testenv"
)

// The restore runbook's examples (OPERATIONS.md, "Restore runbook" and
// "Started twice, rerun, killed, or run on several machines"): an archive
// of orders (3 partitions, 2,000 records each, no gaps, so a restored
// record keeps its offset) in s3://backups/kafka with a groups capture in
// which billing is at 500, 1000 and 1500.
func init() {
	for id, s := range restoreSpecs {
		specs[id] = s
	}
}

var billingAt = map[int32]int64{0: 500, 1: 1000, 2: 1500}

// completeRe is the line every process that ran (or found complete) a
// restore prints.
var completeRe = regexp.MustCompile(`restore \S+ is complete: 6000 records in 3 partitions, completed at \S+ by \S+`)

var restoreSpecs = map[string]blockSpec{
	"OPERATIONS.md#restore-dry-run": {
		before: func(e *docEnv) {
			e.topic("orders", 3)
			e.produce("orders", 3, 2000, time.Date(2024, 5, 7, 13, 0, 0, 0, time.UTC), time.Second)
			e.commitGroup("billing", "orders", billingAt)
			if r := e.kbackup("archive", "--once", "--brokers", strings.Join(e.k.Brokers(), ","), "--store", e.sub("s3://backups/kafka"),
				"--topics", "orders"); r.code != 0 {
				e.t.Fatalf("archive --once: exit %d\n%s", r.code, r.stderr)
			}
		},
		after: func(e *docEnv, r *blockRun) {
			out := r.cmds[0].stdout
			for _, want := range []string{"topic orders -> orders-restored: create with 3 partitions", "orders/2", "group billing: 3 offsets to translate",
				"orders/1 offset 1000 -> orders-restored/1 offset 1000 (predicted; committed there now: none)"} {
				if !strings.Contains(out, want) {
					e.t.Fatalf("the dry run's plan lacks %q:\n%s", want, out)
				}
			}
			if td, err := e.k.Admin(e.t).ListTopics(context.Background()); err != nil || td.Has("orders-restored") {
				e.t.Fatalf("the dry run created its target topic (%v)", err)
			}
		},
	},
	"OPERATIONS.md#restore-twice-at-once": {
		after: func(e *docEnv, r *blockRun) {
			e.restoredAs("orders-twice")
			out := r.cmds[0].stdout + r.cmds[0].stderr
			n := len(completeRe.FindAllString(out, -1))
			if n == 0 || n == 1 && !strings.Contains(out, "refused while the first one runs") {
				e.t.Fatalf("want one completion and one refusal, or two identical completions:\n%s", out)
			}
		},
	},
	"OPERATIONS.md#restore-rerun": {
		after: func(e *docEnv, r *blockRun) {
			e.restoredAs("orders-copy")
			if out := r.cmds[1].stdout; !strings.Contains(out, "already complete") || !strings.Contains(out, "group billing: already moved") ||
				!completeRe.MatchString(out) {
				e.t.Fatalf("the rerun:\n%s", out)
			}
			e.groupAt("billing", "orders-copy", billingAt, 0)
		},
	},
	"OPERATIONS.md#offsets-translate-again": {
		before: func(e *docEnv) {
			// billing's consumers went on in the restored topic.
			moved := map[int32]int64{}
			for p, at := range billingAt {
				moved[p] = at + 100
			}
			e.commitGroup("billing", "orders-copy", moved)
		},
		after: func(e *docEnv, r *blockRun) {
			if out := r.cmds[0].stdout; !strings.Contains(out, "group billing: already moved by restore orders-copy: not moved again") {
				e.t.Fatalf("translate without --again:\n%s", out)
			}
			if out := r.cmds[1].stdout; !strings.Contains(out, "group billing: committed") || !strings.Contains(out, "(committed there now: 1100)") {
				e.t.Fatalf("translate --again:\n%s", out)
			}
			e.groupAt("billing", "orders-copy", billingAt, 0)
		},
	},
	"OPERATIONS.md#restore-kill-rerun": {
		after: func(e *docEnv, r *blockRun) {
			e.restoredAs("orders-killed")
			if !completeRe.MatchString(r.cmds[1].stdout) {
				e.t.Fatalf("the rerun after kill -9:\n%s%s", r.cmds[1].stdout, r.cmds[1].stderr)
			}
		},
	},
	"OPERATIONS.md#restore-scale-out": {
		after: func(e *docEnv, r *blockRun) {
			e.restoredAs("orders-shared")
			lines := completeRe.FindAllString(r.cmds[0].stdout, -1)
			if len(lines) != 3 || lines[0] != lines[1] || lines[1] != lines[2] {
				e.t.Fatalf("want the same completion line from the three processes:\n%s\n%s", r.cmds[0].stdout, r.cmds[0].stderr)
			}
		},
	},
}

// commitGroup commits group's offsets on topic's partitions.
func (e *docEnv) commitGroup(group, topic string, at map[int32]int64) {
	e.t.Helper()
	offs := kadm.Offsets{}
	for p, o := range at {
		offs.Add(kadm.Offset{Topic: topic, Partition: p, At: o, LeaderEpoch: -1})
	}
	resp, err := e.k.Admin(e.t).CommitOffsets(context.Background(), group, offs)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		e.t.Fatalf("commit %s on %s: %v", group, topic, err)
	}
}

// groupAt checks group's committed offsets on topic: at[p] + plus.
func (e *docEnv) groupAt(group, topic string, at map[int32]int64, plus int64) {
	e.t.Helper()
	fo, err := e.k.Admin(e.t).FetchOffsets(context.Background(), group)
	if err != nil {
		e.t.Fatal(err)
	}
	for p, want := range at {
		if o, ok := fo.Lookup(topic, p); !ok || o.At != want+plus {
			e.t.Fatalf("%s on %s/%d: %+v, want %d", group, topic, p, o, want+plus)
		}
	}
}

// restoredAs checks that dst holds every record of orders in the same
// partition, at the same offset (orders has no gaps), with the same
// timestamp, key, value and headers.
func (e *docEnv) restoredAs(dst string) {
	e.t.Helper()
	want := testenv.ConsumeAll(e.t, e.k.Brokers(), "orders", testenv.ReadCommitted)
	got := testenv.ConsumeAll(e.t, e.k.Brokers(), dst, testenv.ReadCommitted)
	if len(got) != len(want) {
		e.t.Fatalf("%s: %d records, orders has %d", dst, len(got), len(want))
	}
	for i := range want {
		w, g := want[i], got[i]
		if g.Partition != w.Partition || g.Offset != w.Offset || g.Timestamp != w.Timestamp || !testenv.SameData(w, g) {
			e.t.Fatalf("%s record %d:\n got %s\nwant %s", dst, i, g, w)
		}
	}
}
