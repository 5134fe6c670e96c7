package archive

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/internal/retry"
	"github.com/kbackup/kbackup/kafkaconn"
	"github.com/kbackup/kbackup/manifest"
)

// This file: which partitions the archiver owns (topic discovery, group
// assignment), starting them at their store heads and stopping them.

// refreshTopics reads metadata and configs for the selected topics.
func (a *Archiver) refreshTopics(ctx context.Context) error {
	a.lastRefresh = a.opts.Now()
	md, err := a.adm.Metadata(ctx)
	if err != nil {
		return err
	}
	next := map[string]topicInfo{}
	var names []string
	for name, td := range md.Topics {
		if td.Err != nil || !a.opts.Selected(name) || manifest.ValidTopic(name) != nil {
			continue
		}
		next[name] = topicInfo{id: manifest.TopicID(td.ID), partitions: int32(len(td.Partitions))}
		names = append(names, name)
	}
	if len(names) > 0 {
		rcs, err := a.adm.DescribeTopicConfigs(ctx, names...)
		if err == nil {
			for _, rc := range rcs {
				for _, c := range rc.Configs {
					if c.Key == "cleanup.policy" && c.Value != nil && strings.Contains(*c.Value, "compact") {
						ti := next[rc.Name]
						ti.compacted = true
						next[rc.Name] = ti
					}
				}
			}
		}
	}
	if !sameTopics(a.topics, next) {
		a.catalogDue = true
	}
	a.topics = next
	return nil
}

func sameTopics(x, y map[string]topicInfo) bool {
	if len(x) != len(y) {
		return false
	}
	for k, v := range x {
		if w, ok := y[k]; !ok || w.id != v.id || w.partitions != v.partitions {
			return false
		}
	}
	return true
}

// owned is the set of partitions this archiver should own now.
func (a *Archiver) owned() map[tp]topicInfo {
	want := map[tp]topicInfo{}
	if a.member != nil {
		for t, ps := range a.member.assigned() {
			ti, ok := a.topics[t]
			if !ok {
				continue
			}
			for _, p := range ps {
				if p < ti.partitions {
					want[tp{t, p}] = ti
				}
			}
		}
		return want
	}
	for t, ti := range a.topics {
		for p := int32(0); p < ti.partitions; p++ {
			want[tp{t, p}] = ti
		}
	}
	return want
}

// reconcile starts partitions newly owned and stops those no longer owned.
func (a *Archiver) reconcile(ctx context.Context) {
	want := a.owned()
	if a.revokedListed(want) {
		// The group's client refreshes metadata on its own schedule and
		// may revoke a deleted topic's partitions before this archiver's
		// refresh saw the deletion: look now, so that a deleted
		// incarnation's tail is compacted before its partitions are
		// released (compactOrphan) rather than handed over to nobody.
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := a.refreshTopics(rctx); err != nil {
			a.opts.Logger.Warn("topic refresh failed", "err", err)
		}
		cancel()
		want = a.owned()
	}
	var remove []*partState
	for k, ps := range a.parts {
		ti, ok := want[k]
		if !ok || ti.id != ps.id {
			remove = append(remove, ps)
		}
	}
	sort.Slice(remove, func(i, j int) bool { return remove[i].tp.String() < remove[j].tp.String() })
	purge := map[string]bool{}
	for _, ps := range remove {
		a.stopPartition(ctx, ps)
		if ti, ok := a.topics[ps.tp.topic]; !ok || ti.id != ps.id {
			purge[ps.tp.topic] = true // deleted or re-created: forget its old id
		}
	}
	for t := range purge {
		if !a.holdsTopic(t) {
			a.cl.PurgeTopicsFromClient(t)
		}
	}
	started := map[string][]int32{}
	for k, ti := range want {
		if a.parts[k] != nil {
			continue
		}
		if purge[k.topic] && a.holdsOther(k.topic, ti.id) {
			continue // the old incarnation is still flushing
		}
		if !a.holdsTopic(k.topic) || started[k.topic] != nil {
			started[k.topic] = append(started[k.topic], k.partition)
		}
		ps := &partState{tp: k, id: ti.id, compacted: ti.compacted, target: -1, gen: nextGen(),
			log: a.arch.Partition(k.topic, ti.id, k.partition)}
		a.parts[k] = ps
		a.m.partitionStarted(k.topic, k.partition)
		go a.loadHead(ctx, ps, ps.gen, nil)
	}
	for _, t := range slices.Sorted(maps.Keys(started)) {
		ps := started[t]
		slices.Sort(ps)
		a.opts.Logger.Info("archiving topic", "topic", t, "topic_id", a.topics[t].id.String(), "partitions", fmt.Sprint(ps))
	}
	if a.member != nil {
		held := make(map[tp]bool, len(a.parts))
		for k := range a.parts {
			held[k] = true
		}
		a.member.report(held)
	}
}

