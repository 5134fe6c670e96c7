package target

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// newKfake returns a kfake cluster of brokers brokers, closed when t ends.
func newKfake(t *testing.T, brokers int) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// TestConnectMetadataMinAge: the writers' client may refresh its metadata
// every 250 ms, not franz-go's 5 s (a lane of a restore into a topic it
// just created otherwise waited up to 5 s for its partition's leader:
// docs/PERFORMANCE.md, "First run"); a caller's option still wins.
func TestConnectMetadataMinAge(t *testing.T) {
	c := newKfake(t, 1)
	ctx := context.Background()
	for _, tc := range []struct {
		opts []kgo.Opt
		want time.Duration
	}{
		{nil, MetadataMinAge},
		{[]kgo.Opt{kgo.MetadataMinAge(time.Second)}, time.Second},
	} {
		cl, err := Connect(ctx, append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, tc.opts...))
		if err != nil {
			t.Fatal(err)
		}
		got := cl.Client.OptValue(kgo.MetadataMinAge)
		cl.Close()
		if got != tc.want {
			t.Errorf("MetadataMinAge with options %v: %v, want %v", tc.opts, got, tc.want)
		}
	}
}

// TestCreateAwaitsLeaders: Create returns once every broker's metadata
// shows a leader for every partition of the new topic (on several
// brokers each learns of it some ten to hundreds of milliseconds after
// CreateTopics), and gives up quietly after its bound.
func TestCreateAwaitsLeaders(t *testing.T) {
	c := newKfake(t, 3)
	ctx := context.Background()
	tc, err := Connect(ctx, []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if n := len(tc.Client.DiscoveredBrokers()); n != 3 {
		t.Fatalf("%d brokers discovered, want 3", n)
	}
	// Broker 2 answers without leaders for a topic's first requests, then
	// as the cluster does.
	const late = int32(2)
	var mu sync.Mutex
	leaderless := map[string]int{}
	asked := map[string]int{} // of broker 2
	c.ControlKey(int16(kmsg.Metadata), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.MetadataRequest)
		if c.CurrentNode() != late || len(req.Topics) != 1 || req.Topics[0].Topic == nil {
			return nil, nil, false
		}
		topic := *req.Topics[0].Topic
		mu.Lock()
		defer mu.Unlock()
		asked[topic]++
		if asked[topic] > leaderless[topic] {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.MetadataResponse)
		rt := kmsg.NewMetadataResponseTopic()
		rt.Topic = kmsg.StringPtr(topic)
		for p := range int32(3) {
			rp := kmsg.NewMetadataResponseTopicPartition()
			rp.Partition, rp.Leader, rp.ErrorCode = p, -1, kerr.LeaderNotAvailable.Code
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
		return resp, nil, true
	})
	mu.Lock()
	leaderless["late"] = 4
	mu.Unlock()
	if err := tc.Create(ctx, "late", 3, 1, nil); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if asked["late"] != 5 {
		t.Errorf("Create asked the broker whose leaders came with its 5th answer %d times, want 5", asked["late"])
	}
	leaderless["never"] = 1 << 30
	mu.Unlock()
	start := time.Now()
	tc.awaitLeaders(ctx, "never", 3, 300*time.Millisecond)
	if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
		t.Errorf("awaitLeaders of a topic without leaders on one broker returned after %v, want its bound (300ms)", d)
	}
}
