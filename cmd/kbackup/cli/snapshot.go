package cli

import (
	"bufio"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kbackup/kbackup/internal/units"
	"github.com/kbackup/kbackup/snapshot"
	snapsetup "github.com/kbackup/kbackup/snapshot/setup"
)

// snapshotCommand is `kbackup snapshot run|list|restore|prune --config FILE`.
func snapshotCommand() *cli.Command {
	cfgFlag := func() cli.Flag {
		return &cli.StringFlag{Name: "config", Usage: "snapshot job configuration `FILE` (YAML, see docs/OPERATIONS.md)"}
	}
	sub := []*cli.Command{
		{
			Name:  "run",
			Usage: "run one snapshot cycle of every broker (exit 0 only when the cycle is complete)",
			Flags: []cli.Flag{cfgFlag(), jsonFlag(),
				&cli.StringFlag{Name: "mode", Usage: "`MODE`: cold, rolling or hot (default: the configuration's mode)"}},
			Action: runSnapshotRun,
		},
		{
			Name:   "list",
			Usage:  "list the cluster's snapshot cycles: id, state, age, size, mode",
			Flags:  []cli.Flag{cfgFlag(), jsonFlag()},
			Action: runSnapshotList,
		},
		{
			Name:  "restore",
			Usage: "restore the whole cluster from one complete cycle (stop all, restore all volumes, start all)",
			Flags: []cli.Flag{cfgFlag(), jsonFlag(),
				&cli.StringFlag{Name: "cycle", Usage: "the cycle `ID` to restore (see snapshot list)"},
				&cli.BoolFlag{Name: "dry-run", Usage: "print the plan and change nothing"}},
			Action: runSnapshotRestore,
		},
		{
			Name:  "prune",
			Usage: "delete cycles outside the retention rules (nothing without --confirm; never the newest complete cycle)",
			Flags: []cli.Flag{cfgFlag(), jsonFlag(),
				&cli.BoolFlag{Name: "confirm", Usage: "really delete"},
				&cli.IntFlag{Name: "keep-last", Usage: "keep the newest `N` complete cycles (overrides retention.keep_last)"},
				&cli.StringFlag{Name: "max-age", Usage: "keep complete cycles younger than `AGE` (e.g. 30d; overrides retention.max_age)"}},
			Action: runSnapshotPrune,
		},
	}
	for _, c := range sub {
		c.HideHelp, c.HideHelpCommand = true, true
		c.OnUsageError = onUsageError
		c.Flags = append(append(c.Flags, globalFlags()...), helpFlag())
		c.Before = noArgs
	}
	return &cli.Command{
		Name:  "snapshot",
		Usage: "coordinated volume snapshot cycles of every broker, and whole-cluster restore",
		Description: "The snapshot job (run it from cron, a Kubernetes CronJob or a systemd timer).\n" +
			"Exit status 0: done; 1: failed (one line on stderr says why; brokers that were\n" +
			"stopped have been started again). docs/OPERATIONS.md documents the configuration.",
		Subcommands: sub,
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return &usageError{cmd: "kbackup snapshot", err: fmt.Errorf("unknown command %q: use run, list, restore or prune", c.Args().First())}
			}
			return cli.ShowSubcommandHelp(c)
		},
	}
}

// snapshotSession loads the configuration and opens what the job needs.
func snapshotSession(c *cli.Context, withCluster bool) (*session, snapshot.Env, func(), error) {
	s, err := setup(c)
	if err != nil {
		return nil, snapshot.Env{}, nil, err
	}
	path := c.String("config")
	if path == "" {
		return nil, snapshot.Env{}, nil, usagef(c, "no configuration given: use --config FILE or %s", EnvVar("config"))
	}
	cfg, err := snapshot.LoadConfig(path)
	if err != nil {
		return nil, snapshot.Env{}, nil, err
	}
	env, closeFn, err := snapsetup.Env(c.Context, cfg, s.log, withCluster)
	if err != nil {
		return nil, snapshot.Env{}, nil, err
	}
	return s, env, closeFn, nil
}

