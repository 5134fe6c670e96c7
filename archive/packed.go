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
	// an archive never changes its layout. With Once a new archive gets the
	// segments layout: --once compacts at its end only the tails that are
	// --compact-after old, so what a cron job writes into a new archive
	// would not become expirable (retention acts on compacted data) until a
	// later run, which is not what retention examples of --once expect.
	LayoutAuto = "auto"
)

// Defaults of the packed layout.
const (
	DefaultCompactBytes = 64 << 20
	DefaultCompactAfter = 2 * time.Hour
	DefaultCompactGrace = time.Hour
	// DefaultClaimCheckInterval: 1,000 partitions make 1.7 GETs a second.
	DefaultClaimCheckInterval = 10 * time.Minute
	// TailIndexEvery is how many flush objects a writer commits between
	// two tail indexes: a reader reads at most about as many flush tables
	// after the newest tail index.
	TailIndexEvery = 10
	// compactConcurrency bounds concurrent compactions (each copies one
	// partition's range, a block at a time; with S3, through a multipart
	// part buffer).
	compactConcurrency = 2
	// claimCheckConcurrency bounds concurrent claim checks.
	claimCheckConcurrency = 4
	// packedStageAfter is how many blocks a partition's segment holds in
	// memory before it is streamed to a staged object of its own (with a
	// store that stages: a local directory). Such a segment becomes a
	// flush object of its own, at least this many blocks large (4 MiB at
	// the default block size, so at most one PUT per 4 MiB of a busy
	// partition); smaller ones share the flush object.
	packedStageAfter = 4
	// maxStreamedFlushes bounds the streamed flush objects being filled
	// (reserved for a keyed staged object, flush not started: each holds
	// a part buffer) and, with a store that stages without a key, the
	// streamed flush objects in flight.
	maxStreamedFlushes = 4
	// maxStreamedInFlight bounds every streamed flush object reserved or
	// in flight. A busy partition's streamed segment sealed at a flush
	// completes (its last part, the completion, the commit) while the
	// partition's next segment fills: counting the completing ones
	// against maxStreamedFlushes refused the next segments staging, and
	// they were held in memory, block by block, until their own seal.
	maxStreamedInFlight = 2 * maxStreamedFlushes
)

func (a *Archiver) packed() bool { return a.opts.Layout == LayoutPacked }

// ErrLayout: the archive was written in the packed layout and the archiver
// was started with the segments layout.
var ErrLayout = errors.New("wrong layout")

// packedState is the writer's state of the packed layout (loop-owned).
type packedState struct {
	writer string // random per process (a restart is a new writer)
	seq    int64  // next flush object
	// shared is set while the flush object shared by the partitions
	// holding their segments in memory is in flight (one at a time);
	// flushing holds the seqs of every flush object in flight, streamed
	// ones (a partition's staged segment alone) included, and those
	// reserved for segments being streamed to a keyed staged object
	// (stageFlush): true once the flush started, false while reserved.
	shared   bool
	flushing map[int64]bool
	// indexDue: a tail index is due, written once no flush object below
	// the newest committed one is in flight.
	indexDue bool
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
	checks            chan claimCheck // finished claim checks
	checkSlots        chan struct{}
	started           time.Time
	lastClean         time.Time
	cleaning          atomic.Bool
	kept              chan []manifest.KeptPartition // partitions whose tails kept stopped writers' flush objects (cleanWAL)
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
	seq    int64
	items  []packedItem
	shared bool // the shared flush object (else a streamed segment's own)
	err    error
	dur    time.Duration
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
	// restSince is when the oldest entry left out by the size bound was
	// committed (zero if none was).
	restSince time.Time
}

func newPackedState(now time.Time) *packedState {
	return &packedState{writer: manifest.NewWriterID(), live: map[int64]int{}, deleteDue: map[int64]time.Time{}, started: now,
		handed: map[int64][]handedEntry{}, handedEnds: make(chan map[string]int64, 1),
		indexPrev: -1, flushing: map[int64]bool{}, results: make(chan packedResult, 1+maxStreamedInFlight), compacts: make(chan compactResult, 64),
		cslots: make(chan struct{}, compactConcurrency), checks: make(chan claimCheck, 64), checkSlots: make(chan struct{}, claimCheckConcurrency),
		kept: make(chan []manifest.KeptPartition, 1)}
}

// claimed is what claimPartition found and claimed.
type claimed struct {
	head  *manifest.Commit // a tail entry or the compacted head
	chead *manifest.Commit // the compacted head
	tail  manifest.PartitionTail
	epoch int64
	// since is when the tail's oldest known entry was committed (zero for
	// an empty tail): an inherited tail is due for compaction by its age,
	// not by when it was inherited (restarts more often than
	// --compact-after would otherwise keep it from ever compacting).
	since time.Time
}

