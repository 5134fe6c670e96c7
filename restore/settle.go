package restore

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// settleRounds bounds how often settle looks again at changing end offsets.
const settleRounds = 10

// settle waits until the target partitions of resumed lanes stop growing.
//
// A killed restore may have produce requests in flight that the broker
// applies after the process died. A rerun reads the target's end offsets
// to find the records written after the last checkpoint; a request applied
// after that read would duplicate records. So before a rerun writes, the
// end offsets of the partitions it resumes must stay the same for
// ResumeSettle. A request applied later still is detected by the lanes
// (their records must land contiguously) and fails the partition, naming
// the offsets.
func (rn *runner) settle(ctx context.Context, lanes []*lane) error {
	parts := map[string][]int32{}
	for _, l := range lanes {
		if l.ckpt == nil || l.ckpt.Done {
			continue
		}
		for _, ts := range l.ckpt.Targets {
			parts[l.targetTopic] = append(parts[l.targetTopic], ts.Partition)
		}
	}
	if len(parts) == 0 {
		return nil
	}
	list := func() (map[string]map[int32]int64, error) {
		out := map[string]map[int32]int64{}
		for topic, ps := range parts {
			_, ends, err := rn.t.Offsets(ctx, topic, ps...)
			if err != nil {
				return nil, err
			}
			out[topic] = ends
		}
		if rn.o.testSettleListed != nil {
			rn.o.testSettleListed()
		}
		return out, nil
	}
	prev, err := list()
	if err != nil {
		return err
	}
	rn.o.Logger.Info("restore: resuming; waiting until the target partitions stop changing (requests of an interrupted run may still be applied)",
		"wait", rn.o.ResumeSettle, "partitions", countParts(parts))
	for round := 0; round < settleRounds; round++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(rn.o.ResumeSettle):
		}
		cur, err := list()
		if err != nil {
			return err
		}
		changed := changedParts(prev, cur)
		if len(changed) == 0 {
			return nil
		}
		rn.o.Logger.Warn("restore: target partitions still receive records; waiting again", "partitions", strings.Join(changed, ","))
		prev = cur
	}
	return fmt.Errorf("target partitions %s keep receiving records: another producer writes into them (is an earlier run of this restore still running?); stop it, then run the restore again",
		strings.Join(changedParts(nil, prev), ","))
}

func countParts(m map[string][]int32) int {
	n := 0
	for _, ps := range m {
		n += len(ps)
	}
	return n
}

// changedParts names the partitions whose end offsets differ between a and
// b (all of b's when a is nil), sorted.
func changedParts(a, b map[string]map[int32]int64) []string {
	var out []string
	for _, topic := range slices.Sorted(maps.Keys(b)) {
		for _, p := range slices.Sorted(maps.Keys(b[topic])) {
			if a == nil || a[topic][p] != b[topic][p] {
				out = append(out, fmt.Sprintf("%s/%d", topic, p))
			}
		}
	}
	return out
}
