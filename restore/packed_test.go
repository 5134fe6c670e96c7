package restore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/archive"
	"github.com/kbackup/kbackup/internal/restoretest"
	"github.com/kbackup/kbackup/manifest"
)

// TestPackedSeeks: a point-in-time restore from an archive written in the
// packed layout, at each stage of its life: fresh (every record in
// flush-object entries of 40 writers), compacted (into the version-1
// chain), and after an expiry. Each restores exactly the records asked for
// with a bounded number of requests.
func TestPackedSeeks(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "pit", 1, map[string]*string{"retention.ms": ptr("-1")})
	cl := newClient(t, c, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	st, _ := newStore(t)
	ctx := context.Background()
	const t0, batches, perBatch = 1_700_000_000_000, 40, 50
	for b := 0; b < batches; b++ {
		var recs []*kgo.Record
		for i := 0; i < perBatch; i++ {
			n := b*perBatch + i
			recs = append(recs, &kgo.Record{Topic: "pit", Timestamp: time.UnixMilli(t0 + int64(n)), Key: []byte(fmt.Sprint(n)),
				Value: make([]byte, 1000)})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		// One --once run per batch: a new writer, a new claim, one entry.
		restoretest.ArchiveOnceWith(t, c.ListenAddrs(), st, func(o *archive.Options) {
			o.Layout, o.FlushInterval = archive.LayoutPacked, 20*time.Millisecond
		})
	}
	all, _ := archived(t, st, "pit", 0)
	if len(all) != batches*perBatch {
		t.Fatalf("archived %d records, want %d", len(all), batches*perBatch)
	}
	mid := int64(t0 + batches*perBatch*3/4)
	fresh := seekRequestsAs(t, st, all, mid, "fresh")

	a, err := manifest.Open(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	incs, err := a.Incarnations(ctx, "pit")
	if err != nil || len(incs) != 1 {
		t.Fatal(incs, err)
	}
	pl := a.Partition("pit", incs[0].TopicID, 0)
	// Compact the tail in four pieces (as compaction by size would).
	for i := 0; i < 4; i++ {
		head, err := pl.CompactedHead(ctx)
		if err != nil {
			t.Fatal(err)
		}
		end := int64(-1)
		if head != nil {
			end = head.End
		}
		_, commits, err := pl.TailEntries(ctx, end)
		if err != nil {
			t.Fatal(err)
		}
		n := len(commits)
		if i < 3 {
			n = batches / 4
		}
		if _, err := pl.Compact(ctx, head, commits[:n], "test", 1); err != nil {
			t.Fatal(err)
		}
	}
	compacted := seekRequestsAs(t, st, all, mid, "compacted")

	exp, err := pl.Expire(ctx, manifest.ExpireOptions{Retention: manifest.Retention{Bytes: 1}})
	if err != nil || !exp.Expired() {
		t.Fatalf("expire: %+v, %v", exp, err)
	}
	if _, err := pl.DeleteExpired(ctx, manifest.DeleteOptions{Grace: -1}); err != nil {
		t.Fatal(err)
	}
	expired := seekRequestsAs(t, st, all, mid, "expired")
	t.Logf("archive requests for one seek: fresh %d, compacted %d, after expiry %d", fresh, compacted, expired)
	if fresh > 32 || compacted > 25 || expired > 27 {
		t.Fatalf("archive requests for one seek: fresh %d (want <= 32), compacted %d (<= 25), after expiry %d (<= 27)", fresh, compacted, expired)
	}
}