func runSnapshotRun(c *cli.Context) error {
	s, env, closeFn, err := snapshotSession(c, true)
	if err != nil {
		return err
	}
	defer closeFn()
	mode := snapshot.Mode(c.String("mode"))
	if mode != "" && !mode.Valid() {
		return usagef(c, "invalid --mode %q: use cold, rolling or hot", mode)
	}
	rec, err := snapshot.Run(c.Context, snapshot.RunOptions{Env: env, Mode: mode})
	if rec != nil && c.Bool("json") {
		if jerr := writeJSON(s.stdout, snapshotRunDoc{Schema: "kbackup.snapshot-run/v1", Cycle: rec}); err == nil {
			err = jerr
		}
		return err
	}
	if rec != nil {
		fmt.Fprintf(s.stdout, "cycle %s %s: mode %s, %d brokers, %d snapshots, %s, took %s\n", rec.ID, rec.State, rec.Mode,
			len(rec.Brokers), len(rec.Snaps()), units.Bytes(rec.Bytes()), rec.Finished.Sub(rec.Started).Round(time.Second))
	}
	return err
}

func runSnapshotList(c *cli.Context) error {
	s, env, closeFn, err := snapshotSession(c, false)
	if err != nil {
		return err
	}
	defer closeFn()
	infos, err := snapshot.List(c.Context, snapshot.ListOptions{Env: env})
	if err != nil {
		return err
	}
	if c.Bool("json") {
		doc := snapshotListDoc{Schema: "kbackup.snapshot-list/v1", Cycles: []snapshotCycleDoc{}}
		for i := len(infos) - 1; i >= 0; i-- { // newest first, as the table
			in := infos[i]
			doc.Cycles = append(doc.Cycles, snapshotCycleDoc{ID: in.ID, State: in.State, Mode: string(in.Mode), StartedMs: in.Started.UnixMilli(),
				AgeSeconds: int64(in.Age.Seconds()), Bytes: in.Bytes, Snapshots: in.Snapshots, Reason: in.Reason})
		}
		return writeJSON(s.stdout, doc)
	}
	w := tabwriter.NewWriter(s.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "CYCLE\tSTATE\tMODE\tSTARTED\tAGE\tSIZE\tSNAPSHOTS\tREASON")
	for i := len(infos) - 1; i >= 0; i-- { // newest first
		in := infos[i]
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", in.ID, in.State, in.Mode, in.Started.UTC().Format(time.RFC3339),
			humanAge(in.Age), units.Bytes(in.Bytes), in.Snapshots, in.Reason)
	}
	return w.Flush()
}

// snapshotRunDoc is what `snapshot run --json` prints: the cycle record as
// stored (docs/FORMAT.md, Snapshot cycles).
type snapshotRunDoc struct {
	Schema string                `json:"schema"` // kbackup.snapshot-run/v1
	Cycle  *snapshot.CycleRecord `json:"cycle"`
}

// snapshotRestoreDoc is what `snapshot restore --json` prints: the
// restore report as stored (or the plan of a dry run).
type snapshotRestoreDoc struct {
	Schema string                  `json:"schema"` // kbackup.snapshot-restore/v1
	DryRun bool                    `json:"dry_run"`
	Report string                  `json:"report"` // the report's store key (not written in a dry run)
	Result *snapshot.RestoreResult `json:"result"`
}

// snapshotPruneDoc is what `snapshot prune --json` prints.
type snapshotPruneDoc struct {
	Schema  string                  `json:"schema"` // kbackup.snapshot-prune/v1
	Confirm bool                    `json:"confirm"`
	Cycles  []snapshotPruneDecision `json:"cycles"`
}

type snapshotPruneDecision struct {
	ID     string `json:"id"`
	State  string `json:"state"`
	Delete bool   `json:"delete"` // deleted (with confirm) or would be
	Why    string `json:"why"`
}

// snapshotListDoc is what `snapshot list --json` prints.
type snapshotListDoc struct {
	Schema string             `json:"schema"` // kbackup.snapshot-list/v1
	Cycles []snapshotCycleDoc `json:"cycles"` // newest first
}

