package snapshot

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/kafkaconn"
)

// Cluster is what the orchestrator asks Kafka. KafkaCluster implements it
// with franz-go; unit tests use a fake.
type Cluster interface {
	// ClusterID returns the Kafka cluster id.
	ClusterID(ctx context.Context) (string, error)
	// Healthy returns nil when every broker in want is registered, every
	// partition has a leader and every partition's ISR is its full replica
	// set; otherwise an error saying what is not.
	Healthy(ctx context.Context, want []int32) error
	// HighWatermarks returns every partition's high watermark.
	HighWatermarks(ctx context.Context) (map[string]map[int32]int64, error)
}

// ErrUnhealthy marks a cluster that is not healthy.
var ErrUnhealthy = errors.New("cluster not healthy")

// KafkaCluster is a Cluster reached with a franz-go client.
type KafkaCluster struct {
	cl  *kgo.Client
	adm *kadm.Client
}

var _ Cluster = (*KafkaCluster)(nil)

// NewKafkaCluster connects (lazily) to the cluster. Close it when done.
func NewKafkaCluster(ctx context.Context, o kafkaconn.Options) (*KafkaCluster, error) {
	opts, err := o.ClientOpts(ctx)
	if err != nil {
		return nil, err
	}
	opts = append(opts, kgo.RetryTimeout(10*time.Second), kgo.RequestTimeoutOverhead(10*time.Second),
		kgo.MetadataMinAge(250*time.Millisecond))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	return &KafkaCluster{cl: cl, adm: kadm.NewClient(cl)}, nil
}

// Close closes the client.
func (k *KafkaCluster) Close() { k.cl.Close() }

func bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, 20*time.Second)
}

// ClusterID implements Cluster.
func (k *KafkaCluster) ClusterID(ctx context.Context) (string, error) {
	ctx, cancel := bounded(ctx)
	defer cancel()
	md, err := k.adm.BrokerMetadata(ctx)
	if err != nil {
		return "", fmt.Errorf("kafka metadata: %w", err)
	}
	return md.Cluster, nil
}

// Healthy implements Cluster.
func (k *KafkaCluster) Healthy(ctx context.Context, want []int32) error {
	ctx, cancel := bounded(ctx)
	defer cancel()
	md, err := k.adm.Metadata(ctx)
	if err != nil {
		return fmt.Errorf("%w: metadata: %w", ErrUnhealthy, err)
	}
	have := md.Brokers.NodeIDs()
	var missing []int32
	for _, id := range want {
		if !slices.Contains(have, id) {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: brokers %v not registered (registered: %v)", ErrUnhealthy, missing, have)
	}
	var probs []string
	for _, t := range md.Topics.Sorted() {
		if t.Err != nil {
			probs = append(probs, fmt.Sprintf("%s: %v", t.Topic, t.Err))
			continue
		}
		for _, p := range t.Partitions.Sorted() {
			switch {
			case p.Leader < 0:
				probs = append(probs, fmt.Sprintf("%s/%d has no leader", t.Topic, p.Partition))
			case !sameSet(p.ISR, p.Replicas):
				probs = append(probs, fmt.Sprintf("%s/%d ISR %v of replicas %v", t.Topic, p.Partition, p.ISR, p.Replicas))
			}
		}
	}
	if len(probs) > 0 {
		more := ""
		if len(probs) > 5 {
			more = fmt.Sprintf(" and %d more", len(probs)-5)
			probs = probs[:5]
		}
		return fmt.Errorf("%w: %s%s", ErrUnhealthy, strings.Join(probs, "; "), more)
	}
	return nil
}

func sameSet(isr, replicas []int32) bool {
	if len(isr) < len(replicas) {
		return false
	}
	for _, r := range replicas {
		if !slices.Contains(isr, r) {
			return false
		}
	}
	return true
}

// HighWatermarks implements Cluster.
func (k *KafkaCluster) HighWatermarks(ctx context.Context) (map[string]map[int32]int64, error) {
	ctx, cancel := bounded(ctx)
	defer cancel()
	// A leader elected moments ago (brokers just restarted) answers
	// OFFSET_NOT_AVAILABLE for a while: retried within the bound; other
	// per-partition errors are reported below.
	ends, err := kafkaconn.ListOffsetsRetrying(ctx, func(ctx context.Context) (kadm.ListedOffsets, error) { return k.adm.ListEndOffsets(ctx) })
	if ends == nil && err != nil {
		return nil, fmt.Errorf("list high watermarks: %w", err)
	}
	out := map[string]map[int32]int64{}
	var errs []error
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			errs = append(errs, fmt.Errorf("%s/%d: %w", o.Topic, o.Partition, o.Err))
			return
		}
		if out[o.Topic] == nil {
			out[o.Topic] = map[int32]int64{}
		}
		out[o.Topic][o.Partition] = o.Offset
	})
	if len(errs) > 0 {
		return nil, fmt.Errorf("list high watermarks: %w", errors.Join(errs...))
	}
	return out, nil
}

// waitHealthy polls c.Healthy until it returns nil or timeout passes.
func waitHealthy(ctx context.Context, c Cluster, want []int32, timeout, poll time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if last = c.Healthy(ctx, want); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not healthy within %s: %w", timeout, last)
		case <-time.After(poll):
		}
	}
}
