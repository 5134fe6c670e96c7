package docs

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kbackup/kbackup/internal/doctest"
	"github.com/kbackup/kbackup/testenv"
)

// specs says, for every marked block ("FILE#NAME"), what state it needs and
// what its effect must be. A marked block without a spec, or a spec without
// its block, fails TestEveryDocBlockHasASpec.
var specs = map[string]blockSpec{
	// README's first lines: the demo and the unit tests, from the
	// repository as cloned (make builds what it needs).
	"../README.md#first-commands": {
		after: func(e *docEnv, r *blockRun) {
			if out := r.cmds[0].stdout; !strings.Contains(out, "verify OK") || !strings.Contains(out, "Done. The archive stays in") {
				e.t.Fatalf("make demo:\n%s", out)
			}
			out := r.cmds[1].stdout
			if strings.Contains(out, "FAIL") || !strings.Contains(out, "ok  \tgithub.com/kbackup/kbackup/archive") ||
				!strings.Contains(out, "ok  \tgithub.com/kbackup/kbackup/restore") {
				e.t.Fatalf("make test:\n%s", out)
			}
		},
	},

	// README quick start: continuous archive into a local directory, --once
	// into S3, ls, a time window with cat, verify --brokers.
	"../README.md#quickstart": {
		before: func(e *docEnv) {
			e.topic("orders", 3)
			// 2026-11-20 13:57:30 .. 14:07:28, one record every 2 s per partition.
			e.produce("orders", 3, 300, time.Date(2026, 11, 20, 13, 57, 30, 0, time.UTC), 2*time.Second)
		},
		after: func(e *docEnv, r *blockRun) {
			e.exact("file:///var/backups/kafka", "orders")
			e.exact("s3://bucket/prefix", "orders")
			if out := r.cmds[3].stdout; !strings.Contains(out, "orders") || !strings.Contains(out, "1 topics, 3 partitions, 900 records") {
				e.t.Fatalf("ls:\n%s", out)
			}
			// cat --from 14:00:00 --to 14:05:00: records 75..225 of each
			// partition (13:57:30 + 2 s * i).
			got := parseCat(e.t, r.cmds[4].stdout)
			var want []testenv.Record
			for _, rec := range testenv.ConsumeAll(e.t, e.k.Brokers(), "orders", testenv.ReadCommitted) {
				ts := time.UnixMilli(rec.Timestamp).UTC()
				if !ts.Before(time.Date(2026, 11, 20, 14, 0, 0, 0, time.UTC)) && !ts.After(time.Date(2026, 11, 20, 14, 5, 0, 0, time.UTC)) {
					want = append(want, rec)
				}
			}
			if len(want) != 3*151 {
				e.t.Fatalf("fixture: %d records in the window", len(want))
			}
			sameRecords(e.t, "cat --from --to", want, got)
			if !strings.Contains(r.cmds[5].stdout, "verify OK") {
				e.t.Fatalf("verify:\n%s", r.cmds[5].stdout)
			}
		},
	},

	// The archiver with a topic selection and /metrics.
	"OPERATIONS.md#archiver": {
		before: func(e *docEnv) {
			for _, t := range []struct {
				name string
				n    int32
			}{{"orders.eu", 3}, {"orders.us", 2}, {"orders.eu.tmp", 1}, {"payments", 2}, {"audit", 1}} {
				e.topic(t.name, t.n)
				e.produce(t.name, t.n, 1300, time.Date(2026, 11, 20, 13, 50, 0, 0, time.UTC), time.Second)
			}
		},
		running: func(e *docEnv, r *blockRun) {
			metrics := testenv.Scrape(e.t, e.listen["9464"])
			for _, want := range []string{`kbackup_archive_partitions 7`, `client="data"`, `client="group"`,
				`kbackup_archive_gap_offsets_total{partition="0",reason="DATA-LOSS",topic="payments"} 0`} {
				if !strings.Contains(metrics, want) {
					e.t.Fatalf("/metrics lacks %q", want)
				}
			}
		},
		after: func(e *docEnv, r *blockRun) {
			if got := e.archivedTopics("s3://backups/prod-kafka"); !slices.Equal(got, []string{"orders.eu", "orders.us", "payments"}) {
				e.t.Fatalf("archived topics %v", got)
			}
			for _, t := range []string{"orders.eu", "orders.us", "payments"} {
				e.exact("s3://backups/prod-kafka", t)
			}
		},
	},

	// The Helm chart: the values file, then helm install with it. The
	// archiver Deployment's two replicas (its container args and env, as
	// rendered) share the selection through the group; payments gets
	// records only they can have archived.
	"OPERATIONS.md#archiver-values": {},
	// The packed layout: caught up (verify --brokers, which reads the
	// tails), stopped by SIGTERM, every record once; format version 3.
	// (No records produced here: the next blocks check the main archive
	// against the cluster.)
	"OPERATIONS.md#packed": {
		after: func(e *docEnv, r *blockRun) {
			for _, t := range []string{"orders.eu", "orders.us"} {
				e.exact("s3://backups/prod-kafka-packed", t)
			}
			ls := e.kbackup("ls", "--store", e.sub("s3://backups/prod-kafka-packed"), "--json")
			if ls.code != 0 || !strings.Contains(ls.stdout, `"format_version": 3`) {
				e.t.Fatalf("ls of the packed archive: exit %d\n%s%s", ls.code, ls.stdout, ls.stderr)
			}
		},
	},
	"OPERATIONS.md#archiver-install": {
		before: func(e *docEnv) {
			e.produce("payments", 2, 50, time.Date(2026, 11, 20, 14, 10, 0, 0, time.UTC), time.Second)
		},
		running: func(e *docEnv, r *blockRun) {
			if len(r.bg) != 2 {
				e.t.Fatalf("%d archivers, want the 2 replicas", len(r.bg))
			}
			owned := 0
			re := regexp.MustCompile(`(?m)^kbackup_archive_partitions (\d+)$`)
			for _, bg := range r.bg {
				m := re.FindStringSubmatch(testenv.Scrape(e.t, listenOf(bg.args)))
				if m == nil {
					e.t.Fatalf("%s: no kbackup_archive_partitions", bg.cmd)
				}
				n, _ := strconv.Atoi(m[1])
				owned += n
			}
			if owned != 7 {
				e.t.Fatalf("the replicas own %d partitions together, want 7", owned)
			}
		},
		after: func(e *docEnv, r *blockRun) {
			if got := e.archivedTopics("s3://backups/prod-kafka"); !slices.Equal(got, []string{"orders.eu", "orders.us", "payments"}) {
				e.t.Fatalf("archived topics %v", got)
			}
			e.exact("s3://backups/prod-kafka", "payments")
		},
	},

	// The chart's verify CronJob, added with helm upgrade (the archiver
	// Deployment is unchanged) and run at once: verify --brokers over the
	// archiver's store and selection passes, the new payments records
	// counted as archiver lag.
	"OPERATIONS.md#verify-values": {},
	"OPERATIONS.md#verify-install": {
		hosts: true, // kubectl is the shim (kube_test.go)
		after: func(e *docEnv, r *blockRun) {
			j := e.kube.job("kafka", "kbackup-verify-now")
			if j == nil || j.code != 0 {
				e.t.Fatalf("the verify job: %+v", j)
			}
			logs := r.cmds[2].stdout
			if !strings.Contains(logs, "verify OK: 3 topics, 7 partitions") || !strings.Contains(logs, "archiver lag: 10 offsets in 2 partitions") {
				e.t.Fatalf("kubectl logs:\n%s", logs)
			}
			if len(r.bg) != 0 {
				e.t.Fatal("helm upgrade restarted the unchanged archiver Deployment")
			}
		},
	},

	// The restore Job rendered from the release's values and applied with
	// kubectl: its pod (kbackup with the container's args and environment)
	// dry-runs a point-in-time restore of orders.eu from the archiver's
	// store; kubectl logs shows the plan; nothing is written.
	"OPERATIONS.md#restore-job": {
		hosts:  true, // kubectl is the shim (kube_test.go)
		before: func(e *docEnv) { e.helmOnPath() },
		after: func(e *docEnv, r *blockRun) {
			if !strings.Contains(r.cmds[0].stdout, "job.batch/kbackup-restore-orders-eu-1403 created") {
				e.t.Fatalf("kubectl apply:\n%s", r.cmds[0].stdout)
			}
			j := e.kube.job("kafka", "kbackup-restore-orders-eu-1403")
			if j == nil || j.code != 0 {
				e.t.Fatalf("the Job's pod: %+v", j)
			}
			// orders.eu: record i of a partition at 13:50:00 + i s, so
			// --to 14:03:00 is offsets 0..780.
			logs := r.cmds[1].stdout
			for _, want := range []string{"topic orders.eu -> orders-eu-at-1403: create with 3 partitions", "0..780"} {
				if !strings.Contains(logs, want) {
					e.t.Fatalf("kubectl logs lacks %q:\n%s", want, logs)
				}
			}
			if td, err := e.k.Admin(e.t).ListTopics(context.Background()); err != nil || td.Has("orders-eu-at-1403") {
				e.t.Fatalf("the dry run created its target topic (%v)", err)
			}
		},
	},

	// The systemd unit with its environment file: more records arrive, the
	// unit's archiver (same store, same selection from the env file)
	// continues where the CLI example stopped.
	"OPERATIONS.md#archiver-env": {
		before: func(e *docEnv) {
			e.produce("orders.eu", 3, 100, time.Date(2026, 11, 20, 14, 12, 0, 0, time.UTC), time.Second)
			e.produce("orders.eu.tmp", 1, 10, time.Date(2026, 11, 20, 14, 12, 0, 0, time.UTC), time.Second)
		},
	},
	"OPERATIONS.md#archiver-unit": {
		running: func(e *docEnv, r *blockRun) {
			if m := testenv.Scrape(e.t, e.listen["9464"]); !strings.Contains(m, "kbackup_archive_partitions 7") {
				e.t.Fatalf("the unit's /metrics:\n%.2000s", m)
			}
		},
		after: func(e *docEnv, r *blockRun) {
			if got := e.archivedTopics("s3://backups/prod-kafka"); !slices.Equal(got, []string{"orders.eu", "orders.us", "payments"}) {
				e.t.Fatalf("archived topics %v", got)
			}
			e.exact("s3://backups/prod-kafka", "orders.eu")
		},
	},

	// Checking the archive: ls, cat, verify, verify --brokers with the
	// archiver's selection; the archiver's variables in the session (as
	// when the env file is sourced) do not change what they select.
	"OPERATIONS.md#checking": {
		before: func(e *docEnv) {
			// Not archived: payments gets records the archiver has not
			// seen (newer than the allowance: lag, not a problem).
			e.produce("payments", 2, 5, time.Now(), time.Millisecond)
		},
		after: func(e *docEnv, r *blockRun) {
			if out := r.cmds[0].stdout; !strings.Contains(out, "orders.eu") || !strings.Contains(out, "3 topics, 7 partitions") {
				e.t.Fatalf("ls:\n%s", out)
			}
			// orders.eu/2: 1400 records from 13:50:00 (1 s apart) then
			// from 14:12:00; --from 14:03:00 is offset 780, --to-offset 1200.
			got := parseCat(e.t, r.cmds[1].stdout)
			if len(got) != 421 || got[0].Offset != 780 || got[len(got)-1].Offset != 1200 || got[0].Partition != 2 {
				e.t.Fatalf("cat: %d records %v..%v", len(got), first(got), last(got))
			}
			for i, c := range r.cmds[2:] {
				if !strings.Contains(c.stdout, "verify OK") {
					e.t.Fatalf("verify %d:\n%s", i, c.stdout)
				}
			}
			if !strings.Contains(r.cmds[3].stdout, "archiver lag: 10 offsets in 2 partitions") {
				e.t.Fatalf("verify --brokers does not count the new payments records as lag:\n%s", r.cmds[3].stdout)
			}
		},
	},
}

