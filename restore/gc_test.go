package restore

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

// gcPercent reads the process's GC percent (under the tuning's lock, so
// that a retune does not run between the two calls).
func gcPercent() int {
	gcTuning.Lock()
	defer gcTuning.Unlock()
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// activeTuner is the running GC tuning (nil: none).
func activeTuner() *gcTuner {
	gcTuning.Lock()
	defer gcTuning.Unlock()
	return gcTuning.active
}

// waitGCPercent collects garbage until the GC percent satisfies ok (the
// tuner retunes in a cleanup, after the collection).
func waitGCPercent(t *testing.T, what string, ok func(int) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		p := gcPercent()
		if ok(p) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GC percent %d, want %s", p, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTuneGC(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	defer debug.SetGCPercent(debug.SetGCPercent(150))
	o := Options{Concurrency: 2, ReadAhead: 2, MaxInFlightBytes: 8 << 20}
	if got, want := GCBound(o), uint64(2*2*(2<<20+8<<20)+32<<20); got != want {
		t.Fatalf("GCBound = %d, want %d", got, want)
	}
	if got, want := GCBound(Options{}), uint64(2*8*(4<<20+8<<20)+32<<20); got != want {
		t.Fatalf("GCBound(defaults) = %d, want %d", got, want)
	}
	runtime.GC()
	stop := TuneGC(o) // bound 72 MiB
	defer stop()      // also when the test fails: a tuner left running would retune the next tests' GC
	// A small live heap: the goal is about the bound, far above 2x live,
	// and so is Go's heap minimum (4 MiB × percent/100).
	waitGCPercent(t, "> 150 with a small live heap", func(p int) bool { return p > 150 })
	if p := gcPercent(); p > 100*72/4 {
		t.Fatalf("GC percent %d puts the heap minimum above the bound", p)
	}
	// A second tuning while one runs changes nothing: the first stays the
	// one that retunes, with its bound, and the second's stop does not
	// stop it. (Not compared through the GC percent: the first tuner
	// retunes after any collection, which may come between two reads.)
	first := activeTuner()
	TuneGC(Options{Concurrency: 100})()
	if a := activeTuner(); a != first || a.bound != GCBound(o) {
		t.Fatalf("a second TuneGC replaced or stopped the running tuning")
	}
	// A live heap above half the bound: GOGC=100's pace.
	big := make([]byte, 40<<20)
	waitGCPercent(t, "100 with a live heap above half the bound", func(p int) bool { return p == 100 })
	runtime.KeepAlive(big)
	big = nil
	waitGCPercent(t, "> 150 once the live heap is small again", func(p int) bool { return p > 150 })
	stop()
	if p := gcPercent(); p != 150 {
		t.Fatalf("after stop the GC percent is %d, want the previous 150", p)
	}
	// Stopped: collections no longer retune.
	runtime.GC()
	runtime.GC()
	time.Sleep(20 * time.Millisecond)
	if p := gcPercent(); p != 150 {
		t.Fatalf("after stop a collection set the GC percent to %d", p)
	}
}

// The operator's GOGC or GOMEMLIMIT is kept.
func TestTuneGCKeepsTheEnvironment(t *testing.T) {
	for _, env := range []string{"GOGC", "GOMEMLIMIT"} {
		t.Run(env, func(t *testing.T) {
			t.Setenv("GOGC", "")
			t.Setenv("GOMEMLIMIT", "")
			t.Setenv(env, "200")
			defer debug.SetGCPercent(debug.SetGCPercent(120))
			runtime.GC()
			stop := TuneGC(Options{})
			runtime.GC()
			runtime.GC()
			time.Sleep(20 * time.Millisecond)
			if p := gcPercent(); p != 120 {
				t.Fatalf("with %s set, TuneGC set the GC percent to %d", env, p)
			}
			stop()
			if p := gcPercent(); p != 120 {
				t.Fatalf("with %s set, stop set the GC percent to %d", env, p)
			}
		})
	}
}
