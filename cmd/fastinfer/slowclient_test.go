package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Slow and greedy clients: a client that drips its headers or its body
// is cut off after --read-timeout, one address cannot hold more than
// --max-conns-per-ip connections, and the server keeps answering others.
func TestSlowAndGreedyClients(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	base, _, stop := startServe(t, fashionRepo(t), "--read-timeout", "1s", "--max-conns-per-ip", "4", "--prediction-log", "off")
	defer stop()
	http.DefaultClient.CloseIdleConnections() // startServe's readiness polls count as connections
	addr := strings.TrimPrefix(base, "http://")
	img, err := os.ReadFile(filepath.Join("..", "..", "testdata", "fashion", "test-0-ankle-boot.png"))
	if err != nil {
		t.Fatal(err)
	}
	good := func() {
		t.Helper()
		resp, err := http.Post(base+"/v1/models/fashion-resnet/classify", "image/png", bytes.NewReader(img))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("a good request got %d", resp.StatusCode)
		}
		http.DefaultClient.CloseIdleConnections()
	}

	// drip writes head at once, then one byte of drip every 200 ms, and
	// reports how long the server let the connection live.
	drip := func(head, dripped string) time.Duration {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		c.Write([]byte(head))
		closed := make(chan struct{})
		go func() {
			io.Copy(io.Discard, c) // returns when the server closes
			close(closed)
		}()
		for i := 0; ; i++ {
			select {
			case <-closed:
				return time.Since(start)
			case <-time.After(200 * time.Millisecond):
			}
			if time.Since(start) > 15*time.Second {
				t.Fatal("a dripping client was still connected after 15 s (read timeout 1 s)")
			}
			c.Write([]byte{dripped[i%len(dripped)]})
		}
	}
	tests := []struct {
		name, head, drip string
	}{
		{"headers", "POST /v1/models/fashion-resnet/classify HTTP/1.1\r\nHost: x\r\n", "X-Slow: aaaaaaaaaaaaaaaaaaaaaaaa\r\n"},
		{"body", "POST /v1/models/fashion-resnet/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n", "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lived := drip(tt.head, tt.drip)
			t.Logf("cut off after %s", lived.Round(10*time.Millisecond))
			good()
		})
	}

	// Four idle keep-alive connections are allowed; a fifth is refused,
	// and once one closes a new one is accepted.
	status := func(c net.Conn) (int, error) {
		fmt.Fprintf(c, "GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	var conns []net.Conn
	for i := range 4 {
		// The server forgets a connection the client closed only when it
		// next reads from it, so the earlier requests' connections may
		// still count for a moment: retry a refused one briefly.
		for try := 0; ; try++ {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			s, err := status(c)
			if err == nil && s == 200 {
				defer c.Close()
				conns = append(conns, c)
				break
			}
			c.Close()
			if try == 40 {
				t.Fatalf("connection %d of 4: %d %v", i+1, s, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	fifth, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer fifth.Close()
	if s, err := status(fifth); err == nil && s == 200 {
		t.Fatal("a fifth connection from one address was served (limit 4)")
	} else {
		t.Logf("fifth connection: status %d, %v", s, err)
	}
	conns[0].Close()
	time.Sleep(100 * time.Millisecond)
	good()
	// Shut down with the connections still open: the server's own per-IP
	// listener has no race with Shutdown (fasthttp 1.70's wrapper had).
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// Clients that send a request and hang up while it waits in the queue:
// their rows are dropped before they run (fastinfer_rejections_total
// reason client_gone), and the clients that stay get their answers.
func TestLeftClientsRowsAreNotRun(t *testing.T) {
	base, _, stop := startServe(t, testRepo(t), "--max-batch-size", "1", "--prediction-log", "off")
	defer stop()
	img, err := os.ReadFile(filepath.Join("..", "..", "vision", "testdata", "fruits.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	const path = "/v1/models/resnet50/classify"
	before := scrapeMetrics(t, base)

	// One client that stays holds the single instance (ResNet-50 runs for
	// tens of milliseconds) while the others queue behind it and leave.
	stayed := make(chan error, 2)
	post := func() {
		resp, err := http.Post(base+path, "image/jpeg", bytes.NewReader(img))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
		stayed <- err
	}
	go post()
	const leavers = 8
	addr := strings.TrimPrefix(base, "http://")
	for range leavers {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n", path, len(img))
		c.Write(img)
		c.Close()
	}
	go post()
	for range 2 {
		if err := <-stayed; err != nil {
			t.Fatalf("a client that stayed: %v", err)
		}
	}

	// Every leaver is either dropped or (if it was taken before it left) run.
	var gone, rows float64
	deadline := time.Now().Add(30 * time.Second)
	for {
		after := scrapeMetrics(t, base)
		gone = sumMetric(after, "fastinfer_rejections_total", `reason="client_gone"`, `model="resnet50"`) -
			sumMetric(before, "fastinfer_rejections_total", `reason="client_gone"`, `model="resnet50"`)
		rows = sumMetric(after, "fastinfer_rows_total", `model="resnet50"`) - sumMetric(before, "fastinfer_rows_total", `model="resnet50"`)
		if gone+rows == leavers+2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("of %d clients that left: %v dropped unrun; rows executed %v", leavers, gone, rows)
	if gone+rows != leavers+2 {
		t.Fatalf("dropped %v + executed %v rows, want %d requests accounted for", gone, rows, leavers+2)
	}
	if gone < leavers/2 {
		t.Errorf("only %v of %d left clients' requests were dropped before running", gone, leavers)
	}
}

func scrapeMetrics(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sumMetric adds the samples of metric name whose labels contain every
// one of the given label pairs.
func sumMetric(text, name string, labels ...string) float64 {
	sum := 0.0
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if f := strings.Fields(line); ok && len(f) == 2 {
			if v, err := strconv.ParseFloat(f[1], 64); err == nil {
				sum += v
			}
		}
	}
	return sum
}
