package archive

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
)

// tp names a partition.
type tp struct {
	topic     string
	partition int32
}

func (t tp) String() string { return t.topic + "/" + strconv.Itoa(int(t.partition)) }

// sealed is a closed segment waiting for its commit. The commit goroutine
// finishes it (compression runs there, off the fetch loop); the loop only
// reads start and size.
type sealed struct {
	w         *manifest.SegmentWriter // until finished
	body      *manifest.SegmentBody   // after finished
	writer    *manifest.SegmentWriter // the writer (kept after finished), for Abort
	info      manifest.SegmentInfo
	start     int64
	size      int64     // uncompressed bytes held in memory, for the memory bound
	firstSeen time.Time // when its oldest record was fetched
	firstTs   int64     // CreateTime of its first and last records, for the lag histogram
	lastTs    int64
	hasTs     bool
	// res is the flush object seq reserved for a segment streamed to a
	// keyed staged object (packed layout, a store that stages by key: S3).
	res reservation
}

// reservation is a flush object seq reserved for a streamed segment.
type reservation struct {
	seq int64
	ok  bool
}

// streamed reports whether the segment is streamed to a staged object.
func (s *sealed) streamed() bool { return s.writer != nil && s.writer.Streaming() }

// partState is one owned partition. The run loop goroutine owns it; commit
// goroutines only read the sealed segment and head they are handed.
type partState struct {
	tp        tp
	id        manifest.TopicID
	log       *manifest.PartitionLog
	compacted bool

	head  *manifest.Commit       // last commit known, nil for an empty log
	start *manifest.ArchiveStart // archive start known, nil: nothing expired
	next  int64                  // next offset expected from Kafka
	ready bool                   // head loaded and consumption started

	open        *manifest.SegmentWriter
	openRes     reservation // the open segment's reserved flush object (keyed staging)
	openSince   time.Time
	openFirstTs int64
	openLastTs  int64
	openHasTs   bool

	queue      []*sealed // sealed[0] is being committed when inflight
	inflight   bool
	retryAt    time.Time
	failures   int
	gen        int  // unique per state and resync: results of older generations are dropped
	needRepair bool // the head's time key may be missing
	sawTxn     bool // transactional records seen in this partition
	removing   bool
	hwm        int64 // last high watermark (or LSO) seen in a fetch
	target     int64 // Once: stop when next >= target; -1 none
	lossTotal  int64

	// packed layout
	epoch      int64                  // the claim this archiver holds; 0 before
	ptail      manifest.PartitionTail // entries above the compacted chain
	chead      *manifest.Commit       // compacted head
	compacting bool
	tailBytes  int64     // segment bytes in ptail
	tailSince  time.Time // when ptail's oldest entry (or the oldest since a compaction) was committed
	own        ownSeqs   // own flush objects holding its uncompacted entries

	compactFailures int       // consecutive failed compactions
	compactRetryAt  time.Time // no compaction before (backoff after a failure)
	lostOnce        bool      // Once or removing: another archiver claimed it while compacting
	// runCommits are the commits of this run (packed layout, Once only):
	// the end-of-run claim check takes those a later claim voided out of
	// the summary.
	runCommits    []*manifest.Commit
	claimCheckAt  time.Time // the next claim check (packed, continuous)
	reclaimAt     time.Time // a deferred reclaim after a lost claim (group member): due then; zero none
	claimChecking bool
	flushedSince  bool // an entry was committed since the last claim check (idle partitions are not checked)
	holdNext      bool // a streamed segment was lost: hold the next ones in memory until a commit succeeds
	// partHold is what a streamed open segment holds besides its blocks:
	// the part buffer of its staged object (Archiver.partHold), or 0.
	partHold int64
	// salvageFrom (packed): the newest entry this archiver committed
	// before another archiver's claim voided it; the next claim recommits
	// the void entries' records from the store (manifest.Salvage).
	salvageFrom  *manifest.EntryRef
	salvageTries int  // a deleted topic's partition reclaimed to salvage its void entries
	adopted      bool // a deleted topic's partition taken only to compact its tail (adoptOrphans)
}

// buffered is the memory held by the partition's segments: a streamed
// one's blocks not yet written, and its staged object's part buffer, if
// the store holds one (partHold).
func (ps *partState) buffered() int64 {
	var n int64
	if ps.open != nil {
		n += ps.held()
	}
	for _, s := range ps.queue {
		n += s.size
	}
	return n
}

// held is the memory held by the open segment.
func (ps *partState) held() int64 {
	n := int64(ps.open.Held())
	if ps.open.Streaming() {
		n += ps.partHold
	}
	return n
}

// idle reports whether nothing is buffered or in flight.
func (ps *partState) idle() bool {
	return ps.open == nil && len(ps.queue) == 0 && !ps.inflight
}

// committedNext is the first offset not yet committed.
func (ps *partState) committedNext() int64 {
	if ps.head == nil {
		return 0
	}
	return ps.head.End + 1
}