type snapshotCycleDoc struct {
	ID         string `json:"id"`
	State      string `json:"state"` // pending, complete, failed
	Mode       string `json:"mode"`
	StartedMs  int64  `json:"started_ms"`
	AgeSeconds int64  `json:"age_seconds"`
	Bytes      int64  `json:"bytes"`
	Snapshots  int    `json:"snapshots"`
	Reason     string `json:"reason,omitempty"` // why a cycle failed
}

func runSnapshotRestore(c *cli.Context) error {
	id := c.String("cycle")
	if id == "" {
		return usagef(c, "--cycle ID is required (see kbackup snapshot list)")
	}
	dry := c.Bool("dry-run")
	s, env, closeFn, err := snapshotSession(c, !dry)
	if err != nil {
		return err
	}
	defer closeFn()
	res, err := snapshot.Restore(c.Context, snapshot.RestoreOptions{Env: env, Cycle: id, DryRun: dry})
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return writeJSON(s.stdout, snapshotRestoreDoc{Schema: "kbackup.snapshot-restore/v1", DryRun: dry,
			Report: snapshot.RestoreKey(env.Config.Cluster, res.ID), Result: res})
	}
	w := bufio.NewWriter(s.stdout)
	if dry {
		fmt.Fprintln(w, "plan (dry run, nothing changed):")
		for i, l := range res.Plan {
			fmt.Fprintf(w, "  %d. %s\n", i+1, l)
		}
		return w.Flush()
	}
	fmt.Fprintf(w, "restored cycle %s (report %s); high watermarks served:\n", res.CycleID, snapshot.RestoreKey(env.Config.Cluster, res.ID))
	topics := make([]string, 0, len(res.HighWatermarks))
	for t := range res.HighWatermarks {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	for _, t := range topics {
		parts := make([]string, 0, len(res.HighWatermarks[t]))
		for p, o := range res.HighWatermarks[t] {
			parts = append(parts, fmt.Sprintf("%s=%d", p, o))
		}
		sort.Strings(parts)
		fmt.Fprintf(w, "  %s %s\n", t, strings.Join(parts, " "))
	}
	for _, m := range res.Mismatches {
		fmt.Fprintf(w, "  MISMATCH %s\n", m)
	}
	return w.Flush()
}

func runSnapshotPrune(c *cli.Context) error {
	s, env, closeFn, err := snapshotSession(c, false)
	if err != nil {
		return err
	}
	defer closeFn()
	o := snapshot.PruneOptions{Env: env, Confirm: c.Bool("confirm"), KeepLast: c.Int("keep-last")}
	if v := c.String("max-age"); v != "" {
		if o.MaxAge, err = snapshot.ParseDuration(v); err != nil {
			return usagef(c, "--max-age: %v", err)
		}
	}
	ds, err := snapshot.Prune(c.Context, o)
	if c.Bool("json") {
		doc := snapshotPruneDoc{Schema: "kbackup.snapshot-prune/v1", Confirm: o.Confirm, Cycles: []snapshotPruneDecision{}}
		for _, d := range ds {
			doc.Cycles = append(doc.Cycles, snapshotPruneDecision{ID: d.ID, State: d.State, Delete: d.Delete, Why: d.Why})
		}
		if jerr := writeJSON(s.stdout, doc); err == nil {
			err = jerr
		}
		return err
	}
	w := bufio.NewWriter(s.stdout)
	n := 0
	for _, d := range ds {
		verb := "keep  "
		if d.Delete {
			n++
			verb = "delete"
			if !o.Confirm {
				verb = "would delete"
			}
		}
		fmt.Fprintf(w, "%s %s (%s): %s\n", verb, d.ID, d.State, d.Why)
	}
	if !o.Confirm && n > 0 {
		fmt.Fprintf(w, "%d cycle(s) would be deleted; run again with --confirm to delete them\n", n)
	}
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	return err
}

func humanAge(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	case d >= time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return d.Round(time.Second).String()
	}
}
