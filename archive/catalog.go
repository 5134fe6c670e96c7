package archive

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kbackup/kbackup/manifest"
)

// captureCatalog stores a topics capture (configs and partition counts of
// the selected topics) and a groups capture (committed offsets), both
// stamped now. It reads no loop state, so it may run off the loop.
func (a *Archiver) captureCatalog(ctx context.Context, now time.Time) error {
	md, err := a.adm.Metadata(ctx)
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	tc := &manifest.TopicsCapture{CapturedMs: now.UnixMilli(), ClusterID: md.Cluster}
	var names []string
	for name, td := range md.Topics {
		if td.Err != nil || !a.opts.Selected(name) || manifest.ValidTopic(name) != nil || len(td.Partitions) == 0 {
			continue
		}
		names = append(names, name)
		rf := 0
		if p0, ok := td.Partitions[0]; ok {
			rf = len(p0.Replicas)
		}
		tc.Topics = append(tc.Topics, manifest.TopicCatalog{Name: name, TopicID: manifest.TopicID(td.ID).String(),
			Partitions: int32(len(td.Partitions)), ReplicationFactor: int16(rf), Configs: map[string]string{}})
	}
	sort.Slice(tc.Topics, func(i, j int) bool { return tc.Topics[i].Name < tc.Topics[j].Name })
	if len(names) > 0 {
		rcs, err := a.adm.DescribeTopicConfigs(ctx, names...)
		if err != nil {
			return fmt.Errorf("describe topic configs: %w", err)
		}
		byName := map[string]*manifest.TopicCatalog{}
		for i := range tc.Topics {
			byName[tc.Topics[i].Name] = &tc.Topics[i]
		}
		for _, rc := range rcs {
			t := byName[rc.Name]
			if t == nil || rc.Err != nil {
				continue
			}
			for _, c := range rc.Configs {
				if c.Source == kmsg.ConfigSourceDynamicTopicConfig && c.Value != nil && !c.Sensitive {
					t.Configs[c.Key] = *c.Value
				}
			}
		}
	}
	if err := a.arch.PutCatalog(ctx, tc); err != nil {
		return err
	}

	gc := &manifest.GroupsCapture{CapturedMs: now.UnixMilli(), ClusterID: md.Cluster}
	listed, err := a.adm.ListGroups(ctx)
	if err != nil {
		return fmt.Errorf("list groups: %w", err)
	}
	var groups []string
	states := map[string]string{}
	for _, g := range listed.Sorted() {
		if g.Group == a.opts.Group || (a.opts.Groups != nil && !a.opts.Groups.MatchString(g.Group)) {
			continue
		}
		groups = append(groups, g.Group)
		states[g.Group] = g.State
	}
	if len(groups) > 0 {
		fetched := a.adm.FetchManyOffsets(ctx, groups...)
		for _, g := range groups {
			resp, ok := fetched[g]
			if !ok || resp.Err != nil {
				continue
			}
			gcat := manifest.GroupCatalog{Group: g, State: states[g]}
			resp.Fetched.Each(func(o kadm.OffsetResponse) {
				if o.Err != nil || manifest.ValidTopic(o.Topic) != nil {
					return
				}
				md := o.Metadata
				gcat.Offsets = append(gcat.Offsets, manifest.GroupOffset{Topic: o.Topic, Partition: o.Partition,
					Offset: o.At, LeaderEpoch: o.LeaderEpoch, Metadata: &md})
			})
			sort.Slice(gcat.Offsets, func(i, j int) bool {
				x, y := gcat.Offsets[i], gcat.Offsets[j]
				return x.Topic < y.Topic || x.Topic == y.Topic && x.Partition < y.Partition
			})
			gc.Groups = append(gc.Groups, gcat)
		}
	}
	if err := a.arch.PutCatalog(ctx, gc); err != nil {
		return err
	}
	a.opts.Logger.Info("catalog captured", "topics", len(tc.Topics), "groups", len(gc.Groups))
	return nil
}
