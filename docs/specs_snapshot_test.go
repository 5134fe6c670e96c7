package docs

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	batchv1 "k8s.io/api/batch/v1"

	"github.com/kbackup/kbackup/snapshot"
	"github.com/kbackup/kbackup/testenv"
)

// The snapshot examples of OPERATIONS.md ("Snapshot cycles"), in document
// order. They share one cluster: the EBS configuration runs against moto
// (its cycles stop and start the real brokers through the hosts' shims),
// then the directory provider's replaces it for the scheduled cycle, the
// whole-cluster restore, the roll-forward and, last because it destroys
// data, the repair of truncated logs.
func init() {
	for id, s := range snapshotSpecs {
		specs[id] = s
	}
}

// Topic orders is the restore runbook's (restore_specs_test.go: 2,000
// records per partition from 2024-05-07 13:00:00, 1 s apart, archived in
// s3://backups/kafka), in the directory provider's cycle; 100 records per
// partition come after the cycle (from 13:40:00, 90 s apart: the
// roll-forward's --to 14:03:00 keeps the first 16).
var (
	ordersAfter = time.Date(2024, 5, 7, 13, 40, 0, 0, time.UTC)
	rollTo      = time.Date(2024, 5, 7, 14, 3, 0, 0, time.UTC)
)

const (
	afterCycle = 100 // records per partition produced after the cycle
	upToRollTo = 16  // of which the roll-forward to rollTo puts back
)

// ebsRegion is the configuration's provider.ebs.region; stopFailure what
// systemctl says when a unit fails to stop.
const (
	ebsRegion   = "eu-west-1"
	stopFailure = "Job for kafka.service failed because the control process exited with error code."
)

var summaryRE = regexp.MustCompile(`(?m)^cycle (\d{8}T\d{6}Z-[0-9a-f]{8}) complete: mode cold, 3 brokers, 3 snapshots, ([0-9.]+ [KMGT]?i?B), took [0-9hms]+$`)

