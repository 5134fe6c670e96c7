package cli

import (
	"github.com/urfave/cli/v2"

	"github.com/kbackup/kbackup/restore"
	"github.com/kbackup/kbackup/snapshot"
	snapsetup "github.com/kbackup/kbackup/snapshot/setup"
	"github.com/kbackup/kbackup/store"
)

// runReplayCmd is `kbackup restore --since-cycle ID` (roll-forward) and
// `kbackup restore --repair`: o holds the parsed restore flags.
func runReplayCmd(c *cli.Context, s *session, o restore.Options) error {
	cycleID, repair := c.String("since-cycle"), c.Bool("repair")
	switch {
	case cycleID != "" && repair:
		return usagef(c, "--since-cycle and --repair cannot be used together")
	case len(o.Rename) > 0:
		return usagef(c, "--rename cannot be used with --since-cycle or --repair: records go back into the topics they were archived from")
	case o.Repartition:
		return usagef(c, "--repartition cannot be used with --since-cycle or --repair: records must land at their original partitions and offsets")
	case o.Groups != nil:
		return usagef(c, "--groups is not needed with --since-cycle or --repair: offsets are unchanged, consumer groups need no translation")
	case o.Append:
		return usagef(c, "--append is implied by --since-cycle and --repair")
	case o.Range.HasFromTime || o.Range.FromOffset != 0:
		return usagef(c, "--from and --from-offset cannot be used with --since-cycle or --repair: the replay starts at each partition's live end")
	case o.OffsetMapFile != "" || o.ID != "":
		return usagef(c, "--offset-map and --restore-id are not used with --since-cycle or --repair: offsets are unchanged and the live log end is the checkpoint")
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
		var err error
		if cycle, err = loadRollForwardCycle(c, s, cycleID); err != nil {
			return err
		}
	}
	var err error
	if o.KafkaOpts, err = targetClient(c, s); err != nil {
		return err
	}
	if o.Store, err = openArchiveStore(c, s); err != nil {
		return err
	}
	o.Logger, o.Version = s.log, "kbackup "+Version
	var sum *restore.ReplaySummary
	if cycle != nil {
		sum, err = restore.RollForward(c.Context, o, cycle)
	} else {
		sum, err = restore.Repair(c.Context, o)
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
