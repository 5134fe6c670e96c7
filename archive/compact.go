package archive

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kbackup/kbackup/internal/retry"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
)

// This file: the packed layout's compaction (docs/FORMAT.md §12.5 rules 14
// and 15): tails compacted into segments, and flush objects deleted once
// every entry in them is compacted or void — this archiver's own, those it
// handed over in a rebalance, and stopped archivers' (CleanWAL).

// packedHousekeeping starts due compactions and flush object deletions.
func (a *Archiver) packedHousekeeping(ctx context.Context, now time.Time) {
	pk := a.pk
	if !a.opts.Once { // --once compacts at its end (compactOnce), its own entries included
		a.startDueCompactions(ctx, now)
		a.startClaimChecks(ctx, now)
	}
	for seq, due := range pk.deleteDue {
		if now.Before(due) {
			continue
		}
		delete(pk.deleteDue, seq)
		key := manifest.FlushKey(pk.writer, seq)
		go func() {
			if err := a.opts.Store.Delete(ctx, key); err != nil {
				a.opts.Logger.Warn("deleting a compacted flush object failed (left for a later run)", "key", key, "err", err)
				return
			}
			a.m.walDeleted.Inc()
		}()
	}
	a.maybeCleanWAL(ctx, now)
	a.checkHanded(ctx, now)
}

// compactDue reports whether ps's tail is due for compaction: it holds
// --compact-bytes, or its oldest entry is --compact-after old.
func (a *Archiver) compactDue(ps *partState, now time.Time) bool {
	if !ps.ready || ps.compacting || ps.removing || ps.lostOnce || ps.ptail.Empty() || now.Before(ps.compactRetryAt) {
		return false
	}
	return ps.tailBytes >= a.opts.CompactBytes || now.Sub(ps.tailSince) >= a.opts.CompactAfter
}

// startDueCompactions starts the due compactions that free slots allow.
func (a *Archiver) startDueCompactions(ctx context.Context, now time.Time) {
	for _, ps := range a.parts {
		if !a.compactDue(ps, now) {
			continue
		}
		select {
		case a.pk.cslots <- struct{}{}:
		default:
			return
		}
		ps.compacting = true
		a.startCompaction(ctx, ps)
	}
}

// compactOnce ends a --once run in the packed layout: it compacts the
// tails that are due (by --compact-bytes, or by the age of their oldest
// entry, inherited ones included: tails written by earlier runs) and, if
// it compacted any, deletes the flush objects of stopped writers whose
// entries are all compacted (CleanWAL). So an archive kept by --once runs
// is compacted too, one step every --compact-after. A compaction that
// fails is retried up to the commit attempts of --once and then left to
// the next run: the records are committed in the tail either way.
func (a *Archiver) compactOnce(ctx context.Context) {
	compacted, failed := 0, 0
	for ctx.Err() == nil {
		now := a.opts.Now()
		a.startDueCompactions(ctx, now)
		running := 0
		var retryAt time.Time
		for _, ps := range a.parts {
			if ps.compacting {
				running++
			} else if ps.compactFailures > 0 && ps.compactFailures < a.opts.OnceCommitAttempts && !ps.lostOnce && !ps.ptail.Empty() &&
				(retryAt.IsZero() || ps.compactRetryAt.Before(retryAt)) {
				retryAt = ps.compactRetryAt
			}
		}
		if running == 0 && retryAt.IsZero() {
			break
		}
		var wait <-chan time.Time
		if running == 0 {
			wait = time.After(max(0, retryAt.Sub(now)))
		}
		select {
		case r := <-a.pk.compacts:
			a.applyCompaction(ctx, r)
			switch {
			case r.lost || r.err != nil:
				failed++
			default:
				compacted++
			}
		case <-wait:
		case <-ctx.Done():
		}
	}
	if compacted == 0 && failed == 0 {
		return
	}
	a.opts.Logger.Info("due tails compacted", "compactions", compacted, "failed", failed)
	if compacted == 0 || ctx.Err() != nil {
		return
	}
	a.cleanWAL(ctx)
}

