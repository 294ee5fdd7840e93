package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"fastinfer/internal/testutil"
)

const toyMetadata = `{"name":"toy","versions":["1"],"platform":"onnxruntime_onnx",` +
	`"inputs":[{"name":"data","datatype":"FP32","shape":[-1,3,4,4]}],` +
	`"outputs":[{"name":"probs","datatype":"FP32","shape":[-1,10]}]}`

// fakeServer is the part of a fastinfer server the load generator talks
// to, with the toy model: input "data" FP32 [-1,3,4,4].
type fakeServer struct {
	url   string
	ready atomic.Int32 // status of /v2/health/ready

	mu        sync.Mutex
	classify  []string       // bodies posted to classify, in order of arrival
	batches   []int64        // batch dimension of every valid infer request
	tensors   map[string]int // distinct tensor payloads seen
	rejected  []string       // why infer requests were refused
	metrics   []byte
	readyHits int
}

func startFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	f := &fakeServer{tensors: map[string]int{}}
	f.ready.Store(fasthttp.StatusOK)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: f.handle, IdleTimeout: 200 * time.Millisecond, ReadTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.ShutdownWithContext(ctx); err != nil {
			t.Errorf("shutting the fake server down: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("fake server: %v", err)
		}
	})
	f.url = "http://" + ln.Addr().String()
	return f
}