// claimPartition takes ps over in the packed layout (format rule 12): the
// next epoch after the newest claim, starting after the head it read, with
// the tail it found.
func (a *Archiver) claimPartition(ctx context.Context, ps *partState) (claimed, error) {
	var cl claimed
	c, err := ps.log.NewestClaim(ctx)
	if err != nil {
		return cl, err
	}
	cl.epoch = 1
	if c != nil {
		cl.epoch = c.Epoch + 1
	}
	if cl.chead, err = ps.log.CompactedHead(ctx); err != nil {
		return cl, err
	}
	if err = ps.log.RepairHead(ctx, cl.chead); err != nil {
		return cl, err
	}
	end := int64(-1)
	if cl.chead != nil {
		end = cl.chead.End
	}
	refs, newest, err := ps.log.TailAnchors(ctx, end)
	if err != nil {
		return cl, err
	}
	cl.head = cl.chead
	cl.tail.Inherit(refs)
	if newest != nil {
		cl.head = newest
		// Date the tail by its oldest anchor (an inherited tail's anchors
		// are at most TailSparseEvery entries apart, the first one near
		// its start): one ranged GET. Only a schedule depends on it: if
		// it cannot be read, the tail counts from now (compaction reads
		// the entries anyway, and reports what is wrong with them).
		oldest := newest
		if len(refs.Sparse) > 0 {
			if oldest, err = ps.log.EntryCommit(ctx, refs.Sparse[0]); err != nil {
				a.opts.Logger.Warn("reading the inherited tail's oldest entry failed: its age counts from now", "topic", ps.tp.topic, "partition", ps.tp.partition, "err", err)
				oldest = nil
			}
		}
		if oldest != nil {
			cl.since = time.UnixMilli(oldest.CommittedAt)
		}
	}
	start := int64(0)
	if cl.head != nil {
		start = cl.head.End + 1
	}
	err = ps.log.CreateClaim(ctx, &manifest.Claim{Epoch: cl.epoch, Writer: a.pk.writer, Start: start,
		CreatedMs: a.opts.Now().UnixMilli(), Tail: cl.tail.Refs()})
	if err != nil {
		return cl, err // ErrFenced: another writer claimed it first; the retry reads again
	}
	return cl, nil
}

// packedTick starts a flush when one is due: the flush interval passed
// since the last one, or enough is sealed, or force (shutdown, Once). The
// partitions whose segments are held in memory share one flush object (one
// in flight at a time); a sealed segment that was streamed to a staged
// object (a busy partition, with a store that stages) is completed into a
// flush object of its own at once, beside it.
func (a *Archiver) packedTick(ctx context.Context, force bool) {
	pk := a.pk
	now := a.opts.Now()
	due := !pk.shared && (force || now.Sub(pk.last) >= a.opts.FlushInterval)
	var queued int64
	for _, ps := range a.parts {
		for _, s := range ps.queue {
			queued += s.size
		}
	}
	take := due || !pk.shared && queued >= int64(a.opts.SegmentBytes)
	if due {
		pk.last = now
	}
	var items []packedItem
	_, streams := pk.streams()
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
		it := packedItem{tp: ps.tp, id: ps.id, gen: ps.gen, seg: ps.queue[0]}
		if it.seg.res.ok {
			// Its seq was reserved (and counted in streams) when staging
			// began.
			ps.inflight = true
			a.startFlush(ctx, []packedItem{it}, false, now)
			continue
		}
		if it.seg.streamed() {
			if streams < maxStreamedFlushes {
				streams++
				ps.inflight = true
				a.startFlush(ctx, []packedItem{it}, false, now)
			}
			continue
		}
		if take {
			ps.inflight = true
			items = append(items, it)
		}
	}
	if len(items) > 0 {
		a.startFlush(ctx, items, true, now)
	}
}

// kickReserved starts the flush of ps's oldest sealed segment at once if
// it was streamed under a reserved seq (stageFlush) and nothing of ps is in
// flight: its flush object is its own and its seq is counted already, so
// it need not wait for packedTick. Waiting would also keep the partition's
// next segment from staging (its earlier segment has no flush object yet)
// and so in memory, block by block, until the tick. A segment whose flush
// failed is retried by packedTick, at its pace.
func (a *Archiver) kickReserved(ctx context.Context, ps *partState) {
	if !ps.ready || ps.epoch == 0 || ps.inflight || ps.failures > 0 || len(ps.queue) == 0 || !ps.queue[0].res.ok {
		return
	}
	ps.inflight = true
	a.startFlush(ctx, []packedItem{{tp: ps.tp, id: ps.id, gen: ps.gen, seg: ps.queue[0]}}, false, a.opts.Now())
}

