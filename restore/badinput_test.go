package restore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestBadInput: rejected input gets a clear error and writes nothing,
// neither to the target nor to the store.
func TestBadInput(t *testing.T) {
	t.Parallel()
	f := buildFixture(t, "bad", 2, 40)
	f.archive(t)
	tgt := newCluster(t)
	createTopic(t, tgt, "busy", 2, nil)
	produceTo(t, tgt, "busy", 1)
	for _, tc := range []struct {
		name string
		mod  func(*Options)
		want string
	}{
		{"unknown topic", func(o *Options) { o.Topics = mustSel(t, "nope") }, "no archived topic matches"},
		{"to before from", func(o *Options) {
			o.Range.FromTime, o.Range.HasFromTime, o.Range.ToTime, o.Range.HasToTime = f.t0+5000, true, f.t0, true
		}, "is before --from"},
		{"to offset before from offset", func(o *Options) {
			o.Range.FromOffset, o.Range.ToOffset, o.Range.HasToOffset = 10, 5, true
		}, "is before --from-offset"},
		{"unknown partition", func(o *Options) { o.Partitions = []int32{7} }, "no archived partition 7"},
		{"rename of an unselected topic", func(o *Options) { o.Rename = map[string]string{"other": "x"} }, "not among the restored topics"},
		{"target partition not empty", func(o *Options) { o.Rename = map[string]string{"bad": "busy"} }, "busy/1 already holds 1 records"},
		{"groups without capture", func(o *Options) {
			o.Groups = mustRe(t, "g")
			o.Range.ToTime, o.Range.HasToTime = f.t0, true
		}, "no consumer-group capture at or before"},
		{"groups before the first capture: remedy", func(o *Options) {
			o.Groups = mustRe(t, "g")
			o.Range.ToTime, o.Range.HasToTime = f.t0, true
		}, "then move the groups from that capture with `kbackup offsets translate --restore-id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := f.opts(t, tgt)
			tc.mod(&o)
			_, err := Run(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			assertNothingWritten(t, f, tgt, "bad")
			if got := endSum(t, tgt, "busy"); got != 1 {
				t.Fatalf("busy holds %d records", got)
			}
		})
	}
	// A dry run prints the plan and writes nothing.
	o := f.opts(t, tgt)
	o.DryRun = true
	sum, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := sum.Plan.WritePlan(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"topic bad -> bad: create with 2 partitions", "bad/0", "bad/1", "new"} {
		if !strings.Contains(b.String(), want) {
			t.Fatalf("plan lacks %q:\n%s", want, b.String())
		}
	}
	assertNothingWritten(t, f, tgt, "bad")
}

func produceTo(t testing.TB, c interface{ ListenAddrs() []string }, topic string, partition int32) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Partition: partition, Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// TestCorruptSegment: a flipped byte in a segment fails that partition
// midway with an error naming it; the other partitions complete, and the
// report says which did not.
func TestCorruptSegment(t *testing.T) {
	t.Parallel()
	f := buildFixture(t, "cs", 3, 600)
	f.archive(t)
	segs, err := filepath.Glob(filepath.Join(f.dir, "topics", "cs", "*", "0000000001", "segments", "*.kseg"))
	if err != nil || len(segs) < 1 {
		t.Fatalf("segments: %v %v", segs, err)
	}
	sort.Strings(segs)
	b, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff // inside a block in the middle (the index is at the end)
	if err := os.WriteFile(segs[0], b, 0o644); err != nil {
		t.Fatal(err)
	}
	tgt := newCluster(t)
	sum, err := Run(context.Background(), f.opts(t, tgt))
	var ie *IncompleteError
	if !errors.As(err, &ie) || len(ie.Failed) != 1 || !strings.Contains(err.Error(), "cs/1 (") || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt segment: %v", err)
	}
	for _, r := range sum.Partitions {
		want := StatusComplete
		if r.SourcePartition == 1 {
			want = StatusFailed
			if r.Records == 0 {
				t.Fatalf("partition 1 failed before its first segment ended: %+v", r)
			}
		}
		if r.Status != want {
			t.Fatalf("%s: %s, want %s", r.Name(), r.Status, want)
		}
	}
	got := readTopic(t, tgt, "cs")
	for _, p := range []int32{0, 2} {
		want, _ := archived(t, f.st, "cs", p)
		sameContent(t, "cs", want, got[p])
	}
	if int64(len(got[1])) != sum.Partitions[1].Records {
		t.Fatalf("partition 1: %d records in the target, the report says %d", len(got[1]), sum.Partitions[1].Records)
	}
	for _, pm := range sum.OffsetMap.Partitions {
		if pm.Complete != (pm.SourcePartition != 1) {
			t.Fatalf("offset map of %d: complete=%v", pm.SourcePartition, pm.Complete)
		}
	}
}

// TestRepartition: into a topic with fewer partitions, keyed records go
// where franz-go's default (murmur2) partitioner puts them, keyless ones
// to source partition mod count, each source partition's order kept.
func TestRepartition(t *testing.T) {
	t.Parallel()
	f := buildFixture(t, "rp", 3, 80)
	f.archive(t)
	tgt := newCluster(t)
	createTopic(t, tgt, "rp", 2, nil)
	o := f.opts(t, tgt)
	_, err := Run(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "--repartition") {
		t.Fatalf("fewer target partitions without --repartition: %v", err)
	}
	o.Repartition = true
	sum := run(t, o)
	if sum.OffsetMap != nil {
		t.Fatal("repartition recorded an offset map")
	}
	got := readTopic(t, tgt, "rp")
	part := kgo.StickyKeyPartitioner(nil).ForTopic("rp")
	// Rebuild the expected target partitions from the archive.
	want := map[int32][]rec{}
	for p := int32(0); p < f.parts; p++ {
		rs, _ := archived(t, f.st, "rp", p)
		for _, r := range rs {
			tp := p % 2
			if r.Key != nil {
				tp = int32(part.Partition(&kgo.Record{Key: r.Key}, 2))
			}
			want[tp] = append(want[tp], r)
		}
	}
	for tp := int32(0); tp < 2; tp++ {
		// Sources interleave in lane order: source 0 first, then 1, then 2.
		sameContent(t, "rp", want[tp], got[tp])
	}
}
