package server

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"fastinfer/batching"
)

// Triton's statistics extension: GET /v2/models[/{m}[/versions/{v}]]/stats,
// cumulative counts and durations per model version since it was loaded.
// perf_analyzer reads it before and after each measurement for its
// server-side split (and stops when the endpoint is missing).

// requestStats are a version's inference requests, counted by the
// inference endpoints: atomics, since every request adds to them.
type requestStats struct {
	success, fail durationStat
	// Of the requests whose rows ran: their time in the queue, and the
	// copies in, runs and copies out of the executions that carried them.
	// The last three share one count, added after their times: three
	// counts added one after another could be read apart by a snapshot
	// taken as a request finishes, and perf_analyzer ends its run when
	// compute_input, compute_infer and compute_output counts differ.
	queue                      durationStat
	computed                   atomic.Int64
	inputNs, inferNs, outputNs atomic.Int64
	inferences                 atomic.Int64 // images (rows) answered
	last                       atomic.Int64 // Unix ms of the last answer
}

type durationStat struct{ count, ns atomic.Int64 }

func (d *durationStat) add(t time.Duration) {
	d.count.Add(1)
	d.ns.Add(int64(t))
}

// ran records a request whose rows ran, with the batcher's timing.
func (st *requestStats) ran(rows int, t batching.Timing) {
	st.queue.add(t.Queue)
	st.inputNs.Add(int64(t.Input))
	st.inferNs.Add(int64(t.Compute))
	st.outputNs.Add(int64(t.Output))
	st.computed.Add(1)
	st.inferences.Add(int64(rows))
}

// finished records a request's outcome and its whole time in the server.
func (st *requestStats) finished(ok bool, d time.Duration) {
	if ok {
		st.success.add(d)
		st.last.Store(time.Now().UnixMilli())
		return
	}
	st.fail.add(d)
}

type durationJSON struct { // a durationStat as the protocol writes it
	Count int64 `json:"count"`
	Ns    int64 `json:"ns"`
}

func (d *durationStat) json() durationJSON { return durationJSON{d.count.Load(), d.ns.Load()} }

type modelStat struct {
	Name           string `json:"name"`
	Version        string `json:"version"`
	LastInference  int64  `json:"last_inference"`
	InferenceCount int64  `json:"inference_count"`
	ExecutionCount int64  `json:"execution_count"`
	InferenceStats struct {
		Success       durationJSON `json:"success"`
		Fail          durationJSON `json:"fail"`
		Queue         durationJSON `json:"queue"`
		ComputeInput  durationJSON `json:"compute_input"`
		ComputeInfer  durationJSON `json:"compute_infer"`
		ComputeOutput durationJSON `json:"compute_output"`
		CacheHit      durationJSON `json:"cache_hit"`
		CacheMiss     durationJSON `json:"cache_miss"`
	} `json:"inference_stats"`
	BatchStats []batchStat `json:"batch_stats"`
}

type batchStat struct {
	BatchSize     int          `json:"batch_size"`
	ComputeInput  durationJSON `json:"compute_input"`
	ComputeInfer  durationJSON `json:"compute_infer"`
	ComputeOutput durationJSON `json:"compute_output"`
}

func (m *Model) statistics() modelStat {
	st := &m.stats
	out := modelStat{Name: m.Name, Version: strconv.Itoa(m.Version), LastInference: st.last.Load(),
		InferenceCount: st.inferences.Load(), BatchStats: []batchStat{}}
	is := &out.InferenceStats
	is.Success, is.Fail = st.success.json(), st.fail.json()
	n := st.computed.Load()
	is.Queue = st.queue.json()
	is.ComputeInput, is.ComputeInfer, is.ComputeOutput = durationJSON{n, st.inputNs.Load()}, durationJSON{n, st.inferNs.Load()}, durationJSON{n, st.outputNs.Load()}
	if m.ExecutionStats != nil {
		for _, b := range m.ExecutionStats() {
			out.ExecutionCount += b.Count
			out.BatchStats = append(out.BatchStats, batchStat{
				BatchSize:     b.BatchSize,
				ComputeInput:  durationJSON{b.Count, int64(b.Input)},
				ComputeInfer:  durationJSON{b.Count, int64(b.Compute)},
				ComputeOutput: durationJSON{b.Count, int64(b.Output)},
			})
		}
	}
	return out
}

// v2Stats answers GET /v2/models[/{m}[/versions/{v}]]/stats: every served
// version, every version of one model, or one version.
func (s *Server) v2Stats(ctx *fasthttp.RequestCtx, name, version string) {
	models, aerr := s.statsModels(name, version)
	if aerr != nil {
		writeV2Error(ctx, aerr)
		return
	}
	out := struct {
		ModelStats []modelStat `json:"model_stats"`
	}{ModelStats: []modelStat{}}
	for _, m := range models {
		out.ModelStats = append(out.ModelStats, m.statistics())
	}
	writeJSON(ctx, out)
}

// statsModels are the versions a statistics request names: every served
// version (no name), every version of one model, or one version.
func (s *Server) statsModels(name, version string) ([]*Model, *apiError) {
	switch {
	case name == "":
		return s.models.list(), nil
	case version != "":
		m, aerr := s.models.get(name, version)
		if aerr != nil {
			return nil, aerr
		}
		return []*Model{m}, nil
	}
	var models []*Model
	for _, m := range s.models.list() {
		if m.Name == name {
			models = append(models, m)
		}
	}
	if len(models) == 0 {
		_, aerr := s.models.get(name, "")
		return nil, aerr
	}
	return models, nil
}
