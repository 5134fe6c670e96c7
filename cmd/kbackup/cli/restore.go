package cli

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/urfave/cli/v2"

	"github.com/kbackup/kbackup/internal/logrange"
	"github.com/kbackup/kbackup/internal/topicsel"
	"github.com/kbackup/kbackup/kafkaconn"
	"github.com/kbackup/kbackup/restore"
	"github.com/kbackup/kbackup/store"
)

func restoreCommand() *cli.Command {
	return &cli.Command{
		Name:  "restore",
		Usage: "replay archived topics into a Kafka cluster and move consumer groups",
		Description: "Restores the selected topics, partitions and offset/time range from the archive into the\n" +
			"cluster at --brokers (the same or another one, renamed or not). TIME is RFC 3339, a date\n" +
			"(UTC midnight), unix milliseconds, now, or relative to now (-2h, -7d; resolved once, at start:\n" +
			"to resume, rerun with the absolute times the first run logged): --to T restores each partition's log prefix up to T (all offsets before the first\n" +
			"record whose timestamp is after T); --from T starts at the first offset with timestamp >= T.\n" +
			"Missing target topics are created with the archived partition count and configs; a target\n" +
			"partition that already holds records is refused unless --append. --groups moves the matching\n" +
			"consumer groups (offsets as captured at or before the end time) to the translated offsets.\n" +
			"The offset map is stored under restores/<restore-id>/ in the store (and --offset-map FILE).\n" +
			"Interrupted restores resume: run the same command again. A rerun of a complete restore writes\n" +
			"nothing and moves no group it moved before. While a restore runs, the same command refuses to\n" +
			"start (naming the process); with --join it shares the partitions instead: several processes, on\n" +
			"several machines, each take free partitions, and take over those of a process that died.\n" +
			"--dry-run prints the plan (per partition offsets, times, records; groups with translated offsets)\n" +
			"and every item the real run would refuse, with why: exit status 0 when the plan is runnable,\n" +
			"5 when the real run would refuse it. --json prints the plan (or the final report) as JSON.\n\n" +
			"--since-cycle ID (with --snapshot-config FILE or --cluster NAME) rolls a cluster restored from that\n" +
			"snapshot cycle forward: per partition, the archived records from the live log end up to --to are\n" +
			"produced into the same topic and partition, where they land at their original offsets.\n" +
			"--repair appends to live partitions the archived records they lost (a log that ends before the\n" +
			"archive's end, same topic id). Both refuse partitions whose offsets would not line up, stop before\n" +
			"archive gaps (a producer cannot create offset holes) and continue where they stopped when run again.",
		Flags: append(append(globalFlags(), kafkaFlags()...),
			&cli.StringFlag{Name: "topics", Usage: "restore archived topics whose whole name matches `REGEX` (required; '.*' for all but internal ones)"},
			&cli.StringSliceFlag{Name: "exclude", Usage: "skip topics whose whole name matches `REGEX` (repeatable)"},
			&cli.StringFlag{Name: "partitions", Usage: "only these partition numbers, a comma-separated `LIST` (default: all)"},
			&cli.StringFlag{Name: "from", Usage: "start at the first offset whose timestamp is >= `TIME`"},
			&cli.StringFlag{Name: "to", Usage: "stop before the first record whose timestamp is after `TIME`"},
			&cli.Int64Flag{Name: "from-offset", Usage: "first `OFFSET` (inclusive)"},
			&cli.Int64Flag{Name: "to-offset", Usage: "last `OFFSET` (inclusive)"},
			&cli.StringSliceFlag{Name: "rename", Usage: "restore topic SRC as DST, `SRC=DST` (repeatable)"},
			&cli.IntFlag{Name: "replication-factor", Usage: "replication factor `N` of created topics (default: the archived one)"},
			&cli.BoolFlag{Name: "append", Usage: "restore into target partitions that already hold records, after them"},
			&cli.BoolFlag{Name: "repartition", Usage: "spread records over the target's partitions by key (murmur2, Kafka's default)"},
			&cli.StringFlag{Name: "groups", Usage: "move consumer groups whose whole name matches `REGEX` to the translated offsets"},
			&cli.BoolFlag{Name: "force", Usage: "move groups even if they have active members in the target"},
			&cli.StringFlag{Name: "offset-map", Usage: "also write the offset map (JSON) to `FILE`"},
			&cli.BoolFlag{Name: "dry-run", Usage: "print the plan and write nothing"},
			&cli.StringFlag{Name: "restore-id", Usage: "name of the restore `ID` (default: derived from the request and the target cluster)"},
			&cli.IntFlag{Name: "concurrency", Value: restore.DefaultConcurrency, Usage: "restore `N` partitions in parallel"},
			&cli.StringFlag{Name: "producer", Value: restore.ProducerDirect, Usage: "how records are written: `direct` (record batches built from the archive, one produce request each, idempotent) or franz-go (franz-go's producer, a record at a time; about twice the CPU); --repartition always uses franz-go"},
			&cli.BoolFlag{Name: "join", Usage: "share this restore with other processes running it (same arguments, e.g. on other machines) instead of refusing to start"},
			&cli.DurationFlag{Name: "lease-duration", Value: restore.DefaultLeaseDuration, Usage: "take a partition over from a process that stopped renewing its lease for `DURATION`"},
			&cli.DurationFlag{Name: "max-clock-skew", Value: restore.DefaultMaxClockSkew, Usage: "assumed bound on the clock difference between processes sharing a restore, `DURATION`"},
			jsonFlag(),
			&cli.StringFlag{Name: "since-cycle", Usage: "roll forward a cluster restored from snapshot cycle `ID`: replay the archive after the cycle into the same partitions, at the original offsets"},
			&cli.StringFlag{Name: "snapshot-config", Usage: "with --since-cycle: the snapshot job's configuration `FILE` (its cluster name and store locate the cycle)"},
			&cli.StringFlag{Name: "cluster", Usage: "with --since-cycle: the snapshot cluster `NAME` whose cycles are in --store (instead of --snapshot-config)"},
			&cli.BoolFlag{Name: "repair", Usage: "append the archived records that live partitions lost (log ends before the archive's), at their original offsets"},
		),
		Action: runRestore,
	}
}