var snapshotSpecs = map[string]blockSpec{
	// The reference configuration (EBS): moto gets three instances, each
	// with a volume; the configuration loads and reaches its store.
	"OPERATIONS.md#snapshot-config": {
		before: func(e *docEnv) { e.startEC2(ebsRegion, "vol-0123456789abcdef0", "kafka-broker") },
		after: func(e *docEnv, r *blockRun) {
			cfg := r.doc.(*snapshot.Config)
			if cfg.Provider.Type != "ebs" || cfg.Provider.EBS.Endpoint != "" || len(cfg.Brokers) != 3 ||
				!slices.Equal(cfg.Kafka.Brokers, e.k.Brokers()) || cfg.Brokers[0].Volumes[0] != e.volume("vol-0123456789abcdef0") {
				e.t.Fatalf("configuration as loaded: %+v", cfg)
			}
			if cs := e.cycles(); len(cs) != 0 {
				e.t.Fatalf("a new store has cycles: %v", cs)
			}
		},
	},

	// The commands, with a failed cycle already recorded (the stop hook of
	// broker 3 failed; brokers 1 and 2, stopped meanwhile, were started
	// again): run takes a complete cold cycle (every broker stopped and
	// started through the hooks, EBS snapshots tagged in moto), list shows
	// both, prune says it would delete the failed one and deletes nothing,
	// prune --confirm deletes exactly that, restore --dry-run touches
	// nothing.
	"OPERATIONS.md#snapshot-commands": {
		hosts: true,
		before: func(e *docEnv) {
			e.snap.pids = e.brokerPids()
			e.hosts.failStops(3, stopFailure)
			r := e.kbackup("snapshot", "run", "--config", e.snapshotConfigPath())
			e.hosts.failStops(3, "")
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if last := lines[len(lines)-1]; r.code != 1 || !strings.HasPrefix(last, "kbackup: ") || !strings.Contains(last, "stop hook for broker 3 exited 1") {
				e.t.Fatalf("a cycle whose stop hook fails: exit %d, last line %q", r.code, last)
			}
			calls := e.hosts.takeCalls()
			for id, before := range e.snap.pids {
				now := e.k.Cluster().Pid(id)
				if (id == 3) != (now == before) || now == 0 {
					e.t.Fatalf("after the failed cycle broker %d runs as pid %d (was %d); hook calls %v", id, now, before, calls)
				}
			}
			e.k.WaitInSync(e.t, 2*time.Minute)
			cs := e.cycles()
			if len(cs) != 1 || cs[0].State != snapshot.StateFailed || !strings.Contains(cs[0].Reason, "stop hook for broker 3") {
				e.t.Fatalf("cycles after the failed run: %+v", cs)
			}
			e.snap.failed = cs[0].ID
			e.snap.pids, e.snap.vols = e.brokerPids(), e.ec2Volumes()
		},
		after: func(e *docEnv, r *blockRun) {
			m := summaryRE.FindStringSubmatch(r.cmds[0].stdout)
			if m == nil || m[2] != "300.0 GiB" {
				e.t.Fatalf("snapshot run printed %q", r.cmds[0].stdout)
			}
			cycle, failed := m[1], e.snap.failed
			e.restarted("snapshot run") // and no other command stopped a broker
			ours := 0
			for id, tags := range e.ec2Snapshots() {
				if tags["kbackup:cycle"] != cycle {
					continue
				}
				ours++
				if tags["kbackup:cluster"] != "prod-events" || tags["team"] != "data-platform" || tags["Name"] == "" ||
					(tags["kbackup:broker"] == "1") != (tags["kbackup:volume"] == e.volume("vol-0123456789abcdef0")) {
					e.t.Fatalf("EBS snapshot %s tags %v", id, tags)
				}
			}
			if ours != 3 {
				e.t.Fatalf("%d EBS snapshots of cycle %s, want 3", ours, cycle)
			}
			table := strings.Split(strings.TrimSpace(r.cmds[1].stdout), "\n")
			if len(table) != 3 || !regexp.MustCompile(`^`+cycle+` +complete +cold +\S+ +\S+ +300\.0 GiB +3 *$`).MatchString(table[1]) ||
				!regexp.MustCompile(`^`+failed+` +failed +cold .*stop hook for broker 3`).MatchString(table[2]) {
				e.t.Fatalf("snapshot list:\n%s", r.cmds[1].stdout)
			}
			if cs := parseCycles(e, r.cmds[2].stdout); len(cs) != 2 || cs[0].ID != cycle || cs[0].Bytes != 300<<30 || cs[0].Snapshots != 3 || cs[1].ID != failed {
				e.t.Fatalf("snapshot list --json: %+v", cs)
			}
			would := regexp.MustCompile(`(?m)^would delete (\S+) \(failed\)`).FindAllStringSubmatch(r.cmds[3].stdout, -1)
			deleted := regexp.MustCompile(`(?m)^delete (\S+) \(failed\)`).FindAllStringSubmatch(r.cmds[4].stdout, -1)
			keep := regexp.MustCompile(`(?m)^keep +` + cycle + ` \(complete\)`)
			// The failed cycle still being there for --confirm to delete is
			// what shows that prune without it deleted nothing.
			if len(would) != 1 || would[0][1] != failed || len(deleted) != 1 || deleted[0][1] != failed ||
				!keep.MatchString(r.cmds[3].stdout) || !keep.MatchString(r.cmds[4].stdout) {
				e.t.Fatalf("prune:\n%s\nprune --confirm:\n%s", r.cmds[3].stdout, r.cmds[4].stdout)
			}
			if cs := e.cycles(); len(cs) != 1 || cs[0].ID != cycle {
				e.t.Fatalf("cycles after prune --confirm: %+v", cs)
			}
			plan := r.cmds[5].stdout
			if !strings.HasPrefix(plan, "plan (dry run, nothing changed):") || !strings.Contains(plan, "restore cycle "+cycle) ||
				!strings.Contains(plan, "broker 1: replace volume "+e.volume("vol-0123456789abcdef0")+" (/dev/sdf) with snapshot snap-") {
				e.t.Fatalf("restore --dry-run:\n%s", plan)
			}
			if vols := e.ec2Volumes(); !maps.Equal(vols, e.snap.vols) {
				e.t.Fatalf("after restore --dry-run moto has the volumes %v, before %v", vols, e.snap.vols)
			}
		},
	},

	// The hooks' image: a shell and what the hooks call, kbackup copied
	// from the published image at a pinned version (checked, not built).
	"OPERATIONS.md#snapshot-image": {
		after: func(e *docEnv, r *blockRun) {
			e.snap.checkImage(e.t, r.block.Text, r.doc.([]dockerInstr), e.snapshotConfigPath())
		},
	},

	// The CronJob: its container's args run a complete cold cycle of the
	// test cluster with the configuration at its mountPath, logging JSON;
	// the image is the one the Dockerfile builds, pinned.
	// The chart's snapshot CronJob, added to the release with helm upgrade
	// (the archiver Deployment is unchanged, so its pods keep running) and
	// run at once with kubectl create job --from=cronjob: the configuration
	// in the chart's ConfigMap, the hooks through the hosts' shims.
	"OPERATIONS.md#snapshot-values": {},
	"OPERATIONS.md#snapshot-install": {
		hosts:  true,
		before: func(e *docEnv) { e.snap.pids = e.brokerPids() },
		after: func(e *docEnv, r *blockRun) {
			if !strings.Contains(r.cmds[1].stdout, "job.batch/kbackup-snapshot-now created") {
				e.t.Fatalf("kubectl create job:\n%s%s", r.cmds[1].stdout, r.cmds[1].stderr)
			}
			j := e.kube.job("kafka", "kbackup-snapshot-now")
			if j == nil || j.code != 0 {
				e.t.Fatalf("the job's pod: %+v", j)
			}
			m := summaryRE.FindStringSubmatch(r.cmds[2].stdout)
			if m == nil {
				e.t.Fatalf("kubectl logs:\n%s", r.cmds[2].stdout)
			}
			if cs := e.cycles(); cs[0].ID != m[1] || cs[0].State != snapshot.StateComplete {
				e.t.Fatalf("the job's cycle %s: list %+v", m[1], cs)
			}
			e.restarted("the chart's CronJob's cycle")
		},
	},
	"OPERATIONS.md#snapshot-cronjob": {
		hosts:  true,
		before: func(e *docEnv) { e.snap.pids = e.brokerPids() },
		after: func(e *docEnv, r *blockRun) {
			e.snap.checkCronJob(e.t, r.doc.(*batchv1.CronJob))
			m := summaryRE.FindStringSubmatch(r.cmds[0].stdout)
			if m == nil {
				e.t.Fatalf("the job printed %q", r.cmds[0].stdout)
			}
			done := false
			for _, line := range strings.Split(strings.TrimSpace(r.cmds[0].stderr), "\n") {
				var l struct{ Msg, Cycle string }
				if err := json.Unmarshal([]byte(line), &l); err != nil {
					e.t.Fatalf("--log-format json logged a line that is not JSON: %q", line)
				}
				done = done || (l.Msg == "cycle complete" && l.Cycle == m[1])
			}
			if cs := e.cycles(); !done || cs[0].ID != m[1] || cs[0].State != snapshot.StateComplete {
				e.t.Fatalf("the job's cycle %s: logged complete %v, list %+v", m[1], done, cs)
			}
			e.restarted("the CronJob's cycle")
		},
	},

	// The directory provider's configuration replaces the EBS one.
	"OPERATIONS.md#snapshot-config-dir": {
		after: func(e *docEnv, r *blockRun) {
			cfg := r.doc.(*snapshot.Config)
			for i, b := range cfg.Brokers {
				if cfg.Provider.Type != "dir" || !slices.Equal(b.Dirs, []string{e.k.Cluster().DataDir(b.ID)}) || b.ID != int32(i+1) {
					e.t.Fatalf("configuration as loaded: %+v", cfg)
				}
			}
		},
	},

	// The timer's service as systemd runs it: the cycle, then the prune,
	// which keeps it.
	"OPERATIONS.md#snapshot-service": {
		hosts:  true,
		before: func(e *docEnv) { e.snap.pids = e.brokerPids() },
		after: func(e *docEnv, r *blockRun) {
			m := summaryRE.FindStringSubmatch(r.cmds[0].stdout)
			if m == nil {
				e.t.Fatalf("ExecStart printed %q", r.cmds[0].stdout)
			}
			e.restarted("the service's cycle")
			if !regexp.MustCompile(`^keep +`+m[1]+` \(complete\)`).MatchString(r.cmds[1].stdout) || strings.Contains(r.cmds[1].stdout, "delete") {
				e.t.Fatalf("ExecStartPost (prune --confirm):\n%s", r.cmds[1].stdout)
			}
			if cs := e.cycles(); len(cs) != 1 || cs[0].ID != m[1] {
				e.t.Fatalf("cycles: %+v", cs)
			}
			for id := 1; id <= 3; id++ {
				if _, err := os.Stat(filepath.Join(e.tmp, "var/backups/kafka-snapshots/events-dc1", m[1], fmt.Sprintf("broker-%d", id), "0.complete")); err != nil {
					e.t.Fatal(err)
				}
			}
		},
	},

	// The timer: systemd-analyze verify passed in the runner (with its service).
	"OPERATIONS.md#snapshot-timer": {
		after: func(e *docEnv, r *blockRun) {
			u := r.doc.(map[string]map[string][]string)
			if len(u["Timer"]["OnCalendar"]) != 1 || !slices.Equal(u["Timer"]["Persistent"], []string{"true"}) ||
				!slices.Equal(u["Install"]["WantedBy"], []string{"timers.target"}) {
				e.t.Fatalf("timer unit: %v", u)
			}
		},
	},

	// The whole-cluster runbook with the directory provider: 100 more
	// records per partition of orders after the cycle, archived; the dry
	// run changes nothing; the restore stops and starts every broker once
	// and brings orders back to exactly the cycle's records.
	"OPERATIONS.md#snapshot-restore": {
		hosts: true,
		before: func(e *docEnv) {
			e.snap.atCycle = testenv.ConsumeAll(e.t, e.k.Brokers(), "orders", testenv.ReadCommitted)
			e.snap.perPart = len(e.snap.atCycle) / 3
			if len(e.snap.atCycle) != 3*e.snap.perPart || len(firstN(e.snap.atCycle, e.snap.perPart)) != len(e.snap.atCycle) {
				e.t.Fatalf("fixture: orders has %d records, not as many in each of its 3 partitions", len(e.snap.atCycle))
			}
			e.produce("orders", 3, afterCycle, ordersAfter, 90*time.Second)
			if r := e.kbackup("archive", "--once", "--brokers", e.k.BrokerList(), "--store", e.sub("s3://backups/kafka"), "--topics", "orders"); r.code != 0 {
				e.t.Fatalf("archive --once: %s", r.stderr)
			}
			e.snap.want = testenv.ConsumeAll(e.t, e.k.Brokers(), "orders", testenv.ReadCommitted)
			if len(e.snap.want) != len(e.snap.atCycle)+3*afterCycle {
				e.t.Fatalf("orders has %d records", len(e.snap.want))
			}
			e.snap.cycle = e.newestCompleteCycle()
			e.snap.pids = e.brokerPids()
		},
		after: func(e *docEnv, r *blockRun) {
			cycle := e.snap.cycle
			if !regexp.MustCompile(`(?m)^` + cycle + ` +complete +cold `).MatchString(r.cmds[0].stdout) {
				e.t.Fatalf("snapshot list:\n%s", r.cmds[0].stdout)
			}
			if plan := r.cmds[1].stdout; !strings.Contains(plan, "restore cycle "+cycle) || !strings.Contains(plan, "broker 3: replace volume "+e.k.Cluster().DataDir(3)) {
				e.t.Fatalf("restore --dry-run:\n%s", plan)
			}
			m := regexp.MustCompile(`^restored cycle ` + cycle + ` \(report (snapshots/events-dc1/restores/\S+\.json)\); high watermarks served:\n`).FindStringSubmatch(r.cmds[2].stdout)
			n := e.snap.perPart
			if m == nil || !strings.Contains(r.cmds[2].stdout, fmt.Sprintf("  orders 0=%d 1=%d 2=%d\n", n, n, n)) || strings.Contains(r.cmds[2].stdout, "MISMATCH") {
				e.t.Fatalf("snapshot restore:\n%s", r.cmds[2].stdout)
			}
			e.restarted("snapshot restore") // once: the dry run stopped nothing
			sameRecords(e.t, "orders after the restore", e.snap.atCycle, testenv.ConsumeAll(e.t, e.k.Brokers(), "orders", testenv.ReadCommitted))
			for id := int32(1); id <= 3; id++ {
				kept, _ := filepath.Glob(e.k.Cluster().DataDir(id) + ".kbackup-rollback-" + cycle + "-*")
				if len(kept) != 1 {
					e.t.Fatalf("broker %d: %d directories kept for rollback, want 1", id, len(kept))
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := e.s3.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(e.s3.Bucket),
				Key: aws.String(e.run + "/acme-kafka-backup/events-dc1/" + m[1])}); err != nil {
				e.t.Fatalf("restore report %s: %v", m[1], err)
			}
		},
	},

	// Roll-forward to 14:03: the dry run writes nothing, the roll-forward
	// puts back the 43 records per partition up to then, at their offsets.
	"OPERATIONS.md#roll-forward": {
		after: func(e *docEnv, r *blockRun) {
			// PARTITION LIVE-END ARCHIVE-END CYCLE-RANGE REPLAY RECORDS STATE
			for i, state := range []string{"replay", "replayed"} {
				out := r.cmds[i].stdout
				n := e.snap.perPart
				rows := regexp.MustCompile(fmt.Sprintf(`(?m)^orders/[0-2] +%d +\d+ +\d+\.\.\d+ +%d\.\.%d +%d +%s$`, n, n, n+upToRollTo-1, upToRollTo, state)).FindAllString(out, -1)
				if len(rows) != 3 || (i == 0) != strings.Contains(out, "dry run, nothing written") {
					e.t.Fatalf("roll-forward %d report:\n%s", i, out)
				}
			}
			var want []testenv.Record
			for _, rec := range e.snap.want {
				if rec.Timestamp <= rollTo.UnixMilli() {
					want = append(want, rec)
				}
			}
			if len(want) != 3*(e.snap.perPart+upToRollTo) {
				e.t.Fatalf("fixture: %d records up to %s", len(want), rollTo)
			}
			sameRecords(e.t, "orders after the roll-forward", want, testenv.ConsumeAll(e.t, e.k.Brokers(), "orders", testenv.ReadCommitted))
		},
	},

	// Repair: orders rolled forward to the archive's end, then every
	// broker stopped and the tail of every replica's orders segments cut
	// (a power loss that lost the page cache); the repair puts the lost
	// records back at their offsets.
	"OPERATIONS.md#repair": {
		before: func(e *docEnv) {
			if r := e.kbackup("restore", "--brokers", e.k.BrokerList(), "--store", e.sub("s3://backups/kafka"), "--topics", "orders",
				"--since-cycle", e.snap.cycle, "--snapshot-config", e.snapshotConfigPath()); r.code != 0 {
				e.t.Fatalf("roll-forward to the end: %s\n%s", r.stdout, r.stderr)
			}
			sameRecords(e.t, "orders rolled forward to the end", e.snap.want, testenv.ConsumeAll(e.t, e.k.Brokers(), "orders", testenv.ReadCommitted))
			e.truncateAll("orders", int64(e.snap.perPart+afterCycle/2))
			got := testenv.ConsumeAll(e.t, e.k.Brokers(), "orders", testenv.ReadCommitted)
			if len(got) >= len(e.snap.want) || len(got) < len(e.snap.atCycle) {
				e.t.Fatalf("after the truncation orders has %d of %d records", len(got), len(e.snap.want))
			}
			e.t.Logf("the truncation left %d of %d records of orders", len(got), len(e.snap.want))
		},
		after: func(e *docEnv, r *blockRun) {
			// PARTITION LIVE-END ARCHIVE-END CYCLE-RANGE REPLAY RECORDS STATE
			end := e.snap.perPart + afterCycle
			rows := regexp.MustCompile(fmt.Sprintf(`(?m)^orders/[0-2] +(\d+) +%d +- +(\d+)\.\.%d +(\d+) +replay$`, end, end-1)).FindAllStringSubmatch(r.cmds[0].stdout, -1)
			for _, m := range rows {
				if m[1] != m[2] || atoi(m[3]) != end-atoi(m[1]) {
					rows = nil
				}
			}
			if len(rows) != 3 || !strings.Contains(r.cmds[0].stdout, "dry run, nothing written") {
				e.t.Fatalf("repair --dry-run:\n%s", r.cmds[0].stdout)
			}
			sameRecords(e.t, "orders after the repair", e.snap.want, testenv.ConsumeAll(e.t, e.k.Brokers(), "orders", testenv.ReadCommitted))
		},
	},
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// firstN keeps the first n records of each partition.
func firstN(rs []testenv.Record, n int) []testenv.Record {
	seen := map[int32]int{}
	var out []testenv.Record
	for _, r := range rs {
		if seen[r.Partition] < n {
			out = append(out, r)
		}
		seen[r.Partition]++
	}
	return out
}

// imageRE is the first line of the Dockerfile: the image it builds.
var imageRE = regexp.MustCompile(`^# (\S+):((v\d+\.\d+\.\d+)(?:-[0-9A-Za-z.]+)?):`)

// checkImage checks the hooks' image: built on a base with a shell, pinned;
// the tools the configuration's hooks call installed; kbackup copied from
// ghcr.io/kbackup/kbackup at a pinned version (the same as the image's
// tag, which may add a build number: v0.1.0-1), run as its entrypoint by a
// non-root user.
func (s *snapState) checkImage(t *testing.T, text string, instrs []dockerInstr, configPath string) {
	t.Helper()
	m := imageRE.FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("the Dockerfile's first line does not name the image it builds: %q", strings.SplitN(text, "\n", 2)[0])
	}
	s.image, s.imageVersion = m[1]+":"+m[2], m[3]
	base := instrs[0].Args
	if strings.HasPrefix(base, "scratch") || strings.Contains(base, "distroless") || !strings.Contains(base, ":") || strings.HasSuffix(base, ":latest") {
		t.Fatalf("FROM %s: want a pinned base image with a shell", base)
	}
	cfg, err := snapshot.LoadConfig(configPath)
	if err != nil {
		t.Fatal(err)
	}
	provides := map[string]string{"ssh": "openssh-client"}
	var run string
	for _, in := range instrs {
		if in.Cmd == "RUN" {
			run += " " + in.Args + " "
		}
	}
	hooks := []snapshot.Hooks{cfg.Hooks}
	for _, b := range cfg.Brokers {
		hooks = append(hooks, b.Hooks)
	}
	for _, h := range hooks {
		for _, cmd := range []string{h.Stop, h.Start, h.Status} {
			if cmd == "" {
				continue
			}
			tool := strings.Fields(cmd)[0]
			if pkg, ok := provides[tool]; !ok || !strings.Contains(run, " "+pkg+" ") {
				t.Fatalf("the hooks call %s; the image installs no package known to provide it (%s)", tool, pkg)
			}
		}
	}
	if !strings.Contains(run, " ca-certificates ") {
		t.Fatal("the image has no CA certificates (S3 and EC2 over TLS)")
	}
	copyRE := regexp.MustCompile(`^--from=ghcr\.io/kbackup/kbackup:(v\d+\.\d+\.\d+) /kbackup (/\S+)$`)
	var dest, user string
	for _, in := range instrs {
		switch in.Cmd {
		case "COPY":
			if c := copyRE.FindStringSubmatch(in.Args); c != nil {
				if c[1] != s.imageVersion {
					t.Fatalf("COPY %s: kbackup %s into an image tagged %s", in.Args, c[1], s.imageVersion)
				}
				dest = c[2]
			}
		case "USER":
			user = in.Args
		case "ENTRYPOINT":
			if dest == "" || in.Args != `["`+dest+`"]` {
				t.Fatalf("ENTRYPOINT %s: want [%q] after COPY --from=ghcr.io/kbackup/kbackup:%s /kbackup", in.Args, dest, s.imageVersion)
			}
		}
	}
	if dest == "" || user == "" || strings.HasPrefix(user, "0") || strings.HasPrefix(user, "root") {
		t.Fatalf("want kbackup copied from ghcr.io/kbackup/kbackup:%s and a non-root USER (have %q, %q)", s.imageVersion, dest, user)
	}
	s.user = user
}

