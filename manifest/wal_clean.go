package manifest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/kbackup/kbackup/store"
)

// CleanOptions configure CleanWAL.
type CleanOptions struct {
	// Self is the calling writer's id: its objects are never touched.
	Self string
	// Idle: a writer whose newest flush object or tail index is younger
	// than this is left to delete its own objects.
	Idle time.Duration
	// Now returns the current time. nil = time.Now.
	Now func() time.Time
	// DryRun counts what would be deleted.
	DryRun bool
}

// CleanResult is what CleanWAL found and did.
type CleanResult struct {
	Writers      int // writers examined (idle for longer than Idle)
	FlushObjects int // flush objects deleted (or, with DryRun, deletable)
	TailIndexes  int // tail indexes deleted with the last flush object of their writer
	KeptObjects  int // flush objects kept: an entry is neither compacted nor void
	EmptyWriters int // writers left with no flush object
	// Kept names the partitions of the entries that kept objects (neither
	// compacted nor void): their tails wait for a compaction, by their
	// owner or, for a deleted topic's, by an archiver that adopts them.
	Kept []KeptPartition
}

// KeptPartition is a partition incarnation whose tail keeps flush objects.
type KeptPartition struct {
	Topic     string
	TopicID   TopicID
	Partition int32
}

// CleanWAL deletes the flush objects of writers that stopped (docs/FORMAT.md
// §12.5, rule 15): those whose every entry ends at or below its
// partition's compacted end, or is void (written under an epoch whose
// successor claim starts at or below the entry). A writer counts as
// stopped when its newest object is older than opts.Idle (a running
// writer deletes its own compacted objects); every object of such a writer
// is then older than that, which must exceed the readers' grace period.
// Deleting is idempotent, so two cleaners at once, or one killed midway,
// are safe. It reads one table per object and, per partition named, the
// compacted head and the claims it needs (cached for the pass).
func (a *Archive) CleanWAL(ctx context.Context, o CleanOptions) (CleanResult, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	var res CleanResult
	if a.FormatVersion() < PackedFormatVersion {
		return res, nil
	}
	writers, err := a.listPrefixes(ctx, WALPrefix)
	if err != nil {
		return res, err
	}
	c := &cleaner{a: a, ends: map[string]int64{}, claims: map[string]*Claim{}, kept: map[KeptPartition]bool{}}
	for _, id := range writers {
		if id == o.Self || !ValidWriterID(id) {
			continue
		}
		newest, err := (&PartitionLog{st: a.st}).firstAfter(ctx, FlushPrefix(id), "")
		if err != nil || newest == "" {
			if err != nil {
				return res, err
			}
			continue
		}
		info, err := a.st.Stat(ctx, newest)
		if errors.Is(err, store.ErrNotFound) {
			continue // deleted meanwhile: the next pass looks again
		}
		if err != nil {
			return res, fmt.Errorf("stat %s: %w", newest, err)
		}
		if o.Now().Sub(info.ModTime) < o.Idle {
			continue
		}
		res.Writers++
		if err := c.writer(ctx, id, o, &res); err != nil {
			return res, err
		}
	}
	for k := range c.kept {
		res.Kept = append(res.Kept, k)
	}
	sort.Slice(res.Kept, func(i, j int) bool {
		x, y := res.Kept[i], res.Kept[j]
		return x.Topic < y.Topic || x.Topic == y.Topic && (bytes.Compare(x.TopicID[:], y.TopicID[:]) < 0 || x.TopicID == y.TopicID && x.Partition < y.Partition)
	})
	return res, nil
}

type cleaner struct {
	a      *Archive
	topics map[TopicID]string // incarnation -> topic name, read once per pass
	ends   map[string]int64   // partition prefix -> compacted end (-1 none)
	claims map[string]*Claim  // partition prefix + epoch -> claim (nil: none)
	kept   map[KeptPartition]bool
}