// revokedListed reports whether the group took a partition away (packed
// layout, not yet stopping, holding an uncompacted tail) whose topic
// incarnation this archiver still lists.
func (a *Archiver) revokedListed(want map[tp]topicInfo) bool {
	if a.member == nil || !a.packed() {
		return false
	}
	for k, ps := range a.parts {
		if _, ok := want[k]; ok || ps.removing || ps.ptail.Empty() {
			continue
		}
		if ti, ok := a.topics[k.topic]; ok && ti.id == ps.id {
			return true
		}
	}
	return false
}

// holdsOther reports whether a partition of another incarnation of topic
// than id is still held (not the new incarnation's, started just before).
func (a *Archiver) holdsOther(topic string, id manifest.TopicID) bool {
	for k, ps := range a.parts {
		if k.topic == topic && ps.id != id {
			return true
		}
	}
	return false
}

// holdsTopic reports whether any partition of topic is still held.
func (a *Archiver) holdsTopic(topic string) bool {
	for k := range a.parts {
		if k.topic == topic {
			return true
		}
	}
	return false
}

// stopPartition flushes what is buffered (best effort: if ownership moved,
// fencing makes a late commit harmless) and stops consuming the partition.
func (a *Archiver) stopPartition(ctx context.Context, ps *partState) {
	if !ps.removing {
		ps.removing = true
		ps.seal()
		delete(a.seeks, ps.tp)
		a.cl.RemoveConsumePartitions(map[string][]int32{ps.tp.topic: {ps.tp.partition}})
	}
	a.kick(ctx, ps)
	if ps.adopted && !ps.ready {
		return // adopted (adoptOrphans): wait for its claim
	}
	if ps.salvageFrom != nil {
		// Claimed again to recommit its void entries (salvageDeleted), a
		// segment's worth per claim: wait for the claim and the flush, then
		// claim it again for the next piece.
		if ps.ready && ps.idle() {
			a.reclaim(ctx, ps)
		}
		return
	}
	if ps.idle() {
		if a.packed() && !ps.ptail.Empty() && a.topicGone(ps) && !a.compactOrphan(ctx, ps) {
			return // its tail is being compacted
		}
		delete(a.parts, ps.tp)
		a.m.partitionReleased(ps.tp.topic, ps.tp.partition)
		if a.packed() {
			a.handOver(ps)
		}
		a.opts.Logger.Info("partition released", "topic", ps.tp.topic, "partition", ps.tp.partition, "archived_to", ps.committedNext(),
			"topic_deleted", a.topicGone(ps))
		if !a.holdsTopic(ps.tp.topic) {
			a.opts.Logger.Info("stopped archiving topic", "topic", ps.tp.topic)
		}
	}
}

// topicGone reports whether ps's topic incarnation was deleted (or the
// topic re-created with a new id).
func (a *Archiver) topicGone(ps *partState) bool {
	ti, ok := a.topics[ps.tp.topic]
	return !ok || ti.id != ps.id
}