// checkCronJob checks the manifest beyond its run: the image the
// Dockerfile builds, pinned; the schedule and the job policies the text
// promises; the pod's user the image's; the ssh key where ssh looks.
func (s *snapState) checkCronJob(t *testing.T, cj *batchv1.CronJob) {
	t.Helper()
	spec := cj.Spec.JobTemplate.Spec
	pod := spec.Template.Spec
	c := pod.Containers[0]
	if s.image == "" || c.Image != s.image || strings.HasSuffix(c.Image, ":latest") {
		t.Fatalf("image %q: want the hooks' image %q, pinned to the kbackup version", c.Image, s.image)
	}
	if len(strings.Fields(cj.Spec.Schedule)) != 5 || cj.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent ||
		spec.BackoffLimit == nil || *spec.BackoffLimit != 0 || pod.RestartPolicy != "Never" {
		t.Fatalf("schedule %q, concurrency %s, backoffLimit %v, restartPolicy %s", cj.Spec.Schedule, cj.Spec.ConcurrencyPolicy, spec.BackoffLimit, pod.RestartPolicy)
	}
	sc := pod.SecurityContext
	if sc == nil || sc.RunAsUser == nil || sc.FSGroup == nil || fmt.Sprintf("%d:%d", *sc.RunAsUser, *sc.FSGroup) != s.user {
		t.Fatalf("pod securityContext %+v: want the image's user %s (and its group as fsGroup)", sc, s.user)
	}
	for _, v := range pod.Volumes {
		if v.Secret == nil {
			continue
		}
		for _, m := range c.VolumeMounts {
			if m.Name == v.Name && (m.MountPath != "/home/nonroot/.ssh" || v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o037 != 0) {
				t.Fatalf("ssh key volume %s at %s, mode %v: want ~/.ssh of the image's user, readable by no one else", v.Name, m.MountPath, v.Secret.DefaultMode)
			}
		}
	}
}
