package archive

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/internal/topicsel"
	"github.com/kbackup/kbackup/kafkaconn"
	"github.com/kbackup/kbackup/manifest"
)

// DefaultLagAllowance is CompletenessOptions.Allowance's default: ten
// flush intervals plus two topic refresh intervals at the archiver's
// defaults (a healthy archiver commits a record within a flush interval of
// its fetch, and finds a new topic within a refresh interval).
const DefaultLagAllowance = 10*DefaultFlushInterval + 2*DefaultRefreshInterval

// CompletenessOptions configure Completeness.
type CompletenessOptions struct {
	// KafkaOpts connect to the live cluster. Required.
	KafkaOpts []kgo.Opt
	// Topics selects the live topics compared with the archive (the
	// archiver's --topics/--exclude); nil means every non-internal topic.
	Topics *topicsel.Selector
	// Allowance is how recent a record may be and still be missing from
	// the archive without a problem: offsets whose records carry a
	// timestamp within Allowance of now are archiver lag (reported as
	// info), older ones are holes (problems). 0 = DefaultLagAllowance; a
	// negative value allows nothing (every missing offset is a problem).
	Allowance time.Duration
	// Now returns the current time. nil = time.Now.
	Now func() time.Time
	// Captured, when not nil, holds the topics of the archive's newest
	// topics catalog capture (the archiver's selection when it took it,
	// at CapturedAt): a live topic the archive lacks entirely and the
	// capture does not list is still a problem, and its finding says so
	// and how to check only what the archive selects (--topics). Set it
	// when Topics is nil.
	Captured   map[string]bool
	CapturedAt time.Time
}

