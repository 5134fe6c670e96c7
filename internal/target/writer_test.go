package target

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbackup/kbackup/internal/kfaketest"
)

// writerClient is a client as the restore's: acks from all in-sync
// replicas.
func writerClient(t *testing.T, c *kfake.Cluster) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.RetryBackoffFn(RetryBackoff))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// newWriterTopic returns a kfake cluster of brokers brokers with topic "t"
// of parts partitions, and a Writer on it.
func newWriterTopic(t *testing.T, brokers int, parts int32, codec BatchCodec) (*kfake.Cluster, *Writer) {
	t.Helper()
	c := newKfake(t, brokers)
	if err := c.CreateTopic("t", parts, nil); err != nil {
		t.Fatal(err)
	}
	w, err := NewWriter(context.Background(), writerClient(t, c), codec)
	if err != nil {
		t.Fatal(err)
	}
	return c, w
}

// testRecords returns n records of partition p with distinct keys, values
// and a header, timestamps going back and forth.
func testRecords(p int32, from, n int) []*kgo.Record {
	var out []*kgo.Record
	for i := from; i < from+n; i++ {
		r := &kgo.Record{Key: fmt.Appendf(nil, "k-%d-%d", p, i), Value: fmt.Appendf(nil, "v-%d-%d", p, i),
			Timestamp: time.UnixMilli(int64(1_700_000_000_000 + i*7 - (i%3)*5))}
		if i%4 == 0 {
			r.Headers = []kgo.RecordHeader{{Key: "h", Value: nil}, {Key: "h", Value: []byte{}}}
		}
		if i%5 == 0 {
			r.Key = nil
		}
		out = append(out, r)
	}
	return out
}

// readPartition reads every record of topic/p (read_uncommitted).
func readPartition(t *testing.T, c *kfake.Cluster, topic string, p int32, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {p: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < want && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	// Anything more (a duplicate) would follow at once.
	short, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	cl.PollFetches(short).EachRecord(func(r *kgo.Record) { out = append(out, r) })
	return out
}

// writeBatches sends recs in batches of per records and checks each
// batch's base offset.
func writeBatches(t *testing.T, pw *PartitionWriter, recs []*kgo.Record, per int, start int64) {
	t.Helper()
	var b Batch
	for i := 0; i < len(recs); i += per {
		b.Reset()
		for _, r := range recs[i:min(i+per, len(recs))] {
			b.Append(r)
		}
		base, err := pw.Send(context.Background(), &b)
		if err != nil {
			t.Fatalf("batch at %d: %v", i, err)
		}
		if base != start+int64(i) {
			t.Fatalf("batch at %d: base offset %d, want %d", i, base, start+int64(i))
		}
	}
}

// answer is a submitted batch's outcome.
type answer struct {
	base int64
	err  error
}

// submitBatches submits recs to pw in batches of per records, each
// answered on answers; it stops at the first Submit error.
func submitBatches(pw *PartitionWriter, recs []*kgo.Record, per int, answers chan<- answer) error {
	for i := 0; i < len(recs); i += per {
		b := new(Batch)
		for _, r := range recs[i:min(i+per, len(recs))] {
			b.Append(r)
		}
		if err := pw.Submit(context.Background(), b, func(base int64, err error) { answers <- answer{base, err} }); err != nil {
			return err
		}
	}
	return nil
}

// checkPartition reads topic/p and compares it with want, offset for
// offset.
func checkPartition(t *testing.T, c *kfake.Cluster, topic string, p int32, want []*kgo.Record) {
	t.Helper()
	got := readPartition(t, c, topic, p, len(want))
	if len(got) != len(want) {
		t.Fatalf("%s/%d holds %d records, want %d", topic, p, len(got), len(want))
	}
	for i := range want {
		if got[i].Offset != int64(i) {
			t.Fatalf("%s/%d record %d at offset %d", topic, p, i, got[i].Offset)
		}
		if err := sameRecord(got[i], want[i]); err != nil {
			t.Fatalf("%s/%d offset %d: %v", topic, p, i, err)
		}
	}
}

// TestWriterWrites: batches of two partitions, each with either codec,
// land in order with the offsets Send returns, records byte for byte.
func TestWriterWrites(t *testing.T) {
	c := newKfake(t, 3)
	cl := writerClient(t, c)
	for i, codec := range []BatchCodec{BatchSnappy, BatchNone} {
		topic := fmt.Sprintf("t%d", i)
		if err := c.CreateTopic(topic, 2, nil); err != nil {
			t.Fatal(err)
		}
		w, err := NewWriter(context.Background(), cl, codec)
		if err != nil {
			t.Fatal(err)
		}
		for p := int32(0); p < 2; p++ {
			recs := testRecords(p, 0, 1000)
			writeBatches(t, w.Partition(topic, p), recs, 97, 0)
			checkPartition(t, c, topic, p, recs)
		}
	}
}

// TestWriterRetries: a batch refused before it is appended (not the
// leader, no leader, not enough replicas), one appended but answered with
// an error (a timeout, not enough replicas after the append) and one
// whose connection closed are sent again; each record lands once, at the
// offset Send returns.
func TestWriterRetries(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  *kerr.Error
	}{
		{"not-leader", kerr.NotLeaderForPartition},
		{"no-leader", kerr.LeaderNotAvailable},
		{"not-enough-replicas", kerr.NotEnoughReplicas},
		{"timed-out-after-append", kerr.RequestTimedOut},
		{"not-enough-replicas-after-append", kerr.NotEnoughReplicasAfterAppend},
		{"connection-closed", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, w := newWriterTopic(t, 1, 1, BatchSnappy)
			var logs kfaketest.LogBuffer
			w.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			pw := w.Partition("t", 0)
			recs := testRecords(0, 0, 300)
			writeBatches(t, pw, recs[:100], 50, 0)
			var h *kfake.FaultHandle
			if tc.err != nil {
				h = c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Err: tc.err, Count: 2})
			} else {
				n := 0
				c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
					n++
					c.KeepControl()
					if n > 2 {
						return nil, nil, false
					}
					return nil, errors.New("dropped"), true
				})
			}
			writeBatches(t, pw, recs[100:], 50, 100)
			if h != nil && h.Hits() != 2 {
				t.Fatalf("the fault answered %d requests, want 2", h.Hits())
			}
			if n := strings.Count(logs.String(), "produce request to be sent again"); n < 1 {
				t.Fatalf("no debug line for the batch sent again:\n%s", logs.String())
			}
			checkPartition(t, c, "t", 0, recs)
		})
	}
}