// sweepUploads aborts the incomplete multipart uploads killed writers left
// under wal/ (with S3: streamed flush objects never completed), once older
// than an hour and two flush intervals: a live writer's upload lasts about
// a flush interval (were one swept, its segment would be lost and fetched
// again). At start and with every cleaning; best effort (the bucket's
// lifecycle rule is the backstop).
func (a *Archiver) sweepUploads(ctx context.Context) {
	sw, ok := a.opts.Store.(store.UploadSweeper)
	if !ok {
		return
	}
	// The store dates uploads by its clock: compare with the real one.
	cutoff := time.Now().Add(-max(time.Hour, 2*a.opts.FlushInterval))
	n, err := sw.SweepUploads(ctx, manifest.WALPrefix, cutoff)
	if err != nil {
		if ctx.Err() == nil {
			a.opts.Logger.Info("sweeping incomplete uploads failed (the bucket's lifecycle rule removes them)", "err", err)
		}
		return
	}
	if n > 0 {
		a.opts.Logger.Info("incomplete uploads of stopped archivers aborted", "uploads", n)
	}
}

// cleanWAL deletes the flush objects of stopped writers whose entries are
// all compacted or void (manifest.CleanWAL), and sweeps their incomplete
// uploads.
func (a *Archiver) cleanWAL(ctx context.Context) {
	a.sweepUploads(ctx)
	res, err := a.arch.CleanWAL(ctx, manifest.CleanOptions{Self: a.pk.writer, Idle: a.opts.CompactAfter + max(0, a.opts.CompactGrace), Now: a.opts.Now})
	if err != nil {
		if ctx.Err() == nil {
			a.m.storeErrors.WithLabelValues("clean_wal").Inc()
			a.opts.Logger.Warn("cleaning stopped archivers' flush objects failed (the next pass continues)", "err", err)
		}
		return
	}
	a.m.walDeleted.Add(float64(res.FlushObjects))
	if res.FlushObjects > 0 || res.KeptObjects > 0 {
		a.opts.Logger.Info("flush objects of stopped archivers cleaned", "writers", res.Writers, "deleted", res.FlushObjects,
			"kept_until_compacted", res.KeptObjects, "tail_indexes_deleted", res.TailIndexes)
	}
	if a.opts.Once {
		return
	}
	if kept := a.unarchived(ctx, res.Kept); len(kept) > 0 {
		select {
		case a.pk.kept <- kept: // the loop adopts them (those no archiver owns)
			a.wake()
		default:
		}
	}
}

// unarchived keeps, of the partitions whose tails keep stopped writers'
// flush objects, those no archiver is archiving: the topic incarnation is
// gone from the cluster (the topic does not exist, or exists under another
// topic ID), or it exists but nothing was committed to the partition for
// --compact-after plus --compact-grace (a topic no archiver selects any
// more). A partition written recently is some archiver's to compact, in
// this archiver's selection or not (another deployment may archive it into
// the same store), and adopting it would void that archiver's commits; a
// topic the cluster does not describe (not authorized) cannot be judged
// and is left.
func (a *Archiver) unarchived(ctx context.Context, kept []manifest.KeptPartition) []manifest.KeptPartition {
	if len(kept) == 0 || a.adm == nil {
		return nil
	}
	var names []string
	seen := map[string]bool{}
	for _, k := range kept {
		if !seen[k.Topic] {
			seen[k.Topic] = true
			names = append(names, k.Topic)
		}
	}
	md, err := a.adm.Metadata(ctx, names...)
	if err != nil {
		if ctx.Err() == nil {
			a.opts.Logger.Info("cannot tell whether the topics of unowned uncompacted tails are archived: left for a later pass", "topics", len(names), "err", err)
		}
		return nil
	}
	var out []manifest.KeptPartition
	for _, k := range kept {
		td, ok := md.Topics[k.Topic]
		switch {
		case !ok:
		case td.Err == nil && manifest.TopicID(td.ID) == k.TopicID:
			if a.tailIdle(ctx, k) {
				out = append(out, k)
			}
		case td.Err == nil, errors.Is(td.Err, kerr.UnknownTopicOrPartition):
			out = append(out, k)
		}
	}
	return out
}