// stageFlush stages the flush object of ps's open segment with a store
// that stages only by key (S3: a multipart upload to the key from the
// first part on). It reserves the object's seq now, so the partition's
// earlier segments must all have a seq already (committed, in flight or
// reserved):
// its entries must be in ascending seqs (format rule 13; if the one in
// flight fails and is retried under a newer seq, this segment is lost at
// its flush and fetched again). At most maxStreamedFlushes are being
// filled and maxStreamedInFlight filled or completing at once (each holds
// one or two parts in memory until its last part is sent). An error keeps
// the segment in memory, as without staging.
func (a *Archiver) stageFlush(ps *partState, ks store.KeyedStager) (store.Staged, error) {
	pk := a.pk
	filling, streams := pk.streams()
	switch {
	case filling >= maxStreamedFlushes || streams >= maxStreamedInFlight:
		return nil, errors.New("streamed flush objects at their bound")
	case !ps.queuedHaveSeqs():
		return nil, errors.New("an earlier segment has no flush object yet")
	case ps.openRes.ok:
		return nil, errors.New("staged already")
	}
	seq := pk.seq
	st, err := ks.StageAt(context.Background(), manifest.FlushKey(pk.writer, seq))
	if err != nil {
		return nil, err
	}
	pk.seq++ // never reused, whatever the outcome
	pk.flushing[seq] = false
	ps.openRes = reservation{seq: seq, ok: true}
	return st, nil
}

// streams counts the streamed flush objects: those reserved whose flush
// did not start (filling), and all reserved or in flight.
func (pk *packedState) streams() (filling, all int) {
	for _, started := range pk.flushing {
		if !started {
			filling++
		}
	}
	all = len(pk.flushing)
	if pk.shared {
		all--
	}
	return filling, all
}

// queuedHaveSeqs reports whether every sealed segment of ps has its flush
// object's seq: in flight (only the oldest can be) or reserved.
func (ps *partState) queuedHaveSeqs() bool {
	for i, s := range ps.queue {
		if !s.res.ok && (i > 0 || !ps.inflight) {
			return false
		}
	}
	return true
}

// discard drops ps's segments (partState.discard) and releases the flush
// object seqs reserved for them whose flush did not start: no tail index
// waits for those (they are never created).
func (a *Archiver) discard(ps *partState) {
	res := ps.discard()
	if a.pk == nil {
		return
	}
	for _, seq := range res {
		if started, ok := a.pk.flushing[seq]; ok && !started {
			delete(a.pk.flushing, seq)
		}
	}
}

// startFlush writes the next flush object with items (off the loop), or
// the one reserved for a streamed segment (one item); its result comes
// back on pk.results.
func (a *Archiver) startFlush(ctx context.Context, items []packedItem, shared bool, now time.Time) {
	pk := a.pk
	seq := pk.seq
	if res := items[0].seg.res; res.ok && !shared {
		seq = res.seq
	} else {
		pk.seq++ // never reused, whatever the outcome
	}
	pk.flushing[seq] = true
	pk.shared = pk.shared || shared
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
		r := packedResult{seq: seq, items: items, shared: shared}
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
			c, ref, err := fb.AddBody(in.epoch, in.head, in.prev, it.tp.topic, in.ps.id, it.tp.partition, it.seg.body, it.seg.info, nowMs)
			if err != nil {
				if it.seg.body.Streamed() {
					it.seg.body.Release() // its bytes cannot be committed: archived again
					err = fmt.Errorf("%w: %w", manifest.ErrSegmentLost, err)
				}
				r.err = fmt.Errorf("%s: %w", it.tp, err)
				return
			}
			it.commit, it.ref = c, ref
		}
		err = a.arch.PutFlush(ctx, fb)
		if err != nil && !errors.Is(err, manifest.ErrFenced) && !fb.Streamed() {
			// The outcome of a failed PUT is unknown: look. (A streamed
			// object's publishing looked already.)
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
	pk.resolved(r)
	if r.err != nil {
		a.m.storeErrors.WithLabelValues("commit").Inc()
		if errors.Is(r.err, manifest.ErrSegmentLost) {
			// A streamed segment's staged bytes are gone: its records are
			// fetched again from the partition's head, into segments held
			// in memory until a flush succeeds.
			a.opts.Logger.Warn("writing a flush object failed: archiving its records again", "seq", r.seq, "err", r.err)
			for _, it := range r.items {
				if ps := a.parts[it.tp]; ps != nil && ps.gen == it.gen {
					ps.inflight = false
					ps.holdNext = true
					a.resync(ctx, ps, ps.head, nil)
				}
			}
			a.writeDueTailIndex(ctx)
			return
		}
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
		a.writeDueTailIndex(ctx)
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
		ps.holdNext = false
		ps.head = it.commit
		if ps.ptail.Empty() {
			ps.tailSince = a.opts.Now()
		}
		ps.ptail.Append(it.ref)
		ps.flushedSince = true
		ps.tailBytes += it.commit.SegmentSize
		ps.own.add(r.seq, it.ref.End)
		ps.queue = ps.queue[1:]
		if it.seg.body != nil {
			it.seg.body.Release()
		}
		a.committed(ps, commitResult{tp: it.tp, gen: it.gen, seg: it.seg, commit: it.commit, dur: r.dur})
		a.kickReserved(ctx, ps) // its next segment, if sealed meanwhile
	}
	if pk.flushes%TailIndexEvery == 0 {
		pk.indexDue = true
	}
	a.writeDueTailIndex(ctx)
	if r.shared {
		// The next shared flush object, if enough is sealed already, need
		// not wait for the next tick: a catch-up whose segments are held
		// (staging refused at the bound of streamed ones, or a store that
		// does not stage) would move one shared object per tick.
		a.packedTick(ctx, a.opts.Once && a.onceSealed())
	}
}

