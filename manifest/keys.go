package manifest

import (
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Key layout (docs/FORMAT.md, "Key layout"):
//
//	kbackup.json                                  archive root marker
//	topics/<topic>/<topic-id>/topic.json          topic incarnation marker
//	topics/<topic>/<topic-id>/<partition>/commits/<inv-start>       commit entries
//	topics/<topic>/<topic-id>/<partition>/time/<biased-ts>-<start>   time index
//	topics/<topic>/<topic-id>/<partition>/segments/<start>-<end>-<nonce>.kseg
//	topics/<topic>/<topic-id>/<partition>/start/<inv-start>       archive-start markers (format version 2)
//	catalog/topics/<inv-ms>.json                  topic/config captures
//	catalog/groups/<inv-ms>.json                  consumer-group offset captures
//
// <partition> is 10 decimal digits, offsets and <inv-*> 19 digits, <biased-ts>
// 20 digits, all zero-padded so that byte order equals numeric order.

// RootKey is the archive root marker.
const RootKey = "kbackup.json"

// TopicsPrefix holds every topic's data.
const TopicsPrefix = "topics/"

// TopicID is Kafka's 16-byte topic id; it tells apart two topics that had
// the same name at different times.
type TopicID [16]byte

// String is the 32-character lowercase hex form used in keys.
func (id TopicID) String() string { return hex.EncodeToString(id[:]) }

// ParseTopicID parses the 32-character hex form.
func ParseTopicID(s string) (TopicID, error) {
	var id TopicID
	if len(s) != 32 || strings.ToLower(s) != s {
		return id, fmt.Errorf("topic id %q: want 32 lowercase hex digits", s)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("topic id %q: %w", s, err)
	}
	return id, nil
}

// ValidTopic reports whether name is a legal Kafka topic name, which is
// also what makes it safe to use in a key as is.
func ValidTopic(name string) error {
	if name == "" || len(name) > 249 || name == "." || name == ".." {
		return fmt.Errorf("invalid topic name %q", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("invalid topic name %q: character %q", name, c)
		}
	}
	return nil
}

// Invert maps v in [0, MaxInt64] to MaxInt64-v, so that ascending key order
// is descending v order: S3 lists keys only ascending, and "the greatest
// start <= X" becomes the first key after a start-after marker.
func Invert(v int64) int64 { return math.MaxInt64 - v }

// BiasTimestamp maps a signed millisecond timestamp onto an unsigned value
// with the same order (ts + 2^63), for fixed-width time keys.
func BiasTimestamp(ts int64) uint64 { return uint64(ts) ^ (1 << 63) }

func dec19(v int64) string  { return fmt.Sprintf("%019d", v) }
func dec20(v uint64) string { return fmt.Sprintf("%020d", v) }

// TopicPrefix is "topics/<topic>/".
func TopicPrefix(topic string) string { return TopicsPrefix + topic + "/" }

// IncarnationPrefix is "topics/<topic>/<id>/".
func IncarnationPrefix(topic string, id TopicID) string {
	return TopicPrefix(topic) + id.String() + "/"
}

// TopicMarkerKey is the incarnation marker "topics/<topic>/<id>/topic.json".
func TopicMarkerKey(topic string, id TopicID) string {
	return IncarnationPrefix(topic, id) + "topic.json"
}

// PartitionPrefix is "topics/<topic>/<id>/<partition>/".
func PartitionPrefix(topic string, id TopicID, partition int32) string {
	return fmt.Sprintf("%s%010d/", IncarnationPrefix(topic, id), partition)
}

// CommitKey is the key of the commit entry whose covered range starts at start.
func CommitKey(partPrefix string, start int64) string {
	return partPrefix + "commits/" + dec19(Invert(start))
}

// TimeKey is the time-index key for a commit starting at start whose
// partition-wide running maximum timestamp is runMax.
func TimeKey(partPrefix string, runMax, start int64) string {
	return partPrefix + "time/" + dec20(BiasTimestamp(runMax)) + "-" + dec19(start)
}

// SegmentKey names a segment covering [start, end], written by the writer
// whose per-segment random nonce (16 hex digits) makes the key unique.
func SegmentKey(partPrefix string, start, end int64, nonce string) string {
	return partPrefix + "segments/" + dec19(start) + "-" + dec19(end) + "-" + nonce + ".kseg"
}

// StartKey is the key of the archive-start marker whose start is start:
// "start/<inv-start>", so that the newest marker (the largest start) is the
// first key a LIST of start/ returns.
func StartKey(partPrefix string, start int64) string {
	return partPrefix + "start/" + dec19(Invert(start))
}

// Catalog capture kinds.
const (
	CatalogTopics = "topics"
	CatalogGroups = "groups"
)

// CatalogKey is "catalog/<kind>/<inv-ms>.json" for a capture taken at ms.
func CatalogKey(kind string, ms int64) string {
	return "catalog/" + kind + "/" + dec19(Invert(ms)) + ".json"
}

// KeyKind classifies a parsed key.
type KeyKind int

// Kinds of archive keys.
const (
	KeyRoot KeyKind = iota + 1
	KeyTopicMarker
	KeyCommit
	KeyTime
	KeySegment
	KeyCatalog
	// KeyStart is an archive-start marker (format version 2).
	KeyStart
	// KeyClaim is a partition's ownership claim (format version 3).
	KeyClaim
	// KeyFlush is a writer's flush object (format version 3).
	KeyFlush
	// KeyTailIndex is a writer's tail index (format version 3).
	KeyTailIndex
)

// Key is a parsed archive key. Fields not used by its Kind are zero.
type Key struct {
	Kind      KeyKind
	Topic     string
	TopicID   TopicID
	Partition int32
	Start     int64  // commit, time, segment, archive start
	End       int64  // segment
	Nonce     string // segment
	RunMax    int64  // time
	Catalog   string // catalog kind
	Time      int64  // catalog capture time (ms)
	Epoch     int64  // claim
	Writer    string // flush object, tail index
	Seq       int64  // flush object, tail index
}

// String re-encodes the key; ParseKey(k.String()) == k for every parsed k.
func (k Key) String() string {
	switch k.Kind {
	case KeyRoot:
		return RootKey
	case KeyTopicMarker:
		return TopicMarkerKey(k.Topic, k.TopicID)
	case KeyCommit:
		return CommitKey(PartitionPrefix(k.Topic, k.TopicID, k.Partition), k.Start)
	case KeyTime:
		return TimeKey(PartitionPrefix(k.Topic, k.TopicID, k.Partition), k.RunMax, k.Start)
	case KeySegment:
		return SegmentKey(PartitionPrefix(k.Topic, k.TopicID, k.Partition), k.Start, k.End, k.Nonce)
	case KeyCatalog:
		return CatalogKey(k.Catalog, k.Time)
	case KeyStart:
		return StartKey(PartitionPrefix(k.Topic, k.TopicID, k.Partition), k.Start)
	case KeyClaim:
		return ClaimKey(PartitionPrefix(k.Topic, k.TopicID, k.Partition), k.Epoch)
	case KeyFlush:
		return FlushKey(k.Writer, k.Seq)
	case KeyTailIndex:
		return TailIndexKey(k.Writer, k.Seq)
	}
	return ""
}

// parseDec parses exactly n decimal digits.
func parseDec(s string, n int) (uint64, bool) {
	if len(s) != n {
		return 0, false
	}
	for i := 0; i < n; i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	return v, err == nil
}

func parseOffset19(s string) (int64, bool) {
	v, ok := parseDec(s, 19)
	if !ok || v > math.MaxInt64 {
		return 0, false
	}
	return int64(v), true
}

func isNonce(s string) bool {
	if len(s) != 16 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !(s[i] >= '0' && s[i] <= '9' || s[i] >= 'a' && s[i] <= 'f') {
			return false
		}
	}
	return true
}

