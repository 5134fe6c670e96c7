package restore

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/manifest"
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
	st := &countingStore{Store: inner}
	c := newCluster(t)
	mid := 1_700_000_000_000 + perPart/2
	o := Options{Store: st, StateStore: inner, KafkaOpts: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)},
		Topics: mustSel(t, "pit"), Rename: map[string]string{"pit": "x"}, ID: "x", Logger: testLogger(t)}
	o.Range.FromTime, o.Range.HasFromTime = mid, true
	o.Range.ToTime, o.Range.HasToTime = mid+50, true
	sum := run(t, o)
	if sum.Records != 51 {
		t.Fatalf("restored %d records, want 51", sum.Records)
	}
	if n := st.n.Load(); n > 18 {
		t.Fatalf("%d archive requests for one seek, want <= 18", n)
	}
	got := readTopic(t, c, "x")[0]
	all, _ := archived(t, inner, "pit", 0)
	from, to := mid, mid+50
	sameContent(t, "x/0", selectSlow(all, &from, &to), got)
}
