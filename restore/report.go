package restore

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/kbackup/kbackup/internal/logrange"
	"github.com/kbackup/kbackup/internal/units"
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
			pp.ApproxRecords, units.Bytes(pp.ApproxBytes), tgt, pp.State)
	}
	tw.Flush()
	for _, pp := range p.Partitions {
		if pp.ExpiredBelow > 0 {
			fmt.Fprintf(&b, "%s/%d: expired below %d (retention); the oldest recoverable offset is %d", pp.SourceTopic, pp.SourcePartition, pp.ExpiredBelow, pp.ExpiredBelow)
			if pp.RecoverableFromMs != 0 {
				fmt.Fprintf(&b, ", time %s", logrange.FormatTime(pp.RecoverableFromMs))
			}
			b.WriteString("\n")
		}
	}
	for _, g := range p.Groups {
		fmt.Fprintf(&b, "group %s: %d offsets to translate", g.Group, g.Offsets)
		if g.ActiveMembers > 0 {
			fmt.Fprintf(&b, " (%d active members, --force)", g.ActiveMembers)
		}
		if g.MovedMs > 0 {
			fmt.Fprintf(&b, "; this restore moved it at %s: not moved again (offsets translate --again moves it)", fmtMs(g.MovedMs))
		}
		b.WriteString("\n")
		for _, o := range g.Translated {
			how := "predicted"
			if !o.Predicted {
				how = "restored"
			}
			fmt.Fprintf(&b, "  %s/%d offset %d -> %s/%d offset %d (%s; committed there now: %s)\n", o.SourceTopic, o.Partition, o.SourceOffset,
				o.TargetTopic, o.TargetPartition, o.TargetOffset, how, offsetOrNone(o.From))
		}
	}
	for _, h := range p.Running {
		fmt.Fprintf(&b, "running: this restore is being run by %s since %s\n", h, fmtMs(h.StartedMs))
	}
	if p.CompletedMs > 0 {
		fmt.Fprintf(&b, "complete: this restore completed at %s (a rerun writes nothing)\n", fmtMs(p.CompletedMs))
	}
	for _, warn := range p.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", warn)
	}
	for _, r := range p.Refusals {
		fmt.Fprintf(&b, "refused: %s\n", r)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func offsetOrNone(o int64) string {
	if o < 0 {
		return "none"
	}
	return fmt.Sprint(o)
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
		state := g.State
		switch {
		case g.Err != nil:
			state = "FAILED: " + g.Err.Error()
		case g.State == GroupMoved:
			state = "committed"
		case g.MovedMs > 0:
			state += fmt.Sprintf(" (moved at %s; offsets translate --again moves it)", fmtMs(g.MovedMs))
		}
		fmt.Fprintf(&b, "group %s: %s\n", g.Group, state)
		for _, o := range g.Offsets {
			fmt.Fprintf(&b, "  %s/%d offset %d -> %s/%d offset %d (was %s)\n", o.SourceTopic, o.Partition, o.SourceOffset, o.TargetTopic, o.TargetPartition, o.TargetOffset, offsetOrNone(o.From))
		}
	}
	if r := s.Report; r != nil {
		fmt.Fprintf(&b, "restore %s is complete: %d records in %d partitions, completed at %s by %s\n", r.RestoreID, r.Records, len(r.Lanes), fmtMs(r.CompletedMs), r.CompletedBy)
	}
	fmt.Fprintf(&b, "restore %s: %d records (%s) produced in %s\n", s.RestoreID, s.Records, units.Bytes(s.Bytes), s.Duration.Round(1e6))
	_, err := io.WriteString(w, b.String())
	return err
}

// JSONReport is the summary in the form `restore --json` prints (schema
// kbackup.restore/v1, docs/CLI.md).
func (s *Summary) JSONReport() any {
	type part struct {
		PartitionResult
		Err string `json:"error,omitempty"`
	}
	type group struct {
		GroupResult
		Err string `json:"error,omitempty"`
	}
	out := struct {
		Schema     string    `json:"schema"`
		RestoreID  string    `json:"restore_id"`
		Partitions []part    `json:"partitions"`
		Groups     []group   `json:"groups"`
		Report     *Report   `json:"report"`
		OffsetMap  string    `json:"offset_map_key,omitempty"`
		Records    int64     `json:"records_this_run"`
		Bytes      int64     `json:"bytes_this_run"`
		DurationMs int64     `json:"duration_ms"`
		Plan       *Plan     `json:"plan"`
		Refusals   []Refusal `json:"refusals,omitempty"`
	}{Schema: "kbackup.restore/v1", RestoreID: s.RestoreID, Report: s.Report, Records: s.Records, Bytes: s.Bytes, DurationMs: s.Duration.Milliseconds(), Plan: s.Plan}
	for _, p := range s.Partitions {
		jp := part{PartitionResult: p}
		if p.Err != nil {
			jp.Err = p.Err.Error()
		}
		out.Partitions = append(out.Partitions, jp)
	}
	for _, g := range s.Groups {
		jg := group{GroupResult: g}
		if g.Err != nil {
			jg.Err = g.Err.Error()
		}
		out.Groups = append(out.Groups, jg)
	}
	if s.OffsetMap != nil {
		out.OffsetMap = offsetMapKey(s.RestoreID)
	}
	return out
}
