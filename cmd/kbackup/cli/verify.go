package cli

import (
	"bufio"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kbackup/kbackup/archive"
	"github.com/kbackup/kbackup/internal/units"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
)

func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:  "verify",
		Usage: "check the archive's integrity: checksums, continuity, every gap explained",
		Description: "Reads every commit and segment of the selected topics in full and checks checksums,\n" +
			"the commit chain, the indexes and the time index. Prints one line per problem or warning\n" +
			"(naming the object and offsets), then a summary. DATA-LOSS gaps are problems; other gaps\n" +
			"are explained (listed with --gaps). Orphan segments left by fenced or crashed writers are\n" +
			"warnings. A partition whose oldest offsets expired (kbackup expire) is verified from its\n" +
			"archive start: expired offsets, and objects below it awaiting deletion, are never problems.\n" +
			"Exits non-zero if any problem was found.",
		Flags: append(append(append(globalFlags(), kafkaFlags()...),
			&cli.BoolFlag{Name: "gaps", Usage: "also list every explained gap and, with --brokers, every partition's archiver lag"},
			&cli.IntFlag{Name: "concurrency", Usage: "verify `N` partitions at once", Value: manifest.DefaultVerifyConcurrency},
			&cli.DurationFlag{Name: "lag-allowance", Value: archive.DefaultLagAllowance,
				Usage: "with --brokers: records newer than this may still be missing from the archive (archiver lag, not a problem); 0 allows none"},
			jsonFlag(),
		), topicFlags("topics")...),
		Action: runVerify,
	}
}

func runVerify(c *cli.Context) error {
	s, err := setup(c)
	if err != nil {
		return err
	}
	sel, err := selection(c)
	if err != nil {
		return err
	}
	if c.Int("concurrency") < 1 {
		return usagef(c, "--concurrency must be at least 1")
	}
	opts := manifest.VerifyOptions{Filter: sel.Match, Concurrency: c.Int("concurrency")}
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
		allowance := c.Duration("lag-allowance")
		if allowance <= 0 {
			allowance = -1 // none
		}
		co := archive.CompletenessOptions{KafkaOpts: kopts, Topics: sel, Allowance: allowance}
		if sel == nil {
			co.Captured, co.CapturedAt = capturedTopics(c, s, a)
		}
		opts.Completeness = archive.Completeness(co)
	}
	w := bufio.NewWriter(s.stdout)
	asJSON, showGaps := c.Bool("json"), c.Bool("gaps")
	var (
		werr     error
		findings []verifyFinding
		lag      verifyLag
	)
	res, err := a.Verify(c.Context, opts, func(f manifest.Finding) {
		isLag := f.Severity == manifest.SeverityInfo && f.Gap == 0
		if isLag {
			lag.Partitions++
			lag.Offsets += f.To - f.From + 1
		}
		if f.Severity == manifest.SeverityInfo && !showGaps {
			return
		}
		if f.Severity >= manifest.SeverityWarning {
			s.log.Debug("verify finding", "severity", f.Severity.String(), "key", f.Key, "message", f.Message)
		}
		if asJSON {
			findings = append(findings, verifyFindingDoc(f))
			return
		}
		if _, err := fmt.Fprintln(w, f.String()); err != nil && werr == nil {
			werr = err
		}
	})
	if err != nil {
		_ = w.Flush()
		return fmt.Errorf("verify: %w", err)
	}
	if asJSON {
		werr = writeJSON(w, verifyDocFor(a.Store().String(), &res, lag, findings))
	} else {
		fmt.Fprintln(w, verifySummary(&res, lag))
	}
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

// verifyLag adds up what verify --brokers found within the lag allowance.
type verifyLag struct {
	Partitions int64 `json:"partitions"`
	Offsets    int64 `json:"offsets"`
}

// verifyDoc is what `verify --json` prints (schema kbackup.verify/v1).
type verifyDoc struct {
	Schema     string           `json:"schema"`
	Store      string           `json:"store"`
	OK         bool             `json:"ok"`
	Topics     int              `json:"topics"`
	Partitions int              `json:"partitions"`
	Commits    int64            `json:"commits"`
	Segments   int64            `json:"segments"`
	Bytes      int64            `json:"bytes"`
	Records    int64            `json:"records"`
	GapOffsets map[string]int64 `json:"gap_offsets"`
	Problems   int64            `json:"problems"`
	Warnings   int64            `json:"warnings"`
	// Lag is what verify --brokers found missing but within the allowance.
	Lag verifyLag `json:"archiver_lag"`
	// Findings are the problems and warnings (and gaps and lag with --gaps).
	Findings []verifyFinding `json:"findings"`
	// ExpiredPartitions have an archive start (kbackup expire); the
	// ExpiredOffsets below it are not verified and never a problem.
	// AwaitingDeletion counts the objects still stored below them.
	ExpiredPartitions int   `json:"expired_partitions"`
	ExpiredOffsets    int64 `json:"expired_offsets"`
	AwaitingDeletion  int64 `json:"awaiting_deletion"`
}

