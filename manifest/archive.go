package manifest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/kbackup/kbackup/store"
)

// ErrNoArchive: the store holds no kbackup archive (no root marker).
var ErrNoArchive = errors.New("no kbackup archive")

// ErrNoIncarnation: the archive holds no incarnation of a topic.
var ErrNoIncarnation = errors.New("no incarnation archived")

// Root is the archive root marker, kbackup.json.
type Root struct {
	Format        string `json:"format"` // always "kbackup-archive"
	FormatVersion int    `json:"format_version"`
	CreatedMs     int64  `json:"created_ms"`
	CreatedBy     string `json:"created_by"`
}

const rootFormat = "kbackup-archive"

// TopicMarker is an incarnation marker: topics/<topic>/<id>/topic.json.
type TopicMarker struct {
	FormatVersion int     `json:"format_version"`
	Topic         string  `json:"topic"`
	TopicID       TopicID `json:"-"`
	TopicIDHex    string  `json:"topic_id"`
	FirstSeenMs   int64   `json:"first_seen_ms"`
}

// jsonVersions are the format versions a JSON object may have.
type jsonVersions struct{ min, max int }

// v1Objects: the JSON objects of version 1 (topic markers, catalog
// captures) keep version 1 in format version 2.
var v1Objects = jsonVersions{objectVersion, objectVersion}

func (v jsonVersions) accepts(n int) bool { return n >= v.min && n <= v.max }

func (v jsonVersions) String() string {
	if v.min == v.max {
		return fmt.Sprintf("version %d", v.min)
	}
	return fmt.Sprintf("versions %d to %d", v.min, v.max)
}

// decodeJSON decodes a JSON object strictly (unknown fields rejected) and
// checks its format_version against the versions of decodeJSONVersions.
func decodeJSON(what string, b []byte, v any, version func() int) error {
	return decodeJSONVersions(what, b, v, version, v1Objects)
}

// decodeJSONVersions is decodeJSON for an object of the given versions.
func decodeJSONVersions(what string, b []byte, v any, version func() int, want jsonVersions) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		// An unknown version may add fields: report the version first.
		var probe struct {
			FormatVersion int `json:"format_version"`
		}
		if json.Unmarshal(b, &probe) == nil && !want.accepts(probe.FormatVersion) && probe.FormatVersion != 0 {
			return versionErr(what, probe.FormatVersion, want.String())
		}
		return corruptf("%s: %v", what, err)
	}
	if dec.More() {
		return corruptf("%s: trailing data", what)
	}
	if v := version(); !want.accepts(v) {
		return versionErr(what, v, want.String())
	}
	return nil
}

// rootVersions are the archive format versions this package reads.
var rootVersions = jsonVersions{MinFormatVersion, FormatVersion}

// DecodeRoot decodes kbackup.json (format version 1 or 2).
func DecodeRoot(b []byte) (*Root, error) {
	var r Root
	if err := decodeJSONVersions("archive root kbackup.json", b, &r, func() int { return r.FormatVersion }, rootVersions); err != nil {
		return nil, err
	}
	if r.Format != rootFormat {
		return nil, corruptf("kbackup.json: format %q is not %q", r.Format, rootFormat)
	}
	return &r, nil
}

// DecodeTopicMarker decodes a topic.json incarnation marker.
func DecodeTopicMarker(b []byte) (*TopicMarker, error) {
	var m TopicMarker
	if err := decodeJSON("topic marker", b, &m, func() int { return m.FormatVersion }); err != nil {
		return nil, err
	}
	id, err := ParseTopicID(m.TopicIDHex)
	if err != nil {
		return nil, corruptf("topic marker: %v", err)
	}
	if err := ValidTopic(m.Topic); err != nil {
		return nil, corruptf("topic marker: %v", err)
	}
	m.TopicID = id
	return &m, nil
}

func encodeJSON(v any) []byte {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(fmt.Sprintf("marshal of a format struct cannot fail: %v", err))
	}
	return append(b, '\n')
}

// Archive reads and writes one archive in a store.
type Archive struct {
	st store.Store

	rootMu   sync.Mutex
	root     Root // as read by Open (FormatVersion raised by UpgradeRoot)
	writable bool // ProbeConditionalCreate passed (Init, ensureWritable)
	wal      walCache
}

