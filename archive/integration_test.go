//go:build integration

package archive

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/filestore"
	"github.com/kbackup/kbackup/testenv"
)

// realOnce runs `archive --once` against the real cluster.
func realOnce(t *testing.T, k *testenv.Kafka, st store.Store, topics ...string) {
	t.Helper()
	o := Options{KafkaOpts: []kgo.Opt{kgo.SeedBrokers(k.Brokers()...)}, Store: st, Once: true, Logger: testLogger(t),
		Topics: mustRes(t, topics...)}
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := a.Run(ctx); err != nil {
		t.Fatalf("archive --once: %v", err)
	}
}

// archiveEqualsConsumer checks, offset for offset, that the archive of
// topic holds exactly what the independent client (librdkafka,
// read_committed) reads, and that every other offset is a gap whose reason
// is one of allowed. It returns the archived records by partition.
func archiveEqualsConsumer(t *testing.T, k *testenv.Kafka, st store.Store, topic string, allowed ...manifest.GapReason) (map[int32][]consumed, map[int32][]manifest.Gap) {
	t.Helper()
	want := testenv.RdkConsume(t, k.Brokers(), topic, testenv.ReadCommitted)
	got, gaps := readArchive(t, st, topic)
	byPart := map[int32][]testenv.Record{}
	for _, r := range want {
		byPart[r.Partition] = append(byPart[r.Partition], r)
	}
	for p, ws := range byPart {
		gs := got[p]
		if len(gs) != len(ws) {
			t.Fatalf("%s/%d: independent client read %d records, archive has %d", topic, p, len(ws), len(gs))
		}
		for i, w := range ws {
			g := gs[i]
			tsType := "CreateTime"
			if g.TsType == manifest.LogAppendTime {
				tsType = "LogAppendTime"
			}
			if w.Offset != g.Offset || w.Timestamp != g.Timestamp || w.TimestampType != tsType ||
				!bytes.Equal(w.Key, g.Key) || (w.Key == nil) != (g.Key == nil) ||
				!bytes.Equal(w.Value, g.Value) || (w.Value == nil) != (g.Value == nil) || !sameHeaders(w.Headers, g.Headers) {
				t.Fatalf("%s/%d offset %d differs:\nclient  %s\narchive %+v", topic, p, w.Offset, w, g)
			}
		}
	}
	for p, gs := range gaps {
		for _, g := range gs {
			ok := false
			for _, r := range allowed {
				ok = ok || g.Reason == r
			}
			if !ok {
				t.Errorf("%s/%d: gap %v not expected here", topic, p, g)
			}
		}
	}
	return got, gaps
}

func sameHeaders(a []testenv.Header, b []manifest.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || !bytes.Equal(a[i].Value, b[i].Value) || (a[i].Value == nil) != (b[i].Value == nil) {
			return false
		}
	}
	return true
}