// ensureTopic writes a topic incarnation's marker once per process.
func (a *Archiver) ensureTopic(ctx context.Context, topic string, id manifest.TopicID) error {
	k := topic + "/" + id.String()
	a.ensuredMu.Lock()
	done := a.ensured[k]
	a.ensuredMu.Unlock()
	if done {
		return nil
	}
	if err := a.arch.EnsureTopic(ctx, topic, id, a.opts.Now().UnixMilli()); err != nil {
		return err
	}
	a.ensuredMu.Lock()
	if a.ensured == nil {
		a.ensured = map[string]bool{}
	}
	a.ensured[k] = true
	a.ensuredMu.Unlock()
	return nil
}

// loadResult is a loaded head, delivered to the loop.
type loadResult struct {
	tp      tp
	gen     int
	head    *manifest.Commit
	start   *manifest.ArchiveStart
	err     error
	claimed claimed // packed layout
	// salvage holds the records of the void entries after salvageFrom
	// that the claim's chain lacks (nil: none, or they could not be read)
	salvage *manifest.SegmentWriter
}

// loadHead reads the partition's head (and repairs its time key) off the
// loop goroutine; the loop then starts consuming at head.End+1. With
// salvageFrom (packed, a reclaim after a lost claim) it also reads the
// void entries' records the new chain lacks (manifest.Salvage).
func (a *Archiver) loadHead(ctx context.Context, ps *partState, gen int, salvageFrom *manifest.EntryRef) {
	a.sem <- struct{}{}
	defer func() { <-a.sem }()
	var head *manifest.Commit
	var start *manifest.ArchiveStart
	var cl claimed
	policy := storeRetry
	if a.opts.Once {
		policy.Attempts = a.opts.OnceCommitAttempts
	}
	policy.OnRetry = func(_ int, err error, _ time.Duration) {
		a.m.storeErrors.WithLabelValues("load_head").Inc()
		a.opts.Logger.Warn("reading partition head failed, retrying", "topic", ps.tp.topic, "partition", ps.tp.partition, "err", err)
	}
	var salvage *manifest.SegmentWriter
	err := retry.Do(ctx, policy, func(ctx context.Context) error {
		if err := a.ensureTopic(ctx, ps.tp.topic, ps.id); err != nil {
			return err
		}
		if a.packed() {
			var err error
			if cl, err = a.claimPartition(ctx, ps); err != nil {
				return err
			}
			head = cl.head
			start, err = ps.log.ArchiveStart(ctx)
			return err
		}
		h, err := ps.log.Head(ctx)
		if err != nil {
			return err
		}
		if err := ps.log.RepairHead(ctx, h); err != nil {
			return err
		}
		st, err := ps.log.ArchiveStart(ctx)
		if err != nil {
			return err
		}
		head, start = h, st
		return nil
	})
	if err == nil && salvageFrom != nil && a.packed() {
		after := int64(-1)
		if head != nil {
			after = head.End
		}
		var serr error
		// At most a segment at a time, and a quarter of the memory bound
		// (it is held before the bound counts it): the next claim goes on.
		limit := min(int64(a.opts.SegmentBytes), max(a.opts.MaxBufferedBytes/4, 1))
		salvage, serr = ps.log.Salvage(ctx, *salvageFrom, after, manifest.SegmentOptions{Codec: a.opts.codec, BlockSize: a.opts.BlockBytes}, int(limit))
		if serr != nil {
			// Kafka still has them unless the topic was deleted.
			a.opts.Logger.Warn("reading the entries another archiver's claim voided failed: fetching their records again",
				"topic", ps.tp.topic, "partition", ps.tp.partition, "err", serr)
		}
	}
	select {
	case a.loaded <- loadResult{tp: ps.tp, gen: gen, head: head, start: start, err: err, claimed: cl, salvage: salvage}:
		a.wake()
	case <-ctx.Done():
	}
}