// ensureWritable runs the conditional-create probe once before the first
// write of an archive opened with Open (Init probed already).
func (a *Archive) ensureWritable(ctx context.Context) error {
	a.rootMu.Lock()
	defer a.rootMu.Unlock()
	if a.writable {
		return nil
	}
	if err := ProbeConditionalCreate(ctx, a.st); err != nil {
		return err
	}
	a.writable = true
	return nil
}

// FormatVersion is the archive's format version as its root marker said
// when it was opened, or after UpgradeRoot.
func (a *Archive) FormatVersion() int {
	a.rootMu.Lock()
	defer a.rootMu.Unlock()
	return a.root.FormatVersion
}

// UpgradeRoot raises the archive's root marker to FormatVersion (2), the
// single documented exception to "objects are never modified"
// (docs/FORMAT.md §4.1): a version-1 reader then refuses the archive instead
// of misreading it (it would not know archive-start markers). Writers call
// it before creating the first archive-start marker; it is idempotent (the
// marker keeps its creation time and program), and two writers upgrading at
// once write the same version. A writer MUST have run
// ProbeConditionalCreate on the store first. No archiver of version 1 may
// be running when an archive is upgraded (docs/OPERATIONS.md, "Retention").
func (a *Archive) UpgradeRoot(ctx context.Context) error {
	return a.UpgradeRootTo(ctx, ExpiryFormatVersion)
}

// UpgradeRootTo is UpgradeRoot to version v: ExpiryFormatVersion before
// the first archive-start marker, PackedFormatVersion before the first
// claim. The root marker never goes down.
func (a *Archive) UpgradeRootTo(ctx context.Context, v int) error {
	a.rootMu.Lock()
	defer a.rootMu.Unlock()
	if a.root.FormatVersion >= v {
		return nil
	}
	// Read it again: another writer may have upgraded it since Open.
	b, err := store.Get(ctx, a.st, RootKey)
	if err != nil {
		return fmt.Errorf("read %s: %w", RootKey, err)
	}
	r, err := DecodeRoot(b)
	if err != nil {
		return fmt.Errorf("%s: %w", RootKey, err)
	}
	if r.FormatVersion < v {
		r.FormatVersion = v
		body := encodeJSON(r)
		if err := a.st.Put(ctx, RootKey, bytes.NewReader(body), int64(len(body)), store.PutOptions{}); err != nil {
			return fmt.Errorf("upgrade %s to format version %d: %w", RootKey, v, err)
		}
	}
	a.root = *r
	return nil
}

// Store is the underlying store.
func (a *Archive) Store() store.Store { return a.st }

// Open opens the archive in st, refusing a store without a root marker or
// with a format version this kbackup does not read.
func Open(ctx context.Context, st store.Store) (*Archive, error) {
	b, err := store.Get(ctx, st, RootKey)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w at %s (no %s: wrong --store, or nothing archived yet)", ErrNoArchive, st, RootKey)
	}
	if err != nil {
		return nil, fmt.Errorf("open archive at %s: %w", st, err)
	}
	r, err := DecodeRoot(b)
	if err != nil {
		return nil, fmt.Errorf("open archive at %s: %w", st, err)
	}
	return &Archive{st: st, root: *r}, nil
}

// Init opens the archive in st for writing, creating its root marker if
// the store holds none. It first checks that st honours conditional creates
// (ProbeConditionalCreate) and refuses a store that does not: the format's
// fencing depends on them. createdBy names the writing program version.
func Init(ctx context.Context, st store.Store, createdBy string, nowMs int64) (*Archive, error) {
	if err := ProbeConditionalCreate(ctx, st); err != nil {
		return nil, err
	}
	// A new archive is version 1 until its first archive-start marker
	// (UpgradeRoot): version-1 readers read it as long as nothing expired.
	body := encodeJSON(Root{Format: rootFormat, FormatVersion: MinFormatVersion, CreatedMs: nowMs, CreatedBy: createdBy})
	err := st.Put(ctx, RootKey, bytes.NewReader(body), int64(len(body)), store.PutOptions{IfNotExists: true})
	if err != nil && !errors.Is(err, store.ErrExists) {
		return nil, fmt.Errorf("create archive at %s: %w", st, err)
	}
	a, err := Open(ctx, st)
	if err != nil {
		return nil, err
	}
	a.writable = true
	return a, nil
}

