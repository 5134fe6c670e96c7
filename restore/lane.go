package restore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/internal/lease"
	"github.com/kbackup/kbackup/internal/target"
	"github.com/kbackup/kbackup/manifest"
)

// batch is a run of records of one lane source, in offset order.
type batch struct {
	src   int
	recs  []*manifest.Record
	bytes int64
}

// entry is one record handed to the producer, in lane order.
type entry struct {
	src    int
	off    int64
	part   int32
	size   int64
	rec    *kgo.Record
	slab   *slab
	tgt    int64 // target offset, once acknowledged
	done   bool
	failed bool
}

// entrySlot is an entry with its franz-go record.
type entrySlot struct {
	e   entry
	rec kgo.Record
}

// slotsPerSlab keeps a slab of entry slots a small allocation (< 32 KiB).
const slotsPerSlab = 96

// slab holds the entries of slotsPerSlab consecutive records of a lane.
// Slabs are recycled (slabPool) once none of their entries is referenced:
// refs starts at slotsPerSlab+1; every entry applied to the acknowledged
// state releases one, the producer releases its unused slots plus one when
// it is done with the slab, and lastRec pins the slab of each partition's
// last record. Entries that never complete (a failure) keep their slab out
// of the pool; the garbage collector takes it then.
type slab struct {
	slots [slotsPerSlab]entrySlot
	refs  atomic.Int32
}

var slabPool = sync.Pool{New: func() any { return new(slab) }}

func (s *slab) release(n int32) {
	if s.refs.Add(-n) == 0 {
		slabPool.Put(s)
	}
}

// entryOf returns the entry of a record handed to the producer: the
// record is the rec field of an entrySlot (the produce promise gets the
// record back, so no closure is allocated per record).
func entryOf(r *kgo.Record) *entry {
	return &(*entrySlot)(unsafe.Add(unsafe.Pointer(r), -int(unsafe.Offsetof(entrySlot{}.rec)))).e
}

// laneRun executes one lane: a reader goroutine scans the archive ahead of
// the producer, records are produced in lane order, and acknowledgements
// advance the acknowledged prefix, which is what checkpoints store.
type laneRun struct {
	rn        *runner
	l         *lane
	logAppend bool
	nparts    int32
	part      kgo.TopicPartitioner

	mu       sync.Mutex
	cond     *sync.Cond
	inflight int64 // bytes handed to the producer, not yet acknowledged
	pending  int   // entries not yet acknowledged
	waiters  int   // goroutines in cond.Wait (acks wake them)
	queue    []*entry
	head     int
	state    checkpoint // the acknowledged prefix
	tgt      map[int32]*targetState
	lastRec  map[int32]*entry
	// interleaved marks partitions where another producer's records were
	// seen between the lane's own (only with Append).
	interleaved map[int32]bool
	err         error // the first produce error
	cancel      context.CancelFunc

	// unflushedRecords and unflushedBytes are acknowledged but not yet
	// added to the runner's totals (flushCountsLocked).
	unflushedRecords, unflushedBytes int64

	// skip and expect drive a resume: the first skip[p] records assigned
	// to target partition p are already in the target; the last of them
	// must hash to expect[p].
	skip   map[int32]int64
	expect map[int32]string
	// restored counts the records this run produced.
	restored int64
	// promise is lr.ack, the produce promise of every record (one func
	// value, not one per record).
	promise func(*kgo.Record, error)
	// warmed is set once the lane's first record was produced and
	// acknowledged (produceChunk).
	warmed bool
	// fence is the lane's lease: checkpoints are stored only while it is
	// valid (nil: no lease, e.g. in tests of the lane alone).
	fence *lease.Held
}

func newLaneRun(rn *runner, l *lane, logAppend bool, nparts int32) *laneRun {
	lr := &laneRun{rn: rn, l: l, logAppend: logAppend, nparts: nparts, tgt: map[int32]*targetState{},
		lastRec: map[int32]*entry{}, interleaved: map[int32]bool{}, skip: map[int32]int64{}, expect: map[int32]string{}}
	lr.cond = sync.NewCond(&lr.mu)
	lr.promise = lr.ack
	if l.targetPartition < 0 {
		lr.part = kgo.StickyKeyPartitioner(nil).ForTopic(l.targetTopic)
	}
	return lr
}

// assign returns the target partition of a record of source index src.
func (lr *laneRun) assign(src int, r *kgo.Record) int32 {
	if lr.l.targetPartition >= 0 {
		return lr.l.targetPartition
	}
	if r.Key == nil {
		return lr.l.sources[src].log.Partition % lr.nparts
	}
	return int32(lr.part.Partition(r, int(lr.nparts)))
}

