package server

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"
)

func TestConnListenerCapsPerIP(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := newConnListener(raw, 2)
	defer ln.Close()
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	next := func() net.Conn {
		t.Helper()
		select {
		case c := <-accepted:
			return c
		case <-time.After(5 * time.Second):
			t.Fatal("a connection under the cap was not accepted")
			return nil
		}
	}
	dial()
	dial()
	first, second := next(), next()
	if _, ok := first.(syscall.Conn); !ok {
		t.Error("an accepted connection hides its socket (the departed-client check needs it)")
	}

	third := dial()
	third.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(third), nil)
	if err != nil {
		t.Fatalf("third connection: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("third connection: %d %q, want 429 JSON", resp.StatusCode, resp.Header.Get("Content-Type"))
	}

	// A closed connection gives its slot back, once.
	first.Close()
	first.Close()
	dial()
	next()
	fifth := dial()
	fifth.SetReadDeadline(time.Now().Add(5 * time.Second))
	if resp, err := http.ReadResponse(bufio.NewReader(fifth), nil); err != nil || resp.StatusCode != 429 {
		t.Errorf("over the cap again: %v, %v", resp, err)
	}
	second.Close()
}

// A connection that never sends a byte (a preconnect) is closed at
// shutdown once UnusedConnGrace old, instead of holding Shutdown until
// ReadTimeout; one that has begun its request is let finish.
func TestShutdownClosesUnusedConns(t *testing.T) {
	s := New(Options{
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		ReadTimeout: time.Hour, UnusedConnGrace: 100 * time.Millisecond,
	})
	s.SetReady(true)
	addr, served := serveLoopback(t, s)
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	unused, partial := dial(), dial()
	if _, err := io.WriteString(partial, "GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	// Wait until both are accepted and the partial request's bytes read
	// (a sleep would race a loaded machine).
	deadline := time.Now().Add(20 * time.Second)
	for !connsSeen(s, 2, 1) {
		if time.Now().After(deadline) {
			t.Fatal("the two connections were not accepted and read in time")
		}
		time.Sleep(5 * time.Millisecond)
	}

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	unused.SetReadDeadline(time.Now().Add(20 * time.Second))
	if n, err := unused.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("unused connection at shutdown: read %d, %v; want it closed (EOF)", n, err)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a request half sent", err)
	default:
	}
	if _, err := io.WriteString(partial, "\r\n"); err != nil {
		t.Fatalf("finishing the request: %v", err)
	}
	partial.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(partial), nil)
	if err != nil {
		t.Fatalf("request begun before shutdown: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("request begun before shutdown: %d", resp.StatusCode)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

// connsSeen says whether s's listeners hold live connections in all, used
// of them having sent a byte.
func connsSeen(s *Server, live, used int) bool {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	n, u := 0, 0
	for _, cl := range s.conns {
		cl.mu.Lock()
		for st := range cl.live {
			n++
			if st.used.Load() {
				u++
			}
		}
		cl.mu.Unlock()
	}
	return n == live && u == used
}

// serveLoopback serves s on a loopback port of its own and returns the
// address and what Serve returns.
func serveLoopback(t *testing.T, s *Server) (string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	return ln.Addr().String(), served
}
