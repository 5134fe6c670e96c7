package restore

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kbackup/kbackup/internal/jsonobj"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
)

// groupAt is group's committed offset on topic/p in c (-1: none).
func groupAt(t *testing.T, c *kfake.Cluster, group, topic string, p int32) int64 {
	t.Helper()
	fo, err := kadm.NewClient(newClient(t, c)).FetchOffsets(context.Background(), group)
	if err != nil {
		return -1
	}
	if o, ok := fo.Lookup(topic, p); ok {
		return o.At
	}
	return -1
}

func commitAt(t *testing.T, c *kfake.Cluster, group, topic string, p int32, at int64) {
	t.Helper()
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: topic, Partition: p, At: at, LeaderEpoch: -1})
	resp, err := kadm.NewClient(newClient(t, c)).CommitOffsets(context.Background(), group, offs)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestGroupMovedOnce: a group is moved once per restore. A rerun of the
// complete restore leaves it where its consumers committed since;
// TranslateGroups does too, unless Again. A move left unfinished is
// completed when the group did not move (its offsets still at `from`),
// and abandoned when it committed since.
func TestGroupMovedOnce(t *testing.T) {
	t.Parallel()
	f := buildFixture(t, "gm", 2, 100)
	f.archive(t)
	ctx := context.Background()
	a, err := manifest.Open(ctx, f.st)
	if err != nil {
		t.Fatal(err)
	}
	gc := &manifest.GroupsCapture{CapturedMs: f.t0 + 500_000}
	for _, g := range []string{"billing", "fresh", "moved-on"} {
		gc.Groups = append(gc.Groups, manifest.GroupCatalog{Group: g, State: "Empty",
			Offsets: []manifest.GroupOffset{{Topic: "gm", Partition: 0, Offset: 40, LeaderEpoch: -1}}})
	}
	if err := a.PutCatalog(ctx, gc); err != nil {
		t.Fatal(err)
	}
	recs, _ := archived(t, f.st, "gm", 0)
	want := int64(len(recs))
	for i, r := range recs {
		if r.Offset >= 40 {
			want = int64(i)
			break
		}
	}
	tgt := newCluster(t)
	o := f.opts(t, tgt)
	o.Rename = map[string]string{"gm": "gm2"}
	o.Range.ToTime, o.Range.HasToTime = f.t0+600_000, true
	o.Groups = mustRe(t, "billing")
	sum := run(t, o)
	if len(sum.Groups) != 1 || sum.Groups[0].State != GroupMoved || groupAt(t, tgt, "billing", "gm2", 0) != want {
		t.Fatalf("first run: %+v; billing at %d, want %d", sum.Groups, groupAt(t, tgt, "billing", "gm2", 0), want)
	}
	if r := sum.Report; r == nil || len(r.Groups) != 1 || r.Groups[0].State != GroupMoved ||
		len(r.Groups[0].Offsets) != 1 || r.Groups[0].Offsets[0] != (movedOffset{Topic: "gm2", Partition: 0, From: -1, To: want}) {
		t.Fatalf("the report does not record the move: %+v", sum.Report)
	}
	commitAt(t, tgt, "billing", "gm2", 0, want+5) // its consumers go on

	// Unfinished moves of two more groups, as a process killed around the
	// commit leaves them: "fresh" was not committed (still at from = -1),
	// "moved-on" committed on its own since.
	gm := &groupMover{st: f.st, id: sum.RestoreID, now: o.Now}
	for _, g := range []string{"fresh", "moved-on"} {
		rec := &groupRecord{Format: groupFormat, FormatVersion: stateVersion, RestoreID: sum.RestoreID, Group: g,
			Moves: []groupMove{{State: moveMoving, By: "killed/1", Offsets: []movedOffset{{Topic: "gm2", Partition: 0, From: -1, To: want}}}}}
		if err := jsonobj.Put(ctx, f.st, groupKey(gm.id, g), rec, store.PutOptions{IfNotExists: true}); err != nil {
			t.Fatal(err)
		}
	}
	commitAt(t, tgt, "moved-on", "gm2", 0, 77)

	o.Groups = mustRe(t, "billing|fresh|moved-on")
	sum = run(t, o)
	states := map[string]string{}
	for _, g := range sum.Groups {
		states[g.Group] = g.State
	}
	if states["billing"] != GroupAlready || states["fresh"] != GroupMoved || states["moved-on"] != GroupSuperseded {
		t.Fatalf("rerun: %+v", sum.Groups)
	}
	for g, at := range map[string]int64{"billing": want + 5, "fresh": want, "moved-on": 77} {
		if got := groupAt(t, tgt, g, "gm2", 0); got != at {
			t.Fatalf("after the rerun %s is at %d, want %d", g, got, at)
		}
	}
	for _, p := range sum.Partitions {
		if p.Produced != 0 || p.Status != StatusDone {
			t.Fatalf("rerun of a complete restore: %s %s produced %d", p.Name(), p.Status, p.Produced)
		}
	}

	topts := TranslateOptions{Store: f.st, KafkaOpts: o.KafkaOpts, RestoreID: sum.RestoreID, Groups: mustRe(t, "billing")}
	res, err := TranslateGroups(ctx, topts)
	if err != nil || len(res) != 1 || res[0].State != GroupAlready || groupAt(t, tgt, "billing", "gm2", 0) != want+5 {
		t.Fatalf("translate without --again: %+v %v", res, err)
	}
	topts.Again = true
	res, err = TranslateGroups(ctx, topts)
	if err != nil || len(res) != 1 || res[0].State != GroupMoved || res[0].Offsets[0].From != want+5 || groupAt(t, tgt, "billing", "gm2", 0) != want {
		t.Fatalf("translate --again: %+v %v", res, err)
	}
	rec, err := loadGroupRecord(ctx, f.st, sum.RestoreID, "billing")
	if err != nil || len(rec.Moves) != 2 || !rec.Moves[1].Again || rec.Moves[1].State != moveMoved {
		t.Fatalf("billing's record: %+v %v", rec, err)
	}
}
