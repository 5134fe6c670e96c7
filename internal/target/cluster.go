// Package target is the Kafka cluster a restore or a replay writes into:
// its topics, start and end offsets (retried while leaders move), topic
// creation and timestamp types, the record at an offset, and the archived
// records converted for producing, with the hash that identifies a
// record's content; and a restore's own produce path (Batch, Writer):
// Kafka record batches built from the records in order, sent one request
// per batch by an idempotent writer.
package target

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbackup/kbackup/internal/retry"
	"github.com/kbackup/kbackup/kafkaconn"
)

// Cluster is the cluster being written into.
type Cluster struct {
	opts []kgo.Opt // connection options
	// Client produces (with the options given to Connect); Admin is an
	// admin client on it.
	Client *kgo.Client
	Admin  *kadm.Client
	// ClusterID is the cluster's id ("" when it reports none).
	ClusterID string
	// Topics holds the partition count of every existing topic (as of
	// Connect, and of the topics created since).
	Topics map[string]int32
}

// RetryBackoff is the backoff between retries of a writer's requests
// (kgo.RetryBackoffFn for restore and replay): 20 ms doubling up to 2 s,
// ±20% jitter. franz-go's default starts at 250 ms, which a first producer
// on a freshly started broker always waited once: the broker answers the
// first InitProducerID with COORDINATOR_LOAD_IN_PROGRESS while it obtains
// a block of producer ids from the controller, a matter of milliseconds
// (docs/PERFORMANCE.md, "First run").
func RetryBackoff(fails int) time.Duration {
	d := 2 * time.Second
	if fails < 7 {
		d = 20 * time.Millisecond << max(fails-1, 0)
	}
	return d - d/5 + time.Duration(rand.Int64N(int64(d/5)*2+1))
}

// MetadataMinAge is the writers' minimum time between metadata requests
// (franz-go's default is 5 s). Admin requests sent to partition leaders
// (ListOffsets: a target partition's end offset) use metadata cached for
// that long: right after a restore created its target topic, a cluster of
// several brokers may still answer without leaders, and with the default
// every lane then waited until that answer was 5 s old before it could
// start (about one restore in two into a new topic on three brokers).
const MetadataMinAge = 250 * time.Millisecond

