package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
)

// The statistics extension over the real batcher, as perf_analyzer reads
// it: the configuration, then the statistics before and after a burst of
// concurrent binary requests; the difference must account for every
// request, image and execution.
func TestStatsThroughTheBatcher(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	base, _, stop := startServe(t, fashionRepo(t))
	defer stop()
	get := func(path string, v any) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || json.Unmarshal(body, v) != nil {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
		}
	}
	var cfg struct {
		MaxBatchSize int `json:"max_batch_size"`
		Input        []struct {
			Dims []int64 `json:"dims"`
		} `json:"input"`
	}
	get("/v2/models/fashion-resnet/config", &cfg)
	if cfg.MaxBatchSize < 2 || len(cfg.Input) != 1 || len(cfg.Input[0].Dims) != 3 {
		t.Fatalf("config: %+v; want a batching model with 1×28×28 inputs", cfg)
	}

	type dur struct{ Count, Ns int64 }
	type stats struct {
		ModelStats []struct {
			Version        string
			InferenceCount int64 `json:"inference_count"`
			ExecutionCount int64 `json:"execution_count"`
			InferenceStats struct {
				Success, Fail, Queue dur
				ComputeInfer         dur `json:"compute_infer"`
				ComputeInput         dur `json:"compute_input"`
			} `json:"inference_stats"`
			BatchStats []struct {
				BatchSize    int `json:"batch_size"`
				ComputeInfer dur `json:"compute_infer"`
			} `json:"batch_stats"`
		} `json:"model_stats"`
	}
	var before, after stats
	get("/v2/models/fashion-resnet/stats", &before)

	const clients, each = 8, 5
	header := `{"inputs":[{"name":"data","datatype":"FP32","shape":[1,1,28,28],"parameters":{"binary_data_size":3136}}]}`
	body := append([]byte(header), make([]byte, 3136)...)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for range each {
				req, _ := http.NewRequest("POST", base+"/v2/models/fashion-resnet/infer", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/octet-stream")
				req.Header.Set("Inference-Header-Content-Length", strconv.Itoa(len(header)))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("infer: %d", resp.StatusCode)
				}
			}
		})
	}
	wg.Wait()
	get("/v2/models/fashion-resnet/stats", &after)

	if len(before.ModelStats) != 1 || len(after.ModelStats) != 1 {
		t.Fatalf("stats of %d and %d versions, want 1", len(before.ModelStats), len(after.ModelStats))
	}
	b, a := before.ModelStats[0], after.ModelStats[0]
	const n = clients * each
	bi, ai := b.InferenceStats, a.InferenceStats
	if a.InferenceCount-b.InferenceCount != n || ai.Success.Count-bi.Success.Count != n || ai.Fail.Count != bi.Fail.Count ||
		ai.Queue.Count-bi.Queue.Count != n || ai.ComputeInfer.Count-bi.ComputeInfer.Count != n {
		t.Errorf("after %d requests: before %+v, after %+v", n, b, a)
	}
	if ai.ComputeInfer.Ns <= bi.ComputeInfer.Ns || ai.Success.Ns <= bi.Success.Ns {
		t.Errorf("durations did not grow: before %+v, after %+v", bi, ai)
	}
	// Executions: batch_stats add up to execution_count, and hold every
	// image of the burst in batches no larger than the limit.
	var execs, rows int64
	for _, s := range a.BatchStats {
		if s.BatchSize < 1 || s.BatchSize > cfg.MaxBatchSize {
			t.Errorf("batch size %d outside 1..%d", s.BatchSize, cfg.MaxBatchSize)
		}
		execs += s.ComputeInfer.Count
		rows += int64(s.BatchSize) * s.ComputeInfer.Count
	}
	if execs != a.ExecutionCount || a.ExecutionCount <= b.ExecutionCount || rows < n {
		t.Errorf("execution_count %d (before %d), batch_stats %d executions of %d rows; want them equal and ≥ %d rows",
			a.ExecutionCount, b.ExecutionCount, execs, rows, n)
	}
}