// tailIdle reports whether the newest entry of k's uncompacted tail was
// committed --compact-after plus --compact-grace ago or earlier (false if
// it cannot be read).
func (a *Archiver) tailIdle(ctx context.Context, k manifest.KeptPartition) bool {
	log := a.arch.Partition(k.Topic, k.TopicID, k.Partition)
	chead, err := log.CompactedHead(ctx)
	if err != nil {
		return false
	}
	end := int64(-1)
	if chead != nil {
		end = chead.End
	}
	_, newest, err := log.TailAnchors(ctx, end)
	if err != nil || newest == nil {
		return false
	}
	idle := a.opts.CompactAfter + max(0, a.opts.CompactGrace)
	return a.opts.Now().Sub(time.UnixMilli(newest.CommittedAt)) >= idle
}

// keptPartitions is the channel of cleanWAL's kept partitions (nil, never
// ready, in the segments layout).
func (a *Archiver) keptPartitions() chan []manifest.KeptPartition {
	if a.pk == nil {
		return nil
	}
	return a.pk.kept
}

// adoptOrphans takes the partitions, among those whose tails keep stopped
// writers' flush objects, whose topic incarnation no longer exists (the
// topic was deleted while no archiver owned it, or its owner died before
// compacting): nobody would compact their tails, and the flush objects
// holding them would stay forever, beyond retention. Each is claimed,
// compacted (compactOrphan) and released like a deleted topic's partition
// this archiver owned; at most maxAdopted at a time.
func (a *Archiver) adoptOrphans(ctx context.Context, kept []manifest.KeptPartition) {
	adopted := 0
	for _, ps := range a.parts {
		if ps.adopted {
			adopted++
		}
	}
	for _, k := range kept {
		if adopted >= maxAdopted {
			return
		}
		t := tp{k.Topic, k.Partition}
		if ti, ok := a.topics[k.Topic]; ok && ti.id == k.TopicID || a.parts[t] != nil {
			continue // a live incarnation (its owner compacts it), or the key is busy: a later pass
		}
		ps := &partState{tp: t, id: k.TopicID, target: -1, gen: nextGen(), log: a.arch.Partition(k.Topic, k.TopicID, k.Partition),
			removing: true, adopted: true}
		a.parts[t] = ps
		a.m.partitionStarted(k.Topic, k.Partition)
		adopted++
		a.opts.Logger.Info("compacting the uncompacted tail of a deleted topic's partition that no archiver owns",
			"topic", k.Topic, "topic_id", k.TopicID.String(), "partition", k.Partition)
		go a.loadHead(ctx, ps, ps.gen, nil)
	}
}

// maxAdopted bounds the deleted topics' partitions adopted at once.
const maxAdopted = 64

// maybeCleanWAL runs, every --compact-after, the cleaning of stopped
// writers' flush objects (manifest.CleanWAL) on the one archiver of the
// group that owns partition 0 of the first archived topic (any archiver
// may: deleting is idempotent; one is enough).
func (a *Archiver) maybeCleanWAL(ctx context.Context, now time.Time) {
	pk := a.pk
	since := pk.started
	if pk.lastClean.After(since) {
		since = pk.lastClean
	}
	if a.opts.Once || now.Sub(since) < a.opts.CompactAfter || pk.cleaning.Load() {
		return
	}
	first := ""
	for t := range a.topics {
		if first == "" || t < first {
			first = t
		}
	}
	if ps := a.parts[tp{first, 0}]; ps == nil || !ps.ready {
		return
	}
	pk.lastClean = now
	pk.cleaning.Store(true)
	go func() {
		defer pk.cleaning.Store(false)
		a.cleanWAL(ctx)
	}()
}

