package cli

import (
	"bufio"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/kbackup/kbackup/archive"
	"github.com/kbackup/kbackup/internal/units"
	"github.com/kbackup/kbackup/manifest"
)

func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:  "verify",
		Usage: "check the archive's integrity: checksums, continuity, every gap explained",
		Description: "Reads every commit and segment of the selected topics in full and checks checksums,\n" +
			"the commit chain, the indexes and the time index. Prints one line per problem or warning\n" +
			"(naming the object and offsets), then a summary. DATA-LOSS gaps are problems; other gaps\n" +
			"are explained (listed with --gaps). Orphan segments left by fenced or crashed writers are\n" +
			"warnings. Exits non-zero if any problem was found.",
		Flags: append(append(globalFlags(), kafkaFlags()...),
			&cli.StringFlag{Name: "topics", Usage: "only topics whose whole name matches this `REGEX`"},
			&cli.BoolFlag{Name: "gaps", Usage: "also list every explained gap"},
			&cli.IntFlag{Name: "concurrency", Usage: "verify `N` partitions at once", Value: manifest.DefaultVerifyConcurrency},
		),
		Action: runVerify,
	}
}

func runVerify(c *cli.Context) error {
	s, err := setup(c)
	if err != nil {
		return err
	}
	filter, err := topicFilter(c, c.String("topics"))
	if err != nil {
		return err
	}
	if c.Int("concurrency") < 1 {
		return usagef(c, "--concurrency must be at least 1")
	}
	opts := manifest.VerifyOptions{Filter: filter, Concurrency: c.Int("concurrency")}
	a, err := openArchive(c.Context, c, s)
	if err != nil {
		return err
	}
	if len(s.g.brokers) > 0 {
		ko, err := kafkaOptions(c, s)
		if err != nil {
			return err
		}
		kopts, err := ko.ClientOpts(c.Context)
		if err != nil {
			return err
		}
		opts.Completeness = archive.Completeness(kopts, filter)
	}
	if err != nil {
		return err
	}
	w := bufio.NewWriter(s.stdout)
	showGaps := c.Bool("gaps")
	var werr error
	res, err := a.Verify(c.Context, opts, func(f manifest.Finding) {
		if f.Severity == manifest.SeverityInfo && !showGaps {
			return
		}
		if f.Severity >= manifest.SeverityWarning {
			s.log.Debug("verify finding", "severity", f.Severity.String(), "key", f.Key, "message", f.Message)
		}
		if _, err := fmt.Fprintln(w, f.String()); err != nil && werr == nil {
			werr = err
		}
	})
	if err != nil {
		_ = w.Flush()
		return fmt.Errorf("verify: %w", err)
	}
	fmt.Fprintln(w, verifySummary(&res))
	if err := w.Flush(); err != nil {
		return err
	}
	if werr != nil {
		return werr
	}
	if !res.OK() {
		return fmt.Errorf("verify found %d problems in %s (listed above)", res.Problems, a.Store())
	}
	return nil
}

// verifySummary is verify's last line.
func verifySummary(r *manifest.VerifyResult) string {
	var gaps []string
	for i := 1; i < manifest.NumGapReasons; i++ {
		if r.Gaps[i] > 0 {
			gaps = append(gaps, fmt.Sprintf("%s=%d offsets in %d gaps", manifest.GapReason(i), r.GapOffsets[i], r.Gaps[i]))
		}
	}
	g := "no gaps"
	if len(gaps) > 0 {
		g = "gaps: " + strings.Join(gaps, ", ")
	}
	verdict := "OK"
	if !r.OK() {
		verdict = "FAILED"
	}
	return fmt.Sprintf("verify %s: %d topics, %d partitions, %d commits, %d segments (%s), %d records; %s; %d problems, %d warnings",
		verdict, r.Topics, r.Partitions, r.Commits, r.Segments, units.Bytes(r.Bytes), r.Records, g, r.Problems, r.Warnings)
}
