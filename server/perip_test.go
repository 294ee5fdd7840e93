package server

import (
	"bufio"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"
)

func TestPerIPListener(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := newPerIPListener(raw, 2)
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
