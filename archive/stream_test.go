package archive

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/internal/kfaketest"
	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/storefault"
)

// TestStreamedSegments: in the segments layout, segments larger than a
// block stream to a directory store as they are built (the archiver holds
// a block or two per partition, not the segment), under store faults
// (a staged object that cannot be created is held in memory; one whose
// publishing fails is lost, and its records are fetched again) and a
// store that freezes mid-run as a killed process would: the archive equals
// the log, verify is clean, and no staged object is left behind by a run
// that ended.
//
// In the packed layout a segment of more than packedStageAfter blocks is
// streamed the same way and becomes a flush object of its own.
func TestStreamedSegments(t *testing.T) {
	t.Parallel()
	for _, layout := range []string{LayoutSegments, LayoutPacked} {
		t.Run(layout, func(t *testing.T) {
			t.Parallel()
			testStreamedSegments(t, layout)
		})
	}
}

func testStreamedSegments(t *testing.T, layout string) {
	c := newCluster(t)
	createTopic(t, c, "st", 4, nil)
	fillTopic(t, newClient(t, c, kgo.ProducerBatchMaxBytes(64<<10)), "st", 20_000, 500)
	fsStore, dir := kfaketest.Store(t)
	inner := &countingStager{Store: fsStore, sg: fsStore}
	mod := func(o *Options) {
		o.Layout, o.Compression = layout, "none"
		o.BlockBytes, o.SegmentBytes = 16<<10, 64<<10
		if layout == LayoutPacked {
			// Segments of up to 16 blocks: some are streamed (more than
			// packedStageAfter blocks), some not.
			o.SegmentBytes = 256 << 10
		}
		o.KafkaOpts = append(o.KafkaOpts, kgo.FetchMaxPartitionBytes(32<<10)) // many segments
	}

	// A run that freezes (is killed) part-way, then one under faults.
	frozen := storefault.New(inner, 3)
	frozen.FreezeAfter(100)
	a, err := New(onceOptions(t, c, frozen, mod))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Run(t.Context()); err == nil {
		t.Fatal("a run on a frozen store succeeded")
	}
	t.Logf("frozen run: %d staged, %d published", inner.stages.Load(), inner.published.Load())
	faulty := storefault.New(inner, 11)
	faulty.SetFailRate(0.1, 0.5)
	inner.failEvery.Store(3) // and every third publishing fails (half of them after landing)
	for i := 0; ; i++ {
		a, err := New(onceOptions(t, c, faulty, mod))
		if err != nil {
			t.Fatal(err)
		}
		if err = a.Run(t.Context()); err == nil {
			break
		}
		if i == 20 {
			t.Fatalf("20 runs under faults failed, the last: %v", err)
		}
	}
	if faulty.Faults() == 0 || inner.failed.Load() == 0 {
		t.Fatalf("%d faults injected, %d in publishing a streamed segment: want some of each", faulty.Faults(), inner.failed.Load())
	}
	checkExact(t, c, inner, "st")
	noProblems(t, inner)

	if layout == LayoutPacked {
		// Streaming happened: flush objects published from staged objects,
		// none left staged.
		if inner.publishedFlushes.Load() == 0 {
			t.Fatalf("%d staged, %d published, none as a flush object: nothing was streamed", inner.stages.Load(), inner.published.Load())
		}
		// Staged in wal/, which every writer stages in (and sweeps).
		if inner.walStages.Load() != inner.stages.Load() {
			t.Fatalf("%d objects staged, %d of them in %s", inner.stages.Load(), inner.walStages.Load(), manifest.WALPrefix)
		}
		t.Logf("%d objects staged, %d flush objects published, %d failed to publish; %d faults injected", inner.stages.Load(), inner.publishedFlushes.Load(), inner.failed.Load(), faulty.Faults())
		noStaged(t, dir)
		return
	}
	// Streaming happened: segments of many blocks, none left staged.
	arch := openArchive(t, inner)
	incs, err := arch.Incarnations(t.Context(), "st")
	if err != nil || len(incs) != 1 {
		t.Fatal(incs, err)
	}
	multi := 0
	for p := int32(0); p < 4; p++ {
		log := arch.Partition("st", incs[0].TopicID, p)
		head, err := log.Head(t.Context())
		if err != nil || head == nil {
			t.Fatal(head, err)
		}
		for start := int64(0); start <= head.End; {
			cm, err := log.CommitAt(t.Context(), start)
			if err != nil {
				t.Fatal(err)
			}
			if cm.SegmentSize > 2*(16<<10) {
				multi++
			}
			start = cm.End + 1
		}
	}
	if multi == 0 || inner.stages.Load() == 0 || inner.published.Load() == 0 {
		t.Fatalf("%d segments of several blocks, %d staged, %d published: nothing was streamed", multi, inner.stages.Load(), inner.published.Load())
	}
	t.Logf("%d segments of several blocks; %d objects staged, %d published, %d failed to publish; %d faults injected", multi, inner.stages.Load(), inner.published.Load(), inner.failed.Load(), faulty.Faults())
	noStaged(t, dir)
}

// noStaged fails if a staged object is left in dir.
func noStaged(t *testing.T, dir string) {
	t.Helper()
	var staged []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), "~") {
			staged = append(staged, p)
		}
		return nil
	})
	// The frozen run could not remove what it staged after the freeze
	// (its Abort reaches the directory: it can), so nothing is left.
	if len(staged) > 0 {
		t.Fatalf("staged objects left behind: %q", staged)
	}
}

// countingStager counts the objects staged and published through it.
type countingStager struct {
	store.Store
	sg                        store.Stager
	stages, published, failed atomic.Int64
	publishedFlushes          atomic.Int64 // published under a flush object's key
	walStages                 atomic.Int64 // staged in wal/ (packed layout)
	failEvery                 atomic.Int64 // > 0: publishing n fails when n % failEvery == 1 (before), 2 (after)
	n                         atomic.Int64
}

func (c *countingStager) Stage(ctx context.Context, prefix string) (store.Staged, error) {
	st, err := c.sg.Stage(ctx, prefix)
	if err != nil {
		return nil, err
	}
	c.stages.Add(1)
	if prefix == manifest.WALPrefix {
		c.walStages.Add(1)
	}
	return &countedStaged{Staged: st, c: c}, nil
}

type countedStaged struct {
	store.Staged
	c *countingStager
}

func (s *countedStaged) Publish(ctx context.Context, key string, opts store.PutOptions) error {
	var err error
	n, every := s.c.n.Add(1), s.c.failEvery.Load()
	switch {
	case every > 0 && n%every == 1:
		s.Staged.Abort()
		err = errors.New("publishing failed")
	case every > 0 && n%every == 2:
		if err = s.Staged.Publish(ctx, key, opts); err == nil {
			err = errors.New("publishing: response lost")
		}
	default:
		err = s.Staged.Publish(ctx, key, opts)
	}
	if err == nil {
		s.c.published.Add(1)
		if strings.HasSuffix(key, ".kwal") {
			s.c.publishedFlushes.Add(1)
		}
	} else {
		s.c.failed.Add(1)
	}
	return err
}

// onceOptions are runOnce's options (with mod applied) for a run whose
// error the test looks at itself.
func onceOptions(t testing.TB, c *kfake.Cluster, st store.Store, mod func(*Options)) Options {
	o := Options{KafkaOpts: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, Store: st, Once: true,
		Logger: testLogger(t), WriterID: "test", OnceCommitAttempts: 3}
	mod(&o)
	return o
}
