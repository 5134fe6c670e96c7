package cli

import (
	"github.com/urfave/cli/v2"

	"github.com/kbackup/kbackup/replay"
	"github.com/kbackup/kbackup/snapshot"
	snapsetup "github.com/kbackup/kbackup/snapshot/setup"
	"github.com/kbackup/kbackup/store"
)

// replayRefusal reports the restore flags that --since-cycle and --repair
// do not accept (replay.Options has no field for them), saying why.
func replayRefusal(c *cli.Context) error {
	switch {
	case len(c.StringSlice("rename")) > 0:
		return usagef(c, "--rename cannot be used with --since-cycle or --repair: records go back into the topics they were archived from")
	case c.Bool("repartition"):
		return usagef(c, "--repartition cannot be used with --since-cycle or --repair: records must land at their original partitions and offsets")
	case c.String("groups") != "":
		return usagef(c, "--groups is not needed with --since-cycle or --repair: offsets are unchanged, consumer groups need no translation")
	case c.Bool("append"):
		return usagef(c, "--append is implied by --since-cycle and --repair")
	case c.String("from") != "" || c.Int64("from-offset") != 0:
		return usagef(c, "--from and --from-offset cannot be used with --since-cycle or --repair: the replay starts at each partition's live end")
	case c.String("offset-map") != "" || c.String("restore-id") != "":
		return usagef(c, "--offset-map and --restore-id are not used with --since-cycle or --repair: offsets are unchanged and the live log end is the checkpoint")
	}
	return nil
}

// replayOptions maps the flags of --since-cycle and --repair onto
// replay.Options (without the store and the Kafka connection).
func replayOptions(c *cli.Context, s *session) (replay.Options, error) {
	var o replay.Options
	if err := replayRefusal(c); err != nil {
		return o, err
	}
	var err error
	if o.Topics, err = restoreTopics(c); err != nil {
		return o, err
	}
	if o.Partitions, err = partitionsFlag(c); err != nil {
		return o, err
	}
	r, err := catRange(c)
	if err != nil {
		return o, err
	}
	logRelativeTimes(c, s, r)
	o.ToOffset, o.HasToOffset, o.ToTime, o.HasToTime = r.ToOffset, r.HasToOffset, r.ToTime, r.HasToTime
	if o.Concurrency, o.LeaseDuration, o.MaxClockSkew, err = runFlags(c); err != nil {
		return o, err
	}
	o.DryRun = c.Bool("dry-run")
	return o, nil
}

// runReplayCmd is `kbackup restore --since-cycle ID` (roll-forward) and
// `kbackup restore --repair`.
func runReplayCmd(c *cli.Context, s *session) error {
	cycleID, repair := c.String("since-cycle"), c.Bool("repair")
	if cycleID != "" && repair {
		return usagef(c, "--since-cycle and --repair cannot be used together")
	}
	o, err := replayOptions(c, s)
	if err != nil {
		return err
	}
	if repair && (c.String("snapshot-config") != "" || c.String("cluster") != "") {
		return usagef(c, "--snapshot-config and --cluster are only used with --since-cycle")
	}
	if s.g.store == "" {
		return usagef(c, "no archive given: use --store URL or %s (file:///abs/dir or s3://bucket/prefix)", EnvVar(flagStore))
	}
	var cycle *snapshot.CycleRecord
	if cycleID != "" {
		if !snapshot.ValidCycleID(cycleID) {
			return usagef(c, "--since-cycle %q is not a cycle id (see kbackup snapshot list)", cycleID)
		}
		if cycle, err = loadRollForwardCycle(c, s, cycleID); err != nil {
			return err
		}
	}
	if o.KafkaOpts, err = targetClient(c, s); err != nil {
		return err
	}
	if o.Store, err = openArchiveStore(c, s); err != nil {
		return err
	}
	o.Logger, o.Version = s.log, "kbackup "+Version
	var sum *replay.Summary
	if cycle != nil {
		sum, err = replay.RollForward(c.Context, o, cycle)
	} else {
		sum, err = replay.Repair(c.Context, o)
	}
	if sum != nil {
		if werr := sum.WriteReport(s.stdout); werr != nil && err == nil {
			return werr
		}
	}
	return err
}

// loadRollForwardCycle finds the cycle: in the store of the snapshot job's
// configuration (--snapshot-config), or under --cluster NAME in --store. It
// must be complete and of that cluster.
func loadRollForwardCycle(c *cli.Context, s *session, id string) (*snapshot.CycleRecord, error) {
	cfgPath, cluster := c.String("snapshot-config"), c.String("cluster")
	var st store.Store
	switch {
	case cfgPath != "" && cluster != "":
		return nil, usagef(c, "use --snapshot-config FILE or --cluster NAME, not both")
	case cfgPath != "":
		cfg, err := snapshot.LoadConfig(cfgPath)
		if err != nil {
			return nil, err
		}
		cluster = cfg.Cluster
		if st, err = snapsetup.Store(c.Context, cfg); err != nil {
			return nil, err
		}
	case cluster != "":
		var err error
		if st, err = openArchiveStore(c, s); err != nil {
			return nil, err
		}
	default:
		return nil, usagef(c, "--since-cycle needs the snapshot job's --snapshot-config FILE, or --cluster NAME when its cycles are in --store")
	}
	rec, err := snapshot.LoadCycle(c.Context, st, cluster, id)
	if err != nil {
		return nil, err
	}
	if err := rec.Restorable(cluster); err != nil {
		return nil, err
	}
	return rec, nil
}
