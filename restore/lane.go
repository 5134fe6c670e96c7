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
	"github.com/kbackup/kbackup/internal/retry"
	"github.com/kbackup/kbackup/internal/target"
	"github.com/kbackup/kbackup/manifest"
)

// batch is a run of records of one lane source, in offset order, as
// entries with their franz-go records (converted by the reader).
type batch struct {
	src   int
	ents  []*entry
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
	blk    *blockBuf // the archive block the record's bytes alias
	tgt    int64     // target offset, once acknowledged
	done   bool
	failed bool
}

// partAck is a target partition's acknowledged state: its targetState
// and its last acknowledged entry (which pins its slab: checkpoints hash
// the record).
type partAck struct {
	ts   *targetState
	last *entry
	// lastHash is the last acknowledged record's hash when the direct
	// path computed it (last is nil then).
	lastHash string
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
	// acks holds, per target partition, its state and last acknowledged
	// entry; cur is the one of the last entry popLocked applied (lanes
	// mostly write one partition: no map operation per record).
	acks map[int32]*partAck
	cur  *partAck
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
	// acked and ackedBytes are acknowledgements not yet applied, ackSeen
	// counts every acknowledgement: the promise goroutine's alone (ack).
	// handed counts the records handed to the producer.
	acked      []*entry
	ackedBytes int64
	ackSeen    int64
	handed     atomic.Int64
	// warmed is set once the lane's first record was produced and
	// acknowledged (produceChunk).
	warmed bool
	// fence is the lane's lease: checkpoints are stored only while it is
	// valid (nil: no lease, e.g. in tests of the lane alone).
	fence *lease.Held
}

func newLaneRun(rn *runner, l *lane, logAppend bool, nparts int32) *laneRun {
	lr := &laneRun{rn: rn, l: l, logAppend: logAppend, nparts: nparts, tgt: map[int32]*targetState{},
		acks: map[int32]*partAck{}, interleaved: map[int32]bool{}, skip: map[int32]int64{}, expect: map[int32]string{}}
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
		ts := &lr.state.Targets[i]
		lr.tgt[ts.Partition] = ts
		lr.acks[ts.Partition] = &partAck{ts: ts}
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

	stopCkpt := make(chan struct{})
	ckptDone := make(chan struct{})
	go lr.checkpointLoop(ctx, stopCkpt, ckptDone)

	var err error
	if lr.directLane() {
		err = lr.runDirect(ctx)
		if err == nil {
			err = lr.skippedAll()
		}
	} else {
		err = lr.runProducer(ctx)
	}
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	close(stopCkpt)
	<-ckptDone
	// The final checkpoint: Done only when every record was acknowledged.
	c := lr.snapshot(err == nil)
	werr := retry.Do(context.WithoutCancel(ctx), finalCheckpointRetry, func(ctx context.Context) error {
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		defer wcancel()
		return lr.storeCheckpoint(wctx, c)
	})
	lr.l.ckpt = c
	if err != nil {
		return err
	}
	if werr != nil {
		return fmt.Errorf("every record is in the target, but the final checkpoint could not be stored (rerun to record it): %w", werr)
	}
	return nil
}

// runProducer restores the lane through franz-go's producer: a reader
// goroutine converts the records, produceAll hands them over, and wait
// waits for their acknowledgements.
func (lr *laneRun) runProducer(ctx context.Context) error {
	batches := make(chan batch, lr.rn.o.ReadAhead)
	readErr := make(chan error, 1)
	go func() { readErr <- lr.read(ctx, lr.state.SourceIndex, lr.state.SourceOffset, batches) }()
	err := lr.produceAll(ctx, batches)
	if err != nil {
		lr.cancel()
	}
	for range batches { // let the reader finish
	}
	if rerr := <-readErr; rerr != nil && err == nil && !errors.Is(rerr, context.Canceled) {
		err = rerr
	}
	if err == nil {
		err = lr.skippedAll()
	}
	perr := lr.wait(ctx)
	if err == nil {
		err = perr
	}
	return err
}

