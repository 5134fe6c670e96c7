package cli

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/kbackup/kbackup/internal/logrange"
	"github.com/kbackup/kbackup/internal/units"
	"github.com/kbackup/kbackup/manifest"
)

func lsCommand() *cli.Command {
	return &cli.Command{
		Name:  "ls",
		Usage: "list the archived topics and partitions: offset and time ranges, records, bytes, gaps",
		Description: "Reads each partition's latest commit only, so it is quick whatever the archive's size.\n" +
			"Offsets: first archived record .. last offset covered (records and gaps).\n" +
			"Times: smallest .. largest record timestamp archived (RFC 3339, UTC).\n" +
			"Gaps: offsets without a record, by reason (compacted, transaction, not-returned,\n" +
			"DATA-LOSS, before-start). Older incarnations of a topic name (deleted and recreated)\n" +
			"are marked \"(old)\". After an expiry (kbackup expire, archive --retention) each partition\n" +
			"shows its recoverable window, from its archive start; EXPIRED says what lies below it.\n" +
			"--json prints a stable JSON document (schema kbackup.ls/v1, described in docs/CLI.md).",
		Flags:  append(append(globalFlags(), jsonFlag()), topicFlags("topics")...),
		Action: runLs,
	}
}

func runLs(c *cli.Context) error {
	s, err := setup(c)
	if err != nil {
		return err
	}
	sel, err := selection(c)
	if err != nil {
		return err
	}
	a, err := openArchive(c.Context, c, s)
	if err != nil {
		return err
	}
	sum, err := a.Summarize(c.Context, sel.Match)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(s.stdout)
	if c.Bool("json") {
		err = writeLsJSON(w, a.Store().String(), a.FormatVersion(), sum)
	} else {
		err = writeLsText(w, sum)
	}
	if err != nil {
		return err
	}
	return w.Flush()
}

// lsDoc is the stable document `kbackup ls --json` prints (schema
// "kbackup.ls/v1"; fields are only ever added). Offsets and timestamps are
// integers (timestamps in unix milliseconds) or null when there is none.
type lsDoc struct {
	// Schema is "kbackup.ls/v1".
	Schema string `json:"schema"`
	// FormatVersion is the archive's format version (its root marker's: 1,
	// or 2 once something expired).
	FormatVersion int `json:"format_version"`
	// Store is the archive's URL.
	Store  string    `json:"store"`
	Topics []lsTopic `json:"topics"`
}

// lsTopic is one topic name.
type lsTopic struct {
	Topic string `json:"topic"`
	// Incarnations are the topics that had the name, oldest first; the
	// last one (current: true) is the current topic.
	Incarnations []lsIncarnation `json:"incarnations"`
}

// lsIncarnation is one topic incarnation (Kafka topic id).
type lsIncarnation struct {
	TopicID     string        `json:"topic_id"` // 32 lowercase hex digits
	Current     bool          `json:"current"`
	FirstSeenMs int64         `json:"first_seen_ms"`
	Partitions  []lsPartition `json:"partitions"`
	// Totals adds up the partitions (its partition and offset fields are null).
	Totals lsPartition `json:"totals"`
}

