package target

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbackup/kbackup/internal/retry"
)

// Writer is a restore's own idempotent producer: it sends each Batch of a
// partition as one produce request (acks=all) to the partition's leader,
// up to MaxInFlight of them in flight per partition (PartitionWriter), and
// returns the offset the broker gave the batch's first record. It skips what a general producer does per
// record (a record struct, a promise, its own batching): a restore has
// its records in order, already grouped per partition.
//
// Idempotence: the Writer has its own producer id (InitProducerID), and
// each partition's batches carry consecutive sequence numbers. A request
// whose answer is lost (a connection error, a timeout) or refused for a
// reason the broker checks before it appends (not the leader, not enough
// replicas) is sent again, the same bytes with the same sequence number:
// the broker appends the batch at most once, and for a batch it already
// appended answers with its original offset. An error after which the
// broker cannot tell (its producer state lost: UNKNOWN_PRODUCER_ID,
// OUT_OF_ORDER_SEQUENCE_NUMBER) or that no retry can fix ends the
// partition's writing with an error; what landed is then found by the
// restore's resume (its checkpoint and the target's end offset).
type Writer struct {
	// Logger gets a debug line for every batch sent again (nil: none).
	Logger *slog.Logger

	cl         *kgo.Client
	producerID int64
	epoch      int16
	codec      BatchCodec

	mu         sync.Mutex
	topics     map[string]*writerTopic
	partitions map[partitionKey]*PartitionWriter
}

// writerTopic is what the Writer knows of a topic: its id (produce
// requests from version 13 name topics by id) and partition leaders.
type writerTopic struct {
	id      [16]byte
	leaders map[int32]int32
}

// WriterRetryFor bounds how long a Writer retries one batch before it
// gives up (franz-go's producer retries for as long; a leader move or a
// broker's restart takes seconds).
var WriterRetryFor = 2 * time.Minute

// writerBackoff paces a batch's retries (the metadata is read again
// before each).
var writerBackoff = retry.Backoff{Initial: 20 * time.Millisecond, Max: time.Second}

// produceTimeout is the produce requests' timeout (franz-go's default).
const produceTimeout = 10 * time.Second

// NewWriter obtains a producer id on cl (whose RequiredAcks must be all
// ISR acks, as the restore's client is) and returns a Writer that
// compresses batches with codec.
func NewWriter(ctx context.Context, cl *kgo.Client, codec BatchCodec) (*Writer, error) {
	w := &Writer{cl: cl, codec: codec, topics: map[string]*writerTopic{}, partitions: map[partitionKey]*PartitionWriter{}}
	policy := retry.Policy{Backoff: writerBackoff, Retryable: retriable}
	ctx, cancel := context.WithTimeout(ctx, WriterRetryFor)
	defer cancel()
	err := retry.Do(ctx, policy, func(ctx context.Context) error {
		req := kmsg.NewPtrInitProducerIDRequest()
		req.ProducerID, req.ProducerEpoch = -1, -1
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return err
		}
		if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
			return err
		}
		w.producerID, w.epoch = resp.ProducerID, resp.ProducerEpoch
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("obtain a producer id from the target: %w", err)
	}
	return w, nil
}

// retriable reports whether a request's error may pass: a Kafka error
// marked retriable, or an error of the connection (not of the context).
func retriable(err error) bool {
	var ended *endedError
	if errors.As(err, &ended) {
		return false
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, kgo.ErrClientClosed) {
		return false
	}
	var ke *kerr.Error
	if errors.As(err, &ke) {
		// CORRUPT_MESSAGE is retriable for a general client; the same
		// bytes sent again would be refused again.
		return ke.Retriable && ke != kerr.CorruptMessage
	}
	return true
}

// MaxInFlight is the most batches of a partition a PartitionWriter has
// in flight: a broker remembers a producer's last five batches per
// partition, which is what lets it answer a resent batch with its
// original offset.
const MaxInFlight = 5

