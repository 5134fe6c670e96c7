package restore

import (
	"log/slog"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

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
// still complete and in order.
func TestLanesProduceOneAtATime(t *testing.T) {
	f := buildFixture(t, "serial", 6, 400)
	f.archive(t)
	tgt := newCluster(t)
	o := f.opts(t, tgt)
	o.Concurrency = 6
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
// (not also "created").
func TestTopicCreatedMeanwhile(t *testing.T) {
	f := buildFixture(t, "meanwhile", 3, 40)
	f.archive(t)
	tgt := newCluster(t)
	var logs kfaketest.LogBuffer
	o := f.opts(t, tgt)
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	o.testPlanned = func() { createTopic(t, tgt, f.topic, f.parts, nil) }
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
}
