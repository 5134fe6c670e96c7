package restore

import (
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// ackLane is a lane of one target partition with n entries handed to the
// producer: the first half in slab s1 and block b1, the rest in s2 and b2
// (each holding extra references, as the reader's do until it moves on).
func ackLane(t *testing.T, n int, size, limit int64) (lr *laneRun, ents []*entry, s1, s2 *slab, b1, b2 *blockBuf) {
	t.Helper()
	rn := &runner{o: &Options{MaxInFlightBytes: limit, Logger: testLogger(t)}}
	lr = newLaneRun(rn, &lane{name: "l", targetTopic: "t", targetPartition: -1}, false, 1)
	lr.cancel = func() {}
	lr.state.Targets = []targetState{{Partition: 0, Base: 10, End: 10}}
	ts := &lr.state.Targets[0]
	lr.tgt[0], lr.acks[0] = ts, &partAck{ts: ts}
	s1, s2 = new(slab), new(slab)
	s1.refs.Store(1000)
	s2.refs.Store(1000)
	b1, b2 = &blockBuf{}, &blockBuf{}
	b1.refs.Store(1000)
	b2.refs.Store(1000)
	for i := range n {
		s, b := s1, b1
		if i >= n/2 {
			s, b = s2, b2
		}
		sl := &s.slots[i%slotsPerSlab]
		sl.rec = kgo.Record{Topic: "t", Partition: 0}
		sl.e = entry{off: int64(100 + i), part: 0, size: size, rec: &sl.rec, slab: s, blk: b}
		ents = append(ents, &sl.e)
	}
	lr.queue = append(lr.queue, ents...)
	lr.pending, lr.inflight = n, int64(n)*size
	lr.handed.Add(int64(n))
	return lr, ents, s1, s2, b1, b2
}

// ackAt acknowledges e as written at target offset off.
func ackAt(lr *laneRun, e *entry, off int64, err error) {
	e.rec.Offset = off
	lr.ack(e.rec, err)
}

// TestAckRuns: acknowledgements are applied in runs, yet every wait ends:
// a run is applied when it is full, when its bytes reach an eighth of the
// in-flight window, when its last record is the last one outstanding, and
// at once on an error. Each slab and block ends with exactly one reference
// per entry released, less the partition's last record's pin.
func TestAckRuns(t *testing.T) {
	t.Run("last-outstanding", func(t *testing.T) {
		const n = slotsPerSlab // fewer than ackRun
		lr, ents, s1, s2, b1, b2 := ackLane(t, n, 10, 1<<20)
		for i, e := range ents[:n-1] {
			ackAt(lr, e, int64(10+i), nil)
		}
		if lr.pending != n || lr.state.Records != 0 {
			t.Fatalf("after %d of %d small acknowledgements: pending %d, %d records applied; want them collected", n-1, n, lr.pending, lr.state.Records)
		}
		ackAt(lr, ents[n-1], int64(10+n-1), nil)
		if lr.pending != 0 || lr.inflight != 0 || lr.state.Records != n || lr.state.Targets[0].End != 10+n || lr.state.SourceOffset != int64(100+n-1) {
			t.Fatalf("after the last acknowledgement: pending %d, inflight %d, records %d, end %d, source offset %d",
				lr.pending, lr.inflight, lr.state.Records, lr.state.Targets[0].End, lr.state.SourceOffset)
		}
		if got, want := s1.refs.Load(), int32(1000-n/2); got != want {
			t.Errorf("first slab: %d references, want %d (one released per entry)", got, want)
		}
		if got, want := s2.refs.Load(), int32(1000-(n/2-1)); got != want {
			t.Errorf("second slab: %d references, want %d (the last record pins it)", got, want)
		}
		if got, want := b1.refs.Load(), int64(1000-n/2); got != want {
			t.Errorf("first block: %d references, want %d", got, want)
		}
		if got, want := b2.refs.Load(), int64(1000-(n/2-1)); got != want {
			t.Errorf("second block: %d references, want %d", got, want)
		}
	})
	t.Run("full-run", func(t *testing.T) {
		lr, ents, _, _, _, _ := ackLane(t, ackRun+10, 10, 1<<20)
		for i, e := range ents[:ackRun] {
			ackAt(lr, e, int64(10+i), nil)
		}
		if lr.state.Records != ackRun || lr.pending != 10 {
			t.Fatalf("after %d acknowledgements: %d records applied, %d pending", ackRun, lr.state.Records, lr.pending)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		// A producer waiting for room sees every eighth of the window.
		lr, ents, _, _, _, _ := ackLane(t, 20, 100, 800)
		ackAt(lr, ents[0], 10, nil)
		if lr.inflight != 19*100 || lr.state.Records != 1 {
			t.Fatalf("an acknowledgement of an eighth of the window: inflight %d, %d records applied", lr.inflight, lr.state.Records)
		}
	})
	t.Run("error", func(t *testing.T) {
		lr, ents, _, _, _, _ := ackLane(t, 20, 10, 1<<20)
		for i, e := range ents[:5] {
			ackAt(lr, e, int64(10+i), nil)
		}
		boom := errors.New("boom")
		ackAt(lr, ents[5], -1, boom)
		if !errors.Is(lr.err, boom) || lr.state.Records != 5 || lr.pending != 14 || !ents[5].failed {
			t.Fatalf("after an error: err %v, %d records applied, %d pending, failed %v", lr.err, lr.state.Records, lr.pending, ents[5].failed)
		}
		// Later acknowledgements do not move the prefix past the failure.
		for i, e := range ents[6:] {
			ackAt(lr, e, int64(16+i), nil)
		}
		if lr.state.Records != 5 || lr.pending != 0 {
			t.Fatalf("after the rest: %d records applied, %d pending", lr.state.Records, lr.pending)
		}
	})
}
