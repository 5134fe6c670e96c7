package target

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/manifest"
)

// BatchBytes is the size at which records are handed to the producer in
// one batch (about one archive block).
const BatchBytes = 1 << 20

// ErrRecordNotFound: the target no longer holds the offset (retention).
var ErrRecordNotFound = errors.New("record not found in the target")

// FetchRecord reads the record at offset off of topic/partition.
func (t *Cluster) FetchRecord(ctx context.Context, topic string, partition int32, off int64) (*kgo.Record, error) {
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
				return nil, fmt.Errorf("read target %s/%d offset %d: %w", topic, partition, off, ErrRecordNotFound)
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
				return nil, fmt.Errorf("read target %s/%d offset %d (next record is at %d): %w", topic, partition, off, found.Offset, ErrRecordNotFound)
			}
			return found, nil
		}
	}
}

// RecordHash identifies a record's content: key and value (null distinct
// from empty), headers in order, and the timestamp unless the target
// overrides timestamps (LogAppendTime).
func RecordHash(r *kgo.Record, withTimestamp bool) string {
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

// RecordSize is what a record counts in the bytes a restore or replay
// reports and bounds: key, value, headers and 16 bytes.
func RecordSize(r *manifest.Record) int64 {
	n := int64(len(r.Key) + len(r.Value) + 16)
	for _, h := range r.Headers {
		n += int64(len(h.Key) + len(h.Value))
	}
	return n
}

// ToKgo converts an archived record for producing: key, value, headers
// and timestamp exactly (nil stays nil: null, not empty).
func ToKgo(r *manifest.Record, topic string) *kgo.Record {
	kr := new(kgo.Record)
	FillKgo(kr, r, topic)
	return kr
}

// FillKgo sets kr to the archived record r (see ToKgo).
// A recycled kr keeps its header slice's capacity.
func FillKgo(kr *kgo.Record, r *manifest.Record, topic string) {
	hs := kr.Headers[:0]
	*kr = kgo.Record{Topic: topic, Key: r.Key, Value: r.Value, Timestamp: time.UnixMilli(r.Timestamp)}
	if len(r.Headers) > 0 {
		if cap(hs) < len(r.Headers) {
			hs = make([]kgo.RecordHeader, 0, len(r.Headers))
		}
		for _, h := range r.Headers {
			hs = append(hs, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		kr.Headers = hs
	}
}
