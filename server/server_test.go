package server

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"fastinfer/batching"
	"fastinfer/internal/testutil"
	"fastinfer/vision/guard"
)

var update = flag.Bool("update", false, "rewrite golden files")

// fixtures are real and crafted images shared with vision's tests.
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "vision", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fakeModel is a 4-class model whose "preprocessing" runs the real header
// guard and whose logits depend on the image's size, so different images
// get different, predictable answers.
func fakeModel(name string, version int) *Model {
	m := &Model{
		Name: name, Version: version, Platform: "onnxruntime_onnx", Provider: "cpu",
		Inputs:  []Tensor{{Name: "data", Datatype: "FP32", Shape: []int64{-1, 2}}},
		Outputs: []Tensor{{Name: "logits", Datatype: "FP32", Shape: []int64{-1, 4}}},
		Labels:  []string{"cat", "dog \"quoted\"", "", "bird"},
		Classes: 4, InputLen: 2,
	}
	m.Preprocess = func(img []byte, dst []float32, stats bool) (ImageStats, error) {
		info, err := guard.Check(img, 0)
		if err != nil {
			return ImageStats{}, fmt.Errorf("checking image: %w", err)
		}
		dst[0], dst[1] = float32(info.Width), float32(info.Height)
		if !stats {
			return ImageStats{Width: info.Width, Height: info.Height, Brightness: math.NaN(), Contrast: math.NaN()}, nil
		}
		// A made-up brightness from the width, so tests can shift it.
		return ImageStats{Width: info.Width, Height: info.Height, Brightness: float64(info.Width%100) / 100, Contrast: 0.2}, nil
	}
	m.Infer = func(_ context.Context, in []float32, rows int, out []float32, _ batching.RequestOptions) (batching.Timing, error) {
		for r := range rows {
			w, h := in[r*2], in[r*2+1]
			o := out[r*4 : r*4+4]
			o[0], o[1], o[2], o[3] = w/100, h/100, -1, float32(int(w*h)%7)

		}
		return batching.Timing{Queue: time.Millisecond, Compute: 2 * time.Millisecond}, nil
	}
	// As the scheduler's DoBytes: the same rows, handed over as bytes.
	m.InferBytes = func(ctx context.Context, in []byte, rows int, out []float32, o batching.RequestOptions) (batching.Timing, error) {
		f := make([]float32, len(in)/4)
		for i := range f {
			f[i] = math.Float32frombits(binary.NativeEndian.Uint32(in[4*i:]))
		}
		return m.Infer(ctx, f, rows, out, o)
	}
	return m
}

type testServer struct {
	srv    *Server
	ln     *fasthttputil.InmemoryListener
	client *fasthttp.Client
	logs   *testutil.Buffer
	done   chan error
}

func newTestServer(t *testing.T, o Options, models ...*Model) *testServer {
	t.Helper()
	logs := &testutil.Buffer{}
	o.Logger = slog.New(slog.NewTextHandler(logs, nil))
	o.Version = "test"
	s := New(o)
	for _, m := range models {
		s.AddModel(m)
	}
	s.SetReady(true)
	ln := fasthttputil.NewInmemoryListener()
	ts := &testServer{srv: s, ln: ln, logs: logs, done: make(chan error, 1)}
	go func() { ts.done <- s.Serve(ln) }()
	ts.client = &fasthttp.Client{Dial: func(string) (net.Conn, error) { return ln.Dial() }}
	t.Cleanup(func() {
		s.Shutdown(context.Background())
		<-ts.done
	})
	return ts
}

type response struct {
	status int
	body   string
	header map[string]string
}

func (ts *testServer) do(t testing.TB, method, path, contentType string, body []byte) response {
	t.Helper()
	h := map[string]string{}
	if contentType != "" {
		h["Content-Type"] = contentType
	}
	return ts.doHeaders(t, method, path, h, body...)
}

// multipartBody builds a multipart/form-data body with the given parts.
func multipartBody(t testing.TB, field string, files ...[]byte) (string, []byte) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for i, f := range files {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", fmt.Sprintf(`form-data; name=%q; filename="img%d.jpg"`, field, i))
		h.Set("Content-Type", "image/jpeg")
		p, err := w.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		p.Write(f)
	}
	w.Close()
	return w.FormDataContentType(), b.Bytes()
}

var timingRE = regexp.MustCompile(`"(preprocess|queue|infer|total)":[0-9.e+-]+`)