// startCompaction compacts ps's tail as it stands (off the loop).
func (a *Archiver) startCompaction(ctx context.Context, ps *partState) {
	newest := *ps.ptail.Newest()
	chead, epoch, gen, log, t := ps.chead, ps.epoch, ps.gen, ps.log, ps.tp
	after := int64(-1)
	if chead != nil {
		after = chead.End
	}
	limit := a.opts.CompactBytes
	writer := a.writerID
	nowMs := a.opts.Now().UnixMilli()
	go func() {
		r := compactResult{tp: t, gen: gen}
		defer func() {
			// The slot is free before the result can be seen: compactOnce
			// starts the next due compaction when it applies a result, and
			// stops once none is running (were the slot still held then,
			// a due partition would be left uncompacted).
			<-a.pk.cslots
			a.pk.compacts <- r
			a.wake()
			if a.opts.testCompacted != nil {
				a.opts.testCompacted()
			}
		}()
		refs, commits, err := log.EntriesAfter(ctx, newest, after)
		if err != nil {
			r.err = err
			return
		}
		// At most --compact-bytes per segment (at least one entry): a
		// long tail (inherited after an outage) compacts in several.
		n, size := 1, commits[0].SegmentSize
		for n < len(commits) && size+commits[n].SegmentSize <= limit {
			size += commits[n].SegmentSize
			n++
		}
		if n < len(commits) {
			r.restSince = time.UnixMilli(commits[n].CommittedAt)
		}
		refs, commits = refs[:n], commits[:n]
		r.refs = refs
		// Fencing (format rule 14): only the holder of the newest claim
		// compacts; checked right before the writes.
		c, err := log.CompactChecked(ctx, chead, commits, writer, nowMs, func(ctx context.Context) error {
			if _, err := log.ReadClaim(ctx, epoch+1); err == nil {
				return errLost
			} else if !errors.Is(err, store.ErrNotFound) {
				return err
			}
			return nil
		})
		switch {
		case errors.Is(err, errLost):
			r.lost = true
			return
		case c != nil:
			// Committed (err: only the time key failed; the next
			// claim's RepairHead, or verify's warning, covers it).
			if err != nil {
				a.m.storeErrors.WithLabelValues("time_index").Inc()
			}
		case errors.Is(err, manifest.ErrFenced):
			// The commit at that start exists: an earlier attempt of ours
			// whose outcome was unknown, or another compactor of the same
			// entries (one that lost its claim while compacting may have
			// ended inside an entry: the next compaction rewrites that
			// entry's rest). Continue after it.
			h, herr := log.CompactedHead(ctx)
			if herr != nil {
				r.err = herr
				return
			}
			n := 0
			for n < len(refs) && h != nil && refs[n].End <= h.End {
				n++
			}
			if h == nil || h.End < after+1 {
				r.err = fmt.Errorf("%w (but the compacted head %v did not move)", err, h)
				return
			}
			c, commits, r.refs = h, commits[:n], refs[:n]
		default:
			r.err = err
			return
		}
		r.commit = c
		for _, c := range commits {
			r.bytes += c.SegmentSize
		}
	}()
}

// applyCompaction applies a finished compaction.
func (a *Archiver) applyCompaction(ctx context.Context, r compactResult) {
	ps := a.parts[r.tp]
	if ps != nil && ps.gen == r.gen {
		ps.compacting = false
	}
	switch {
	case r.lost:
		// Another archiver claimed it since (two standalone archivers, or
		// this one was paused while the group moved the partition): what
		// this one committed since is void. Claim it again from what the
		// store holds; the group's next rebalance settles who keeps it.
		a.m.fenced.Inc()
		if ps != nil && ps.gen == r.gen && a.salvageDeleted(ctx, ps) {
			return
		}
		if a.opts.Once || ps != nil && ps.gen == r.gen && ps.removing {
			// The run has archived its range (or the partition is being
			// released): leave the partition to the other archiver.
			a.opts.Logger.Warn("partition claimed by another archiver meanwhile: not compacting it", "topic", r.tp.topic, "partition", r.tp.partition)
			if ps != nil && ps.gen == r.gen {
				ps.lostOnce = true
				a.lostDeleted(ps)
			}
			return
		}
		a.claimLost(ctx, ps, r.tp, r.gen)
		return
	case r.err != nil:
		a.m.storeErrors.WithLabelValues("compact").Inc()
		if errors.Is(r.err, manifest.ErrFenced) {
			a.m.fenced.Inc()
		}
		if ps != nil && ps.gen == r.gen {
			ps.compactFailures++
			ps.compactRetryAt = a.opts.Now().Add(storeBackoff.Delay(ps.compactFailures + 1))
		}
		a.opts.Logger.Warn("compaction failed, will retry", "topic", r.tp.topic, "partition", r.tp.partition, "err", r.err)
		return
	}
	a.m.compactions.Inc()
	a.m.compactedBytes.Add(float64(r.bytes))
	a.opts.Logger.Debug("tail compacted", "topic", r.tp.topic, "partition", r.tp.partition,
		"start", r.commit.Start, "end", r.commit.End, "entries", len(r.refs), "bytes", r.commit.SegmentSize)
	// The flush objects of the compacted entries: ours are deleted once all
	// their entries are compacted (after the grace, format rule 15).
	var ownMax int64 = -1
	for _, ref := range r.refs {
		if ref.Writer == a.pk.writer {
			a.entryDone(ref.Seq)
			ownMax = max(ownMax, ref.Seq)
		}
	}
	if ps == nil || ps.gen != r.gen {
		return
	}
	ps.chead, ps.compactFailures = r.commit, 0
	ps.ptail.TrimTo(r.commit.End)
	ps.own.dropThrough(ownMax)
	ps.tailBytes = max(0, ps.tailBytes-r.bytes)
	if !ps.ptail.Empty() {
		// The rest is dated by its oldest entry: one left out by the size
		// bound, or else one appended while this compaction ran.
		ps.tailSince = a.opts.Now()
		if !r.restSince.IsZero() && r.restSince.Before(ps.tailSince) {
			ps.tailSince = r.restSince
		}
	}
}

