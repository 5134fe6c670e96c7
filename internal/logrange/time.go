// Package logrange selects a part of an archived partition log by offset
// and by time, with the semantics every command shares (cat, restore):
//
//   - FromOffset N: offsets >= N.
//   - ToOffset N: offsets <= N.
//   - FromTime T: from the first offset whose record timestamp is >= T; after
//     that record, everything in offset order (later records with smaller,
//     out-of-order timestamps included).
//   - ToTime T: the partition's log prefix up to T: every offset before the
//     first record whose timestamp is > T.
//
// Bounds combine as an intersection. TIME values on the command line are
// RFC 3339, a date (UTC midnight), unix milliseconds, "now" or a time
// relative to now (ParseTime).
package logrange

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kbackup/kbackup/manifest"
)

// timeHelp is the accepted TIME forms, for error messages.
const timeHelp = "want RFC 3339 (2006-01-02T15:04:05Z), a date (2006-01-02, UTC midnight), unix milliseconds, now, or a time relative to now (-2h, -30m, -7d)"

// ParseTime parses a TIME flag value against the current time; see
// ParseTimeAt.
func ParseTime(s string) (int64, error) { return ParseTimeAt(s, time.Now()) }

// ParseTimeAt parses a TIME flag value:
//   - RFC 3339, e.g. 2024-05-01T14:03:00Z or 2024-05-01T16:03:00.250+02:00;
//   - a date, 2024-05-01: its midnight in UTC;
//   - an integer number of unix milliseconds, e.g. 1714572180000 or -1;
//   - "now", or a duration before or after now: -2h, -90m, -7d, +1h,
//     now-2h (units ms, s, m, h and d = 24h, combinable: -1d12h).
//
// Kafka timestamps are milliseconds, so a time finer than a millisecond is
// refused rather than rounded; relative times are truncated to the
// millisecond.
func ParseTimeAt(s string, now time.Time) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty time: %s", timeHelp)
	}
	if isInteger(s) {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("time %q: unix milliseconds out of range", s)
		}
		return ms, nil
	}
	if rel, ok := strings.CutPrefix(strings.ToLower(s), "now"); ok || strings.HasPrefix(s, "-") || strings.HasPrefix(s, "+") {
		if !ok {
			rel = s
		}
		d, err := parseOffset(rel)
		if err != nil {
			return 0, fmt.Errorf("time %q: %v; %s", s, err, timeHelp)
		}
		return now.Add(d).UnixMilli(), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t.UnixMilli(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, fmt.Errorf("time %q: %s", s, timeHelp)
	}
	if t.Nanosecond()%int(time.Millisecond) != 0 {
		return 0, fmt.Errorf("time %q: finer than a millisecond (Kafka timestamps are milliseconds)", s)
	}
	return t.UnixMilli(), nil
}

// IsRelative reports whether a TIME value is relative to the current time
// ("now", "-2h", "now+1d"), i.e. resolves differently on every run.
func IsRelative(s string) bool {
	s = strings.TrimSpace(s)
	return !isInteger(s) && (strings.HasPrefix(strings.ToLower(s), "now") || strings.HasPrefix(s, "-") || strings.HasPrefix(s, "+"))
}

// maxRelativeDays bounds a relative time (-100000d is 273 years; twice that
// still fits a time.Duration).
const maxRelativeDays = 100000

// parseOffset parses "" (zero) or a signed duration with Go's units plus d
// (days): "-2h", "+1d12h".
func parseOffset(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	sign := time.Duration(1)
	switch s[0] {
	case '-':
		sign = -1
	case '+':
	default:
		return 0, fmt.Errorf("a relative time starts with - or +")
	}
	s = s[1:]
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		n, err := strconv.ParseUint(s[:i], 10, 31)
		if err != nil || i == 0 || n > maxRelativeDays {
			return 0, fmt.Errorf("bad number of days %q (at most %d)", s[:i], maxRelativeDays)
		}
		days, s = time.Duration(n)*24*time.Hour, s[i+1:]
	}
	var rest time.Duration
	if s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 || d > maxRelativeDays*24*time.Hour {
			return 0, fmt.Errorf("bad duration %q", s)
		}
		rest = d
	}
	if days == 0 && rest == 0 && s == "" {
		return 0, fmt.Errorf("no duration after the sign")
	}
	return sign * (days + rest), nil
}

// isInteger reports whether s is an optional '-' followed by decimal digits.
func isInteger(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// FormatTime renders unix milliseconds as RFC 3339 in UTC with millisecond
// precision; a value outside the years 0000..9999, which RFC 3339 cannot
// express, is rendered as its decimal unix milliseconds. ParseTime accepts
// every value FormatTime returns and yields ms again. (It is
// manifest.FormatTime, which the format's error messages use too.)
func FormatTime(ms int64) string { return manifest.FormatTime(ms) }
