package restore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/kbackup/kbackup/store"
)

// Offset-map format identifiers (docs/FORMAT.md, "Offset maps").
const (
	offsetMapFormat  = "kbackup-offset-map"
	offsetMapVersion = 1
)

// OffsetRun maps Count consecutive restored records: source offsets Source,
// Source+1, ... landed at target offsets Target, Target+1, ... A run
// breaks where the source has a gap (or the target offsets jump). In JSON
// a run is the array [source, target, count].
type OffsetRun struct {
	Source, Target, Count int64
}

// MarshalJSON encodes the run as [source, target, count].
func (r OffsetRun) MarshalJSON() ([]byte, error) {
	return json.Marshal([3]int64{r.Source, r.Target, r.Count})
}

// UnmarshalJSON decodes [source, target, count].
func (r *OffsetRun) UnmarshalJSON(b []byte) error {
	var a [3]int64
	if err := json.Unmarshal(b, &a); err != nil {
		return fmt.Errorf("offset map run: %w", err)
	}
	if a[0] < 0 || a[1] < 0 || a[2] < 1 {
		return fmt.Errorf("offset map run %v: offsets must be >= 0 and count >= 1", a)
	}
	r.Source, r.Target, r.Count = a[0], a[1], a[2]
	return nil
}

// PartitionMap is the offset map of one restored source partition.
type PartitionMap struct {
	SourceTopic     string `json:"source_topic"`
	SourceTopicID   string `json:"source_topic_id"`
	SourcePartition int32  `json:"source_partition"`
	TargetTopic     string `json:"target_topic"`
	TargetPartition int32  `json:"target_partition"`
	// SourceFrom..SourceTo is the selected source offset range (inclusive;
	// SourceTo < SourceFrom when nothing was selected).
	SourceFrom int64 `json:"source_from"`
	SourceTo   int64 `json:"source_to"`
	// TargetStart is the target partition's end offset before the restore
	// wrote to it; TargetEnd the offset after the last restored record.
	TargetStart int64 `json:"target_start"`
	TargetEnd   int64 `json:"target_end"`
	Records     int64 `json:"records"`
	// Complete is false while the partition's restore has not finished:
	// such a map must not be used to translate offsets.
	Complete bool        `json:"complete"`
	Runs     []OffsetRun `json:"runs"`
}

// OffsetMap is the offset map of a restore: per source partition, where
// each restored source offset landed in the target.
type OffsetMap struct {
	Format          string `json:"format"`
	FormatVersion   int    `json:"format_version"`
	RestoreID       string `json:"restore_id"`
	CreatedMs       int64  `json:"created_ms"`
	TargetClusterID string `json:"target_cluster_id"`
	// CatalogMs is the restore's end time: group offsets are taken from the
	// newest groups capture at or before it.
	CatalogMs  int64          `json:"catalog_ms"`
	Partitions []PartitionMap `json:"partitions"`
}

// Translate maps a source consumer offset (the next offset to consume) to
// the target: inside the restored range, the target offset of the first
// restored record at or after it (so an offset pointing into a gap lands on
// the next record); before the range, the first restored target offset;
// past the range, the target end.
func (m *PartitionMap) Translate(offset int64) int64 {
	switch {
	case offset < m.SourceFrom:
		if len(m.Runs) > 0 {
			return m.Runs[0].Target
		}
		return m.TargetEnd
	case offset > m.SourceTo:
		return m.TargetEnd
	}
	i := sort.Search(len(m.Runs), func(i int) bool { return m.Runs[i].Source+m.Runs[i].Count-1 >= offset })
	if i == len(m.Runs) {
		return m.TargetEnd
	}
	r := m.Runs[i]
	if offset <= r.Source {
		return r.Target
	}
	return r.Target + offset - r.Source
}

// TargetOf returns the target offset of the record at source offset o,
// and false if no restored record has that offset.
func (m *PartitionMap) TargetOf(o int64) (int64, bool) {
	i := sort.Search(len(m.Runs), func(i int) bool { return m.Runs[i].Source+m.Runs[i].Count-1 >= o })
	if i == len(m.Runs) || o < m.Runs[i].Source {
		return 0, false
	}
	return m.Runs[i].Target + o - m.Runs[i].Source, true
}

