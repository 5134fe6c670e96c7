package cli

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kbackup/kbackup/archive"
	"github.com/kbackup/kbackup/internal/logrange"
	"github.com/kbackup/kbackup/internal/topicsel"
	"github.com/kbackup/kbackup/internal/units"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/snapshot"
)

func expireCommand() *cli.Command {
	return &cli.Command{
		Name:  "expire",
		Usage: "apply the archive's retention once: expire old records, delete what expired before the grace period",
		Description: "One pass over the archive (cron-friendly; `archive --retention` runs the same pass for the\n" +
			"partitions it owns). Per partition it moves the archive start past the oldest whole commits the\n" +
			"retention expires (never past the last commit: the archiver resumes there), recording it in an\n" +
			"archive-start marker, and deletes the objects below an archive start recorded more than --grace\n" +
			"ago (restores and cats planned before it may still read them). Expired offsets are reported\n" +
			"as such by ls, cat, restore and verify, never as DATA-LOSS or a hole.\n" +
			"AGE: a record expires when every record of its commit and of the commits before it is older\n" +
			"than now - AGE (30d, 12h, 90m). SIZE: keep at least the newest SIZE of segments per partition\n" +
			"(e.g. 500GiB). REGEX=AGE and REGEX=SIZE override them for the topics whose whole name matches\n" +
			"(the first matching override wins; 0 keeps those topics forever). No retention at all: nothing\n" +
			"expires. The first expiry upgrades the archive to format version 2: stop every archiver of an\n" +
			"older kbackup first. Exits 1 if any partition failed (the others are done).",
		Flags: append(append(append(globalFlags(), retentionFlags()...),
			&cli.DurationFlag{Name: "grace", Value: manifest.DefaultExpiryGrace,
				Usage: "delete the objects below an archive start only once it is this old; 0s deletes at once"},
			&cli.BoolFlag{Name: "dry-run", Usage: "say what would expire and be deleted; write nothing"},
			jsonFlag(),
		), topicFlags("expire topics")...),
		Action: runExpire,
	}
}

// retentionFlags are --retention and --retention-bytes, the same on expire
// and archive.
func retentionFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "retention", Usage: "expire records older than `AGE` (30d, 12h); REGEX=AGE for the topics matching REGEX (repeatable; first match wins; 0 = keep)"},
		&cli.StringSliceFlag{Name: "retention-bytes", Usage: "keep at least the newest `SIZE` of segments per partition (500GiB); REGEX=SIZE per topic (repeatable; first match wins; 0 = keep)"},
	}
}

// retentionPolicy maps --retention and --retention-bytes onto a policy.
func retentionPolicy(c *cli.Context) (archive.RetentionPolicy, error) {
	var p archive.RetentionPolicy
	parse := func(flag string, value func(string) (int64, error), global func(int64), override func(*regexp.Regexp, int64)) error {
		seenGlobal := false
		for _, v := range c.StringSlice(flag) {
			expr, val, isOverride := cutLast(v, "=")
			if !isOverride {
				val = v
			}
			n, err := value(strings.TrimSpace(val))
			if err != nil {
				return usagef(c, "--%s %q: %v", flag, v, err)
			}
			if !isOverride {
				if seenGlobal {
					return usagef(c, "--%s given twice without REGEX=: one global value, overrides as REGEX=VALUE", flag)
				}
				seenGlobal = true
				global(n)
				continue
			}
			re, err := topicsel.Anchored(expr)
			if err != nil {
				return usagef(c, "--%s %q: %v", flag, v, err)
			}
			override(re, n)
		}
		return nil
	}
	age := func(s string) (int64, error) {
		d, err := snapshot.ParseDuration(s)
		return int64(d), err
	}
	size := func(s string) (int64, error) { return units.ParseSize(s) }
	if err := parse("retention", age, func(n int64) { p.Age = time.Duration(n) }, func(re *regexp.Regexp, n int64) {
		p.AgeOverrides = append(p.AgeOverrides, archive.AgeOverride{Topics: re, Age: time.Duration(n)})
	}); err != nil {
		return p, err
	}
	err := parse("retention-bytes", size, func(n int64) { p.Bytes = n }, func(re *regexp.Regexp, n int64) {
		p.BytesOverrides = append(p.BytesOverrides, archive.BytesOverride{Topics: re, Bytes: n})
	})
	return p, err
}

// cutLast splits s around the last sep.
func cutLast(s, sep string) (before, after string, found bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return s, "", false
}

