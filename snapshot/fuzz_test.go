package snapshot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/filestore"
)

// Invariants of every decoder fuzzed here: it never panics, whatever the
// input; a rejected input is an error (of the documented kind), never a
// half-filled value; what is accepted satisfies the decoder's checks.

const fuzzConfig = `
cluster: prod
store: file:///var/lib/kbackup
kafka: {brokers: ["k1:9092"]}
provider: {type: dir, dir: {path: /snapshots}}
mode: rolling
hooks: {stop: "systemctl stop kafka", start: "systemctl start kafka", status: "systemctl is-active kafka"}
brokers:
  - {id: 1, host: k1, dirs: [/var/lib/kafka]}
retention: {keep_last: 3, max_age: 30d}
timeouts: {stop: 90s}
`

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(fuzzConfig))
	f.Add([]byte(""))
	f.Add([]byte("cluster: [\n"))
	f.Add([]byte("brokers: {id: x}\nretention: {max_age: -1d}\n"))
	f.Add([]byte("cluster: a\nunknown: 1\n"))
	f.Add([]byte("&a [*a, *a, *a]"))
	if doc, err := os.ReadFile("../docs/OPERATIONS.md"); err == nil {
		if _, rest, ok := strings.Cut(string(doc), "```yaml\n"); ok {
			example, _, _ := strings.Cut(rest, "```")
			f.Add([]byte(example))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<16 {
			return
		}
		c, err := ParseConfig(b)
		if err != nil {
			if c != nil {
				t.Fatal("a config together with an error")
			}
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("error does not wrap ErrConfig: %v", err)
			}
			return
		}
		if c.Cluster == "" || len(c.Brokers) == 0 {
			t.Fatalf("accepted a config without cluster or brokers: %+v", c)
		}
		if c.Validate() != nil {
			t.Fatal("accepted config does not validate")
		}
		_ = c.mode()
		_ = c.brokerIDs()
	})
}

func fuzzCycle() []byte {
	r := CycleRecord{FormatVersion: FormatVersion, ID: "20240229T120000Z-0a1b2c3d", Cluster: "prod", ClusterID: "abc",
		Mode: ModeCold, Provider: "dir", State: StateComplete, Started: time.Unix(1700000000, 0).UTC(),
		Brokers:             []BrokerRecord{{ID: 1, Snapshots: []Snap{{Bytes: 10}}}},
		HighWatermarks:      map[string]map[string]int64{"t": {"0": 5, "1": 7}},
		HighWatermarksAfter: map[string]map[string]int64{"t": {"0": 6}}}
	b, _ := json.Marshal(r)
	return b
}

func FuzzDecodeCycle(f *testing.F) {
	f.Add(fuzzCycle())
	f.Add([]byte(`{"format_version":2}`))
	f.Add([]byte(`{"format_version":1,"id":"x"}`))
	f.Add([]byte(`{"format_version":1,"id":"20240229T120000Z-0a1b2c3d","high_watermarks":{"t":{"0":"x"}}}`))
	f.Add([]byte(`{"format_version":1,"id":"20240229T120000Z-0a1b2c3d","high_watermarks":{"t":null},"brokers":[null]}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeCycle(b)
		if err != nil {
			if r != nil {
				t.Fatal("a record together with an error")
			}
			return
		}
		if r.FormatVersion != FormatVersion || !ValidCycleID(r.ID) {
			t.Fatalf("accepted %+v", r)
		}
		// Everything a reader does with a record must not panic.
		_ = r.Restorable("prod")
		_, _ = r.Bytes(), r.Snaps()
		for topic, ps := range r.HighWatermarks {
			for p := range ps {
				_, _, _ = r.OffsetRange(topic, 0)
				_, _ = r.HighWatermark(topic, 0)
				_ = p
			}
		}
		_, _, _ = r.OffsetRange("t", 1)
		if _, err := json.Marshal(r); err != nil {
			t.Fatalf("accepted record does not encode: %v", err)
		}
	})
}

func fuzzStore(t *testing.T) store.Store {
	st, err := filestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// FuzzReadLock: any lock object is read without a panic; an unreadable one
// counts as expired (the zero record), never as an error.
func FuzzReadLock(f *testing.F) {
	good, _ := json.Marshal(lockRecord{Token: "ab", Op: "run", Host: "h", PID: 1, Acquired: time.Unix(1, 0).UTC(), Expires: time.Unix(2, 0).UTC()})
	f.Add(good)
	f.Add([]byte(`{"expires":"not a time"}`))
	f.Add([]byte(`{"pid":1e400}`))
	f.Add([]byte{0xff, 0xfe})
	f.Fuzz(func(t *testing.T, b []byte) {
		st := fuzzStore(t)
		ctx := context.Background()
		if err := st.Put(ctx, LockKey("c"), bytes.NewReader(b), int64(len(b)), store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := readLock(ctx, st, LockKey("c")); err != nil {
			t.Fatalf("readLock: %v", err)
		}
	})
}

// FuzzLatestRestore: any restore report is read or refused with an error,
// never a panic.
func FuzzLatestRestore(f *testing.F) {
	good, _ := json.Marshal(RestoreResult{ID: "r1", CycleID: "20240229T120000Z-0a1b2c3d", Plan: []string{"stop"},
		Restored:       map[int32][]Restored{1: {{}}},
		HighWatermarks: map[string]map[string]int64{"t": {"0": 1}}, Started: time.Unix(1, 0).UTC(), Finished: time.Unix(2, 0).UTC()})
	f.Add(good)
	f.Add([]byte(`{"restored":{"x":[]}}`))
	f.Add([]byte(`{"finished":1}`))
	f.Add([]byte(`]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st := fuzzStore(t)
		ctx := context.Background()
		if err := st.Put(ctx, RestoreKey("c", "r1"), bytes.NewReader(b), int64(len(b)), store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		r, err := LatestRestore(ctx, st, "c")
		if err == nil && r == nil {
			t.Fatal("no report and no error")
		}
	})
}

// FuzzDurationAndID: the small parsers of the configuration and the CLI.
func FuzzDurationAndID(f *testing.F) {
	for _, s := range []string{"30d", "12h", "90s", "-1d", "9999999999999999d", "d", "", "20240229T120000Z-0a1b2c3d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d, err := ParseDuration(s); err == nil && d < 0 {
			t.Fatalf("ParseDuration(%q) = %v", s, d)
		}
		_ = ValidCycleID(s)
		if _, err := LoadCycle(context.Background(), fuzzStore(t), "c", s); err == nil {
			t.Fatalf("LoadCycle(%q) found a cycle in an empty store", s)
		}
	})
}
