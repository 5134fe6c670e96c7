package snapshot

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/kbackup/kbackup/store"
)

// FormatVersion is the cycle record format this package writes and reads.
// Readers refuse other versions (docs/FORMAT.md, "Snapshot cycles").
const FormatVersion = 1

// Cycle states.
const (
	// StatePending: the cycle runs (or died; prune removes it after the lock TTL).
	StatePending = "pending"
	// StateComplete: every snapshot completed; the cycle can be restored.
	StateComplete = "complete"
	// StateFailed: the cycle failed; its snapshots are tagged failed.
	StateFailed = "failed"
	// StatePruning: prune is deleting the cycle's snapshots.
	StatePruning = "pruning"
)

// Sentinel errors callers branch on.
var (
	// ErrUnknownVersion: a record of a format version this kbackup does not know.
	ErrUnknownVersion = errors.New("unknown snapshot cycle format version")
	// ErrNoCycle: no such cycle in the store.
	ErrNoCycle = errors.New("no such snapshot cycle")
	// ErrNotRestorable: the cycle is not complete or belongs to another cluster.
	ErrNotRestorable = errors.New("snapshot cycle cannot be restored")
)

// CycleRecord is the JSON object stored for every cycle at
// snapshots/<cluster>/cycles/<id>.json.
type CycleRecord struct {
	// FormatVersion is 1.
	FormatVersion int `json:"format_version"`
	// ID is the cycle id: <UTC yyyymmddThhmmssZ>-<8 hex>, sorting by start time.
	ID string `json:"id"`
	// Cluster is the configured cluster name; ClusterID the Kafka cluster id.
	Cluster   string `json:"cluster"`
	ClusterID string `json:"cluster_id"`
	// Mode is cold, rolling or hot; Provider is ebs or dir.
	Mode     Mode   `json:"mode"`
	Provider string `json:"provider"`
	// State is pending, complete, failed or pruning.
	State string `json:"state"`
	// Reason says why a cycle failed.
	Reason string `json:"reason,omitempty"`
	// Started and Finished are the cycle's times (Finished zero while pending).
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	// Brokers are every broker's snapshots.
	Brokers []BrokerRecord `json:"brokers"`
	// HighWatermarks are every partition's high watermark read before any
	// broker was stopped or snapshot: each snapshot holds at least these
	// offsets. topic -> partition (decimal string) -> offset.
	HighWatermarks map[string]map[string]int64 `json:"high_watermarks"`
	// HighWatermarksAfter are read after the cycle (all brokers back): an
	// upper bound of what the snapshots hold. Equal to HighWatermarks when
	// nothing was produced during the cycle (always so in cold mode without
	// producers). Empty when the cycle failed before.
	HighWatermarksAfter map[string]map[string]int64 `json:"high_watermarks_after,omitempty"`
}

// BrokerRecord is one broker's part of a cycle.
type BrokerRecord struct {
	ID        int32  `json:"id"`
	Snapshots []Snap `json:"snapshots"`
}

// Snaps returns every snapshot of the cycle.
func (r *CycleRecord) Snaps() []Snap {
	var out []Snap
	for _, b := range r.Brokers {
		out = append(out, b.Snapshots...)
	}
	return out
}

// Bytes is the sum of the snapshots' sizes.
func (r *CycleRecord) Bytes() int64 {
	var n int64
	for _, s := range r.Snaps() {
		n += s.Bytes
	}
	return n
}

// HighWatermark returns the recorded high watermark of topic/partition.
func (r *CycleRecord) HighWatermark(topic string, partition int32) (int64, bool) {
	v, ok := r.HighWatermarks[topic][fmt.Sprint(partition)]
	return v, ok
}

// Key layout (relative to the store root).
func clusterPrefix(cluster string) string { return "snapshots/" + cluster + "/" }

// CycleKey is the store key of a cycle record.
func CycleKey(cluster, id string) string { return clusterPrefix(cluster) + "cycles/" + id + ".json" }

// LockKey is the store key of a cluster's cycle lock.
func LockKey(cluster string) string { return clusterPrefix(cluster) + "lock.json" }

// RestoreKey is the store key of a restore report.
func RestoreKey(cluster, id string) string {
	return clusterPrefix(cluster) + "restores/" + id + ".json"
}

