package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/urfave/cli/v2"

	"github.com/kbackup/kbackup/archive"
	"github.com/kbackup/kbackup/internal/topicsel"
	"github.com/kbackup/kbackup/internal/units"
	"github.com/kbackup/kbackup/kafkaconn"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store/storeurl"
)

func archiveCommand() *cli.Command {
	return &cli.Command{
		Name:  "archive",
		Usage: "stream the selected topics into the store (continuously, or --once)",
		Description: "Consumes every partition of the selected topics in offset order and commits it to the\n" +
			"store as compressed segments. Progress lives in the store: every partition resumes from\n" +
			"its last commit, so a restart (even kill -9) loses and duplicates nothing. Runs until\n" +
			"SIGTERM/SIGINT (then flushes and exits 0), or with --once until the end offsets seen at\n" +
			"start are archived. Offsets Kafka does not return are recorded as gaps with a reason;\n" +
			"retention winning the race against the archiver is recorded and logged as DATA-LOSS.\n" +
			"With --retention/--retention-bytes (as kbackup expire) it expires the archive's old records of\n" +
			"the partitions it owns every --retention-interval.",
		Flags: append(append(append(globalFlags(), kafkaFlags()...),
			&cli.StringSliceFlag{Name: "topics", Usage: "archive topics whose whole name matches `REGEX` (repeatable; default: every topic but internal __ ones)"},
			&cli.StringSliceFlag{Name: "exclude", Usage: "skip topics whose whole name matches `REGEX` (repeatable)"},
			&cli.BoolFlag{Name: "once", Usage: "archive up to the end offsets seen at start, capture the catalog, print a summary and exit (exit 3 after DATA-LOSS, 4 when no topic matched)"},
			&cli.StringFlag{Name: "group", Value: archive.DefaultGroup, Usage: "consumer group `NAME` replicas share partitions through (\"\" = standalone)"},
			&cli.BoolFlag{Name: "read-uncommitted", Usage: "also archive records of aborted and open transactions"},
			&cli.DurationFlag{Name: "flush-interval", Value: archive.DefaultFlushInterval, Usage: "commit a segment at most this long after its first record (bounds archive lag)"},
			&cli.StringFlag{Name: "segment-bytes", Value: units.FormatSize(archive.DefaultSegmentBytes), Usage: "roll a segment at this uncompressed `SIZE`"},
			&cli.StringFlag{Name: "compression", Value: archive.DefaultCompression, Usage: "block `CODEC` of new segments: zstd, s2 (about 3x less CPU, ~1.6x larger objects) or none"},
			&cli.StringFlag{Name: "max-buffered-bytes", Value: units.FormatSize(archive.DefaultMaxBufferedBytes), Usage: "memory bound for buffered segments of all partitions, `SIZE`"},
			&cli.DurationFlag{Name: "catalog-interval", Value: archive.DefaultCatalogInterval, Usage: "capture topic configs and group offsets this often"},
			&cli.StringFlag{Name: "groups", Usage: "capture the offsets of groups whose whole name matches `REGEX` (default: all but the archiver's own)"},
			&cli.DurationFlag{Name: "refresh-interval", Value: archive.DefaultRefreshInterval, Usage: "discover new topics and partitions this often"},
			&cli.StringFlag{Name: "listen", Usage: "serve /metrics, /healthz and /readyz on `ADDR` (e.g. :9464)"},
			&cli.StringFlag{Name: "writer-id", Usage: "`NAME` of this archiver in commit entries (default: host/pid)"},
			&cli.StringFlag{Name: "layout", Value: archive.LayoutAuto,
				Usage: "`LAYOUT` of commits: packed (one flush object per flush for all owned partitions, compacted into segments later: store requests do not grow with partitions; format version 3), segments (per partition and flush a segment, a commit entry and a time key; format version 1), or auto: packed for a new or packed archive, segments for an archive written in segments or new under --once (only the continuous archiver compacts)"},
			&cli.StringFlag{Name: "compact-bytes", Value: units.FormatSize(archive.DefaultCompactBytes), Usage: "with --layout packed: compact a partition's tail into one segment once it holds this `SIZE`"},
			&cli.DurationFlag{Name: "compact-after", Value: archive.DefaultCompactAfter, Usage: "with --layout packed: compact a partition's tail at the latest this long after its oldest entry"},
			&cli.DurationFlag{Name: "claim-check-interval", Value: archive.DefaultClaimCheckInterval, Usage: "with --layout packed: check each owned partition's claim this often (an archiver outside this --group that took it is noticed then, not at the next compaction); 0s checks only at compactions"},
			&cli.DurationFlag{Name: "compact-grace", Value: archive.DefaultCompactGrace, Usage: "with --layout packed: delete a compacted flush object once it is this old (readers in flight); 0s deletes at once"},
			jsonFlag(),
		), append(retentionFlags(),
			&cli.DurationFlag{Name: "retention-interval", Value: archive.DefaultRetentionInterval,
				Usage: "with --retention or --retention-bytes: run the expiry pass (as kbackup expire) over the owned partitions this often"},
			&cli.DurationFlag{Name: "grace", Value: manifest.DefaultExpiryGrace,
				Usage: "with --retention or --retention-bytes: delete the objects below an archive start once it is this old; 0s deletes at once"},
		)...),
		Action: runArchive,
	}
}

