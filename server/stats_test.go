package server

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"sync"
	"testing"
	"time"

	"fastinfer/batching"
	"fastinfer/server/inferpb"
)

// wallRE masks the statistics that depend on the clock: every duration
// stat's ns except the batcher's own (queue and compute, from the fake's
// fixed timing), and last_inference.
var wallRE = regexp.MustCompile(`("(?:success|fail)":\{"count":\d+,"ns":)\d+|("last_inference":)\d+`)

func TestV2Stats(t *testing.T) {
	toy := fakeModel("toy", 1)
	toy.ExecutionStats = func() []batching.SizeStats {
		return []batching.SizeStats{
			{BatchSize: 1, Count: 3, Input: 30 * time.Microsecond, Compute: 6 * time.Millisecond, Output: 3 * time.Microsecond},
			{BatchSize: 4, Count: 2, Input: 80 * time.Microsecond, Compute: 5 * time.Millisecond, Output: 4 * time.Microsecond},
		}
	}
	ts := newTestServer(t, Options{}, toy, fakeModel("toy", 2), fakeModel("other", 7))
	baboon := fixture(t, "baboon.jpg")
	// Two answered requests of toy v1 (one image, then two), one refused.
	for _, r := range []struct {
		path string
		body []byte
		want int
	}{
		{"/v1/models/toy/versions/1/classify", baboon, 200},
		{"/v2/models/toy/versions/1/infer", []byte(`{"inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"data":[1,2,3,4]}]}`), 200},
		{"/v2/models/toy/versions/1/infer", []byte(`{"inputs":[{"name":"data","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}`), 400},
	} {
		if got := ts.do(t, "POST", r.path, "application/octet-stream", r.body); got.status != r.want {
			t.Fatalf("%s: %d %s, want %d", r.path, got.status, got.body, r.want)
		}
	}

	var one struct {
		ModelStats []modelStat `json:"model_stats"`
	}
	r := ts.do(t, "GET", "/v2/models/toy/versions/1/stats", "", nil)
	if err := json.Unmarshal([]byte(r.body), &one); r.status != 200 || err != nil || len(one.ModelStats) != 1 {
		t.Fatalf("stats of toy v1: %d %s (%v)", r.status, r.body, err)
	}
	st := one.ModelStats[0]
	is := st.InferenceStats
	if st.Name != "toy" || st.Version != "1" || st.InferenceCount != 3 || st.ExecutionCount != 5 ||
		is.Success.Count != 2 || is.Success.Ns <= 0 || is.Fail.Count != 1 ||
		is.Queue != (durationJSON{2, int64(2 * time.Millisecond)}) || is.ComputeInfer != (durationJSON{2, int64(4 * time.Millisecond)}) ||
		st.LastInference < time.Now().Add(-time.Minute).UnixMilli() {
		t.Errorf("stats of toy v1: %+v", st)
	}
	if len(st.BatchStats) != 2 || st.BatchStats[1].BatchSize != 4 || st.BatchStats[1].ComputeInfer != (durationJSON{2, int64(5 * time.Millisecond)}) {
		t.Errorf("batch stats of toy v1: %+v", st.BatchStats)
	}
	golden(t, "v2_stats_version.golden", response{status: r.status, body: wallRE.ReplaceAllString(r.body, "${1}${2}0")})

	for _, tt := range []struct {
		path   string
		status int
		models int
	}{
		{"/v2/models/stats", 200, 3},
		{"/v2/models/toy/stats", 200, 2},
		{"/v2/models/other/versions/7/stats", 200, 1},
		{"/v2/models/nope/stats", 404, 0},
		{"/v2/models/toy/versions/9/stats", 404, 0},
	} {
		r := ts.do(t, "GET", tt.path, "", nil)
		var got struct {
			ModelStats []modelStat `json:"model_stats"`
			Error      string      `json:"error"`
		}
		if err := json.Unmarshal([]byte(r.body), &got); err != nil || r.status != tt.status || len(got.ModelStats) != tt.models ||
			(tt.status != 200 && got.Error == "") {
			t.Errorf("GET %s: %d %s; want %d with %d models", tt.path, r.status, r.body, tt.status, tt.models)
		}
	}
	if r := ts.do(t, "POST", "/v2/models/stats", "", nil); r.status != 405 {
		t.Errorf("POST /v2/models/stats: %d", r.status)
	}
	// A model's metadata is still at /v2/models/{m}.
	if r := ts.do(t, "GET", "/v2/models/toy", "", nil); r.status != 200 {
		t.Errorf("GET /v2/models/toy: %d", r.status)
	}
}

