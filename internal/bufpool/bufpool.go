// Package bufpool keeps large fixed-size byte buffers outside the Go heap,
// for the multipart parts an S3 store fills and uploads.
//
// Go's collector lets the heap grow to twice what is live (GOGC=100), so
// every byte of a part buffer on the heap costs about two of resident
// memory, and a part allocated per staged object makes the heap grow and
// the collector run. Buffers from a Pool are mapped from the kernel
// directly (on Linux; elsewhere they are ordinary heap slices), reused,
// and not unmapped while anything may read them. Buffers idle for a while
// have their pages released to the kernel (the memory is returned, the
// address range kept) and are faulted in again on reuse. A buffer a
// cut-off HTTP request may still be reading is abandoned instead of put
// back: never reused, its pages released, unmapped minutes later.
//
// A buffer is handed back with Put, and not used after (a second Put of
// it is ignored); a buffer never handed back is lost to the pool (it is
// never freed).
package bufpool

import (
	"fmt"
	"sync"
	"time"
)

// Pool hands out buffers of one size. It is safe for concurrent use.
type Pool struct {
	size     int
	keepIdle int
	idleTime time.Duration

	mu       sync.Mutex
	resident []idle             // idle buffers holding their pages, the last used last
	released [][]byte           // idle buffers whose pages went back to the kernel
	sweeping bool               // a sweep is scheduled
	mapped   int                // buffers created
	lost     int                // buffers abandoned
	out      map[*byte]struct{} // the buffers handed out, by their first byte
}

type idle struct {
	b     []byte
	since time.Time
}

// New returns a Pool of buffers of size bytes. Of its idle buffers it keeps
// keepIdle resident; the others give their pages back once idle for
// idleTime (at once if idleTime is 0). Reuse takes the buffer used last, so
// a pool busy with n buffers at a time keeps n resident.
func New(size, keepIdle int, idleTime time.Duration) *Pool {
	if size <= 0 {
		panic(fmt.Sprintf("bufpool: buffer size %d", size)) // a programming error, never input
	}
	return &Pool{size: size, keepIdle: max(keepIdle, 0), idleTime: max(idleTime, 0), out: map[*byte]struct{}{}}
}

// Size is the length of the pool's buffers.
func (p *Pool) Size() int { return p.size }

// Get returns a buffer of Size bytes, whose contents are undefined.
func (p *Pool) Get() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b []byte
	if n := len(p.resident); n > 0 {
		b = p.resident[n-1].b
		p.resident[n-1] = idle{}
		p.resident = p.resident[:n-1]
	} else if n := len(p.released); n > 0 {
		b = p.released[n-1]
		p.released[n-1] = nil
		p.released = p.released[:n-1]
	} else {
		p.mapped++
		b = alloc(p.size)
	}
	p.out[&b[0]] = struct{}{}
	return b
}

// Put hands b, a buffer from Get (any length of it, its full capacity),
// back. Anything else (nil, another slice, a buffer already back) is
// ignored: a buffer handed back twice is never handed out twice.
func (p *Pool) Put(b []byte) {
	b = b[:cap(b)]
	if len(b) != p.size {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.out[&b[0]]; !ok {
		return
	}
	delete(p.out, &b[0])
	p.resident = append(p.resident, idle{b, time.Now()})
	if len(p.resident) <= p.keepIdle {
		return
	}
	if p.idleTime == 0 {
		p.releaseIdle(time.Now())
		return
	}
	if !p.sweeping {
		p.sweeping = true
		time.AfterFunc(p.idleTime, p.sweep)
	}
}

// Abandon takes back b, a buffer from Get, that something may still be
// reading (a request cut off before the HTTP transport was done with its
// body): it is never handed out again. Its pages are released at once
// (a late read sees zeros) and, on Linux, it is unmapped after
// AbandonDelay, long after any such reader gave up. Anything but a buffer
// handed out is ignored, as by Put.
func (p *Pool) Abandon(b []byte) {
	b = b[:cap(b)]
	if len(b) != p.size {
		return
	}
	p.mu.Lock()
	_, ok := p.out[&b[0]]
	delete(p.out, &b[0])
	if ok {
		p.mapped--
		p.lost++
	}
	p.mu.Unlock()
	if ok {
		abandon(b)
	}
}

// AbandonDelay is how long an abandoned buffer stays mapped.
const AbandonDelay = 10 * time.Minute

// sweep releases the buffers idle for idleTime beyond keepIdle, and comes
// again while any is left beyond it.
func (p *Pool) sweep() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sweeping = false
	p.releaseIdle(time.Now().Add(-p.idleTime))
	if len(p.resident) > p.keepIdle {
		p.sweeping = true
		wait := p.resident[0].since.Add(p.idleTime).Sub(time.Now())
		time.AfterFunc(max(wait, time.Millisecond), p.sweep)
	}
}

// releaseIdle releases the resident buffers beyond keepIdle put back at or
// before cutoff, the longest idle first.
func (p *Pool) releaseIdle(cutoff time.Time) {
	n := 0
	for n < len(p.resident)-p.keepIdle && !p.resident[n].since.After(cutoff) {
		release(p.resident[n].b)
		p.released = append(p.released, p.resident[n].b)
		n++
	}
	if n > 0 {
		m := copy(p.resident, p.resident[n:])
		clear(p.resident[m:])
		p.resident = p.resident[:m]
	}
}

// InUse is how many buffers are handed out and not back.
func (p *Pool) InUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.out)
}

// Stats are a Pool's counts.
type Stats struct {
	Mapped   int // buffers created (mapped memory, resident or not)
	InUse    int // buffers handed out and not back
	Resident int // idle buffers holding their pages
	Released int // idle buffers whose pages were released

	// Abandoned counts the buffers abandoned (no longer in Mapped).
	Abandoned int
}

// Stats returns the pool's counts.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{Mapped: p.mapped, InUse: len(p.out), Resident: len(p.resident), Released: len(p.released), Abandoned: p.lost}
}
