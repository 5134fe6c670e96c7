package cli

import (
	"encoding/json"
	"strings"
	"testing"
)

// The fixture's records as cat prints them.
var (
	catOrders0 = []string{
		`{"topic":"orders","partition":0,"offset":0,"timestamp":1000,"timestamp_type":"CreateTime","key":null,"value":null,"headers":[]}`,
		`{"topic":"orders","partition":0,"offset":1,"timestamp":1001,"timestamp_type":"CreateTime","key":"","value":"","headers":[{"key":"h","value":null},{"key":"h","value":""},{"key":"h","value":"eA=="}]}`,
		`{"topic":"orders","partition":0,"offset":2,"timestamp":900,"timestamp_type":"LogAppendTime","key":"aw==","value":"dg==","headers":[]}`,
		`{"topic":"orders","partition":0,"offset":5,"timestamp":2000,"timestamp_type":"CreateTime","key":"azU=","value":"/wA=","headers":[{"key":"a\"b\\c","value":"MQ=="},{"key":"é\n","value":null}]}`,
	}
	catOrders1 = []string{
		`{"topic":"orders","partition":1,"offset":3,"timestamp":1500,"timestamp_type":"CreateTime","key":"YQ==","value":"Yg==","headers":[]}`,
		`{"topic":"orders","partition":1,"offset":4,"timestamp":1600,"timestamp_type":"CreateTime","key":"YQ==","value":"Yw==","headers":[]}`,
	}
)

func lines(ls ...[]string) string {
	var all []string
	for _, l := range ls {
		all = append(all, l...)
	}
	if len(all) == 0 {
		return ""
	}
	return strings.Join(all, "\n") + "\n"
}

func TestCat(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	o0, o1 := catOrders0, catOrders1
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"all partitions", nil, lines(o0, o1)},
		{"one partition", []string{"--partition", "1"}, lines(o1)},
		{"from offset", []string{"--from-offset", "2"}, lines(o0[2:], o1)},
		{"offset range", []string{"--partition", "0", "--from-offset", "1", "--to-offset", "4"}, lines(o0[1:3])},
		{"to offset before first record", []string{"--to-offset", "2", "--partition", "1"}, ""},
		// The first record with timestamp >= 1001 is offset 1; offset 2
		// (900, out of order) follows it in offset order.
		{"from time", []string{"--from", "1001", "--partition", "0"}, lines(o0[1:])},
		// Only offset 5 reaches 1500 in partition 0.
		{"from time, all partitions", []string{"--from", "1500"}, lines(o0[3:], o1)},
		{"from time RFC 3339", []string{"--from", "1970-01-01T00:00:01.001Z", "--partition", "0"}, lines(o0[1:])},
		// Prefix up to 1000: stops before offset 1 (1001), although
		// offset 2 (900) is earlier.
		{"to time", []string{"--to", "1000", "--partition", "0"}, lines(o0[:1])},
		{"to time, all partitions", []string{"--to", "1550"}, lines(o0[:3], o1[:1])},
		{"time window", []string{"--from", "1001", "--to", "1999"}, lines(o0[1:3], o1)},
		{"nothing in range", []string{"--from", "1970-01-02T00:00:00Z"}, ""},
		{"old incarnation", []string{"--topic-id", "01"}, `{"topic":"orders","partition":0,"offset":0,"timestamp":10,"timestamp_type":"CreateTime","key":null,"value":"b2xkMA==","headers":[]}` + "\n" +
			`{"topic":"orders","partition":0,"offset":1,"timestamp":11,"timestamp_type":"CreateTime","key":null,"value":"b2xkMQ==","headers":[]}` + "\n"},
		{"current incarnation by full id", []string{"--topic-id", ordersID.String(), "--partition", "1"}, lines(o1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, errOut, code := runCLI(t, nil, append([]string{"cat", "--store", f.url, "--topic", "orders"}, tc.args...)...)
			if code != 0 || errOut != "" {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			if out != tc.want {
				t.Fatalf("stdout:\n%s\nwant:\n%s", out, tc.want)
			}
			for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
				if l != "" && !json.Valid([]byte(l)) {
					t.Fatalf("invalid JSON line %q", l)
				}
			}
		})
	}
}

func TestCatErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"unknown topic", []string{"--topic", "nope"}, 1, []string{"topic nope is not in the archive", "nothing written"}},
		{"unknown partition", []string{"--topic", "orders", "--partition", "7"}, 1, []string{"partition 7 of topic orders is not in the archive", "0-1"}},
		{"unknown topic id", []string{"--topic", "orders", "--topic-id", "ff"}, 1, []string{"no incarnation with id ff", ordersID.String()}},
		{"missing topic", nil, 2, []string{"--topic is required", "kbackup cat --help"}},
		{"invalid topic", []string{"--topic", "a/b"}, 2, []string{"invalid topic name"}},
		{"bad time", []string{"--topic", "orders", "--from", "yesterday"}, 2, []string{"--from", "RFC 3339"}},
		{"sub-millisecond time", []string{"--topic", "orders", "--to", "2024-01-01T00:00:00.0001Z"}, 2, []string{"finer than a millisecond"}},
		{"negative offset", []string{"--topic", "orders", "--from-offset", "-1"}, 2, []string{"negative"}},
		{"bad offset", []string{"--topic", "orders", "--to-offset", "x"}, 2, []string{"invalid value"}},
		{"stray argument", []string{"--topic", "orders", "extra"}, 2, []string{`unexpected argument "extra"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, errOut, code := runCLI(t, nil, append([]string{"cat", "--store", f.url}, tc.args...)...)
			if code != tc.code || out != "" {
				t.Fatalf("exit %d (want %d), stdout %q", code, tc.code, out)
			}
			oneLineErr(t, errOut, tc.want...)
		})
	}
}

func TestCatCorruptSegment(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	segs := f.keys(t, "topics/orders/"+ordersID.String()+"/0000000001/segments/", ".kseg")
	if len(segs) != 1 {
		t.Fatalf("segments %v", segs)
	}
	if err := f.st.Put(t.Context(), segs[0], strings.NewReader("garbage"), 7, putOverwrite); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runCLI(t, nil, "cat", "--store", f.url, "--topic", "orders")
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	// Partition 0 printed in full, then the failure names the object.
	if out != lines(catOrders0) {
		t.Fatalf("stdout %q", out)
	}
	oneLineErr(t, errOut, "orders/1", "output incomplete", segs[0])
}