// lsPartition is one partition (or an incarnation's totals).
type lsPartition struct {
	Partition *int32 `json:"partition"`
	// FirstRecordOffset is the offset of the first archived record.
	FirstRecordOffset *int64 `json:"first_record_offset"`
	// EndOffset is the last offset the archive covers, record or gap;
	// archiving continues at end_offset+1.
	EndOffset *int64 `json:"end_offset"`
	// MinTimestampMs and MaxTimestampMs bound the archived records'
	// timestamps.
	MinTimestampMs *int64 `json:"min_timestamp_ms"`
	MaxTimestampMs *int64 `json:"max_timestamp_ms"`
	Records        int64  `json:"records"`
	// Bytes is the size of the stored segments.
	Bytes int64 `json:"bytes"`
	// Gaps counts the offsets without a record, by reason.
	Gaps    lsGaps `json:"gaps"`
	Commits int64  `json:"commits"`
	// LastCommitMs is when the latest commit was written (writer clock).
	LastCommitMs *int64 `json:"last_commit_ms"`
	// ArchiveStart is the first recoverable offset: retention (kbackup
	// expire) expired the offsets below it (0: nothing expired; null in
	// totals). The offsets, times, records, bytes, gaps and commits above
	// are those of the recoverable window, from it to end_offset.
	ArchiveStart *int64 `json:"archive_start"`
	// ExpiredRecords, ExpiredBytes, ExpiredGaps and ExpiredCommits are what
	// lay below the archive start.
	ExpiredRecords int64  `json:"expired_records"`
	ExpiredBytes   int64  `json:"expired_bytes"`
	ExpiredGaps    lsGaps `json:"expired_gaps"`
	ExpiredCommits int64  `json:"expired_commits"`
	// RecoverableFromMs is the oldest time a --from bound may name without
	// reaching expired records; null when nothing expired.
	RecoverableFromMs *int64 `json:"recoverable_from_ms"`
}

// lsGaps counts gap offsets by reason.
type lsGaps struct {
	Compacted   int64 `json:"compacted"`
	Transaction int64 `json:"transaction"`
	NotReturned int64 `json:"not_returned"`
	DataLoss    int64 `json:"data_loss"`
	BeforeStart int64 `json:"before_start"`
}

func ptr[T any](v T) *T { return &v }

func lsGapsDoc(g [manifest.NumGapReasons]int64) lsGaps {
	return lsGaps{Compacted: g[manifest.GapCompacted], Transaction: g[manifest.GapTransaction],
		NotReturned: g[manifest.GapNotReturned], DataLoss: g[manifest.GapDataLoss], BeforeStart: g[manifest.GapBeforeStart]}
}

func lsPartitionDoc(p *manifest.PartitionSummary, total bool) lsPartition {
	d := lsPartition{Records: p.Records, Bytes: p.Bytes, Commits: p.Commits, Gaps: lsGapsDoc(p.GapOffsets),
		ExpiredRecords: p.ExpiredRecords, ExpiredBytes: p.ExpiredBytes, ExpiredGaps: lsGapsDoc(p.ExpiredGapOffsets), ExpiredCommits: p.ExpiredCommits}
	if !total {
		d.Partition = ptr(p.Partition)
		d.ArchiveStart = ptr(p.Start)
		if p.StartMarker != nil {
			if ms, ok := p.StartMarker.RecoverableFrom(); ok {
				d.RecoverableFromMs = ptr(ms)
			}
		}
		if p.FirstRecordOffset >= 0 {
			d.FirstRecordOffset = ptr(p.FirstRecordOffset)
		}
		if p.End >= 0 {
			d.EndOffset = ptr(p.End)
		}
	}
	if p.HasTimestamps {
		d.MinTimestampMs, d.MaxTimestampMs = ptr(p.FirstTimestamp), ptr(p.MaxTimestamp)
	}
	if p.Commits > 0 {
		d.LastCommitMs = ptr(p.LastCommitMs)
	}
	return d
}

func writeLsJSON(w io.Writer, storeURL string, version int, sum *manifest.Summary) error {
	doc := lsDoc{Schema: "kbackup.ls/v1", FormatVersion: version, Store: storeURL, Topics: []lsTopic{}}
	for _, t := range sum.Topics {
		dt := lsTopic{Topic: t.Topic, Incarnations: []lsIncarnation{}}
		for _, inc := range t.Incarnations {
			di := lsIncarnation{TopicID: inc.TopicID.String(), Current: inc.Current, FirstSeenMs: inc.FirstSeenMs,
				Partitions: []lsPartition{}, Totals: lsPartitionDoc(&inc.Totals, true)}
			for i := range inc.Partitions {
				di.Partitions = append(di.Partitions, lsPartitionDoc(&inc.Partitions[i], false))
			}
			dt.Incarnations = append(dt.Incarnations, di)
		}
		doc.Topics = append(doc.Topics, dt)
	}
	return writeJSON(w, doc)
}

