package manifest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/kbackup/kbackup/store"
)

// ErrExpired: the requested offsets or times lie below the partition's
// archive start (retention expired them). Errors wrapping it are
// *ExpiredError values naming the oldest recoverable offset and time.
var ErrExpired = errors.New("expired")

// startVersions: archive-start markers exist from format version 2 on.
var startVersions = jsonVersions{2, 2}

// ArchiveStart is an archive-start marker,
// topics/<topic>/<id>/<partition>/start/<inv-start> (docs/FORMAT.md §5.5):
// the partition's offsets below Start are expired, like Kafka's log start
// offset. Its creation (create-if-absent) is the commit point of an expiry;
// the newest marker (largest Start) counts. Start is always the start of a
// commit, at most the head commit's start.
type ArchiveStart struct {
	FormatVersion int   `json:"format_version"` // 2
	Start         int64 `json:"start"`
	// Reason says why: "retention-age" or "retention-bytes" when kbackup
	// wrote it; any [a-z0-9-]{1,64} is valid.
	Reason string `json:"reason"`
	// OldestTimestamp is the smallest record timestamp of the first commit
	// at or after Start that held records when the marker was created
	// (unix ms); nil if none did.
	OldestTimestamp *int64 `json:"oldest_timestamp"`
	// FirstRecordOffset is the offset of the first record at or after
	// Start when the marker was created; nil if there was none.
	FirstRecordOffset *int64 `json:"first_record_offset"`
	CreatedMs         int64  `json:"created_ms"` // writer's wall clock, unix ms
	Writer            string `json:"writer"`     // informational
	// Below are the cumulative totals of the commits below Start (those of
	// the commit ending at Start-1), so that readers report the recoverable
	// window without reading expired commits.
	Below StartTotals `json:"below"`
}

// StartTotals are the cumulative totals of the expired commits.
type StartTotals struct {
	// Commits is the number of expired commits: the sequence number of the
	// commit starting at Start.
	Commits int64 `json:"commits"`
	Records int64 `json:"records"`
	Bytes   int64 `json:"bytes"` // segment bytes
	// GapOffsets counts the expired gap offsets by reason.
	GapOffsets GapCounts `json:"gap_offsets"`
	// RunningMaxTimestamp is the largest record timestamp below Start (the
	// running maximum of the commit ending at Start-1); nil if there was no
	// record. Time seeks for timestamps up to it are expired.
	RunningMaxTimestamp *int64 `json:"running_max_timestamp"`
}

// GapCounts are gap offsets by reason, as JSON.
type GapCounts struct {
	Compacted   int64 `json:"compacted"`
	Transaction int64 `json:"transaction"`
	NotReturned int64 `json:"not_returned"`
	DataLoss    int64 `json:"data_loss"`
	BeforeStart int64 `json:"before_start"`
}

// GapCountsOf converts counters indexed by GapReason.
func GapCountsOf(g [NumGapReasons]int64) GapCounts {
	return GapCounts{Compacted: g[GapCompacted], Transaction: g[GapTransaction], NotReturned: g[GapNotReturned],
		DataLoss: g[GapDataLoss], BeforeStart: g[GapBeforeStart]}
}

// Array returns the counters indexed by GapReason (index 0 is 0).
func (g GapCounts) Array() [NumGapReasons]int64 {
	var a [NumGapReasons]int64
	a[GapCompacted], a[GapTransaction], a[GapNotReturned], a[GapDataLoss], a[GapBeforeStart] =
		g.Compacted, g.Transaction, g.NotReturned, g.DataLoss, g.BeforeStart
	return a
}

