package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"encoding/json"

	"fastinfer/internal/testutil"
	"fastinfer/models/resnet"
	"fastinfer/runtime"
	"fastinfer/vision/reference"
)

func TestParseFlagsEnvOverrides(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    string
		wantQ   int
		wantErr bool
	}{
		{name: "default", want: ":8080", wantQ: 256},
		{name: "env", env: map[string]string{"FASTINFER_ADDR": "127.0.0.1:9", "FASTINFER_MAX_QUEUE_SIZE": "7"}, want: "127.0.0.1:9", wantQ: 7},
		{name: "flag beats env", args: []string{"--addr", ":1"}, env: map[string]string{"FASTINFER_ADDR": ":2"}, want: ":1", wantQ: 256},
		{name: "bad env value", env: map[string]string{"FASTINFER_MAX_QUEUE_SIZE": "many"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("serve", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			c := serveFlags(fs)
			err := parseFlags(fs, tt.args, func(k string) string { return tt.env[k] })
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "FASTINFER_MAX_QUEUE_SIZE") {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err != nil || c.addr != tt.want || c.maxQueue != tt.wantQ {
				t.Fatalf("addr %q queue %d err %v; want %q %d", c.addr, c.maxQueue, err, tt.want, tt.wantQ)
			}
		})
	}
}

func TestRunUsage(t *testing.T) {
	tests := []struct {
		args []string
		code int
		out  string
	}{
		{nil, 2, "commands:"},
		{[]string{"bogus"}, 2, "unknown command"},
		{[]string{"models"}, 2, "usage"},
		{[]string{"models", "build", "resnet7", "--out", "x"}, 1, "resnet7"},
		{[]string{"serve", "--models", "/nonexistent/repo"}, 1, "not a folder"},
		{[]string{"serve", "-h"}, 0, "FASTINFER_MODELS"},
		{[]string{"version"}, 0, "fastinfer"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		code := run(tt.args, &out, &out, func(string) string { return "" })
		if code != tt.code || !strings.Contains(out.String(), tt.out) {
			t.Errorf("run %v = %d, %q; want %d and %q", tt.args, code, out.String(), tt.code, tt.out)
		}
	}
}

// repoOnce builds one ResNet-50 repository per test binary: 100 MB and a few
// seconds under -race, so tests share it read-only.
var (
	repoOnce sync.Once
	repoDir  string
	repoErr  error
)

func testRepo(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a ResNet-50; skipped in -short")
	}
	if os.Getenv(runtime.LibEnv) == "" {
		t.Fatalf("%s is not set: run the tests with `make test`", runtime.LibEnv)
	}
	repoOnce.Do(func() {
		repoDir, repoErr = os.MkdirTemp("", "fastinfer-repo-")
		if repoErr != nil {
			return
		}
		m, err := resnet.Build("resnet50", 1000, 1)
		if err != nil {
			repoErr = err
			return
		}
		if _, repoErr = resnet.WriteModelDir(filepath.Join(repoDir, "resnet50"), m); repoErr != nil {
			return
		}
		// A broken model beside it must not stop resnet50 from serving.
		bad := filepath.Join(repoDir, "broken", "1")
		os.MkdirAll(bad, 0o755)
		os.WriteFile(filepath.Join(bad, "model.onnx"), []byte("not onnx"), 0o644)
		os.WriteFile(filepath.Join(repoDir, "broken", "config.yaml"), []byte("preprocess: {crop: 224}\n"), 0o644)
		typo := filepath.Join(repoDir, "typo", "1")
		os.MkdirAll(typo, 0o755)
		os.WriteFile(filepath.Join(typo, "model.onnx"), []byte("x"), 0o644)
		os.WriteFile(filepath.Join(repoDir, "typo", "config.yaml"), []byte("preproces: {crop: 224}\n"), 0o644)
	})
	if repoErr != nil {
		t.Fatal(repoErr)
	}
	return repoDir
}

func TestMain(m *testing.M) {
	// Re-executed as the fastinfer binary by TestSIGTERM.
	if os.Getenv("FASTINFER_TEST_AS_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
	}
	code := m.Run()
	if repoDir != "" {
		os.RemoveAll(repoDir)
	}
	os.Exit(code)
}

// grpcAddrs maps the base URL of each server startServe started to its
// gRPC address.
var grpcAddrs sync.Map

// startServe runs serve() on a loopback port (with extra serve flags) and
// returns its base URL, the logs, and a stop function that returns serve's
// error.
func startServe(t testing.TB, repo string, extra ...string) (string, *testutil.Buffer, func() error) {
	t.Helper()
	cfg := &serveConfig{}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg = serveFlags(fs)
	if err := fs.Parse(append([]string{"--models", repo, "--addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--provider", "cpu", "--data-dir", t.TempDir()}, extra...)); err != nil {
		t.Fatal(err)
	}
	logs := &testutil.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan listening, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, log, started) }()
	var addr, gaddr string
	select {
	case l := <-started:
		addr, gaddr = l.http, l.grpc
	case err := <-done:
		cancel()
		t.Fatalf("serve: %v", err)
	}
	base, poll := "http://"+addr, http.DefaultClient
	if cfg.tls.Enabled() {
		// The test verifies the server's certificate itself; readiness
		// needs no client certificate.
		base = "https://" + addr
		poll = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	}
	grpcAddrs.Store(base, gaddr)
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, err := poll.Get(base + "/v2/health/ready")
		if err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("not ready in time: %s", logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	poll.CloseIdleConnections()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-done
	}
	t.Cleanup(func() { stop() })
	return base, logs, stop
}