func first(rs []testenv.Record) string {
	if len(rs) == 0 {
		return "-"
	}
	return fmt.Sprintf("%d/%d", rs[0].Partition, rs[0].Offset)
}

func last(rs []testenv.Record) string {
	if len(rs) == 0 {
		return "-"
	}
	return fmt.Sprintf("%d/%d", rs[len(rs)-1].Partition, rs[len(rs)-1].Offset)
}

// docBlocks extracts every marked block of the doc files.
func docBlocks(t *testing.T) []doctest.Block {
	t.Helper()
	var all []doctest.Block
	for _, f := range docFiles {
		bs, err := doctest.Extract(f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, bs...)
	}
	return all
}

// TestEveryDocBlockHasASpec: the marked examples and the suite's specs are
// the same set, so no example goes untested and no test runs a command the
// docs do not show. (A unit test: it needs no Kafka.)
func TestEveryDocBlockHasASpec(t *testing.T) {
	blocks := docBlocks(t)
	seen := map[string]bool{}
	for _, b := range blocks {
		seen[b.ID()] = true
		if _, ok := specs[b.ID()]; !ok {
			t.Errorf("%s:%d: marked block %q has no spec in docs/specs*_test.go", b.File, b.Line, b.Name)
		}
		if !slices.Contains(blockKinds, b.Kind) {
			t.Errorf("%s:%d: kind %q has no runner", b.File, b.Line, b.Kind)
		}
	}
	for id := range specs {
		if !seen[id] {
			t.Errorf("spec %s names no marked block", id)
		}
	}
	if len(blocks) == 0 {
		t.Fatal("no marked blocks")
	}
}
