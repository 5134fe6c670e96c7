package archive

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/manifest"
)

// Archiver streams the selected partitions into the store. Create it with
// New and run it with Run; it is not reusable after Run returns.
type Archiver struct {
	opts     Options
	m        *metrics
	arch     *manifest.Archive
	cl       *kgo.Client
	adm      *kadm.Client
	member   *membership
	writerID string

	parts   map[tp]*partState
	topics  map[string]topicInfo // selected topics as last seen in metadata
	results chan commitResult
	loaded  chan loadResult
	sem     chan struct{}
	paused  bool

	onceTargets map[tp]int64 // Once: end offsets seen at start
	onceStarts  map[tp]int64 // Once: log start offsets seen at start

	lastRefresh    time.Time
	lastCatalog    time.Time
	catalogDue     bool
	catalogRunning atomic.Bool // a capture goroutine is running
	fatal          error

	statusMu sync.Mutex
	status   Status

	seeks map[tp]kgo.Offset // pending (re)starts of consumption, see seek

	ensuredMu sync.Mutex
	ensured   map[string]bool // topic incarnation markers written

	wakeMu   sync.Mutex
	wakePoll context.CancelFunc // cancels the current PollFetches wait
}

// wake interrupts the loop's PollFetches so a finished commit or head load
// is applied at once rather than after the poll timeout.
func (a *Archiver) wake() {
	a.wakeMu.Lock()
	if a.wakePoll != nil {
		a.wakePoll()
	}
	a.wakeMu.Unlock()
}

// topicInfo is what the archiver knows of a selected topic.
type topicInfo struct {
	id         manifest.TopicID
	partitions int32
	compacted  bool
}

// Status is a snapshot for health checks and tests.
type Status struct {
	Ready      bool // heads loaded for every owned partition
	Partitions int
	Buffered   int64
	LastError  string
}

// New validates opts and returns an Archiver.
func New(opts Options) (*Archiver, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	id := opts.WriterID
	if id == "" {
		host, _ := os.Hostname()
		id = fmt.Sprintf("%s/%d", host, os.Getpid())
	}
	return &Archiver{
		opts:     opts,
		m:        newMetrics(opts.Registerer),
		writerID: id,
		parts:    map[tp]*partState{},
		topics:   map[string]topicInfo{},
		results:  make(chan commitResult, 1024),
		loaded:   make(chan loadResult, 1024),
		sem:      make(chan struct{}, opts.CommitConcurrency),
	}, nil
}

// Status returns the archiver's current status (safe from any goroutine).
func (a *Archiver) Status() Status {
	a.statusMu.Lock()
	defer a.statusMu.Unlock()
	return a.status
}

// Run archives until ctx is cancelled (then flushes open segments within
// ShutdownTimeout and returns nil) or, with Once, until every selected
// partition is archived up to the end offsets seen at start.
func (a *Archiver) Run(ctx context.Context) error {
	lg := a.opts.Logger
	var err error
	if a.arch, err = manifest.Init(ctx, a.opts.Store, a.opts.Version, a.opts.Now().UnixMilli()); err != nil {
		return err
	}
	isolation := kgo.ReadCommitted()
	if a.opts.ReadUncommitted {
		isolation = kgo.ReadUncommitted()
	}
	copts := append([]kgo.Opt{}, a.opts.KafkaOpts...)
	copts = append(copts, kgo.FetchIsolationLevel(isolation), kgo.KeepControlRecords(),
		kgo.FetchMaxWait(500*time.Millisecond), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if a.cl, err = kgo.NewClient(copts...); err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer a.cl.Close()
	a.adm = kadm.NewClient(a.cl)

	pingCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = a.refreshTopics(pingCtx)
	cancel()
	if err != nil {
		return fmt.Errorf("cannot read cluster metadata: %w", err)
	}
	if a.opts.Group != "" {
		if a.member, err = startMembership(a.opts, a.selectedPatterns(), lg); err != nil {
			return err
		}
		defer a.member.close()
	}
	if a.opts.Once {
		if err := a.setOnceTargets(ctx); err != nil {
			return err
		}
	}
	a.reconcile(ctx)
	lg.Info("archiver started", "store", a.opts.Store.String(), "group", a.opts.Group, "once", a.opts.Once,
		"topics", len(a.topics), "writer", a.writerID)

	err = a.loop(ctx)
	if err == nil && a.opts.Once {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		err = a.captureCatalog(cctx, a.opts.Now())
		cancel()
	}
	return err
}

// selectedPatterns are the topic names the membership client subscribes to.
func (a *Archiver) selectedPatterns() []string {
	if len(a.opts.Topics) == 0 {
		return []string{".*"}
	}
	out := make([]string, len(a.opts.Topics))
	for i, re := range a.opts.Topics {
		out[i] = re.String()
	}
	return out
}

// loop is the single goroutine that owns all partition state.
func (a *Archiver) loop(ctx context.Context) error {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		if ctx.Err() != nil {
			return a.shutdown()
		}
		if a.fatal != nil {
			a.drainInflight(5 * time.Second)
			return a.fatal
		}
		pollCtx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		a.wakeMu.Lock()
		a.wakePoll = cancel
		a.wakeMu.Unlock()
		if len(a.results) > 0 || len(a.loaded) > 0 {
			cancel()
		}
		fetches := a.cl.PollFetches(pollCtx)
		cancel()
		a.handleFetches(ctx, fetches)
		a.drainResults(ctx)
		select {
		case <-tick.C:
			a.housekeeping(ctx)
		default:
		}
		if a.opts.Once && a.onceDone() {
			a.opts.Logger.Info("archived up to the end offsets seen at start")
			return nil
		}
	}
}

