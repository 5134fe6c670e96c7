package restore

import (
	"context"
	"fmt"
	"time"

	"github.com/kbackup/kbackup/internal/target"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The producing side of a lane: records go to the producer in lane order
// within MaxInFlightBytes, acknowledgements advance the acknowledged
// prefix (what checkpoints store), and records of another writer found
// between the lane's own are reported.

// produceAll produces every record of the batches, skipping (and
// verifying) the ones a resumed lane finds already in the target. The
// in-flight accounting takes the lane's lock once per chunk of records,
// not once per record.
func (lr *laneRun) produceAll(ctx context.Context, batches <-chan batch) error {
	var ready []*entry // a resumed lane's batch without the skipped records; reused
	for b := range batches {
		ents, bytes := b.ents, b.bytes
		if lr.skipping() {
			ready = ready[:0]
			for _, e := range b.ents {
				p := e.part
				k := lr.skip[p]
				if k == 0 {
					ready = append(ready, e)
					continue
				}
				if err := lr.produceChunk(ctx, ready, -1); err != nil {
					return err
				}
				ready = ready[:0]
				lr.skip[p] = k - 1
				if k == 1 && target.RecordHash(e.rec, !lr.logAppend) != lr.expect[p] {
					return fmt.Errorf("target %s/%d: the last record after the checkpoint is not source %s offset %d, the record this restore would have written there (another producer wrote into the target?); restore with a new --restore-id",
						lr.l.targetTopic, p, lr.l.sources[b.src].log, e.off)
				}
				lr.skipped(e)
			}
			ents, bytes = ready, -1
		}
		if err := lr.produceChunk(ctx, ents, bytes); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// skipping reports whether records remain to be skipped (a resumed lane
// found records after its checkpoint in the target).
func (lr *laneRun) skipping() bool {
	for _, k := range lr.skip {
		if k > 0 {
			return true
		}
	}
	return false
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
// least one record; one lane at a time hands its run over, see
// runner.produceMu). bytes is the sum of their sizes (-1: unknown); a
// chunk whose size is known and within the limit waits for room for all of
// it and goes as one run (its entries are not read under the lock).
func (lr *laneRun) produceChunk(ctx context.Context, ents []*entry, bytes int64) error {
	limit := lr.rn.o.MaxInFlightBytes
	for len(ents) > 0 {
		whole := lr.warmed && bytes >= 0 && bytes <= limit
		need := ents[0].size
		if whole {
			need = bytes
		}
		lr.mu.Lock()
		for lr.err == nil && lr.inflight > 0 && lr.inflight+need > limit {
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
		if whole {
			n = len(ents)
			lr.inflight += bytes
			lr.queue = append(lr.queue, ents...)
		} else {
			for n < len(ents) && (n == 0 || lr.inflight+ents[n].size <= limit && lr.warmed) {
				e := ents[n]
				lr.inflight += e.size
				lr.queue = append(lr.queue, e)
				n++
			}
			bytes = -1 // the rest goes record by record
		}
		lr.pending += n
		lr.mu.Unlock()
		lr.handed.Add(int64(n)) // before the records' promises can run
		lr.rn.produceMu.Lock()
		for _, e := range ents[:n] {
			lr.rn.t.Client.Produce(ctx, e.rec, lr.promise)
		}
		lr.rn.produceMu.Unlock()
		lr.restored += int64(n)
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
//
// franz-go calls every promise of a client serially, from one goroutine,
// so the lane collects acknowledgements without its lock (acked) and
// applies them under the lock in runs (applyAcksLocked): every ackRun
// records, every MaxInFlightBytes/8 bytes (the producer's waits for room
// see progress in steps of at most an eighth of the window), whenever the
// acknowledgement is the last one outstanding (handed: nothing acknowledged
// waits unapplied while nothing else is in flight, so the lane's waits end)
// and at once on an error.
func (lr *laneRun) ack(r *kgo.Record, err error) {
	e := entryOf(r)
	lr.ackSeen++
	if err != nil {
		lr.mu.Lock()
		lr.applyAcksLocked()
		e.done, e.failed = true, true
		lr.inflight -= e.size
		lr.pending--
		if lr.err == nil {
			lr.err = fmt.Errorf("produce to %s/%d: %w", r.Topic, r.Partition, err)
			lr.cancel()
		}
		if lr.waiters > 0 {
			lr.cond.Broadcast()
		}
		lr.mu.Unlock()
		return
	}
	e.tgt = r.Offset // read under the lock once applyAcksLocked marks e done
	lr.acked = append(lr.acked, e)
	lr.ackedBytes += e.size
	if len(lr.acked) < ackRun && lr.ackedBytes < lr.rn.o.MaxInFlightBytes/8 && lr.ackSeen != lr.handed.Load() {
		return
	}
	lr.mu.Lock()
	lr.applyAcksLocked()
	lr.mu.Unlock()
}

// ackRun is the most acknowledgements a lane collects before applying them.
const ackRun = 128

// applyAcksLocked applies the collected acknowledgements (called from the
// promise goroutine only, with the lane's lock held).
func (lr *laneRun) applyAcksLocked() {
	if len(lr.acked) == 0 {
		return
	}
	for _, e := range lr.acked {
		e.done = true
	}
	lr.inflight -= lr.ackedBytes
	lr.pending -= len(lr.acked)
	clear(lr.acked)
	lr.acked, lr.ackedBytes = lr.acked[:0], 0
	lr.popLocked()
	if lr.waiters > 0 {
		lr.cond.Broadcast()
	}
}

// popLocked applies the done entries at the head of the queue to the
// acknowledged state.
func (lr *laneRun) popLocked() {
	var relSlab *slab
	var relSlabN int32
	var relBlk *blockBuf
	var relBlkN int64
	defer func() {
		relSlab.release(relSlabN)
		relBlk.release(relBlkN)
	}()
	for lr.head < len(lr.queue) {
		e := lr.queue[lr.head]
		if !e.done || e.failed {
			break
		}
		pa := lr.cur
		if pa == nil || pa.ts.Partition != e.part {
			pa = lr.acks[e.part]
			lr.cur = pa
		}
		ts := pa.ts
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
		// The partition's last record pins its slab and its archive block
		// (checkpoints hash it); the entry itself is done with: its
		// reference becomes the pin and the previous last record's pin is
		// released. Releases of one slab or block in a row are added up:
		// one atomic operation per run, not per record. (old's fields are
		// read before its slab can be recycled; delaying a release only
		// delays the recycling.)
		if old := pa.last; old != nil {
			if old.slab != relSlab {
				relSlab.release(relSlabN)
				relSlab, relSlabN = old.slab, 0
			}
			relSlabN++
			if old.blk != relBlk {
				relBlk.release(relBlkN)
				relBlk, relBlkN = old.blk, 0
			}
			relBlkN++
		}
		pa.last = e
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