// golden compares got with testdata/golden/name, after masking timings.
func golden(t *testing.T, name string, r response) {
	t.Helper()
	got := fmt.Sprintf("status: %d\n%s", r.status, timingRE.ReplaceAllString(r.body, `"$1":0`))
	path := filepath.Join("testdata", "golden", name)
	if *update {
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./server -update to create it)", err)
	}
	if got != string(want) {
		t.Fatalf("%s mismatch:\n got: %s\nwant: %s", name, got, want)
	}
}

func TestGoldenResponses(t *testing.T) {
	ts := newTestServer(t, Options{MaxBodyBytes: 1 << 20, MaxImages: 3}, fakeModel("toy", 1), fakeModel("toy", 2), fakeModel("other", 7))
	baboon, butterfly := fixture(t, "baboon.jpg"), fixture(t, "butterfly.jpg")
	mpCT, mpBody := multipartBody(t, "image", baboon, butterfly, baboon)
	_, noImage := multipartBody(t, "photo", baboon)
	tooManyCT, tooMany := multipartBody(t, "image", baboon, baboon, baboon, baboon)
	badCT, badPart := multipartBody(t, "image", baboon, fixture(t, "truncated.jpg"))
	tests := []struct {
		name, method, path, ct string
		body                   []byte
	}{
		{"classify_jpeg", "POST", "/v1/models/toy/classify", "image/jpeg", baboon},
		{"classify_version_top2", "POST", "/v1/models/toy/versions/1/classify?top_k=2", "application/octet-stream", butterfly},
		{"classify_png", "POST", "/v1/models/toy/classify?top_k=100", "image/png", fixture(t, "smarties.png")},
		{"classify_multipart", "POST", "/v1/models/toy/classify?top_k=1", mpCT, mpBody},
		{"err_model_not_found", "POST", "/v1/models/nope/classify", "image/jpeg", baboon},
		{"err_version_not_found", "POST", "/v1/models/toy/versions/3/classify", "image/jpeg", baboon},
		{"err_version_leading_zero", "POST", "/v1/models/toy/versions/01/classify", "image/jpeg", baboon},
		{"err_traversal", "POST", "/v1/models/..%2f..%2fetc/classify", "image/jpeg", baboon},
		{"err_bad_image_garbage", "POST", "/v1/models/toy/classify", "image/jpeg", fixture(t, "garbage.bin")},
		{"err_bad_image_truncated", "POST", "/v1/models/toy/classify", "image/jpeg", fixture(t, "truncated.jpg")},
		{"err_bad_image_empty", "POST", "/v1/models/toy/classify", "image/jpeg", nil},
		{"err_bad_image_in_multipart", "POST", "/v1/models/toy/classify", badCT, badPart},
		{"err_too_large_pixels", "POST", "/v1/models/toy/classify", "image/png", fixture(t, "bomb.png")},
		{"err_too_many_images", "POST", "/v1/models/toy/classify", tooManyCT, tooMany},
		{"err_media_type", "POST", "/v1/models/toy/classify", "text/plain", baboon},
		{"err_no_media_type", "POST", "/v1/models/toy/classify", "", baboon},
		{"err_multipart_no_image", "POST", "/v1/models/toy/classify", mpCT, noImage},
		{"err_multipart_malformed", "POST", "/v1/models/toy/classify", "multipart/form-data; boundary=xyz", []byte("--xyz\r\nbroken")},
		{"err_top_k_zero", "POST", "/v1/models/toy/classify?top_k=0", "image/jpeg", baboon},
		{"err_top_k_text", "POST", "/v1/models/toy/classify?top_k=five", "image/jpeg", baboon},
		{"err_method", "GET", "/v1/models/toy/classify", "", nil},
		{"err_route", "GET", "/v1/nothing", "", nil},
		{"models", "GET", "/v1/models", "", nil},
		{"model_info", "GET", "/v1/models/toy", "", nil},
		{"model_version_info", "GET", "/v1/models/toy/versions/1", "", nil},
		{"server_metadata", "GET", "/v2", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ts.do(t, tt.method, tt.path, tt.ct, tt.body)
			if ct := r.header["Content-Type"]; r.status != 405 && ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if r.status == 405 && r.header["Allow"] == "" {
				t.Error("405 without an Allow header")
			}
			golden(t, tt.name+".golden", r)
		})
	}
}