// add records that source offset src landed at target offset tgt, extending
// the last run when both follow it.
func (m *PartitionMap) add(src, tgt int64) {
	if n := len(m.Runs); n > 0 {
		r := &m.Runs[n-1]
		if src == r.Source+r.Count && tgt == r.Target+r.Count {
			r.Count++
			return
		}
	}
	m.Runs = append(m.Runs, OffsetRun{Source: src, Target: tgt, Count: 1})
}

// addRun adds count consecutive records from source offset src at target
// offsets tgt.. (add for each of them, at once).
func (m *PartitionMap) addRun(src, tgt, count int64) {
	if n := len(m.Runs); n > 0 {
		r := &m.Runs[n-1]
		if src == r.Source+r.Count && tgt == r.Target+r.Count {
			r.Count += count
			return
		}
	}
	m.Runs = append(m.Runs, OffsetRun{Source: src, Target: tgt, Count: count})
}

// validate checks the map's internal consistency.
func (m *PartitionMap) validate() error {
	var prev *OffsetRun
	var n int64
	for i := range m.Runs {
		r := &m.Runs[i]
		if r.Source < m.SourceFrom || r.Source+r.Count-1 > m.SourceTo {
			return fmt.Errorf("%s/%d: run %v outside the source range %d..%d", m.SourceTopic, m.SourcePartition, *r, m.SourceFrom, m.SourceTo)
		}
		if prev != nil && (r.Source < prev.Source+prev.Count || r.Target < prev.Target+prev.Count) {
			return fmt.Errorf("%s/%d: runs %v and %v overlap or go backwards", m.SourceTopic, m.SourcePartition, *prev, *r)
		}
		if r.Target < m.TargetStart || r.Target+r.Count > m.TargetEnd {
			return fmt.Errorf("%s/%d: run %v outside the target range %d..%d", m.SourceTopic, m.SourcePartition, *r, m.TargetStart, m.TargetEnd)
		}
		n += r.Count
		prev = r
	}
	if n != m.Records {
		return fmt.Errorf("%s/%d: runs hold %d records, the map says %d", m.SourceTopic, m.SourcePartition, n, m.Records)
	}
	return nil
}

// Encode renders the map as JSON, one line (maps of compacted topics hold
// many runs).
func (m *OffsetMap) Encode() []byte {
	b, err := json.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("marshal of an offset map cannot fail: %v", err))
	}
	return append(b, '\n')
}

// DecodeOffsetMap decodes and validates an offset map, refusing unknown
// fields and versions.
func DecodeOffsetMap(b []byte) (*OffsetMap, error) {
	var m OffsetMap
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("decode offset map: %w", err)
	}
	if m.Format != offsetMapFormat {
		return nil, fmt.Errorf("decode offset map: format %q is not %q", m.Format, offsetMapFormat)
	}
	if m.FormatVersion != offsetMapVersion {
		return nil, fmt.Errorf("offset map has format version %d, this kbackup reads version %d (upgrade kbackup)", m.FormatVersion, offsetMapVersion)
	}
	for i := range m.Partitions {
		if err := m.Partitions[i].validate(); err != nil {
			return nil, fmt.Errorf("offset map: %w", err)
		}
	}
	return &m, nil
}

// ReadOffsetMapFile reads an offset map written with OffsetMapFile.
func ReadOffsetMapFile(path string) (*OffsetMap, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read offset map: %w", err)
	}
	m, err := DecodeOffsetMap(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// ReadOffsetMap reads the stored offset map of restore id.
func ReadOffsetMap(ctx context.Context, st store.Store, id string) (*OffsetMap, error) {
	key := offsetMapKey(id)
	b, err := store.Get(ctx, st, key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("no offset map for restore %q in %s (%s missing): %w", id, st, key, err)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	m, err := DecodeOffsetMap(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return m, nil
}

// writeFileAtomic writes b to path through a temporary file and a rename,
// so a reader never sees a partial map.
func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write offset map %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write offset map %s: %w", path, err)
	}
	return nil
}
