package testenv

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// echoServer echoes every connection on 127.0.0.1:0 until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(c, c)
				_ = c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func TestLatencyProxy(t *testing.T) {
	const delay = 50 * time.Millisecond
	echo := echoServer(t)
	p, err := NewLatencyProxy(echo, delay)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// Through Redirect, as a Kafka client dials a broker.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Redirect(map[string]string{echo: p.Addr()})(ctx, "tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))

	// One round trip takes at least the two one-way delays.
	start := time.Now()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if rtt := time.Since(start); rtt < 2*delay || string(got) != "ping" {
		t.Fatalf("round trip %q in %s, want ping in >= %s", got, rtt, 2*delay)
	}

	// Writes in a row are pipelined, in order: the last echo comes about
	// one round trip after the last write, not a delay per write (20
	// writes delayed one after the other would take >= 1 s). The upper
	// bound leaves half of that to a loaded machine's scheduling.
	const n = 20
	var want bytes.Buffer
	start = time.Now()
	for i := range n {
		msg := bytes.Repeat([]byte{byte('a' + i)}, 1000)
		want.Write(msg)
		if i > 0 {
			time.Sleep(5 * time.Millisecond) // separate reads at the proxy
		}
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
	}
	span := time.Since(start) // to the last write
	got = make([]byte, want.Len())
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatal("the echoed bytes differ from those written (order or content)")
	}
	if took < span+2*delay || took > span+n*delay/2 {
		t.Fatalf("%d pipelined writes over %s echoed after %s, want within %s..%s", n, span, took, span+2*delay, span+n*delay/2)
	}

	// Close ends the proxied connection and every goroutine (Close waits
	// for them).
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	if _, err := c.Read(got); err == nil {
		t.Fatal("the proxied connection is still open after Close")
	}
	if c2, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		c2.Close()
		t.Fatal("the proxy still accepts connections after Close")
	}
}

func TestLatencyProxyTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	p, err := NewLatencyProxy(dead, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.DialTimeout("tcp", p.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection to a proxy whose target is down stays open")
	}
	if _, err := NewLatencyProxy(dead, -time.Second); err == nil {
		t.Fatal("a negative delay is accepted")
	}
}