// ParseKey parses any key of the layout. It rejects everything else, so a
// stray object in the store is reported rather than misread.
func ParseKey(key string) (Key, error) {
	bad := func(why string) (Key, error) { return Key{}, fmt.Errorf("key %q: %s", key, why) }
	if key == RootKey {
		return Key{Kind: KeyRoot}, nil
	}
	parts := strings.Split(key, "/")
	if parts[0] == "catalog" {
		if len(parts) != 3 || (parts[1] != CatalogTopics && parts[1] != CatalogGroups) {
			return bad("not a catalog key")
		}
		inv, ok := parseOffset19(strings.TrimSuffix(parts[2], ".json"))
		if !ok || !strings.HasSuffix(parts[2], ".json") {
			return bad("bad catalog capture name")
		}
		return Key{Kind: KeyCatalog, Catalog: parts[1], Time: Invert(inv)}, nil
	}
	if parts[0]+"/" == WALPrefix {
		return parseWALKey(key, parts)
	}
	if parts[0] != "topics" || len(parts) < 4 {
		return bad("not a kbackup archive key")
	}
	if err := ValidTopic(parts[1]); err != nil {
		return bad(err.Error())
	}
	id, err := ParseTopicID(parts[2])
	if err != nil {
		return bad(err.Error())
	}
	k := Key{Topic: parts[1], TopicID: id}
	if len(parts) == 4 {
		if parts[3] != "topic.json" {
			return bad("unknown topic object")
		}
		k.Kind = KeyTopicMarker
		return k, nil
	}
	if len(parts) != 6 {
		return bad("wrong depth")
	}
	p, ok := parseDec(parts[3], 10)
	if !ok || p > math.MaxInt32 {
		return bad("bad partition number")
	}
	k.Partition = int32(p)
	name := parts[5]
	switch parts[4] {
	case "commits":
		inv, ok := parseOffset19(name)
		if !ok {
			return bad("bad commit name")
		}
		k.Kind, k.Start = KeyCommit, Invert(inv)
	case "claims":
		inv, ok := parseOffset19(name)
		if !ok || Invert(inv) < 1 {
			return bad("bad claim name")
		}
		k.Kind, k.Epoch = KeyClaim, Invert(inv)
	case "start":
		inv, ok := parseOffset19(name)
		if !ok {
			return bad("bad archive start name")
		}
		k.Kind, k.Start = KeyStart, Invert(inv)
	case "time":
		ts, ok1 := parseDec(name[:min(20, len(name))], 20)
		start, ok2 := parseOffset19(strings.TrimPrefix(name[min(20, len(name)):], "-"))
		if !ok1 || !ok2 || len(name) != 40 || name[20] != '-' {
			return bad("bad time index name")
		}
		k.Kind, k.RunMax, k.Start = KeyTime, int64(ts^(1<<63)), start
	case "segments":
		f := strings.Split(strings.TrimSuffix(name, ".kseg"), "-")
		if !strings.HasSuffix(name, ".kseg") || len(f) != 3 {
			return bad("bad segment name")
		}
		start, ok1 := parseOffset19(f[0])
		end, ok2 := parseOffset19(f[1])
		if !ok1 || !ok2 || !isNonce(f[2]) || end < start-1 {
			return bad("bad segment name")
		}
		k.Kind, k.Start, k.End, k.Nonce = KeySegment, start, end, f[2]
	default:
		return bad("unknown partition object")
	}
	return k, nil
}

// parseWALKey parses wal/<writer>/<inv-seq>.kwal and
// wal/<writer>/tail/<inv-seq>.ktix.
func parseWALKey(key string, parts []string) (Key, error) {
	bad := func(why string) (Key, error) { return Key{}, fmt.Errorf("key %q: %s", key, why) }
	if len(parts) < 3 || !ValidWriterID(parts[1]) {
		return bad("bad writer id")
	}
	k := Key{Writer: parts[1]}
	name, suffix := parts[2], ".kwal"
	k.Kind = KeyFlush
	if len(parts) == 4 && parts[2] == "tail" {
		name, suffix, k.Kind = parts[3], ".ktix", KeyTailIndex
	} else if len(parts) != 3 {
		return bad("wrong depth")
	}
	inv, ok := parseOffset19(strings.TrimSuffix(name, suffix))
	if !ok || !strings.HasSuffix(name, suffix) || inv == 0 {
		return bad("bad flush object or tail index name")
	}
	k.Seq = Invert(inv)
	return k, nil
}
