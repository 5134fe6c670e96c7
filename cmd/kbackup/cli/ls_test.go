package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"text/tabwriter"

	"github.com/kbackup/kbackup/internal/units"
)

// table aligns tab-separated rows as ls does.
func table(rows ...string) string {
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(tw, r)
	}
	_ = tw.Flush()
	return b.String()
}

func TestLsText(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	o0 := f.segmentBytes(t, "topics/orders/"+ordersID.String()+"/0000000000/")
	o1 := f.segmentBytes(t, "topics/orders/"+ordersID.String()+"/0000000001/")
	old := f.segmentBytes(t, "topics/orders/"+ordersOldID.String()+"/")
	pay := f.segmentBytes(t, "topics/payments/")
	hb := units.Bytes
	want := table(
		"TOPIC\tTOPIC ID\tPARTITION\tOFFSETS\tMIN TIME\tMAX TIME\tRECORDS\tBYTES\tGAPS\tCOMMITS",
		"orders\t0abc00000000\t0\t0..5\t1970-01-01T00:00:00.900Z\t1970-01-01T00:00:02.000Z\t4\t"+hb(o0)+"\tcompacted=2\t2",
		"orders\t0abc00000000\t1\t3..4\t1970-01-01T00:00:01.500Z\t1970-01-01T00:00:01.600Z\t2\t"+hb(o1)+"\tbefore-start=3\t1",
		"orders\t0abc00000000\ttotal\t\t1970-01-01T00:00:00.900Z\t1970-01-01T00:00:02.000Z\t6\t"+hb(o0+o1)+"\tcompacted=2,before-start=3\t3",
		"orders (old)\t010000000000\t0\t0..1\t1970-01-01T00:00:00.010Z\t1970-01-01T00:00:00.011Z\t2\t"+hb(old)+"\t-\t1",
		"orders (old)\t010000000000\ttotal\t\t1970-01-01T00:00:00.010Z\t1970-01-01T00:00:00.011Z\t2\t"+hb(old)+"\t-\t1",
		"payments\t020000000000\t0\t10..10\t1970-01-01T00:00:05.000Z\t1970-01-01T00:00:05.000Z\t1\t"+hb(pay)+"\tDATA-LOSS=10\t1",
		"payments\t020000000000\ttotal\t\t1970-01-01T00:00:05.000Z\t1970-01-01T00:00:05.000Z\t1\t"+hb(pay)+"\tDATA-LOSS=10\t1",
		"",
		"2 topics, 4 partitions, 9 records, "+hb(o0+o1+old+pay),
		"DATA-LOSS gaps in 1 partitions: retention deleted records before they were archived (kbackup verify names them)",
	)
	out, errOut, code := runCLI(t, nil, "ls", "--store", f.url)
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if out != want {
		t.Fatalf("stdout:\n%s\nwant:\n%s", out, want)
	}

	out, _, code = runCLI(t, nil, "ls", "--store", f.url, "--topics", "pay.*")
	if code != 0 || !strings.Contains(out, "payments") || strings.Contains(out, "orders") || !strings.Contains(out, "1 topics, 1 partitions") {
		t.Fatalf("--topics: exit %d\n%s", code, out)
	}
	// The regular expression matches the whole name.
	out, _, code = runCLI(t, nil, "ls", "--store", f.url, "--topics", "pay")
	if code != 0 || out != "no topics archived\n" {
		t.Fatalf("--topics pay: exit %d\n%s", code, out)
	}
}

func TestLsJSON(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	o0 := f.segmentBytes(t, "topics/orders/"+ordersID.String()+"/0000000000/")
	o1 := f.segmentBytes(t, "topics/orders/"+ordersID.String()+"/0000000001/")
	out, errOut, code := runCLI(t, nil, "ls", "--store", f.url, "--json", "--topics", "orders")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	gaps := func(c, bs int) string {
		return fmt.Sprintf(`{"compacted":%d,"transaction":0,"not_returned":0,"data_loss":0,"before_start":%d}`, c, bs)
	}
	// Nothing expired: the fields of the expiry are zero.
	noExp := func(total bool) string {
		start := "0"
		if total {
			start = "null"
		}
		return `,"archive_start":` + start + `,"expired_records":0,"expired_bytes":0,"expired_gaps":` + gaps(0, 0) + `,"expired_commits":0,"recoverable_from_ms":null`
	}
	want := `{"schema":"kbackup.ls/v1","format_version":1,"store":"` + f.url + `","topics":[{"topic":"orders","incarnations":[` +
		`{"topic_id":"01000000000000000000000000000000","current":false,"first_seen_ms":10,"partitions":[` +
		`{"partition":0,"first_record_offset":0,"end_offset":1,"min_timestamp_ms":10,"max_timestamp_ms":11,"records":2,"bytes":%[1]d,"gaps":` + gaps(0, 0) + `,"commits":1,"last_commit_ms":1700000000000` + noExp(false) + `}],` +
		`"totals":{"partition":null,"first_record_offset":null,"end_offset":null,"min_timestamp_ms":10,"max_timestamp_ms":11,"records":2,"bytes":%[1]d,"gaps":` + gaps(0, 0) + `,"commits":1,"last_commit_ms":1700000000000` + noExp(true) + `}},` +
		`{"topic_id":"0abc0000000000000000000000000000","current":true,"first_seen_ms":20,"partitions":[` +
		`{"partition":0,"first_record_offset":0,"end_offset":5,"min_timestamp_ms":900,"max_timestamp_ms":2000,"records":4,"bytes":%[2]d,"gaps":` + gaps(2, 0) + `,"commits":2,"last_commit_ms":1700000000000` + noExp(false) + `},` +
		`{"partition":1,"first_record_offset":3,"end_offset":4,"min_timestamp_ms":1500,"max_timestamp_ms":1600,"records":2,"bytes":%[3]d,"gaps":` + gaps(0, 3) + `,"commits":1,"last_commit_ms":1700000000000` + noExp(false) + `}],` +
		`"totals":{"partition":null,"first_record_offset":null,"end_offset":null,"min_timestamp_ms":900,"max_timestamp_ms":2000,"records":6,"bytes":%[4]d,"gaps":` + gaps(2, 3) + `,"commits":3,"last_commit_ms":1700000000000` + noExp(true) + `}}]}]}`
	want = fmt.Sprintf(want, f.segmentBytes(t, "topics/orders/"+ordersOldID.String()+"/"), o0, o1, o0+o1)
	var compact bytes.Buffer
	if err := json.Compact(&compact, []byte(out)); err != nil {
		t.Fatalf("invalid JSON: %v\n%s", err, out)
	}
	if compact.String() != want {
		t.Fatalf("JSON:\n%s\nwant:\n%s", compact.String(), want)
	}

	out, _, code = runCLI(t, nil, "ls", "--store", f.url, "--json", "--topics", "none")
	if code != 0 || strings.Join(strings.Fields(out), "") != `{"schema":"kbackup.ls/v1","format_version":1,"store":"`+f.url+`","topics":[]}` {
		t.Fatalf("empty JSON: %d %s", code, out)
	}
}

func TestLsCorruptHead(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	commits := f.keys(t, "topics/payments/", "/commits/")
	if err := f.st.Put(t.Context(), commits[0], strings.NewReader("KBCM"), 4, putOverwrite); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runCLI(t, nil, "ls", "--store", f.url)
	if code != 1 || out != "" {
		t.Fatalf("exit %d, stdout %q", code, out)
	}
	oneLineErr(t, errOut, commits[0], "corrupt")
}