func offsetsCommand() *cli.Command {
	return &cli.Command{
		Name:  "offsets",
		Usage: "consumer-group offset tools",
		Subcommands: []*cli.Command{{
			Name:  "translate",
			Usage: "move consumer groups to the offsets translated by a finished restore",
			Description: "Reads a restore's offset map (stored under --restore-id, or --offset-map FILE), takes the\n" +
				"matching groups' offsets from the archive's capture at or before the restore's end time (or\n" +
				"--at TIME) and commits the translated offsets in the cluster at --brokers. A group that the\n" +
				"restore (or an earlier translate) moved already is left alone, so that its consumers' commits\n" +
				"since are kept: --again moves it once more.",
			Flags: append(append(globalFlags(), kafkaFlags()...),
				&cli.StringFlag{Name: "restore-id", Usage: "the restore `ID` whose stored offset map to use"},
				&cli.StringFlag{Name: "offset-map", Usage: "read the offset map from `FILE` instead"},
				&cli.StringFlag{Name: "groups", Usage: "groups whose whole name matches `REGEX` (required)"},
				&cli.StringFlag{Name: "at", Usage: "use the group capture at or before `TIME` (default: the restore's end time)"},
				&cli.BoolFlag{Name: "force", Usage: "move groups even if they have active members"},
				&cli.BoolFlag{Name: "again", Usage: "also move groups this restore moved before (their consumers' commits since are overwritten)"},
				&cli.BoolFlag{Name: "dry-run", Usage: "print the translated offsets, commit nothing"},
				jsonFlag(),
				helpFlag(),
			),
			OnUsageError: onUsageError,
			HideHelp:     true,
			Before:       noArgs,
			Action:       runOffsetsTranslate,
		}},
	}
}

