package target

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbackup/kbackup/internal/retry"
)

// Writer is a restore's own idempotent producer: it sends each Batch of a
// partition as one produce request (acks=all) to the partition's leader,
// one request in flight per partition, and returns the offset the broker
// gave the batch's first record. It skips what a general producer does per
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
	cl         *kgo.Client
	producerID int64
	epoch      int16
	codec      BatchCodec

	mu     sync.Mutex
	topics map[string]*writerTopic
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
	w := &Writer{cl: cl, codec: codec, topics: map[string]*writerTopic{}}
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

// PartitionWriter writes the batches of one partition, in order. It is
// used by one goroutine at a time.
type PartitionWriter struct {
	w         *Writer
	topic     string
	partition int32
	seq       int32
	failed    error
}

// Partition returns the writer of topic's partition p. Each partition
// must have one PartitionWriter per Writer: the sequence numbers are its.
func (w *Writer) Partition(topic string, p int32) *PartitionWriter {
	return &PartitionWriter{w: w, topic: topic, partition: p}
}

// Send writes b (encoded with the next sequence number) and returns the
// offset of its first record: its record i is at that offset + i. After
// an error the PartitionWriter writes nothing more (the batches after a
// failed one would be out of sequence): every later Send returns it.
func (pw *PartitionWriter) Send(ctx context.Context, b *Batch) (int64, error) {
	if pw.failed != nil {
		return 0, pw.failed
	}
	if b.Records() == 0 {
		return 0, errors.New("target writer: an empty batch")
	}
	enc := b.Encode(pw.w.producerID, pw.w.epoch, pw.seq, pw.w.codec)
	base, err := pw.send(ctx, enc)
	if err != nil {
		pw.failed = fmt.Errorf("produce to %s/%d: %w", pw.topic, pw.partition, err)
		return 0, pw.failed
	}
	// Sequence numbers wrap around at the int32 maximum (Kafka's rule).
	pw.seq = int32((int64(pw.seq) + int64(b.Records())) & 0x7fffffff)
	return base, nil
}

// send sends the encoded batch until it is appended, retrying what may
// pass (see Writer).
func (pw *PartitionWriter) send(ctx context.Context, enc []byte) (int64, error) {
	var base int64
	stale := false
	policy := retry.Policy{Backoff: writerBackoff, Retryable: retriable, OnRetry: func(int, error, time.Duration) { stale = true }}
	rctx, cancel := context.WithTimeout(ctx, WriterRetryFor)
	defer cancel()
	err := retry.Do(rctx, policy, func(rctx context.Context) error {
		t, leader, err := pw.w.leader(rctx, pw.topic, pw.partition, stale)
		if err != nil {
			return err
		}
		req := kmsg.NewPtrProduceRequest()
		req.Acks, req.TimeoutMillis = -1, int32(produceTimeout/time.Millisecond)
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic, rt.TopicID = pw.topic, t.id
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition, rp.Records = pw.partition, enc
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		kr, err := pw.w.cl.Broker(int(leader)).Request(rctx, req)
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
