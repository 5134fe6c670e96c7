package restore

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
)

// TestSeekRequests: a point-in-time restore in the middle of a partition
// of 4 segments costs a handful of archive requests: discovery, one time
// index LIST + commit + index + block per bound, and the lane's reads
// served from what planning read (no Head, no second read of a commit,
// index or block).
func TestSeekRequests(t *testing.T) {
	t.Parallel()
	inner, _ := newStore(t)
	perPart := synthArchive(t, inner, "pit", 1, 4<<20, 1000, 1<<20, 64<<10, manifest.CodecNone)
	all, _ := archived(t, inner, "pit", 0)
	if n := seekRequests(t, inner, all, 1_700_000_000_000+perPart/2); n > 18 {
		t.Fatalf("%d archive requests for one seek, want <= 18", n)
	}
}

// TestSeekRequestsAfterExpiry: after the archive's first quarter expired
// (an archive-start marker, everything below it deleted), a point-in-time
// restore in what is left costs as few requests as on a fresh archive
// plus the archive start's LIST and GET.
func TestSeekRequestsAfterExpiry(t *testing.T) {
	t.Parallel()
	inner, _ := newStore(t)
	perPart := synthArchive(t, inner, "pit", 1, 4<<20, 1000, 1<<20, 64<<10, manifest.CodecNone)
	all, _ := archived(t, inner, "pit", 0) // before the expiry
	ctx := context.Background()
	a, err := manifest.Open(ctx, inner)
	if err != nil {
		t.Fatal(err)
	}
	pl := a.Partition("pit", manifest.TopicID{0xbe, 0x7c}, 0)
	exp, err := pl.Expire(ctx, manifest.ExpireOptions{Retention: manifest.Retention{Bytes: 2 << 20}})
	if err != nil || !exp.Expired() {
		t.Fatalf("expire: %+v, %v", exp, err)
	}
	del, err := pl.DeleteExpired(ctx, manifest.DeleteOptions{Grace: -1})
	if err != nil || del.Segments == 0 {
		t.Fatalf("delete: %+v, %v", del, err)
	}
	n := seekRequests(t, inner, all, 1_700_000_000_000+perPart*3/4)
	if n > 20 {
		t.Fatalf("%d archive requests for one seek after an expiry, want <= 20", n)
	}
	t.Logf("%d archive requests for one seek after an expiry (start %d)", n, exp.Start)
}

// seekRequests restores topic pit's records with timestamps in [mid,
// mid+50] (51 records) into a new cluster, checks them against all (what
// was archived) and returns the archive requests it took.
func seekRequests(t *testing.T, inner store.Store, all []rec, mid int64) int64 {
	t.Helper()
	return seekRequestsAs(t, inner, all, mid, "x")
}

// seekRequestsAs is seekRequests with restore id id (a second restore of
// the same store needs its own: the first one's state says it is done).
func seekRequestsAs(t *testing.T, inner store.Store, all []rec, mid int64, id string) int64 {
	t.Helper()
	st := &countingStore{Store: inner}
	c := newCluster(t)
	o := Options{Store: st, StateStore: inner, KafkaOpts: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)},
		Topics: mustSel(t, "pit"), Rename: map[string]string{"pit": "x"}, ID: id, Logger: testLogger(t)}
	o.Range.FromTime, o.Range.HasFromTime = mid, true
	o.Range.ToTime, o.Range.HasToTime = mid+50, true
	sum := run(t, o)
	if sum.Records != 51 {
		t.Fatalf("restored %d records, want 51", sum.Records)
	}
	n := st.n.Load()
	from, to := mid, mid+50
	sameContent(t, "x/0", selectSlow(all, &from, &to), readTopic(t, c, "x")[0])
	return n
}