// drainResults applies finished commits and head loads, then starts the
// consumption of every partition that needs it in one call.
func (a *Archiver) drainResults(ctx context.Context) {
	defer a.flushSeeks()
	freed := false
	for {
		select {
		case r := <-a.results:
			a.applyResult(ctx, r)
			freed = true
		case l := <-a.loaded:
			a.applyLoad(l)
		case r := <-a.expiries:
			a.applyExpiry(r)
		case r := <-a.packedResults():
			a.applyPacked(ctx, r)
		case r := <-a.compactResults():
			a.applyCompaction(ctx, r)
		case kept := <-a.keptPartitions():
			a.adoptOrphans(ctx, kept)
		case ends := <-a.handedResults():
			a.applyHanded(ends)
		case r := <-a.claimChecks():
			a.applyClaimCheck(ctx, r)
		default:
			if freed {
				// Commit slots were freed: start the commits that waited
				// for one (kick is non-blocking on the concurrency bound).
				for _, ps := range a.parts {
					if len(ps.queue) > 0 && !ps.inflight {
						a.kick(ctx, ps)
					}
				}
			}
			return
		}
	}
}

// seek (re)starts consuming t at offset at. Seeks are batched: each
// Add/RemoveConsumePartitions call triggers a metadata refresh, which must
// not happen once per partition when thousands start together.
func (a *Archiver) seek(t tp, at kgo.Offset) {
	if a.seeks == nil {
		a.seeks = map[tp]kgo.Offset{}
	}
	a.seeks[t] = at
}

func (a *Archiver) flushSeeks() {
	if len(a.seeks) == 0 {
		return
	}
	remove := map[string][]int32{}
	add := map[string]map[int32]kgo.Offset{}
	for t, at := range a.seeks {
		remove[t.topic] = append(remove[t.topic], t.partition)
		if add[t.topic] == nil {
			add[t.topic] = map[int32]kgo.Offset{}
		}
		add[t.topic][t.partition] = at
	}
	a.cl.RemoveConsumePartitions(remove) // drops buffered fetches of the old position
	a.cl.AddConsumePartitions(add)
	a.seeks = nil
}

func (a *Archiver) applyLoad(l loadResult) {
	ps := a.parts[l.tp]
	if ps == nil || l.gen != ps.gen {
		return
	}
	if l.err != nil {
		if a.opts.Once || errors.Is(l.err, manifest.ErrCorrupt) || errors.Is(l.err, manifest.ErrUnsupportedVersion) {
			a.fatal = fmt.Errorf("load head of %s: %w", l.tp, l.err)
		}
		return
	}
	ps.head, ps.start = l.head, l.start
	ps.chead, ps.ptail, ps.epoch, ps.tailBytes, ps.tailSince = l.claimed.chead, l.claimed.tail, l.claimed.epoch, 0, l.claimed.since
	if ps.tailSince.IsZero() || ps.tailSince.After(a.opts.Now()) {
		ps.tailSince = a.opts.Now()
	}
	if a.pk != nil && a.opts.ClaimCheckInterval > 0 {
		// Spread over the interval: partitions claimed together are not
		// checked together.
		iv := a.opts.ClaimCheckInterval
		ps.claimCheckAt = a.opts.Now().Add(iv/2 + rand.N(iv/2+1))
	}
	ps.next = ps.committedNext()
	ps.ready = true
	a.discard(ps)
	if w := l.salvage; w != nil && w.Next() > ps.next {
		// The void entries' records, recommitted under this claim by the
		// next flush; fetching resumes after them.
		ps.queue = append(ps.queue, &sealed{w: w, writer: w, start: w.Start(), size: int64(w.Held()), firstSeen: a.opts.Now()})
		a.opts.Logger.Info("recommitting what this archiver committed under the claim it lost", "topic", ps.tp.topic, "partition", ps.tp.partition,
			"from", w.Start(), "to", w.Next()-1)
		ps.next = w.Next()
	}
	if from := ps.salvageFrom; from != nil && (l.salvage == nil || ps.next > from.End) {
		ps.salvageFrom = nil // all recommitted once this is flushed, or the void entries could not be read
		if l.salvage == nil && ps.next <= from.End {
			a.lostDeleted(ps)
		}
	}
	a.updateHeadMetrics(ps)
	if ps.removing {
		return // a deleted topic's partition, claimed again to recommit its void entries: nothing to fetch
	}
	if a.opts.Once {
		ps.target = a.onceTargets[ps.tp]
		// A log with no records left between our position and its end
		// returns nothing to fetch: record the hole now.
		if start, ok := a.onceStarts[ps.tp]; ok && start >= ps.target && ps.next < ps.target {
			reason := manifest.GapDataLoss
			if ps.head == nil {
				reason = manifest.GapBeforeStart
			}
			w := ps.writer(a, a.opts.Now())
			if err := w.AddGap(ps.target-1, reason); err != nil {
				a.fatal = fmt.Errorf("%s: %w", ps.tp, err)
				return
			}
			ps.next = ps.target
			ps.seal()
		}
		if ps.next >= ps.target {
			return // nothing to fetch
		}
	}
	at := kgo.NewOffset().At(ps.next)
	if ps.head == nil {
		at = kgo.NewOffset().AtStart()
	}
	a.seek(ps.tp, at)
	a.opts.Logger.Debug("partition started", "topic", ps.tp.topic, "partition", ps.tp.partition, "from", ps.next)
}