// PartitionWriter writes the batches of one partition, in order, with up
// to MaxInFlight of them in flight (a link with latency moves about that
// many batches per round trip).
//
// Until a batch of the partition was appended, and again after any error,
// one batch is in flight at a time (awaitPipelining). Otherwise batches
// are sent in order, each from its own goroutine, once the one before was
// issued (its request call began); franz-go writes a broker's
// requests in the order they are issued, so they almost always arrive in
// order (none overtook another in the benchmarks, also under load). One
// that overtakes an earlier one, or follows one that failed, is refused
// with OUT_OF_ORDER_SEQUENCE_NUMBER without being appended (the broker has
// the producer's state: a batch was appended before); it is sent again
// once every batch before it was appended. The same error for
// a batch sent after every earlier one was appended means the broker lost
// the producer's state: that ends the partition's writing. Any retry of a
// batch waits until every earlier batch was appended, so retries go in
// order too.
type PartitionWriter struct {
	w         *Writer
	topic     string
	partition int32

	slots chan struct{} // one per batch in flight

	mu     sync.Mutex
	cond   *sync.Cond
	seq    int32
	next   int64 // number of the next batch submitted
	okUpTo int64 // batches 0..okUpTo-1 were appended
	failed error
	// pipelining: the last answer was a success, so more than one batch
	// may be in flight (awaitPipelining).
	pipelining bool
	waiting    []*pwBatch // submitted, not yet delivered, in order
	last       *pwBatch   // the last batch submitted

	deliverMu sync.Mutex // delivers answers in order
}

// encodedBatches (*[]byte) and compressBuffers (*batchEncoder: the snappy
// output a batch is compressed into before it is encoded) are shared by
// every PartitionWriter: a partition done with writing keeps none (a
// restore of thousands of partitions keeps a PartitionWriter for each).
var encodedBatches, compressBuffers sync.Pool

// pwBatch is a batch in flight.
type pwBatch struct {
	k      int64
	enc    *[]byte
	issued chan struct{} // closed once its first request was issued
	done   func(base int64, err error)

	finished bool
	base     int64
	err      error
}

// Partition returns the writer of topic's partition p: always the same
// one (the partition's sequence numbers are its), failed or not.
func (w *Writer) Partition(topic string, p int32) *PartitionWriter {
	w.mu.Lock()
	defer w.mu.Unlock()
	k := partitionKey{topic, p}
	if pw := w.partitions[k]; pw != nil {
		return pw
	}
	pw := &PartitionWriter{w: w, topic: topic, partition: p, slots: make(chan struct{}, MaxInFlight)}
	pw.cond = sync.NewCond(&pw.mu)
	w.partitions[k] = pw
	return pw
}

type partitionKey struct {
	topic     string
	partition int32
}

