package logrange

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store/filestore"
)

// testLog builds one partition: offsets 0..2 a before-start gap, then
// records 3..29 with timestamps ts(o), offsets 10..11 compacted away,
// committed as segments 0..9, 10..19, 20..29 with small blocks.
func testLog(t *testing.T, ts func(o int64) int64) *manifest.PartitionLog {
	t.Helper()
	ctx := context.Background()
	p := newPartition(t)
	var head *manifest.Commit
	var err error
	for start := int64(0); start < 30; start += 10 {
		w := manifest.NewSegmentWriter(start, manifest.SegmentOptions{Codec: manifest.CodecZstd, BlockSize: 60})
		for o := start; o < start+10; o++ {
			switch {
			case o < 3:
				err = w.AddGap(o, manifest.GapBeforeStart)
			case o == 10 || o == 11:
				err = w.AddGap(o, manifest.GapCompacted)
			default:
				err = w.Append(&manifest.Record{Offset: o, Timestamp: ts(o), Value: []byte("v"), ProducerID: -1, ProducerEpoch: -1, LeaderEpoch: -1})
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		seg, info := w.Finish()
		if head, err = p.Append(ctx, head, seg, info, "test", 1); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// newPartition returns partition 0 of topic "t" in a new archive in a
// temporary directory.
func newPartition(t *testing.T) *manifest.PartitionLog {
	t.Helper()
	st, err := filestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, err := manifest.Init(context.Background(), st, "test", 1)
	if err != nil {
		t.Fatal(err)
	}
	return a.Partition("t", manifest.TopicID{1}, 0)
}

// render lists what Scan yields: "o" for a record at o, "a-b" for a gap.
func render(t *testing.T, p *manifest.PartitionLog, r Range) string {
	t.Helper()
	var out []string
	err := Scan(context.Background(), p, r, func(it manifest.ScanItem) error {
		if it.Record != nil {
			out = append(out, fmt.Sprint(it.Record.Offset))
		} else {
			out = append(out, fmt.Sprintf("%d-%d", it.Gap.From, it.Gap.To))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, " ")
}

func TestScan(t *testing.T) {
	t.Parallel()
	// Timestamps out of order: offset o has 100*o, except offset 15 (50,
	// late) and offset 22 (2500, early-future).
	ts := func(o int64) int64 {
		switch o {
		case 15:
			return 50
		case 22:
			return 2500
		}
		return 100 * o
	}
	p := testLog(t, ts)
	all := "0-2 3 4 5 6 7 8 9 10-11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29"
	for _, tc := range []struct {
		name string
		r    Range
		want string
	}{
		{"all", Range{}, all},
		{"from offset", Range{FromOffset: 11}, "11-11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29"},
		{"to offset", Range{ToOffset: 10, HasToOffset: true}, "0-2 3 4 5 6 7 8 9 10-10"},
		{"offset range", Range{FromOffset: 1, ToOffset: 4, HasToOffset: true}, "1-2 3 4"},
		{"to before from", Range{FromOffset: 5, ToOffset: 4, HasToOffset: true}, ""},
		{"from past end", Range{FromOffset: 30}, ""},
		{"to past end", Range{FromOffset: 28, ToOffset: 1000, HasToOffset: true}, "28 29"},
		// The first record with ts >= 1250 is 13 (1300); 15 (50) follows
		// in offset order.
		{"from time", Range{FromTime: 1250, HasFromTime: true}, "13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29"},
		{"from time exact", Range{FromTime: 1300, HasFromTime: true}, "13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29"},
		// 2500 at offset 22 is the first >= 2150.
		{"from time early future", Range{FromTime: 2150, HasFromTime: true}, "22 23 24 25 26 27 28 29"},
		{"from time before all", Range{FromTime: math.MinInt64, HasFromTime: true}, "3 4 5 6 7 8 9 10-11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29"},
		{"from time after all", Range{FromTime: 2901, HasFromTime: true}, ""},
		// Prefix up to 2150: stops before 22 (2500), the first record > 2150.
		{"to time", Range{ToTime: 2150, HasToTime: true}, "0-2 3 4 5 6 7 8 9 10-11 12 13 14 15 16 17 18 19 20 21"},
		{"to time exact", Range{ToTime: 2100, HasToTime: true}, "0-2 3 4 5 6 7 8 9 10-11 12 13 14 15 16 17 18 19 20 21"},
		{"to time includes trailing gap", Range{ToTime: 1150, HasToTime: true}, "0-2 3 4 5 6 7 8 9 10-11"},
		{"to time before all", Range{ToTime: 299, HasToTime: true}, "0-2"},
		{"to time after all", Range{ToTime: math.MaxInt64, HasToTime: true}, all},
		{"time range", Range{FromTime: 1250, HasFromTime: true, ToTime: 1650, HasToTime: true}, "13 14 15 16"},
		{"time and offsets", Range{FromOffset: 14, FromTime: 1250, HasFromTime: true, ToOffset: 25, HasToOffset: true, ToTime: 2400, HasToTime: true}, "14 15 16 17 18 19 20 21"},
		{"from offset before from time", Range{FromOffset: 4, FromTime: 1250, HasFromTime: true}, "13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29"},
		{"from time after to time", Range{FromTime: 2000, HasFromTime: true, ToTime: 1000, HasToTime: true}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := render(t, p, tc.r); got != tc.want {
				t.Fatalf("%s:\n got %q\nwant %q", tc.r, got, tc.want)
			}
		})
	}
}

func TestScanEmptyAndInvalid(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := filestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, err := manifest.Init(ctx, st, "test", 1)
	if err != nil {
		t.Fatal(err)
	}
	p := a.Partition("t", manifest.TopicID{1}, 0)
	for _, r := range []Range{{}, {FromTime: 5, HasFromTime: true}, {ToTime: 5, HasToTime: true}} {
		if got := render(t, p, r); got != "" {
			t.Fatalf("empty partition %s: %q", r, got)
		}
	}
	if err := Scan(ctx, p, Range{FromOffset: -1}, nil); err == nil {
		t.Fatal("negative from offset accepted")
	}
	if err := Scan(ctx, p, Range{ToOffset: -1, HasToOffset: true}, nil); err == nil {
		t.Fatal("negative to offset accepted")
	}
}

func TestParseTime(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want int64
		err  bool
	}{
		{"0", 0, false},
		{"1714572180000", 1714572180000, false},
		{"-1", -1, false},
		{" 42 ", 42, false},
		{"2024-05-01T14:03:00Z", 1714572180000, false},
		{"2024-05-01T16:03:00.250+02:00", 1714572180250, false},
		{"2024-05-01T14:03:00.123000Z", 1714572180123, false},
		{"1970-01-01T00:00:00Z", 0, false},
		{"2024-05-01T14:03:00.1234Z", 0, true},
		{"2024-05-01", 1714521600000, false},
		{"2024-05-01 14:03:00", 0, true},
		{"2024-13-01", 0, true},
		{"", 0, true},
		{"-", 0, true},
		{"1e3", 0, true},
		{"99999999999999999999", 0, true},
		{"yesterday", 0, true},
	} {
		got, err := ParseTime(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseTime(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
	// Relative to now.
	now := time.UnixMilli(1714572180250)
	for _, tc := range []struct {
		in   string
		want int64
		err  bool
	}{
		{"now", 1714572180250, false},
		{"NOW", 1714572180250, false},
		{"-2h", 1714572180250 - 2*3600000, false},
		{"now-2h", 1714572180250 - 2*3600000, false},
		{"+90m", 1714572180250 + 90*60000, false},
		{"-7d", 1714572180250 - 7*86400000, false},
		{"-1d12h", 1714572180250 - 36*3600000, false},
		{"-1", -1, false}, // an integer is unix milliseconds
		{"-d", 0, true},
		{"-2x", 0, true},
		{"now+", 0, true},
		{"nowish", 0, true},
		{"-1d-2h", 0, true},
		{"--2h", 0, true},
		{"-100001d", 0, true},
		{"-9999999999h", 0, true},
	} {
		got, err := ParseTimeAt(tc.in, now)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseTimeAt(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
	for s, want := range map[string]bool{"now": true, " -2h": true, "+1d": true, "now-1h": true, "-1": false, "2024-05-01": false, "42": false} {
		if IsRelative(s) != want {
			t.Errorf("IsRelative(%q) = %v", s, !want)
		}
	}
	for _, ms := range []int64{0, -1, 1714572180250, math.MaxInt64, math.MinInt64, 253402300799999, 253402300800000} {
		s := FormatTime(ms)
		if got, err := ParseTime(s); err != nil || got != ms {
			t.Errorf("ParseTime(FormatTime(%d) = %q) = %d, %v", ms, s, got, err)
		}
	}
	if got := FormatTime(1714572180250); got != "2024-05-01T14:03:00.250Z" {
		t.Errorf("FormatTime = %q", got)
	}
}

// FuzzParseTime: ParseTime never panics; every accepted value formats to
// a string that parses back to the same value, and FormatTime's output is
// always accepted.
func FuzzParseTime(f *testing.F) {
	for _, s := range []string{"0", "-1", "1714572180000", "2024-05-01T14:03:00Z", "2024-05-01T16:03:00.250+02:00",
		"9999-12-31T23:59:59.999Z", "0000-01-01T00:00:00Z", "-9223372036854775808", "2024-05-01T14:03:00.1234Z",
		"2024-05-01", "now", "-2h", "now-90m", "+1d12h", "-100000d", "-99999d2562047h"} {
		f.Add(s)
	}
	now := time.UnixMilli(1714572180250)
	f.Fuzz(func(t *testing.T, s string) {
		ms, err := ParseTimeAt(s, now)
		if err != nil {
			return
		}
		back, err := ParseTime(FormatTime(ms))
		if err != nil || back != ms {
			t.Fatalf("ParseTime(%q) = %d; FormatTime = %q parses to %d, %v", s, ms, FormatTime(ms), back, err)
		}
	})
}

// TestExpiredBounds: after an expiry to offset 10, bounds below it fail
// naming the oldest recoverable offset and time; no lower bound starts at
// the archive start.
func TestExpiredBounds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ts := func(o int64) int64 { return 1000 * o }
	p := testLog(t, ts)
	// Everything older than 19.5 s at now = 20 s: commits 0..9 (max 9 s),
	// 10..19 (max 19 s) hold older records only; the head stays.
	e, err := p.Expire(ctx, manifest.ExpireOptions{Retention: manifest.Retention{Age: 500 * time.Millisecond}, Now: time.UnixMilli(20_000)})
	if err != nil || e.Start != 20 {
		t.Fatalf("expire: %+v %v", e, err)
	}
	if got := render(t, p, Range{}); got != "20 21 22 23 24 25 26 27 28 29" {
		t.Fatalf("no lower bound: %s", got)
	}
	if b, err := Resolve(ctx, p, Range{}); err != nil || b.Start != 20 || b.From != 20 {
		t.Fatalf("resolve: %+v %v", b, err)
	}
	for _, r := range []Range{
		{HasFromOffset: true}, {FromOffset: 19}, {HasToOffset: true, ToOffset: 5},
		{HasFromTime: true, FromTime: 19_000}, {HasToTime: true, ToTime: 5_000}, {HasToTime: true, ToTime: 19_000},
	} {
		_, err := Resolve(ctx, p, r)
		if !errors.Is(err, manifest.ErrExpired) || !strings.Contains(err.Error(), "the oldest recoverable offset is 20, the oldest recoverable time 1970-01-01T00:00:20.000Z") {
			t.Fatalf("%s: %v", r, err)
		}
	}
	for r, want := range map[Range]string{
		{FromOffset: 25}:                      "25 26 27 28 29",
		{HasFromTime: true, FromTime: 19_001}: "20 21 22 23 24 25 26 27 28 29",
		{HasToTime: true, ToTime: 21_000}:     "20 21",
		{HasFromOffset: true, FromOffset: 20}: "20 21 22 23 24 25 26 27 28 29",
		{HasToOffset: true, ToOffset: 20}:     "20",
	} {
		if got := render(t, p, r); got != want {
			t.Fatalf("%s: %s, want %s", r, got, want)
		}
	}
}

// TestScanReusesBuffers: Scan (what cat reads through) reuses each block's
// records and buffers for the next block, so what it allocates is a small
// fraction of the bytes it reads, not a new buffer per block.
func TestScanReusesBuffers(t *testing.T) {
	ctx := context.Background()
	p := newPartition(t)
	var head *manifest.Commit
	var err error
	var payload int64
	value := []byte(strings.Repeat("0123456789abcdef", 12))
	const perSegment = 20000
	for s := int64(0); s < 3; s++ {
		w := manifest.NewSegmentWriter(s*perSegment, manifest.SegmentOptions{Codec: manifest.CodecZstd, BlockSize: 256 << 10})
		for o := s * perSegment; o < (s+1)*perSegment; o++ {
			r := manifest.Record{Offset: o, Timestamp: o, Key: []byte(fmt.Sprint(o)), Value: value, ProducerID: -1, ProducerEpoch: -1, LeaderEpoch: -1,
				Headers: []manifest.Header{{Key: "h", Value: []byte("v")}}}
			if err := w.Append(&r); err != nil {
				t.Fatal(err)
			}
			payload += int64(len(r.Key) + len(r.Value) + 2)
		}
		seg, info := w.Finish()
		if head, err = p.Append(ctx, head, seg, info, "test", 1); err != nil {
			t.Fatal(err)
		}
	}
	scan := func() {
		var n int64
		err := Scan(ctx, p, Range{}, func(it manifest.ScanItem) error {
			if it.Record != nil {
				n++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n != 3*perSegment {
			t.Fatalf("scanned %d records, want %d", n, 3*perSegment)
		}
	}
	scan() // warms what is shared across scans (decoders)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	scan()
	runtime.ReadMemStats(&after)
	alloc := int64(after.TotalAlloc - before.TotalAlloc)
	t.Logf("a scan of %d bytes of keys and values allocated %d bytes", payload, alloc)
	if alloc > payload/5 {
		t.Fatalf("a scan allocated %d bytes for %d bytes of keys and values, want at most a fifth", alloc, payload)
	}
}