// logRelativeTimes says which absolute times relative --from/--to values
// (now, -2h) resolved to: a rerun must use those to resume the same restore.
func logRelativeTimes(c *cli.Context, s *session, r logrange.Range) {
	for _, f := range []struct {
		flag string
		set  bool
		ms   int64
	}{{"from", r.HasFromTime, r.FromTime}, {"to", r.HasToTime, r.ToTime}} {
		if v := c.String(f.flag); f.set && logrange.IsRelative(v) {
			s.log.Info("relative time resolved: to resume this restore, rerun it with the absolute time", "flag", "--"+f.flag, "given", v,
				"resolved", logrange.FormatTime(f.ms))
		}
	}
}

// restoreTopics compiles --topics (required) and --exclude under the one
// topic selection rule (package topicsel).
func restoreTopics(c *cli.Context) (*topicsel.Selector, error) {
	expr := c.String("topics")
	if expr == "" {
		return nil, usagef(c, "which topics? use --topics REGEX ('.*' restores every archived topic but internal ones)")
	}
	sel, err := topicsel.Compile([]string{expr}, c.StringSlice("exclude"))
	if err != nil {
		return nil, usagef(c, "--topics/--exclude: %v", err)
	}
	return sel, nil
}

// partitionsFlag parses --partitions (nil: every partition).
func partitionsFlag(c *cli.Context) ([]int32, error) {
	var out []int32
	if p := c.String("partitions"); p != "" {
		for _, s := range splitList(p) {
			n, err := strconv.ParseInt(s, 10, 32)
			if err != nil || n < 0 {
				return nil, usagef(c, "--partitions: %q is not a partition number", s)
			}
			out = append(out, int32(n))
		}
	}
	return out, nil
}

// runFlags parses --concurrency, --lease-duration and --max-clock-skew,
// which restores and replays share.
func runFlags(c *cli.Context) (concurrency int, leaseDuration, maxSkew time.Duration, err error) {
	if concurrency = c.Int("concurrency"); concurrency < 0 {
		return 0, 0, 0, usagef(c, "--concurrency %d is negative", concurrency)
	}
	leaseDuration, maxSkew = c.Duration("lease-duration"), c.Duration("max-clock-skew")
	if leaseDuration < time.Second {
		return 0, 0, 0, usagef(c, "--lease-duration %s: use at least 1s", leaseDuration)
	}
	if maxSkew < 0 {
		return 0, 0, 0, usagef(c, "--max-clock-skew %s is negative", maxSkew)
	}
	return concurrency, leaseDuration, maxSkew, nil
}