// handedEntry is an entry of a released partition in an own flush object.
type handedEntry struct {
	log *manifest.PartitionLog
	end int64
}

// entryDone notes that an entry of own flush object seq is compacted (or
// handed over): the object is deleted after the grace once none is left.
func (a *Archiver) entryDone(seq int64) {
	pk := a.pk
	n, ok := pk.live[seq]
	if !ok {
		return
	}
	if n > 1 {
		pk.live[seq] = n - 1
		return
	}
	delete(pk.live, seq)
	if len(pk.handed[seq]) == 0 {
		pk.deleteDue[seq] = a.opts.Now().Add(max(0, a.opts.CompactGrace))
	}
}

// handOver notes the uncompacted own entries of a released partition:
// their objects wait for the next owner's compaction (checkHanded).
func (a *Archiver) handOver(ps *partState) {
	ps.own.each(func(seq int64) {
		a.pk.handed[seq] = append(a.pk.handed[seq], handedEntry{log: ps.log, end: ps.own.maxEnd})
		a.entryDone(seq)
	})
	ps.own = ownSeqs{}
}

// ownSeqs are the seqs of this archiver's flush objects holding a
// partition's uncompacted entries, as runs of consecutive seqs (a busy
// partition has an entry in every flush), and the end of the newest.
type ownSeqs struct {
	runs   [][2]int64
	maxEnd int64
}

func (o *ownSeqs) add(seq, end int64) {
	if n := len(o.runs); n > 0 && o.runs[n-1][1] == seq-1 {
		o.runs[n-1][1] = seq
	} else {
		o.runs = append(o.runs, [2]int64{seq, seq})
	}
	o.maxEnd = max(o.maxEnd, end)
}

// dropThrough forgets the seqs up to seq (their entries are compacted).
func (o *ownSeqs) dropThrough(seq int64) {
	i := 0
	for i < len(o.runs) && o.runs[i][1] <= seq {
		i++
	}
	o.runs = append(o.runs[:0], o.runs[i:]...)
	if len(o.runs) > 0 && o.runs[0][0] <= seq {
		o.runs[0][0] = seq + 1
	}
}

func (o *ownSeqs) each(fn func(seq int64)) {
	for _, r := range o.runs {
		for s := r[0]; s <= r[1]; s++ {
			fn(s)
		}
	}
}

// checkHanded, every --compact-after, reads the compacted heads of the
// partitions whose entries wait in own flush objects (one LIST and GET each)
// and releases the objects whose entries are all compacted.
func (a *Archiver) checkHanded(ctx context.Context, now time.Time) {
	pk := a.pk
	if len(pk.handed) == 0 || now.Sub(pk.lastHanded) < a.opts.CompactAfter || pk.checkingHandedOff.Load() {
		return
	}
	pk.lastHanded = now
	pk.checkingHandedOff.Store(true)
	logs := map[string]*manifest.PartitionLog{}
	for _, hs := range pk.handed {
		for _, h := range hs {
			logs[h.log.Prefix()] = h.log
		}
	}
	go func() {
		defer pk.checkingHandedOff.Store(false)
		ends := map[string]int64{}
		for k, l := range logs {
			h, err := l.CompactedHead(ctx)
			if err != nil {
				a.opts.Logger.Warn("reading the compacted head of a released partition failed (checked again later)", "partition", l.String(), "err", err)
				continue
			}
			if h != nil {
				ends[k] = h.End
			}
		}
		select {
		case pk.handedEnds <- ends:
			a.wake()
		case <-ctx.Done():
		}
	}()
}