// A body over the limit is refused from its Content-Length, before it is
// read, with the JSON error.
func TestBodyTooLarge(t *testing.T) {
	ts := newTestServer(t, Options{MaxBodyBytes: 1 << 20}, fakeModel("toy", 1))
	c, err := ts.ln.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /v1/models/toy/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n", 2<<20)
	var resp fasthttp.Response
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := resp.Read(bufio.NewReader(c)); err != nil {
		t.Fatal(err)
	}
	golden(t, "err_too_large_body.golden", response{status: resp.StatusCode(), body: string(resp.Body())})
}

func TestHealth(t *testing.T) {
	ts := newTestServer(t, Options{}, fakeModel("toy", 1))
	if r := ts.do(t, "GET", "/v2/health/live", "", nil); r.status != 200 || r.body != "" {
		t.Fatalf("live = %d %q", r.status, r.body)
	}
	if r := ts.do(t, "GET", "/v2/health/ready", "", nil); r.status != 200 {
		t.Fatalf("ready = %d", r.status)
	}
	ts.srv.SetReady(false)
	if r := ts.do(t, "GET", "/v2/health/ready", "", nil); r.status != 503 || r.body != "" {
		t.Fatalf("not ready = %d %q", r.status, r.body)
	}
}

// Scheduler outcomes map to their statuses and codes; ?priority= and
// ?timeout_ms= reach the scheduler.
func TestSchedulingErrors(t *testing.T) {
	tests := []struct {
		name, query string
		err         error
		status      int
		code        string
		retryAfter  bool
		wantOpts    batching.RequestOptions
	}{
		{"queue full", "", batching.ErrQueueFull, 429, "queue_full", true, batching.RequestOptions{}},
		{"queue timeout", "?timeout_ms=20", batching.ErrQueueTimeout, 504, "queue_timeout", false, batching.RequestOptions{Timeout: 20 * time.Millisecond}},
		{"unmeetable", "?timeout_ms=1.5&priority=1", batching.ErrDeadlineUnmeetable, 503, "deadline_unmeetable", true, batching.RequestOptions{Priority: 1, Timeout: 1500 * time.Microsecond}},
		{"priority out of range", "?priority=9", batching.ErrBadRequest, 400, "bad_request", false, batching.RequestOptions{Priority: 9}},
		{"closed", "", batching.ErrClosed, 503, "unavailable", true, batching.RequestOptions{}},
		{"client gone", "", batching.ErrClientGone, 499, "client_gone", false, batching.RequestOptions{}},
		{"bad priority", "?priority=high", nil, 400, "bad_request", false, batching.RequestOptions{}},
		{"zero priority", "?priority=0", nil, 400, "bad_request", false, batching.RequestOptions{}},
		{"bad timeout", "?timeout_ms=-3", nil, 400, "bad_request", false, batching.RequestOptions{}},
		{"nan timeout", "?timeout_ms=NaN", nil, 400, "bad_request", false, batching.RequestOptions{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := fakeModel("toy", 1)
			var got batching.RequestOptions
			called := false
			m.Infer = func(_ context.Context, _ []float32, _ int, _ []float32, o batching.RequestOptions) (batching.Timing, error) {
				got, called = o, true
				return batching.Timing{}, fmt.Errorf("scheduling: %w", tt.err)
			}
			ts := newTestServer(t, Options{}, m)
			r := ts.do(t, "POST", "/v1/models/toy/classify"+tt.query, "image/jpeg", fixture(t, "baboon.jpg"))
			if r.status != tt.status || !strings.Contains(r.body, `"code":"`+tt.code+`"`) {
				t.Fatalf("got %d %s", r.status, r.body)
			}
			if (r.header["Retry-After"] != "") != tt.retryAfter {
				t.Errorf("Retry-After = %q", r.header["Retry-After"])
			}
			if tt.err != nil && (!called || got.Priority != tt.wantOpts.Priority || got.Timeout != tt.wantOpts.Timeout) {
				t.Errorf("scheduler got %+v (called %v), want %+v", got, called, tt.wantOpts)
			}
			if called && got.Gone == nil {
				t.Error("the scheduler cannot tell whether the client left (no Gone)")
			}
			if tt.err == nil && called {
				t.Error("a bad query reached the scheduler")
			}
		})
	}
}

