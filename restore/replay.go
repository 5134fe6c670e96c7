package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/internal/logrange"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
)

// Replay is the mechanism shared by roll-forward (RollForward) and repair
// (Repair): archived records are produced into the SAME topic and partition
// they were archived from, right after the live log's end, so that every
// replayed record lands at its original offset. That holds only when
//
//   - the live log ends at an offset the archive covers, and the live record
//     just before it is the archived record at that offset (checked; a
//     differing record is a divergence and refuses the partition);
//   - nothing else writes to the partition meanwhile (every acknowledgement
//     is checked: the first record that lands elsewhere stops the partition);
//   - the replayed range has no gap in the archive: a producer cannot create
//     an offset hole (compacted records, transaction markers, aborted data),
//     so the replay stops before the first gap and the partition is reported
//     as failed, with the gap.
//
// A replay keeps no state of its own: the live log end is its checkpoint.
// Running it again after a success finds every partition up to date; after
// a kill it continues from the live end (checked against the archive).

// Replay partition states, in a ReplayPartition's State.
const (
	ReplayPending  = "replay"         // records to replay (plan)
	ReplayUpToDate = "up to date"     // nothing to replay
	ReplayRefused  = "refused"        // offsets would not line up: nothing written
	ReplayDone     = "replayed"       // replayed and verified
	ReplayFailed   = "failed"         // did not complete (see Err)
	ReplayGap      = "stopped at gap" // replayed up to an archive gap (failure)
)

// ReplayPartition is one partition of a roll-forward or repair.
type ReplayPartition struct {
	Topic     string
	Partition int32
	// TopicID is the topic id of the live topic and of the archived
	// incarnation replayed from (32 hex digits).
	TopicID string
	// LiveStart and LiveEnd are the live log's start and end offset (high
	// watermark) when planned.
	LiveStart, LiveEnd int64
	// ArchiveEnd is the offset after the archive's last offset (0: nothing
	// archived).
	ArchiveEnd int64
	// CycleLo..CycleHi is the range the cycle recorded for the partition's
	// log end (roll-forward only; -1 otherwise).
	CycleLo, CycleHi int64
	// From..To (inclusive) is what is replayed; To < From replays nothing.
	From, To int64
	// Gap is the first archive gap at or after From within the requested
	// range, if any: the replay stops before it.
	Gap *manifest.Gap
	// State is one of the Replay* states; Problem says why a partition is
	// refused.
	State   string
	Problem string
	// Produced counts the records this run produced.
	Produced int64
	// Err is why the partition failed (State ReplayFailed or ReplayGap).
	Err error

	id     manifest.TopicID
	withTs bool // compare timestamps (the topic keeps CreateTime)
}

// Name is "topic/partition".
func (p ReplayPartition) Name() string { return fmt.Sprintf("%s/%d", p.Topic, p.Partition) }

// ReplaySummary is the result of a roll-forward or repair.
type ReplaySummary struct {
	// Mode is "roll-forward" or "repair"; CycleID the cycle rolled forward
	// from.
	Mode    string
	CycleID string
	DryRun  bool
	// Range describes the requested end bound (--to, --to-offset), "" for
	// the archive's end.
	Range string
	// Partitions in topic, partition order.
	Partitions []ReplayPartition
	Warnings   []string
	// Records produced by this run.
	Records  int64
	Duration time.Duration
}

// ReplayError is returned when some partitions did not complete. Failed
// names each, with its reason.
type ReplayError struct {
	Mode   string
	Failed []string
	Total  int
}

func (e *ReplayError) Error() string {
	return fmt.Sprintf("%s incomplete: %d of %d partitions did not complete: %s", e.Mode, len(e.Failed), e.Total, strings.Join(e.Failed, "; "))
}

// replayer plans and executes a replay.
type replayer struct {
	o      *Options
	leases *leaseMgr
	mode   string
	a      *manifest.Archive
	t      *target
	cycle  cycleBounds // nil: repair
}