// TestWriterLeaderMoves: the partition's leader moves between batches;
// the writer finds the new one and goes on without a gap or a duplicate.
func TestWriterLeaderMoves(t *testing.T) {
	c, w := newWriterTopic(t, 3, 1, BatchSnappy)
	pw := w.Partition("t", 0)
	recs := testRecords(0, 0, 600)
	for i := 0; i < 6; i++ {
		leader := c.LeaderFor("t", 0)
		writeBatches(t, pw, recs[i*100:(i+1)*100], 40, int64(i*100))
		if err := c.MoveTopicPartition("t", 0, (leader+1)%3); err != nil {
			t.Fatal(err)
		}
	}
	checkPartition(t, c, "t", 0, recs)
}

// TestWriterFails: an error after which the broker cannot tell what it
// appended (its producer state lost) or that a retry cannot fix ends the
// partition's writing: Send returns it, and every later Send returns it
// without sending.
func TestWriterFails(t *testing.T) {
	for _, e := range []*kerr.Error{kerr.OutOfOrderSequenceNumber, kerr.UnknownProducerID, kerr.MessageTooLarge, kerr.CorruptMessage} {
		t.Run(e.Message, func(t *testing.T) {
			c, w := newWriterTopic(t, 1, 1, BatchSnappy)
			pw := w.Partition("t", 0)
			recs := testRecords(0, 0, 30)
			writeBatches(t, pw, recs[:10], 10, 0)
			h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Err: e, Count: -1})
			var b Batch
			for _, r := range recs[10:20] {
				b.Append(r)
			}
			start := time.Now()
			_, err := pw.Send(context.Background(), &b)
			if !errors.Is(err, e) {
				t.Fatalf("Send: %v, want %v", err, e)
			}
			if time.Since(start) > 5*time.Second || h.Hits() != 1 {
				t.Fatalf("the error was retried (%d requests, %v)", h.Hits(), time.Since(start))
			}
			h.Remove()
			b.Reset()
			for _, r := range recs[20:] {
				b.Append(r)
			}
			if _, err2 := pw.Send(context.Background(), &b); err2 == nil || err2.Error() != err.Error() {
				t.Fatalf("Send after the failure: %v, want %v", err2, err)
			}
			checkPartition(t, c, "t", 0, recs[:10])
		})
	}
}

