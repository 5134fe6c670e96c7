package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// LatencyProxy is a TCP proxy on loopback that forwards every connection
// to one target address and delays the bytes of each direction by a fixed
// one-way delay: a link with latency (RTT = 2 × delay) in front of a
// broker on loopback. Bytes read are timestamped and released in order
// once their delay has passed, while reading goes on: a stream of requests
// is pipelined over the link, not serialized by the delay. Bandwidth is
// not limited (a link whose TCP windows cover its bandwidth-delay product).
//
// A Kafka client learns broker addresses from metadata, so it must dial
// the proxy for the broker's address (kgo.Dialer; see Redirect).
type LatencyProxy struct {
	target string
	delay  time.Duration
	ln     net.Listener

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// latencyChunk is bytes read from one side, due on the other at due.
type latencyChunk struct {
	b   []byte
	due time.Time
}

// latencyQueue bounds the chunks in flight per direction (reading blocks
// beyond it): at most 1,024 reads of up to 64 KiB.
const latencyQueue = 1024

// NewLatencyProxy listens on 127.0.0.1:0 and forwards to target with the
// one-way delay given. Close stops it.
func NewLatencyProxy(target string, oneWay time.Duration) (*LatencyProxy, error) {
	if oneWay < 0 {
		return nil, fmt.Errorf("latency proxy: negative delay %s", oneWay)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("latency proxy: %w", err)
	}
	p := &LatencyProxy{target: target, delay: oneWay, ln: ln, conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listen address (host:port).
func (p *LatencyProxy) Addr() string { return p.ln.Addr().String() }

// Close stops listening, closes every proxied connection and waits for
// the proxy's goroutines to end.
func (p *LatencyProxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

// track registers c for Close; false if the proxy is closed (c is closed).
func (p *LatencyProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *LatencyProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
		_ = c.Close()
	}
}

func (p *LatencyProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		if !p.track(c) {
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve forwards client c to the target in both directions until either
// side ends or the proxy closes.
func (p *LatencyProxy) serve(c net.Conn) {
	defer p.wg.Done()
	d := net.Dialer{Timeout: 10 * time.Second}
	s, err := d.Dial("tcp", p.target)
	if err != nil {
		p.untrack(c)
		return
	}
	if !p.track(s) {
		p.untrack(c)
		return
	}
	var dirs sync.WaitGroup
	dirs.Add(2)
	go func() { defer dirs.Done(); p.pump(s, c) }()
	go func() { defer dirs.Done(); p.pump(c, s) }()
	dirs.Wait()
	p.untrack(c, s)
}

// pump copies src to dst, each read released delay after it was read.
// When src ends, what was read is still delivered, then dst's write side
// is shut (the other direction may go on); when dst fails, both are
// closed.
func (p *LatencyProxy) pump(dst, src net.Conn) {
	q := make(chan latencyChunk, latencyQueue)
	done := make(chan struct{})
	go func() {
		defer close(done)
		failed := false
		for ch := range q {
			if failed {
				continue // drain, so that the reader never blocks
			}
			if w := time.Until(ch.due); w > 0 {
				time.Sleep(w)
			}
			if _, err := dst.Write(ch.b); err != nil {
				failed = true
				_ = dst.Close()
				_ = src.Close() // unblocks the reader
			}
		}
		if !failed {
			if tc, ok := dst.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			} else {
				_ = dst.Close()
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			q <- latencyChunk{b: append([]byte(nil), buf[:n]...), due: time.Now().Add(p.delay)}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				_ = dst.Close() // a reset or Close: end the other side too
			}
			break
		}
	}
	close(q)
	<-done
}

// Redirect returns a dial function for kgo.Dialer that dials the proxy
// via[addr] for a broker address addr (host:port) and any other address
// directly, within 10 s.
func Redirect(via map[string]string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if to, ok := via[addr]; ok {
			addr = to
		}
		d := net.Dialer{Timeout: 10 * time.Second}
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, fmt.Errorf("latency proxy: %w", err)
		}
		return c, nil
	}
}
