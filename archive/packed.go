package archive

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
)

// This file: the packed layout (docs/FORMAT.md §12). One flush object per
// flush interval commits the sealed segments of every owned partition;
// claims fence ownership; a tail index every TailIndexEvery flushes; the
// owner compacts each partition's tail into the version-1 chain and deletes
// its own flush objects once everything in them is compacted.

// Layouts (Options.Layout).
const (
	LayoutSegments = "segments"
	LayoutPacked   = "packed"
	// LayoutAuto is packed for a new archive (no topic archived yet) or
	// one already packed, segments for an existing archive written in the
	// segments layout (format version 1 or 2): starting a new kbackup on
	// an archive never changes its layout.
	LayoutAuto = "auto"
)

// Defaults of the packed layout.
const (
	DefaultCompactBytes = 64 << 20
	DefaultCompactAfter = 2 * time.Hour
	DefaultCompactGrace = time.Hour
	// TailIndexEvery is how many flush objects a writer commits between
	// two tail indexes: a reader reads at most about as many flush tables
	// after the newest tail index.
	TailIndexEvery = 10
	// compactConcurrency bounds concurrent compactions (each holds the
	// bodies of one partition's compacted range in memory).
	compactConcurrency = 2
)

func (a *Archiver) packed() bool { return a.opts.Layout == LayoutPacked }

// ErrLayout: the archive was written in the packed layout and the archiver
// was started with the segments layout.
var ErrLayout = errors.New("wrong layout")

// packedState is the writer's state of the packed layout (loop-owned).
type packedState struct {
	writer   string // random per process (a restart is a new writer)
	seq      int64  // next flush object
	inflight bool
	last     time.Time // start of the last flush
	flushes  int64     // committed flush objects
	// live counts, per own flush object, the entries not yet compacted;
	// objects at 0 are deleted at their due time (after the grace).
	live      map[int64]int
	deleteDue map[int64]time.Time
	// handed are, per own flush object, the entries of partitions this
	// archiver released before compacting them (their next owner
	// compacts them): the object waits until their compacted ends pass
	// them, checked every --compact-after (checkHanded).
	handed            map[int64][]handedEntry
	lastHanded        time.Time
	checkingHandedOff atomic.Bool
	handedEnds        chan map[string]int64
	indexPrev         int64 // seq of the previous tail index (-1 none), deleted when superseded
	indexes           []int64
	results           chan packedResult
	compacts          chan compactResult
	cslots            chan struct{}
	started           time.Time
	lastClean         time.Time
	cleaning          atomic.Bool
}

// packedItem is one partition's segment in a flush.
type packedItem struct {
	tp     tp
	id     manifest.TopicID
	gen    int
	seg    *sealed
	commit *manifest.Commit
	ref    manifest.EntryRef
}

// packedResult is a finished flush attempt.
type packedResult struct {
	seq   int64
	items []packedItem
	err   error
	dur   time.Duration
}

// compactResult is a finished compaction of one partition.
type compactResult struct {
	tp     tp
	gen    int
	commit *manifest.Commit
	refs   []manifest.EntryRef // the entries compacted
	bytes  int64
	err    error
	lost   bool // a newer claim exists: the partition is someone else's
}

func newPackedState(now time.Time) *packedState {
	return &packedState{writer: manifest.NewWriterID(), live: map[int64]int{}, deleteDue: map[int64]time.Time{}, started: now,
		handed: map[int64][]handedEntry{}, handedEnds: make(chan map[string]int64, 1),
		indexPrev: -1, results: make(chan packedResult, 4), compacts: make(chan compactResult, 64),
		cslots: make(chan struct{}, compactConcurrency)}
}

