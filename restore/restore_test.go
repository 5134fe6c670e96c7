package restore

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kbackup/kbackup/store"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestRestoreExact: a whole topic restored into another cluster under a
// new name equals the archive record by record (null vs empty keys and
// values, duplicate and null headers, out-of-order timestamps, partition,
// order); the offset map places every source offset, its runs break only
// at gaps, and it is stored and written to the file.
func TestRestoreExact(t *testing.T) {
	t.Parallel()
	f := buildFixture(t, "orders", 3, 120)
	f.archive(t)
	tgt := newCluster(t)
	o := f.opts(t, tgt)
	o.Rename = map[string]string{"orders": "orders-restored"}
	o.OffsetMapFile = filepath.Join(t.TempDir(), "map.json")
	sum := run(t, o)

	got := readTopic(t, tgt, "orders-restored")
	for p := int32(0); p < f.parts; p++ {
		want, gaps := archived(t, f.st, "orders", p)
		if len(gaps) == 0 {
			t.Fatalf("partition %d: the fixture has no gaps", p)
		}
		sameContent(t, fmt.Sprintf("orders-restored/%d", p), want, got[p])
		var pm *PartitionMap
		for i := range sum.OffsetMap.Partitions {
			if sum.OffsetMap.Partitions[i].SourcePartition == p {
				pm = &sum.OffsetMap.Partitions[i]
			}
		}
		if pm == nil || !pm.Complete || pm.Records != int64(len(want)) {
			t.Fatalf("partition %d: offset map %+v", p, pm)
		}
		for i, w := range want {
			tg, ok := pm.TargetOf(w.Offset)
			if !ok || tg != got[p][i].Offset {
				t.Fatalf("partition %d: source offset %d -> %d, %v; the record is at target offset %d", p, w.Offset, tg, ok, got[p][i].Offset)
			}
		}
		if len(pm.Runs) != len(gaps)+1 && len(pm.Runs) != len(gaps) {
			t.Fatalf("partition %d: %d runs for %d gaps: %v", p, len(pm.Runs), len(gaps), pm.Runs)
		}
	}
	if len(got) != int(f.parts) {
		t.Fatalf("target partitions with records: %v", keysOf(got))
	}
	fileMap, err := ReadOffsetMapFile(o.OffsetMapFile)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := ReadOffsetMap(context.Background(), f.st, sum.RestoreID)
	if err != nil {
		t.Fatal(err)
	}
	if string(fileMap.Encode()) != string(stored.Encode()) {
		t.Fatal("offset map file and stored map differ")
	}
	var b strings.Builder
	if err := sum.WriteReport(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "complete") {
		t.Fatalf("report:\n%s", b.String())
	}
	// Running the same restore again finds it complete and writes nothing.
	again := run(t, o)
	if again.Records != 0 || again.RestoreID != sum.RestoreID {
		t.Fatalf("second run produced %d records (id %s, was %s)", again.Records, again.RestoreID, sum.RestoreID)
	}
	for _, r := range again.Partitions {
		if r.Status != StatusDone {
			t.Fatalf("second run: %+v", r)
		}
	}
	_ = os.Remove(o.OffsetMapFile)
	_ = store.ErrNotFound
}

// TestNoWarningIntoANewTopic: a normal restore into a topic it creates
// logs no warning, also when the brokers do not know the new topic for a
// moment (real Kafka answers UNKNOWN_TOPIC_OR_PARTITION to the first
// DescribeConfigs while the topic's metadata propagates).
func TestNoWarningIntoANewTopic(t *testing.T) {
	t.Parallel()
	f := buildFixture(t, "orders", 2, 30)
	f.archive(t)
	tgt := newCluster(t)
	var unknown atomic.Int32
	tgt.ControlKey(int16(kmsg.DescribeConfigs), func(req kmsg.Request) (kmsg.Response, error, bool) {
		tgt.KeepControl()
		if unknown.Add(1) > 2 {
			return nil, nil, false
		}
		r := req.(*kmsg.DescribeConfigsRequest)
		resp := r.ResponseKind().(*kmsg.DescribeConfigsResponse)
		for _, rr := range r.Resources {
			res := kmsg.NewDescribeConfigsResponseResource()
			res.ResourceType, res.ResourceName, res.ErrorCode = rr.ResourceType, rr.ResourceName, kerr.UnknownTopicOrPartition.Code
			resp.Resources = append(resp.Resources, res)
		}
		return resp, nil, true
	})
	var logs bytes.Buffer
	o := f.opts(t, tgt)
	o.Rename = map[string]string{"orders": "orders-new"}
	o.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	run(t, o)
	if unknown.Load() < 3 {
		t.Fatalf("the fault was not exercised (%d DescribeConfigs)", unknown.Load())
	}
	if logs.Len() > 0 {
		t.Fatalf("a normal restore logged warnings:\n%s", logs.String())
	}
}
