//go:build integration

package testenv_test

import (
	"testing"
	"time"

	"github.com/kbackup/kbackup/testenv"
)

// TestSmokeRealCluster exercises the real 3-broker cluster with the data
// the archiver and restore tests need: every codec from the independent
// client read back by franz-go, LogAppendTime, committed and aborted
// transactions, compaction that leaves offset gaps, and a broker killed
// (-9) and restarted while producing with acks=all.
func TestSmokeRealCluster(t *testing.T) {
	testenv.RdkAvailable(t)
	k := testenv.StartKafka(t, testenv.KafkaOptions{Brokers: 3})
	b := k.Brokers()

	t.Run("codecs", func(t *testing.T) {
		k.CreateTopic(t, "codecs", 3, 3, nil)
		produced := testenv.ProduceEveryCodec(t, b, "codecs", 1)
		got := testenv.ConsumeAll(t, b, "codecs", testenv.ReadCommitted)
		byOff := map[int64]testenv.Record{}
		for _, r := range got {
			if r.Partition != 1 {
				t.Fatalf("record in partition %d, want 1: %s", r.Partition, r)
			}
			byOff[r.Offset] = r
		}
		n := 0
		for codec, rs := range produced {
			for _, p := range rs {
				n++
				g, ok := byOff[p.Offset]
				if !ok {
					t.Fatalf("%s: produced %s not read back", codec, p)
				}
				if !testenv.Identical(p, g) {
					t.Errorf("%s: produced %s\nfranz-go read %s", codec, p, g)
				}
				if g.Compression != codec {
					t.Errorf("%s: record at %d read from a %s batch", codec, g.Offset, g.Compression)
				}
			}
		}
		if len(got) != n {
			t.Fatalf("read %d records, produced %d", len(got), n)
		}
		// And the independent client reads what it wrote identically.
		rdk := testenv.RdkConsume(t, b, "codecs", testenv.ReadCommitted)
		if len(rdk) != len(got) {
			t.Fatalf("kclient read %d, franz-go %d", len(rdk), len(got))
		}
		for i := range rdk {
			if !testenv.Identical(rdk[i], got[i]) {
				t.Errorf("kclient %s\nfranz-go %s", rdk[i], got[i])
			}
		}
	})

	t.Run("log-append-time", func(t *testing.T) {
		k.CreateTopic(t, "lat", 1, 3, testenv.LogAppendTimeConfigs())
		before := time.Now().Add(-time.Second).UnixMilli()
		recs := testenv.InterestingRecords("lat", 0, "lat")
		for i := range recs {
			recs[i].Timestamp = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
		}
		testenv.RdkProduce(t, b, "lat", recs, testenv.ProduceOptions{Compression: "zstd"})
		got := testenv.ConsumeAll(t, b, "lat", testenv.ReadCommitted)
		if len(got) != len(recs) {
			t.Fatalf("read %d, want %d", len(got), len(recs))
		}
		for i, g := range got {
			if g.TimestampType != "LogAppendTime" || g.Timestamp < before {
				t.Errorf("record %d: %s: want a LogAppendTime timestamp >= %d", i, g, before)
			}
			if !testenv.SameData(g, recs[i]) {
				t.Errorf("record %d: %s, want %s", i, g, recs[i])
			}
		}
		rdk := testenv.RdkConsume(t, b, "lat", testenv.ReadCommitted)
		for i := range rdk {
			if !testenv.Identical(rdk[i], got[i]) {
				t.Errorf("kclient %s\nfranz-go %s", rdk[i], got[i])
			}
		}
	})

	t.Run("transactions", func(t *testing.T) {
		k.CreateTopic(t, "txn", 2, 3, nil)
		committed, aborted := testenv.ProduceTxnMix(t, b, "txn", 0)
		rc := testenv.ConsumeAll(t, b, "txn", testenv.ReadCommitted)
		testenv.CheckExactlyOnce(t, committed, rc)
		for _, r := range rc {
			if !r.Transactional {
				t.Errorf("not from a transactional batch: %s", r)
			}
		}
		ru := testenv.ConsumeAll(t, b, "txn", testenv.ReadUncommitted)
		all := append(append([]testenv.Record{}, committed...), aborted...)
		testenv.CheckExactlyOnce(t, all, ru)
		// Markers occupy offsets: the data offsets have a gap after each
		// transaction but the last (whose marker ends the log).
		if gaps := testenv.Gaps(ru, 0); len(gaps) != 4 {
			t.Errorf("want a marker gap after each of the first 4 transactions, got %v", gaps)
		}
		withMarkers := testenv.ConsumeAllOpts(t, b, "txn", testenv.ConsumeOptions{Isolation: testenv.ReadUncommitted, KeepControl: true})
		if len(withMarkers) != len(ru)+5 {
			t.Errorf("read %d records with markers, want %d + 5", len(withMarkers), len(ru))
		}
		rdk := testenv.RdkConsume(t, b, "txn", testenv.ReadCommitted)
		testenv.CheckExactlyOnce(t, committed, rdk)
	})

	t.Run("compaction", func(t *testing.T) {
		k.CreateTopic(t, "compact", 1, 3, testenv.CompactionConfigs())
		produced := testenv.ProduceCompactable(t, b, "compact", 0, 10, 8)
		left, gaps := testenv.WaitCompactionGaps(t, b, "compact", 0, 90*time.Second)
		t.Logf("compaction: %d of %d records left, gaps %v", len(left), len(produced), gaps)
		// The latest value of every key survives.
		latest := map[string]testenv.Record{}
		for _, p := range produced {
			latest[string(p.Key)] = p
		}
		have := map[int64]testenv.Record{}
		for _, r := range left {
			have[r.Offset] = r
		}
		for key, p := range latest {
			if g, ok := have[p.Offset]; !ok || !testenv.SameData(g, p) {
				t.Errorf("latest record of %q (offset %d) not kept", key, p.Offset)
			}
		}
	})

	t.Run("broker-kill", func(t *testing.T) {
		k.CreateTopic(t, "kill", 3, 3, nil)
		victim := k.Leader(t, "kill", 0)
		produced := testenv.ProduceThroughBrokerKill(t, k, "kill", 3000, victim)
		k.WaitInSync(t, 2*time.Minute)
		testenv.CheckExactlyOnce(t, produced, testenv.ConsumeAll(t, b, "kill", testenv.ReadCommitted))
		testenv.CheckExactlyOnce(t, produced, testenv.RdkConsume(t, b, "kill", testenv.ReadCommitted))
	})
}
