package deploy

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kbackup/kbackup/testenv"
)

const rulesTestFile = "prometheus/kbackup-rules_test.yaml"

type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.UnmarshalStrict(b, &rf); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	return rf
}

// alertExprs returns alert name -> expression.
func alertExprs(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if _, dup := out[r.Alert]; dup {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("alert %s: severity %q", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s: summary and description wanted", r.Alert)
			}
			out[r.Alert] = r.Expr
		}
	}
	return out
}

// TestRulesPromtool runs promtool check rules and promtool test rules (the
// synthetic-series unit tests in kbackup-rules_test.yaml).
func TestRulesPromtool(t *testing.T) {
	promtool, err := testenv.FindTool(testenv.ComponentPromtool)
	if err != nil {
		testenv.Unavailable(t, testenv.ComponentPromtool, "%v", err)
	}
	for _, args := range [][]string{{"check", "rules", "kbackup-rules.yaml"}, {"test", "rules", "kbackup-rules_test.yaml"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cmd := exec.CommandContext(ctx, promtool, args...)
		cmd.Dir = "prometheus"
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("promtool %s:\n%s", strings.Join(args, " "), strings.TrimSpace(string(out)))
	}
}

// TestRulesEveryAlertTested: every alert of the rules file is expected to
// fire in at least one promtool test case and expected not to fire in
// another; DATA-LOSS has the first-gap case.
func TestRulesEveryAlertTested(t *testing.T) {
	b, err := os.ReadFile(rulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	var tf struct {
		RuleFiles []string `json:"rule_files"`
		Tests     []struct {
			Name          string `json:"name"`
			AlertRuleTest []struct {
				EvalTime  string `json:"eval_time"`
				AlertName string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(b, &tf); err != nil {
		t.Fatalf("%s: %v", rulesTestFile, err)
	}
	if !slices.Equal(tf.RuleFiles, []string{"kbackup-rules.yaml"}) {
		t.Errorf("rule_files %v", tf.RuleFiles)
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, tc := range tf.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.AlertName] = true
			} else {
				silent[a.AlertName] = true
			}
		}
		if strings.Contains(tc.Name, "first gap") {
			fires["first gap"] = true
		}
	}
	for alert := range alertExprs(t) {
		if !fires[alert] || !silent[alert] {
			t.Errorf("alert %s: tested firing %v, not firing %v; want both", alert, fires[alert], silent[alert])
		}
	}
	if !fires["first gap"] {
		t.Error("no DATA-LOSS first-gap test case")
	}
}

// TestRulesCoverOperations: every metric that docs/OPERATIONS.md's "Metrics
// and alerts" table gives an alert for is used by an alert rule.
func TestRulesCoverOperations(t *testing.T) {
	doc, err := os.ReadFile("../docs/OPERATIONS.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(doc), "### Metrics and alerts")
	if !ok {
		t.Fatal(`docs/OPERATIONS.md has no "### Metrics and alerts"`)
	}
	table, _, _ = strings.Cut(table, "\n### ")
	used := map[string]bool{}
	for alert, expr := range alertExprs(t) {
		names, err := metricNames(expr)
		if err != nil {
			t.Errorf("alert %s: %v", alert, err)
		}
		for _, n := range names {
			used[n] = true
		}
	}
	metric := regexp.MustCompile("`(kbackup_[a-z_]+)")
	var alerting int
	for _, line := range strings.Split(table, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 5 || !strings.Contains(cells[1], "kbackup_") || strings.TrimSpace(cells[3]) == "" {
			continue
		}
		alerting++
		if strings.Contains(cells[1], "_latest_") { // "earliest..., ..._latest_...": the latest, checked below
			continue
		}
		name := metric.FindStringSubmatch(cells[1])[1]
		if !used[name] && !used[name+"_bucket"] { // a histogram is queried through its buckets
			t.Errorf("OPERATIONS.md alerts on %s (%s), no rule uses it", name, strings.TrimSpace(cells[3]))
		}
	}
	if alerting < 8 {
		t.Errorf("found %d alerting rows in the OPERATIONS.md table", alerting)
	}
	if !used["kbackup_archive_latest_timestamp_seconds"] {
		t.Error("no rule on kbackup_archive_latest_timestamp_seconds (latest older than the RPO)")
	}
}