// applyHanded releases the flush objects whose handed-over entries are
// compacted by now.
func (a *Archiver) applyHanded(ends map[string]int64) {
	pk := a.pk
	for seq, hs := range pk.handed {
		left := hs[:0]
		for _, h := range hs {
			if end, ok := ends[h.log.Prefix()]; !ok || end < h.end {
				left = append(left, h)
			}
		}
		if len(left) > 0 {
			pk.handed[seq] = left
			continue
		}
		delete(pk.handed, seq)
		if _, ok := pk.live[seq]; !ok {
			pk.deleteDue[seq] = a.opts.Now().Add(max(0, a.opts.CompactGrace))
		}
	}
}

// handedResults is the channel of checkHanded's results (nil, never
// ready, in the segments layout).
func (a *Archiver) handedResults() chan map[string]int64 {
	if a.pk == nil {
		return nil
	}
	return a.pk.handedEnds
}

// errLost: a newer claim of the partition exists.
var errLost = errors.New("partition claimed by another archiver")

// compactOrphan compacts the tail of a partition whose topic was deleted
// (or re-created), whatever its age: no archiver will own that incarnation
// again, so nobody else would, and flush objects holding its entries would
// stay forever, beyond retention. It reports true once the partition can
// be released: its tail is compacted, or another archiver claimed it, or
// compactions failed orphanCompactAttempts times (then the tail stays as
// it is, readable, and a warning says so).
func (a *Archiver) compactOrphan(ctx context.Context, ps *partState) bool {
	switch {
	case ps.ptail.Empty() || ps.lostOnce:
		return true
	case !ps.ready || ps.epoch == 0:
		return false // being claimed
	case ps.compactFailures >= orphanCompactAttempts:
		a.opts.Logger.Warn("the deleted topic's uncompacted tail stays in flush objects (compaction kept failing)",
			"topic", ps.tp.topic, "partition", ps.tp.partition, "attempts", ps.compactFailures)
		return true
	case ps.compacting || a.opts.Now().Before(ps.compactRetryAt):
		return false
	}
	select {
	case a.pk.cslots <- struct{}{}:
		ps.compacting = true
		a.startCompaction(ctx, ps)
	default:
	}
	return false
}

// orphanCompactAttempts bounds the compactions of a deleted topic's tail.
const orphanCompactAttempts = 5

// claimCheck is a finished check of one partition's claim.
type claimCheck struct {
	tp   tp
	gen  int
	lost bool
	err  error
}

// startClaimChecks starts the claim checks that are due (one GET each of
// the claim after this archiver's: ReadClaim(epoch+1)), at most
// claimCheckConcurrency at once. Only partitions that committed an entry
// since their last check are due: an idle partition makes no request (and
// writes nothing that a newer claim would void).
func (a *Archiver) startClaimChecks(ctx context.Context, now time.Time) {
	if a.opts.ClaimCheckInterval <= 0 {
		return
	}
	for _, ps := range a.parts {
		if !ps.ready || ps.epoch == 0 || ps.removing || ps.claimChecking || !ps.flushedSince || ps.claimCheckAt.IsZero() || now.Before(ps.claimCheckAt) {
			continue
		}
		select {
		case a.pk.checkSlots <- struct{}{}:
		default:
			return
		}
		ps.claimChecking, ps.flushedSince = true, false
		log, epoch, r := ps.log, ps.epoch, claimCheck{tp: ps.tp, gen: ps.gen}
		go func() {
			defer func() { <-a.pk.checkSlots }()
			_, err := log.ReadClaim(ctx, epoch+1)
			switch {
			case err == nil:
				r.lost = true
			case !errors.Is(err, store.ErrNotFound):
				r.err = err
			}
			a.pk.checks <- r // the loop drains it
			a.wake()
		}()
	}
}

