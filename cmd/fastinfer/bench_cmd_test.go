package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"fastinfer/bench"
)

// A short real run of `fastinfer bench --compare` against a served
// default model: every target measured, the server's split read, the
// ratios computed, the JSON and SVG written; then `bench diff` on it.
func TestBenchCompareRealRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	repo := fashionRepo(t)
	base, _, stop := startServe(t, repo)
	defer stop()
	dir := t.TempDir()
	out, svg := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.svg")
	var stdout, stderr bytes.Buffer
	code := run([]string{"bench", "--url", base, "--models", repo, "--model", "fashion-resnet", "--compare",
		"--images", filepath.Join("..", "..", "testdata", "fashion"), "--concurrency", "1,2", "--raw-batches", "1,4",
		"--warmup", "200ms", "--window", "200ms", "--duration", "400ms", "--out", out, "--svg", svg, "--provider", "cpu",
		"--repeat", "2"},
		&stdout, &stderr, func(string) string { return "" })
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout.String(), stderr.String())
	}
	res, err := bench.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, s := range res.Steps {
		count[s.Target]++
		if s.ImagesPerSec <= 0 || s.Requests == 0 || len(s.Errors) > 0 {
			t.Errorf("%s: %.1f img/s, %d requests, errors %v", s.Key(), s.ImagesPerSec, s.Requests, s.Errors)
		}
		if len(s.Rounds) != 2 {
			t.Errorf("%s: rounds %v, want one figure per round", s.Key(), s.Rounds)
		}
		if s.Latency.P50 <= 0 || s.Latency.P99 < s.Latency.P50 || s.Latency.Max < s.Latency.P99 {
			t.Errorf("%s: latency %+v", s.Key(), s.Latency)
		}
		if s.Target != bench.TargetRaw && (s.Server == nil || s.Server.Executions == 0 || s.Server.MeanBatchSize < 1 || s.Server.ComputeMs <= 0) {
			t.Errorf("%s: server split %+v", s.Key(), s.Server)
		}
	}
	if count[bench.TargetRaw] != 2 || count[bench.TargetHTTPTensor] != 2 || count[bench.TargetHTTPImage] != 2 {
		t.Errorf("steps per target %v, want 2 each", count)
	}
	if len(res.Comparisons) != 3 {
		t.Errorf("comparisons %+v, want tensor/raw, image/raw and p50 added", res.Comparisons)
	}
	for _, c := range res.Comparisons {
		if len(c.Rounds) != 2 {
			t.Errorf("%s: rounds %v", c.Name, c.Rounds)
		}
	}
	if res.Meta.CPUModel == "" || res.Meta.Cores == 0 || res.Meta.Device == "" || res.Meta.ORTVersion == "" || res.Meta.Provider != "cpu" {
		t.Errorf("meta %+v", res.Meta)
	}
	for _, want := range []string{"http-image", "raw", "server tensor / raw"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("terminal output lacks %q:\n%s", want, stdout.String())
		}
	}
	f, err := os.Open(svg)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for dec := xml.NewDecoder(f); ; {
		if _, err := dec.Token(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("SVG: %v", err)
		}
	}

	// bench diff: a file against itself passes; against a copy with half
	// the throughput it fails and names the regression.
	if code := run([]string{"bench", "diff", out, out}, &stdout, &stderr, func(string) string { return "" }); code != 0 {
		t.Fatalf("diff with itself: exit %d", code)
	}
	for i := range res.Steps {
		res.Steps[i].ImagesPerSec /= 2
	}
	slow := filepath.Join(dir, "slow.json")
	if err := res.WriteFile(slow); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	if code := run([]string{"bench", "diff", out, slow}, &stdout, &stderr, func(string) string { return "" }); code != 1 || !strings.Contains(stdout.String(), "REGRESSED") {
		t.Fatalf("diff with a slower copy: exit %d\n%s", code, stdout.String())
	}
}

