//go:build integration

package testenv_test

import (
	"testing"
	"time"

	"github.com/kbackup/kbackup/testenv"
)

// TestKafkaSingleNode: a single KRaft node starts, serves a topic, stops.
func TestKafkaSingleNode(t *testing.T) {
	k := testenv.StartKafka(t, testenv.KafkaOptions{Brokers: 1})
	k.CreateTopic(t, "single", 2, 1, nil)
	recs := testenv.ProduceSeq(t, k.Brokers(), "single", 0, 10)
	got := testenv.ConsumeAll(t, k.Brokers(), "single", testenv.ReadCommitted)
	if len(got) != len(recs) {
		t.Fatalf("consumed %d records, want %d", len(got), len(recs))
	}
}

// TestKafkaClusterLifecycle: 3 brokers, kill -9 one, restart it, graceful
// stop of another, restart, all in sync again.
func TestKafkaClusterLifecycle(t *testing.T) {
	k := testenv.StartKafka(t, testenv.KafkaOptions{Brokers: 3})
	c := k.Cluster()
	if got := len(c.BrokerIDs()); got != 3 {
		t.Fatalf("brokers: %d", got)
	}
	k.CreateTopic(t, "life", 3, 3, nil)
	k.Kill(t, 2)
	if c.Pid(2) != 0 {
		t.Fatal("broker 2 still running after Kill")
	}
	k.Restart(t, 2)
	k.WaitInSync(t, 2*time.Minute)
	k.StopBroker(t, 3)
	k.Restart(t, 3)
	k.WaitInSync(t, 2*time.Minute)

	// Whole-cluster stop and start keeps the data.
	recs := testenv.ProduceSeq(t, k.Brokers(), "life", 1, 20)
	k.Stop(t)
	for _, id := range c.BrokerIDs() {
		if c.Pid(id) != 0 {
			t.Fatalf("broker %d running after Stop", id)
		}
	}
	k.StartAll(t)
	testenv.CheckExactlyOnce(t, recs, testenv.ConsumeAll(t, k.Brokers(), "life", testenv.ReadCommitted))
}

// TestUseKafka runs against KBACKUP_TEST_BROKERS when set (make
// testenv-up), else a cluster of its own: records from the independent
// client read back identically by franz-go.
func TestUseKafka(t *testing.T) {
	testenv.RdkAvailable(t)
	k := testenv.UseKafka(t)
	topic := testenv.TopicName(t, "use")
	k.CreateTopic(t, topic, 2, -1, nil)
	produced := testenv.RdkProduce(t, k.Brokers(), topic, testenv.InterestingRecords(topic, 1, "use"), testenv.ProduceOptions{Compression: "lz4"})
	got := testenv.ConsumeAll(t, k.Brokers(), topic, testenv.ReadCommitted)
	if len(got) != len(produced) {
		t.Fatalf("read %d, produced %d", len(got), len(produced))
	}
	for i := range got {
		if !testenv.Identical(got[i], produced[i]) {
			t.Errorf("read %s\nproduced %s", got[i], produced[i])
		}
	}
}