// cycleBounds is what a roll-forward needs of a snapshot cycle.
type cycleBounds interface {
	OffsetRange(topic string, partition int32) (lo, hi int64, ok bool)
}

// checkReplayOptions refuses the restore options a replay cannot honour:
// it writes into the archived topics and partitions themselves, from the
// live end on.
func checkReplayOptions(o *Options, mode string) error {
	switch {
	case len(o.Rename) > 0:
		return fmt.Errorf("%s: --rename cannot be used: records are replayed into the topics they were archived from", mode)
	case o.Repartition:
		return fmt.Errorf("%s: --repartition cannot be used: records must land at their original partitions and offsets", mode)
	case o.Groups != nil:
		return fmt.Errorf("%s: --groups is not needed: offsets are unchanged, consumer groups need no translation", mode)
	case o.Range.FromOffset != 0 || o.Range.HasFromTime:
		return fmt.Errorf("%s: --from/--from-offset cannot be used: the replay starts at each partition's live end", mode)
	case o.Append:
		return fmt.Errorf("%s: --append is implied", mode)
	}
	return nil
}

// runReplay is RollForward and Repair.
func runReplay(ctx context.Context, opts Options, mode, cycleID, cycleClusterID string, cycle cycleBounds) (*ReplaySummary, error) {
	o := &opts
	if err := checkReplayOptions(o, mode); err != nil {
		return nil, err
	}
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	start := o.Now()
	a, err := manifest.Open(ctx, o.Store)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", mode, err)
	}
	topics, err := selectTopics(ctx, a, o)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", mode, err)
	}
	t, err := connectTarget(ctx, o.KafkaOpts,
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(2*time.Millisecond),
		kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", mode, err)
	}
	defer t.close()
	if cycleClusterID != "" && t.clusterID != "" && cycleClusterID != t.clusterID {
		return nil, fmt.Errorf("%s refused, nothing written: the cluster at the brokers has cluster id %s, cycle %s was taken of cluster id %s", mode, t.clusterID, cycleID, cycleClusterID)
	}
	rp := &replayer{o: o, mode: mode, a: a, t: t, cycle: cycle}
	sum := &ReplaySummary{Mode: mode, CycleID: cycleID, DryRun: o.DryRun}
	var bounds []string
	if o.Range.HasToTime {
		bounds = append(bounds, "time "+logrange.FormatTime(o.Range.ToTime))
	}
	if o.Range.HasToOffset {
		bounds = append(bounds, fmt.Sprintf("offset %d", o.Range.ToOffset))
	}
	sum.Range = strings.Join(bounds, " and ")
	problems, err := rp.plan(ctx, topics, sum)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", mode, err)
	}
	if len(problems) > 0 {
		return sum, fmt.Errorf("%s refused, nothing written: %s", mode, strings.Join(problems, "; "))
	}
	if o.DryRun {
		return sum, nil
	}
	if err := manifest.ProbeConditionalCreate(ctx, o.StateStore); err != nil {
		return sum, fmt.Errorf("%s refused, nothing written: %w", mode, err)
	}
	rp.leases = newReplayLeases(o, t.clusterID)
	activeRuns.Store(rp.leases.me.ID, true)
	defer activeRuns.Delete(rp.leases.me.ID)
	rp.execute(ctx, sum)
	sum.Duration = o.Now().Sub(start)
	var failed []string
	for _, p := range sum.Partitions {
		sum.Records += p.Produced
		if p.State == ReplayFailed || p.State == ReplayGap {
			failed = append(failed, fmt.Sprintf("%s (%v)", p.Name(), p.Err))
		}
	}
	if len(failed) > 0 {
		return sum, &ReplayError{Mode: mode, Failed: failed, Total: len(sum.Partitions)}
	}
	o.Logger.Info(mode+": complete", "partitions", len(sum.Partitions), "records", sum.Records, "duration", sum.Duration.Round(time.Millisecond))
	return sum, nil
}

