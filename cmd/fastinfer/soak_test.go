package main

import (
	"bytes"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"fastinfer/vision"
)

// soakSnapshot is what must stay flat over a long run.
type soakSnapshot struct {
	rssKiB     int64
	goroutines int
	fds        int
	mats       int64
}

func takeSnapshot(t *testing.T) soakSnapshot {
	goruntime.GC()
	fds, _ := os.ReadDir("/proc/self/fd")
	return soakSnapshot{rssKiB: residentKiB(t), goroutines: goruntime.NumGoroutine(), fds: len(fds), mats: vision.LiveMats()}
}

// Soak: mixed traffic (images, multipart, OIP JSON and binary, bad
// requests, metrics, drift and repository reads) with the prediction log
// and drift monitoring on, for FASTINFER_SOAK (60 s by default; `make
// soak` runs 30 minutes). Memory, goroutines, open files and OpenCV Mats
// are compared between the end of the warm-up and the end of the run:
// growth must stay within small bounds, and no request may fail
// unexpectedly.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("a long run; skipped in -short")
	}
	d := 60 * time.Second
	if v := os.Getenv("FASTINFER_SOAK"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	base, _, stop := startServe(t, fashionRepo(t), "--admin-token", "soak")
	defer stop()
	img, err := os.ReadFile(filepath.Join("..", "..", "testdata", "fashion", "test-0-ankle-boot.png"))
	if err != nil {
		t.Fatal(err)
	}
	var mp bytes.Buffer
	w := multipart.NewWriter(&mp)
	for range 3 {
		p, _ := w.CreateFormFile("image", "x.png")
		p.Write(img)
	}
	w.Close()
	zeros := strings.TrimSuffix(strings.Repeat("0,", 784), ",")
	oipJSON := `{"inputs":[{"name":"data","datatype":"FP32","shape":[1,1,28,28],"data":[` + zeros + `]}]}`
	binHeader := `{"inputs":[{"name":"data","datatype":"FP32","shape":[1,1,28,28],"parameters":{"binary_data_size":3136}}]}`
	binBody := append([]byte(binHeader), make([]byte, 3136)...)

	type call struct {
		method, path, ct string
		body             []byte
		header           map[string]string
		want             int
	}
	calls := []call{
		{"POST", "/v1/models/fashion-resnet/classify", "image/png", img, nil, 200},
		{"POST", "/v1/models/fashion-resnet/classify?top_k=3", w.FormDataContentType(), mp.Bytes(), nil, 200},
		{"POST", "/v2/models/fashion-resnet/infer", "application/json", []byte(oipJSON), nil, 200},
		{"POST", "/v2/models/fashion-resnet/infer", "application/octet-stream", binBody, map[string]string{"Inference-Header-Content-Length": strconv.Itoa(len(binHeader))}, 200},
		{"POST", "/v1/models/fashion-resnet/classify", "image/png", img[:len(img)/2], nil, 400},
		{"POST", "/v1/models/nope/classify", "image/png", img, nil, 404},
		{"GET", "/metrics", "", nil, nil, 200},
		{"GET", "/v1/models/fashion-resnet/drift", "", nil, nil, 200},
		{"POST", "/v2/repository/index", "", nil, map[string]string{"Authorization": "Bearer soak"}, 200},
		{"GET", "/v1/models", "", nil, nil, 200},
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	var sent, unexpected atomic.Int64
	var firstBad atomic.Value
	run := func(until time.Time, worker int) {
		for i := worker; time.Now().Before(until); i++ {
			c := calls[i%len(calls)]
			req, _ := http.NewRequest(c.method, base+c.path, bytes.NewReader(c.body))
			if c.ct != "" {
				req.Header.Set("Content-Type", c.ct)
			}
			for k, v := range c.header {
				req.Header.Set(k, v)
			}
			resp, err := client.Do(req)
			sent.Add(1)
			if err != nil {
				unexpected.Add(1)
				firstBad.CompareAndSwap(nil, err.Error())
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.want {
				unexpected.Add(1)
				firstBad.CompareAndSwap(nil, fmt.Sprintf("%s %s: %d, want %d", c.method, c.path, resp.StatusCode, c.want))
			}
		}
	}
	load := func(span time.Duration) {
		var wg sync.WaitGroup
		until := time.Now().Add(span)
		for k := range 8 {
			wg.Go(func() { run(until, k) })
		}
		wg.Wait()
	}
	load(d / 10) // warm-up: pools, caches, the drift window and the log's buffers fill
	client.CloseIdleConnections()
	before := takeSnapshot(t)
	load(d)
	client.CloseIdleConnections()
	time.Sleep(200 * time.Millisecond) // let the server notice the closed connections
	after := takeSnapshot(t)
	t.Logf("%d requests in %s; start %+v, end %+v", sent.Load(), d+d/10, before, after)
	if n := unexpected.Load(); n > 0 {
		t.Errorf("%d unexpected answers; first: %v", n, firstBad.Load())
	}
	if g := after.goroutines - before.goroutines; g > 10 {
		t.Errorf("goroutines grew by %d", g)
	}
	if f := after.fds - before.fds; f > 8 {
		t.Errorf("open files grew by %d", f)
	}
	if after.mats != 0 {
		t.Errorf("%d OpenCV Mats still open", after.mats)
	}
	if r := after.rssKiB - before.rssKiB; r > 128<<10 {
		t.Errorf("resident memory grew by %d MiB", r>>10)
	}
}