// writeLsText prints one table row per partition and a total row per
// topic incarnation, the current incarnation first.
func writeLsText(w io.Writer, sum *manifest.Summary) error {
	if len(sum.Topics) == 0 {
		_, err := fmt.Fprintln(w, "no topics archived")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	// The EXPIRED column only when something expired: the table of an
	// archive without retention stays as it always was.
	showExpired := false
	for _, t := range sum.Topics {
		for _, inc := range t.Incarnations {
			showExpired = showExpired || inc.Totals.ExpiredCommits > 0
		}
	}
	header := "TOPIC\tTOPIC ID\tPARTITION\tOFFSETS\tMIN TIME\tMAX TIME\tRECORDS\tBYTES\tGAPS\tCOMMITS"
	if showExpired {
		header += "\tEXPIRED"
	}
	fmt.Fprintln(tw, header)
	var topics, partitions, records, bytes, lossParts, expired, expiredParts int64
	for _, t := range sum.Topics {
		topics++
		for i := len(t.Incarnations) - 1; i >= 0; i-- { // current first
			inc := &t.Incarnations[i]
			name := t.Topic
			if !inc.Current {
				name += " (old)"
			}
			id := inc.TopicID.String()[:12]
			for j := range inc.Partitions {
				p := &inc.Partitions[j]
				partitions++
				records += p.Records
				bytes += p.Bytes
				if p.DataLoss() {
					lossParts++
				}
				if p.Start > 0 {
					expired += p.ExpiredRecords
					expiredParts++
				}
				writeLsRow(tw, name, id, fmt.Sprint(p.Partition), offsets(p), p, showExpired)
			}
			writeLsRow(tw, name, id, "total", "", &inc.Totals, showExpired)
		}
	}
	fmt.Fprintf(tw, "\n%d topics, %d partitions, %d records, %s\n", topics, partitions, records, units.Bytes(bytes))
	if expiredParts > 0 {
		fmt.Fprintf(tw, "expired in %d partitions: %d records below their archive start (retention); offsets, times and counts above are the recoverable windows\n", expiredParts, expired)
	}
	if lossParts > 0 {
		fmt.Fprintf(tw, "DATA-LOSS gaps in %d partitions: retention deleted records before they were archived (kbackup verify names them)\n", lossParts)
	}
	return tw.Flush()
}

func writeLsRow(w io.Writer, topic, id, part, offs string, p *manifest.PartitionSummary, showExpired bool) {
	minT, maxT := "-", "-"
	if p.HasTimestamps {
		minT, maxT = logrange.FormatTime(p.FirstTimestamp), logrange.FormatTime(p.MaxTimestamp)
	}
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d", topic, id, part, offs, minT, maxT,
		p.Records, units.Bytes(p.Bytes), gapsText(p.GapOffsets), p.Commits)
	if showExpired {
		exp := "-"
		switch {
		case part == "total" && p.ExpiredCommits > 0:
			exp = fmt.Sprintf("%d records", p.ExpiredRecords)
		case part != "total" && p.Start > 0:
			exp = fmt.Sprintf("below %d (%d records)", p.Start, p.ExpiredRecords)
		}
		fmt.Fprintf(w, "\t%s", exp)
	}
	fmt.Fprintln(w)
}

// offsets renders "first record .. end", "-" for what is missing.
func offsets(p *manifest.PartitionSummary) string {
	if p.End < 0 {
		return "-"
	}
	first := "-"
	if p.FirstRecordOffset >= 0 {
		first = fmt.Sprint(p.FirstRecordOffset)
	}
	return fmt.Sprintf("%s..%d", first, p.End)
}

// gapsText renders gap offsets by reason, "compacted=5,DATA-LOSS=3", or "-".
func gapsText(g [manifest.NumGapReasons]int64) string {
	var parts []string
	for r := 1; r < manifest.NumGapReasons; r++ {
		if g[r] > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", manifest.GapReason(r), g[r]))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}