func TestInferFailureIs500AndLogged(t *testing.T) {
	m := fakeModel("toy", 1)
	m.Infer = func(context.Context, []float32, int, []float32, batching.RequestOptions) (batching.Timing, error) {
		return batching.Timing{}, errors.New("ORT exploded")
	}
	ts := newTestServer(t, Options{}, m)
	r := ts.do(t, "POST", "/v1/models/toy/classify", "image/jpeg", fixture(t, "baboon.jpg"))
	if r.status != 500 || !strings.Contains(r.body, `"code":"internal"`) {
		t.Fatalf("got %d %s", r.status, r.body)
	}
	if !strings.Contains(ts.logs.String(), "ORT exploded") {
		t.Fatalf("inference error not logged: %s", ts.logs.String())
	}
}

// A panicking handler answers 500 and the server keeps serving.
func TestPanicRecovered(t *testing.T) {
	m := fakeModel("toy", 1)
	m.Preprocess = func([]byte, []float32, bool) (ImageStats, error) { panic("decoder bug") }
	ok := fakeModel("fine", 1)
	ts := newTestServer(t, Options{}, m, ok)
	r := ts.do(t, "POST", "/v1/models/toy/classify", "image/jpeg", fixture(t, "baboon.jpg"))
	if r.status != 500 || !strings.Contains(r.body, `"code":"internal"`) {
		t.Fatalf("panic answered %d %s", r.status, r.body)
	}
	if !strings.Contains(ts.logs.String(), "decoder bug") {
		t.Fatal("panic not logged")
	}
	if r := ts.do(t, "POST", "/v1/models/fine/classify", "image/jpeg", fixture(t, "baboon.jpg")); r.status != 200 {
		t.Fatalf("after panic: %d %s", r.status, r.body)
	}
	// Several images decode on goroutines of their own: a panic there is
	// answered and logged the same, not the end of the process.
	var n atomic.Int32
	m.Preprocess = func([]byte, []float32, bool) (ImageStats, error) {
		if n.Add(1) == 2 {
			panic("decoder bug in a goroutine")
		}
		return ImageStats{}, nil
	}
	ct, body := multipartBody(t, "image", fixture(t, "baboon.jpg"), fixture(t, "smarties.png"), fixture(t, "baboon.jpg"))
	if r := ts.do(t, "POST", "/v1/models/toy/classify", ct, body); r.status != 500 || !strings.Contains(r.body, `"code":"internal"`) {
		t.Fatalf("panic in a decode goroutine answered %d %s", r.status, r.body)
	}
	if !strings.Contains(ts.logs.String(), "decoder bug in a goroutine") {
		t.Fatal("panic in a decode goroutine not logged")
	}
	if r := ts.do(t, "POST", "/v1/models/fine/classify", "image/jpeg", fixture(t, "baboon.jpg")); r.status != 200 {
		t.Fatalf("after panic: %d %s", r.status, r.body)
	}
}

