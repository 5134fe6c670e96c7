package restore

import (
	"context"
	"fmt"
	"sync"
	"time"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/internal/target"
	"github.com/kbackup/kbackup/manifest"
)

// The direct produce path (ProducerDirect), for a lane writing one
// target partition: the lane's reader appends each record, right after
// its block was decoded, to a record batch (target.Batch: the bytes are
// copied, so blocks are read with ScanTransient and reused at once); a
// full batch goes, within the lane's window, to the lane's sender, which
// writes it as one produce request (target.Writer: idempotent, one
// request in flight) and applies its answer to the acknowledged state at
// once: record i of a batch is at the batch's base offset + i. Batches are
// answered in order, so the acknowledged prefix always ends at a batch's
// end; the last record's hash (what a checkpoint stores) is computed once
// per batch. No per-record structure outlives the reader's callback.

// directBatch describes a batch of one source's records: what its
// acknowledgement applies: their count and bytes, the source offset runs
// (the offset map) and the last record's offset and hash. A skipped batch
// holds records already in the target (a resume): it is applied in order
// without being sent.
type directBatch struct {
	src      int
	n        int64
	bytes    int64
	runs     []directRun
	lastOff  int64
	lastHash string
	skipped  bool
}

// directRun is a run of consecutive source offsets from src, at records
// at.. of the batch.
type directRun struct {
	src, at, count int64
}

var directBatches = sync.Pool{New: func() any { return new(directBatch) }}

func newDirectBatch(src int, skipped bool) *directBatch {
	db := directBatches.Get().(*directBatch)
	db.src, db.skipped = src, skipped
	return db
}

func (db *directBatch) recycle() {
	db.n, db.bytes, db.runs, db.lastOff, db.lastHash = 0, 0, db.runs[:0], 0, ""
	directBatches.Put(db)
}

// add accounts a record at source offset off of size bytes.
func (db *directBatch) add(off, size int64) {
	if k := len(db.runs); k > 0 && db.runs[k-1].src+db.runs[k-1].count == off {
		db.runs[k-1].count++
	} else {
		db.runs = append(db.runs, directRun{src: off, at: db.n, count: 1})
	}
	db.n++
	db.bytes += size
	db.lastOff = off
}

// directLane reports whether the lane restores through the direct path.
func (lr *laneRun) directLane() bool {
	return lr.rn.o.Producer == ProducerDirect && lr.l.targetPartition >= 0
}

// directWriter returns the process's direct-path writer, obtaining its
// producer id on first use. (One producer id per process, not per lane: a
// broker keeps every idempotent producer's state for a day.)
func (rn *runner) directWriter(ctx context.Context) (*target.Writer, error) {
	rn.writerMu.Lock()
	defer rn.writerMu.Unlock()
	if rn.writer == nil {
		w, err := target.NewWriter(ctx, rn.t.Client, target.BatchSnappy)
		if err != nil {
			return nil, err
		}
		w.Logger = rn.o.Logger
		rn.writer = w
	}
	return rn.writer, nil
}

// runDirect restores the lane through the direct path: it reads, builds
// batches and submits them here, and returns once every batch submitted
// was answered (or failed).
func (lr *laneRun) runDirect(ctx context.Context) error {
	w, err := lr.rn.directWriter(ctx)
	if err != nil {
		return err
	}
	pw := w.Partition(lr.l.targetTopic, lr.l.targetPartition)
	// Sends outlive an interruption by up to 10 s, as the franz-go path's
	// wait does: the final checkpoint gets as far as possible. Batches not
	// yet submitted then are not. A lane whose lease is no longer valid
	// (another process may take the partition over) stops sending at once.
	sendCtx, sendCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer sendCancel()
	stop := context.AfterFunc(ctx, func() {
		if lr.fence != nil && !lr.fence.Valid() {
			sendCancel()
			return
		}
		time.AfterFunc(10*time.Second, sendCancel)
	})
	defer stop()
	rerr := lr.readDirect(ctx, sendCtx, pw)
	lr.mu.Lock()
	defer lr.mu.Unlock()
	for lr.pending > 0 {
		lr.waiters++
		lr.cond.Wait()
		lr.waiters--
	}
	lr.flushCountsLocked()
	if lr.err != nil {
		return lr.err
	}
	return rerr
}

