package archive

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
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
	pk       *packedState // packed layout only

	parts   map[tp]*partState
	topics  map[string]topicInfo // selected topics as last seen in metadata
	results chan commitResult
	loaded  chan loadResult
	sem     chan struct{}
	paused  bool
	// buffered is the bytes buffered at the last housekeeping plus those
	// fetched since: fetches between two ticks check the memory bound with
	// it (a fast cluster fills hundreds of megabytes in one tick).
	buffered int64
	// partHold is the part buffer a staged object of the store holds
	// outside the Go heap (S3), counted against MaxBufferedBytes while a
	// segment streams to it; 0 for a store that reports none. It is the
	// part's length: an uncompressed block encoded in place past it is
	// the open block, counted as held (SegmentWriter.Held).
	partHold int64

	onceTargets map[tp]int64 // Once: end offsets seen at start
	onceStarts  map[tp]int64 // Once: log start offsets seen at start

	lastRefresh    time.Time
	lastCatalog    time.Time
	catalogDue     bool
	catalogRunning atomic.Bool    // a capture goroutine is running
	catalogWG      sync.WaitGroup // Run waits for it before returning
	lastExpiry     time.Time
	expiryRunning  atomic.Bool       // an expiry pass is running
	expiries       chan ExpireResult // finished expiry passes, for the loop
	fatal          error

	statusMu sync.Mutex
	status   Status
	summary  Summary
	started  time.Time

	seeks map[tp]kgo.Offset // pending (re)starts of consumption, see seek
	pool  *fetchPool        // the data client's records and decompression buffers

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

// Summary is what one run of an archiver did.
type Summary struct {
	Topics     int   // selected topics at the last metadata refresh
	Partitions int   // partitions owned when the run ended
	Records    int64 // records committed by this run
	Segments   int64 // segments committed by this run
	Bytes      int64 // segment bytes committed by this run
	// Gaps counts the offsets this run committed as gaps, by reason
	// (manifest.GapReason's String: "DATA-LOSS", "compacted", ...).
	Gaps     map[string]int64
	Duration time.Duration // from Run's start to now, or to its end
	// Superseded counts the records this run committed (packed --once) in
	// entries that another archiver's later claim voided: they are not in
	// Records (nor their segments, bytes and gaps in the other counts); the
	// archive holds those offsets through that archiver's chain, or the
	// run failed naming them.
	Superseded int64
}

// DataLoss is the number of offsets this run recorded as DATA-LOSS gaps.
func (s Summary) DataLoss() int64 { return s.Gaps[manifest.GapDataLoss.String()] }

// Summary returns what the run did so far (safe from any goroutine; final
// once Run returned).
func (a *Archiver) Summary() Summary {
	a.statusMu.Lock()
	defer a.statusMu.Unlock()
	s := a.summary
	s.Gaps = make(map[string]int64, len(a.summary.Gaps))
	for k, v := range a.summary.Gaps {
		s.Gaps[k] = v
	}
	if s.Duration == 0 && !a.started.IsZero() {
		s.Duration = time.Since(a.started)
	}
	return s
}

func (a *Archiver) addToSummary(c *manifest.Commit) {
	a.statusMu.Lock()
	defer a.statusMu.Unlock()
	a.summary.Records += c.Records
	a.summary.Segments++
	a.summary.Bytes += c.SegmentSize
	for reason, n := range c.GapOffsets {
		if n > 0 {
			if a.summary.Gaps == nil {
				a.summary.Gaps = map[string]int64{}
			}
			a.summary.Gaps[manifest.GapReason(reason).String()] += n
		}
	}
}

// supersede takes commits (voided by a later claim) out of the summary.
func (a *Archiver) supersede(commits []*manifest.Commit) {
	a.statusMu.Lock()
	defer a.statusMu.Unlock()
	for _, c := range commits {
		a.summary.Records -= c.Records
		a.summary.Superseded += c.Records
		a.summary.Segments--
		a.summary.Bytes -= c.SegmentSize
		for reason, n := range c.GapOffsets {
			if n > 0 {
				a.summary.Gaps[manifest.GapReason(reason).String()] -= n
			}
		}
	}
}