// targetPartitions are the target partitions the lane writes to.
func (lr *laneRun) targetPartitions() []int32 {
	if lr.l.targetPartition >= 0 {
		return []int32{lr.l.targetPartition}
	}
	if lr.l.ckpt != nil {
		parts := make([]int32, 0, len(lr.l.ckpt.Targets))
		for _, ts := range lr.l.ckpt.Targets {
			parts = append(parts, ts.Partition)
		}
		return parts
	}
	parts := make([]int32, 0, lr.nparts)
	for p := int32(0); p < lr.nparts; p++ {
		parts = append(parts, p)
	}
	return parts
}

// start loads or creates the lane's checkpoint and, when resuming, checks
// the target against it. It returns done = true for a finished lane.
func (lr *laneRun) start(ctx context.Context) (done bool, err error) {
	l, t := lr.l, lr.rn.t
	starts, ends, err := t.Offsets(ctx, l.targetTopic, lr.targetPartitions()...)
	if err != nil {
		return false, err
	}
	if l.ckpt == nil {
		if err := lr.checkEmpty(starts, ends); err != nil {
			return false, err
		}
		c := checkpoint{Format: checkpointFormat, FormatVersion: stateVersion, RestoreID: lr.rn.id, Lane: l.name, SourceOffset: -1}
		for _, p := range lr.targetPartitions() {
			e, ok := ends[p]
			if !ok {
				return false, fmt.Errorf("target topic %s has no partition %d", l.targetTopic, p)
			}
			c.Targets = append(c.Targets, targetState{Partition: p, Base: e, End: e})
		}
		if l.targetPartition >= 0 {
			for _, s := range l.sources {
				base := c.Targets[0].Base
				c.Maps = append(c.Maps, PartitionMap{SourceTopic: s.log.Topic, SourceTopicID: s.topicID, SourcePartition: s.log.Partition,
					TargetTopic: l.targetTopic, TargetPartition: l.targetPartition, SourceFrom: s.from, SourceTo: s.to,
					TargetStart: base, TargetEnd: base, Runs: []OffsetRun{}})
			}
		}
		// Stored before the first record is produced: a rerun always
		// knows where the lane's records begin in the target.
		if err := lr.storeCheckpoint(ctx, &c); err != nil {
			return false, fmt.Errorf("store the initial checkpoint: %w", err)
		}
		l.ckpt = &c
	}
	lr.state = *l.ckpt
	for i := range lr.state.Targets {
		lr.tgt[lr.state.Targets[i].Partition] = &lr.state.Targets[i]
	}
	for i := range lr.state.Targets {
		ts := &lr.state.Targets[i]
		e, ok := ends[ts.Partition]
		if !ok {
			return false, fmt.Errorf("target topic %s has no partition %d", l.targetTopic, ts.Partition)
		}
		if e < ts.End {
			return false, fmt.Errorf("target %s/%d ends at offset %d, but restore %s already wrote up to offset %d there: the target changed since (topic deleted or truncated?); restore with a new --restore-id",
				l.targetTopic, ts.Partition, e, lr.rn.id, ts.End)
		}
		if lr.state.Done {
			continue
		}
		switch k := e - ts.End; {
		case k > 0:
			// Records past the checkpoint: the previous run produced them
			// after its last checkpoint. They are the next k records this
			// lane assigns to the partition; the last of them must match.
			r, err := t.FetchRecord(ctx, l.targetTopic, ts.Partition, e-1)
			if err != nil {
				return false, fmt.Errorf("check the target against the checkpoint: %w", err)
			}
			lr.skip[ts.Partition], lr.expect[ts.Partition] = k, target.RecordHash(r, !lr.logAppend)
		case ts.End > ts.Base && ts.LastHash != "":
			r, err := t.FetchRecord(ctx, l.targetTopic, ts.Partition, e-1)
			if errors.Is(err, target.ErrRecordNotFound) {
				lr.rn.o.Logger.Warn("restore: cannot re-read the last restored record (target retention?); trusting the checkpoint",
					"lane", l.name, "partition", ts.Partition, "offset", e-1)
				continue
			}
			if err != nil {
				return false, fmt.Errorf("check the target against the checkpoint: %w", err)
			}
			if target.RecordHash(r, !lr.logAppend) != ts.LastHash {
				return false, fmt.Errorf("target %s/%d offset %d is not the record restore %s wrote there: another producer wrote into the target; restore with a new --restore-id",
					l.targetTopic, ts.Partition, e-1, lr.rn.id)
			}
		}
	}
	return lr.state.Done, nil
}