var cycleIDRE = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$`)

// NewCycleID returns a cycle id for a cycle starting at t.
func NewCycleID(t time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return t.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// ValidCycleID reports whether id has the cycle id form.
func ValidCycleID(id string) bool { return cycleIDRE.MatchString(id) }

// DecodeCycle parses a cycle record, refusing unknown format versions.
func DecodeCycle(b []byte) (*CycleRecord, error) {
	var probe struct {
		V *int `json:"format_version"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, fmt.Errorf("decode snapshot cycle record: %w", err)
	}
	if probe.V == nil || *probe.V != FormatVersion {
		v := "none"
		if probe.V != nil {
			v = fmt.Sprint(*probe.V)
		}
		return nil, fmt.Errorf("%w: %s (this kbackup reads version %d; upgrade kbackup)", ErrUnknownVersion, v, FormatVersion)
	}
	var r CycleRecord
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("decode snapshot cycle record: %w", err)
	}
	if !ValidCycleID(r.ID) {
		return nil, fmt.Errorf("decode snapshot cycle record: invalid id %q", r.ID)
	}
	return &r, nil
}

func putJSON(ctx context.Context, st store.Store, key string, v any, opts store.PutOptions) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	b = append(b, '\n')
	if err := st.Put(ctx, key, bytes.NewReader(b), int64(len(b)), opts); err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	return nil
}

// SaveCycle writes a cycle record (create=true: only if it does not exist).
func SaveCycle(ctx context.Context, st store.Store, r *CycleRecord, create bool) error {
	r.FormatVersion = FormatVersion
	return putJSON(ctx, st, CycleKey(r.Cluster, r.ID), r, store.PutOptions{IfNotExists: create})
}

// LoadCycle reads cycle id of cluster. A missing cycle is ErrNoCycle.
// This is what the restore engine's roll-forward reads the recorded high
// watermarks from.
func LoadCycle(ctx context.Context, st store.Store, cluster, id string) (*CycleRecord, error) {
	if !ValidCycleID(id) {
		return nil, fmt.Errorf("%w: %q is not a cycle id (want e.g. 20240229T120000Z-0a1b2c3d)", ErrNoCycle, id)
	}
	b, err := store.Get(ctx, st, CycleKey(cluster, id))
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s in cluster %s (store %s)", ErrNoCycle, id, cluster, st)
	}
	if err != nil {
		return nil, fmt.Errorf("read snapshot cycle %s: %w", id, err)
	}
	r, err := DecodeCycle(b)
	if err != nil {
		return nil, fmt.Errorf("snapshot cycle %s: %w", id, err)
	}
	return r, nil
}

// listJSON returns the keys of the .json objects under prefix, in byte
// order.
func listJSON(ctx context.Context, st store.Store, prefix string) ([]string, error) {
	var keys []string
	err := st.List(ctx, store.ListOptions{Prefix: prefix}, func(e store.ListEntry) error {
		if !e.IsPrefix && strings.HasSuffix(e.Key, ".json") {
			keys = append(keys, e.Key)
		}
		return nil
	})
	return keys, err
}

// LoadCycles reads every cycle record of cluster, oldest (by start time) first.
func LoadCycles(ctx context.Context, st store.Store, cluster string) ([]*CycleRecord, error) {
	prefix := clusterPrefix(cluster) + "cycles/"
	keys, err := listJSON(ctx, st, prefix)
	if err != nil {
		return nil, fmt.Errorf("list snapshot cycles: %w", err)
	}
	out := make([]*CycleRecord, 0, len(keys))
	for _, k := range keys {
		id := strings.TrimSuffix(strings.TrimPrefix(k, prefix), ".json")
		r, err := LoadCycle(ctx, st, cluster, id)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	// Ids sort by start second only; the record's start time decides.
	sort.SliceStable(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
	return out, nil
}

// hwmMap converts offsets to the record's string-keyed form.
func hwmMap(in map[string]map[int32]int64) map[string]map[string]int64 {
	out := make(map[string]map[string]int64, len(in))
	for t, ps := range in {
		m := make(map[string]int64, len(ps))
		for p, o := range ps {
			m[fmt.Sprint(p)] = o
		}
		out[t] = m
	}
	return out
}