// Submit encodes b with the next sequence numbers and sends it; b may be
// reused once Submit returns. done is called with the offset of b's first
// record (its record i is at that offset + i) or an error, from another
// goroutine, for every submitted batch in the order submitted. Submit
// waits while MaxInFlight batches are in flight (or until ctx ends: it
// then returns ctx's error and done is not called). After an error the
// PartitionWriter appends nothing more: the batches after a failed one
// would be out of sequence, and fail with its error.
//
// Submit is called from one goroutine at a time; the sends of its batches
// end with ctx.
func (pw *PartitionWriter) Submit(ctx context.Context, b *Batch, done func(base int64, err error)) error {
	if b.Records() == 0 {
		return errors.New("target writer: an empty batch")
	}
	select {
	case pw.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	enc, _ := encodedBatches.Get().(*[]byte)
	if enc == nil {
		enc = new([]byte)
	}
	pw.mu.Lock()
	seq := pw.seq
	// Sequence numbers wrap around at the int32 maximum (Kafka's rule).
	pw.seq = int32((int64(pw.seq) + int64(b.Records())) & 0x7fffffff)
	pb := &pwBatch{k: pw.next, enc: enc, issued: make(chan struct{}), done: done}
	pw.next++
	prev := pw.last
	pw.last = pb
	pw.waiting = append(pw.waiting, pb)
	pw.mu.Unlock()
	sc, _ := compressBuffers.Get().(*batchEncoder)
	if sc == nil {
		sc = new(batchEncoder)
	}
	sc.out = (*enc)[:0]
	*enc = b.encode(sc, pw.w.producerID, pw.w.epoch, seq, pw.w.codec)
	sc.out = nil
	compressBuffers.Put(sc)
	go pw.run(ctx, pb, prev)
	return nil
}

// Send writes b and waits for its answer (Submit and its done).
func (pw *PartitionWriter) Send(ctx context.Context, b *Batch) (int64, error) {
	type answer struct {
		base int64
		err  error
	}
	ch := make(chan answer, 1)
	if err := pw.Submit(ctx, b, func(base int64, err error) { ch <- answer{base, err} }); err != nil {
		return 0, err
	}
	a := <-ch
	return a.base, a.err
}

// run sends pb until it is appended or fails, then delivers what is in
// order.
func (pw *PartitionWriter) run(ctx context.Context, pb *pwBatch, prev *pwBatch) {
	if prev != nil {
		select { // issue after the batch before it: in order on the connection
		case <-prev.issued:
		case <-ctx.Done():
		}
		pw.awaitPipelining(ctx, prev)
	}
	base, err := pw.send(ctx, pb)
	var ended *endedError
	if errors.As(err, &ended) {
		err = ended.err // the error that ended the partition's writing
	} else if err != nil {
		err = fmt.Errorf("produce to %s/%d: %w", pw.topic, pw.partition, err)
	}
	pw.deliverMu.Lock()
	defer pw.deliverMu.Unlock()
	pw.mu.Lock()
	pb.finished, pb.base, pb.err = true, base, err
	pw.pipelining = err == nil
	if err != nil && pw.failed == nil {
		pw.failed = err
	}
	// okUpTo counts the batches appended, in order: a batch answered
	// before an earlier one is counted once that one is. (waiting holds
	// every batch not yet delivered, in order; the delivered ones were
	// counted before.)
	for _, q := range pw.waiting {
		if q.k < pw.okUpTo {
			continue
		}
		if q.k != pw.okUpTo || !q.finished || q.err != nil {
			break
		}
		pw.okUpTo++
	}
	pw.cond.Broadcast()
	var ready []*pwBatch
	for len(pw.waiting) > 0 && pw.waiting[0].finished {
		ready = append(ready, pw.waiting[0])
		pw.waiting[0] = nil
		pw.waiting = pw.waiting[1:]
	}
	pw.mu.Unlock()
	for _, q := range ready {
		q.done(q.base, q.err)
		encodedBatches.Put(q.enc)
		<-pw.slots
	}
}

// awaitPipelining waits, while the partition's last answer was not a
// success, until prev (the batch before) is answered: a broker takes a
// producer's first batch on a partition whatever its sequence number (it
// has nothing to check it against), so a later batch must not reach it
// before the first was appended, and after an error (a leader move) the
// writer goes one batch at a time again until one is appended, as
// franz-go's producer does.
func (pw *PartitionWriter) awaitPipelining(ctx context.Context, prev *pwBatch) {
	defer pw.wakeOnDone(ctx)()
	pw.mu.Lock()
	defer pw.mu.Unlock()
	for !pw.pipelining && !prev.finished && pw.failed == nil && ctx.Err() == nil {
		pw.cond.Wait()
	}
}

// wakeOnDone wakes the waiters on pw.cond when ctx ends (so that they see
// it); the returned func stops that.
func (pw *PartitionWriter) wakeOnDone(ctx context.Context) func() bool {
	return context.AfterFunc(ctx, func() {
		pw.mu.Lock()
		pw.cond.Broadcast()
		pw.mu.Unlock()
	})
}

// awaitHead waits until every batch before pb was appended; it returns
// the error that ended the partition's writing instead when one did.
func (pw *PartitionWriter) awaitHead(ctx context.Context, pb *pwBatch) error {
	defer pw.wakeOnDone(ctx)()
	pw.mu.Lock()
	defer pw.mu.Unlock()
	for pw.okUpTo < pb.k && ctx.Err() == nil {
		if pw.failed != nil {
			return &endedError{pw.failed}
		}
		pw.cond.Wait()
	}
	return ctx.Err()
}

// endedError carries the error that ended a partition's writing to the
// batches after the failed one.
type endedError struct{ err error }

func (e *endedError) Error() string { return e.err.Error() }

// send sends the encoded batch until it is appended, retrying what may
// pass (see Writer and PartitionWriter).
func (pw *PartitionWriter) send(ctx context.Context, pb *pwBatch) (int64, error) {
	var base int64
	stale, first := false, true
	policy := retry.Policy{Backoff: writerBackoff, Retryable: retriable, OnRetry: func(attempt int, err error, wait time.Duration) {
		if l := pw.w.Logger; l != nil {
			l.Debug("produce request to be sent again", "topic", pw.topic, "partition", pw.partition, "attempt", attempt, "wait", wait, "err", err)
		}
		stale = true
		pw.mu.Lock()
		pw.pipelining = false // one batch at a time until one is appended
		pw.mu.Unlock()
	}}
	rctx, cancel := context.WithTimeout(ctx, WriterRetryFor)
	defer cancel()
	defer func() {
		if first {
			close(pb.issued)
		}
	}()
	err := retry.Do(rctx, policy, func(rctx context.Context) error {
		if !first {
			if err := pw.awaitHead(rctx, pb); err != nil {
				return err
			}
		} else {
			pw.mu.Lock()
			failed := pw.failed
			pw.mu.Unlock()
			if failed != nil {
				return &endedError{failed}
			}
		}
		t, leader, err := pw.w.leader(rctx, pw.topic, pw.partition, stale)
		if err != nil {
			return err
		}
		pw.mu.Lock()
		inOrder := pw.okUpTo == pb.k // every batch before it was appended
		pw.mu.Unlock()
		req := kmsg.NewPtrProduceRequest()
		req.Acks, req.TimeoutMillis = -1, int32(produceTimeout/time.Millisecond)
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic, rt.TopicID = pw.topic, t.id
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition, rp.Records = pw.partition, *pb.enc
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		br := pw.w.cl.Broker(int(leader))
		if first {
			first = false
			close(pb.issued)
		}
		kr, err := br.Request(rctx, req)
		if err != nil {
			return err
		}
		resp, ok := kr.(*kmsg.ProduceResponse)
		if !ok {
			return fmt.Errorf("a %T in reply to a produce request", kr)
		}
		for _, st := range resp.Topics {
			if st.Topic != pw.topic && st.TopicID != t.id {
				continue
			}
			for _, sp := range st.Partitions {
				if sp.Partition != pw.partition {
					continue
				}
				if err := kerr.ErrorForCode(sp.ErrorCode); err != nil {
					if err == kerr.OutOfOrderSequenceNumber && !inOrder {
						return errOvertook
					}
					if sp.ErrorMessage != nil {
						return fmt.Errorf("%w (%s)", err, *sp.ErrorMessage)
					}
					return err
				}
				base = sp.BaseOffset
				return nil
			}
		}
		return errors.New("the produce response does not answer for the partition")
	})
	return base, err
}

// errOvertook: a batch arrived before an earlier one of its partition was
// appended (it overtook it, or the earlier one failed); it is sent again
// once the earlier ones are.
var errOvertook = errors.New("out of order behind an earlier batch in flight")

// leader returns the topic's metadata and the partition's leader, read
// again when refresh is set or unknown.
func (w *Writer) leader(ctx context.Context, topic string, p int32, refresh bool) (*writerTopic, int32, error) {
	w.mu.Lock()
	t := w.topics[topic]
	w.mu.Unlock()
	if t != nil && !refresh {
		if l, ok := t.leaders[p]; ok && l >= 0 {
			return t, l, nil
		}
	}
	md, err := topicMetadata(ctx, w.cl.Request, topic)
	if err != nil {
		return nil, -1, err
	}
	if md == nil {
		return nil, -1, kerr.UnknownTopicOrPartition
	}
	t = &writerTopic{id: md.TopicID, leaders: make(map[int32]int32, len(md.Partitions))}
	for _, mp := range md.Partitions {
		if mp.ErrorCode == 0 {
			t.leaders[mp.Partition] = mp.Leader
		}
	}
	w.mu.Lock()
	w.topics[topic] = t
	w.mu.Unlock()
	l, ok := t.leaders[p]
	if !ok || l < 0 {
		return nil, -1, kerr.LeaderNotAvailable
	}
	return t, l, nil
}
