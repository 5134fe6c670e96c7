// Package restoretest holds what the tests of package restore and package
// replay share: archiving a kfake cluster, and archived and live records
// read and compared content for content.
package restoretest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/archive"
	"github.com/kbackup/kbackup/internal/kfaketest"
	"github.com/kbackup/kbackup/internal/topicsel"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
)

// ArchiveOnce archives the cluster at brokers into st with the archiver's
// Once mode, with blocks and segments of the given sizes (small ones give
// seeks something to skip). topics nil archives every non-internal topic.
func ArchiveOnce(t testing.TB, brokers []string, st store.Store, topics *topicsel.Selector, blockBytes, segmentBytes int) {
	t.Helper()
	ArchiveOnceWith(t, brokers, st, func(o *archive.Options) {
		o.Topics, o.BlockBytes, o.SegmentBytes = topics, blockBytes, segmentBytes
	})
}

// ArchiveOnceWith is ArchiveOnce with options set by mod.
func ArchiveOnceWith(t testing.TB, brokers []string, st store.Store, mod func(*archive.Options)) {
	t.Helper()
	o := archive.Options{KafkaOpts: []kgo.Opt{kgo.SeedBrokers(brokers...)}, Store: st, Once: true,
		Logger: kfaketest.Logger(t), WriterID: "test"}
	mod(&o)
	a, err := archive.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := a.Run(ctx); err != nil {
		t.Fatalf("archive --once: %v", err)
	}
}

// Topics selects the topics whose whole name matches expr.
func Topics(t testing.TB, expr string) *topicsel.Selector {
	t.Helper()
	s, err := topicsel.Compile([]string{expr}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Rec is one record as compared: offset, timestamp, key, value, headers.
type Rec struct {
	Offset    int64
	Timestamp int64
	Key       []byte
	Value     []byte
	Headers   []manifest.Header
}

// EqualContent compares everything but the offset.
func (r Rec) EqualContent(o Rec) bool {
	return r.Timestamp == o.Timestamp && bytes.Equal(r.Key, o.Key) && (r.Key == nil) == (o.Key == nil) &&
		bytes.Equal(r.Value, o.Value) && (r.Value == nil) == (o.Value == nil) && sameHeaders(r.Headers, o.Headers)
}

func sameHeaders(a, b []manifest.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || !bytes.Equal(a[i].Value, b[i].Value) || (a[i].Value == nil) != (b[i].Value == nil) {
			return false
		}
	}
	return true
}

// Archived reads one partition's records of the current incarnation in
// [from, to] (to < 0: the end), and its gaps.
func Archived(t testing.TB, st store.Store, topic string, partition int32) ([]Rec, []manifest.Gap) {
	t.Helper()
	ctx := context.Background()
	a, err := manifest.Open(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	incs, err := a.Incarnations(ctx, topic)
	if err != nil || len(incs) == 0 {
		t.Fatalf("incarnations of %s: %v", topic, err)
	}
	p := a.Partition(topic, incs[len(incs)-1].TopicID, partition)
	var out []Rec
	var gaps []manifest.Gap
	err = p.Scan(ctx, 0, -1, func(it manifest.ScanItem) error {
		if r := it.Record; r != nil {
			out = append(out, Rec{r.Offset, r.Timestamp, bytes.Clone(r.Key), bytes.Clone(r.Value), r.Headers})
		} else {
			gaps = append(gaps, it.Gap)
		}
		return nil
	})
	if err != nil && err != manifest.StopScan {
		if errors.Is(err, manifest.ErrOutOfRange) {
			return nil, nil
		}
		t.Fatal(err)
	}
	return out, gaps
}

// ReadTopic reads every partition of topic in the cluster up to its end
// offsets, with a plain consumer.
func ReadTopic(t testing.TB, c *kfake.Cluster, topic string) map[int32][]Rec {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm := kadm.NewClient(kfaketest.Client(t, c))
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
		}
	})
	out := map[int32][]Rec{}
	if len(want) == 0 {
		return out
	}
	cl := kfaketest.Client(t, c, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	pos := map[int32]int64{}
	done := func() bool {
		for p, e := range want {
			if pos[p] < e {
				return false
			}
		}
		return true
	}
	for !done() {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s: timeout at %v, want %v", topic, pos, want)
		}
		fs.EachRecord(func(r *kgo.Record) {
			pos[r.Partition] = r.Offset + 1
			var hs []manifest.Header
			for _, h := range r.Headers {
				hs = append(hs, manifest.Header{Key: h.Key, Value: h.Value})
			}
			out[r.Partition] = append(out[r.Partition], Rec{r.Offset, r.Timestamp.UnixMilli(), r.Key, r.Value, hs})
		})
	}
	return out
}

// SameContent compares want and got record by record (offsets aside).
func SameContent(t testing.TB, what string, want, got []Rec) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("%s: want %d records, got %d\nwant %s\ngot  %s", what, len(want), len(got), Offsets(want), Offsets(got))
	}
	for i := range want {
		if !want[i].EqualContent(got[i]) {
			t.Fatalf("%s: record %d differs:\nwant %+v\ngot  %+v", what, i, want[i], got[i])
		}
	}
}

// Offsets lists the offsets of rs (the first 40) for a message.
func Offsets(rs []Rec) string {
	var b bytes.Buffer
	for i, r := range rs {
		if i > 40 {
			b.WriteString(" ...")
			break
		}
		fmt.Fprintf(&b, " %d", r.Offset)
	}
	return b.String()
}