type classifyResponse struct {
	Model   string `json:"model"`
	Version string `json:"version"`
	Results []struct {
		Predictions []struct {
			Index int     `json:"index"`
			Label *string `json:"label"`
			Score float64 `json:"score"`
		} `json:"predictions"`
	} `json:"results"`
	Timing map[string]float64 `json:"timing_ms"`
}

// The end-to-end check: a real photo from Debian's opencv-doc, uploaded to
// the server (gocv preprocessing, ORT through the scheduler), gives the same
// top-5 as ONNX Runtime run directly on the pure-Go reference preprocessing.
func TestClassifyMatchesDirectRuntime(t *testing.T) {
	repo := testRepo(t)
	base, logs, stop := startServe(t, repo)
	// PNG is lossless, so both paths see the same pixels and the scores
	// must agree to 1e-4. For JPEG, libjpeg-turbo (OpenCV) and Go's decoder
	// round their IDCTs differently (mean 0.005 after normalisation), which
	// a random-weight ResNet-50 turns into score differences up to 5e-4
	// (measured); the top-5 indices must still agree.
	photos := []struct {
		path string
		tol  float64
	}{
		{filepath.Join("testdata", "basketball1.png"), 1e-4},
		{filepath.Join("..", "..", "vision", "testdata", "smarties.png"), 1e-4},
		{filepath.Join("..", "..", "vision", "testdata", "baboon.jpg"), 1e-3},
		{filepath.Join("..", "..", "vision", "testdata", "fruits.jpg"), 1e-3},
		{filepath.Join("..", "..", "vision", "testdata", "butterfly.jpg"), 1e-3},
	}
	for _, photo := range photos {
		t.Run(filepath.Base(photo.path), func(t *testing.T) {
			img, err := os.ReadFile(photo.path)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.Post(base+"/v1/models/resnet50/classify", "application/octet-stream", bytes.NewReader(img))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			var got classifyResponse
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatal(err)
			}
			if got.Model != "resnet50" || got.Version != "1" || len(got.Results) != 1 || len(got.Results[0].Predictions) != 5 {
				t.Fatalf("response shape: %s", body)
			}
			for _, k := range []string{"preprocess", "queue", "infer", "total"} {
				if _, ok := got.Timing[k]; !ok {
					t.Errorf("timing_ms lacks %s", k)
				}
			}
			want := directTop5(t, filepath.Join(repo, "resnet50", "1", "model.onnx"), img)
			for i, p := range got.Results[0].Predictions {
				if p.Label != nil {
					t.Errorf("prediction %d has a label but the model has none", i)
				}
				if p.Index != want[i].index || math.Abs(p.Score-want[i].score) > photo.tol {
					t.Errorf("prediction %d: server index %d score %.6f, direct index %d score %.6f",
						i, p.Index, p.Score, want[i].index, want[i].score)
				}
			}
		})
	}
	// The broken models are reported by file and do not stop resnet50.
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"broken/1/model.onnx", "typo/config.yaml", "provider=cpu", `msg=ready models=1 failed=2`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
}

type scored struct {
	index int
	score float64
}

// directTop5 preprocesses with the pure-Go reference and calls the runtime
// directly, without the server, vision or the scheduler.
func directTop5(t *testing.T, model string, img []byte) []scored {
	t.Helper()
	in, err := reference.Preprocess(img, 256, 224, "rgb", 1.0/255, []float32{0.485, 0.456, 0.406}, []float32{0.229, 0.224, 0.225})
	if err != nil {
		t.Fatal(err)
	}
	env := cpuEnv(t)
	s, err := env.NewSession(model, runtime.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out := make([]float32, s.OutputLen())
	if err := s.Run(in, 1, out); err != nil {
		t.Fatal(err)
	}
	maxv := math.Inf(-1)
	for _, v := range out {
		maxv = math.Max(maxv, float64(v))
	}
	sum := 0.0
	for _, v := range out {
		sum += math.Exp(float64(v) - maxv)
	}
	all := make([]scored, len(out))
	for i, v := range out {
		all[i] = scored{i, math.Exp(float64(v)-maxv) / sum}
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].score > all[j].score })
	return all[:5]
}

