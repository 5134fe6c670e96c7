package restore

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/kbackup/kbackup/internal/logrange"
)

// WritePlan prints the plan for an operator: target topics (created or
// existing), per partition the source offset and time range, approximate
// records and bytes, the target partition and state, and the groups.
func (p *Plan) WritePlan(w io.Writer) error {
	sortPlan(p)
	var b strings.Builder
	fmt.Fprintf(&b, "restore %s into cluster %q\n", p.RestoreID, p.TargetClusterID)
	fmt.Fprintf(&b, "range: %s; topic configs and group offsets as captured at or before %s\n", p.Range, fmtMs(p.CatalogMs))
	for _, t := range p.Topics {
		if t.Create {
			fmt.Fprintf(&b, "topic %s -> %s: create with %d partitions, replication factor %s, configs %s\n",
				t.Source, t.Target, t.Partitions, rfString(t.ReplicationFactor), configString(t.Configs))
		} else {
			fmt.Fprintf(&b, "topic %s -> %s: exists (%d partitions)\n", t.Source, t.Target, t.Partitions)
		}
	}
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tOFFSETS\tTIME (approx)\tRECORDS (<=)\tBYTES (<=)\tTARGET\tSTATE")
	for _, pp := range p.Partitions {
		offs, times := "none", "-"
		if pp.To >= pp.From {
			offs = fmt.Sprintf("%d..%d", pp.From, pp.To)
			times = logrange.FormatTime(pp.MinTimestamp) + ".." + logrange.FormatTime(pp.MaxTimestamp)
		}
		tgt := fmt.Sprintf("%s/%d", pp.TargetTopic, pp.TargetPartition)
		if pp.TargetPartition < 0 {
			tgt = pp.TargetTopic + "/(by key)"
		}
		fmt.Fprintf(tw, "%s/%d\t%s\t%s\t%d\t%s\t%s\t%s\n", pp.SourceTopic, pp.SourcePartition, offs, times,
			pp.ApproxRecords, humanBytes(pp.ApproxBytes), tgt, pp.State)
	}
	tw.Flush()
	for _, g := range p.Groups {
		fmt.Fprintf(&b, "group %s: %d offsets to translate", g.Group, g.Offsets)
		if g.ActiveMembers > 0 {
			fmt.Fprintf(&b, " (%d active members, --force)", g.ActiveMembers)
		}
		b.WriteString("\n")
	}
	for _, warn := range p.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", warn)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func rfString(rf int16) string {
	if rf < 0 {
		return "broker default"
	}
	return fmt.Sprint(rf)
}

func configString(m map[string]string) string {
	if len(m) == 0 {
		return "none"
	}
	var kv []string
	for k, v := range m {
		kv = append(kv, k+"="+v)
	}
	sort.Strings(kv)
	return strings.Join(kv, ",")
}

// WriteReport prints the final summary: per partition its state and
// records, the groups moved and the totals.
func (s *Summary) WriteReport(w io.Writer) error {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tTARGET\tSTATE\tRECORDS\tTHIS RUN\tERROR")
	for _, r := range s.Partitions {
		tgt := fmt.Sprintf("%s/%d", r.TargetTopic, r.TargetPartition)
		if r.TargetPartition < 0 {
			tgt = r.TargetTopic
		}
		msg := ""
		if r.Err != nil {
			msg = r.Err.Error()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", r.Name(), tgt, r.Status, r.Records, r.Produced, msg)
	}
	tw.Flush()
	for _, g := range s.Groups {
		state := "committed"
		if g.Err != nil {
			state = "FAILED: " + g.Err.Error()
		}
		fmt.Fprintf(&b, "group %s: %s\n", g.Group, state)
		for _, o := range g.Offsets {
			fmt.Fprintf(&b, "  %s/%d offset %d -> %s/%d offset %d\n", o.SourceTopic, o.Partition, o.SourceOffset, o.TargetTopic, o.TargetPartition, o.TargetOffset)
		}
	}
	fmt.Fprintf(&b, "restore %s: %d records (%s) produced in %s\n", s.RestoreID, s.Records, humanBytes(s.Bytes), s.Duration.Round(1e6))
	_, err := io.WriteString(w, b.String())
	return err
}