func (a *Archiver) handleFetches(ctx context.Context, fetches kgo.Fetches) {
	now := a.opts.Now()
	fetches.EachError(func(t string, p int32, err error) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return
		}
		var dl *kgo.ErrDataLoss
		switch {
		case errors.As(err, &dl):
			a.opts.Logger.Error("Kafka log diverged below the archived offset (unclean leader election or truncation): records the archive holds may differ from the broker's",
				"topic", t, "partition", p, "consumed_to", dl.ConsumedTo, "reset_to", dl.ResetTo)
		case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
			a.lastRefresh = time.Time{} // topic deleted or re-created? rediscover now
		default:
			a.opts.Logger.Warn("fetch error", "topic", t, "partition", p, "err", err)
		}
	})
	fetches.EachPartition(func(f kgo.FetchTopicPartition) {
		ps := a.parts[tp{f.Topic, f.Partition}]
		if ps == nil || !ps.ready || ps.removing {
			return
		}
		if f.HighWatermark >= 0 {
			ps.hwm = f.HighWatermark
		}
		if len(f.Records) == 0 {
			return
		}
		loss, err := ps.appendFetch(a, &f.FetchPartition, now)
		if loss > 0 {
			ps.lossTotal += loss
		}
		if err != nil {
			a.fatal = fmt.Errorf("archive %s: %w", ps.tp, err)
			return
		}
		if ps.open != nil && (ps.open.Size() >= a.opts.SegmentBytes || a.opts.Once && ps.next >= ps.target) {
			ps.seal()
		}
		a.kick(ctx, ps)
	})
}

// housekeeping runs every tick: roll aged segments, enforce the memory
// bound, retry commits, refresh topics and ownership, capture the catalog.
func (a *Archiver) housekeeping(ctx context.Context) {
	now := a.opts.Now()
	var total int64
	for _, ps := range a.parts {
		if ps.open != nil && now.Sub(ps.openSince) >= a.opts.FlushInterval {
			ps.seal()
		}
		if ps.open != nil && a.opts.Once && ps.target >= 0 && ps.next >= ps.target {
			ps.seal()
		}
		a.kick(ctx, ps)
		total += ps.buffered()
		lagSec := 0.0
		if len(ps.queue) > 0 {
			lagSec = now.Sub(ps.queue[0].firstSeen).Seconds()
		} else if ps.open != nil {
			lagSec = now.Sub(ps.openSince).Seconds()
		}
		l := []string{ps.tp.topic, strconv.Itoa(int(ps.tp.partition))}
		a.m.lagSeconds.WithLabelValues(l...).Set(lagSec)
		if ps.hwm > 0 {
			a.m.lagRecords.WithLabelValues(l...).Set(float64(max(0, ps.hwm-ps.committedNext())))
		}
	}
	a.m.buffered.Set(float64(total))
	a.enforceMemory(total)
	if now.Sub(a.lastRefresh) >= a.opts.RefreshInterval && !a.opts.Once {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := a.refreshTopics(rctx); err != nil {
			a.opts.Logger.Warn("topic refresh failed", "err", err)
		}
		cancel()
	}
	a.reconcile(ctx)
	if !a.opts.Once && (a.catalogDue || now.Sub(a.lastCatalog) >= a.opts.CatalogInterval) && a.catalogRunning.CompareAndSwap(false, true) {
		// Off the loop: listing many groups' offsets must not delay fetching
		// and commits (archive lag).
		a.lastCatalog, a.catalogDue = now, false
		go func() {
			defer a.catalogRunning.Store(false)
			cctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			if err := a.captureCatalog(cctx, now); err != nil && ctx.Err() == nil {
				a.m.storeErrors.WithLabelValues("catalog").Inc()
				a.opts.Logger.Warn("catalog capture failed", "err", err)
			}
		}()
	}
	ready := true
	for _, ps := range a.parts {
		ready = ready && ps.ready
	}
	a.statusMu.Lock()
	a.status = Status{Ready: ready, Partitions: len(a.parts), Buffered: total}
	a.statusMu.Unlock()
	a.m.partitions.Set(float64(len(a.parts)))
}

// enforceMemory pauses fetching above MaxBufferedBytes (sealing open
// segments so they can be committed and freed) and resumes below 3/4 of it.
func (a *Archiver) enforceMemory(total int64) {
	switch {
	case !a.paused && total > a.opts.MaxBufferedBytes:
		a.paused = true
		var topics []string
		for t := range a.topics {
			topics = append(topics, t)
		}
		a.cl.PauseFetchTopics(topics...)
		for _, ps := range a.parts {
			ps.seal()
		}
		a.opts.Logger.Warn("memory bound reached: fetching paused until commits catch up", "buffered_bytes", total)
	case a.paused && total < a.opts.MaxBufferedBytes*3/4:
		a.paused = false
		a.cl.ResumeFetchTopics(a.cl.PauseFetchTopics()...)
	}
}