func (a *Archiver) updateHeadMetrics(ps *partState) {
	l := []string{ps.tp.topic, strconv.Itoa(int(ps.tp.partition))}
	a.m.archivedOffset.WithLabelValues(l...).Set(float64(ps.committedNext()))
	a.m.archiveStart.WithLabelValues(l...).Set(float64(ps.start.StartOffset()))
	if h := ps.head; h != nil && h.FirstTimestamp != math.MaxInt64 {
		earliest := h.FirstTimestamp
		if ps.start != nil && ps.start.OldestTimestamp != nil {
			earliest = *ps.start.OldestTimestamp // the recoverable window's
		}
		a.m.earliestTs.WithLabelValues(l...).Set(float64(earliest) / 1000)
		a.m.latestTs.WithLabelValues(l...).Set(float64(h.RunningMaxTimestamp) / 1000)
	}
}

// setOnceTargets records, for Once, where each selected partition ends now.
func (a *Archiver) setOnceTargets(ctx context.Context) error {
	var names []string
	for t := range a.topics {
		names = append(names, t)
	}
	if len(names) == 0 {
		return nil
	}
	list := a.adm.ListCommittedOffsets // last stable offsets
	if a.opts.ReadUncommitted {
		list = a.adm.ListEndOffsets
	}
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// Retriable partition errors (a leader just elected answers
	// OFFSET_NOT_AVAILABLE for a moment) are retried within the timeout.
	offs, err := kafkaconn.ListOffsetsRetrying(lctx, func(ctx context.Context) (kadm.ListedOffsets, error) { return list(ctx, names...) })
	if err != nil {
		return fmt.Errorf("list end offsets: %w", err)
	}
	starts, err := kafkaconn.ListOffsetsRetrying(lctx, func(ctx context.Context) (kadm.ListedOffsets, error) {
		return a.adm.ListStartOffsets(ctx, names...)
	})
	if err != nil {
		return fmt.Errorf("list start offsets: %w", err)
	}
	a.onceTargets, a.onceStarts = map[tp]int64{}, map[tp]int64{}
	var ferr error
	offs.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			ferr = fmt.Errorf("end offset of %s/%d: %w", o.Topic, o.Partition, o.Err)
			return
		}
		a.onceTargets[tp{o.Topic, o.Partition}] = o.Offset
	})
	starts.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			a.onceStarts[tp{o.Topic, o.Partition}] = o.Offset
		}
	})
	return ferr
}