// writer cleans one stopped writer's flush objects, then its tail indexes
// once no flush object is left.
func (c *cleaner) writer(ctx context.Context, id string, o CleanOptions, res *CleanResult) error {
	var flushes []store.ListEntry
	var tails []string
	err := c.a.st.List(ctx, store.ListOptions{Prefix: FlushPrefix(id)}, func(e store.ListEntry) error {
		k, err := ParseKey(e.Key)
		switch {
		case err != nil:
		case k.Kind == KeyFlush:
			flushes = append(flushes, e)
		case k.Kind == KeyTailIndex:
			tails = append(tails, e.Key)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list %s: %w", FlushPrefix(id), err)
	}
	kept := 0
	for _, e := range flushes {
		dead, err := c.deletable(ctx, e)
		if err != nil {
			return err
		}
		if !dead {
			kept++
			continue
		}
		res.FlushObjects++
		if !o.DryRun {
			if err := c.a.st.Delete(ctx, e.Key); err != nil {
				return fmt.Errorf("delete %s: %w", e.Key, err)
			}
		}
	}
	res.KeptObjects += kept
	if kept > 0 {
		return nil
	}
	res.EmptyWriters++
	for _, k := range tails {
		res.TailIndexes++
		if !o.DryRun {
			if err := c.a.st.Delete(ctx, k); err != nil {
				return fmt.Errorf("delete %s: %w", k, err)
			}
		}
	}
	return nil
}

// deletable reports whether every entry of the flush object is compacted
// or void, and notes the partitions of those that are not.
func (c *cleaner) deletable(ctx context.Context, e store.ListEntry) (bool, error) {
	t, err := c.a.ReadFlushTable(ctx, e.Key, e.Size)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil // deleted meanwhile
	}
	if err != nil {
		return false, err
	}
	all := true
	for _, r := range t.Rows {
		dead, err := c.rowDead(ctx, r)
		if err != nil {
			return false, err
		}
		if !dead {
			all = false
			if topic, _ := c.topicOf(ctx, r.TopicID); topic != "" {
				c.kept[KeptPartition{Topic: topic, TopicID: r.TopicID, Partition: r.Partition}] = true
			}
		}
	}
	return all, nil
}

func (c *cleaner) rowDead(ctx context.Context, r FlushRow) (bool, error) {
	topic, err := c.topicOf(ctx, r.TopicID)
	if err != nil || topic == "" {
		// An incarnation without its marker: keep (verify reports it).
		return false, err
	}
	p := c.a.Partition(topic, r.TopicID, r.Partition)
	end, ok := c.ends[p.prefix]
	if !ok {
		h, err := p.CompactedHead(ctx)
		if err != nil {
			return false, err
		}
		end = -1
		if h != nil {
			end = h.End
		}
		c.ends[p.prefix] = end
	}
	if r.Ref.End <= end {
		return true, nil
	}
	// Void: the next epoch's claim starts at or below the entry.
	key := fmt.Sprintf("%s\x00%d", p.prefix, r.Epoch+1)
	next, ok := c.claims[key]
	if !ok {
		next, err = p.ReadClaim(ctx, r.Epoch+1)
		if errors.Is(err, store.ErrNotFound) {
			next, err = nil, nil
		}
		if err != nil {
			return false, err
		}
		c.claims[key] = next
	}
	return next != nil && next.Start <= r.Ref.Start, nil
}

// topicOf names the topic of an incarnation ("" if no marker names it).
func (c *cleaner) topicOf(ctx context.Context, id TopicID) (string, error) {
	if c.topics == nil {
		c.topics = map[TopicID]string{}
		topics, err := c.a.Topics(ctx)
		if err != nil {
			return "", err
		}
		for _, t := range topics {
			incs, err := c.a.Incarnations(ctx, t)
			if err != nil {
				return "", err
			}
			for _, m := range incs {
				c.topics[m.TopicID] = t
			}
		}
	}
	return c.topics[id], nil
}