// validReason reports whether s is a valid marker reason, [a-z0-9-]{1,64}.
func validReason(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// validate checks what a marker must satisfy on its own: every offset
// below Start is a record or a gap, in at least one and at most Start
// commits.
func (s *ArchiveStart) validate() error {
	bad := func(format string, args ...any) error {
		return corruptf("archive start %d: %s", s.Start, fmt.Sprintf(format, args...))
	}
	b := &s.Below
	var gaps int64
	for _, v := range b.GapOffsets.Array() {
		if v < 0 || v > s.Start {
			return bad("gap counters invalid")
		}
		gaps += v
	}
	switch {
	case s.Start < 1 || s.Start == math.MaxInt64:
		return bad("start must be in 1..%d", int64(math.MaxInt64-1))
	case !validReason(s.Reason):
		return bad("reason %q is not [a-z0-9-]{1,64}", s.Reason)
	case s.Writer == "" || len(s.Writer) > 1024:
		return bad("writer must be 1..1024 bytes")
	case b.Commits < 1 || b.Commits > s.Start:
		return bad("%d commits below start", b.Commits)
	case b.Records < 0 || b.Bytes < 0 || b.Records+gaps != s.Start:
		return bad("%d records and %d gap offsets below it do not add up to %d offsets", b.Records, gaps, s.Start)
	case (b.RunningMaxTimestamp != nil) != (b.Records > 0):
		return bad("running_max_timestamp must be given exactly when records lie below it")
	case s.FirstRecordOffset != nil && *s.FirstRecordOffset < s.Start:
		return bad("first_record_offset %d is below the start", *s.FirstRecordOffset)
	case (s.FirstRecordOffset == nil) != (s.OldestTimestamp == nil):
		return bad("first_record_offset and oldest_timestamp must be both given or both null")
	}
	return nil
}

// DecodeArchiveStart decodes an archive-start marker strictly (unknown
// fields rejected, format version 2) and checks its invariants.
func DecodeArchiveStart(b []byte) (*ArchiveStart, error) {
	var s ArchiveStart
	if err := decodeJSONVersions("archive start", b, &s, func() int { return s.FormatVersion }, startVersions); err != nil {
		return nil, err
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// EncodeArchiveStart returns the marker's JSON encoding.
func EncodeArchiveStart(s *ArchiveStart) []byte { return encodeJSON(s) }

// RecoverableFrom is the oldest time a `--from` bound may name without
// reaching expired records: one past the running maximum timestamp below
// the start, or the oldest recoverable timestamp if later. ok is false
// when nothing bounds it (no record below the start nor after it).
func (s *ArchiveStart) RecoverableFrom() (ms int64, ok bool) {
	if s.OldestTimestamp != nil {
		ms, ok = *s.OldestTimestamp, true
	}
	if r := s.Below.RunningMaxTimestamp; r != nil && *r < math.MaxInt64 && (!ok || *r+1 > ms) {
		ms, ok = *r+1, true
	}
	return ms, ok
}

// FormatTime renders unix milliseconds as RFC 3339 in UTC with millisecond
// precision (2024-05-01T14:03:00.000Z); a value outside the years
// 0000..9999, which RFC 3339 cannot express, as its decimal unix
// milliseconds. Every command prints times this way.
func FormatTime(ms int64) string {
	t := time.UnixMilli(ms).UTC()
	if y := t.Year(); y < 0 || y > 9999 {
		return strconv.FormatInt(ms, 10)
	}
	return t.Format("2006-01-02T15:04:05.000Z07:00")
}

// ExpiredError is what a read below the archive start fails with; it
// wraps ErrExpired.
type ExpiredError struct {
	Partition string // topic/partition
	// What was asked for, e.g. "offset 5" or "time 2024-05-01T14:03:00.000Z".
	What  string
	Start *ArchiveStart
}

func (e *ExpiredError) Error() string {
	msg := fmt.Sprintf("%s %s is expired: the archive's retention (%s) expired the offsets below %d; the oldest recoverable offset is %d",
		e.Partition, e.What, e.Start.Reason, e.Start.Start, e.Start.Start)
	if ms, ok := e.Start.RecoverableFrom(); ok {
		msg += ", the oldest recoverable time " + FormatTime(ms)
	}
	return msg
}

// Unwrap makes errors.Is(err, ErrExpired) true.
func (e *ExpiredError) Unwrap() error { return ErrExpired }

// expired returns the ExpiredError for what at this partition.
func (p *PartitionLog) expired(s *ArchiveStart, what string) error {
	return &ExpiredError{Partition: p.String(), What: what, Start: s}
}

// LoadStart reads the partition's newest archive-start marker (one LIST,
// and one GET if there is a marker) and remembers it for ArchiveStart. It
// returns nil when nothing is expired (no marker: the archive starts at 0).
func (p *PartitionLog) LoadStart(ctx context.Context) (*ArchiveStart, error) {
	var s *ArchiveStart
	// A marker listed but gone when read was superseded by a newer one and
	// deleted in between (the deletion pass): list again.
	for attempt := 0; ; attempt++ {
		key, err := p.firstAfter(ctx, p.prefix+"start/", "")
		if err != nil {
			return nil, err
		}
		if key == "" {
			break
		}
		k, err := ParseKey(key)
		if err != nil || k.Kind != KeyStart {
			return nil, fmt.Errorf("%s: %w", key, corruptf("not an archive start key"))
		}
		s, err = p.readStart(ctx, key, k.Start)
		if errors.Is(err, store.ErrNotFound) && attempt < 3 {
			continue
		}
		if err != nil {
			return nil, err
		}
		break
	}
	p.startMu.Lock()
	p.start, p.startLoaded = s, true
	p.startMu.Unlock()
	return s, nil
}

// readStart GETs and decodes the marker at key, which names start.
func (p *PartitionLog) readStart(ctx context.Context, key string, start int64) (*ArchiveStart, error) {
	b, err := store.Get(ctx, p.st, key)
	if err != nil {
		return nil, fmt.Errorf("read archive start %s: %w", key, err)
	}
	s, err := DecodeArchiveStart(b)
	if err != nil {
		return nil, fmt.Errorf("archive start %s: %w", key, err)
	}
	if s.Start != start {
		return nil, fmt.Errorf("archive start %s: %w", key, corruptf("holds start %d", s.Start))
	}
	return s, nil
}

// ArchiveStart returns the partition's archive start as this PartitionLog
// first loaded it (LoadStart), nil when nothing is expired. In an archive
// whose root marker was version 1 when it was opened, it makes no request:
// nothing can have expired. A reader keeps
// the start it planned with: objects below a newer marker stay readable for
// the deletion grace period (docs/FORMAT.md §8, expiry rules), so a restore
// planned before an expiry still reads what it planned.
func (p *PartitionLog) ArchiveStart(ctx context.Context) (*ArchiveStart, error) {
	p.startMu.Lock()
	s, ok := p.start, p.startLoaded
	p.startMu.Unlock()
	if ok {
		return s, nil
	}
	if p.arch != nil && p.arch.FormatVersion() < ExpiryFormatVersion {
		// A version-1 archive has no marker (the first one upgrades the
		// root before it is created): no request.
		p.startMu.Lock()
		p.startLoaded = true
		p.startMu.Unlock()
		return nil, nil
	}
	return p.LoadStart(ctx)
}

// StartOffset is the first recoverable offset: the archive start, 0 when
// nothing is expired.
func (s *ArchiveStart) StartOffset() int64 {
	if s == nil {
		return 0
	}
	return s.Start
}