func runArchive(c *cli.Context) error {
	s, err := setup(c)
	if err != nil {
		return err
	}
	ko, err := kafkaOptions(c, s)
	if err != nil {
		return err
	}
	if s.g.store == "" {
		return usagef(c, "no archive given: use --store URL or %s (file:///abs/dir or s3://bucket/prefix)", EnvVar(flagStore))
	}
	su, err := storeurl.Parse(s.g.store)
	if err != nil {
		return usagef(c, "%v", err)
	}
	restoreGC, gcPercent := paceArchiveGC(su)
	defer restoreGC()
	o := archive.Options{Once: c.Bool("once"), Group: c.String("group"), ReadUncommitted: c.Bool("read-uncommitted"),
		FlushInterval: c.Duration("flush-interval"), CatalogInterval: c.Duration("catalog-interval"),
		RefreshInterval: c.Duration("refresh-interval"), Compression: c.String("compression"), WriterID: c.String("writer-id"), Version: "kbackup " + Version, Logger: s.log}
	if _, err := manifest.ParseCodec(o.Compression); err != nil {
		return usagef(c, "--compression: %v", err)
	}
	switch o.Layout = c.String("layout"); o.Layout {
	case archive.LayoutAuto, archive.LayoutSegments, archive.LayoutPacked:
	default:
		return usagef(c, "--layout %q: want %s, %s or %s", o.Layout, archive.LayoutAuto, archive.LayoutPacked, archive.LayoutSegments)
	}
	o.CompactAfter, o.CompactGrace = c.Duration("compact-after"), c.Duration("compact-grace")
	if o.CompactAfter <= 0 {
		return usagef(c, "--compact-after must be positive")
	}
	if o.CompactGrace <= 0 {
		o.CompactGrace = -1 // at once
	}
	if o.ClaimCheckInterval = c.Duration("claim-check-interval"); o.ClaimCheckInterval <= 0 {
		o.ClaimCheckInterval = -1 // at compactions only
	}
	if o.Topics, err = selection(c); err != nil {
		return err
	}
	if o.Retention, err = retentionPolicy(c); err != nil {
		return err
	}
	if o.Once && !o.Retention.IsZero() {
		return usagef(c, "--retention and --retention-bytes apply to a continuous archiver; with --once run kbackup expire")
	}
	o.RetentionInterval, o.ExpiryGrace = c.Duration("retention-interval"), c.Duration("grace")
	if o.ExpiryGrace <= 0 {
		o.ExpiryGrace = -1 // at once
	}
	if g := c.String("groups"); g != "" {
		if o.Groups, err = topicsel.Anchored(g); err != nil {
			return usagef(c, "--groups: %v", err)
		}
	}
	for _, f := range []struct {
		name string
		dst  func(int64)
	}{{"segment-bytes", func(v int64) { o.SegmentBytes = int(v) }}, {"max-buffered-bytes", func(v int64) { o.MaxBufferedBytes = v }},
		{"compact-bytes", func(v int64) { o.CompactBytes = v }}} {
		if v := c.String(f.name); v != "" {
			n, err := units.ParseSize(v)
			if err != nil || n < 1<<10 {
				return usagef(c, "--%s: %v (at least 1KiB)", f.name, err)
			}
			f.dst(n)
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	o.Registerer = reg
	kopts, err := ko.ClientOpts(c.Context)
	if err != nil {
		return err
	}
	o.KafkaOpts = kopts

	// Fail fast on an unreachable cluster or store.
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	err = kafkaconn.Ping(c.Context, cl)
	cl.Close()
	if err != nil {
		return err
	}
	if o.Store, err = openStore(c, s); err != nil {
		return err
	}

	a, err := archive.New(o)
	if err != nil {
		return err
	}
	if addr := c.String("listen"); addr != "" {
		bound, err := archive.Serve(c.Context, addr, reg, a.Ready, s.log)
		if err != nil {
			return err
		}
		s.log.Info("serving metrics", "addr", bound.String())
	}
	s.log.Info("archiving", "kafka", ko.String(), "store", o.Store.String(), "pid", os.Getpid())
	if gcPercent > 0 {
		s.log.Info("garbage collector paced for the S3 part buffers outside the heap (GOGC or GOMEMLIMIT in the environment take precedence)", "gogc", gcPercent)
	}
	if err := a.Run(c.Context); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	if !o.Once {
		// A signal ends a continuous run: that is success once flushed.
		return nil
	}
	sum := a.Summary()
	if err := printArchiveSummary(s.stdout, sum, c.Bool("json")); err != nil {
		return err
	}
	switch {
	case sum.Topics == 0:
		return &exitError{ExitNothingSelected, errors.New("no topic in the cluster matches --topics/--exclude: nothing archived")}
	case sum.DataLoss() > 0:
		return &exitError{ExitDataLoss, fmt.Errorf("DATA-LOSS: %d offsets were deleted by retention before they were archived (recorded as gaps; see kbackup ls and verify)", sum.DataLoss())}
	}
	return nil
}

// archiveSummaryDoc is what `archive --once --json` prints.
type archiveSummaryDoc struct {
	Schema     string           `json:"schema"` // kbackup.archive-summary/v1
	Topics     int              `json:"topics"`
	Partitions int              `json:"partitions"`
	Records    int64            `json:"records"`
	Segments   int64            `json:"segments"`
	Bytes      int64            `json:"bytes"`
	GapOffsets map[string]int64 `json:"gap_offsets"` // by reason, every reason present
	DurationMs int64            `json:"duration_ms"`
	// SupersededRecords: committed in entries another archiver's later
	// claim voided (packed layout); not in Records.
	SupersededRecords int64 `json:"superseded_records"`
}

// printArchiveSummary prints what a run archived: one line, or a JSON
// document.
func printArchiveSummary(w io.Writer, sum archive.Summary, asJSON bool) error {
	gaps := map[string]int64{}
	var gapText []string
	for r := manifest.GapReason(1); r < manifest.NumGapReasons; r++ {
		n := sum.Gaps[r.String()]
		gaps[r.String()] = n
		if n > 0 || r == manifest.GapDataLoss {
			gapText = append(gapText, fmt.Sprintf("%s=%d", r, n))
		}
	}
	if asJSON {
		return writeJSON(w, archiveSummaryDoc{Schema: "kbackup.archive-summary/v1", Topics: sum.Topics, Partitions: sum.Partitions,
			Records: sum.Records, Segments: sum.Segments, Bytes: sum.Bytes, GapOffsets: gaps, DurationMs: sum.Duration.Milliseconds(),
			SupersededRecords: sum.Superseded})
	}
	superseded := ""
	if sum.Superseded > 0 {
		superseded = fmt.Sprintf("; %d more records committed in entries another archiver's later claim voided (the archive holds them through its chain)", sum.Superseded)
	}
	_, err := fmt.Fprintf(w, "archived %d topics, %d partitions: %d records, %s in %d segments; gap offsets: %s%s; took %s\n",
		sum.Topics, sum.Partitions, sum.Records, units.Bytes(sum.Bytes), sum.Segments, strings.Join(gapText, " "), superseded, sum.Duration.Round(time.Millisecond))
	return err
}

// archiveS3GCPercent is the garbage collector's pace (GOGC) of an archiver
// into S3. Its part buffers (a 5 MiB S3 part per streamed object, up to
// about 13 of them, holding uncompressed segments encoded in place) live
// outside the Go heap, beside a heap that GOGC=100 lets grow to twice what
// is live. Measured on a catch-up into MinIO (docs/PERFORMANCE.md,
// "Archive CPU and memory", session 22), 50 holds peak memory about a
// sixth lower, within twice a plain consumer's, for a few percent more
// CPU. Into a local directory, whose writes leave nothing outside the
// heap, the default pace stays: there the CPU is what counts.
const archiveS3GCPercent = 50

// paceArchiveGC sets the collector's pace for an archiver into the store
// u and returns what puts it back and the GC percent it set (0: none). It
// does nothing when the operator set GOGC or GOMEMLIMIT (their setting is
// kept) or for a local directory.
func paceArchiveGC(u storeurl.URL) (restore func(), percent int) {
	if u.Scheme != "s3" || os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return func() {}, 0
	}
	prev := debug.SetGCPercent(archiveS3GCPercent)
	return func() { debug.SetGCPercent(prev) }, archiveS3GCPercent
}