func runExpire(c *cli.Context) error {
	s, err := setup(c)
	if err != nil {
		return err
	}
	sel, err := selection(c)
	if err != nil {
		return err
	}
	policy, err := retentionPolicy(c)
	if err != nil {
		return err
	}
	grace := c.Duration("grace")
	if grace <= 0 {
		grace = -1 // at once
	}
	a, err := openArchive(c.Context, c, s)
	if err != nil {
		return err
	}
	if policy.IsZero() {
		s.log.Info("no retention given (--retention, --retention-bytes): nothing expires; deleting what earlier passes expired")
	}
	// stdout reports every partition: at the default level the log adds
	// only the failures (the archiver logs the same lines at info).
	lg := s.log
	if lvl := strings.ToLower(s.g.logLevel); lvl == "" || lvl == "info" {
		if lg, err = newLogger(s.stderr, "warn", s.g.logFormat); err != nil {
			return usagef(c, "%v", err)
		}
	}
	res, err := archive.Expire(c.Context, a, archive.ExpireOptions{Policy: policy, Topics: sel, Grace: grace, DryRun: c.Bool("dry-run"),
		Writer: writerName(), Logger: lg})
	if err != nil {
		return fmt.Errorf("expire: %w", err)
	}
	w := bufio.NewWriter(s.stdout)
	if c.Bool("json") {
		err = writeJSON(w, expireDocFor(a.Store().String(), c.Bool("dry-run"), &res))
	} else {
		err = writeExpireText(w, c.Bool("dry-run"), &res)
	}
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return err
	}
	if n := res.Failed(); n > 0 {
		var first error
		for _, p := range res.Partitions {
			if p.Err != nil {
				first = p.Err
				break
			}
		}
		return fmt.Errorf("expire failed for %d partitions (listed above; the others are done), first: %w", n, first)
	}
	return nil
}

// byThisPass reports whether this pass moved the partition's archive start
// (created its marker, or would in a dry run), rather than finding that
// another pass running at the same time had just done so.
func byThisPass(e *manifest.Expiry, dryRun bool) bool {
	return e.Expired() && (dryRun || e.Created)
}

// writerName names this expirer in the markers.
func writerName() string { return "kbackup " + Version + " expire" }

// partName is "topic/partition", with the topic id of an old incarnation.
func partName(p *archive.PartitionExpiry) string {
	if p.Current {
		return fmt.Sprintf("%s/%d", p.Topic, p.Partition)
	}
	return fmt.Sprintf("%s (old %s)/%d", p.Topic, p.TopicID.String()[:12], p.Partition)
}

// writeExpireText prints a line per partition that expired, deleted,
// waits for its grace period or failed, then a summary.
func writeExpireText(w io.Writer, dryRun bool, res *archive.ExpireResult) error {
	would := ""
	if dryRun {
		would = "would "
	}
	var expired, records, objects, bytes, headPast, tailOnly int64
	for i := range res.Partitions {
		p := &res.Partitions[i]
		name := partName(p)
		if p.Err != nil {
			fmt.Fprintf(w, "FAILED %s: %s\n", name, oneLine(p.Err.Error()))
		}
		if e := &p.Expiry; e.Expired() && !byThisPass(e, dryRun) {
			fmt.Fprintf(w, "expire %s: archive start %d -> %d (%s): created meanwhile by another expiry pass\n", name, e.OldStart, e.Start, e.Reason)
		} else if e.Expired() {
			expired++
			records += e.Records
			fmt.Fprintf(w, "%sexpire %s: archive start %d -> %d (%s): %d records, %s", would, name, e.OldStart, e.Start, e.Reason, e.Records, units.Bytes(e.Bytes))
			if ms, ok := e.Marker.RecoverableFrom(); ok {
				fmt.Fprintf(w, "; oldest recoverable time %s", logrange.FormatTime(ms))
			}
			fmt.Fprintln(w)
		}
		if d := &p.Deletion; d.Objects() > 0 {
			objects += d.Objects()
			bytes += d.SegmentBytes
			fmt.Fprintf(w, "%sdelete %s below offset %d: %d segments (%s), %d commit entries, %d time keys, %d superseded markers\n",
				would, name, d.Below, d.Segments, units.Bytes(d.SegmentBytes), d.Commits, d.TimeKeys, d.Markers)
		}
		if p.Expiry.HeadPastRetention {
			headPast++
		}
		if p.Expiry.TailOnly {
			tailOnly++
		}
		if d := &p.Deletion; d.Pending > 0 {
			fmt.Fprintf(w, "keep %s below offset %d until %s (grace period)\n", name, d.Pending, logrange.FormatTime(d.PendingUntil))
		}
	}
	line := fmt.Sprintf("expire: %d partitions, %d expired (%d records), %d objects deleted (%s of segments), %d failed",
		len(res.Partitions), expired, records, objects, units.Bytes(bytes), res.Failed())
	if dryRun {
		line += " (dry run: nothing written)"
	}
	if headPast > 0 {
		line += fmt.Sprintf("\nexpire: %d partitions hold only records older than the retention in their newest commit, which never expires (the archiver resumes from it): they expire once a newer commit follows", headPast)
	}
	if tailOnly > 0 {
		line += fmt.Sprintf("\nexpire: %d partitions hold records only in their uncompacted tail (packed layout), which expiry does not touch: they can expire once compacted (--compact-bytes or --compact-after of the archiver)", tailOnly)
	}
	_, err := fmt.Fprintln(w, line)
	return err
}