// EnsureTopic writes the incarnation marker of topic/id if absent.
func (a *Archive) EnsureTopic(ctx context.Context, topic string, id TopicID, nowMs int64) error {
	if err := ValidTopic(topic); err != nil {
		return err
	}
	body := encodeJSON(TopicMarker{FormatVersion: objectVersion, Topic: topic, TopicIDHex: id.String(), FirstSeenMs: nowMs})
	err := a.st.Put(ctx, TopicMarkerKey(topic, id), bytes.NewReader(body), int64(len(body)), store.PutOptions{IfNotExists: true})
	if err != nil && !errors.Is(err, store.ErrExists) {
		return fmt.Errorf("write topic marker for %s: %w", topic, err)
	}
	return nil
}

// listPrefixes lists the common prefixes directly under prefix.
func (a *Archive) listPrefixes(ctx context.Context, prefix string) ([]string, error) {
	var out []string
	err := a.st.List(ctx, store.ListOptions{Prefix: prefix, Delimiter: "/"}, func(e store.ListEntry) error {
		if e.IsPrefix {
			out = append(out, strings.TrimSuffix(strings.TrimPrefix(e.Key, prefix), "/"))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s in %s: %w", prefix, a.st, err)
	}
	return out, nil
}

// Topics lists the archived topic names in byte order.
func (a *Archive) Topics(ctx context.Context) ([]string, error) {
	names, err := a.listPrefixes(ctx, TopicsPrefix)
	if err != nil {
		return nil, err
	}
	out := names[:0]
	for _, n := range names {
		if ValidTopic(n) == nil {
			out = append(out, n)
		}
	}
	return out, nil
}

// Incarnations lists the archived incarnations of topic, oldest first (by
// the time the archive first saw them). The last one is the current topic.
func (a *Archive) Incarnations(ctx context.Context, topic string) ([]*TopicMarker, error) {
	if err := ValidTopic(topic); err != nil {
		return nil, err
	}
	ids, err := a.listPrefixes(ctx, TopicPrefix(topic))
	if err != nil {
		return nil, err
	}
	var out []*TopicMarker
	for _, s := range ids {
		id, err := ParseTopicID(s)
		if err != nil {
			continue // not ours; verify reports stray objects
		}
		key := TopicMarkerKey(topic, id)
		b, err := store.Get(ctx, a.st, key)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", key, err)
		}
		m, err := DecodeTopicMarker(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		if m.Topic != topic || m.TopicID != id {
			return nil, fmt.Errorf("%s: %w", key, corruptf("marker names %s/%s", m.Topic, m.TopicIDHex))
		}
		out = append(out, m)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].FirstSeenMs < out[j].FirstSeenMs })
	return out, nil
}

// CurrentIncarnation returns the current incarnation of topic: the one the
// archive saw last. Its error wraps ErrNoIncarnation when there is none.
func (a *Archive) CurrentIncarnation(ctx context.Context, topic string) (*TopicMarker, error) {
	incs, err := a.Incarnations(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("topic %s: %w", topic, err)
	}
	if len(incs) == 0 {
		return nil, fmt.Errorf("topic %s: %w", topic, ErrNoIncarnation)
	}
	return incs[len(incs)-1], nil
}

// SelectPartitions returns, in ascending order, the archived partitions of
// a topic incarnation that are in want (every archived one when want is
// nil). A partition in want that is not archived is an error naming it.
func (a *Archive) SelectPartitions(ctx context.Context, topic string, id TopicID, want []int32) ([]int32, error) {
	parts, err := a.Partitions(ctx, topic, id)
	if err != nil {
		return nil, fmt.Errorf("topic %s: %w", topic, err)
	}
	slices.Sort(parts)
	for _, p := range want {
		if !slices.Contains(parts, p) {
			return nil, fmt.Errorf("topic %s has no archived partition %d (archived: %v)", topic, p, parts)
		}
	}
	if want == nil {
		return parts, nil
	}
	out := parts[:0]
	for _, p := range parts {
		if slices.Contains(want, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// Partitions lists the archived partition numbers of a topic incarnation.
func (a *Archive) Partitions(ctx context.Context, topic string, id TopicID) ([]int32, error) {
	names, err := a.listPrefixes(ctx, IncarnationPrefix(topic, id))
	if err != nil {
		return nil, err
	}
	var out []int32
	for _, n := range names {
		if v, ok := parseDec(n, 10); ok && v <= 1<<31-1 {
			out = append(out, int32(v))
		}
	}
	return out, nil
}

// Partition returns the log of one partition.
func (a *Archive) Partition(topic string, id TopicID, partition int32) *PartitionLog {
	return &PartitionLog{st: a.st, arch: a, Topic: topic, TopicID: id, Partition: partition,
		prefix: PartitionPrefix(topic, id, partition)}
}