// endSummary fixes the run's duration and final partition and topic counts.
func (a *Archiver) endSummary() {
	a.statusMu.Lock()
	defer a.statusMu.Unlock()
	a.summary.Topics, a.summary.Partitions = len(a.topics), len(a.parts)
	a.summary.Duration = time.Since(a.started)
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
	m := newMetrics(opts.Registerer)
	m.bufferedMax.Set(float64(opts.MaxBufferedBytes))
	var partHold int64
	if pb, ok := opts.Store.(store.PartBufferReporter); ok {
		partHold = int64(pb.PartBuffers().Part)
		if opts.Registerer != nil {
			opts.Registerer.MustRegister(partBufferCollector{pb})
		}
	}
	var pk *packedState
	if opts.Layout == LayoutPacked {
		pk = newPackedState(opts.Now())
	}
	return &Archiver{
		pk:       pk,
		partHold: partHold,
		opts:     opts,
		m:        m,
		writerID: id,
		parts:    map[tp]*partState{},
		topics:   map[string]topicInfo{},
		results:  make(chan commitResult, 1024),
		loaded:   make(chan loadResult, 1024),
		expiries: make(chan ExpireResult, 1),
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
	a.statusMu.Lock()
	a.started = time.Now()
	a.statusMu.Unlock()
	defer a.endSummary()
	var err error
	if a.arch, err = manifest.Init(ctx, a.opts.Store, a.opts.Version, a.opts.Now().UnixMilli()); err != nil {
		return err
	}
	if a.opts.Layout == LayoutAuto {
		if err := a.resolveLayout(ctx); err != nil {
			return err
		}
	}
	if v := a.arch.FormatVersion(); v >= manifest.PackedFormatVersion && !a.packed() {
		// Its partitions are claimed: an archiver that does not claim
		// would commit beside the packed archivers instead of fencing them.
		return fmt.Errorf("%w: the archive in %s uses the packed layout (format version %d): archive it with --layout %s",
			ErrLayout, a.opts.Store, v, LayoutPacked)
	}
	isolation := kgo.ReadCommitted()
	if a.opts.ReadUncommitted {
		isolation = kgo.ReadUncommitted()
	}
	a.pool = newFetchPool()
	// Fetch sizes first: KafkaOpts may override them.
	copts := []kgo.Opt{kgo.FetchMaxBytes(DefaultFetchMaxBytes), kgo.FetchMaxPartitionBytes(DefaultFetchMaxPartitionBytes)}
	copts = append(copts, a.opts.KafkaOpts...)
	copts = append(copts, kgo.FetchIsolationLevel(isolation), kgo.KeepControlRecords(),
		kgo.FetchMaxWait(500*time.Millisecond), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.WithPools(a.pool))
	copts = append(copts, kafkaMetrics(a.opts.Registerer, clientData)...)
	if a.cl, err = kgo.NewClient(copts...); err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer closeDirect(a.cl)
	a.adm = kadm.NewClient(a.cl)

	pingCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = a.refreshTopics(pingCtx)
	cancel()
	if err != nil {
		return fmt.Errorf("cannot read cluster metadata: %w", err)
	}
	if len(a.topics) == 0 {
		if a.opts.Once {
			lg.Warn("no topic in the cluster matches the selection: nothing to archive")
		} else {
			lg.Warn("no topic in the cluster matches the selection yet: new topics are looked for every refresh interval", "refresh_interval", a.opts.RefreshInterval)
		}
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
	if a.packed() {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		a.sweepUploads(sctx)
		cancel()
	}
	a.reconcile(ctx)
	lg.Info("archiver started", "store", a.opts.Store.String(), "group", a.opts.Group, "once", a.opts.Once,
		"topics", len(a.topics), "writer", a.writerID)

	err = a.loop(ctx)
	// A catalog capture in flight (off the loop) ends before Run returns:
	// nothing writes to the store afterwards.
	a.catalogWG.Wait()
	if err == nil && a.opts.Once && a.packed() && ctx.Err() == nil {
		err = a.onceCheckClaims(ctx)
		if err == nil {
			a.compactOnce(ctx)
		}
	}
	if err == nil && a.opts.Once {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		err = a.captureCatalog(cctx, a.opts.Now())
		cancel()
	}
	return err
}

// selectedPatterns are the topic names the membership client subscribes to.
func (a *Archiver) selectedPatterns() []string { return a.opts.Topics.Patterns() }

// loop is the single goroutine that owns all partition state.
func (a *Archiver) loop(ctx context.Context) error {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	defer func() {
		// What was not committed is fetched again by the next run: discard
		// the objects of segments streamed to the store.
		for _, ps := range a.parts {
			a.discard(ps)
		}
	}()
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
		if a.paused {
			a.checkMemory() // resume as soon as commits freed enough
			if a.paused && a.packed() {
				a.packedTick(ctx, false) // the next flush of what the pause sealed, without waiting for a tick
			}
		}
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
			recycle(f.Records)
			return
		}
		if f.HighWatermark >= 0 {
			ps.hwm = f.HighWatermark
		}
		if len(f.Records) == 0 {
			return
		}
		if a.opts.Once && ps.next >= ps.target {
			// Past the end offset seen at start: what producers write
			// meanwhile is the next run's. Appending it would keep the
			// partition from ever being idle (onceDone) under load.
			recycle(f.Records)
			return
		}
		before := ps.buffered()
		loss, err := ps.appendFetch(a, &f.FetchPartition, now) // recycles the records
		a.buffered += ps.buffered() - before
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
	if !a.paused && a.buffered > a.opts.MaxBufferedBytes {
		a.checkMemory()
	}
}

// checkMemory enforces the memory bound on the exact total buffered.
func (a *Archiver) checkMemory() {
	var total int64
	for _, ps := range a.parts {
		total += ps.buffered()
	}
	a.buffered = total
	a.enforceMemory(total)
}

// housekeeping runs every tick: roll aged segments, enforce the memory
// bound, retry commits, refresh topics and ownership, capture the catalog.
func (a *Archiver) housekeeping(ctx context.Context) {
	now := a.opts.Now()
	var total int64
	for _, ps := range a.parts {
		if ps.open != nil && now.Sub(ps.openSince) >= a.opts.FlushInterval && !a.packed() {
			ps.seal() // the packed layout seals every partition at each flush (packedTick)
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
	if a.packed() {
		a.packedTick(ctx, a.opts.Once && a.onceSealed())
		a.packedHousekeeping(ctx, now)
		a.reclaimDue(ctx, now)
	}
	a.m.buffered.Set(float64(total))
	a.buffered = total
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
		a.catalogWG.Add(1)
		go func() {
			defer a.catalogWG.Done()
			defer a.catalogRunning.Store(false)
			cctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			if err := a.captureCatalog(cctx, now); err != nil && ctx.Err() == nil {
				a.m.storeErrors.WithLabelValues("catalog").Inc()
				a.opts.Logger.Warn("catalog capture failed", "err", err)
			}
		}()
	}
	a.maybeExpire(ctx, now)
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
		if a.packed() {
			a.packedTick(ctx, true)
		}
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
		var packed chan packedResult
		if a.pk != nil {
			packed = a.pk.results
		}
		select {
		case r := <-a.results:
			a.applyResult(ctx, r)
		case r := <-packed:
			a.applyPacked(ctx, r)
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
		var packed chan packedResult
		if a.pk != nil {
			packed = a.pk.results
		}
		select {
		case r := <-a.results:
			if ps := a.parts[r.tp]; ps != nil && r.gen == ps.gen {
				ps.inflight = false
			}
		case r := <-packed:
			a.pk.resolved(r)
			for _, it := range r.items {
				if ps := a.parts[it.tp]; ps != nil && it.gen == ps.gen {
					ps.inflight = false
				}
			}
		case <-deadline:
			return
		}
	}
}

// closeDirect closes cl, a direct consumer (AddConsumePartitions), after
// purging what it consumes. Each Add/RemoveConsumePartitions triggers a
// metadata update; one that runs while Close is closing the fetch
// sessions found the partitions Close had just unassigned and assigned
// them again, starting a fetch that raced with the session's kill inside
// franz-go (v1.22.2; v1.22.3 has the same code; the race detector caught
// it once in CI). Purged topics leave the client's set, under the lock a
// metadata update takes, so no update can assign them again.
func closeDirect(cl *kgo.Client) {
	if topics := cl.GetConsumeTopics(); len(topics) > 0 {
		cl.PurgeTopicsFromConsuming(topics...)
	}
	cl.Close()
}
