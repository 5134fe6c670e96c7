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
	cl  *kgo.Client
	log *slog.Logger

	mu   sync.Mutex
	cur  map[string]map[int32]bool
	held map[tp]bool // what the archiver still holds, reported by the loop
}

// revokeWait bounds how long a revocation waits for the archiver to commit
// and release the partitions (fencing keeps a late commit safe anyway).
const revokeWait = 15 * time.Second

func startMembership(opts Options, patterns []string, lg *slog.Logger) (*membership, error) {
	m := &membership{log: lg, cur: map[string]map[int32]bool{}, held: map[tp]bool{}}
	copts := append([]kgo.Opt{}, opts.KafkaOpts...)
	copts = append(copts,
		kgo.ConsumerGroup(opts.Group),
		kgo.ConsumeRegex(),
		kgo.ConsumeTopics(patterns...),
		kgo.DisableAutoCommit(),
		kgo.FetchMaxBytes(1024), kgo.FetchMaxPartitionBytes(1024),
		kgo.OnPartitionsAssigned(m.assignedFn),
		kgo.OnPartitionsRevoked(m.revokedFn),
		kgo.OnPartitionsLost(m.lostFn),
	)
	cl, err := kgo.NewClient(copts...)
	if err != nil {
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

func (m *membership) close() {
	m.cl.Close()
}
