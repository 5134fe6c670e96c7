package archive

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/store/storefault"
)

// TestIdleCostsNoRequests: once caught up, an archiver with idle
// partitions makes no store requests at all.
func TestIdleCostsNoRequests(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "idle", 8, nil)
	cl := newClient(t, c, kgo.DefaultProduceTopic("idle"))
	for i := 0; i < 20; i++ {
		produce(t, cl, &kgo.Record{Value: []byte("x")})
	}
	counting := storefault.New(newStore(t), 1)
	stop := startArchiver(t, c, counting, nil)
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	waitArchived(t, counting, "idle", 20)
	time.Sleep(500 * time.Millisecond) // let the last commits and catalog capture finish
	before := counting.Calls()
	time.Sleep(2 * time.Second) // several flush intervals and topic refreshes
	if n := counting.Calls() - before; n != 0 {
		t.Fatalf("idle archiver made %d store requests in 2s", n)
	}
	produce(t, cl, &kgo.Record{Value: []byte("wake")})
	waitArchived(t, counting, "idle", 21)
}

// TestPartitionsAdded: partitions added to a topic while the archiver
// runs are discovered and archived.
func TestPartitionsAdded(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "grow", 1, nil)
	st := newStore(t)
	stop := startArchiver(t, c, st, nil)
	cl := newClient(t, c, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produce(t, cl, &kgo.Record{Topic: "grow", Partition: 0, Value: []byte("p0")})
	waitArchived(t, st, "grow", 1)
	if _, err := kadm.NewClient(cl).CreatePartitions(context.Background(), 2, "grow"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	cl2 := newClient(t, c, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produce(t, cl2, &kgo.Record{Topic: "grow", Partition: 2, Value: []byte("p2")})
	waitArchived(t, st, "grow", 2)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	got, _ := readArchive(t, st, "grow")
	if len(got[2]) != 1 || string(got[2][0].Value) != "p2" {
		t.Fatalf("new partition 2: %+v", got[2])
	}
}
