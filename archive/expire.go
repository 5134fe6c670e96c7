package archive

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/kbackup/kbackup/internal/topicsel"
	"github.com/kbackup/kbackup/manifest"
)

// DefaultRetentionInterval is how often the continuous archiver runs the
// expiry pass over the partitions it owns (Options.RetentionInterval).
const DefaultRetentionInterval = time.Hour

// DefaultExpireConcurrency bounds the partitions an expiry pass works on at
// once (ExpireOptions.Concurrency).
const DefaultExpireConcurrency = 8

// RetentionPolicy is how long the archive keeps each topic's records: by
// age and/or by size, globally and per topic. The zero value keeps
// everything. A topic's age is that of the first AgeOverrides entry whose
// expression matches its whole name, else Age; its size likewise. A
// partition's records expire when either limit says so (as Kafka's
// retention.ms and retention.bytes do).
type RetentionPolicy struct {
	// Age expires the oldest whole commits whose records are all older than
	// now - Age. 0 = no age limit.
	Age time.Duration
	// Bytes keeps at least the newest Bytes of segments per partition and
	// expires the whole commits before them. 0 = no size limit.
	Bytes int64
	// AgeOverrides and BytesOverrides replace Age and Bytes for the topics
	// they match, the first match winning; an override of 0 keeps those
	// topics forever.
	AgeOverrides   []AgeOverride
	BytesOverrides []BytesOverride
}

// AgeOverride is the age limit of the topics Topics matches.
type AgeOverride struct {
	Topics *regexp.Regexp // anchored: it must match the whole name
	Age    time.Duration  // 0 = no age limit
}

// BytesOverride is the size limit of the topics Topics matches.
type BytesOverride struct {
	Topics *regexp.Regexp // anchored: it must match the whole name
	Bytes  int64          // 0 = no size limit
}

// IsZero reports whether the policy expires nothing at all.
func (p *RetentionPolicy) IsZero() bool {
	if p.Age > 0 || p.Bytes > 0 {
		return false
	}
	for _, o := range p.AgeOverrides {
		if o.Age > 0 {
			return false
		}
	}
	for _, o := range p.BytesOverrides {
		if o.Bytes > 0 {
			return false
		}
	}
	return true
}

// For returns topic's retention.
func (p *RetentionPolicy) For(topic string) manifest.Retention {
	r := manifest.Retention{Age: p.Age, Bytes: p.Bytes}
	for _, o := range p.AgeOverrides {
		if o.Topics.MatchString(topic) {
			r.Age = o.Age
			break
		}
	}
	for _, o := range p.BytesOverrides {
		if o.Topics.MatchString(topic) {
			r.Bytes = o.Bytes
			break
		}
	}
	return r
}

// ExpireOptions configure one expiry pass (Expire). The zero value expires
// nothing (no policy) and deletes what earlier passes expired once their
// grace period is over.
type ExpireOptions struct {
	// Policy is the retention applied. Its zero value expires nothing.
	Policy RetentionPolicy
	// Topics selects the archived topics (--topics and --exclude, under
	// package topicsel's rule). nil means every non-internal topic.
	Topics *topicsel.Selector
	// Only, when set, restricts the pass to the partitions it accepts (the
	// continuous archiver: those it owns). nil = every partition.
	Only func(topic string, id manifest.TopicID, partition int32) bool
	// Grace is how long objects below a new archive start stay readable
	// (restores and cats planned before the expiry). 0 =
	// manifest.DefaultExpiryGrace; negative = none (delete at once).
	Grace time.Duration
	// DryRun says what would expire and be deleted, and writes nothing.
	DryRun bool
	// Writer names the expirer in the markers. "" = "kbackup".
	Writer string
	// Concurrency bounds the partitions worked on at once. 0 =
	// DefaultExpireConcurrency.
	Concurrency int
	// Now returns the current time. nil = time.Now.
	Now func() time.Time
	// Logger receives a line per partition that expired or deleted
	// something, and per failure. nil discards them.
	Logger *slog.Logger
}

// PartitionExpiry is what a pass did to one partition.
type PartitionExpiry struct {
	Topic     string
	TopicID   manifest.TopicID
	Partition int32
	// Current is set for partitions of a topic name's newest incarnation.
	Current   bool
	Retention manifest.Retention
	Expiry    manifest.Expiry
	Deletion  manifest.Deletion
	// Err is why the partition failed (nil: it did not); the pass goes on
	// with the others.
	Err error
}

// ExpireResult is what one pass did, per partition in topic, incarnation
// and partition order (one entry per partition the pass looked at).
type ExpireResult struct {
	Partitions []PartitionExpiry
}

// Failed counts the partitions that failed.
func (r *ExpireResult) Failed() int {
	n := 0
	for i := range r.Partitions {
		if r.Partitions[i].Err != nil {
			n++
		}
	}
	return n
}

