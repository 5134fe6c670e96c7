package restore

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbackup/kbackup/internal/retry"
	"github.com/kbackup/kbackup/kafkaconn"
)

// target is the cluster being restored into.
type target struct {
	opts      []kgo.Opt // connection options
	cl        *kgo.Client
	adm       *kadm.Client
	clusterID string
	// topics holds the partition count of every existing target topic.
	topics map[string]int32
}

func connectTarget(ctx context.Context, opts []kgo.Opt, producerOpts ...kgo.Opt) (*target, error) {
	cl, err := kgo.NewClient(append(append([]kgo.Opt(nil), opts...), producerOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("target cluster client: %w", err)
	}
	t := &target{opts: opts, cl: cl, adm: kadm.NewClient(cl), topics: map[string]int32{}}
	if err := t.refresh(ctx); err != nil {
		cl.Close()
		return nil, err
	}
	return t, nil
}

func (t *target) close() { t.cl.Close() }

// refresh reloads the cluster id and the existing topics.
func (t *target) refresh(ctx context.Context) error {
	mctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	md, err := t.adm.Metadata(mctx)
	if err != nil {
		return fmt.Errorf("target cluster metadata: %w", err)
	}
	t.clusterID = md.Cluster
	for name, td := range md.Topics {
		if td.Err == nil {
			t.topics[name] = int32(len(td.Partitions))
		}
	}
	return nil
}

// offsets returns the start and end offsets of topic's partitions: of
// parts only when given (one request per leader for just those; a lane
// lists its own partitions, not the whole topic), else of every partition.
func (t *target) offsets(ctx context.Context, topic string, parts ...int32) (start, end map[int32]int64, err error) {
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
func (t *target) topicOffsets(ctx context.Context, topic string) (start, end map[int32]int64, err error) {
	start, end = map[int32]int64{}, map[int32]int64{}
	// Retriable partition errors (a leader just elected) are retried for
	// up to 30 s.
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	so, err := kafkaconn.ListOffsetsRetrying(lctx, func(ctx context.Context) (kadm.ListedOffsets, error) { return t.adm.ListStartOffsets(ctx, topic) })
	if err != nil {
		return nil, nil, fmt.Errorf("list start offsets of target topic %s: %w", topic, err)
	}
	eo, err := kafkaconn.ListOffsetsRetrying(lctx, func(ctx context.Context) (kadm.ListedOffsets, error) { return t.adm.ListEndOffsets(ctx, topic) })
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
// again, for up to 30 s.
func (t *target) listOffsets(ctx context.Context, topic string, parts []int32, ts int64) (map[int32]int64, error) {
	deadline := time.Now().Add(30 * time.Second)
	out := make(map[int32]int64, len(parts))
	todo := append([]int32(nil), parts...)
	for attempt := 0; ; attempt++ {
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
		shards := t.cl.RequestSharded(ctx, req)
		var retry []int32
		var lastErr error
		for _, sh := range shards {
			if sh.Err != nil {
				// The shard's partitions are those of its request.
				if r, ok := sh.Req.(*kmsg.ListOffsetsRequest); ok {
					for _, rt := range r.Topics {
						for _, rp := range rt.Partitions {
							retry = append(retry, rp.Partition)
						}
					}
				}
				lastErr = sh.Err
				continue
			}
			resp := sh.Resp.(*kmsg.ListOffsetsResponse)
			for _, rt := range resp.Topics {
				for _, rp := range rt.Partitions {
					if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
						var ke *kerr.Error
						if errors.As(err, &ke) && !ke.Retriable {
							return nil, fmt.Errorf("partition %d: %w", rp.Partition, err)
						}
						retry, lastErr = append(retry, rp.Partition), fmt.Errorf("partition %d: %w", rp.Partition, err)
						continue
					}
					out[rp.Partition] = rp.Offset
				}
			}
		}
		for _, p := range todo {
			if _, ok := out[p]; !ok && !slices.Contains(retry, p) {
				retry, lastErr = append(retry, p), fmt.Errorf("partition %d: not in the response", p)
			}
		}
		if len(retry) == 0 {
			return out, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, lastErr
		}
		todo = retry
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(min(attempt+1, 4)) * 250 * time.Millisecond):
		}
	}
}