// restoreOptions maps the restore flags onto restore.Options (without the
// store and the Kafka connection).
func restoreOptions(c *cli.Context) (restore.Options, error) {
	var o restore.Options
	var err error
	if o.Topics, err = restoreTopics(c); err != nil {
		return o, err
	}
	if o.Partitions, err = partitionsFlag(c); err != nil {
		return o, err
	}
	if o.Range, err = catRange(c); err != nil {
		return o, err
	}
	r := o.Range
	if r.HasFromTime && r.HasToTime && r.ToTime < r.FromTime {
		return o, usagef(c, "--to %s is before --from %s", c.String("to"), c.String("from"))
	}
	if r.HasToOffset && r.ToOffset < r.FromOffset {
		return o, usagef(c, "--to-offset %d is before --from-offset %d", r.ToOffset, r.FromOffset)
	}
	o.Rename = map[string]string{}
	for _, rn := range c.StringSlice("rename") {
		if err := restore.ParseRename(o.Rename, rn); err != nil {
			return o, usagef(c, "--rename: %v", err)
		}
	}
	if rf := c.Int("replication-factor"); rf < 0 || rf > 32767 {
		return o, usagef(c, "--replication-factor %d out of range", rf)
	} else {
		o.ReplicationFactor = int16(rf)
	}
	if g := c.String("groups"); g != "" {
		if o.Groups, err = topicsel.Anchored(g); err != nil {
			return o, usagef(c, "--groups: %v", err)
		}
	}
	if o.Concurrency, o.LeaseDuration, o.MaxClockSkew, err = runFlags(c); err != nil {
		return o, err
	}
	o.Append, o.Repartition, o.Force, o.DryRun = c.Bool("append"), c.Bool("repartition"), c.Bool("force"), c.Bool("dry-run")
	o.OffsetMapFile, o.ID, o.Join = c.String("offset-map"), c.String("restore-id"), c.Bool("join")
	switch o.Producer = c.String("producer"); o.Producer {
	case restore.ProducerDirect, restore.ProducerFranz:
	default:
		return o, usagef(c, "--producer %q: use %s or %s", o.Producer, restore.ProducerDirect, restore.ProducerFranz)
	}
	return o, nil
}

// targetClient connects to --brokers, failing fast when unreachable.
func targetClient(c *cli.Context, s *session) ([]kgo.Opt, error) {
	ko, err := kafkaOptions(c, s)
	if err != nil {
		return nil, err
	}
	kopts, err := ko.ClientOpts(c.Context)
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	err = kafkaconn.Ping(c.Context, cl)
	cl.Close()
	return kopts, err
}

func runRestore(c *cli.Context) error {
	s, err := setup(c)
	if err != nil {
		return err
	}
	if c.String("since-cycle") != "" || c.Bool("repair") {
		return runReplayCmd(c, s)
	}
	o, err := restoreOptions(c)
	if err != nil {
		return err
	}
	logRelativeTimes(c, s, o.Range)
	for _, f := range []string{"snapshot-config", "cluster"} {
		if c.String(f) != "" {
			return usagef(c, "--%s is only used with --since-cycle", f)
		}
	}
	if s.g.store == "" {
		return usagef(c, "no archive given: use --store URL or %s (file:///abs/dir or s3://bucket/prefix)", EnvVar(flagStore))
	}
	if o.KafkaOpts, err = targetClient(c, s); err != nil {
		return err
	}
	if o.Store, err = openArchiveStore(c, s); err != nil {
		return err
	}
	o.Logger, o.Version = s.log, "kbackup "+Version
	if isTerminal(s.stderr) {
		o.Progress = s.stderr
	}
	// The restore's heap is bounded: let it grow to the bound before the
	// garbage collector runs (restore.TuneGC; GOGC or GOMEMLIMIT in the
	// environment take precedence).
	stopGC := restore.TuneGC(o)
	sum, err := restore.Run(c.Context, o)
	stopGC()
	if sum != nil {
		var werr error
		switch {
		case c.Bool("json") && sum.DryRun:
			werr = writeJSON(s.stdout, struct {
				Schema string `json:"schema"`
				*restore.Plan
			}{"kbackup.restore-plan/v1", sum.Plan})
		case c.Bool("json"):
			werr = writeJSON(s.stdout, sum.JSONReport())
		case sum.DryRun:
			werr = sum.Plan.WritePlan(s.stdout)
		default:
			werr = sum.WriteReport(s.stdout)
		}
		if werr != nil && err == nil {
			return werr
		}
		if err == nil && sum.DryRun && len(sum.Plan.Refusals) > 0 {
			return &exitError{code: ExitRefused, err: fmt.Errorf("dry run of restore %s: the real run would refuse %d item(s) (listed with the plan); nothing was written",
				sum.RestoreID, len(sum.Plan.Refusals))}
		}
	}
	if err != nil {
		return err // restore.Run names the restore and what failed
	}
	return nil
}

