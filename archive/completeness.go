package archive

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/kafkaconn"
	"github.com/kbackup/kbackup/manifest"
)

// Completeness returns the check `kbackup verify --brokers` runs after the
// integrity checks: for every live partition of the selected topics, the
// offsets the cluster still holds that the archive lacks are a problem
// (an archive behind the log, a partition or topic never archived, a topic
// re-created since). filter selects topic names (nil = all non-internal).
func Completeness(kafkaOpts []kgo.Opt, filter func(string) bool) func(context.Context, []manifest.PartitionHead, func(manifest.Finding)) error {
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
			if td.Err != nil || td.IsInternal || len(name) >= 2 && name[:2] == "__" || (filter != nil && !filter(name)) {
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
				switch {
				case !ok || h.Head == nil:
					report(manifest.Finding{Severity: manifest.SeverityProblem, Topic: name, Partition: p, From: start.Offset, To: end.Offset - 1,
						Message: fmt.Sprintf("the cluster holds offsets %d..%d that are not archived at all", start.Offset, end.Offset-1)})
				case h.TopicID != ids[name] && ids[name] != (manifest.TopicID{}):
					report(manifest.Finding{Severity: manifest.SeverityProblem, Topic: name, Partition: p, From: start.Offset, To: end.Offset - 1,
						Message: fmt.Sprintf("the live topic (id %s) is not the archived one (id %s): re-created? its offsets %d..%d are not archived", ids[name], h.TopicID, start.Offset, end.Offset-1)})
				case h.Head.End+1 < end.Offset:
					from := max(h.Head.End+1, start.Offset)
					report(manifest.Finding{Severity: manifest.SeverityProblem, Topic: name, Partition: p, TopicID: h.TopicID, From: from, To: end.Offset - 1,
						Message: fmt.Sprintf("the cluster holds offsets %d..%d the archive lacks (archive ends at %d, high watermark %d)", from, end.Offset-1, h.Head.End, end.Offset)})
				case h.Head.End+1 > end.Offset:
					report(manifest.Finding{Severity: manifest.SeverityWarning, Topic: name, Partition: p, TopicID: h.TopicID, From: end.Offset, To: h.Head.End,
						Message: fmt.Sprintf("the archive holds offsets up to %d beyond the live log end %d: the log was truncated (unclean election or a restore); `kbackup restore --repair` can put them back", h.Head.End, end.Offset)})
				}
			}
		}
		return nil
	}
}