// GET /v2/models/{m}/config: Triton's configuration shape, with dims that
// leave out the batch dimension when the model batches.
func TestV2Config(t *testing.T) {
	batched := fakeModel("batched", 3)
	batched.Provider = "cuda"
	batched.Batching = BatchingInfo{MaxBatchSize: 8, MaxQueueDelayUS: 2000, PreferredBatchSizes: []int{4, 8},
		MaxQueueSize: 256, PriorityLevels: 2, Instances: 2}
	grouped := fakeModel("grouped", 1)
	grouped.Provider = "cuda"
	grouped.Batching = BatchingInfo{MaxBatchSize: 8, MaxQueueDelayUS: 2000, MaxQueueSize: 256, PriorityLevels: 1, Instances: 6}
	grouped.InstanceGroups = []InstanceGroup{{Kind: "gpu", Count: 3, GPUs: []int{0}}, {Kind: "gpu", Count: 1, GPUs: []int{1, 2}}, {Kind: "cpu", Count: 1}}
	ts := newTestServer(t, Options{}, fakeModel("toy", 1), batched, grouped)
	for _, tt := range []struct{ name, path string }{
		{"v2_config_batched", "/v2/models/batched/config"},
		{"v2_config_instance_groups", "/v2/models/grouped/config"},
		{"v2_config_unbatched_version", "/v2/models/toy/versions/1/config"},
		{"v2_config_not_found", "/v2/models/nope/config"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			golden(t, tt.name+".golden", ts.do(t, "GET", tt.path, "", nil))
		})
	}
	var c struct {
		MaxBatchSize int `json:"max_batch_size"`
		Input        []struct{ Dims []int64 }
	}
	r := ts.do(t, "GET", "/v2/models/batched/config", "", nil)
	if err := json.Unmarshal([]byte(r.body), &c); err != nil || c.MaxBatchSize != 8 || len(c.Input) != 1 || len(c.Input[0].Dims) != 1 || c.Input[0].Dims[0] != 2 {
		t.Errorf("batched config: %s (%v); want max_batch_size 8 and input dims [2]", r.body, err)
	}
	// gRPC's ModelConfig carries the same groups.
	gc, err := ts.grpcClient(t).ModelConfig(context.Background(), &inferpb.ModelConfigRequest{Name: "grouped"})
	if err != nil {
		t.Fatal(err)
	}
	var groups []string
	for _, g := range gc.Config.InstanceGroup {
		groups = append(groups, fmt.Sprintf("%s %v %d %v", g.Name, g.Kind, g.Count, g.Gpus))
	}
	if want := "[grouped_0 KIND_GPU 3 [0] grouped_1 KIND_GPU 1 [1 2] grouped_2 KIND_CPU 1 []]"; fmt.Sprint(groups) != want {
		t.Errorf("gRPC instance groups %v, want %s", groups, want)
	}
}

// TestStatsComputeCountsAgree: a snapshot taken while requests finish
// shows the three compute counts equal, as perf_analyzer requires (it
// ends its run when their deltas differ).
func TestStatsComputeCountsAgree(t *testing.T) {
	m := fakeModel("toy", 1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					m.stats.ran(1, batching.Timing{Queue: 1, Input: 2, Compute: 3, Output: 4})
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	for i := range 200000 {
		is := m.statistics().InferenceStats
		if a, b, c := is.ComputeInput.Count, is.ComputeInfer.Count, is.ComputeOutput.Count; a != b || b != c {
			t.Fatalf("snapshot %d: compute counts %d, %d, %d", i, a, b, c)
		}
	}
}