// Connect connects to the cluster with the connection options opts plus
// the producer options, and reads its id and topics.
func Connect(ctx context.Context, opts []kgo.Opt, producerOpts ...kgo.Opt) (*Cluster, error) {
	all := append([]kgo.Opt{kgo.MetadataMinAge(MetadataMinAge)}, opts...)
	cl, err := kgo.NewClient(append(all, producerOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("target cluster client: %w", err)
	}
	t := &Cluster{opts: opts, Client: cl, Admin: kadm.NewClient(cl), Topics: map[string]int32{}}
	if err := t.refresh(ctx); err != nil {
		cl.Close()
		return nil, err
	}
	return t, nil
}

// Close closes the clients.
func (t *Cluster) Close() { t.Client.Close() }

// refresh reloads the cluster id and the existing topics.
func (t *Cluster) refresh(ctx context.Context) error {
	mctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	md, err := t.Admin.Metadata(mctx)
	if err != nil {
		return fmt.Errorf("target cluster metadata: %w", err)
	}
	t.ClusterID = md.Cluster
	for name, td := range md.Topics {
		if td.Err == nil {
			t.Topics[name] = int32(len(td.Partitions))
		}
	}
	return nil
}

// Offsets returns the start and end offsets of topic's partitions: of
// parts only when given (one request per leader for just those; a lane
// lists its own partitions, not the whole topic), else of every partition.
func (t *Cluster) Offsets(ctx context.Context, topic string, parts ...int32) (start, end map[int32]int64, err error) {
	if len(parts) == 0 {
		return t.topicOffsets(ctx, topic)
	}
	if start, err = t.listOffsets(ctx, topic, parts, -2); err != nil {
		return nil, nil, fmt.Errorf("list start offsets of target topic %s: %w", topic, err)
	}
	if end, err = t.listOffsets(ctx, topic, parts, -1); err != nil {
		return nil, nil, fmt.Errorf("list end offsets of target topic %s: %w", topic, err)
	}
	return start, end, nil
}

// topicOffsets lists the start and end offsets of every partition of topic.
func (t *Cluster) topicOffsets(ctx context.Context, topic string) (start, end map[int32]int64, err error) {
	start, end = map[int32]int64{}, map[int32]int64{}
	// Retriable partition errors (a leader just elected) are retried for
	// up to 30 s.
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	so, err := kafkaconn.ListOffsetsRetrying(lctx, func(ctx context.Context) (kadm.ListedOffsets, error) { return t.Admin.ListStartOffsets(ctx, topic) })
	if err != nil {
		return nil, nil, fmt.Errorf("list start offsets of target topic %s: %w", topic, err)
	}
	eo, err := kafkaconn.ListOffsetsRetrying(lctx, func(ctx context.Context) (kadm.ListedOffsets, error) { return t.Admin.ListEndOffsets(ctx, topic) })
	if err != nil {
		return nil, nil, fmt.Errorf("list end offsets of target topic %s: %w", topic, err)
	}
	var ferr error
	collect := func(m map[int32]int64) func(kadm.ListedOffset) {
		return func(o kadm.ListedOffset) {
			if o.Err != nil && ferr == nil {
				ferr = fmt.Errorf("target %s/%d offsets: %w", o.Topic, o.Partition, o.Err)
			}
			m[o.Partition] = o.Offset
		}
	}
	so.Each(collect(start))
	eo.Each(collect(end))
	return start, end, ferr
}

// listOffsets lists, for parts of topic, the offset at timestamp ts (-1:
// the end, -2: the start) with read_uncommitted isolation (the log end,
// which is what the restore's own records advance). Partitions answering a
// retriable error (a leader that moved or was just elected) are asked
// again (offsetsBackoff), for up to offsetsRetryFor.
func (t *Cluster) listOffsets(ctx context.Context, topic string, parts []int32, ts int64) (map[int32]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, offsetsRetryFor)
	defer cancel()
	out := make(map[int32]int64, len(parts))
	todo := append([]int32(nil), parts...)
	var fatal error
	p := retry.Policy{Backoff: offsetsBackoff, Retryable: func(error) bool { return fatal == nil }}
	err := retry.Do(ctx, p, func(ctx context.Context) error {
		var err error
		todo, err, fatal = t.listOffsetsOnce(ctx, topic, todo, ts, out)
		if fatal != nil {
			return fatal
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// offsetsRetryFor bounds how long listOffsets asks again; offsetsBackoff
// is the wait between its attempts.
const offsetsRetryFor = 30 * time.Second

var offsetsBackoff = retry.Backoff{Initial: 250 * time.Millisecond, Max: time.Second}

// listOffsetsOnce asks once for the offsets of todo, adding them to out.
// It returns the partitions to ask again with the last reason (err), or
// fatal for an answer that asking again cannot change.
func (t *Cluster) listOffsetsOnce(ctx context.Context, topic string, todo []int32, ts int64, out map[int32]int64) (again []int32, err, fatal error) {
	req := kmsg.NewPtrListOffsetsRequest()
	req.ReplicaID = -1
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	for _, p := range todo {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition, rp.Timestamp, rp.CurrentLeaderEpoch = p, ts, -1
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	for _, sh := range t.Client.RequestSharded(ctx, req) {
		if sh.Err != nil {
			// The shard's partitions are those of its request.
			if r, ok := sh.Req.(*kmsg.ListOffsetsRequest); ok {
				for _, rt := range r.Topics {
					for _, rp := range rt.Partitions {
						again = append(again, rp.Partition)
					}
				}
			}
			err = sh.Err
			continue
		}
		resp := sh.Resp.(*kmsg.ListOffsetsResponse)
		for _, rt := range resp.Topics {
			for _, rp := range rt.Partitions {
				if perr := kerr.ErrorForCode(rp.ErrorCode); perr != nil {
					var ke *kerr.Error
					if errors.As(perr, &ke) && !ke.Retriable {
						return nil, nil, fmt.Errorf("partition %d: %w", rp.Partition, perr)
					}
					again, err = append(again, rp.Partition), fmt.Errorf("partition %d: %w", rp.Partition, perr)
					continue
				}
				out[rp.Partition] = rp.Offset
			}
		}
	}
	for _, p := range todo {
		if _, ok := out[p]; !ok && !slices.Contains(again, p) {
			again, err = append(again, p), fmt.Errorf("partition %d: not in the response", p)
		}
	}
	return again, err, nil
}

// Create creates topic with partitions, replication factor rf (-1: the
// broker default) and configs.
func (t *Cluster) Create(ctx context.Context, topic string, partitions int32, rf int16, configs map[string]string) error {
	cfg := map[string]*string{}
	for k, v := range configs {
		cfg[k] = &v
	}
	resp, err := t.Admin.CreateTopic(ctx, partitions, rf, cfg, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("create target topic %s (%d partitions, replication factor %d): %w", topic, partitions, rf, err)
	}
	t.Topics[topic] = partitions
	t.awaitLeaders(ctx, topic, partitions, leaderWait)
	return nil
}

// AwaitLeaders waits, as Create does after creating it, until every broker
// that answers shows a leader for each of the first partitions partitions
// of topic (one another process created moments ago), for at most 10 s.
func (t *Cluster) AwaitLeaders(ctx context.Context, topic string, partitions int32) {
	t.awaitLeaders(ctx, topic, partitions, leaderWait)
}

// leaderWait bounds how long Create waits for a new topic's leaders.
const leaderWait = 10 * time.Second

// awaitLeaders waits until every broker that answers shows a leader for
// every one of the partitions of topic, created moments ago, or until
// wait passed (then the writers' own retries wait). On several brokers a
// new topic becomes known to each broker, with its leaders, some ten to
// hundreds of milliseconds after CreateTopics returns; a writer asking one
// that does not know it yet retried after 250 ms (the target partitions'
// end offsets, through metadata the client caches for MetadataMinAge; the
// producer's first metadata; the topic's configs).
func (t *Cluster) awaitLeaders(ctx context.Context, topic string, partitions int32, wait time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	_ = retry.Do(ctx, leadersRetry, func(ctx context.Context) error {
		if t.leaders(ctx, topic) < partitions {
			return errNoLeaders
		}
		return nil
	})
}

// errNoLeaders: a broker does not show a leader for every partition yet.
var errNoLeaders = errors.New("not every partition has a leader on every broker")

// leadersRetry asks again for a new topic's leaders after 20 ms, doubling
// up to 200 ms (until awaitLeaders' bound).
var leadersRetry = retry.Policy{Backoff: retry.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}}

// leaders is the least number of partitions of topic with a leader that a
// broker of the cluster reports, asking every broker the client knows; a
// broker that does not answer within a second is not counted (0 if none
// answers).
func (t *Cluster) leaders(ctx context.Context, topic string) int32 {
	least, answered := int32(0), false
	for _, b := range t.Client.DiscoveredBrokers() {
		bctx, cancel := context.WithTimeout(ctx, time.Second)
		td, err := topicMetadata(bctx, b.Request, topic)
		cancel()
		if err != nil {
			continue
		}
		var n int32
		if td != nil {
			for _, p := range td.Partitions {
				if p.ErrorCode == 0 && p.Leader >= 0 {
					n++
				}
			}
		}
		if !answered || n < least {
			least, answered = n, true
		}
	}
	return least
}

// PartitionCount asks the cluster (not the client's metadata cache) how
// many partitions topic has; 0 if it does not exist.
func (t *Cluster) PartitionCount(ctx context.Context, topic string) (int32, error) {
	td, err := topicMetadata(ctx, t.Client.Request, topic)
	if err != nil || td == nil {
		return 0, err
	}
	return int32(len(td.Partitions)), nil
}

// topicMetadata asks for topic's metadata with request (a client's or a
// broker's: not the client's metadata cache); nil if it does not exist.
func topicMetadata(ctx context.Context, request func(context.Context, kmsg.Request) (kmsg.Response, error), topic string) (*kmsg.MetadataResponseTopic, error) {
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	kr, err := request(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("target metadata of %s: %w", topic, err)
	}
	resp, ok := kr.(*kmsg.MetadataResponse)
	if !ok {
		return nil, fmt.Errorf("target metadata of %s: a %T in reply", topic, kr)
	}
	for i, td := range resp.Topics {
		if td.Topic != nil && *td.Topic == topic && td.ErrorCode == 0 {
			return &resp.Topics[i], nil
		}
	}
	return nil, nil
}

// LogAppendTime reports whether topic stamps records with the broker time.
//
// A topic created moments ago may not be known to the broker answering
// yet (UNKNOWN_TOPIC_OR_PARTITION while its metadata propagates): such
// retriable errors are retried for a few seconds.
func (t *Cluster) LogAppendTime(ctx context.Context, topic string) (bool, error) {
	var la bool
	err := retry.Do(ctx, describeRetry, func(ctx context.Context) error {
		rcs, err := t.Admin.DescribeTopicConfigs(ctx, topic)
		if err != nil {
			return err
		}
		for _, rc := range rcs {
			if rc.Err != nil {
				return rc.Err
			}
			for _, c := range rc.Configs {
				if c.Key == "message.timestamp.type" && c.Value != nil {
					la = strings.EqualFold(*c.Value, "LogAppendTime")
				}
			}
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("describe target topic %s: %w", topic, err)
	}
	return la, nil
}

// describeRetry retries a target topic's description while its metadata
// propagates (about 5 s in all).
var describeRetry = retry.Policy{Backoff: retry.Backoff{Initial: 50 * time.Millisecond, Max: time.Second}, Attempts: 10,
	Retryable: kerr.IsRetriable}

// ActiveMembers returns the number of members of each group in the target.
func (t *Cluster) ActiveMembers(ctx context.Context, groups []string) (map[string]int, error) {
	out := map[string]int{}
	if len(groups) == 0 {
		return out, nil
	}
	dg, err := t.Admin.DescribeGroups(ctx, groups...)
	if err != nil {
		return nil, fmt.Errorf("describe target groups: %w", err)
	}
	for _, g := range dg.Sorted() {
		if errors.Is(g.Err, kerr.GroupIDNotFound) {
			continue
		}
		if g.Err != nil {
			return nil, fmt.Errorf("describe target group %s: %w", g.Group, g.Err)
		}
		out[g.Group] = len(g.Members)
	}
	return out, nil
}