// claimPartition takes ps over in the packed layout (format rule 12): the
// next epoch after the newest claim, starting after the head it read, with
// the tail it found. It returns the head (a tail entry or the compacted
// head), the compacted head, the tail and the epoch.
func (a *Archiver) claimPartition(ctx context.Context, ps *partState) (head, chead *manifest.Commit, tail manifest.PartitionTail, epoch int64, err error) {
	c, err := ps.log.NewestClaim(ctx)
	if err != nil {
		return nil, nil, tail, 0, err
	}
	epoch = 1
	if c != nil {
		epoch = c.Epoch + 1
	}
	if chead, err = ps.log.CompactedHead(ctx); err != nil {
		return nil, nil, tail, 0, err
	}
	if err = ps.log.RepairHead(ctx, chead); err != nil {
		return nil, nil, tail, 0, err
	}
	end := int64(-1)
	if chead != nil {
		end = chead.End
	}
	refs, newest, err := ps.log.TailAnchors(ctx, end)
	if err != nil {
		return nil, nil, tail, 0, err
	}
	head = chead
	tail.Inherit(refs)
	if newest != nil {
		head = newest
	}
	start := int64(0)
	if head != nil {
		start = head.End + 1
	}
	err = ps.log.CreateClaim(ctx, &manifest.Claim{Epoch: epoch, Writer: a.pk.writer, Start: start,
		CreatedMs: a.opts.Now().UnixMilli(), Tail: tail.Refs()})
	if err != nil {
		return nil, nil, tail, 0, err // ErrFenced: another writer claimed it first; the retry reads again
	}
	return head, chead, tail, epoch, nil
}

// packedTick starts a flush when one is due: the flush interval passed
// since the last one, or enough is sealed, or force (shutdown, Once).
func (a *Archiver) packedTick(ctx context.Context, force bool) {
	pk := a.pk
	if pk.inflight {
		return
	}
	now := a.opts.Now()
	due := force || now.Sub(pk.last) >= a.opts.FlushInterval
	var queued int64
	for _, ps := range a.parts {
		for _, s := range ps.queue {
			queued += s.size
		}
	}
	if !due && queued < int64(a.opts.SegmentBytes) {
		return
	}
	var items []packedItem
	for _, ps := range a.parts {
		if !ps.ready || ps.epoch == 0 {
			continue
		}
		if due && ps.open != nil {
			ps.seal()
		}
		if len(ps.queue) == 0 || ps.inflight {
			continue
		}
		ps.inflight = true
		items = append(items, packedItem{tp: ps.tp, id: ps.id, gen: ps.gen, seg: ps.queue[0]})
	}
	if due {
		pk.last = now
	}
	if len(items) == 0 {
		return
	}
	pk.inflight = true
	seq := pk.seq
	pk.seq++ // never reused, whatever the outcome
	// What the builder needs of each partition, read on the loop.
	type input struct {
		ps    *partState
		head  *manifest.Commit
		prev  *manifest.EntryRef
		epoch int64
	}
	ins := make([]input, len(items))
	for i, it := range items {
		ps := a.parts[it.tp]
		var prev *manifest.EntryRef
		if n := ps.ptail.Newest(); n != nil {
			p := *n
			prev = &p
		}
		ins[i] = input{ps: ps, head: ps.head, prev: prev, epoch: ps.epoch}
	}
	nowMs := now.UnixMilli()
	go func() {
		start := time.Now()
		r := packedResult{seq: seq, items: items}
		defer func() {
			r.dur = time.Since(start)
			a.pk.results <- r
			a.wake()
		}()
		fb, err := manifest.NewFlushBuilder(pk.writer, seq)
		if err != nil {
			r.err = err
			return
		}
		for i := range items {
			it := &r.items[i]
			if it.seg.w != nil {
				it.seg.body, it.seg.info = it.seg.w.FinishBody()
				it.seg.w = nil
			}
			in := ins[i]
			c, ref, err := fb.Add(in.epoch, in.head, in.prev, it.tp.topic, in.ps.id, it.tp.partition, it.seg.body.Reader(), it.seg.info, nowMs)
			if err != nil {
				r.err = fmt.Errorf("%s: %w", it.tp, err)
				return
			}
			it.commit, it.ref = c, ref
		}
		err = a.arch.PutFlush(ctx, fb)
		if err != nil && !errors.Is(err, manifest.ErrFenced) {
			// The outcome of a failed PUT is unknown: look.
			if _, serr := a.opts.Store.Stat(ctx, fb.Key()); serr == nil {
				err = nil
			} else if !errors.Is(serr, store.ErrNotFound) {
				err = fmt.Errorf("%w (and whether it landed is unknown: %v)", err, serr)
			}
		}
		r.err = err
	}()
}