// readDirect scans the lane's sources from the resume point, skips (and
// verifies) the records a resumed lane finds already in the target, and
// submits batches to pw (their sends end with sendCtx) within the lane's
// window.
func (lr *laneRun) readDirect(ctx, sendCtx context.Context, pw *target.PartitionWriter) error {
	p, topic := lr.l.targetPartition, lr.l.targetTopic
	limit := lr.rn.o.MaxInFlightBytes
	var b target.Batch
	var db *directBatch
	defer func() {
		if db != nil {
			db.recycle()
		}
	}()
	send := func() error {
		if db == nil || db.n == 0 {
			return nil
		}
		if db.skipped {
			// Only a resume's first records are skipped: nothing was
			// submitted before them, so they apply at once, in order.
			lr.ackDirect(db, 0, nil)
			db = nil
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err // interrupted: nothing more is sent
		}
		db.lastHash = target.RecordHash(b.LastRecord(), !lr.logAppend)
		lr.mu.Lock()
		for lr.err == nil && lr.inflight > 0 && lr.inflight+db.bytes > limit {
			lr.waiters++
			lr.cond.Wait()
			lr.waiters--
		}
		if err := lr.err; err != nil {
			lr.mu.Unlock()
			return err
		}
		lr.inflight += db.bytes
		lr.pending++
		lr.mu.Unlock()
		sent, n := db, db.n // sent is the answer's from here on
		db = nil
		if err := pw.Submit(sendCtx, &b, func(base int64, err error) { lr.ackDirect(sent, base, err) }); err != nil {
			lr.ackDirect(sent, 0, err)
			return err
		}
		lr.restored += n
		b.Reset()
		return nil
	}
	var scratch kgo.Record
	startIdx, startOff := lr.state.SourceIndex, lr.state.SourceOffset
	for i := startIdx; i < len(lr.l.sources); i++ {
		s := lr.l.sources[i]
		from, ok := s.resumeFrom(i == startIdx, startOff)
		if !ok {
			continue
		}
		var prev *manifest.Record
		err := s.log.ScanTransient(ctx, from, s.to, func(it manifest.ScanItem) error {
			r := it.Record
			if r == nil {
				return nil
			}
			size := target.RecordSize(r)
			if k := lr.skip[p]; k > 0 {
				if db != nil && !db.skipped {
					if err := send(); err != nil {
						return err
					}
				}
				if db == nil {
					db = newDirectBatch(i, true)
				}
				db.add(r.Offset, size)
				lr.skip[p] = k - 1
				if k == 1 {
					target.FillKgo(&scratch, r, topic)
					if target.RecordHash(&scratch, !lr.logAppend) != lr.expect[p] {
						db.recycle() // the skipped records are not applied
						db = nil
						return fmt.Errorf("target %s/%d: the last record after the checkpoint is not source %s offset %d, the record this restore would have written there (another producer wrote into the target?); restore with a new --restore-id",
							topic, p, s.log, r.Offset)
					}
					db.lastHash = lr.expect[p]
					return send()
				}
				return nil
			}
			// A record that does not follow the previous one in memory
			// starts a new block. When no batch is in flight then, the
			// link is idle (the first batch, or a store slower than it):
			// what is ready goes at once rather than waiting for a full
			// batch. (Not when batches are in flight: the batch fills
			// meanwhile, and full batches are what make a link with
			// latency carry its throughput.)
			if db != nil && (prev == nil || uintptr(unsafe.Pointer(r)) != uintptr(unsafe.Pointer(prev))+unsafe.Sizeof(*r)) {
				lr.mu.Lock()
				idle := lr.pending == 0
				lr.mu.Unlock()
				if idle {
					if err := send(); err != nil {
						return err
					}
				}
			}
			prev = r
			// A batch ends where it is full, or where it would hold more
			// than the lane's window (which bounds its bytes in flight).
			if db != nil && (!b.FitsArchived(r) || db.bytes+size > limit) {
				if err := send(); err != nil {
					return err
				}
			}
			if db == nil {
				db = newDirectBatch(i, false)
			}
			b.AppendArchived(r)
			db.add(r.Offset, size)
			return nil
		})
		// Records read before a failure are good: restore them too.
		if serr := send(); err == nil {
			err = serr
		}
		if err != nil {
			return fmt.Errorf("read %s offsets %d..%d: %w", s.log, from, s.to, err)
		}
	}
	return nil
}

// ackDirect applies a batch's answer: its records are acknowledged at
// base, base+1, ... (a skipped batch's at the partition's end), or the
// lane fails with err. The batch is done with.
func (lr *laneRun) ackDirect(db *directBatch, base int64, err error) {
	defer db.recycle()
	lr.mu.Lock()
	defer lr.mu.Unlock()
	if !db.skipped {
		lr.inflight -= db.bytes
		lr.pending--
	}
	if lr.waiters > 0 {
		defer lr.cond.Broadcast()
	}
	if err != nil {
		if lr.err == nil {
			lr.err = err // it names the partition
			lr.cancel()
		}
		return
	}
	if lr.err != nil {
		return // nothing after a failed batch is applied
	}
	p := lr.l.targetPartition
	pa := lr.acks[p]
	ts := pa.ts
	if db.skipped {
		base = ts.End
	}
	if base != ts.End && !lr.foreignWrite(&entry{src: db.src, off: db.runs[0].src, part: p, tgt: base}, ts.End) {
		return
	}
	st := &lr.state
	st.SourceIndex, st.SourceOffset = db.src, db.lastOff
	st.Records += db.n
	st.Bytes += db.bytes
	ts.End = base + db.n
	pa.last, pa.lastHash = nil, db.lastHash
	m := &st.Maps[db.src]
	for _, r := range db.runs {
		m.addRun(r.src, base+r.at, r.count)
	}
	m.Records += db.n
	m.TargetEnd = ts.End
	lr.unflushedRecords += db.n
	lr.unflushedBytes += db.bytes
	if lr.unflushedRecords >= 1024 {
		lr.flushCountsLocked()
	}
}
