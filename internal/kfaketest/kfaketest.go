// Package kfaketest holds the helpers that tests of several packages share
// to run against franz-go's in-process Kafka (kfake) and a local-directory
// store. It is imported by tests only.
package kfaketest

import (
	"context"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbackup/kbackup/store/filestore"
)

// Logger discards logs unless KBACKUP_TEST_VERBOSE is set (then debug to stderr).
func Logger(tb testing.TB) *slog.Logger {
	if os.Getenv("KBACKUP_TEST_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// Cluster starts a one-broker kfake cluster, closed at cleanup.
func Cluster(tb testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	tb.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return c
}

// Client returns a client of c, closed at cleanup.
func Client(tb testing.TB, c *kfake.Cluster, opts ...kgo.Opt) *kgo.Client {
	tb.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(cl.Close)
	return cl
}

// CreateTopic creates topic on c (replication factor 1).
func CreateTopic(tb testing.TB, c *kfake.Cluster, topic string, partitions int32, configs map[string]*string) {
	tb.Helper()
	adm := kadm.NewClient(Client(tb, c))
	resp, err := adm.CreateTopic(context.Background(), partitions, 1, configs, topic)
	if err != nil || resp.Err != nil {
		tb.Fatalf("create topic %s: %v %v", topic, err, resp.Err)
	}
}

// Store returns a local-directory store in a fresh temporary directory.
func Store(tb testing.TB) (*filestore.Store, string) {
	tb.Helper()
	dir := tb.TempDir()
	st, err := filestore.New(dir)
	if err != nil {
		tb.Fatal(err)
	}
	return st, dir
}

// Produce writes recs synchronously and fails the test on any error.
func Produce(tb testing.TB, cl *kgo.Client, recs ...*kgo.Record) {
	tb.Helper()
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		tb.Fatalf("produce: %v", err)
	}
}

// FailListOffsets makes c answer the next n ListOffsets requests with
// error code for every partition (e.g. OFFSET_NOT_AVAILABLE, as a leader
// elected moments ago does), then serve normally. It returns a counter of
// the requests answered with the error.
func FailListOffsets(c *kfake.Cluster, n int64, code int16) *atomic.Int64 {
	var failed atomic.Int64
	c.ControlKey(int16(kmsg.ListOffsets), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if failed.Load() >= n {
			return nil, nil, false
		}
		failed.Add(1)
		r := req.(*kmsg.ListOffsetsRequest)
		resp := r.ResponseKind().(*kmsg.ListOffsetsResponse)
		for _, rt := range r.Topics {
			st := kmsg.NewListOffsetsResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewListOffsetsResponseTopicPartition()
				sp.Partition, sp.ErrorCode, sp.Offset, sp.Timestamp = rp.Partition, code, -1, -1
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	return &failed
}