// run restores the lane from the checkpoint on. It always stores a final
// checkpoint of what was acknowledged.
func (lr *laneRun) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lr.cancel = cancel
	batches := make(chan batch, lr.rn.o.ReadAhead)
	readErr := make(chan error, 1)
	go func() { readErr <- lr.read(ctx, lr.state.SourceIndex, lr.state.SourceOffset, batches) }()

	stopCkpt := make(chan struct{})
	ckptDone := make(chan struct{})
	go lr.checkpointLoop(ctx, stopCkpt, ckptDone)

	err := lr.produceAll(ctx, batches)
	if err != nil {
		cancel()
	}
	for range batches { // let the reader finish
	}
	if rerr := <-readErr; rerr != nil && err == nil && !errors.Is(rerr, context.Canceled) {
		err = rerr
	}
	if err == nil {
		for p, k := range lr.skip {
			if k > 0 {
				err = fmt.Errorf("target %s/%d holds %d records after the checkpoint that this restore did not write (another producer?); restore with a new --restore-id",
					lr.l.targetTopic, p, k)
				break
			}
		}
	}
	perr := lr.wait(ctx)
	if err == nil {
		err = perr
	}
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	close(stopCkpt)
	<-ckptDone
	// The final checkpoint: Done only when every record was acknowledged.
	c := lr.snapshot(err == nil)
	var werr error
	for attempt := 0; attempt < 3; attempt++ {
		wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		werr = lr.storeCheckpoint(wctx, c)
		wcancel()
		if werr == nil || errors.Is(werr, lease.ErrLost) {
			break
		}
		time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
	}
	lr.l.ckpt = c
	if err != nil {
		return err
	}
	if werr != nil {
		return fmt.Errorf("every record is in the target, but the final checkpoint could not be stored (rerun to record it): %w", werr)
	}
	return nil
}

// read scans the lane's sources from the resume point and sends batches.
func (lr *laneRun) read(ctx context.Context, startIdx int, startOff int64, out chan<- batch) error {
	defer close(out)
	send := func(b batch) error {
		if len(b.recs) == 0 {
			return nil
		}
		select {
		case out <- b:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for i := startIdx; i < len(lr.l.sources); i++ {
		s := lr.l.sources[i]
		from := s.from
		if i == startIdx && startOff >= from {
			from = startOff + 1
		}
		if s.empty() || from > s.to {
			continue
		}
		b := batch{src: i}
		var last time.Time
		var prev *manifest.Record
		err := s.log.Scan(ctx, from, s.to, func(it manifest.ScanItem) error {
			r := it.Record
			if r == nil {
				return nil
			}
			// Records of one block are consecutive in one slice; a record
			// that does not follow the previous one in memory starts a new
			// block. A pause before it means Scan waited for the store:
			// hand over what is ready, so the producer never waits for a
			// full batch behind a slow read. (The clock is read once per
			// block, not per record.)
			if prev == nil || uintptr(unsafe.Pointer(r)) != uintptr(unsafe.Pointer(prev))+unsafe.Sizeof(*r) {
				now := time.Now()
				if len(b.recs) > 0 && now.Sub(last) > time.Millisecond {
					if err := send(b); err != nil {
						return err
					}
					b = batch{src: i, recs: make([]*manifest.Record, 0, cap(b.recs))}
				}
				last = now
			}
			prev = r
			b.recs = append(b.recs, r)
			b.bytes += target.RecordSize(r)
			if b.bytes >= target.BatchBytes || len(b.recs) >= 8192 {
				if err := send(b); err != nil {
					return err
				}
				b = batch{src: i, recs: make([]*manifest.Record, 0, len(b.recs))}
				last = time.Now()
			}
			return nil
		})
		// Records read before a failure are good: restore them too, so the
		// partition gets as far as the archive allows.
		if serr := send(b); err == nil {
			err = serr
		}
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return err
			}
			return fmt.Errorf("read %s offsets %d..%d: %w", s.log, from, s.to, err)
		}
	}
	return nil
}

