package cli

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/kbackup/kbackup/manifest"
)

// catLine is a cat output line decoded; pointers tell null from empty.
type catLine struct {
	Topic         string  `json:"topic"`
	Partition     int32   `json:"partition"`
	Offset        int64   `json:"offset"`
	Timestamp     int64   `json:"timestamp"`
	TimestampType string  `json:"timestamp_type"`
	Key           *string `json:"key"`
	Value         *string `json:"value"`
	Headers       []struct {
		Key   string  `json:"key"`
		Value *string `json:"value"`
	} `json:"headers"`
}

func decodeB64(t *testing.T, s *string) []byte {
	t.Helper()
	if s == nil {
		return nil
	}
	b, err := base64.StdEncoding.DecodeString(*s)
	if err != nil {
		t.Fatalf("base64 %q: %v", *s, err)
	}
	if b == nil {
		b = []byte{}
	}
	return b
}

func sameBytes(a, b []byte) bool { return (a == nil) == (b == nil) && bytes.Equal(a, b) }

// FuzzRecordJSON: every record renders as one line of valid JSON that
// decodes back to the record: key, value and header values byte for byte
// with null kept distinct from empty, header keys equal (for valid UTF-8;
// invalid bytes become U+FFFD), fields in the contract's order.
func FuzzRecordJSON(f *testing.F) {
	f.Add(int64(0), int64(-1), false, []byte("k"), []byte("v"), "h", []byte("x"), uint8(0))
	f.Add(int64(1<<62), int64(1700000000000), true, []byte{}, []byte{0, 0xff}, `a"b\c`+"\n\u2028<>&", []byte(nil), uint8(7))
	f.Add(int64(5), int64(5), false, []byte(nil), []byte(nil), "\xff\xfe", []byte{}, uint8(3))
	f.Fuzz(func(t *testing.T, offset, ts int64, logAppend bool, key, value []byte, hkey string, hval []byte, nulls uint8) {
		if nulls&1 != 0 {
			key = nil
		} else if key == nil {
			key = []byte{}
		}
		if nulls&2 != 0 {
			value = nil
		} else if value == nil {
			value = []byte{}
		}
		if nulls&4 != 0 {
			hval = nil
		} else if hval == nil {
			hval = []byte{}
		}
		r := manifest.Record{Offset: offset, Timestamp: ts, Key: key, Value: value,
			Headers: []manifest.Header{{Key: hkey, Value: hval}, {Key: hkey, Value: nil}}}
		if logAppend {
			r.TimestampType = manifest.LogAppendTime
		}
		line := appendRecordJSON(nil, "topic.a-b_c", 7, &r)
		if bytes.Count(line, []byte("\n")) != 1 || line[len(line)-1] != '\n' {
			t.Fatalf("not one line: %q", line)
		}
		if !json.Valid(line) {
			t.Fatalf("invalid JSON: %q", line)
		}
		if !bytes.HasPrefix(line, []byte(`{"topic":"topic.a-b_c","partition":7,"offset":`)) ||
			!bytes.Contains(line, []byte(`,"timestamp_type":"`+r.TimestampType.String()+`","key":`)) {
			t.Fatalf("field order: %q", line)
		}
		var got catLine
		if err := json.Unmarshal(line, &got); err != nil {
			t.Fatal(err)
		}
		wantKey := hkey
		if !utf8.ValidString(hkey) {
			wantKey = strings.ToValidUTF8(hkey, "\uFFFD")
		}
		if got.Offset != offset || got.Timestamp != ts || got.TimestampType != r.TimestampType.String() ||
			!sameBytes(decodeB64(t, got.Key), key) || !sameBytes(decodeB64(t, got.Value), value) ||
			len(got.Headers) != 2 || !sameBytes(decodeB64(t, got.Headers[0].Value), hval) || got.Headers[1].Value != nil ||
			(utf8.ValidString(hkey) && got.Headers[0].Key != wantKey) {
			t.Fatalf("round trip of %+v: %q", r, line)
		}
	})
}
