package archive

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// membership shares partitions between archiver replicas through a Kafka
// consumer group. It only joins the group and learns assignments: it never
// fetches (assigned partitions are paused at once) and never commits
// offsets, since progress lives in the store. The archiver's data client
// consumes the assigned partitions directly at their store heads.
type membership struct {
	cl     *kgo.Client
	cancel context.CancelFunc // ends the client's in-flight requests on close
	log    *slog.Logger

	mu   sync.Mutex
	cur  map[string]map[int32]bool
	held map[tp]bool // what the archiver still holds, reported by the loop
}

// revokeWait bounds how long a revocation waits for the archiver to commit
// and release the partitions (fencing keeps a late commit safe anyway).
const revokeWait = 15 * time.Second

// groupSessionTimeout is how long the coordinator waits for a silent member
// (a kill -9, a partitioned host) before handing its partitions to the
// others, which bounds the archive lag such a failure adds. franz-go's 45 s
// default would add 45 s; Kafka accepts 6 s and more by default
// (group.min.session.timeout.ms).
const groupSessionTimeout = 10 * time.Second

// defaultReclaimDelay is how long a group member waits before claiming
// again a partition whose claim it lost (reclaimLater): a session timeout
// and a few heartbeats, by when a member the group replaced has heard so.
const defaultReclaimDelay = groupSessionTimeout + 3*groupSessionTimeout/10

// leaveWait bounds the group leave when the archiver stops: a rebalance in
// progress (waiting for a dead member's session to expire) would otherwise
// hold the shutdown past a Deployment's grace period.
const leaveWait = 5 * time.Second

// groupMetadataMaxAge is how often the group client refreshes metadata.
func groupMetadataMaxAge(opts Options) time.Duration {
	if opts.groupMetadataMaxAge > 0 {
		return opts.groupMetadataMaxAge
	}
	return max(opts.RefreshInterval, 10*time.Second)
}

func startMembership(opts Options, patterns []string, lg *slog.Logger) (*membership, error) {
	ctx, cancel := context.WithCancel(context.Background())
	m := &membership{log: lg, cancel: cancel, cur: map[string]map[int32]bool{}, held: map[tp]bool{}}
	copts := append([]kgo.Opt{}, opts.KafkaOpts...)
	copts = append(copts,
		kgo.WithContext(ctx),
		kgo.ConsumerGroup(opts.Group),
		kgo.SessionTimeout(groupSessionTimeout),
		kgo.HeartbeatInterval(groupSessionTimeout/10),
		kgo.ConsumeRegex(),
		kgo.ConsumeTopics(patterns...),
		// A topic created after the archivers started joins the group's
		// subscription at the next metadata refresh: as often as the
		// archiver looks for topics (franz-go's default is 5 minutes, during
		// which nobody would archive it).
		kgo.MetadataMaxAge(groupMetadataMaxAge(opts)),
		kgo.MetadataMinAge(min(5*time.Second, groupMetadataMaxAge(opts))),
		kgo.DisableAutoCommit(),
		kgo.FetchMaxBytes(1024), kgo.FetchMaxPartitionBytes(1024),
		kgo.OnPartitionsAssigned(m.assignedFn),
		kgo.OnPartitionsRevoked(m.revokedFn),
		kgo.OnPartitionsLost(m.lostFn),
	)
	copts = append(copts, kafkaMetrics(opts.Registerer, clientGroup)...)
	cl, err := kgo.NewClient(copts...)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("join group %s: %w", opts.Group, err)
	}
	m.cl = cl
	return m, nil
}

func (m *membership) assignedFn(_ context.Context, cl *kgo.Client, as map[string][]int32) {
	cl.PauseFetchPartitions(as)
	m.mu.Lock()
	defer m.mu.Unlock()
	for t, ps := range as {
		if m.cur[t] == nil {
			m.cur[t] = map[int32]bool{}
		}
		for _, p := range ps {
			m.cur[t][p] = true
		}
	}
	m.log.Info("partitions assigned", "partitions", fmt.Sprint(as))
}

func (m *membership) drop(rs map[string][]int32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for t, ps := range rs {
		for _, p := range ps {
			delete(m.cur[t], p)
		}
		if len(m.cur[t]) == 0 {
			delete(m.cur, t)
		}
	}
}

func (m *membership) revokedFn(ctx context.Context, _ *kgo.Client, rs map[string][]int32) {
	m.drop(rs)
	m.log.Info("partitions revoked: committing what is buffered", "partitions", fmt.Sprint(rs))
	deadline := time.Now().Add(revokeWait)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if !m.holdsAny(rs) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (m *membership) lostFn(_ context.Context, _ *kgo.Client, rs map[string][]int32) {
	m.drop(rs)
	m.log.Warn("partitions lost (session expired)", "partitions", fmt.Sprint(rs))
}

func (m *membership) holdsAny(rs map[string][]int32) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for t, ps := range rs {
		for _, p := range ps {
			if m.held[tp{t, p}] {
				return true
			}
		}
	}
	return false
}

// assigned returns the current assignment.
func (m *membership) assigned() map[string][]int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string][]int32, len(m.cur))
	for t, ps := range m.cur {
		for p := range ps {
			out[t] = append(out[t], p)
		}
	}
	return out
}

// report tells the membership which partitions the archiver still holds.
func (m *membership) report(held map[tp]bool) {
	m.mu.Lock()
	m.held = held
	m.mu.Unlock()
}

// close leaves the group. The archiver has flushed and holds nothing, so a
// revocation during the leave need not wait; the leave itself is bounded by
// leaveWait, after which the coordinator expires the membership.
func (m *membership) close() {
	m.report(nil)
	ctx, cancel := context.WithTimeout(context.Background(), leaveWait)
	if err := m.cl.LeaveGroupContext(ctx); err != nil {
		m.log.Warn("leaving the group timed out: other replicas take over this archiver's partitions when its session expires",
			"session_timeout", groupSessionTimeout, "err", err)
	}
	cancel()
	m.cancel()
	m.cl.Close()
}