// SIGTERM path end to end: requests in flight when shutdown starts finish.
func TestServeShutdownFinishesInFlight(t *testing.T) {
	repo := testRepo(t)
	base, _, stop := startServe(t, repo)
	img, err := os.ReadFile(filepath.Join("..", "..", "vision", "testdata", "fruits.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	const n = 6
	codes := postImages(base+"/v1/models/resnet50/classify", img, n)
	// The first answer means the others are connected and queued behind it
	// (one instance): stop now, and every one of them must still succeed.
	if err := <-codes; err != nil {
		t.Fatal(err)
	}
	stopErr := make(chan error, 1)
	go func() { stopErr <- stop() }()
	for range n - 1 {
		if err := <-codes; err != nil {
			t.Error(err)
		}
	}
	if err := <-stopErr; err != nil {
		t.Fatalf("serve returned %v", err)
	}
}

// The real process: SIGTERM with requests in flight ends with exit 0 and
// every accepted request answered.
func TestSIGTERM(t *testing.T) {
	repo := testRepo(t)
	cmd := exec.Command(os.Args[0], "serve", "--models", repo, "--addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--provider", "cpu", "--log-format", "json", "--data-dir", t.TempDir())
	cmd.Env = append(os.Environ(), "FASTINFER_TEST_AS_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// Read the address from the "listening" log line, and wait for "ready".
	lines := make(chan map[string]any, 64)
	go func() {
		dec := json.NewDecoder(stderr)
		for {
			var m map[string]any
			if dec.Decode(&m) != nil {
				close(lines)
				return
			}
			lines <- m
		}
	}()
	var addr string
	timeout := time.After(60 * time.Second)
	for ready := false; !ready; {
		select {
		case m, ok := <-lines:
			if !ok {
				t.Fatal("server exited before ready")
			}
			if m["msg"] == "listening" {
				addr, _ = m["addr"].(string)
			}
			ready = m["msg"] == "ready"
		case <-timeout:
			t.Fatal("server not ready in time")
		}
	}
	go func() {
		for range lines { // keep draining so the child never blocks on stderr
		}
	}()
	img, err := os.ReadFile(filepath.Join("..", "..", "vision", "testdata", "fruits.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	const n = 4
	codes := postImages("http://"+addr+"/v1/models/resnet50/classify", img, n)
	if err := <-codes; err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for range n - 1 {
		if err := <-codes; err != nil {
			t.Error(err)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("fastinfer exited with %v after SIGTERM", err)
	}
}

// postImages posts img to url from n clients at once; each result (nil for
// a 200) arrives on the channel as its request finishes.
func postImages(url string, img []byte, n int) <-chan error {
	codes := make(chan error, n)
	for range n {
		go func() {
			resp, err := http.Post(url, "image/jpeg", bytes.NewReader(img))
			if err != nil {
				codes <- err
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				codes <- fmt.Errorf("status %d", resp.StatusCode)
				return
			}
			codes <- nil
		}()
	}
	return codes
}

// cpuEnv opens ONNX Runtime on the CPU provider for the test.
func cpuEnv(t testing.TB) *runtime.Env {
	t.Helper()
	lib, err := runtime.ResolveLib("")
	if err != nil {
		t.Fatal(err)
	}
	env, err := runtime.Open(runtime.Config{Lib: lib, Provider: runtime.ProviderCPU})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Close() })
	return env
}

// Settings that cannot work stop serve with an error naming them, before
// anything is loaded.
func TestServeRejectsBadSettings(t *testing.T) {
	repo := t.TempDir()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--sched", "fifo"}, "--sched"},
		{[]string{"--intra-op-spin", "fast"}, "intra-op spin"},
		{[]string{"--tensorrt", "sometimes"}, "--tensorrt"},
		{[]string{"--cuda-conv-search", "fastest"}, "conv algorithm search"},
		{[]string{"--cuda-arena", "double"}, "arena extend"},
		{[]string{"--gpu-mem-limit", "-5"}, "memory limit"},
		{[]string{"--gpu-host-memory", "locked"}, "host memory"},
		{[]string{"--cuda-graphs", "--gpu-buckets=false"}, "--cuda-graphs needs --gpu-buckets"},
		{[]string{"--stage-batches", "yes"}, "--stage-batches must be"},
		{[]string{"--model-control", "auto"}, "--model-control"},
		{[]string{"--models", filepath.Join(repo, "missing")}, "not a folder"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			args := append([]string{"--models", repo, "--addr", "127.0.0.1:0", "--sched", "normal", "--data-dir", t.TempDir()}, tt.args...)
			var stderr bytes.Buffer
			err := serveCmd(args, &stderr, func(string) string { return "" })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("serve %v: err = %v, want one naming %q", tt.args, err, tt.want)
			}
		})
	}
}

func TestGoProcs(t *testing.T) {
	for _, tt := range []struct {
		flag   int
		envSet bool
		def    int
		want   int
	}{
		{0, false, 2, 3}, // automatic: one spare
		{0, false, 16, 17},
		{0, true, 2, 0},  // the GOMAXPROCS variable chose: leave it
		{4, false, 2, 4}, // the flag wins
		{4, true, 2, 4},
	} {
		if got := goProcs(tt.flag, tt.envSet, tt.def); got != tt.want {
			t.Errorf("goProcs(%d, %v, %d) = %d, want %d", tt.flag, tt.envSet, tt.def, got, tt.want)
		}
	}
}