// writer returns the open segment, starting one at next if needed.
func (ps *partState) writer(a *Archiver, now time.Time) *manifest.SegmentWriter {
	if ps.open == nil {
		opts := manifest.SegmentOptions{Codec: a.opts.codec, BlockSize: a.opts.BlockBytes}
		sg, stages := a.opts.Store.(store.Stager)
		ks, keyed := a.opts.Store.(store.KeyedStager)
		ps.partHold = 0
		switch {
		case a.opts.HoldSegments || ps.holdNext:
		case keyed && a.packed():
			// A store that stages by key (S3: a multipart upload to it):
			// the segment's flush object seq is reserved when staging
			// starts (stageFlush).
			opts.StageAfter = packedStageAfter
			opts.Stage = func() (store.Staged, error) { return a.stageFlush(ps, ks) }
			ps.partHold = a.partHold
		case keyed && stages:
			// Segments layout on an object store: its Stage uploads to a
			// temporary key and copies the object to the segment's key in
			// the store at the end. Only a segment of several blocks is
			// staged: a smaller one is cheaper held and PUT than copied,
			// and each staged object holds a part buffer.
			prefix := ps.log.Prefix() + "segments/"
			opts.StageAfter = packedStageAfter
			opts.Stage = func() (store.Staged, error) { return sg.Stage(context.Background(), prefix) }
			ps.partHold = a.partHold
		case stages:
			// Stream a large segment to the store as it is built instead of
			// holding it until it is sealed. In the packed layout it
			// becomes a flush object of its own (packedTick), so only a
			// segment of several blocks is staged: the partitions that
			// receive little share one flush object.
			prefix := ps.log.Prefix() + "segments/"
			if a.packed() {
				// In wal/, shared by every writer, not wal/<writer>/: a
				// killed writer's staged files are then swept by the next
				// writer that stages (a writer directory is never staged in
				// again).
				prefix = manifest.WALPrefix
				opts.StageAfter = packedStageAfter
			}
			opts.Stage = func() (store.Staged, error) { return sg.Stage(context.Background(), prefix) }
		}
		ps.open = manifest.NewSegmentWriter(ps.next, opts)
		ps.openSince = now
		ps.openHasTs = false
	}
	return ps.open
}

// seal finishes the open segment and queues it for commit.
func (ps *partState) seal() {
	if ps.open == nil {
		return
	}
	ps.queue = append(ps.queue, &sealed{w: ps.open, writer: ps.open, start: ps.open.Start(), size: ps.held(), firstSeen: ps.openSince,
		firstTs: ps.openFirstTs, lastTs: ps.openLastTs, hasTs: ps.openHasTs, res: ps.openRes})
	ps.open, ps.openRes = nil, reservation{}
}

// discard drops the open and sealed segments, discarding the objects of
// streamed ones (an abort is a no-op for one already published, and makes
// a commit in flight fail with manifest.ErrSegmentLost). It returns the
// flush object seqs reserved for them (Archiver.discard releases those
// whose flush did not start).
func (ps *partState) discard() []int64 {
	var res []int64
	if ps.open != nil {
		ps.open.Abort()
		if ps.openRes.ok {
			res = append(res, ps.openRes.seq)
		}
	}
	for _, s := range ps.queue {
		s.writer.Abort()
		if s.res.ok {
			res = append(res, s.res.seq)
		}
	}
	ps.open, ps.openRes, ps.queue = nil, reservation{}, nil
	return res
}

// classifyGap names why Kafka did not return offsets [from, to], given the
// fetch's log start offset and whether transactions are active around the
// gap (a transactional record or control marker in this partition recently
// or later in the same fetch). It may split the range: offsets below the
// log start are data loss (or before-start for a partition with nothing
// archived yet).
type gapPart struct {
	to     int64
	reason manifest.GapReason
}

func (ps *partState) classifyGap(from, to int64, txnNearby bool, logStart int64, firstInFetch bool) []gapPart {
	var parts []gapPart
	// Nothing archived yet: offsets below the log start offset were never in
	// scope (retention removed them before archiving began). Without a log
	// start offset from the broker, the whole leading range counts so.
	if from == 0 && ps.head == nil && len(ps.queue) == 0 && (ps.open == nil || ps.open.Next() == 0) {
		if logStart < 0 || !firstInFetch {
			return []gapPart{{to, manifest.GapBeforeStart}}
		}
		if logStart > 0 {
			end := min(to, logStart-1)
			parts = append(parts, gapPart{end, manifest.GapBeforeStart})
			from = end + 1
		}
	} else if firstInFetch && logStart > from {
		lossTo := min(to, logStart-1)
		parts = append(parts, gapPart{lossTo, manifest.GapDataLoss})
		from = lossTo + 1
	}
	if from <= to {
		reason := manifest.GapNotReturned
		switch {
		case ps.compacted:
			reason = manifest.GapCompacted
		case txnNearby:
			// Aborted records are filtered out by read_committed; their
			// abort marker follows later. Kafka does not say more.
			reason = manifest.GapTransaction
		}
		parts = append(parts, gapPart{to, reason})
	}
	return parts
}