func TestIsLoopbackURL(t *testing.T) {
	for url, want := range map[string]bool{
		"http://127.0.0.1:8080": true, "http://localhost:8000": true, "http://[::1]:80": true,
		"http://127.5.0.1": true, "http://10.0.0.7:8080": false, "http://gpu-box:8000": false,
		"http://[fe80::1]:80": false, "::not a url": false,
	} {
		if got := isLoopbackURL(url); got != want {
			t.Errorf("isLoopbackURL(%q) = %v, want %v", url, got, want)
		}
	}
}

// The server's share of the machine comes from its CPU per request and
// the request rate, and a step that left the CPU no room says so.
func TestNoteCPUShare(t *testing.T) {
	tests := []struct {
		name       string
		cpuMs, rps float64
		client     float64
		cores      int
		share      float64
		warn       bool
	}{
		{"half a 16-core machine", 2, 4000, 0.05, 16, 0.5, false},
		{"CPU-bound with the client", 4, 3500, 0.05, 16, 0.875, true},
		{"server elsewhere", 4, 3500, 0.05, 0, 0, false},
		{"no CPU figure", 0, 3500, 0.05, 16, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := bench.Step{Throughput: tt.rps, ClientCPU: tt.client, Server: &bench.ServerSplit{CPUMsPerRequest: tt.cpuMs}}
			noteCPUShare(&st, tt.cores)
			if math.Abs(st.Server.CPUShare-tt.share) > 1e-9 {
				t.Errorf("CPUShare = %v, want %v", st.Server.CPUShare, tt.share)
			}
			warned := len(st.Warnings) == 1 && strings.Contains(st.Warnings[0], "the CPU bounds this step")
			if warned != tt.warn || (!tt.warn && len(st.Warnings) != 0) {
				t.Errorf("warnings %q, want a CPU-bound warning: %v", st.Warnings, tt.warn)
			}
		})
	}
	st := bench.Step{Throughput: 100} // no server split at all (raw)
	noteCPUShare(&st, 16)
}

func TestNoteIdleInstances(t *testing.T) {
	tests := []struct {
		name        string
		busy, batch float64
		maxBatch    int
		warn        bool
	}{
		{"full batches, idle instances", 0.69, 63.2, 64, true},
		{"full batches, busy instances", 0.97, 64, 64, false},
		{"small batches: the load bounds it", 0.3, 7.5, 64, false},
		{"busy unknown", 0, 64, 64, false},
		{"max batch unknown", 0.5, 8, 0, false},
		{"no batching", 0.5, 1, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := bench.Step{Server: &bench.ServerSplit{InstanceBusy: tt.busy, MeanBatchSize: tt.batch, InputMs: 2.5}}
			noteIdleInstances(&st, tt.maxBatch)
			warned := len(st.Warnings) == 1 && strings.Contains(st.Warnings[0], "the work between runs bounds this step") && strings.Contains(st.Warnings[0], "2.50 ms")
			if warned != tt.warn || (!tt.warn && len(st.Warnings) != 0) {
				t.Errorf("warnings %q, want the idle-instances warning: %v", st.Warnings, tt.warn)
			}
		})
	}
	noteIdleInstances(&bench.Step{}, 64) // raw: no server split
}