// applyClaimCheck applies a finished claim check.
func (a *Archiver) applyClaimCheck(ctx context.Context, r claimCheck) {
	ps := a.parts[r.tp]
	if ps == nil || ps.gen != r.gen {
		return
	}
	ps.claimChecking = false
	ps.claimCheckAt = a.opts.Now().Add(a.opts.ClaimCheckInterval)
	switch {
	case r.lost:
		a.m.fenced.Inc()
		a.claimLost(ctx, ps, r.tp, r.gen)
	case r.err != nil:
		a.m.storeErrors.WithLabelValues("claim_check").Inc()
		a.opts.Logger.Warn("checking the partition's claim failed (checked again later)", "topic", r.tp.topic, "partition", r.tp.partition, "err", r.err)
	}
}

// claimLost handles a partition another archiver claimed since this one
// did (a standalone archiver beside a group, two groups on one archive, or
// this one paused while the group moved the partition): what this one
// committed since is void. It claims the partition again from what the
// store holds; the group's next rebalance settles who keeps it.
func (a *Archiver) claimLost(ctx context.Context, ps *partState, t tp, gen int) {
	if ps != nil && ps.gen == gen && ps.removing {
		if a.salvageDeleted(ctx, ps) {
			return
		}
		a.lostDeleted(ps)
	}
	if ps == nil || ps.gen != gen || ps.removing {
		a.opts.Logger.Warn("partition claimed by another archiver meanwhile", "topic", t.topic, "partition", t.partition)
		return
	}
	if a.opts.Group != "" && !a.opts.Once {
		// Perhaps this archiver is the one the group replaced: give it a
		// session timeout to hear so before claiming (reclaimLater).
		a.opts.Logger.Warn("partition claimed by another archiver meanwhile: claiming it again from the archive's end unless the group revokes it first (archivers of one archive belong in one --group)",
			"topic", t.topic, "partition", t.partition, "after", a.opts.reclaimDelay)
		a.reclaimLater(ps, a.opts.reclaimDelay)
		return
	}
	a.opts.Logger.Warn("partition claimed by another archiver meanwhile: claiming it again from the archive's end (archivers of one archive belong in one --group)",
		"topic", t.topic, "partition", t.partition)
	a.reclaim(ctx, ps)
}

// salvageDeleted claims a deleted topic's partition again after another
// archiver's claim voided what this one committed since: Kafka cannot
// return those records any more, so the new claim recommits them from the
// void entries (reclaim, manifest.Salvage) before the tail is compacted and
// the partition released. False if that does not apply or was tried
// salvageAttempts times.
func (a *Archiver) salvageDeleted(ctx context.Context, ps *partState) bool {
	if a.opts.Once || !ps.removing || !a.topicGone(ps) || ps.ptail.Empty() || ps.salvageTries >= salvageAttempts {
		return false
	}
	ps.salvageTries++
	if n := ps.ptail.Newest(); ps.salvageFrom == nil || n.End > ps.salvageFrom.End {
		ref := *n
		ps.salvageFrom = &ref
	}
	a.opts.Logger.Warn("deleted topic's partition claimed by another archiver before its release: claiming it again to recommit what this archiver committed since",
		"topic", ps.tp.topic, "partition", ps.tp.partition, "attempt", ps.salvageTries)
	a.reclaim(ctx, ps)
	return true
}

// salvageAttempts bounds the reclaims of a deleted topic's partition to
// recommit its void entries.
const salvageAttempts = 3

// lostDeleted reports, at error level, a partition of a deleted topic
// that another archiver claimed before this one released it: what this one
// committed since that claim is void, and the records cannot be fetched
// again. Known loss (no gap records it): make it loud.
func (a *Archiver) lostDeleted(ps *partState) {
	if a.opts.Once || !a.topicGone(ps) {
		return
	}
	a.opts.Logger.Error("deleted topic's partition was claimed by another archiver before this one released it: "+
		"any records this archiver committed since that claim are lost (compare kbackup ls of the incarnation with archived_to)",
		"topic", ps.tp.topic, "topic_id", ps.id.String(), "partition", ps.tp.partition, "archived_to", ps.committedNext())
}