// skippedAll checks that a resumed lane met every record it found in the
// target after its checkpoint.
func (lr *laneRun) skippedAll() error {
	for p, k := range lr.skip {
		if k > 0 {
			return fmt.Errorf("target %s/%d holds %d records after the checkpoint that this restore did not write (another producer?); restore with a new --restore-id",
				lr.l.targetTopic, p, k)
		}
	}
	return nil
}

// resumeFrom is the offset a lane reads the source from: its range's
// start, or past startOff for the source the lane resumes in (first). ok
// is false when nothing of the source is left to read.
func (s *source) resumeFrom(first bool, startOff int64) (from int64, ok bool) {
	from = s.from
	if first && startOff >= from {
		from = startOff + 1
	}
	return from, !s.empty() && from <= s.to
}

// finalCheckpointRetry stores a lane's final checkpoint: three attempts,
// none once the lease is lost.
var finalCheckpointRetry = retry.Policy{Backoff: retry.Backoff{Initial: 200 * time.Millisecond, Max: 400 * time.Millisecond}, Attempts: 3,
	Retryable: func(err error) bool { return !errors.Is(err, lease.ErrLost) }}

// read scans the lane's sources from the resume point and sends batches
// of entries: each record is converted to its franz-go record here, right
// after its block was decoded (ScanBuffered: the archive's Record structs
// are reused from block to block, the blocks' buffers are recycled once
// their records were acknowledged, the franz-go records live in slabs).
func (lr *laneRun) read(ctx context.Context, startIdx int, startOff int64, out chan<- batch) error {
	defer close(out)
	var cur *slab
	next := 0
	bufs := blockBuffers{free: &lr.rn.blocks}
	var blk *blockBuf
	var blkEntries int64
	endBlock := func() {
		if blk != nil {
			blk.release(blockHold - blkEntries)
			blk, blkEntries = nil, 0
		}
	}
	defer func() {
		if cur != nil {
			cur.release(int32(slotsPerSlab-next) + 1)
		}
		endBlock()
		bufs.done()
	}()
	send := func(b batch) error {
		if len(b.ents) == 0 {
			return nil
		}
		select {
		case out <- b:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	topic := lr.l.targetTopic
	for i := startIdx; i < len(lr.l.sources); i++ {
		s := lr.l.sources[i]
		from, ok := s.resumeFrom(i == startIdx, startOff)
		if !ok {
			continue
		}
		b := batch{src: i}
		var last time.Time
		var prev *manifest.Record
		err := s.log.ScanBuffered(ctx, from, s.to, &bufs, func(it manifest.ScanItem) error {
			r := it.Record
			if r == nil {
				return nil
			}
			if blk == nil || &blk.b[0] != &it.Buffer[0] {
				endBlock()
				blk = bufs.claim(it.Buffer)
			}
			blkEntries++
			// Records of one block are consecutive in one slice; a record
			// that does not follow the previous one in memory starts a new
			// block. A pause before it means Scan waited for the store:
			// hand over what is ready, so the producer never waits for a
			// full batch behind a slow read. (The clock is read once per
			// block, not per record.)
			if prev == nil || uintptr(unsafe.Pointer(r)) != uintptr(unsafe.Pointer(prev))+unsafe.Sizeof(*r) {
				now := time.Now()
				if len(b.ents) > 0 && now.Sub(last) > time.Millisecond {
					if err := send(b); err != nil {
						return err
					}
					b = batch{src: i, ents: make([]*entry, 0, cap(b.ents))}
				}
				last = now
			}
			prev = r
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
			target.FillKgo(kr, r, topic)
			p := lr.assign(i, kr)
			kr.Partition = p
			size := target.RecordSize(r)
			sl.e = entry{src: i, off: r.Offset, part: p, size: size, rec: kr, slab: cur, blk: blk}
			b.ents = append(b.ents, &sl.e)
			b.bytes += size
			if b.bytes >= target.BatchBytes || len(b.ents) >= 8192 {
				if err := send(b); err != nil {
					return err
				}
				b = batch{src: i, ents: make([]*entry, 0, len(b.ents))}
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
