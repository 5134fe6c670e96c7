package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/cmd/kbackup/cli"
	"github.com/kbackup/kbackup/internal/kfaketest"
)

var promql = parser.NewParser(parser.Options{})

// metricNames returns the metric names an expression selects, sorted. A
// selector without a literal name (e.g. {__name__=~"..."}) is an error:
// the check could not vouch for it.
func metricNames(expr string) ([]string, error) {
	e, err := promql.ParseExpr(expr)
	if err != nil {
		return nil, fmt.Errorf("parse %q: %w", expr, err)
	}
	var names []string
	var bad error
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				name = m.Value
			}
		}
		if name == "" {
			bad = fmt.Errorf("%q selects series without a metric name", expr)
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
		return nil
	})
	sort.Strings(names)
	return names, bad
}

// grafanaVars replaces Grafana's template variables with values PromQL
// accepts: intervals with a duration, others (inside label matchers) with a word.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h",
	"${datasource}", "x", "$datasource", "x", "$job", "x", "$topic", "x")

// dashboardExprs returns every PromQL expression of the dashboard: the
// panels' target expressions and the query variables' label_values(SELECTOR, label).
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var exprs []string
	var walk func(key string, v any)
	walk = func(key string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				walk(k, c)
			}
		case []any:
			for _, c := range v {
				walk(key, c)
			}
		case string:
			switch key {
			case "expr":
				exprs = append(exprs, grafanaVars.Replace(v))
			case "query", "definition":
				if inner, ok := strings.CutPrefix(v, "label_values("); ok {
					i := strings.LastIndex(inner, ",")
					if i < 0 {
						t.Errorf("query %q: want label_values(SELECTOR, label)", v)
						return
					}
					exprs = append(exprs, grafanaVars.Replace(inner[:i]))
				}
			}
		}
	}
	walk("", d)
	return exprs
}

// TestDashboardPanels: the dashboard shows what the issue asks for.
func TestDashboardPanels(t *testing.T) {
	all := strings.Join(dashboardExprs(t), "\n")
	for what, metric := range map[string]string{
		"lag seconds":        "kbackup_archive_lag_seconds",
		"recoverable window": "kbackup_archive_earliest_timestamp_seconds",
		"window end":         "kbackup_archive_latest_timestamp_seconds",
		"DATA-LOSS":          `kbackup_archive_gap_offsets_total{job=~"x", topic=~"x", reason="DATA-LOSS"}`,
		"throughput":         "kbackup_archive_records_total",
		"bytes":              "kbackup_archive_bytes_total",
		"store errors":       "kbackup_store_errors_total",
		"fenced commits":     "kbackup_archive_fenced_total",
	} {
		if !strings.Contains(all, metric) {
			t.Errorf("the dashboard shows no %s (%s)", what, metric)
		}
	}
}

// TestDashboardAndRulesUseExportedMetrics runs the real archiver (the CLI's
// archive command, in-process, against kfake and a directory store), makes
// it commit records and gaps and fail a store call, scrapes its /metrics,
// and checks that every metric the dashboard and the alert rules select is
// one it exports.
// externalMetrics are the metrics the rules use that kbackup does not
// export, with where they come from.
var externalMetrics = map[string]string{
	"kube_job_status_failed": "kube-state-metrics", // KbackupVerifyFailed: the chart's verify CronJob
}

