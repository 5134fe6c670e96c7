package target

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestConnectMetadataMinAge: the writers' client may refresh its metadata
// every 250 ms, not franz-go's 5 s (a lane of a restore into a topic it
// just created otherwise waited up to 5 s for its partition's leader:
// docs/PERFORMANCE.md, "First run"); a caller's option still wins.
func TestConnectMetadataMinAge(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
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