func TestMetricsExposed(t *testing.T) {
	ts := newTestServer(t, Options{}, fakeModel("toy", 1))
	ts.do(t, "POST", "/v1/models/toy/classify", "image/jpeg", fixture(t, "baboon.jpg"))
	ts.do(t, "POST", "/v1/models/toy/classify", "image/jpeg", fixture(t, "garbage.bin"))
	ts.do(t, "POST", "/v1/models/made-up-name/classify", "image/jpeg", fixture(t, "baboon.jpg"))
	r := ts.do(t, "GET", "/metrics", "", nil)
	for _, want := range []string{
		`fastinfer_requests_total{code="200",model="toy",version="1"} 1`,
		`fastinfer_requests_total{code="400",model="toy",version="1"} 1`,
		`fastinfer_requests_total{code="404",model="_unknown",version=""} 1`,
		`fastinfer_request_duration_seconds_bucket{code="200",model="toy",version="1",le="+Inf"} 1`,
		`fastinfer_images_total{model="toy",version="1"} 1`,
		`fastinfer_preprocess_duration_seconds_count{model="toy",version="1"} 1`,
		`fastinfer_model_info{model="toy",provider="cpu",version="1"} 1`,
		// baboon is 512×512: logits 5.12, 5.12, −1, 1 → "cat" (the lower
		// index of the tie) with softmax 0.495.
		`fastinfer_predictions_total{class="cat",model="toy",version="1"} 1`,
		`fastinfer_predictions_total{class="2",model="toy",version="1"} 0`,
		`fastinfer_prediction_confidence_bucket{model="toy",version="1",le="0.4"} 0`,
		`fastinfer_prediction_confidence_bucket{model="toy",version="1",le="0.5"} 1`,
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(r.body, "made-up-name") {
		t.Error("unknown model name leaked into metric labels")
	}
}

// Many clients at once, mixed good and bad, under -race.
func TestConcurrentRequests(t *testing.T) {
	ts := newTestServer(t, Options{}, fakeModel("toy", 1))
	good, bad := fixture(t, "baboon.jpg"), fixture(t, "truncated.jpg")
	mpCT, mp := multipartBody(t, "image", good, fixture(t, "butterfly.jpg"))
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var r response
			var want int
			switch i % 3 {
			case 0:
				r, want = ts.do(t, "POST", "/v1/models/toy/classify", "image/jpeg", good), 200
			case 1:
				r, want = ts.do(t, "POST", "/v1/models/toy/classify", "image/jpeg", bad), 400
			default:
				r, want = ts.do(t, "POST", "/v1/models/toy/classify", mpCT, mp), 200
				if strings.Count(r.body, `"predictions"`) != 2 {
					errs <- "multipart answer lacks two results: " + r.body
				}
			}
			if r.status != want {
				errs <- fmt.Sprintf("request %d: %d %s", i, r.status, r.body)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// SIGTERM's path: Shutdown stops new connections, lets the in-flight
// request finish with 200, then returns.
func TestGracefulShutdownFinishesInFlight(t *testing.T) {
	m := fakeModel("toy", 1)
	started, release := make(chan struct{}), make(chan struct{})
	infer := m.Infer
	m.Infer = func(ctx context.Context, in []float32, rows int, out []float32, o batching.RequestOptions) (batching.Timing, error) {
		close(started)
		<-release
		return infer(ctx, in, rows, out, o)
	}
	s := New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	s.AddModel(m)
	s.SetReady(true)
	addr, served := serveLoopback(t, s)
	url := "http://" + addr

	type result struct {
		status int
		err    error
	}
	inflight := make(chan result, 1)
	go func() {
		resp, err := http.Post(url+"/v1/models/toy/classify", "image/jpeg", bytes.NewReader(fixture(t, "baboon.jpg")))
		if err != nil {
			inflight <- result{err: err}
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		inflight <- result{status: resp.StatusCode}
	}()
	<-started
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	// Once shutdown has begun, new connections are refused.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("server still accepts connections during shutdown")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) before the in-flight request finished", err)
	default:
	}
	close(release)
	if r := <-inflight; r.err != nil || r.status != 200 {
		t.Fatalf("in-flight request: %d, %v", r.status, r.err)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

func TestTopIndices(t *testing.T) {
	nan := float32(0)
	nan = nan / nan
	tests := []struct {
		row  []float32
		k    int
		want []int
	}{
		{[]float32{0.1, 0.9, 0.5}, 2, []int{1, 2}},
		{[]float32{1, 1, 1}, 2, []int{0, 1}},
		{[]float32{3, 2, 1}, 5, []int{0, 1, 2}},
		{[]float32{nan, 1, 2}, 2, []int{2, 1}},
		{[]float32{-5, -1, -3, 10, 0}, 3, []int{3, 4, 1}},
	}
	for _, tt := range tests {
		got := topIndices(tt.row, tt.k, nil)
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("topIndices(%v, %d) = %v, want %v", tt.row, tt.k, got, tt.want)
		}
	}
}

func TestAppendJSONString(t *testing.T) {
	for in, want := range map[string]string{
		"plain": `"plain"`, `q"b\`: `"q\"b\\"`, "a\nb\tc\x01": `"a\nb\tc\u0001"`, "ünï": `"ünï"`,
	} {
		if got := string(appendJSONString(nil, in)); got != want {
			t.Errorf("appendJSONString(%q) = %s, want %s", in, got, want)
		}
	}
}

func BenchmarkAppendClassification(b *testing.B) {
	m := fakeModel("resnet50", 1)
	m.Classes = 1000
	m.Labels = nil
	logits := make([]float32, 1000)
	for i := range logits {
		logits[i] = float32(i%97) / 10
	}
	buf := make([]byte, 0, 4096)
	var smBuf [1]rowSoftmax
	b.ReportAllocs()
	for b.Loop() {
		sm := softmaxRows(m, logits, 1, smBuf[:0])
		buf = appendClassification(buf[:0], m, logits, 1, 5, timings{}, sm)
	}
}

// doHeaders sends a request with extra headers and an optional body.
func (ts *testServer) doHeaders(t testing.TB, method, path string, header map[string]string, body ...byte) response {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://fastinfer" + path)
	req.Header.SetMethod(method)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	req.SetBody(body)
	if err := ts.client.DoTimeout(req, resp, 10*time.Second); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	h := map[string]string{}
	for k, v := range resp.Header.All() {
		h[string(k)] = string(v)
	}
	return response{status: resp.StatusCode(), body: string(resp.Body()), header: h}
}

// A model whose outputs are probabilities already is scored by them, not
// by their softmax: in the answer, the metrics, the prediction log and the
// model listing. Logits are softmaxed as before.
func TestProbabilityScores(t *testing.T) {
	probs := []float32{0.7, 0.2, 0.1, 0}
	for _, tt := range []struct {
		scores string
		want   float64  // the top score
		metric []string // the confidence histogram's buckets around it
	}{
		{"probabilities", 0.7, []string{`le="0.6"} 0`, `le="0.7"} 1`}},
		{"", 0.3771, []string{`le="0.3"} 0`, `le="0.4"} 1`}}, // softmax(0.7, 0.2, 0.1, 0)[0]
	} {
		t.Run(cmp.Or(tt.scores, "logits"), func(t *testing.T) {
			m := fakeModel("toy", 1)
			m.Scores = tt.scores
			m.Infer = func(_ context.Context, _ []float32, rows int, out []float32, _ batching.RequestOptions) (batching.Timing, error) {
				for r := range rows {
					copy(out[r*4:], probs)
				}
				return batching.Timing{}, nil
			}
			log := &fakeLog{}
			ts := newTestServer(t, Options{PredictionLog: log}, m)
			r := ts.do(t, "POST", "/v1/models/toy/classify?top_k=1", "image/jpeg", fixture(t, "baboon.jpg"))
			var got struct {
				Results []struct {
					Predictions []struct {
						Index int
						Score float64
					}
				}
			}
			if r.status != 200 || json.Unmarshal([]byte(r.body), &got) != nil || len(got.Results) != 1 || len(got.Results[0].Predictions) != 1 {
				t.Fatalf("classify: %d %s", r.status, r.body)
			}
			if p := got.Results[0].Predictions[0]; p.Index != 0 || math.Abs(p.Score-tt.want) > 1e-4 {
				t.Errorf("top prediction %+v, want class 0 at %.4f", p, tt.want)
			}
			if recs := log.take(); len(recs) != 1 || math.Abs(recs[0].TopK[0].Score-tt.want) > 1e-4 {
				t.Errorf("prediction log %+v, want the top score %.4f", recs, tt.want)
			}
			metrics := ts.do(t, "GET", "/metrics", "", nil).body
			for _, b := range tt.metric {
				if !strings.Contains(metrics, `fastinfer_prediction_confidence_bucket{model="toy",version="1",`+b) {
					t.Errorf("confidence histogram lacks %s", b)
				}
			}
			info := ts.do(t, "GET", "/v1/models/toy", "", nil).body
			if want := `"scores":"` + cmp.Or(tt.scores, "logits") + `"`; !strings.Contains(info, want) {
				t.Errorf("model info lacks %s: %s", want, info)
			}
		})
	}
}

// A model without preprocessing takes tensors only: an image gets a 400
// saying why and where to send tensors, and never reaches the model.
func TestTensorsOnlyModel(t *testing.T) {
	m := fakeModel("toy", 1)
	m.Preprocess, m.ImagesNote = nil, "no preprocessing fits its input (it is not an image)"
	m.Infer = func(context.Context, []float32, int, []float32, batching.RequestOptions) (batching.Timing, error) {
		t.Error("an image reached the model")
		return batching.Timing{}, nil
	}
	ts := newTestServer(t, Options{}, m)
	r := ts.do(t, "POST", "/v1/models/toy/classify", "image/jpeg", fixture(t, "baboon.jpg"))
	if r.status != 400 || !strings.Contains(r.body, "takes tensors only: no preprocessing fits its input (it is not an image); send them to /v2/models/toy/infer") {
		t.Errorf("got %d %s", r.status, r.body)
	}
	if info := ts.do(t, "GET", "/v1/models/toy", "", nil); !strings.Contains(info.body, `"images_note":"no preprocessing fits`) {
		t.Errorf("model info %s", info.body)
	}
}