func TestDashboardAndRulesUseExportedMetrics(t *testing.T) {
	want := map[string][]string{} // metric -> where it is used
	for _, e := range dashboardExprs(t) {
		names, err := metricNames(e)
		if err != nil {
			t.Errorf("%s: %v", dashboardFile, err)
		}
		for _, n := range names {
			want[n] = append(want[n], "dashboard")
		}
	}
	for alert, e := range alertExprs(t) {
		names, err := metricNames(e)
		if err != nil {
			t.Errorf("%s: %v", alert, err)
		}
		for _, n := range names {
			want[n] = append(want[n], alert)
		}
	}
	if len(want) < 15 {
		t.Fatalf("only %d metrics referenced: %v", len(want), want)
	}

	exported := runArchiverForMetrics(t, want)
	var missing []string
	for n, where := range want {
		if src, ok := externalMetrics[n]; ok {
			t.Logf("%s is %s's (used by %s)", n, src, strings.Join(slices.Compact(where), ", "))
			continue
		}
		if !exported[n] {
			missing = append(missing, fmt.Sprintf("%s (used by %s)", n, strings.Join(slices.Compact(where), ", ")))
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		var have []string
		for n := range exported {
			have = append(have, n)
		}
		sort.Strings(have)
		t.Fatalf("not exported by the archiver:\n  %s\nexported:\n  %s", strings.Join(missing, "\n  "), strings.Join(have, "\n  "))
	}
	t.Logf("%d metrics used by the dashboard and the rules, all exported (of %d sample names)", len(want), len(exported))
}

// runArchiverForMetrics runs `kbackup archive --listen` until every name in
// want is exported (or 30 s passed) and returns the sample names exported:
// a histogram h exports h_bucket, h_sum and h_count.
func runArchiverForMetrics(t *testing.T, want map[string][]string) map[string]bool {
	t.Helper()
	c := kfaketest.Cluster(t)
	const topic = "orders"
	kfaketest.CreateTopic(t, c, topic, 2, nil)
	cl := kfaketest.Client(t, c, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produce := func(n int) {
		for i := 0; i < n; i++ {
			kfaketest.Produce(t, cl, &kgo.Record{Partition: int32(i % 2), Value: []byte(fmt.Sprint(i))})
		}
	}
	produce(20)
	// Offsets 0..2 of partition 0 are gone before archiving starts: a gap.
	if _, err := kadm.NewClient(cl).DeleteRecords(context.Background(), kadm.Offsets{topic: {0: {Topic: topic, Partition: 0, At: 3}}}); err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(t.TempDir(), "archive")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var stderr bytes.Buffer
	exit := make(chan int, 1)
	go func() {
		exit <- cli.Run(ctx, []string{"kbackup", "archive", "--brokers", c.ListenAddrs()[0], "--store", "file://" + dir,
			"--listen", addr, "--flush-interval", "100ms", "--refresh-interval", "200ms", "--log-level", "error"}, io.Discard, &stderr)
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case code := <-exit:
			if code != 0 {
				t.Errorf("archive exited %d: %s", code, stderr.String())
			}
		case <-time.After(90 * time.Second):
			t.Errorf("archive did not stop within 90 s")
		}
	}
	defer stop()

	scrape := func() map[string]bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(resp.Body)
		if err != nil {
			t.Fatalf("parse /metrics: %v", err)
		}
		names := map[string]bool{}
		for n, f := range fams {
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				names[n+"_bucket"], names[n+"_sum"], names[n+"_count"] = true, true, true
			case dto.MetricType_SUMMARY:
				names[n], names[n+"_sum"], names[n+"_count"] = true, true, true
			default:
				names[n] = true
			}
		}
		return names
	}
	waitFor := func(what string, done func(map[string]bool) bool) map[string]bool {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			names := scrape()
			if names != nil && done(names) {
				return names
			}
			if time.Now().After(deadline) {
				t.Logf("waiting for %s: gave up after 30 s (stderr: %s)", what, stderr.String())
				return names
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitFor("the first commits", func(n map[string]bool) bool {
		return n["kbackup_archive_records_total"] && n["kbackup_archive_gap_offsets_total"]
	})

	// A store that fails: the directory is replaced by a file while
	// records arrive, until a failed store call is counted.
	if err := os.Rename(dir, dir+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	produce(4)
	waitFor("a store error", func(n map[string]bool) bool { return n["kbackup_store_errors_total"] })
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dir+".away", dir); err != nil {
		t.Fatal(err)
	}
	produce(4)
	names := waitFor("every metric used", func(n map[string]bool) bool {
		for w := range want {
			if !n[w] {
				return false
			}
		}
		return true
	})
	stop()
	return names
}