// plan fills sum.Partitions; problems are refusals (nothing is written
// when there is any).
func (rp *replayer) plan(ctx context.Context, topics []string, sum *ReplaySummary) (problems []string, err error) {
	o := rp.o
	md, err := rp.t.adm.Metadata(ctx, topics...)
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
		starts, ends, err := rp.t.offsets(ctx, topic)
		if err != nil {
			return nil, err
		}
		logAppend, err := rp.t.logAppendTime(ctx, topic)
		if err != nil {
			return nil, err
		}
		if logAppend {
			sum.Warnings = append(sum.Warnings, fmt.Sprintf("topic %s uses LogAppendTime: replayed records get the broker's timestamps", topic))
		}
		for _, p := range parts {
			rpp := ReplayPartition{Topic: topic, Partition: p, TopicID: inc.TopicID.String(), CycleLo: -1, CycleHi: -1, From: 0, To: -1, id: inc.TopicID}
			end, ok := ends[p]
			if !ok {
				rpp.State, rpp.Problem = ReplayRefused, fmt.Sprintf("the live topic has no partition %d (it has %d partitions)", p, len(td.Partitions))
			} else {
				rpp.LiveStart, rpp.LiveEnd = starts[p], end
				rpp.withTs = !logAppend
				if err := rp.planPartition(ctx, rp.a.Partition(topic, inc.TopicID, p), &rpp); err != nil {
					return nil, err
				}
			}
			if rpp.State == ReplayRefused {
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
func (rp *replayer) planPartition(ctx context.Context, log *manifest.PartitionLog, p *ReplayPartition) error {
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
	if head != nil && (o.Range.HasToTime || o.Range.HasToOffset) {
		b, err := logrange.Resolve(ctx, log, logrange.Range{ToOffset: o.Range.ToOffset, HasToOffset: o.Range.HasToOffset,
			ToTime: o.Range.ToTime, HasToTime: o.Range.HasToTime})
		if err != nil {
			return fmt.Errorf("%s: resolve %s: %w", log, o.Range, err)
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
			p.State, p.Problem = ReplayRefused, "the cycle recorded no high watermark for this partition (created after the cycle?): offsets would not line up"
			return nil
		}
		p.CycleLo, p.CycleHi = lo, hi
		if e < lo {
			p.State, p.Problem = ReplayRefused, fmt.Sprintf("the live log ends at offset %d, before the cycle's high watermark %d (was the cluster restored from this cycle?): offsets would not line up", e, lo)
			return nil
		}
		if e > hi && e > last+1 {
			p.State, p.Problem = ReplayRefused, fmt.Sprintf("the live log ends at offset %d, after both the cycle's range %d..%d and the roll-forward's end %d (was the cluster restored from this cycle?)", e, lo, hi, last+1)
			return nil
		}
		// e > hi (and <= last+1): a previous roll-forward got that far; the
		// record check below confirms the log agrees with the archive.
	}
	if e > p.ArchiveEnd {
		if rp.cycle != nil {
			p.State, p.Problem = ReplayRefused, fmt.Sprintf("the live log ends at offset %d, after the archive's end %d: the archive cannot continue it", e, p.ArchiveEnd)
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
			p.State, p.Problem = ReplayRefused, why
			return nil
		}
	}
	if e > last {
		p.State = ReplayUpToDate
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
	p.State = ReplayPending
	return nil
}

// agrees compares the live record at off with the archived one.
func (rp *replayer) agrees(ctx context.Context, log *manifest.PartitionLog, p *ReplayPartition, off int64, withTs bool) (bool, string, error) {
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
	live, err := rp.t.fetchRecord(ctx, p.Topic, p.Partition, off)
	if errors.Is(err, errRecordNotFound) {
		return false, fmt.Sprintf("the live log has no record at offset %d where the archive has one: the logs diverged", off), nil
	}
	if err != nil {
		return false, "", err
	}
	if recordHash(live, withTs) != recordHash(toKgo(arch, p.Topic), withTs) {
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

// execute replays the planned partitions, Concurrency at a time.
func (rp *replayer) execute(ctx context.Context, sum *ReplaySummary) {
	sem := make(chan struct{}, rp.o.Concurrency)
	var wg sync.WaitGroup
	for i := range sum.Partitions {
		p := &sum.Partitions[i]
		if p.State != ReplayPending {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				p.State, p.Err = ReplayFailed, ctx.Err()
				return
			}
			defer func() { <-sem }()
			err := rp.replayOwned(ctx, p)
			switch {
			case err != nil:
				p.State, p.Err = ReplayFailed, err
				rp.o.Logger.Error(rp.mode+": partition did not complete", "partition", p.Name(), "produced", p.Produced, "err", err)
			case p.Gap != nil:
				p.State = ReplayGap
				p.Err = fmt.Errorf("replayed up to offset %d; the archive has a gap at %s, which a producer cannot reproduce: the rest cannot land at its original offsets", p.Gap.From, p.Gap)
				rp.o.Logger.Error(rp.mode+": partition stopped at an archive gap", "partition", p.Name(), "gap", p.Gap.String())
			default:
				p.State = ReplayDone
				rp.o.Logger.Info(rp.mode+": partition replayed", "partition", p.Name(), "from", p.From, "to", p.To, "produced", p.Produced)
			}
		}()
	}
	wg.Wait()
}

// replayPartition produces p.From..p.To and verifies each acknowledgement
// and the partition's end afterwards.
func (rp *replayer) replayPartition(ctx context.Context, p *ReplayPartition) error {
	t := rp.t
	if p.To < p.From {
		return nil
	}
	// The live end must not have moved since the plan.
	_, ends, err := t.offsets(ctx, p.Topic)
	if err != nil {
		return err
	}
	if ends[p.Partition] != p.LiveEnd {
		return fmt.Errorf("the live log end moved from %d to %d since the plan (another producer?): stop producers and run again", p.LiveEnd, ends[p.Partition])
	}
	if err := rp.waitLogEnd(ctx, p); err != nil {
		return err
	}
	log := rp.a.Partition(p.Topic, p.id, p.Partition)
	var chunk []*kgo.Record
	var chunkBytes int64
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		want := make([]int64, len(chunk))
		for i, r := range chunk {
			want[i] = r.Offset
			r.Offset = 0
		}
		res := t.cl.ProduceSync(ctx, chunk...)
		for i, r := range res {
			if r.Err != nil {
				return fmt.Errorf("produce archive offset %d: %w", want[i], r.Err)
			}
			if r.Record.Offset != want[i] {
				return fmt.Errorf("archive offset %d landed at offset %d: offsets no longer line up (another producer wrote to the partition?); stopped", want[i], r.Record.Offset)
			}
			p.Produced++
		}
		chunk, chunkBytes = chunk[:0], 0
		return nil
	}
	err = log.Scan(ctx, p.From, p.To, func(it manifest.ScanItem) error {
		if it.Record == nil { // planned before the gap: cannot happen
			return fmt.Errorf("archive gap %s inside the replayed range", it.Gap)
		}
		kr := toKgo(it.Record, p.Topic)
		kr.Partition, kr.Offset = p.Partition, it.Record.Offset // Offset: the expected one, see flush
		chunk = append(chunk, kr)
		chunkBytes += recordSize(it.Record)
		if chunkBytes >= batchBytes || len(chunk) >= 4096 {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return fmt.Errorf("after %d records: %w", p.Produced, err)
	}
	// Verify: the partition ends right after the last replayed record, and
	// the record there is the archived one.
	_, ends, err = t.offsets(ctx, p.Topic)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if ends[p.Partition] != p.To+1 {
		return fmt.Errorf("verify: the live log ends at %d, want %d (another producer?)", ends[p.Partition], p.To+1)
	}
	ok, why, err := rp.agrees(ctx, log, p, p.To, p.withTs)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if !ok {
		return fmt.Errorf("verify: %s", why)
	}
	return nil
}

// waitLogEnd makes sure that the leader's log ends at the high watermark
// (p.LiveEnd): a produced record goes after the log end, so with replicas
// still catching up (after a restart) it would land past the high
// watermark, not at its original offset. The log end offset is the end
// offset of the leader's current epoch (OffsetForLeaderEpoch); it waits up
// to 30 s for the replicas. A cluster that cannot answer is trusted (the
// acknowledgements are checked anyway).
func (rp *replayer) waitLogEnd(ctx context.Context, p *ReplayPartition) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		md, err := rp.t.adm.Metadata(ctx, p.Topic)
		if err != nil {
			return fmt.Errorf("metadata: %w", err)
		}
		pd, ok := md.Topics[p.Topic].Partitions[p.Partition]
		if !ok || pd.Err != nil || pd.Leader < 0 {
			return fmt.Errorf("the partition has no leader: %v", pd.Err)
		}
		res, err := rp.t.adm.OffsetForLeaderEpoch(ctx, kadm.OffsetForLeaderEpochRequest{p.Topic: {p.Partition: pd.LeaderEpoch}})
		var leo int64 = -1
		if err == nil {
			if r, ok := res[p.Topic][p.Partition]; ok && r.Err == nil && r.LeaderEpoch == pd.LeaderEpoch {
				leo = r.EndOffset
			}
		}
		if leo < 0 {
			rp.o.Logger.Debug(rp.mode+": cannot read the leader's log end offset; relying on the acknowledgement checks", "partition", p.Name(), "err", err)
			return nil
		}
		if leo == p.LiveEnd {
			return nil
		}
		if leo < p.LiveEnd || time.Now().After(deadline) {
			return fmt.Errorf("the leader's log ends at %d, the high watermark is %d: replicas are not in sync, replayed records would not land at their original offsets; wait until the partition is fully replicated and run again", leo, p.LiveEnd)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		_, ends, err := rp.t.offsets(ctx, p.Topic)
		if err != nil {
			return err
		}
		if ends[p.Partition] != p.LiveEnd {
			return fmt.Errorf("the live log end moved from %d to %d since the plan (another producer?): stop producers and run again", p.LiveEnd, ends[p.Partition])
		}
	}
}

// WriteReport prints the plan or the result, one line per partition.
func (s *ReplaySummary) WriteReport(w io.Writer) error {
	var b strings.Builder
	head := s.Mode
	if s.CycleID != "" {
		head += " from cycle " + s.CycleID
	}
	if s.Range != "" {
		head += ", up to " + s.Range
	}
	if s.DryRun {
		head += " (dry run, nothing written)"
	}
	fmt.Fprintln(&b, head)
	for _, wn := range s.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", wn)
	}
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PARTITION\tLIVE END\tARCHIVE END\tCYCLE RANGE\tREPLAY\tRECORDS\tSTATE")
	for _, p := range s.Partitions {
		cyc := "-"
		if p.CycleLo >= 0 {
			cyc = fmt.Sprintf("%d..%d", p.CycleLo, p.CycleHi)
		}
		rng := "-"
		if p.To >= p.From {
			rng = fmt.Sprintf("%d..%d", p.From, p.To)
		}
		n := p.To - p.From + 1
		if s.DryRun || p.State == ReplayFailed {
			n = max(n, 0)
		} else {
			n = p.Produced
		}
		state := p.State
		switch {
		case p.Problem != "":
			state += ": " + p.Problem
		case p.Err != nil:
			state += ": " + p.Err.Error()
		case p.Gap != nil:
			state += fmt.Sprintf(" (stops before the archive gap %s)", p.Gap)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%d\t%s\n", p.Name(), p.LiveEnd, p.ArchiveEnd, cyc, rng, n, state)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if !s.DryRun {
		fmt.Fprintf(&b, "%d records replayed in %s\n", s.Records, s.Duration.Round(time.Millisecond))
	}
	_, err := io.WriteString(w, b.String())
	return err
}