// TestWriterGivesUp: a retriable error that does not pass ends Send once
// WriterRetryFor is over, or at once when ctx ends.
func TestWriterGivesUp(t *testing.T) {
	c, w := newWriterTopic(t, 1, 2, BatchSnappy)
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Err: kerr.NotLeaderForPartition, Count: -1})
	old := WriterRetryFor
	WriterRetryFor = 300 * time.Millisecond
	defer func() { WriterRetryFor = old }()
	var b Batch
	b.Append(testRecords(0, 0, 1)[0])
	if _, err := w.Partition("t", 0).Send(context.Background(), &b); !errors.Is(err, kerr.NotLeaderForPartition) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send: %v, want the deadline and the last error", err)
	}
	WriterRetryFor = time.Hour
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := w.Partition("t", 1).Send(ctx, &b); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("Send: %v after %v, want the context's end", err, time.Since(start))
	}
}

// TestWriterPipelines: up to MaxInFlight batches are in flight at once
// (Submit returns at once for them and waits for the next), and their
// answers come in order.
func TestWriterPipelines(t *testing.T) {
	c, w := newWriterTopic(t, 1, 1, BatchSnappy)
	pw := w.Partition("t", 0)
	recs := testRecords(0, 0, 70)
	writeBatches(t, pw, recs[:10], 10, 0) // the metadata is cached
	release := make(chan struct{})
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		<-release // holds the broker: the requests behind wait on the connection
		return nil, nil, false
	})
	answers := make(chan answer, 6)
	submitted := make(chan int, 6)
	go func() {
		for i := 1; i <= 6; i++ {
			var b Batch
			for _, r := range recs[i*10 : (i+1)*10] {
				b.Append(r)
			}
			if err := pw.Submit(context.Background(), &b, func(base int64, err error) { answers <- answer{base, err} }); err != nil {
				t.Error(err)
			}
			submitted <- i
		}
	}()
	for i := 1; i <= MaxInFlight; i++ {
		select {
		case <-submitted:
		case <-time.After(5 * time.Second):
			t.Fatalf("Submit of batch %d of %d in flight waits", i, MaxInFlight)
		}
	}
	select {
	case <-submitted:
		t.Fatalf("a batch beyond %d in flight was submitted", MaxInFlight)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	for i := 1; i <= 6; i++ {
		a := <-answers
		if a.err != nil || a.base != int64(i*10) {
			t.Fatalf("answer %d: offset %d, %v; want %d", i, a.base, a.err, i*10)
		}
	}
	checkPartition(t, c, "t", 0, recs)
}

// TestWriterOvertaken: the first of several batches in flight is refused
// before it is appended; the ones behind it arrive out of sequence and are
// refused too (OUT_OF_ORDER_SEQUENCE_NUMBER), then sent again in order:
// every record lands once, in order.
func TestWriterOvertaken(t *testing.T) {
	c, w := newWriterTopic(t, 1, 1, BatchSnappy)
	pw := w.Partition("t", 0)
	recs := testRecords(0, 0, 80)
	writeBatches(t, pw, recs[:10], 10, 0)
	h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Err: kerr.NotLeaderForPartition})
	answers := make(chan answer, 7)
	if err := submitBatches(pw, recs[10:], 10, answers); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 8; i++ {
		a := <-answers
		if a.err != nil || a.base != int64(i*10) {
			t.Fatalf("answer %d: offset %d, %v; want %d", i, a.base, a.err, i*10)
		}
	}
	if h.Hits() != 1 {
		t.Fatalf("the fault answered %d requests", h.Hits())
	}
	checkPartition(t, c, "t", 0, recs)
}

// batchSeq matches a produce request carrying the batch whose first
// sequence number is seq.
func batchSeq(seq int32) func(kmsg.Request) bool {
	return func(r kmsg.Request) bool {
		for _, t := range r.(*kmsg.ProduceRequest).Topics {
			for _, p := range t.Partitions {
				if len(p.Records) >= 57 && int32(binary.BigEndian.Uint32(p.Records[53:])) == seq {
					return true
				}
			}
		}
		return false
	}
}