// resolved records that flush object r.seq is no longer in flight.
func (pk *packedState) resolved(r packedResult) {
	delete(pk.flushing, r.seq)
	if r.shared {
		pk.shared = false
	}
}

// writeDueTailIndex writes a due tail index once it can be exact: a tail
// index at seq S tells readers to skip the flush objects up to S, so none
// of those may still be in flight (format rule 13). It is written after
// the newest committed flush object below every one in flight.
func (a *Archiver) writeDueTailIndex(ctx context.Context) {
	if at, ok := a.pk.dueIndexSeq(); ok {
		a.pk.indexDue = false
		a.writeTailIndex(ctx, at)
	}
}

// dueIndexSeq is the seq at which a due tail index can be written now: the
// newest flush object started, or the one below the oldest in flight, if
// above the last tail index's.
func (pk *packedState) dueIndexSeq() (int64, bool) {
	if !pk.indexDue {
		return 0, false
	}
	at := pk.seq - 1
	for seq := range pk.flushing {
		at = min(at, seq-1)
	}
	return at, at >= 0 && at > pk.indexedSeq()
}

// indexedSeq is the seq of the newest tail index written (-1 for none).
func (pk *packedState) indexedSeq() int64 {
	if len(pk.indexes) == 0 {
		return -1
	}
	return pk.indexes[len(pk.indexes)-1]
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

// reclaim drops what is buffered for ps and loads (claims) it again (with
// salvageFrom set, the new claim first recommits the void entries' records
// from the store).
func (a *Archiver) reclaim(ctx context.Context, ps *partState) {
	a.stopForReclaim(ps)
	go a.loadHead(ctx, ps, ps.gen, ps.salvageFrom)
}

// reclaimLater is reclaim after delay: the partition stops now (what it
// would commit under the lost claim is void anyway) and is claimed again
// by the housekeeping once the delay passed, if it is still this
// archiver's then. A group member that lost a claim may be the zombie: an
// archiver paused past its session, which the group already replaced and
// which has not heard so yet. Claiming at once would void the new owner's
// commits until that owner's next claim check; within a session timeout
// the zombie learns of the rebalance, the group revokes the partition and
// the reclaim never happens.
func (a *Archiver) reclaimLater(ps *partState, delay time.Duration) {
	a.stopForReclaim(ps)
	ps.reclaimAt = a.opts.Now().Add(delay)
}

// reclaimDue starts the deferred reclaims that are due (housekeeping).
func (a *Archiver) reclaimDue(ctx context.Context, now time.Time) {
	for _, ps := range a.parts {
		if !ps.reclaimAt.IsZero() && !now.Before(ps.reclaimAt) {
			ps.reclaimAt = time.Time{}
			a.opts.Logger.Info("claiming the partition again", "topic", ps.tp.topic, "partition", ps.tp.partition)
			go a.loadHead(ctx, ps, ps.gen, ps.salvageFrom)
		}
	}
}

// stopForReclaim drops the partition's state under its lost claim: a new
// generation, nothing buffered or in flight, not fetched.
func (a *Archiver) stopForReclaim(ps *partState) {
	ps.reclaimAt = time.Time{}
	ps.gen = nextGen()
	a.discard(ps)
	ps.failures, ps.retryAt, ps.inflight = 0, time.Time{}, false
	ps.ready, ps.epoch = false, 0
	// Checks and compactions in flight belong to the old generation (their
	// results are dropped); the new claim starts its own.
	ps.compacting, ps.claimChecking = false, false
	delete(a.seeks, ps.tp)
	a.cl.RemoveConsumePartitions(map[string][]int32{ps.tp.topic: {ps.tp.partition}})
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
		if len(topics) > 0 || a.opts.Once {
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
