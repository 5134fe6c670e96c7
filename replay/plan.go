package replay

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/kbackup/kbackup/internal/logrange"
	"github.com/kbackup/kbackup/internal/target"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
)

// plan fills sum.Partitions; problems are refusals (nothing is written
// when there is any).
func (rp *replayer) plan(ctx context.Context, topics []string, sum *Summary) (problems []string, err error) {
	o := rp.o
	md, err := rp.t.Admin.Metadata(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("cluster metadata: %w", err)
	}
	for _, topic := range topics {
		td, ok := md.Topics[topic]
		if !ok || td.Err != nil {
			if rp.cycle != nil && !rp.cycleHasTopic(topic) {
				sum.Warnings = append(sum.Warnings, fmt.Sprintf("topic %s is not in the cycle and not in the cluster (created after the cycle?): skipped; use a plain restore to create it", topic))
				continue
			}
			problems = append(problems, fmt.Sprintf("topic %s does not exist in the cluster: a %s only appends to existing topics (use a plain restore to create it)", topic, rp.mode))
			continue
		}
		liveID := manifest.TopicID(td.ID)
		inc, err := rp.incarnation(ctx, topic, liveID)
		if err != nil {
			return nil, err
		}
		if inc == nil {
			problems = append(problems, rp.idProblem(ctx, topic, liveID))
			continue
		}
		parts, err := rp.a.SelectPartitions(ctx, topic, inc.TopicID, o.Partitions)
		if err != nil {
			return nil, err
		}
		starts, ends, err := rp.t.Offsets(ctx, topic)
		if err != nil {
			return nil, err
		}
		logAppend, err := rp.t.LogAppendTime(ctx, topic)
		if err != nil {
			return nil, err
		}
		if logAppend {
			sum.Warnings = append(sum.Warnings, fmt.Sprintf("topic %s uses LogAppendTime: replayed records get the broker's timestamps", topic))
		}
		for _, p := range parts {
			rpp := Partition{Topic: topic, Partition: p, TopicID: inc.TopicID.String(), CycleLo: -1, CycleHi: -1, From: 0, To: -1, id: inc.TopicID}
			end, ok := ends[p]
			if !ok {
				rpp.State, rpp.Problem = StateRefused, fmt.Sprintf("the live topic has no partition %d (it has %d partitions)", p, len(td.Partitions))
			} else {
				rpp.LiveStart, rpp.LiveEnd = starts[p], end
				rpp.withTs = !logAppend
				if err := rp.planPartition(ctx, rp.a.Partition(topic, inc.TopicID, p), &rpp); err != nil {
					return nil, err
				}
			}
			if rpp.State == StateRefused {
				problems = append(problems, fmt.Sprintf("%s: %s", rpp.Name(), rpp.Problem))
			}
			sum.Partitions = append(sum.Partitions, rpp)
		}
	}
	if len(sum.Partitions) == 0 && len(problems) == 0 {
		return nil, errors.New("no archived partition is selected")
	}
	return problems, nil
}

func (rp *replayer) cycleHasTopic(topic string) bool {
	_, _, ok := rp.cycle.OffsetRange(topic, 0)
	return ok
}

// incarnation returns the archived incarnation to replay from: for repair
// the current one, which must be the live topic; for roll-forward the one
// with the live topic's id (the cluster was restored from a cycle that may
// predate a re-creation). nil when there is none.
func (rp *replayer) incarnation(ctx context.Context, topic string, live manifest.TopicID) (*manifest.TopicMarker, error) {
	cur, err := rp.a.CurrentIncarnation(ctx, topic)
	if err != nil {
		return nil, err
	}
	if live == (manifest.TopicID{}) {
		// A cluster that does not report topic ids: trust the name.
		rp.o.Logger.Warn(rp.mode+": the cluster reports no topic id; assuming the current archived incarnation", "topic", topic)
		return cur, nil
	}
	if cur.TopicID == live {
		return cur, nil
	}
	if rp.cycle == nil {
		return nil, nil
	}
	// Roll-forward: an older incarnation, restored from a cycle taken
	// before the topic was re-created.
	incs, err := rp.a.Incarnations(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("topic %s: %w", topic, err)
	}
	for i := len(incs) - 1; i >= 0; i-- {
		if incs[i].TopicID == live {
			return incs[i], nil
		}
	}
	return nil, nil
}

func (rp *replayer) idProblem(ctx context.Context, topic string, live manifest.TopicID) string {
	incs, _ := rp.a.Incarnations(ctx, topic)
	var ids []string
	for _, in := range incs {
		ids = append(ids, in.TopicID.String())
	}
	return fmt.Sprintf("topic %s in the cluster has topic id %s, the archive has %s: it is another incarnation of the topic (deleted and re-created), offsets do not correspond",
		topic, live, strings.Join(ids, ", "))
}