// expireDoc is what `expire --json` prints (schema kbackup.expire/v1).
type expireDoc struct {
	Schema     string            `json:"schema"`
	Store      string            `json:"store"`
	DryRun     bool              `json:"dry_run"`
	Partitions []expirePartition `json:"partitions"`
	// Totals over the partitions.
	ExpiredPartitions int   `json:"expired_partitions"`
	ExpiredRecords    int64 `json:"expired_records"`
	DeletedObjects    int64 `json:"deleted_objects"`
	DeletedBytes      int64 `json:"deleted_bytes"`
	Failed            int   `json:"failed"`
}

// expirePartition is one partition in expire --json.
type expirePartition struct {
	Topic     string `json:"topic"`
	TopicID   string `json:"topic_id"`
	Partition int32  `json:"partition"`
	Current   bool   `json:"current"`
	// RetentionMs and RetentionBytes are the partition's retention (null:
	// none).
	RetentionMs    *int64 `json:"retention_ms"`
	RetentionBytes *int64 `json:"retention_bytes"`
	// OldStart and ArchiveStart are the archive start before and after the
	// pass (equal: nothing expired now).
	OldStart       int64  `json:"old_start"`
	ArchiveStart   int64  `json:"archive_start"`
	Reason         string `json:"reason,omitempty"`
	ExpiredRecords int64  `json:"expired_records"`
	ExpiredBytes   int64  `json:"expired_bytes"`
	ExpiredCommits int64  `json:"expired_commits"`
	// HeadPastRetention: every record of the newest commit is older than
	// the age limit, and it is kept (the newest commit never expires).
	HeadPastRetention bool `json:"head_past_retention"`
	// TailOnly: the partition (packed layout) holds records only in its
	// uncompacted tail, which expiry does not touch.
	TailOnly bool `json:"tail_only"`
	// ByThisPass is false when the archive start moved but another expiry
	// pass running at the same time created the marker (the totals count
	// only this pass's expiries).
	ByThisPass bool `json:"by_this_pass"`
	// RecoverableFromMs is the oldest recoverable time after the pass.
	RecoverableFromMs *int64        `json:"recoverable_from_ms"`
	Deleted           expireDeleted `json:"deleted"`
	Error             *string       `json:"error"`
}

// expireDeleted is what the pass deleted of one partition.
type expireDeleted struct {
	// Below is the start below which objects were deleted (0: none).
	Below          int64 `json:"below"`
	Segments       int64 `json:"segments"`
	Bytes          int64 `json:"bytes"`
	Commits        int64 `json:"commits"`
	TimeKeys       int64 `json:"time_keys"`
	Markers        int64 `json:"markers"`
	PendingBelow   int64 `json:"pending_below"`
	PendingUntilMs int64 `json:"pending_until_ms"`
}

func expireDocFor(storeURL string, dryRun bool, res *archive.ExpireResult) expireDoc {
	doc := expireDoc{Schema: "kbackup.expire/v1", Store: storeURL, DryRun: dryRun, Partitions: []expirePartition{}, Failed: res.Failed()}
	for i := range res.Partitions {
		p := &res.Partitions[i]
		e, d := &p.Expiry, &p.Deletion
		dp := expirePartition{Topic: p.Topic, TopicID: p.TopicID.String(), Partition: p.Partition, Current: p.Current,
			OldStart: e.OldStart, ArchiveStart: e.Start, Reason: e.Reason, ExpiredRecords: e.Records, ExpiredBytes: e.Bytes, ExpiredCommits: e.Commits,
			HeadPastRetention: e.HeadPastRetention, TailOnly: e.TailOnly,
			Deleted: expireDeleted{Below: d.Below, Segments: d.Segments, Bytes: d.SegmentBytes, Commits: d.Commits, TimeKeys: d.TimeKeys,
				Markers: d.Markers, PendingBelow: d.Pending, PendingUntilMs: d.PendingUntil}}
		if p.Retention.Age > 0 {
			dp.RetentionMs = ptr(p.Retention.Age.Milliseconds())
		}
		if p.Retention.Bytes > 0 {
			dp.RetentionBytes = ptr(p.Retention.Bytes)
		}
		if e.Marker != nil {
			if ms, ok := e.Marker.RecoverableFrom(); ok {
				dp.RecoverableFromMs = ptr(ms)
			}
		}
		if p.Err != nil {
			dp.Error = ptr(oneLine(p.Err.Error()))
		}
		dp.ByThisPass = byThisPass(e, dryRun)
		if dp.ByThisPass {
			doc.ExpiredPartitions++
			doc.ExpiredRecords += e.Records
		}
		doc.DeletedObjects += d.Objects()
		doc.DeletedBytes += d.SegmentBytes
		doc.Partitions = append(doc.Partitions, dp)
	}
	return doc
}