// Completeness returns the check `kbackup verify --brokers` runs after the
// integrity checks: for every live partition of the selected topics, the
// offsets the cluster still holds that the archive lacks (an archive behind
// the log, a partition or topic never archived, a topic re-created since)
// are problems when their records are older than the allowance, and
// archiver lag (info) when newer, so that the check is safe to run from
// cron against a live archiver. "Older" uses the record timestamps through
// the brokers' time index (ListOffsets by timestamp): the first offset
// whose timestamp is at or after now minus the allowance.
func Completeness(o CompletenessOptions) func(context.Context, []manifest.PartitionHead, func(manifest.Finding)) error {
	if o.Allowance == 0 {
		o.Allowance = DefaultLagAllowance
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	kafkaOpts, sel := o.KafkaOpts, o.Topics
	allowance := o.Allowance.String()
	if o.Allowance < 0 {
		allowance = "none"
	}
	return func(ctx context.Context, heads []manifest.PartitionHead, report func(manifest.Finding)) error {
		cl, err := kgo.NewClient(kafkaOpts...)
		if err != nil {
			return fmt.Errorf("kafka client: %w", err)
		}
		defer cl.Close()
		adm := kadm.NewClient(cl)
		md, err := adm.Metadata(ctx)
		if err != nil {
			return fmt.Errorf("cluster metadata: %w", err)
		}
		type key struct {
			topic string
			p     int32
		}
		archived := map[key]manifest.PartitionHead{}
		for _, h := range heads {
			if h.Current {
				archived[key{h.Topic, h.Partition}] = h
			}
		}
		var names []string
		ids := map[string]manifest.TopicID{}
		for name, td := range md.Topics {
			if td.Err != nil || td.IsInternal || !sel.Match(name) {
				continue
			}
			names = append(names, name)
			ids[name] = manifest.TopicID(td.ID)
		}
		sort.Strings(names)
		if len(names) == 0 {
			return nil
		}
		// Retriable partition errors (a leader just elected) are retried
		// for up to 30 s; partitions still failing become warnings below.
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		starts, err := kafkaconn.ListOffsetsRetrying(lctx, func(ctx context.Context) (kadm.ListedOffsets, error) { return adm.ListStartOffsets(ctx, names...) })
		if starts == nil && err != nil {
			return fmt.Errorf("list start offsets: %w", err)
		}
		ends, err := kafkaconn.ListOffsetsRetrying(lctx, func(ctx context.Context) (kadm.ListedOffsets, error) { return adm.ListEndOffsets(ctx, names...) })
		if ends == nil && err != nil {
			return fmt.Errorf("list end offsets: %w", err)
		}
		// recent: the first offset whose record is within the allowance
		// (the end offset when every record is older).
		var recent kadm.ListedOffsets
		if o.Allowance > 0 {
			cutoff := o.Now().Add(-o.Allowance).UnixMilli()
			recent, err = kafkaconn.ListOffsetsRetrying(lctx, func(ctx context.Context) (kadm.ListedOffsets, error) {
				return adm.ListOffsetsAfterMilli(ctx, cutoff, names...)
			})
			if recent == nil && err != nil {
				return fmt.Errorf("list offsets by time: %w", err)
			}
		}
		for _, name := range names {
			ps := md.Topics[name].Partitions.Numbers()
			sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
			for _, p := range ps {
				start, ok1 := starts.Lookup(name, p)
				end, ok2 := ends.Lookup(name, p)
				if !ok1 || !ok2 || start.Err != nil || end.Err != nil {
					report(manifest.Finding{Severity: manifest.SeverityWarning, Topic: name, Partition: p,
						Message: "could not list the live partition's offsets"})
					continue
				}
				if end.Offset <= start.Offset {
					continue // nothing live to compare
				}
				h, ok := archived[key{name, p}]
				// Missing offsets [from, end) split at the allowance.
				old := end.Offset
				if r, ok := recent.Lookup(name, p); ok && r.Err == nil && r.Offset >= 0 && r.Offset < old {
					old = max(r.Offset, start.Offset)
				}
				missing := func(from int64, what string, args ...any) {
					desc := fmt.Sprintf(what, args...)
					if from < old {
						report(manifest.Finding{Severity: manifest.SeverityProblem, Topic: name, Partition: p, TopicID: h.TopicID, From: from, To: old - 1,
							Message: fmt.Sprintf("the cluster holds offsets %d..%d older than the lag allowance (%s) that %s", from, old-1, allowance, desc)})
					}
					if lagFrom := max(from, old); lagFrom < end.Offset {
						report(manifest.Finding{Severity: manifest.SeverityInfo, Topic: name, Partition: p, TopicID: h.TopicID, From: lagFrom, To: end.Offset - 1,
							Message: fmt.Sprintf("offsets %d..%d were written within the lag allowance (%s) and are not archived yet (archiver lag)", lagFrom, end.Offset-1, allowance)})
					}
				}
				switch {
				case !ok || h.Head == nil:
					hint := ""
					if o.Captured != nil && !o.Captured[name] {
						hint = fmt.Sprintf(" (the archiver's newest topics capture, taken %s, does not list the topic: it was not selected then, or created since; for an archive of selected topics, run verify with the archiver's --topics/--exclude)",
							o.CapturedAt.UTC().Format(time.RFC3339))
					}
					missing(start.Offset, "are not archived at all%s", hint)
				case h.TopicID != ids[name] && ids[name] != (manifest.TopicID{}):
					missing(start.Offset, "are not archived: the live topic (id %s) is not the archived one (id %s), re-created?", ids[name], h.TopicID)
				case h.Head.End+1 < end.Offset:
					missing(max(h.Head.End+1, start.Offset), "the archive lacks (archive ends at %d, high watermark %d)", h.Head.End, end.Offset)
				case h.Head.End+1 > end.Offset:
					report(manifest.Finding{Severity: manifest.SeverityWarning, Topic: name, Partition: p, TopicID: h.TopicID, From: end.Offset, To: h.Head.End,
						Message: fmt.Sprintf("the archive holds offsets up to %d beyond the live log end %d: the log was truncated (unclean election or a restore); `kbackup restore --repair` can put them back", h.Head.End, end.Offset)})
				}
			}
		}
		return nil
	}
}
