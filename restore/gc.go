package restore

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// The garbage collector's pace while a restore runs (docs/PERFORMANCE.md,
// "Restore"). A restore's heap grows from a few megabytes to its working
// set (the lanes' read-ahead and in-flight records, bounded by the
// options) and allocates a franz-go batch, promise and request buffers per
// produce request on the way. At GOGC=100 the collector runs every time
// the heap doubles: 5–9 collections while the heap grows, each marking the
// in-flight entries with write barriers on, and the cold restore of a
// process cost 20–40% more CPU than a warm one. GOGC=100 lets the heap of
// a full working set reach twice the restore's memory bound anyway, so
// the collector may as well let the heap grow that far before it runs:
// the heap goal is kept at about twice the bound while the live heap is
// below it, and is GOGC=100's (twice the live heap) above. The peak heap
// is then about max(2 × bound, 2 × live): what GOGC=100 reaches once the
// working set is full.

// GCBound is the heap size below which TuneGC lets a restore with options
// o grow before the garbage collector runs: twice the restore's memory
// bound (Concurrency × (ReadAhead × 1 MiB + MaxInFlightBytes)), plus 32 MiB
// for planning reads (16 MiB) and the rest of the process; 224 MiB at
// defaults.
func GCBound(o Options) uint64 {
	c, ra, mif := o.Concurrency, o.ReadAhead, o.MaxInFlightBytes
	if c <= 0 {
		c = DefaultConcurrency
	}
	if ra <= 0 {
		ra = DefaultReadAhead
	}
	if mif <= 0 {
		mif = DefaultMaxInFlightBytes
	}
	return 2*uint64(c)*(uint64(ra)<<20+uint64(mif)) + 32<<20
}

// TuneGC paces the garbage collector for a restore with options o until
// stop is called (see above): the kbackup restore command runs every
// restore with it. It changes the process's GC percent (debug.SetGCPercent)
// after every collection and puts the previous value back at stop. It does
// nothing when the operator set GOGC or GOMEMLIMIT in the environment
// (their setting is kept), and only one tuning is active at a time (a
// second TuneGC while one runs does nothing).
func TuneGC(o Options) (stop func()) {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return func() {}
	}
	gcTuning.Lock()
	defer gcTuning.Unlock()
	if gcTuning.active != nil {
		return func() {}
	}
	t := &gcTuner{bound: GCBound(o), sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"}}}
	t.prev = debug.SetGCPercent(t.percent())
	gcTuning.active = t
	t.arm()
	return func() {
		gcTuning.Lock()
		defer gcTuning.Unlock()
		if gcTuning.active == t {
			gcTuning.active = nil
			debug.SetGCPercent(t.prev)
		}
	}
}

var gcTuning struct {
	sync.Mutex
	active *gcTuner
}

type gcTuner struct {
	bound  uint64
	prev   int
	sample []metrics.Sample
}

// gcSentinel is garbage as soon as it is armed: its cleanup runs after
// the next collection (large enough not to be a tiny allocation, which
// shares a block with others and may be freed late).
type gcSentinel struct {
	_ [32]byte
}

// arm runs t.retune after the next collection.
func (t *gcTuner) arm() {
	runtime.AddCleanup(new(gcSentinel), (*gcTuner).retune, t)
}

// retune sets the GC percent for the live heap the last collection found,
// then waits for the next one (until the tuning stops).
func (t *gcTuner) retune() {
	gcTuning.Lock()
	defer gcTuning.Unlock()
	if gcTuning.active != t {
		return
	}
	debug.SetGCPercent(t.percent())
	t.arm()
}

// percent is the GC percent that puts the heap goal at about the bound
// while the live heap is under half of it, and 100 above. Go's heap goal
// is live + (live + stacks + globals) × percent/100, and at least 4 MiB ×
// percent/100 (the heap minimum, which also sets the goal before the first
// collection): both are kept at the bound.
func (t *gcTuner) percent() int {
	metrics.Read(t.sample)
	var v [3]uint64
	for i, s := range t.sample {
		if s.Value.Kind() == metrics.KindUint64 {
			v[i] = s.Value.Uint64()
		}
	}
	live, scan := v[0], v[0]+v[1]+v[2]
	if 2*live >= t.bound {
		return 100
	}
	p := uint64(100) * t.bound / (4 << 20)
	if scan > 0 {
		p = min(p, 100*(t.bound-live)/scan)
	}
	return int(max(p, 100))
}