// create creates topic with the planned settings.
func (t *target) create(ctx context.Context, pt PlanTopic) error {
	configs := map[string]*string{}
	for k, v := range pt.Configs {
		configs[k] = &v
	}
	resp, err := t.adm.CreateTopic(ctx, pt.Partitions, pt.ReplicationFactor, configs, pt.Target)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("create target topic %s (%d partitions, replication factor %d): %w", pt.Target, pt.Partitions, pt.ReplicationFactor, err)
	}
	t.topics[pt.Target] = pt.Partitions
	return nil
}

// partitionCount asks the cluster (not the client's metadata cache) how
// many partitions topic has; 0 if it does not exist.
func (t *target) partitionCount(ctx context.Context, topic string) (int32, error) {
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, t.cl)
	if err != nil {
		return 0, fmt.Errorf("target metadata of %s: %w", topic, err)
	}
	for _, td := range resp.Topics {
		if td.Topic != nil && *td.Topic == topic && td.ErrorCode == 0 {
			return int32(len(td.Partitions)), nil
		}
	}
	return 0, nil
}

// logAppendTime reports whether topic stamps records with the broker time.
//
// A topic created moments ago may not be known to the broker answering
// yet (UNKNOWN_TOPIC_OR_PARTITION while its metadata propagates): such
// retriable errors are retried for a few seconds.
func (t *target) logAppendTime(ctx context.Context, topic string) (bool, error) {
	var la bool
	err := retry.Do(ctx, describeRetry, func(ctx context.Context) error {
		rcs, err := t.adm.DescribeTopicConfigs(ctx, topic)
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

// errRecordNotFound: the target no longer holds the offset (retention).
var errRecordNotFound = errors.New("record not found in the target")

// fetchRecord reads the record at offset off of topic/partition.
func (t *target) fetchRecord(ctx context.Context, topic string, partition int32, off int64) (*kgo.Record, error) {
	cl, err := kgo.NewClient(append(append([]kgo.Opt(nil), t.opts...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().At(off)}}),
		kgo.FetchIsolationLevel(kgo.ReadUncommitted()), kgo.ConsumeResetOffset(kgo.NoResetOffset()))...)
	if err != nil {
		return nil, fmt.Errorf("target client: %w", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("read target %s/%d offset %d: %w", topic, partition, off, err)
		}
		var found *kgo.Record
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) {
			if ferr == nil {
				ferr = err
			}
		})
		if ferr != nil {
			var dl *kgo.ErrDataLoss
			if errors.As(ferr, &dl) || errors.Is(ferr, kerr.OffsetOutOfRange) {
				return nil, fmt.Errorf("read target %s/%d offset %d: %w", topic, partition, off, errRecordNotFound)
			}
			return nil, fmt.Errorf("read target %s/%d offset %d: %w", topic, partition, off, ferr)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if found == nil && r.Offset >= off {
				found = r
			}
		})
		if found != nil {
			if found.Offset != off {
				return nil, fmt.Errorf("read target %s/%d offset %d (next record is at %d): %w", topic, partition, off, found.Offset, errRecordNotFound)
			}
			return found, nil
		}
	}
}

// recordHash identifies a record's content: key and value (null distinct
// from empty), headers in order, and the timestamp unless the target
// overrides timestamps (LogAppendTime).
func recordHash(r *kgo.Record, withTimestamp bool) string {
	h := sha256.New()
	var b [8]byte
	nbytes := func(v []byte) {
		if v == nil {
			h.Write([]byte{0})
			return
		}
		h.Write([]byte{1})
		binary.LittleEndian.PutUint64(b[:], uint64(len(v)))
		h.Write(b[:])
		h.Write(v)
	}
	if withTimestamp {
		binary.LittleEndian.PutUint64(b[:], uint64(r.Timestamp.UnixMilli()))
		h.Write(b[:])
	}
	nbytes(r.Key)
	nbytes(r.Value)
	binary.LittleEndian.PutUint64(b[:], uint64(len(r.Headers)))
	h.Write(b[:])
	for _, hd := range r.Headers {
		nbytes([]byte(hd.Key))
		nbytes(hd.Value)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// activeMembers returns the number of members of each group in the target.
func (t *target) activeMembers(ctx context.Context, groups []string) (map[string]int, error) {
	out := map[string]int{}
	if len(groups) == 0 {
		return out, nil
	}
	dg, err := t.adm.DescribeGroups(ctx, groups...)
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

func sortedKeys[V any](m map[int32]V) []int32 {
	out := make([]int32, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
