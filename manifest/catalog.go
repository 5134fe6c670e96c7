package manifest

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/kbackup/kbackup/store"
)

// TopicsCapture is a catalog capture of the cluster's topics:
// catalog/topics/<inv-ms>.json.
type TopicsCapture struct {
	FormatVersion int            `json:"format_version"`
	CapturedMs    int64          `json:"captured_ms"`
	ClusterID     string         `json:"cluster_id"`
	Topics        []TopicCatalog `json:"topics"`
}

// TopicCatalog is one topic in a TopicsCapture.
type TopicCatalog struct {
	Name              string `json:"name"`
	TopicID           string `json:"topic_id"` // 32 hex digits
	Partitions        int32  `json:"partitions"`
	ReplicationFactor int16  `json:"replication_factor"`
	// Configs holds the topic-level configs that are set explicitly on the
	// topic (DYNAMIC_TOPIC_CONFIG), which is what a restore re-creates.
	Configs map[string]string `json:"configs"`
}

// GroupsCapture is a catalog capture of consumer-group committed offsets:
// catalog/groups/<inv-ms>.json.
type GroupsCapture struct {
	FormatVersion int            `json:"format_version"`
	CapturedMs    int64          `json:"captured_ms"`
	ClusterID     string         `json:"cluster_id"`
	Groups        []GroupCatalog `json:"groups"`
}

// GroupCatalog is one group's committed offsets.
type GroupCatalog struct {
	Group   string        `json:"group"`
	State   string        `json:"state"`
	Offsets []GroupOffset `json:"offsets"`
}

// GroupOffset is one committed offset.
type GroupOffset struct {
	Topic       string  `json:"topic"`
	Partition   int32   `json:"partition"`
	Offset      int64   `json:"offset"`
	LeaderEpoch int32   `json:"leader_epoch"` // -1 unknown
	Metadata    *string `json:"metadata"`
}

// DecodeTopicsCapture decodes and validates a topics capture.
func DecodeTopicsCapture(b []byte) (*TopicsCapture, error) {
	var c TopicsCapture
	if err := decodeJSON("topics capture", b, &c, func() int { return c.FormatVersion }); err != nil {
		return nil, err
	}
	for _, t := range c.Topics {
		if err := ValidTopic(t.Name); err != nil {
			return nil, corruptf("topics capture: %v", err)
		}
		if _, err := ParseTopicID(t.TopicID); err != nil {
			return nil, corruptf("topics capture: %v", err)
		}
		if t.Partitions < 1 {
			return nil, corruptf("topics capture: topic %s has %d partitions", t.Name, t.Partitions)
		}
	}
	return &c, nil
}

// DecodeGroupsCapture decodes and validates a groups capture.
func DecodeGroupsCapture(b []byte) (*GroupsCapture, error) {
	var c GroupsCapture
	if err := decodeJSON("groups capture", b, &c, func() int { return c.FormatVersion }); err != nil {
		return nil, err
	}
	for _, g := range c.Groups {
		for _, o := range g.Offsets {
			if err := ValidTopic(o.Topic); err != nil || o.Partition < 0 || o.Offset < -1 {
				return nil, corruptf("groups capture: group %q offset %s/%d=%d invalid", g.Group, o.Topic, o.Partition, o.Offset)
			}
		}
	}
	return &c, nil
}

// PutCatalog stores a capture (a *TopicsCapture or *GroupsCapture) under
// its capture time. A capture already stored at the same millisecond is
// left as is (two archivers capturing at once).
func (a *Archive) PutCatalog(ctx context.Context, capture any) error {
	var kind string
	var ms int64
	switch c := capture.(type) {
	case *TopicsCapture:
		c.FormatVersion, kind, ms = objectVersion, CatalogTopics, c.CapturedMs
	case *GroupsCapture:
		c.FormatVersion, kind, ms = objectVersion, CatalogGroups, c.CapturedMs
	default:
		return fmt.Errorf("put catalog: unsupported capture type %T", capture)
	}
	if ms < 0 {
		return fmt.Errorf("put catalog: capture time %d before 1970", ms)
	}
	body := encodeJSON(capture)
	key := CatalogKey(kind, ms)
	err := a.st.Put(ctx, key, bytes.NewReader(body), int64(len(body)), store.PutOptions{IfNotExists: true})
	if err != nil && !errors.Is(err, store.ErrExists) {
		return fmt.Errorf("write %s: %w", key, err)
	}
	return nil
}

// catalogAtOrBefore returns the key and body of the newest capture of kind
// taken at or before ms (one LIST, one GET); ErrNotFound if none.
func (a *Archive) catalogAtOrBefore(ctx context.Context, kind string, ms int64) (string, []byte, error) {
	prefix := "catalog/" + kind + "/"
	marker := ""
	if ms < 0 {
		return "", nil, fmt.Errorf("no %s capture before %d: %w", kind, ms, store.ErrNotFound)
	}
	if Invert(ms) > 0 {
		marker = CatalogKey(kind, ms+1)
	}
	var key string
	err := a.st.List(ctx, store.ListOptions{Prefix: prefix, StartAfter: marker, Limit: 1}, func(e store.ListEntry) error {
		key = e.Key
		return nil
	})
	if err != nil {
		return "", nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	if key == "" {
		return "", nil, fmt.Errorf("no %s capture at or before %d: %w", kind, ms, store.ErrNotFound)
	}
	b, err := store.Get(ctx, a.st, key)
	if err != nil {
		return "", nil, fmt.Errorf("read %s: %w", key, err)
	}
	return key, b, nil
}

// TopicsAt returns the newest topics capture taken at or before ms.
func (a *Archive) TopicsAt(ctx context.Context, ms int64) (*TopicsCapture, error) {
	key, b, err := a.catalogAtOrBefore(ctx, CatalogTopics, ms)
	if err != nil {
		return nil, err
	}
	c, err := DecodeTopicsCapture(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return c, nil
}

// GroupsAt returns the newest groups capture taken at or before ms.
func (a *Archive) GroupsAt(ctx context.Context, ms int64) (*GroupsCapture, error) {
	key, b, err := a.catalogAtOrBefore(ctx, CatalogGroups, ms)
	if err != nil {
		return nil, err
	}
	c, err := DecodeGroupsCapture(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return c, nil
}