// verifyFinding is one finding in verify --json.
type verifyFinding struct {
	Severity  string `json:"severity"` // PROBLEM, warning, gap or info
	Topic     string `json:"topic,omitempty"`
	TopicID   string `json:"topic_id,omitempty"`
	Partition *int32 `json:"partition"`
	Key       string `json:"key,omitempty"`
	From      *int64 `json:"from"`
	To        *int64 `json:"to"`
	Gap       string `json:"gap,omitempty"`
	Message   string `json:"message"`
}

func verifyFindingDoc(f manifest.Finding) verifyFinding {
	d := verifyFinding{Severity: strings.SplitN(f.String(), " ", 2)[0], Topic: f.Topic, Key: f.Key, Message: f.Message}
	if f.TopicID != (manifest.TopicID{}) {
		d.TopicID = f.TopicID.String()
	}
	if f.Topic != "" && f.Partition >= 0 {
		d.Partition = ptr(f.Partition)
	}
	if f.From >= 0 {
		d.From = ptr(f.From)
		if f.To >= 0 {
			d.To = ptr(f.To)
		}
	}
	if f.Gap != 0 {
		d.Gap = f.Gap.String()
	}
	return d
}

func verifyDocFor(storeURL string, r *manifest.VerifyResult, lag verifyLag, findings []verifyFinding) verifyDoc {
	d := verifyDoc{Schema: "kbackup.verify/v1", Store: storeURL, OK: r.OK(), Topics: r.Topics, Partitions: r.Partitions, Commits: r.Commits,
		Segments: r.Segments, Bytes: r.Bytes, Records: r.Records, GapOffsets: map[string]int64{}, Problems: r.Problems, Warnings: r.Warnings,
		Lag: lag, Findings: findings, ExpiredPartitions: r.ExpiredPartitions, ExpiredOffsets: r.ExpiredOffsets, AwaitingDeletion: r.AwaitingDeletion}
	for i := 1; i < manifest.NumGapReasons; i++ {
		d.GapOffsets[manifest.GapReason(i).String()] = r.GapOffsets[i]
	}
	if d.Findings == nil {
		d.Findings = []verifyFinding{}
	}
	return d
}

// verifySummary is verify's last line.
func verifySummary(r *manifest.VerifyResult, lag verifyLag) string {
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
	line := fmt.Sprintf("verify %s: %d topics, %d partitions, %d commits, %d segments (%s), %d records; %s; %d problems, %d warnings",
		verdict, r.Topics, r.Partitions, r.Commits, r.Segments, units.Bytes(r.Bytes), r.Records, g, r.Problems, r.Warnings)
	if r.ExpiredPartitions > 0 {
		line += fmt.Sprintf("; expired: %d offsets below the archive start of %d partitions (retention, not verified)", r.ExpiredOffsets, r.ExpiredPartitions)
		if r.AwaitingDeletion > 0 {
			line += fmt.Sprintf(", %d objects await deletion", r.AwaitingDeletion)
		}
	}
	if lag.Partitions > 0 {
		line += fmt.Sprintf("; archiver lag: %d offsets in %d partitions within the allowance (--gaps lists them)", lag.Offsets, lag.Partitions)
	}
	return line
}

// capturedTopics returns the topics of the archive's newest topics catalog
// capture and its time (nil when there is none or it cannot be read: the
// hint it feeds is optional).
func capturedTopics(c *cli.Context, s *session, a *manifest.Archive) (map[string]bool, time.Time) {
	tc, err := a.TopicsAt(c.Context, time.Now().Add(time.Hour).UnixMilli()) // allows an archiver's clock an hour ahead
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.log.Debug("verify: no topics capture to compare the live topics with", "err", err)
		}
		return nil, time.Time{}
	}
	names := make(map[string]bool, len(tc.Topics))
	for _, t := range tc.Topics {
		names[t.Name] = true
	}
	return names, time.UnixMilli(tc.CapturedMs)
}
