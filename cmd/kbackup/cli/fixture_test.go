package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/filestore"
)

// Topic ids of the fixture.
var (
	ordersID    = manifest.TopicID{0x0a, 0xbc}
	ordersOldID = manifest.TopicID{0x01}
	paymentsID  = manifest.TopicID{0x02}
)

// fixture is a test archive in a temporary directory.
type fixture struct {
	dir string
	url string
	st  store.Store
	a   *manifest.Archive
}

func rec(off, ts int64, key, value []byte, hs ...manifest.Header) manifest.Record {
	return manifest.Record{Offset: off, Timestamp: ts, Key: key, Value: value, Headers: hs,
		ProducerID: -1, ProducerEpoch: -1, LeaderEpoch: -1}
}

// seg is one segment to commit: its last covered offset and its records;
// offsets without a record become gaps of reason gap.
type seg struct {
	end  int64
	gap  manifest.GapReason
	recs []manifest.Record
}

func commitSegs(t *testing.T, a *manifest.Archive, topic string, id manifest.TopicID, partition int32, segs ...seg) {
	t.Helper()
	ctx := context.Background()
	p := a.Partition(topic, id, partition)
	var head *manifest.Commit
	for _, s := range segs {
		start := int64(0)
		if head != nil {
			start = head.End + 1
		}
		w := manifest.NewSegmentWriter(start, manifest.SegmentOptions{Codec: manifest.CodecZstd, BlockSize: 64})
		for i := range s.recs {
			if s.recs[i].Offset > w.Next() {
				if err := w.AddGap(s.recs[i].Offset-1, s.gap); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Append(&s.recs[i]); err != nil {
				t.Fatal(err)
			}
		}
		if s.end >= w.Next() {
			if err := w.AddGap(s.end, s.gap); err != nil {
				t.Fatal(err)
			}
		}
		b, info := w.Finish()
		var err error
		if head, err = p.Append(ctx, head, b, info, "test", 1700000000000); err != nil {
			t.Fatal(err)
		}
	}
}

// newFixture builds:
//
//	orders (current, id 0abc…): partition 0: segments 0..2 and 3..5;
//	  0 null key and value; 1 empty key and value with headers h=null,
//	  h="", h="x"; 2 LogAppendTime, timestamp 900 (out of order);
//	  3..4 compacted; 5 header keys needing escapes.
//	  partition 1: 0..2 before-start gap, records 3 (1500) and 4 (1600).
//	orders (old, id 01…): partition 0: records 0 and 1.
//	payments (id 02…): partition 0: 0..9 DATA-LOSS, record 10.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	st, err := filestore.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	f := fillFixture(t, st)
	f.dir, f.url = dir, "file://"+dir
	return f
}

// fillFixture writes newFixture's archive into st.
func fillFixture(t *testing.T, st store.Store) *fixture {
	t.Helper()
	ctx := context.Background()
	a, err := manifest.Init(ctx, st, "test", 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		topic string
		id    manifest.TopicID
		seen  int64
	}{{"orders", ordersOldID, 10}, {"orders", ordersID, 20}, {"payments", paymentsID, 30}} {
		if err := a.EnsureTopic(ctx, tc.topic, tc.id, tc.seen); err != nil {
			t.Fatal(err)
		}
	}
	lat := rec(2, 900, []byte("k"), []byte("v"))
	lat.TimestampType = manifest.LogAppendTime
	commitSegs(t, a, "orders", ordersID, 0,
		seg{end: 2, recs: []manifest.Record{
			rec(0, 1000, nil, nil),
			rec(1, 1001, []byte{}, []byte{}, manifest.Header{Key: "h"}, manifest.Header{Key: "h", Value: []byte{}}, manifest.Header{Key: "h", Value: []byte("x")}),
			lat,
		}},
		seg{end: 5, gap: manifest.GapCompacted, recs: []manifest.Record{
			rec(5, 2000, []byte("k5"), []byte{0xff, 0x00}, manifest.Header{Key: `a"b\c`, Value: []byte("1")}, manifest.Header{Key: "é\n", Value: nil}),
		}},
	)
	commitSegs(t, a, "orders", ordersID, 1, seg{end: 4, gap: manifest.GapBeforeStart, recs: []manifest.Record{
		rec(3, 1500, []byte("a"), []byte("b")), rec(4, 1600, []byte("a"), []byte("c")),
	}})
	commitSegs(t, a, "orders", ordersOldID, 0, seg{end: 1, recs: []manifest.Record{
		rec(0, 10, nil, []byte("old0")), rec(1, 11, nil, []byte("old1")),
	}})
	commitSegs(t, a, "payments", paymentsID, 0, seg{end: 10, gap: manifest.GapDataLoss, recs: []manifest.Record{
		rec(10, 5000, []byte("p"), []byte("q")),
	}})
	return &fixture{st: st, a: a}
}

// keys lists the store's keys under prefix that contain substr.
func (f *fixture) keys(t *testing.T, prefix, substr string) []string {
	t.Helper()
	var out []string
	err := f.st.List(context.Background(), store.ListOptions{Prefix: prefix}, func(e store.ListEntry) error {
		if strings.Contains(e.Key, substr) {
			out = append(out, e.Key)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// segmentBytes adds up the sizes of the segments under prefix.
func (f *fixture) segmentBytes(t *testing.T, prefix string) int64 {
	t.Helper()
	var n int64
	err := f.st.List(context.Background(), store.ListOptions{Prefix: prefix}, func(e store.ListEntry) error {
		if strings.HasSuffix(e.Key, ".kseg") {
			n += e.Size
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// run runs the CLI with env as the whole environment for the global flags.
func runCLI(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	code = run(context.Background(), append([]string{"kbackup"}, args...), &out, &errb, lookup)
	return out.String(), errb.String(), code
}

// oneLineErr checks that stderr is exactly one "kbackup: " line containing
// every want.
func oneLineErr(t *testing.T, stderr string, want ...string) {
	t.Helper()
	if !strings.HasPrefix(stderr, "kbackup: ") || strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") {
		t.Fatalf("stderr is not one kbackup: line: %q", stderr)
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			t.Fatalf("stderr %q does not contain %q", stderr, w)
		}
	}
}

// putOverwrite is an unconditional Put.
var putOverwrite = store.PutOptions{}
