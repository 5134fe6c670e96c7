package replay

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteReport prints the plan or the result, one line per partition.
func (s *Summary) WriteReport(w io.Writer) error {
	var b strings.Builder
	head := s.Mode
	if s.CycleID != "" {
		head += " from cycle " + s.CycleID
	}
	if s.Range != "" {
		head += ", up to " + s.Range
	}
	if s.DryRun {
		head += " (dry run, nothing written)"
	}
	fmt.Fprintln(&b, head)
	for _, wn := range s.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", wn)
	}
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PARTITION\tLIVE END\tARCHIVE END\tCYCLE RANGE\tREPLAY\tRECORDS\tSTATE")
	for _, p := range s.Partitions {
		cyc := "-"
		if p.CycleLo >= 0 {
			cyc = fmt.Sprintf("%d..%d", p.CycleLo, p.CycleHi)
		}
		rng := "-"
		if p.To >= p.From {
			rng = fmt.Sprintf("%d..%d", p.From, p.To)
		}
		n := p.To - p.From + 1
		if s.DryRun || p.State == StateFailed {
			n = max(n, 0)
		} else {
			n = p.Produced
		}
		state := p.State
		switch {
		case p.Problem != "":
			state += ": " + p.Problem
		case p.Err != nil:
			state += ": " + p.Err.Error()
		case p.Gap != nil:
			state += fmt.Sprintf(" (stops before the archive gap %s)", p.Gap)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%d\t%s\n", p.Name(), p.LiveEnd, p.ArchiveEnd, cyc, rng, n, state)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if !s.DryRun {
		fmt.Fprintf(&b, "%d records replayed in %s\n", s.Records, s.Duration.Round(time.Millisecond))
	}
	_, err := io.WriteString(w, b.String())
	return err
}