// openArchiveStore opens --store for a restore, refusing a local
// directory that does not exist (rather than creating it).
func openArchiveStore(c *cli.Context, s *session) (store.Store, error) {
	a, err := openArchive(c.Context, c, s)
	if err != nil {
		return nil, err
	}
	return a.Store(), nil
}

func runOffsetsTranslate(c *cli.Context) error {
	s, err := setup(c)
	if err != nil {
		return err
	}
	o := restore.TranslateOptions{RestoreID: c.String("restore-id"), OffsetMapFile: c.String("offset-map"),
		Force: c.Bool("force"), Again: c.Bool("again"), DryRun: c.Bool("dry-run"), Logger: s.log}
	if o.RestoreID == "" && o.OffsetMapFile == "" {
		return usagef(c, "which restore? use --restore-id ID or --offset-map FILE")
	}
	g := c.String("groups")
	if g == "" {
		return usagef(c, "which groups? use --groups REGEX")
	}
	if o.Groups, err = topicsel.Anchored(g); err != nil {
		return usagef(c, "--groups: %v", err)
	}
	if at := c.String("at"); at != "" {
		if o.AtMs, err = logrange.ParseTime(at); err != nil {
			return usagef(c, "--at: %v", err)
		}
	}
	if o.KafkaOpts, err = targetClient(c, s); err != nil {
		return err
	}
	if o.Store, err = openArchiveStore(c, s); err != nil {
		return err
	}
	res, err := restore.TranslateGroups(c.Context, o)
	if c.Bool("json") {
		doc := translateDoc{Schema: "kbackup.offsets-translate/v1", RestoreID: o.RestoreID, DryRun: o.DryRun, Groups: []translateGroupDoc{}}
		for _, g := range res {
			gd := translateGroupDoc{GroupResult: g}
			if g.Err != nil {
				gd.Error = g.Err.Error()
			}
			doc.Groups = append(doc.Groups, gd)
		}
		if jerr := writeJSON(s.stdout, doc); jerr != nil && err == nil {
			err = jerr
		}
		if err != nil {
			return fmt.Errorf("offsets translate: %w", err)
		}
		return nil
	}
	for _, g := range res {
		state := g.State
		switch {
		case g.Err != nil:
			state = "FAILED: " + g.Err.Error()
		case g.State == restore.GroupMoved:
			state = "committed"
		case g.State == restore.GroupWouldMove:
			state = "would commit (dry run)"
		case g.State == restore.GroupAlready || g.State == restore.GroupSuperseded:
			state += " by restore " + translateID(o) + ": not moved again (--again moves it)"
		}
		fmt.Fprintf(s.stdout, "group %s: %s\n", g.Group, state)
		for _, t := range g.Offsets {
			fmt.Fprintf(s.stdout, "  %s/%d offset %d -> %s/%d offset %d (committed there now: %s)\n", t.SourceTopic, t.Partition, t.SourceOffset,
				t.TargetTopic, t.TargetPartition, t.TargetOffset, offsetText(t.From))
		}
	}
	if err != nil {
		return fmt.Errorf("offsets translate: %w", err)
	}
	return nil
}

// translateDoc is what `offsets translate --json` prints.
type translateDoc struct {
	Schema    string              `json:"schema"` // kbackup.offsets-translate/v1
	RestoreID string              `json:"restore_id,omitempty"`
	DryRun    bool                `json:"dry_run"`
	Groups    []translateGroupDoc `json:"groups"`
}

type translateGroupDoc struct {
	restore.GroupResult
	Error string `json:"error,omitempty"`
}

func translateID(o restore.TranslateOptions) string {
	if o.RestoreID != "" {
		return o.RestoreID
	}
	return "(of " + o.OffsetMapFile + ")"
}

func offsetText(o int64) string {
	if o < 0 {
		return "none"
	}
	return strconv.FormatInt(o, 10)
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