// TestArchiveRealKafka proves the archiver against a real 3-broker Kafka
// and MinIO: every codec, null/empty keys and values, duplicate/null
// headers, large values, LogAppendTime, committed and aborted transactions,
// compaction gaps, a broker killed mid-stream, retention racing the
// archiver, and an archiver process killed with SIGKILL repeatedly.
func TestArchiveRealKafka(t *testing.T) {
	k := testenv.UseKafka(t)
	s3 := testenv.UseMinIO(t)
	testenv.RdkAvailable(t)
	brokers := k.Brokers()

	t.Run("fidelity", func(t *testing.T) {
		st := s3.Store(t)
		codecs := testenv.TopicName(t, "codecs")
		k.CreateTopic(t, codecs, 1, 3, nil)
		testenv.ProduceEveryCodec(t, brokers, codecs, 0)
		lat := testenv.TopicName(t, "lat")
		k.CreateTopic(t, lat, 1, 3, testenv.LogAppendTimeConfigs())
		testenv.RdkProduce(t, brokers, lat, testenv.InterestingRecords(lat, 0, "lat"), testenv.ProduceOptions{})
		txn := testenv.TopicName(t, "txn")
		k.CreateTopic(t, txn, 1, 3, nil)
		testenv.ProduceTxnMix(t, brokers, txn, 0)

		realOnce(t, k, st, codecs, lat, txn)
		archiveEqualsConsumer(t, k, st, codecs)
		got, _ := archiveEqualsConsumer(t, k, st, lat)
		for _, r := range got[0] {
			if r.TsType != manifest.LogAppendTime {
				t.Fatalf("LogAppendTime topic archived %v", r.TsType)
			}
		}
		_, gaps := archiveEqualsConsumer(t, k, st, txn, manifest.GapTransaction)
		if len(gaps[0]) == 0 {
			t.Fatal("transaction markers and aborted records left no gaps")
		}
	})

	t.Run("compaction", func(t *testing.T) {
		st := s3.Store(t)
		topic := testenv.TopicName(t, "compact")
		k.CreateTopic(t, topic, 1, 3, testenv.CompactionConfigs())
		produced := testenv.ProduceCompactable(t, brokers, topic, 0, 5, 40)
		testenv.WaitCompactionGaps(t, brokers, topic, 0, 2*time.Minute)
		realOnce(t, k, st, topic)
		got, gaps := readArchive(t, st, topic)
		// The cleaner keeps running, so the log can only shrink after the
		// archive read it: every record the log still holds must be in the
		// archive, identical, and every archived record must be the one
		// produced at its offset.
		byOffset := map[int64]testenv.Record{}
		for _, r := range produced {
			byOffset[r.Offset] = r
		}
		archived := map[int64]consumed{}
		for _, r := range got[0] {
			p, ok := byOffset[r.Offset]
			if !ok || !testenv.SameData(p, testenv.Record{Key: r.Key, Value: r.Value, Headers: toTestenvHeaders(r.Headers)}) {
				t.Fatalf("archived offset %d: %+v was not produced there (%v)", r.Offset, r, p)
			}
			archived[r.Offset] = r
		}
		for _, w := range testenv.RdkConsume(t, brokers, topic, testenv.ReadCommitted) {
			g, ok := archived[w.Offset]
			if !ok || !testenv.SameData(w, testenv.Record{Key: g.Key, Value: g.Value, Headers: toTestenvHeaders(g.Headers)}) {
				t.Fatalf("the log holds offset %d (%s) but the archive has %+v", w.Offset, w, g)
			}
		}
		if len(gaps[0]) == 0 {
			t.Fatal("compaction left no gaps in the archive")
		}
		for _, g := range gaps[0] {
			if g.Reason != manifest.GapCompacted && g.Reason != manifest.GapBeforeStart {
				t.Fatalf("gap %v on a compacted topic", g)
			}
		}
	})

	t.Run("broker-killed-while-archiving", func(t *testing.T) {
		if !k.Controllable() {
			t.Skip("external cluster: cannot kill a broker")
		}
		st := s3.Store(t)
		topic := testenv.TopicName(t, "kill")
		k.CreateTopic(t, topic, 3, 3, nil)
		stop := startArchiverOn(t, brokers, st, func(o *Options) { o.FlushInterval, o.Group = 200*time.Millisecond, "" })
		produced := testenv.ProduceThroughBrokerKill(t, k, topic, 3000, k.Leader(t, topic, 0))
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		realOnce(t, k, st, topic)
		archiveEqualsConsumer(t, k, st, topic)
		var got []testenv.Record
		recs, _ := readArchive(t, st, topic)
		for p, rs := range recs {
			for _, r := range rs {
				got = append(got, testenv.Record{Topic: topic, Partition: p, Offset: r.Offset, Timestamp: r.Timestamp, Key: r.Key, Value: r.Value, Headers: toTestenvHeaders(r.Headers)})
			}
		}
		testenv.CheckExactlyOnce(t, produced, got)
	})

	t.Run("retention-race-is-data-loss", func(t *testing.T) {
		st := s3.Store(t)
		topic := testenv.TopicName(t, "ret")
		k.CreateTopic(t, topic, 1, 3, nil)
		cl := k.Client(t, kgo.DefaultProduceTopic(topic))
		for i := 0; i < 10; i++ {
			produce(t, cl, &kgo.Record{Value: []byte{byte(i)}})
		}
		realOnce(t, k, st, topic)
		for i := 10; i < 20; i++ {
			produce(t, cl, &kgo.Record{Value: []byte{byte(i)}})
		}
		if _, err := k.Admin(t).DeleteRecords(context.Background(), kadm.Offsets{topic: {0: {Topic: topic, Partition: 0, At: 15}}}); err != nil {
			t.Fatal(err)
		}
		realOnce(t, k, st, topic)
		_, gaps := readArchive(t, st, topic)
		if len(gaps[0]) != 1 || gaps[0][0] != (manifest.Gap{From: 10, To: 14, Reason: manifest.GapDataLoss}) {
			t.Fatalf("gaps %v, want DATA-LOSS 10..14", gaps[0])
		}
	})

	t.Run("archiver-sigkill-repeatedly", func(t *testing.T) {
		dir := t.TempDir()
		st, err := filestore.New(dir)
		if err != nil {
			t.Fatal(err)
		}
		topic := testenv.TopicName(t, "sigkill")
		k.CreateTopic(t, topic, 3, 3, nil)
		cl := k.Client(t, kgo.DefaultProduceTopic(topic))
		stopProducing := make(chan struct{})
		done := make(chan int)
		go func() {
			n := 0
			for {
				select {
				case <-stopProducing:
					done <- n
					return
				case <-time.After(5 * time.Millisecond):
				}
				if err := cl.ProduceSync(context.Background(), &kgo.Record{Value: []byte(fmt.Sprint(n))}).FirstErr(); err == nil {
					n++
				}
			}
		}()
		for i := 0; i < 4; i++ {
			cmd := exec.Command(os.Args[0], "-test.run=^TestArchiverChild$")
			cmd.Env = append(os.Environ(), "KBACKUP_CHILD_BROKERS="+brokers[0], "KBACKUP_CHILD_STORE="+dir)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Duration(2000+i*700) * time.Millisecond)
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
		}
		close(stopProducing)
		if n := <-done; n == 0 {
			t.Fatal("nothing produced")
		}
		realOnce(t, k, st, topic)
		archiveEqualsConsumer(t, k, st, topic)
	})
}

func toTestenvHeaders(hs []manifest.Header) []testenv.Header {
	out := make([]testenv.Header, len(hs))
	for i, h := range hs {
		out[i] = testenv.Header{Key: h.Key, Value: h.Value}
	}
	return out
}
