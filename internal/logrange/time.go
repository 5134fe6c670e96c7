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
// RFC 3339 or unix milliseconds (ParseTime).
package logrange

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// rfc3339Milli is how times are printed: RFC 3339 in UTC with milliseconds.
const rfc3339Milli = "2006-01-02T15:04:05.000Z07:00"

// ParseTime parses a TIME flag value: RFC 3339 (e.g. 2024-05-01T14:03:00Z,
// 2024-05-01T16:03:00.250+02:00) or an integer number of unix
// milliseconds (e.g. 1714572180000, -1). Kafka timestamps are
// milliseconds, so an RFC 3339 time finer than a millisecond is refused
// rather than rounded.
func ParseTime(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty time: want RFC 3339 (2006-01-02T15:04:05Z) or unix milliseconds")
	}
	if isInteger(s) {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("time %q: unix milliseconds out of range", s)
		}
		return ms, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, fmt.Errorf("time %q: want RFC 3339 (2006-01-02T15:04:05Z) or unix milliseconds", s)
	}
	if t.Nanosecond()%int(time.Millisecond) != 0 {
		return 0, fmt.Errorf("time %q: finer than a millisecond (Kafka timestamps are milliseconds)", s)
	}
	return t.UnixMilli(), nil
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
// every value FormatTime returns and yields ms again.
func FormatTime(ms int64) string {
	t := time.UnixMilli(ms).UTC()
	if y := t.Year(); y < 0 || y > 9999 {
		return strconv.FormatInt(ms, 10)
	}
	return t.Format(rfc3339Milli)
}