// applyPacked applies a finished flush.
func (a *Archiver) applyPacked(ctx context.Context, r packedResult) {
	pk := a.pk
	pk.inflight = false
	if r.err != nil {
		a.m.storeErrors.WithLabelValues("commit").Inc()
		a.opts.Logger.Warn("flush object failed, will retry", "seq", r.seq, "partitions", len(r.items), "err", r.err)
		for _, it := range r.items {
			if ps := a.parts[it.tp]; ps != nil && ps.gen == it.gen {
				ps.inflight = false
				ps.failures++
				if errors.Is(r.err, store.ErrPermanent) || (a.opts.Once && ps.failures >= a.opts.OnceCommitAttempts) {
					a.fatal = fmt.Errorf("commit flush object %d: %w", r.seq, r.err)
				}
			}
		}
		if errors.Is(r.err, manifest.ErrFenced) {
			a.fatal = fmt.Errorf("flush object %d exists: writer id %s is not unique: %w", r.seq, pk.writer, r.err)
		}
		return
	}
	pk.flushes++
	a.m.commitSeconds.Observe(r.dur.Seconds())
	pk.live[r.seq] = len(r.items)
	for _, it := range r.items {
		ps := a.parts[it.tp]
		if ps == nil || ps.gen != it.gen {
			// Released (or claimed again) meanwhile: the entry is the next
			// owner's to compact (if its claim carries it) or void.
			pk.handed[r.seq] = append(pk.handed[r.seq], handedEntry{log: a.arch.Partition(it.tp.topic, it.id, it.tp.partition), end: it.ref.End})
			a.entryDone(r.seq)
			continue
		}
		ps.inflight = false
		ps.failures = 0
		ps.head = it.commit
		if ps.ptail.Empty() {
			ps.tailSince = a.opts.Now()
		}
		ps.ptail.Append(it.ref)
		ps.tailBytes += it.commit.SegmentSize
		ps.own.add(r.seq, it.ref.End)
		ps.queue = ps.queue[1:]
		if it.seg.body != nil {
			it.seg.body.Release()
		}
		a.committed(ps, commitResult{tp: it.tp, gen: it.gen, seg: it.seg, commit: it.commit, dur: r.dur})
	}
	if pk.flushes%TailIndexEvery == 0 {
		a.writeTailIndex(ctx, r.seq)
	}
}

// writeTailIndex writes the tail index after flush object seq (off the
// loop) and deletes the one before the previous: a reader that listed the
// previous one may still read it.
func (a *Archiver) writeTailIndex(ctx context.Context, seq int64) {
	ti := &manifest.TailIndex{Writer: a.pk.writer, Seq: seq}
	for _, ps := range a.parts {
		if refs := ps.ptail.Refs(); refs != nil && ps.epoch > 0 {
			ti.Partitions = append(ti.Partitions, manifest.TailPartition{TopicID: ps.id, Partition: ps.tp.partition, Epoch: ps.epoch, Refs: *refs})
		}
	}
	old := a.pk.indexes
	if len(old) > 1 {
		a.pk.indexes = append([]int64{}, old[len(old)-1:]...)
		old = old[:len(old)-1]
	} else {
		old = nil
	}
	a.pk.indexes = append(a.pk.indexes, seq)
	go func() {
		if err := a.arch.PutTailIndex(ctx, ti); err != nil {
			a.m.storeErrors.WithLabelValues("tail_index").Inc()
			a.opts.Logger.Warn("tail index failed (readers read more flush tables until the next one)", "seq", seq, "err", err)
			return
		}
		for _, s := range old {
			if err := a.opts.Store.Delete(ctx, manifest.TailIndexKey(a.pk.writer, s)); err != nil {
				a.opts.Logger.Warn("deleting a superseded tail index failed", "seq", s, "err", err)
			}
		}
	}()
}

