package restore

import (
	"context"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbackup/kbackup/internal/kfaketest"
)

// concurrentProduce is a franz-go hook run inside every Produce call: it
// records how many goroutines were inside Produce at once.
type concurrentProduce struct{ inside, most, calls atomic.Int64 }

func (h *concurrentProduce) OnProduceRecordBuffered(*kgo.Record) {
	n := h.inside.Add(1)
	for m := h.most.Load(); n > m && !h.most.CompareAndSwap(m, n); m = h.most.Load() {
	}
	h.calls.Add(1)
	runtime.Gosched() // let another lane in, if it can get in
	h.inside.Add(-1)
}

// TestLanesProduceOneAtATime: the lanes hand their runs to the producer one
// lane at a time (franz-go takes one client-wide lock per record; lanes
// producing at once contend for it on every record), and the restore is
// still complete and in order. (The franz-go path's: the direct path's
// lanes each have their own writer.)
func TestLanesProduceOneAtATime(t *testing.T) {
	f := buildFixture(t, "serial", 6, 400)
	f.archive(t)
	tgt := newCluster(t)
	o := f.opts(t, tgt)
	o.Concurrency = 6
	o.Producer = ProducerFranz
	h := &concurrentProduce{}
	o.KafkaOpts = append(o.KafkaOpts, kgo.WithHooks(h))
	sum := run(t, o)
	got := readTopic(t, tgt, f.topic)
	var total int64
	for p := int32(0); p < f.parts; p++ {
		want, _ := archived(t, f.st, f.topic, p)
		sameContent(t, "partition", want, got[p])
		total += int64(len(want))
	}
	if sum.Records != total || h.calls.Load() != total {
		t.Fatalf("restored %d records in %d Produce calls, want %d", sum.Records, h.calls.Load(), total)
	}
	if m := h.most.Load(); m != 1 {
		t.Fatalf("%d lanes were inside Produce at once, want 1", m)
	}
}

// TestTopicCreatedMeanwhile: a planned topic that another process created
// between planning and creation is used as it is, and the log says so once
// (not also "created"). As after creating a topic itself, the restore
// first waits until every broker shows the topic's leaders: here broker 2
// answers leaderless for the topic's first 4 metadata requests.
func TestTopicCreatedMeanwhile(t *testing.T) {
	f := buildFixture(t, "meanwhile", 3, 40)
	f.archive(t)
	tgt := newCluster(t, kfake.NumBrokers(3))
	const late, leaderless = int32(2), 4
	var mu sync.Mutex
	created, asked := false, 0 // broker 2's answers about the topic once it exists
	tgt.ControlKey(int16(kmsg.Metadata), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		tgt.KeepControl()
		req := kr.(*kmsg.MetadataRequest)
		mu.Lock()
		defer mu.Unlock()
		if !created || tgt.CurrentNode() != late || len(req.Topics) != 1 || req.Topics[0].Topic == nil || *req.Topics[0].Topic != f.topic {
			return nil, nil, false
		}
		asked++
		if asked > leaderless {
			return nil, nil, false
		}
		// The brokers as they are (a client updates its brokers from any
		// metadata answer), the topic without leaders.
		resp := req.ResponseKind().(*kmsg.MetadataResponse)
		resp.ControllerID = 0
		for i, addr := range tgt.ListenAddrs() {
			host, port, _ := net.SplitHostPort(addr)
			pn, _ := strconv.Atoi(port)
			b := kmsg.NewMetadataResponseBroker()
			b.NodeID, b.Host, b.Port = int32(i), host, int32(pn)
			resp.Brokers = append(resp.Brokers, b)
		}
		rt := kmsg.NewMetadataResponseTopic()
		rt.Topic = kmsg.StringPtr(f.topic)
		for p := range f.parts {
			rp := kmsg.NewMetadataResponseTopicPartition()
			rp.Partition, rp.Leader, rp.ErrorCode = p, -1, kerr.LeaderNotAvailable.Code
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
		return resp, nil, true
	})
	var logs kfaketest.LogBuffer
	askedAtLog := -1
	o := f.opts(t, tgt)
	o.Logger = slog.New(hookHandler{slog.NewTextHandler(&logs, nil), func(msg string) {
		if strings.Contains(msg, "created meanwhile") {
			mu.Lock()
			askedAtLog = asked
			mu.Unlock()
		}
	}})
	o.testPlanned = func() {
		createTopic(t, tgt, f.topic, f.parts, nil)
		mu.Lock()
		created = true
		mu.Unlock()
	}
	sum := run(t, o)
	if len(sum.Plan.Topics) != 1 || !sum.Plan.Topics[0].Create {
		t.Fatalf("the plan does not create the topic: %+v", sum.Plan.Topics)
	}
	got := readTopic(t, tgt, f.topic)
	for p := int32(0); p < f.parts; p++ {
		want, _ := archived(t, f.st, f.topic, p)
		sameContent(t, "partition", want, got[p])
	}
	out := logs.String()
	if strings.Count(out, "target topic was created meanwhile") != 1 || strings.Contains(out, "target topic created") {
		t.Fatalf("want one \"created meanwhile\" and no \"created\" in the log:\n%s", out)
	}
	if askedAtLog <= leaderless {
		t.Fatalf("the restore went on after asking broker %d for the topic %d times, want more than %d (until it shows the leaders)", late, askedAtLog, leaderless)
	}
}

// hookHandler is a slog handler that calls hook with each message before
// handing the record on.
type hookHandler struct {
	slog.Handler
	hook func(msg string)
}

func (h hookHandler) Handle(ctx context.Context, r slog.Record) error {
	h.hook(r.Message)
	return h.Handler.Handle(ctx, r)
}

func (h hookHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return hookHandler{h.Handler.WithAttrs(as), h.hook}
}

func (h hookHandler) WithGroup(name string) slog.Handler {
	return hookHandler{h.Handler.WithGroup(name), h.hook}
}
