package restore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"

	"github.com/kbackup/kbackup/internal/jsonobj"
	"github.com/kbackup/kbackup/internal/lease"
	"github.com/kbackup/kbackup/store"
)

// The restore's objects in the state store (docs/FORMAT.md, "Restores and
// offset maps"):
//
//	restores/<id>/manifest.json                         the plan, written once before any record
//	restores/<id>/checkpoints/<topic>/<lane>.json       one per lane, overwritten as it progresses
//	restores/<id>/offset-map.json                       the offset map, rewritten at the end of every run
const (
	stateVersion     = 1
	restoreFormat    = "kbackup-restore"
	checkpointFormat = "kbackup-restore-checkpoint"
)

func manifestKey(id string) string  { return lease.Dir(id) + "manifest.json" }
func offsetMapKey(id string) string { return lease.Dir(id) + "offset-map.json" }
func checkpointKey(id, lane string) string {
	return lease.Dir(id) + "checkpoints/" + lane + ".json"
}

// laneName names a lane: "<topic>/<10-digit partition>", or "<topic>/all"
// for a repartitioning lane.
func laneName(topic string, partition int32) string {
	if partition < 0 {
		return topic + "/all"
	}
	return fmt.Sprintf("%s/%010d", topic, partition)
}

// restoreManifest is restores/<id>/manifest.json: the resolved plan, so a
// rerun restores exactly the same offsets even if the archive grew since.
type restoreManifest struct {
	Format          string         `json:"format"`
	FormatVersion   int            `json:"format_version"`
	RestoreID       string         `json:"restore_id"`
	CreatedMs       int64          `json:"created_ms"`
	CreatedBy       string         `json:"created_by"`
	TargetClusterID string         `json:"target_cluster_id"`
	CatalogMs       int64          `json:"catalog_ms"`
	Request         string         `json:"request"`
	Lanes           []manifestLane `json:"lanes"`
}

type manifestLane struct {
	Lane        string           `json:"lane"`
	TargetTopic string           `json:"target_topic"`
	Sources     []manifestSource `json:"sources"`
}

type manifestSource struct {
	Topic     string `json:"topic"`
	TopicID   string `json:"topic_id"`
	Partition int32  `json:"partition"`
	From      int64  `json:"from"`
	To        int64  `json:"to"`
}

// targetState is a lane's progress in one target partition.
type targetState struct {
	Partition int32 `json:"partition"`
	// Base is the partition's end offset when the lane first wrote to it.
	Base int64 `json:"base"`
	// End is the offset after the last record of the acknowledged prefix.
	End int64 `json:"end"`
	// LastHash identifies the record at End-1 (recordHash), "" when End ==
	// Base.
	LastHash string `json:"last_hash"`
}

// checkpoint is restores/<id>/checkpoints/<lane>.json: every selected
// source record up to (SourceIndex, SourceOffset) in lane order is in the
// target, and the target partitions end at Targets[*].End after them.
type checkpoint struct {
	Format        string `json:"format"`
	FormatVersion int    `json:"format_version"`
	RestoreID     string `json:"restore_id"`
	Lane          string `json:"lane"`
	Done          bool   `json:"done"`
	// SourceIndex is the lane's source partition (index into the lane's
	// sources) holding the last acknowledged record; SourceOffset its
	// offset, -1 before any.
	SourceIndex  int           `json:"source_index"`
	SourceOffset int64         `json:"source_offset"`
	Records      int64         `json:"records"`
	Bytes        int64         `json:"bytes"`
	Targets      []targetState `json:"targets"`
	// Maps holds the offset map so far, one per source (none with
	// Repartition).
	Maps []PartitionMap `json:"maps"`
}

func loadManifest(ctx context.Context, st store.Store, id string) (*restoreManifest, error) {
	var m restoreManifest
	found, err := jsonobj.Get(ctx, st, manifestKey(id), &m)
	if err != nil || !found {
		return nil, err
	}
	if m.Format != restoreFormat || m.FormatVersion != stateVersion {
		return nil, fmt.Errorf("%s: format %q version %d, this kbackup reads %q version %d (upgrade kbackup)",
			manifestKey(id), m.Format, m.FormatVersion, restoreFormat, stateVersion)
	}
	return &m, nil
}

func loadCheckpoint(ctx context.Context, st store.Store, id, lane string) (*checkpoint, error) {
	var c checkpoint
	found, err := jsonobj.Get(ctx, st, checkpointKey(id, lane), &c)
	if err != nil || !found {
		return nil, err
	}
	if c.Format != checkpointFormat || c.FormatVersion != stateVersion {
		return nil, fmt.Errorf("%s: format %q version %d, this kbackup reads %q version %d (upgrade kbackup)",
			checkpointKey(id, lane), c.Format, c.FormatVersion, checkpointFormat, stateVersion)
	}
	if c.Lane != lane || c.RestoreID != id {
		return nil, fmt.Errorf("%s: names lane %s of restore %s", checkpointKey(id, lane), c.Lane, c.RestoreID)
	}
	return &c, nil
}

// deriveID hashes what makes two restores the same: the target cluster and
// the request (selection, bounds, renames, mode). Running the same command
// again yields the same id and so resumes.
func deriveID(clusterID string, request string) string {
	h := sha256.New()
	h.Write([]byte(clusterID))
	h.Write([]byte{0})
	h.Write([]byte(request))
	return "r-" + hex.EncodeToString(h.Sum(nil)[:8])
}

// requestString renders the options that define a restore canonically.
func (o *Options) requestString() string {
	var b bytes.Buffer
	// Topics.Key is the anchored expression itself for one --topics and
	// no --exclude: the ids of restores of earlier versions stay the same.
	fmt.Fprintf(&b, "topics=%q;partitions=", o.Topics.Key())
	ps := append([]int32(nil), o.Partitions...)
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	fmt.Fprintf(&b, "%v;range=%s;", ps, o.Range)
	var renames []string
	for k, v := range o.Rename {
		renames = append(renames, k+"="+v)
	}
	sort.Strings(renames)
	fmt.Fprintf(&b, "rename=%q;append=%t;repartition=%t", renames, o.Append, o.Repartition)
	return b.String()
}