// packedHousekeeping starts due compactions and flush object deletions.
func (a *Archiver) packedHousekeeping(ctx context.Context, now time.Time) {
	pk := a.pk
	for _, ps := range a.parts {
		if !ps.ready || ps.compacting || ps.removing || ps.ptail.Empty() {
			continue
		}
		if ps.tailBytes < a.opts.CompactBytes && now.Sub(ps.tailSince) < a.opts.CompactAfter {
			continue
		}
		select {
		case pk.cslots <- struct{}{}:
		default:
			return
		}
		ps.compacting = true
		a.startCompaction(ctx, ps)
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
		res, err := a.arch.CleanWAL(ctx, manifest.CleanOptions{Self: pk.writer, Idle: a.opts.CompactAfter + max(0, a.opts.CompactGrace), Now: a.opts.Now})
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
		defer func() { <-a.pk.cslots }()
		r := compactResult{tp: t, gen: gen}
		defer func() {
			a.pk.compacts <- r
			a.wake()
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
		refs, commits = refs[:n], commits[:n]
		r.refs = refs
		// Fencing (format rule 14): only the holder of the newest claim
		// compacts.
		if _, err := log.ReadClaim(ctx, epoch+1); err == nil {
			r.lost = true
			return
		} else if !errors.Is(err, store.ErrNotFound) {
			r.err = err
			return
		}
		c, err := log.Compact(ctx, chead, commits, writer, nowMs)
		switch {
		case c != nil:
			// Committed (err: only the time key failed; the next
			// claim's RepairHead, or verify's warning, covers it).
			if err != nil {
				a.m.storeErrors.WithLabelValues("time_index").Inc()
			}
		case errors.Is(err, manifest.ErrFenced):
			// The commit at that start exists: an earlier attempt of ours
			// whose outcome was unknown, or another compactor of the same
			// entries. Continue after it if it covers whole entries.
			h, herr := log.CompactedHead(ctx)
			if herr != nil {
				r.err = herr
				return
			}
			n := 0
			for n < len(refs) && h != nil && refs[n].End <= h.End {
				n++
			}
			if n == 0 || refs[n-1].End != h.End {
				r.err = fmt.Errorf("%w (the compacted head %v does not end at an entry's end)", err, h)
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
		a.opts.Logger.Warn("partition claimed by another archiver meanwhile: claiming it again from the archive's end",
			"topic", r.tp.topic, "partition", r.tp.partition)
		if ps != nil && ps.gen == r.gen && !ps.removing {
			a.reclaim(ctx, ps)
		}
		return
	case r.err != nil:
		a.m.storeErrors.WithLabelValues("compact").Inc()
		if errors.Is(r.err, manifest.ErrFenced) {
			a.m.fenced.Inc()
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
	ps.chead = r.commit
	ps.ptail.TrimTo(r.commit.End)
	ps.own.dropThrough(ownMax)
	ps.tailBytes = max(0, ps.tailBytes-r.bytes)
	if !ps.ptail.Empty() {
		ps.tailSince = a.opts.Now()
	}
}

// packedIdleWait is how long shutdown waits for a compaction in flight.
const packedIdleWait = 10 * time.Second

// packedBusy reports whether a flush is in flight.
func (a *Archiver) packedBusy() bool { return a.pk != nil && a.pk.inflight }

// packedResults and compactResults are the packed layout's result channels
// (nil, never ready, in the segments layout).
func (a *Archiver) packedResults() chan packedResult {
	if a.pk == nil {
		return nil
	}
	return a.pk.results
}

func (a *Archiver) compactResults() chan compactResult {
	if a.pk == nil {
		return nil
	}
	return a.pk.compacts
}

// onceSealed reports, with Once, whether every partition reached its
// target (then the last flush need not wait for the interval).
func (a *Archiver) onceSealed() bool {
	for _, ps := range a.parts {
		if !ps.ready || ps.target >= 0 && ps.next < ps.target {
			return false
		}
	}
	return true
}

// reclaim drops what is buffered for ps and loads (claims) it again.
func (a *Archiver) reclaim(ctx context.Context, ps *partState) {
	ps.gen = nextGen()
	ps.open, ps.queue, ps.failures, ps.retryAt, ps.inflight = nil, nil, 0, time.Time{}, false
	ps.ready, ps.epoch = false, 0
	delete(a.seeks, ps.tp)
	a.cl.RemoveConsumePartitions(map[string][]int32{ps.tp.topic: {ps.tp.partition}})
	go a.loadHead(ctx, ps, ps.gen)
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

// resolveLayout turns LayoutAuto into the layout the archive has: packed
// when it is packed already or holds no topic yet, segments otherwise.
func (a *Archiver) resolveLayout(ctx context.Context) error {
	layout := LayoutPacked
	if a.arch.FormatVersion() < manifest.PackedFormatVersion {
		topics, err := a.arch.Topics(ctx)
		if err != nil {
			return err
		}
		if len(topics) > 0 {
			layout = LayoutSegments
		}
	}
	a.opts.Layout = layout
	if layout == LayoutPacked && a.pk == nil {
		a.pk = newPackedState(a.opts.Now())
	}
	a.opts.Logger.Info("layout", "layout", layout, "format_version", a.arch.FormatVersion())
	return nil
}