func (f *fakeServer) handle(ctx *fasthttp.RequestCtx) {
	method, path := string(ctx.Method()), string(ctx.Path())
	switch {
	case method == "POST" && path == "/v1/models/toy/classify":
		body := string(ctx.PostBody())
		f.mu.Lock()
		f.classify = append(f.classify, body)
		f.mu.Unlock()
		if body == "busy" {
			ctx.Error(`{"error":"queue full"}`, fasthttp.StatusTooManyRequests)
			return
		}
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"model":"toy","predictions":[{"label":"cat","score":0.9}]}`)
	case method == "GET" && path == "/v2/models/toy":
		ctx.SetContentType("application/json")
		ctx.SetBodyString(toyMetadata)
	case method == "GET" && path == "/v1/models/toy":
		ctx.SetBodyString(`{"name":"toy","batching":{"max_batch_size":8,"instances":3}}`)
	case method == "GET" && path == "/v1/models/garbled":
		ctx.SetBodyString(`{"name":"garbled","batching":`)
	case method == "GET" && path == "/v2/models/two":
		ctx.SetBodyString(`{"name":"two","inputs":[{"name":"a","datatype":"FP32","shape":[-1,2]},{"name":"b","datatype":"FP32","shape":[-1,2]}]}`)
	case method == "GET" && path == "/v2/models/garbled":
		ctx.SetBodyString(`{"name":"garbled","inputs":`)
	case method == "POST" && path == "/v2/models/toy/infer":
		batch, err := checkInfer(ctx)
		f.mu.Lock()
		defer f.mu.Unlock()
		if err != nil {
			f.rejected = append(f.rejected, err.Error())
			ctx.Error(err.Error(), fasthttp.StatusBadRequest)
			return
		}
		f.batches = append(f.batches, batch)
		f.tensors[string(ctx.PostBody())]++
		ctx.SetBodyString(`{"model_name":"toy","outputs":[]}`)
	case method == "GET" && path == "/v2/health/ready":
		f.mu.Lock()
		f.readyHits++
		f.mu.Unlock()
		ctx.SetStatusCode(int(f.ready.Load()))
	case method == "GET" && path == "/metrics":
		f.mu.Lock()
		ctx.SetBody(f.metrics)
		f.mu.Unlock()
	default:
		ctx.Error("not found", fasthttp.StatusNotFound)
	}
}

// checkInfer validates a binary tensor request for the toy model as the
// server does and returns its batch size.
func checkInfer(ctx *fasthttp.RequestCtx) (int64, error) {
	body := ctx.PostBody()
	hl, err := strconv.Atoi(string(ctx.Request.Header.Peek("Inference-Header-Content-Length")))
	if err != nil || hl < 0 || hl > len(body) {
		return 0, fmt.Errorf("bad Inference-Header-Content-Length %q for a %d-byte body",
			ctx.Request.Header.Peek("Inference-Header-Content-Length"), len(body))
	}
	var req struct {
		Inputs []struct {
			Name       string  `json:"name"`
			Datatype   string  `json:"datatype"`
			Shape      []int64 `json:"shape"`
			Parameters struct {
				BinaryDataSize *int64 `json:"binary_data_size"`
			} `json:"parameters"`
		} `json:"inputs"`
		Parameters struct {
			BinaryDataOutput bool `json:"binary_data_output"`
		} `json:"parameters"`
	}
	dec := json.NewDecoder(bytes.NewReader(body[:hl]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return 0, fmt.Errorf("header %q: %v", body[:hl], err)
	}
	if len(req.Inputs) != 1 {
		return 0, fmt.Errorf("%d inputs", len(req.Inputs))
	}
	in := req.Inputs[0]
	if in.Name != "data" || in.Datatype != "FP32" {
		return 0, fmt.Errorf("input %q %s", in.Name, in.Datatype)
	}
	if len(in.Shape) != 4 || in.Shape[0] < 1 || in.Shape[1] != 3 || in.Shape[2] != 4 || in.Shape[3] != 4 {
		return 0, fmt.Errorf("shape %v", in.Shape)
	}
	n := in.Shape[0] * 3 * 4 * 4
	if in.Parameters.BinaryDataSize == nil || *in.Parameters.BinaryDataSize != 4*n {
		return 0, fmt.Errorf("binary_data_size %v, shape needs %d", in.Parameters.BinaryDataSize, 4*n)
	}
	blob := body[hl:]
	if int64(len(blob)) != 4*n {
		return 0, fmt.Errorf("%d bytes of tensor data, want %d", len(blob), 4*n)
	}
	for i := 0; i < len(blob); i += 4 {
		if v := math.Float32frombits(binary.LittleEndian.Uint32(blob[i:])); math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return 0, fmt.Errorf("element %d is %v", i/4, v)
		}
	}
	if !req.Parameters.BinaryDataOutput {
		return 0, errors.New("binary_data_output not asked for")
	}
	return in.Shape[0], nil
}

func newTestClient(t *testing.T, url string) *Client {
	t.Helper()
	c, err := NewClient(url)
	if err != nil {
		t.Fatal(err)
	}
	c.Timeout = 2 * time.Second
	return c
}

// deadURL is the address of a port nothing listens on.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

func TestNewClient(t *testing.T) {
	tests := []struct {
		url      string
		wantBase string // "" = rejected
	}{
		{"http://127.0.0.1:8000", "http://127.0.0.1:8000"},
		{"http://localhost:8000/", "http://localhost:8000"},
		{"http://localhost:8000/some/path?q=1", "http://localhost:8000"},
		{"https://example.com:8443", "https://example.com:8443"},
		{"", ""},
		{"localhost:8000", ""},
		{"127.0.0.1:8000", ""},
		{"ftp://host:21", ""},
		{"http://", ""},
		{"http:///v2", ""},
		{"://host:1", ""},
		{"http://host:1:2%zz", ""},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			c, err := NewClient(tc.url)
			if tc.wantBase == "" {
				if err == nil {
					t.Errorf("NewClient(%q) accepted it (base %q)", tc.url, c.base)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewClient(%q): %v", tc.url, err)
			}
			if c.base != tc.wantBase {
				t.Errorf("base %q, want %q", c.base, tc.wantBase)
			}
			if c.Timeout <= 0 {
				t.Errorf("Timeout = %v, want a default", c.Timeout)
			}
		})
	}
}

func TestWaitReady(t *testing.T) {
	tests := []struct {
		name     string
		status   int32
		readyIn  time.Duration // turn 200 after this; 0 = never changes
		dead     bool
		wantErr  string // "" = success
		deadline time.Duration
	}{
		{"ready", fasthttp.StatusOK, 0, false, "", 2 * time.Second},
		{"becomes ready", fasthttp.StatusServiceUnavailable, 250 * time.Millisecond, false, "", 5 * time.Second},
		{"never ready", fasthttp.StatusServiceUnavailable, 0, false, "503", 300 * time.Millisecond},
		{"nothing listening", 0, 0, true, "not ready", 300 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var url string
			var f *fakeServer
			if tc.dead {
				url = deadURL(t)
			} else {
				f = startFakeServer(t)
				f.ready.Store(tc.status)
				url = f.url
				if tc.readyIn > 0 {
					tm := time.AfterFunc(tc.readyIn, func() { f.ready.Store(fasthttp.StatusOK) })
					t.Cleanup(func() { tm.Stop() })
				}
			}
			c := newTestClient(t, url)
			ctx, cancel := context.WithTimeout(context.Background(), tc.deadline)
			defer cancel()
			start := time.Now()
			err := c.WaitReady(ctx)
			took := time.Since(start)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("WaitReady: %v", err)
				}
				if took < tc.readyIn {
					t.Errorf("ready after %v, before the server was (%v)", took, tc.readyIn)
				}
				return
			}
			if err == nil {
				t.Fatal("WaitReady succeeded against a server that is not ready")
			}
			if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("WaitReady error %q, want one wrapping the deadline and mentioning %q", err, tc.wantErr)
			}
			if took > tc.deadline+2*time.Second {
				t.Errorf("WaitReady took %v past a %v deadline", took, tc.deadline)
			}
			if f != nil {
				f.mu.Lock()
				hits := f.readyHits
				f.mu.Unlock()
				if hits < 2 {
					t.Errorf("the server was asked %d times, want polling", hits)
				}
			}
		})
	}
}

func TestClientGet(t *testing.T) {
	f := startFakeServer(t)
	c := newTestClient(t, f.url)
	b, err := c.Get("/v2/models/toy")
	if err != nil || string(b) != toyMetadata {
		t.Errorf("Get metadata = %q, %v", b, err)
	}
	_, err = c.Get("/v2/models/missing")
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("Get of a missing path: error %v, want one with the status 404", err)
	}
	_, err = newTestClient(t, deadURL(t)).Get("/metrics")
	if err == nil {
		t.Error("Get from a dead server succeeded")
	}
}

func TestImageTarget(t *testing.T) {
	f := startFakeServer(t)
	c := newTestClient(t, f.url)
	if _, err := NewImageTarget(c, "toy", nil); err == nil {
		t.Error("NewImageTarget accepted no images")
	}
	images := [][]byte{[]byte("img0"), []byte("busy"), []byte("img2")}
	it, err := NewImageTarget(c, "toy", images)
	if err != nil {
		t.Fatal(err)
	}
	if it.BatchSize() != 1 {
		t.Errorf("BatchSize = %d, want 1", it.BatchSize())
	}
	for i := range 7 {
		n, fail := it.Do(context.Background())
		want := ""
		if i%3 == 1 {
			want = "429"
		}
		if fail != want {
			t.Errorf("request %d: failure %q, want %q", i, fail, want)
		}
		if wantN := map[bool]int{true: 1, false: 0}[want == ""]; n != wantN {
			t.Errorf("request %d: %d images, want %d", i, n, wantN)
		}
	}
	f.mu.Lock()
	sent := f.classify
	f.mu.Unlock()
	if want := []string{"img0", "busy", "img2", "img0", "busy", "img2", "img0"}; !reflect.DeepEqual(sent, want) {
		t.Errorf("server received %q, want the images in turn %q", sent, want)
	}

	t.Run("under load", func(t *testing.T) {
		it, err := NewImageTarget(c, "toy", [][]byte{[]byte("ok"), []byte("busy")})
		if err != nil {
			t.Fatal(err)
		}
		st, err := Run(context.Background(), it, Load{Mode: ModeConcurrency, Concurrency: 2,
			Warmup: 50 * time.Millisecond, Window: 100 * time.Millisecond, Duration: 200 * time.Millisecond}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if st.Requests < 10 || st.Images != st.Requests {
			t.Fatalf("requests %d images %d", st.Requests, st.Images)
		}
		// Requests alternate ok/busy, so about as many 429s as successes.
		if n := st.Errors["429"]; len(st.Errors) != 1 || n < st.Requests-4 || n > st.Requests+4 {
			t.Errorf("Errors = %v with %d successes, want about as many 429s", st.Errors, st.Requests)
		}
	})

	t.Run("server down", func(t *testing.T) {
		it, err := NewImageTarget(newTestClient(t, deadURL(t)), "toy", images)
		if err != nil {
			t.Fatal(err)
		}
		if n, fail := it.Do(context.Background()); n != 0 || fail != "transport" {
			t.Errorf("Do against a closed port = %d, %q; want 0, transport", n, fail)
		}
	})
}

func TestImageTargetServerGoesDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{tensors: map[string]int{}}
	srv := &fasthttp.Server{Handler: f.handle, IdleTimeout: time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	it, err := NewImageTarget(newTestClient(t, "http://"+ln.Addr().String()), "toy", [][]byte{[]byte("a")})
	if err != nil {
		t.Fatal(err)
	}
	if n, fail := it.Do(context.Background()); n != 1 || fail != "" {
		t.Fatalf("Do while up = %d, %q", n, fail)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.ShutdownWithContext(ctx); err != nil {
		t.Fatal(err)
	}
	<-done
	if n, fail := it.Do(context.Background()); n != 0 || fail != "transport" {
		t.Errorf("Do after shutdown = %d, %q; want 0, transport", n, fail)
	}
}

func TestMetadata(t *testing.T) {
	f := startFakeServer(t)
	c := newTestClient(t, f.url)
	m, err := c.Metadata("toy")
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "toy" || m.Platform != "onnxruntime_onnx" || !reflect.DeepEqual(m.Versions, []string{"1"}) ||
		len(m.Inputs) != 1 || m.Inputs[0].Name != "data" || m.Inputs[0].Datatype != "FP32" ||
		!reflect.DeepEqual(m.Inputs[0].Shape, []int64{-1, 3, 4, 4}) {
		t.Errorf("Metadata = %+v", m)
	}
	for _, name := range []string{"two", "garbled", "missing"} {
		if _, err := c.Metadata(name); err == nil {
			t.Errorf("Metadata(%q) succeeded", name)
		}
	}
}

func TestTensorTarget(t *testing.T) {
	f := startFakeServer(t)
	c := newTestClient(t, f.url)
	meta, err := c.Metadata("toy")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		batch, variants, calls int
		wantDistinct           int
	}{
		{batch: 1, variants: 1, calls: 3, wantDistinct: 1},
		{batch: 3, variants: 2, calls: 4, wantDistinct: 2},
		{batch: 2, variants: 0, calls: 2, wantDistinct: 1}, // at least one variant
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("b%d v%d", tc.batch, tc.variants), func(t *testing.T) {
			f.mu.Lock()
			f.batches, f.rejected, f.tensors = nil, nil, map[string]int{}
			f.mu.Unlock()
			tt, err := NewTensorTarget(c, meta, tc.batch, tc.variants, 7)
			if err != nil {
				t.Fatal(err)
			}
			if tt.BatchSize() != tc.batch {
				t.Errorf("BatchSize = %d, want %d", tt.BatchSize(), tc.batch)
			}
			for i := range tc.calls {
				if n, fail := tt.Do(context.Background()); n != tc.batch || fail != "" {
					t.Errorf("request %d = %d, %q; want %d, success", i, n, fail, tc.batch)
				}
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.rejected) > 0 {
				t.Fatalf("the server refused: %q", f.rejected)
			}
			if len(f.batches) != tc.calls {
				t.Fatalf("server saw %d valid requests, want %d", len(f.batches), tc.calls)
			}
			for _, b := range f.batches {
				if b != int64(tc.batch) {
					t.Errorf("batch dimension %d, want %d", b, tc.batch)
				}
			}
			if len(f.tensors) != tc.wantDistinct {
				t.Errorf("%d distinct bodies over %d requests, want %d (the variants, cycled)", len(f.tensors), tc.calls, tc.wantDistinct)
			}
			for body, n := range f.tensors {
				if want := tc.calls / tc.wantDistinct; n != want {
					t.Errorf("a body was sent %d times, want %d (%d bytes)", n, want, len(body))
				}
			}
		})
	}

	t.Run("seeded", func(t *testing.T) {
		a, _ := NewTensorTarget(c, meta, 2, 2, 11)
		b, _ := NewTensorTarget(c, meta, 2, 2, 11)
		d, _ := NewTensorTarget(c, meta, 2, 2, 12)
		if !reflect.DeepEqual(a.bodies, b.bodies) {
			t.Error("the same seed gave different tensors")
		}
		if reflect.DeepEqual(a.bodies, d.bodies) {
			t.Error("different seeds gave the same tensors")
		}
	})
}

func TestNewTensorTargetRejects(t *testing.T) {
	c := newTestClient(t, deadURL(t))
	tests := []struct {
		name  string
		meta  string
		batch int
		want  string
	}{
		{"INT64 input", `{"name":"m","inputs":[{"name":"x","datatype":"INT64","shape":[-1,3,4,4]}]}`, 1, "send FP32, FP16 or UINT8"},
		{"BYTES input", `{"name":"m","inputs":[{"name":"x","datatype":"BYTES","shape":[-1,3,4,4]}]}`, 1, "send FP32, FP16 or UINT8"},
		{"dynamic height", `{"name":"m","inputs":[{"name":"x","datatype":"FP32","shape":[-1,3,-1,4]}]}`, 1, "dimension 2"},
		{"dynamic channels", `{"name":"m","inputs":[{"name":"x","datatype":"FP32","shape":[1,-1,4,4]}]}`, 1, "dimension 1"},
		{"zero dimension", `{"name":"m","inputs":[{"name":"x","datatype":"FP32","shape":[-1,3,0]}]}`, 1, "dimension 2"},
		{"no shape", `{"name":"m","inputs":[{"name":"x","datatype":"FP32","shape":[]}]}`, 1, "shape"},
		{"no inputs", `{"name":"m","inputs":[]}`, 1, "input"},
		{"batch 0", `{"name":"m","inputs":[{"name":"x","datatype":"FP32","shape":[-1,3]}]}`, 0, "batch"},
		{"negative batch", `{"name":"m","inputs":[{"name":"x","datatype":"FP32","shape":[-1,3]}]}`, -2, "batch"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var meta ModelMetadata
			if err := json.Unmarshal([]byte(tc.meta), &meta); err != nil {
				t.Fatal(err)
			}
			tt, err := NewTensorTarget(c, &meta, tc.batch, 1, 1)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewTensorTarget error %v, want one mentioning %q", err, tc.want)
			}
			if tt != nil {
				t.Errorf("a target was returned with the error")
			}
		})
	}
}

func TestLoadImages(t *testing.T) {
	write := func(t *testing.T, dir string, files map[string]string) {
		t.Helper()
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name    string
		files   map[string]string
		subdirs []string
		want    []string // nil: an error
	}{
		{
			name: "filters and sorts",
			files: map[string]string{
				"c.png": "C", "a.jpg": "A", "b.JPEG": "B", "d.jpeg": "D",
				"notes.txt": "x", "e.gif": "x", "jpg": "x", "f.jpg.bak": "x", "README": "x",
			},
			subdirs: []string{"sub"},
			want:    []string{"A", "B", "C", "D"},
		},
		{name: "empty folder", want: nil},
		{name: "no images", files: map[string]string{"a.txt": "x", "b.webp": "x"}, want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, dir, tc.files)
			for _, d := range tc.subdirs {
				if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
					t.Fatal(err)
				}
				write(t, filepath.Join(dir, d), map[string]string{"z.jpg": "Z"})
			}
			got, err := LoadImages(dir)
			if tc.want == nil {
				if err == nil {
					t.Errorf("LoadImages = %q, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var s []string
			for _, b := range got {
				s = append(s, string(b))
			}
			if !reflect.DeepEqual(s, tc.want) {
				t.Errorf("LoadImages = %q, want %q", s, tc.want)
			}
		})
	}
	if _, err := LoadImages(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("LoadImages of a missing folder succeeded")
	}
}

func TestClientBatching(t *testing.T) {
	f := startFakeServer(t)
	c := newTestClient(t, f.url)
	for model, want := range map[string]ModelBatching{"toy": {Instances: 3, MaxBatchSize: 8}, "garbled": {}, "absent": {}} {
		if got := c.Batching(model); got != want {
			t.Errorf("Batching(%q) = %+v, want %+v", model, got, want)
		}
	}
}

// The tensor target sends the input's own datatype, as perf_analyzer
// does: FP16 halves and UINT8 quarters the bytes of FP32, and a header
// that says so.
func TestTensorTargetDatatypes(t *testing.T) {
	c := newTestClient(t, deadURL(t))
	for _, tt := range []struct {
		dt    string
		bytes int // of a batch of 2 rows of 3×4×4
	}{{"FP32", 384}, {"FP16", 192}, {"UINT8", 96}} {
		meta := &ModelMetadata{Name: "m", Inputs: []TensorMetadata{{Name: "x", Datatype: tt.dt, Shape: []int64{-1, 3, 4, 4}}}}
		tg, err := NewTensorTarget(c, meta, 2, 1, 5)
		if err != nil {
			t.Fatal(err)
		}
		hlen, _ := strconv.Atoi(tg.hlen)
		body := tg.bodies[0]
		header := string(body[:hlen])
		if want := fmt.Sprintf(`"datatype":%q,"shape":[2,3,4,4],"parameters":{"binary_data_size":%d}`, tt.dt, tt.bytes); !strings.Contains(header, want) {
			t.Errorf("%s: header %s; want %s", tt.dt, header, want)
		}
		blob := body[hlen:]
		if len(blob) != tt.bytes {
			t.Errorf("%s: %d bytes of tensor, want %d", tt.dt, len(blob), tt.bytes)
		}
		distinct := map[byte]bool{}
		for _, b := range blob {
			distinct[b] = true
		}
		if len(distinct) < 16 {
			t.Errorf("%s: the tensor holds %d distinct byte values: not noise", tt.dt, len(distinct))
		}
	}
}

// Over TLS, a certificate the client does not trust fails WaitReady at
// once instead of waiting for the deadline; the CA's pool makes it pass.
func TestWaitReadyTLS(t *testing.T) {
	ca := testutil.NewCA(t, "test CA")
	certPEM, keyPEM := ca.Pair(t, "server", false, time.Now().Add(time.Hour))
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {}}
	go srv.Serve(ln)
	defer srv.Shutdown()
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
		ok   bool
	}{
		{"untrusted", &tls.Config{}, false},
		{"trusted", &tls.Config{RootCAs: ca.Pool()}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewClient("https://" + ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			c.SetTLS(tc.cfg)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			err = c.WaitReady(ctx)
			if tc.ok && err != nil || !tc.ok && (err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "certificate")) {
				t.Fatalf("WaitReady = %v", err)
			}
		})
	}
}