// onceDone reports whether every owned partition reached its target and
// everything is committed.
func (a *Archiver) onceDone() bool {
	for _, ps := range a.parts {
		if !ps.ready || ps.next < ps.target || !ps.idle() {
			return false
		}
	}
	return len(a.loadingSet()) == 0
}

func (a *Archiver) loadingSet() []tp {
	var out []tp
	for k, ps := range a.parts {
		if !ps.ready {
			out = append(out, k)
		}
	}
	return out
}

// shutdown seals every open segment and waits for the commits.
func (a *Archiver) shutdown() error {
	a.opts.Logger.Info("stopping: flushing open segments", "partitions", len(a.parts))
	ctx, cancel := context.WithTimeout(context.Background(), a.opts.ShutdownTimeout)
	defer cancel()
	for _, ps := range a.parts {
		ps.seal()
	}
	for {
		pending := 0
		for _, ps := range a.parts {
			a.kick(ctx, ps)
			if !ps.idle() {
				pending++
			}
		}
		if pending == 0 {
			a.opts.Logger.Info("stopped: everything fetched is committed")
			return nil
		}
		select {
		case r := <-a.results:
			a.applyResult(ctx, r)
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("shutdown: %d partitions still had uncommitted segments after %s (they are fetched again on restart)", pending, a.opts.ShutdownTimeout)
		}
	}
}

// drainInflight waits briefly for running commits so their goroutines end.
func (a *Archiver) drainInflight(d time.Duration) {
	deadline := time.After(d)
	for {
		busy := false
		for _, ps := range a.parts {
			busy = busy || ps.inflight
		}
		if !busy {
			return
		}
		select {
		case r := <-a.results:
			if ps := a.parts[r.tp]; ps != nil && r.gen == ps.gen {
				ps.inflight = false
			}
		case <-deadline:
			return
		}
	}
}

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
	for k, ti := range want {
		if a.parts[k] != nil {
			continue
		}
		if purge[k.topic] && a.holdsTopic(k.topic) {
			continue // the old incarnation is still flushing
		}
		ps := &partState{tp: k, id: ti.id, compacted: ti.compacted, target: -1, gen: nextGen(),
			log: a.arch.Partition(k.topic, ti.id, k.partition)}
		a.parts[k] = ps
		go a.loadHead(ctx, ps, ps.gen)
	}
	if a.member != nil {
		held := make(map[tp]bool, len(a.parts))
		for k := range a.parts {
			held[k] = true
		}
		a.member.report(held)
	}
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
	if ps.idle() {
		delete(a.parts, ps.tp)
		l := []string{ps.tp.topic, strconv.Itoa(int(ps.tp.partition))}
		for _, g := range []interface{ DeleteLabelValues(...string) bool }{a.m.archivedOffset, a.m.lagRecords, a.m.lagSeconds, a.m.earliestTs, a.m.latestTs} {
			g.DeleteLabelValues(l...)
		}
		a.opts.Logger.Info("partition released", "topic", ps.tp.topic, "partition", ps.tp.partition, "archived_to", ps.committedNext())
	}
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
	tp   tp
	gen  int
	head *manifest.Commit
	err  error
}

// loadHead reads the partition's head (and repairs its time key) off the
// loop goroutine; the loop then starts consuming at head.End+1.
func (a *Archiver) loadHead(ctx context.Context, ps *partState, gen int) {
	a.sem <- struct{}{}
	defer func() { <-a.sem }()
	var head *manifest.Commit
	err := retry(ctx, a.opts.Once, a.opts.OnceCommitAttempts, func() error {
		if err := a.ensureTopic(ctx, ps.tp.topic, ps.id); err != nil {
			return err
		}
		h, err := ps.log.Head(ctx)
		if err != nil {
			return err
		}
		if err := ps.log.RepairHead(ctx, h); err != nil {
			return err
		}
		head = h
		return nil
	}, func(err error) {
		a.m.storeErrors.WithLabelValues("load_head").Inc()
		a.opts.Logger.Warn("reading partition head failed, retrying", "topic", ps.tp.topic, "partition", ps.tp.partition, "err", err)
	})
	select {
	case a.loaded <- loadResult{tp: ps.tp, gen: gen, head: head, err: err}:
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
	ps.head = l.head
	ps.next = ps.committedNext()
	ps.ready = true
	ps.open, ps.queue = nil, nil
	a.updateHeadMetrics(ps)
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
	if h := ps.head; h != nil && h.FirstTimestamp != math.MaxInt64 {
		a.m.earliestTs.WithLabelValues(l...).Set(float64(h.FirstTimestamp) / 1000)
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
	offs, err := list(lctx, names...)
	if err != nil {
		return fmt.Errorf("list end offsets: %w", err)
	}
	starts, err := a.adm.ListStartOffsets(lctx, names...)
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
