package restore

import (
	"reflect"
	"testing"
)

// FuzzDecodeOffsetMap: the offset-map decoder never panics on any input;
// a map it accepts re-encodes to a map that decodes to the same value; and
// translating any offset through an accepted map never panics and never
// returns a negative offset.
func FuzzDecodeOffsetMap(f *testing.F) {
	f.Add([]byte(`{"format":"kbackup-offset-map","format_version":1,"restore_id":"r-1","created_ms":1,"target_cluster_id":"c","catalog_ms":1,` +
		`"partitions":[{"source_topic":"a","source_topic_id":"0102030405060708090a0b0c0d0e0f10","source_partition":0,"target_topic":"b","target_partition":0,` +
		`"source_from":3,"source_to":19,"target_start":0,"target_end":17,"records":17,"complete":true,"runs":[[3,0,5],[10,5,10]]}]}`))
	f.Add([]byte(`{"format":"kbackup-offset-map","format_version":2}`))
	f.Add([]byte(`{"runs":[[1,2]]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeOffsetMap(b)
		if err != nil {
			return
		}
		again, err := DecodeOffsetMap(m.Encode())
		if err != nil {
			t.Fatalf("re-encoded map does not decode: %v", err)
		}
		if !reflect.DeepEqual(m, again) {
			t.Fatalf("round trip changed the map")
		}
		for i := range m.Partitions {
			p := &m.Partitions[i]
			for _, o := range []int64{-1, 0, p.SourceFrom, p.SourceTo, p.SourceTo + 1, 1 << 62} {
				if got := p.Translate(o); got < 0 {
					t.Fatalf("Translate(%d) = %d", o, got)
				}
				_, _ = p.TargetOf(o)
			}
		}
	})
}
