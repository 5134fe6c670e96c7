package archive

import (
	"context"
	"math"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/internal/topicsel"
	"github.com/kbackup/kbackup/manifest"
)

// TestCatalogCaptures: --once captures topic configs, partition counts and
// ids, and the committed offsets of the selected groups.
func TestCatalogCaptures(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	ret := "86400000"
	createTopic(t, c, "cfg", 3, map[string]*string{"retention.ms": &ret})
	cl := newClient(t, c, kgo.DefaultProduceTopic("cfg"))
	produce(t, cl, &kgo.Record{Value: []byte("x")})
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	for _, g := range []string{"billing", "audit"} {
		offs := kadm.Offsets{}
		offs.Add(kadm.Offset{Topic: "cfg", Partition: 1, At: 1, LeaderEpoch: -1, Metadata: "m-" + g})
		if _, err := adm.CommitOffsets(ctx, g, offs); err != nil {
			t.Fatal(err)
		}
	}
	st := newStore(t)
	runOnce(t, c, st, func(o *Options) {
		re, _ := topicsel.Anchored("bill.*")
		o.Groups = re
	})
	a := openArchive(t, st)
	tc, err := a.TopicsAt(ctx, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	if len(tc.Topics) != 1 || tc.Topics[0].Name != "cfg" || tc.Topics[0].Partitions != 3 || tc.Topics[0].Configs["retention.ms"] != ret {
		t.Fatalf("topics capture %+v", tc)
	}
	incs, _ := a.Incarnations(ctx, "cfg")
	if tc.Topics[0].TopicID != incs[0].TopicID.String() {
		t.Fatalf("captured topic id %s, archived %s", tc.Topics[0].TopicID, incs[0].TopicID)
	}
	gc, err := a.GroupsAt(ctx, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	if len(gc.Groups) != 1 || gc.Groups[0].Group != "billing" || len(gc.Groups[0].Offsets) != 1 {
		t.Fatalf("groups capture %+v", gc)
	}
	o := gc.Groups[0].Offsets[0]
	if o.Topic != "cfg" || o.Partition != 1 || o.Offset != 1 || o.Metadata == nil || *o.Metadata != "m-billing" {
		t.Fatalf("captured offset %+v", o)
	}
	if _, err := a.GroupsAt(ctx, gc.CapturedMs-1); err == nil {
		t.Fatal("a capture before the first one was found")
	}
}

// TestReadUncommitted: with ReadUncommitted, aborted records are archived
// too (only the markers are gaps); by default they are transaction gaps.
func TestReadUncommitted(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "iso", 1, nil)
	txn := newClient(t, c, kgo.TransactionalID("iso"), kgo.DefaultProduceTopic("iso"))
	ctx := context.Background()
	for _, commit := range []bool{false, true} {
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			txn.Produce(ctx, &kgo.Record{Value: []byte{byte(i)}}, nil)
		}
		if err := txn.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := txn.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	committed, uncommitted := newStore(t), newStore(t)
	runOnce(t, c, committed, nil)
	runOnce(t, c, uncommitted, func(o *Options) { o.ReadUncommitted = true })
	rc, gc := readArchive(t, committed, "iso")
	ru, gu := readArchive(t, uncommitted, "iso")
	if len(rc[0]) != 3 || len(ru[0]) != 6 {
		t.Fatalf("read_committed archived %d records, read_uncommitted %d; want 3 and 6", len(rc[0]), len(ru[0]))
	}
	count := func(gs []manifest.Gap) (n int64) {
		for _, g := range gs {
			if g.Reason != manifest.GapTransaction {
				t.Fatalf("gap %v", g)
			}
			n += g.Len()
		}
		return n
	}
	if count(gc[0]) != 3+2 || count(gu[0]) != 2 {
		t.Fatalf("transaction gap offsets: committed %v, uncommitted %v", gc[0], gu[0])
	}
}