// Sweeps are lists, and each item may be perf_analyzer's START:END[:STEP].
func TestParseInts(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []int
		err  string
	}{
		{"1,4,16", []int{1, 4, 16}, ""},
		{"1:4", []int{1, 2, 3, 4}, ""},
		{"1:16:4", []int{1, 5, 9, 13}, ""},
		{"1, 8:16:8 ,64", []int{1, 8, 16, 64}, ""},
		{"3:3", []int{3}, ""},
		{"0", nil, "not a positive integer"},
		{"4:1", nil, "ends before it starts"},
		{"1:8:0", nil, "not a positive integer"},
		{"1:2:3:4", nil, "START:END[:STEP]"},
		{"1:1000", nil, "more than 64 steps"},
		{"x", nil, "not a positive integer"},
	} {
		got, err := parseInts(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: %v, %v; want an error with %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("%q: %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

// TestBenchGRPCTarget: the grpc target loads a server's gRPC API, and its
// steps carry the server's split as the HTTP targets' do.
func TestBenchGRPCTarget(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	repo := fashionRepo(t)
	base, _, stop := startServe(t, repo)
	defer stop()
	addr, _ := grpcAddrs.Load(base)
	out := benchTwoSteps(t, bench.TargetGRPCTensor, "--url", base, "--grpc-addr", addr.(string), "--targets", "grpc")
	var stdout, stderr bytes.Buffer
	// No gRPC server there: the step records the calls' failures by their
	// code, as the HTTP targets record statuses.
	code := run([]string{"bench", "--url", base, "--grpc-addr", "127.0.0.1:1", "--model", "fashion-resnet", "--targets", "grpc",
		"--concurrency", "1", "--warmup", "100ms", "--duration", "200ms", "--out", out},
		&stdout, &stderr, func(string) string { return "" })
	if res, err := bench.ReadFile(out); code != 0 || err != nil || len(res.Steps) != 1 || res.Steps[0].Errors["Unavailable"] == 0 {
		t.Errorf("no gRPC server: exit %d, %v, %+v", code, err, res)
	}
}

// benchTwoSteps runs bench with args against fashion-resnet at batch 2
// and concurrency 1 and 3, checks that both steps ran target without
// errors and carry the server's split, and returns the results file.
func benchTwoSteps(t *testing.T, target string, args ...string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "r.json")
	var stdout, stderr bytes.Buffer
	args = append([]string{"bench", "--model", "fashion-resnet", "--batch", "2", "--concurrency", "1,3",
		"--warmup", "200ms", "--duration", "400ms", "--out", out}, args...)
	if code := run(args, &stdout, &stderr, func(string) string { return "" }); code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout.String(), stderr.String())
	}
	res, err := bench.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Steps) != 2 {
		t.Fatalf("%d steps", len(res.Steps))
	}
	for _, s := range res.Steps {
		if s.Target != target || s.BatchSize != 2 || s.ImagesPerSec <= 0 || len(s.Errors) > 0 ||
			s.Server == nil || s.Server.Executions == 0 || s.Server.ComputeMs <= 0 {
			t.Errorf("%s: %.1f img/s, errors %v, server %+v", s.Key(), s.ImagesPerSec, s.Errors, s.Server)
		}
	}
	return out
}

// The shm target drives a server on this host through registered shared
// memory, and leaves neither regions nor objects behind; a server without
// --allow-client-shm is named as the reason it cannot.
func TestBenchShmTarget(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	leftovers := func() []string {
		m, _ := filepath.Glob(fmt.Sprintf("/dev/shm/fastinfer-bench-%d-*", os.Getpid()))
		return m
	}
	repo := fashionRepo(t)
	base, _, stop := startServe(t, repo, "--allow-client-shm")
	defer stop()
	out := benchTwoSteps(t, bench.TargetShmTensor, "--url", base, "--targets", "shm")
	if resp, err := http.Get(base + "/v2/systemsharedmemory/status"); err != nil {
		t.Error(err)
	} else {
		st, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(st) != "[]\n" {
			t.Errorf("regions left registered: %s", st)
		}
	}
	if l := leftovers(); len(l) > 0 {
		t.Errorf("objects left behind: %v", l)
	}

	off, _, stopOff := startServe(t, repo)
	defer stopOff()
	var stdout, stderr bytes.Buffer
	code := run([]string{"bench", "--url", off, "--model", "fashion-resnet", "--targets", "shm",
		"--concurrency", "1", "--warmup", "100ms", "--duration", "200ms", "--out", out},
		&stdout, &stderr, func(string) string { return "" })
	if code == 0 || !strings.Contains(stderr.String(), "--allow-client-shm") {
		t.Errorf("a server without shared memory: exit %d, %s", code, stderr.String())
	}
	if l := leftovers(); len(l) > 0 {
		t.Errorf("objects left behind after the failure: %v", l)
	}
}

func TestDefaultGRPCAddr(t *testing.T) {
	for _, tt := range []struct{ url, want string }{
		{"http://127.0.0.1:8080", "127.0.0.1:8001"},
		{"http://gpu-box:8000/", "gpu-box:8001"},
		{"https://[::1]:443", "[::1]:8001"},
		{"http://gpu-box", "gpu-box:8001"},
	} {
		if got := defaultGRPCAddr(tt.url); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.url, got, tt.want)
		}
	}
}