// TestWriterAnsweredOutOfOrder: batch 0 is appended but answered with a
// timeout, batch 1 behind it is appended and answered, batch 2 is refused
// before the append. Batch 0's retry is answered with its original
// offset; batch 2's retry waits until batches 0 and 1 count as appended,
// though batch 1 was answered first; every record lands once.
func TestWriterAnsweredOutOfOrder(t *testing.T) {
	c, w := newWriterTopic(t, 1, 1, BatchSnappy)
	pw := w.Partition("t", 0)
	recs := testRecords(0, 0, 40)
	writeBatches(t, pw, recs[:10], 10, 0) // sequence 0..9; metadata cached
	release := make(chan struct{})
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		<-release // all three batches are in flight before the first answer
		return nil, nil, false
	})
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.RequestTimedOut, When: batchSeq(10)})
	late := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotLeaderForPartition, When: batchSeq(30)})
	answers := make(chan answer, 3)
	if err := submitBatches(pw, recs[10:], 10, answers); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	for i := 1; i <= 3; i++ {
		select {
		case a := <-answers:
			if a.err != nil || a.base != int64(i*10) {
				t.Fatalf("answer %d: offset %d, %v; want %d", i, a.base, a.err, i*10)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no answer %d after 10 s: a retry waits for batches that were appended", i)
		}
	}
	if late.Hits() != 1 {
		t.Fatalf("batch 2's fault answered %d requests", late.Hits())
	}
	checkPartition(t, c, "t", 0, recs)
}

// TestWriterPartitionsKeepNoBuffers: a partition done with writing keeps
// no batch or compression buffer (a restore keeps the PartitionWriter of
// every partition it wrote; each kept ~2 MB before).
func TestWriterPartitionsKeepNoBuffers(t *testing.T) {
	const parts = 24
	c := newKfake(t, 1)
	if err := c.CreateTopic("t", parts, nil); err != nil {
		t.Fatal(err)
	}
	w, err := NewWriter(context.Background(), writerClient(t, c), BatchSnappy)
	if err != nil {
		t.Fatal(err)
	}
	value := make([]byte, 4000)
	rnd := uint64(7)
	for i := range value { // incompressible: the encoded batches are ~1 MB
		rnd = rnd*6364136223846793005 + 1442695040888963407
		value[i] = byte(rnd >> 56)
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC() // a sync.Pool's contents go in the second
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	for p := int32(0); p < parts; p++ {
		var b Batch
		for b.Fits(&kgo.Record{Value: value}) {
			b.Append(&kgo.Record{Value: value, Timestamp: time.UnixMilli(1)})
		}
		if _, err := w.Partition("t", p).Send(context.Background(), &b); err != nil {
			t.Fatal(err)
		}
	}
	grew := int64(heap()) - int64(before)
	runtime.KeepAlive(w) // the restore keeps its writer
	if grew > 8<<20 {
		t.Fatalf("the heap grew by %d MB after writing a 1 MB batch to each of %d partitions", grew>>20, parts)
	}
}

// TestWriterFirstBatchAlone: a broker takes a producer's first batch on a
// partition whatever its sequence number (it has no state to check it
// against), so until a batch was appended only one is in flight: here
// the first batch to a new topic is refused (not the leader) while the
// ones behind it wait; every record lands once, in order. (With every
// batch in flight at once, a later batch was appended first and the
// first one's retry refused as out of order: a restore into a topic
// created a moment before failed so on real Kafka.)
func TestWriterFirstBatchAlone(t *testing.T) {
	c, w := newWriterTopic(t, 1, 1, BatchSnappy)
	pw := w.Partition("t", 0)
	recs := testRecords(0, 0, 50)
	first := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotLeaderForPartition, When: batchSeq(0), Count: 2})
	// The first fault answers the first batch's first two requests; this
	// one sees every later request (kfake serves them one at a time).
	var zeroSent atomic.Bool
	var early atomic.Int64
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Observe: true, Count: -1, When: func(r kmsg.Request) bool {
		if batchSeq(0)(r) {
			zeroSent.Store(true)
		} else if !zeroSent.Load() {
			early.Add(1) // a later batch reached the broker before the first could be appended
		}
		return true
	}})
	answers := make(chan answer, 5)
	if err := submitBatches(pw, recs, 10, answers); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		a := <-answers
		if a.err != nil || a.base != int64(i*10) {
			t.Fatalf("answer %d: offset %d, %v; want %d", i, a.base, a.err, i*10)
		}
		if i == 0 && first.Hits() != 2 {
			t.Fatalf("the first batch's fault answered %d requests", first.Hits())
		}
	}
	if n := early.Load(); n > 0 {
		t.Fatalf("%d requests of later batches reached the broker before the first batch was appended", n)
	}
	checkPartition(t, c, "t", 0, recs)
}