// planPartition decides what to replay into one partition.
func (rp *replayer) planPartition(ctx context.Context, log *manifest.PartitionLog, p *Partition) error {
	o := rp.o
	head, err := log.Head(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", log, err)
	}
	if head != nil {
		p.ArchiveEnd = head.End + 1
	}
	// The end bound: --to / --to-offset, else the archive's end.
	last := p.ArchiveEnd - 1
	if head != nil && (o.HasToTime || o.HasToOffset) {
		b, err := logrange.Resolve(ctx, log, o.toRange())
		if err != nil {
			return fmt.Errorf("%s: resolve %s: %w", log, o.toRange(), err)
		}
		switch {
		case b.Empty:
			last = -1
		case b.To >= 0 && b.To < last:
			last = b.To
		}
	}
	e := p.LiveEnd
	if rp.cycle != nil {
		lo, hi, ok := rp.cycle.OffsetRange(p.Topic, p.Partition)
		if !ok {
			p.State, p.Problem = StateRefused, "the cycle recorded no high watermark for this partition (created after the cycle?): offsets would not line up"
			return nil
		}
		p.CycleLo, p.CycleHi = lo, hi
		if e < lo {
			p.State, p.Problem = StateRefused, fmt.Sprintf("the live log ends at offset %d, before the cycle's high watermark %d (was the cluster restored from this cycle?): offsets would not line up", e, lo)
			return nil
		}
		if e > hi && e > last+1 {
			p.State, p.Problem = StateRefused, fmt.Sprintf("the live log ends at offset %d, after both the cycle's range %d..%d and the roll-forward's end %d (was the cluster restored from this cycle?)", e, lo, hi, last+1)
			return nil
		}
		// e > hi (and <= last+1): a previous roll-forward got that far; the
		// record check below confirms the log agrees with the archive.
	}
	if e > p.ArchiveEnd {
		if rp.cycle != nil {
			p.State, p.Problem = StateRefused, fmt.Sprintf("the live log ends at offset %d, after the archive's end %d: the archive cannot continue it", e, p.ArchiveEnd)
			return nil
		}
		// Repair: the archive lags the live log; check they agree where
		// both have records.
	}
	// Does the live log agree with the archive just before its end?
	if probe := min(e, p.ArchiveEnd) - 1; probe >= p.LiveStart && probe >= 0 {
		ok, why, err := rp.agrees(ctx, log, p, probe, p.withTs)
		if err != nil {
			return err
		}
		if !ok {
			p.State, p.Problem = StateRefused, why
			return nil
		}
	}
	if e > last {
		p.State = StateUpToDate
		return nil
	}
	p.From, p.To = e, last
	g, err := firstGap(ctx, log, p.From, p.To)
	if err != nil {
		return fmt.Errorf("%s: %w", log, err)
	}
	if g != nil {
		p.Gap = g
		p.To = g.From - 1
	}
	p.State = StatePending
	return nil
}

// agrees compares the live record at off with the archived one.
func (rp *replayer) agrees(ctx context.Context, log *manifest.PartitionLog, p *Partition, off int64, withTs bool) (bool, string, error) {
	var arch *manifest.Record
	var gap *manifest.Gap
	err := log.Scan(ctx, off, off, func(it manifest.ScanItem) error {
		if it.Record != nil {
			r := *it.Record
			arch = &r
		} else {
			g := it.Gap
			gap = &g
		}
		return manifest.StopScan
	})
	if err != nil && !errors.Is(err, manifest.ErrOutOfRange) {
		return false, "", fmt.Errorf("%s offset %d: %w", log, off, err)
	}
	if arch == nil {
		// A gap (a transaction marker, a compacted record) or before the
		// archive's start: nothing to compare.
		why := "not archived"
		if gap != nil {
			why = "an archive gap " + gap.String()
		}
		rp.o.Logger.Info(rp.mode+": cannot compare the live log's last record with the archive", "partition", p.Name(), "offset", off, "archive", why)
		return true, "", nil
	}
	live, err := rp.t.FetchRecord(ctx, p.Topic, p.Partition, off)
	if errors.Is(err, target.ErrRecordNotFound) {
		return false, fmt.Sprintf("the live log has no record at offset %d where the archive has one: the logs diverged", off), nil
	}
	if err != nil {
		return false, "", err
	}
	if target.RecordHash(live, withTs) != target.RecordHash(target.ToKgo(arch, p.Topic), withTs) {
		return false, fmt.Sprintf("the live record at offset %d differs from the archived one: the live log diverged from the archive (written after the loss?); nothing can be replayed at the original offsets", off), nil
	}
	return true, "", nil
}

// firstGap returns the first archive gap overlapping [from, to], clipped,
// or nil. It reads each commit in the range (one GET) and the index of
// commits that have gaps.
func firstGap(ctx context.Context, log *manifest.PartitionLog, from, to int64) (*manifest.Gap, error) {
	c, err := log.Find(ctx, from)
	if err != nil {
		return nil, err
	}
	for {
		var n int64
		for _, k := range c.GapOffsets {
			n += k
		}
		if n > 0 {
			ix, err := log.ReadIndex(ctx, c)
			if err != nil {
				return nil, err
			}
			for _, g := range ix.Gaps {
				if g.To >= from && g.From <= to {
					g.From, g.To = max(g.From, from), min(g.To, to)
					return &g, nil
				}
			}
		}
		if c.End >= to {
			return nil, nil
		}
		if c, err = log.CommitAt(ctx, c.End+1); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil, nil
			}
			return nil, err
		}
	}
}