// Expire runs one expiry pass over the archive (`kbackup expire`, and the
// continuous archiver every RetentionInterval): for every selected
// partition of every incarnation it applies the policy
// (manifest.PartitionLog.Expire: creates the new archive-start marker,
// upgrading the archive to format version 2 first) and then deletes what
// lies below the newest marker whose grace period is over
// (PartitionLog.DeleteExpired). A partition that fails does not stop the
// others; its error is in its result. Expire returns an error only when it
// cannot list the archive or ctx ends.
func Expire(ctx context.Context, a *manifest.Archive, o ExpireOptions) (ExpireResult, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultExpireConcurrency
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	var res ExpireResult
	topics, err := a.Topics(ctx)
	if err != nil {
		return res, err
	}
	for _, t := range topics {
		if !o.Topics.Match(t) {
			continue
		}
		incs, err := a.Incarnations(ctx, t)
		if err != nil {
			return res, err
		}
		for i, inc := range incs {
			parts, err := a.SelectPartitions(ctx, t, inc.TopicID, nil)
			if err != nil {
				return res, err
			}
			for _, p := range parts {
				if o.Only != nil && !o.Only(t, inc.TopicID, p) {
					continue
				}
				res.Partitions = append(res.Partitions, PartitionExpiry{Topic: t, TopicID: inc.TopicID, Partition: p,
					Current: i == len(incs)-1, Retention: o.Policy.For(t)})
			}
		}
	}
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < min(o.Concurrency, len(res.Partitions)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				expirePartition(ctx, a, &o, &res.Partitions[i])
			}
		}()
	}
	for i := range res.Partitions {
		select {
		case work <- i:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(work)
	wg.Wait()
	return res, ctx.Err()
}

// expirePartition runs the pass on one partition, filling pe.
func expirePartition(ctx context.Context, a *manifest.Archive, o *ExpireOptions, pe *PartitionExpiry) {
	p := a.Partition(pe.Topic, pe.TopicID, pe.Partition)
	now := o.Now()
	lg := o.Logger.With("topic", pe.Topic, "partition", pe.Partition)
	pe.Expiry, pe.Err = p.Expire(ctx, manifest.ExpireOptions{Retention: pe.Retention, Now: now, Writer: o.Writer, DryRun: o.DryRun})
	if pe.Err != nil {
		pe.Err = fmt.Errorf("expire %s: %w", p, pe.Err)
		lg.Warn("expiry failed", "err", pe.Err)
		return
	}
	if e := &pe.Expiry; e.Expired() {
		lg.Info("expired", "from", e.OldStart, "archive_start", e.Start, "reason", e.Reason, "records", e.Records, "dry_run", o.DryRun)
	}
	// A dry run created no marker: it counts what the existing markers'
	// deletion would remove.
	d, err := p.DeleteExpired(ctx, manifest.DeleteOptions{Grace: o.Grace, Now: now, DryRun: o.DryRun})
	pe.Deletion = d
	if err != nil {
		pe.Err = fmt.Errorf("delete expired objects of %s: %w", p, err)
		lg.Warn("deleting expired objects failed", "err", pe.Err)
		return
	}
	if d.Objects() > 0 {
		lg.Info("deleted expired objects", "below", d.Below, "segments", d.Segments, "commits", d.Commits, "time_keys", d.TimeKeys,
			"markers", d.Markers, "bytes", d.SegmentBytes, "dry_run", o.DryRun)
	}
}

// maybeExpire starts the expiry pass over the owned partitions when it is
// due (every RetentionInterval, never with Once), off the loop: it reads and
// writes the store for a while and must not delay fetching and commits.
func (a *Archiver) maybeExpire(ctx context.Context, now time.Time) {
	if a.opts.Once || a.opts.Retention.IsZero() || now.Sub(a.lastExpiry) < a.opts.RetentionInterval || !a.expiryRunning.CompareAndSwap(false, true) {
		return
	}
	a.lastExpiry = now
	owned := make(map[tp]manifest.TopicID, len(a.parts))
	for k, ps := range a.parts {
		owned[k] = ps.id
	}
	go func() {
		defer a.expiryRunning.Store(false)
		res, err := Expire(ctx, a.arch, ExpireOptions{Policy: a.opts.Retention, Grace: a.opts.ExpiryGrace, Writer: a.writerID,
			Now: a.opts.Now, Logger: a.opts.Logger,
			Only: func(topic string, id manifest.TopicID, partition int32) bool {
				oid, ok := owned[tp{topic, partition}]
				return ok && oid == id
			}})
		if err != nil {
			if ctx.Err() == nil {
				a.m.storeErrors.WithLabelValues("expire").Inc()
				a.opts.Logger.Warn("expiry pass failed", "err", err)
			}
			return
		}
		select {
		case a.expiries <- res:
			a.wake()
		case <-ctx.Done():
		}
	}()
}

// applyExpiry records a finished pass in the partitions still owned and
// their metrics.
func (a *Archiver) applyExpiry(r ExpireResult) {
	for i := range r.Partitions {
		pe := &r.Partitions[i]
		if pe.Err != nil {
			a.m.storeErrors.WithLabelValues("expire").Inc()
		}
		ps := a.parts[tp{pe.Topic, pe.Partition}]
		if ps == nil || ps.id != pe.TopicID || pe.Expiry.Marker == nil {
			continue
		}
		if e := &pe.Expiry; e.Expired() {
			a.m.expiredOffsets.WithLabelValues(pe.Topic, strconv.Itoa(int(pe.Partition))).Add(float64(e.Start - e.OldStart))
		}
		if ps.start.StartOffset() <= pe.Expiry.Start {
			ps.start = pe.Expiry.Marker
		}
		a.updateHeadMetrics(ps)
	}
}
