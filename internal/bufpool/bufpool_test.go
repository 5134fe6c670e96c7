package bufpool

import (
	"bytes"
	"sync"
	"testing"
	"time"
)

func TestPoolReuse(t *testing.T) {
	p := New(1<<20+100, 1, 0)
	a, b, c := p.Get(), p.Get(), p.Get()
	for _, x := range [][]byte{a, b, c} {
		if len(x) != p.Size() || cap(x) != p.Size() {
			t.Fatalf("buffer len %d cap %d, want %d", len(x), cap(x), p.Size())
		}
		for i := range x {
			x[i] = 0xa5
		}
	}
	if got := p.Stats(); got != (Stats{Mapped: 3, InUse: 3}) {
		t.Fatalf("stats %+v", got)
	}
	p.Put(a[:10]) // any length of it
	p.Put(b)      // beyond keepIdle: the longest idle (a) is released
	p.Put(c[:0])
	if got := p.Stats(); got != (Stats{Mapped: 3, Resident: 1, Released: 2}) {
		t.Fatalf("stats after Put %+v", got)
	}
	// The resident one (the last put) comes first, with its contents;
	// then the released ones, usable again.
	if x := p.Get(); &x[0] != &c[0] || x[5] != 0xa5 {
		t.Fatalf("Get did not return the resident buffer first")
	}
	for range 2 {
		x := p.Get()
		if len(x) != p.Size() {
			t.Fatalf("len %d", len(x))
		}
		for i := range x {
			x[i] = byte(i)
		}
		if x[len(x)-1] != byte(len(x)-1) {
			t.Fatal("released buffer not writable")
		}
	}
	if got := p.Stats(); got != (Stats{Mapped: 3, InUse: 3}) {
		t.Fatalf("stats %+v", got)
	}
	// A new buffer only when none is idle.
	p.Get()
	if got := p.Stats().Mapped; got != 4 {
		t.Fatalf("mapped %d, want 4", got)
	}
}

// TestPoolIgnoresForeignBuffers: Put takes back only buffers handed out.
func TestPoolIgnoresForeignBuffers(t *testing.T) {
	p := New(4096, 0, 0)
	p.Put(nil)
	p.Put(make([]byte, 100))
	if got := p.Stats(); got != (Stats{}) {
		t.Fatalf("stats %+v", got)
	}
	b := p.Get()
	p.Put(make([]byte, 4096)) // the right size, not the pool's
	p.Put(b)                  // keepIdle 0, idleTime 0: released at once
	if got := p.Stats(); got != (Stats{Mapped: 1, Released: 1}) {
		t.Fatalf("stats %+v", got)
	}
	// Handed back twice: the second Put is ignored, so the buffer is
	// handed out once.
	b = p.Get()
	p.Put(b)
	p.Put(b)
	if x, y := p.Get(), p.Get(); &x[0] == &y[0] {
		t.Fatal("a buffer put back twice was handed out twice")
	}
	if got := p.Stats(); got != (Stats{Mapped: 2, InUse: 2}) {
		t.Fatalf("stats %+v", got)
	}
}

func TestPoolConcurrent(t *testing.T) {
	p := New(64<<10, 2, time.Hour)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				b := p.Get()
				want := bytes.Repeat([]byte{byte(g*31 + i)}, len(b))
				copy(b, want)
				if !bytes.Equal(b, want) {
					t.Error("buffer shared between goroutines")
					return
				}
				p.Put(b)
			}
		}()
	}
	wg.Wait()
	s := p.Stats()
	if s.InUse != 0 || s.Mapped > 8 || s.Resident != s.Mapped || s.Released != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestPoolIdleRelease: buffers beyond keepIdle keep their pages while in
// recent use and give them back once idle for idleTime.
func TestPoolIdleRelease(t *testing.T) {
	p := New(8192, 1, 100*time.Millisecond)
	bufs := [][]byte{p.Get(), p.Get(), p.Get()}
	for _, b := range bufs {
		p.Put(b)
	}
	if got := p.Stats(); got != (Stats{Mapped: 3, Resident: 3}) {
		t.Fatalf("stats right after Put %+v", got)
	}
	for deadline := time.Now().Add(5 * time.Second); p.Stats().Resident > 1; {
		if time.Now().After(deadline) {
			t.Fatalf("idle buffers not released within 5 s: %+v", p.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := p.Stats(); got != (Stats{Mapped: 3, Resident: 1, Released: 2}) {
		t.Fatalf("stats after the sweep %+v", got)
	}
	// The one kept is the last put.
	if b := p.Get(); &b[0] != &bufs[2][0] {
		t.Fatal("the buffer kept resident is not the last one used")
	}
}

// TestPoolAbandon: an abandoned buffer is never handed out again, stays
// readable (a late reader sees zeros or its old bytes, never a fault) and
// no longer counts.
func TestPoolAbandon(t *testing.T) {
	p := New(64<<10, 4, time.Hour)
	a, b := p.Get(), p.Get()
	for i := range a {
		a[i] = 7
	}
	p.Abandon(a)
	p.Abandon(a)   // twice: ignored
	p.Put(a)       // after Abandon: ignored
	p.Abandon(nil) // not a buffer: ignored
	for _, x := range a {
		if x != 0 && x != 7 {
			t.Fatalf("abandoned buffer reads %d", x)
		}
	}
	if got := p.Stats(); got != (Stats{Mapped: 1, InUse: 1, Abandoned: 1}) {
		t.Fatalf("stats %+v", got)
	}
	p.Put(b)
	for range 3 {
		if x := p.Get(); &x[0] == &a[0] {
			t.Fatal("an abandoned buffer was handed out again")
		}
	}
}