// toRecord converts a franz-go record, keeping every field.
func toRecord(r *kgo.Record) manifest.Record { return toRecordHeaders(r, nil) }

// toRecordHeaders is toRecord with the headers in hdrs (reused when large
// enough): for a record that is appended to a segment (which copies it) and
// then dropped.
func toRecordHeaders(r *kgo.Record, hdrs []manifest.Header) manifest.Record {
	ts := r.Timestamp.UnixMilli()
	if r.Timestamp.IsZero() {
		ts = -1
	}
	out := manifest.Record{
		Offset:        r.Offset,
		Timestamp:     ts,
		Key:           r.Key,
		Value:         r.Value,
		Compression:   r.Attrs.CompressionType(),
		Transactional: r.Attrs.IsTransactional(),
		ProducerID:    r.ProducerID,
		ProducerEpoch: r.ProducerEpoch,
		LeaderEpoch:   r.LeaderEpoch,
	}
	if r.Attrs.TimestampType() == 1 {
		out.TimestampType = manifest.LogAppendTime
	}
	if out.Compression > 4 {
		out.Compression = 0
	}
	if len(r.Headers) > 0 {
		if cap(hdrs) < len(r.Headers) {
			hdrs = make([]manifest.Header, len(r.Headers))
		}
		out.Headers = hdrs[:len(r.Headers)]
		for i, h := range r.Headers {
			out.Headers[i] = manifest.Header{Key: h.Key, Value: h.Value}
		}
	}
	return out
}

// recycle gives records back to the data client's pools (fetchPool):
// nothing may read them, or anything they hold, afterwards.
func recycle(recs []*kgo.Record) {
	for _, r := range recs {
		r.Recycle()
	}
}

// lastControl is the index of the last control marker in recs, -1 if none.
func lastControl(recs []*kgo.Record) int {
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].Attrs.IsControl() {
			return i
		}
	}
	return -1
}

// appendFetch adds one fetch's records for the partition to its open
// segment, turning skipped offsets into gaps. It returns the data-loss
// offsets it recorded. Every record is recycled (fetchPool) once read:
// Append copies it, and a batch's buffers go back to the pool when its
// last record is recycled.
func (ps *partState) appendFetch(a *Archiver, fp *kgo.FetchPartition, now time.Time) (int64, error) {
	var loss int64
	first := true
	var hdrs []manifest.Header // reused: Append copies the record
	// Is there a control marker later in this fetch? Aborted records show
	// up as a gap before their producer's abort marker. Found at the first
	// gap, so a fetch without gaps is walked once.
	lastCtl, lastCtlKnown := -1, false
	done := 0 // fp.Records[:done] are recycled
	defer func() { recycle(fp.Records[done:]) }()
	for i, r := range fp.Records {
		if r.Attrs.IsControl() || r.Attrs.IsTransactional() {
			ps.sawTxn = true
		}
		if r.Offset < ps.next {
			r.Recycle()
			done = i + 1
			continue // already archived (re-delivered after a seek)
		}
		w := ps.writer(a, now)
		if r.Offset > ps.next {
			if !lastCtlKnown {
				// Only from i on: the records before i are recycled.
				if c := lastControl(fp.Records[i:]); c >= 0 {
					lastCtl = i + c
				}
				lastCtlKnown = true
			}
			for _, g := range ps.classifyGap(ps.next, r.Offset-1, ps.sawTxn || i <= lastCtl, fp.LogStartOffset, first) {
				if g.reason == manifest.GapDataLoss {
					loss += g.to - ps.next + 1
					a.opts.Logger.Error("DATA LOSS: retention deleted records before they were archived",
						"topic", ps.tp.topic, "partition", ps.tp.partition, "from", ps.next, "to", g.to, "log_start", fp.LogStartOffset)
				}
				if err := w.AddGap(g.to, g.reason); err != nil {
					return loss, fmt.Errorf("%s: %w", ps.tp, err)
				}
				ps.next = g.to + 1
			}
		}
		first = false
		if r.Attrs.IsControl() {
			if err := w.AddGap(r.Offset, manifest.GapTransaction); err != nil {
				return loss, fmt.Errorf("%s: %w", ps.tp, err)
			}
		} else {
			rec := toRecordHeaders(r, hdrs)
			if rec.Headers != nil {
				hdrs = rec.Headers[:0]
			}
			if err := w.Append(&rec); err != nil {
				return loss, fmt.Errorf("%s: %w", ps.tp, err)
			}
			if rec.TimestampType == manifest.CreateTime {
				if !ps.openHasTs {
					ps.openFirstTs, ps.openHasTs = rec.Timestamp, true
				}
				ps.openLastTs = rec.Timestamp
			}
		}
		ps.next = r.Offset + 1
		r.Recycle()
		done = i + 1
		if ps.next == math.MaxInt64 {
			return loss, fmt.Errorf("%s: offset overflow", ps.tp)
		}
	}
	// Offsets Kafka skipped at the very start of the log (log start moved
	// past our position and nothing else was returned) still get recorded
	// when a later fetch returns records; nothing to do here.
	return loss, nil
}