// produceAll produces every record of the batches, skipping (and
// verifying) the ones a resumed lane finds already in the target. The
// entries and franz-go records of a batch are allocated together, and the
// in-flight accounting takes the lane's lock once per chunk of records,
// not once per record.
func (lr *laneRun) produceAll(ctx context.Context, batches <-chan batch) error {
	var ready []*entry // produced in order, in runs (produceChunk); reused
	var cur *slab
	next := 0
	defer func() {
		if cur != nil {
			cur.release(int32(slotsPerSlab-next) + 1)
		}
	}()
	for b := range batches {
		ready = ready[:0]
		for _, r := range b.recs {
			if cur == nil || next == slotsPerSlab {
				if cur != nil {
					cur.release(1)
				}
				cur, next = slabPool.Get().(*slab), 0
				cur.refs.Store(slotsPerSlab + 1)
			}
			sl := &cur.slots[next]
			next++
			kr := &sl.rec
			target.FillKgo(kr, r, lr.l.targetTopic)
			p := lr.assign(b.src, kr)
			kr.Partition = p
			e := &sl.e
			*e = entry{src: b.src, off: r.Offset, part: p, size: target.RecordSize(r), rec: kr, slab: cur}
			if k := lr.skip[p]; k > 0 {
				if err := lr.produceChunk(ctx, ready); err != nil {
					return err
				}
				ready = ready[:0]
				lr.skip[p] = k - 1
				if k == 1 && target.RecordHash(kr, !lr.logAppend) != lr.expect[p] {
					return fmt.Errorf("target %s/%d: the last record after the checkpoint is not source %s offset %d, the record this restore would have written there (another producer wrote into the target?); restore with a new --restore-id",
						lr.l.targetTopic, p, lr.l.sources[b.src].log, r.Offset)
				}
				lr.skipped(e)
				continue
			}
			ready = append(ready, e)
		}
		if err := lr.produceChunk(ctx, ready); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// skipped accounts a record found already in the target as acknowledged
// at the partition's next offset.
func (lr *laneRun) skipped(e *entry) {
	lr.mu.Lock()
	defer lr.mu.Unlock()
	e.done, e.tgt = true, lr.tgt[e.part].End+lr.queuedFor(e.part)
	lr.queue = append(lr.queue, e)
	lr.popLocked()
}

// queuedFor counts the acknowledged-but-not-popped entries of partition p
// (skipped entries wait behind unacknowledged ones of other partitions).
func (lr *laneRun) queuedFor(p int32) int64 {
	var n int64
	for _, q := range lr.queue[lr.head:] {
		if q.part == p {
			n++
		}
	}
	return n
}

// produceChunk hands ents to the producer in order, in runs that keep the
// lane's unacknowledged bytes within MaxInFlightBytes (a run holds at
// least one record).
func (lr *laneRun) produceChunk(ctx context.Context, ents []*entry) error {
	limit := lr.rn.o.MaxInFlightBytes
	for len(ents) > 0 {
		lr.mu.Lock()
		for lr.err == nil && lr.inflight > 0 && lr.inflight+ents[0].size > limit {
			lr.waiters++
			lr.cond.Wait()
			lr.waiters--
		}
		if lr.err != nil {
			err := lr.err
			lr.mu.Unlock()
			return err
		}
		n := 0
		for n < len(ents) && (n == 0 || lr.inflight+ents[n].size <= limit && lr.warmed) {
			e := ents[n]
			lr.inflight += e.size
			lr.queue = append(lr.queue, e)
			n++
		}
		lr.pending += n
		lr.mu.Unlock()
		for _, e := range ents[:n] {
			lr.restored++
			lr.rn.t.Client.Produce(ctx, e.rec, lr.promise)
		}
		ents = ents[n:]
		if !lr.warmed {
			// The lane's first record goes alone and is waited for: until
			// the producer has the target topic's metadata, every record
			// takes franz-go's slow unknown-topic path (and a fresh
			// topic's metadata takes a moment to appear).
			lr.warmed = true
			lr.mu.Lock()
			for lr.err == nil && lr.pending > 0 {
				lr.waiters++
				lr.cond.Wait()
				lr.waiters--
			}
			lr.mu.Unlock()
		}
	}
	return nil
}

// ack is the produce promise: records of one partition are acknowledged in
// order; the lane's acknowledged prefix advances over done entries.
func (lr *laneRun) ack(r *kgo.Record, err error) {
	e := entryOf(r)
	lr.mu.Lock()
	defer lr.mu.Unlock()
	e.done = true
	lr.inflight -= e.size
	lr.pending--
	if err != nil {
		e.failed = true
		if lr.err == nil {
			lr.err = fmt.Errorf("produce to %s/%d: %w", r.Topic, r.Partition, err)
			lr.cancel()
		}
	} else {
		e.tgt = r.Offset
	}
	lr.popLocked()
	if lr.waiters > 0 {
		lr.cond.Broadcast()
	}
}

// popLocked applies the done entries at the head of the queue to the
// acknowledged state.
func (lr *laneRun) popLocked() {
	for lr.head < len(lr.queue) {
		e := lr.queue[lr.head]
		if !e.done || e.failed {
			break
		}
		ts := lr.tgt[e.part]
		if e.tgt != ts.End && !lr.foreignWrite(e, ts.End) {
			e.failed = true // the acknowledged prefix ends before it
			break
		}
		lr.queue[lr.head] = nil
		lr.head++
		st := &lr.state
		st.SourceIndex, st.SourceOffset = e.src, e.off
		st.Records++
		st.Bytes += e.size
		ts.End = e.tgt + 1
		// The partition's last record pins its slab (checkpoints hash it);
		// the entry itself is done with.
		e.slab.refs.Add(1)
		if old := lr.lastRec[e.part]; old != nil {
			old.slab.release(1)
		}
		lr.lastRec[e.part] = e
		e.slab.release(1)
		if lr.l.targetPartition >= 0 {
			m := &st.Maps[e.src]
			m.add(e.off, e.tgt)
			m.Records++
			m.TargetEnd = e.tgt + 1
		}
		lr.unflushedRecords++
		lr.unflushedBytes += e.size
	}
	if lr.unflushedRecords >= 1024 {
		lr.flushCountsLocked()
	}
	if lr.head > 4096 && lr.head*2 > len(lr.queue) {
		n := copy(lr.queue, lr.queue[lr.head:])
		clear(lr.queue[n:])
		lr.queue, lr.head = lr.queue[:n], 0
	}
}

// foreignWrite handles a record of the lane that the broker appended at
// e.tgt although the lane's previous record in that partition ended at
// want: someone else appended offsets want..e.tgt-1 in between. The lane's
// own records of a partition are contiguous (one idempotent producer, in
// order), so this is another writer: most likely produce requests of a
// killed earlier run of this restore that the broker applied after this
// run read the target's end (so records written twice), or a foreign
// producer. Without --append that fails the lane, naming the offsets;
// with --append (writing into a live topic is allowed) it is logged and the
// lane goes on. It reports whether the lane goes on.
func (lr *laneRun) foreignWrite(e *entry, want int64) bool {
	if lr.rn.o.Append {
		if !lr.interleaved[e.part] {
			lr.interleaved[e.part] = true
			lr.rn.o.Logger.Warn("restore: another producer writes into the target partition (--append): the offset map stays exact, but a resume of this restore cannot tell its records from the other producer's",
				"topic", lr.l.targetTopic, "partition", e.part, "foreign_offsets", fmt.Sprintf("%d..%d", want, e.tgt-1))
		}
		return true
	}
	if lr.err == nil {
		lr.err = fmt.Errorf("target %s/%d: offsets %d..%d were written by another producer while this restore wrote there (source %s offset %d landed at %d, not %d); most likely late produce requests of a killed earlier run of this restore, i.e. records now present twice: inspect those offsets, then delete the target topic and restore again (or keep it knowingly)",
			lr.l.targetTopic, e.part, want, e.tgt-1, lr.l.sources[e.src].log, e.off, e.tgt, want)
		lr.cancel()
	}
	return false
}

// flushCountsLocked adds the lane's acknowledged records and bytes to the
// restore's totals (shared by the lanes: added in runs, not per record).
func (lr *laneRun) flushCountsLocked() {
	lr.rn.records.Add(lr.unflushedRecords)
	lr.rn.bytes.Add(lr.unflushedBytes)
	lr.unflushedRecords, lr.unflushedBytes = 0, 0
}

// wait blocks until every produced record was acknowledged (or failed).
// After a cancel it waits at most 10 more seconds, so that the final
// checkpoint is as far along as possible without hanging the exit.
func (lr *laneRun) wait(ctx context.Context) error {
	done := make(chan struct{})
	defer close(done)
	go func() { // wake the waiter to check the deadlines
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				lr.mu.Lock()
				lr.cond.Broadcast()
				lr.mu.Unlock()
			}
		}
	}()
	lr.mu.Lock()
	defer lr.mu.Unlock()
	deadline := time.Now().Add(2 * time.Minute)
	cancelled := false
	for lr.pending > 0 && time.Now().Before(deadline) {
		if ctx.Err() != nil && !cancelled {
			cancelled = true
			if d := time.Now().Add(10 * time.Second); d.Before(deadline) {
				deadline = d
			}
		}
		lr.waiters++
		lr.cond.Wait()
		lr.waiters--
	}
	lr.flushCountsLocked()
	if lr.err == nil && lr.pending > 0 {
		return fmt.Errorf("%d records produced to %s were not acknowledged in time", lr.pending, lr.l.targetTopic)
	}
	return lr.err
}