// claimChecks is the channel of finished claim checks (nil, never ready,
// in the segments layout).
func (a *Archiver) claimChecks() chan claimCheck {
	if a.pk == nil {
		return nil
	}
	return a.pk.checks
}

// onceCheckClaims ends a packed --once run: per partition, one GET of the
// claim after the run's. If another archiver claimed the partition during
// the run, what the run committed since does not count (format rule 12);
// the archive then holds what the other archiver's chain holds. The run
// fails, naming them, for the partitions whose archive ends below the run's
// end offsets: a run that reported success would leave those records to
// nobody if the other archiver stopped (a second --once, killed). A rerun
// archives them. The partitions found claimed are not compacted.
func (a *Archiver) onceCheckClaims(ctx context.Context) error {
	var short []string
	for _, k := range slices.SortedFunc(maps.Keys(a.parts), func(x, y tp) int { return strings.Compare(x.String(), y.String()) }) {
		ps := a.parts[k]
		if ps.epoch == 0 || ps.target < 0 {
			continue
		}
		var c *manifest.Claim
		err := retry.Do(ctx, onceCheckRetry, func(ctx context.Context) (err error) {
			c, err = ps.log.ReadClaim(ctx, ps.epoch+1)
			return err
		})
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("checking the claim of %s (everything was committed; whether another archiver's claim voids some of it is unknown: run again): %w", ps.tp, err)
		}
		ps.lostOnce = true
		// The run's commits at or above the claim's start are void.
		var void []*manifest.Commit
		for _, rc := range ps.runCommits {
			if rc.Start >= c.Start {
				void = append(void, rc)
			}
		}
		a.supersede(void)
		var end int64
		err = retry.Do(ctx, onceCheckRetry, func(ctx context.Context) (err error) {
			end, err = a.archivedEnd(ctx, ps)
			return err
		})
		if err != nil {
			return fmt.Errorf("%s, claimed by %s during this run: reading its archive's end: %w", ps.tp, c.Writer, err)
		}
		if end >= ps.target {
			// What this run committed after that claim is void, but the
			// archive reaches the run's end offsets anyway. Typically the
			// group's next owner, claiming after this run's last commit.
			a.opts.Logger.Info("partition claimed by another archiver since this run claimed it: the archive holds everything this run archived",
				"topic", ps.tp.topic, "partition", ps.tp.partition, "writer", c.Writer, "archived_to", end)
			continue
		}
		a.m.fenced.Inc()
		a.opts.Logger.Warn("partition claimed by another archiver during this run: what this run committed since does not count",
			"topic", ps.tp.topic, "partition", ps.tp.partition, "writer", c.Writer, "archived_to", end, "run_target", ps.target)
		short = append(short, fmt.Sprintf("%s (archived to offset %d of %d)", ps.tp, end, ps.target))
	}
	if len(short) > 0 {
		return fmt.Errorf("another archiver claimed %d partition(s) during this run and the archive holds less than this run archived: %s; "+
			"run all archivers of an archive in one --group; if the other archiver is still running it archives the rest, otherwise run again: %w",
			len(short), strings.Join(short, ", "), manifest.ErrFenced)
	}
	return nil
}

// onceCheckRetry retries the reads of onceCheckClaims: a store error at
// the end of a run that committed everything would otherwise fail it.
// Missing objects, corrupt ones and permanent errors are answers, not
// failures to retry.
var onceCheckRetry = retry.Policy{Backoff: retry.Backoff{Initial: 200 * time.Millisecond, Max: 2 * time.Second}, Attempts: 5,
	Retryable: func(err error) bool {
		return !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrPermanent) && !errors.Is(err, manifest.ErrCorrupt) &&
			!errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
	}}

// archivedEnd is the next offset after what the archive holds of ps's
// partition now, by the newest claim's chain: its newest tail entry, or
// the compacted head.
func (a *Archiver) archivedEnd(ctx context.Context, ps *partState) (int64, error) {
	chead, err := ps.log.CompactedHead(ctx)
	if err != nil {
		return 0, err
	}
	end := int64(-1)
	if chead != nil {
		end = chead.End
	}
	_, newest, err := ps.log.TailAnchors(ctx, end)
	if err != nil {
		return 0, err
	}
	if newest != nil {
		end = newest.End
	}
	return end + 1, nil
}
