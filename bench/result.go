// Package bench is fastinfer's load generator and report: closed- and
// open-loop load against the HTTP image and tensor endpoints and against
// ONNX Runtime called directly (the ceiling), perf_analyzer's stability
// rule, latency percentiles, the server-side split read from /metrics,
// JSON results, SVG plots and regressions between two result files.
//
// It holds no native code: the raw-runtime target is supplied by the
// command as a Target.
package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"time"
)

// SchemaVersion is written into every result file; readers reject others.
const SchemaVersion = 1

// Results is one `fastinfer bench` invocation: the machine, every step
// measured and the ratios between targets.
type Results struct {
	Schema      int          `json:"schema"`
	Meta        Meta         `json:"meta"`
	Steps       []Step       `json:"steps"`
	Comparisons []Comparison `json:"comparisons,omitempty"`
}

// Meta describes what was measured and where.
type Meta struct {
	Time        time.Time `json:"time"`
	GitCommit   string    `json:"git_commit,omitempty"`
	Fastinfer   string    `json:"fastinfer_version,omitempty"`
	GoVersion   string    `json:"go_version"`
	Host        string    `json:"host,omitempty"`
	OS          string    `json:"os"`
	CPUModel    string    `json:"cpu_model"`
	Cores       int       `json:"cores"`
	Device      string    `json:"device"` // GPU name, or "cpu"
	Provider    string    `json:"provider,omitempty"`
	ORTVersion  string    `json:"onnxruntime_version,omitempty"`
	Command     string    `json:"command,omitempty"`
	Description string    `json:"description,omitempty"`
}

// Target kinds.
const (
	TargetHTTPImage  = "http-image"  // POST /v1/models/{m}/classify with an encoded image
	TargetHTTPTensor = "http-tensor" // POST /v2/models/{m}/infer with a binary FP32 tensor
	TargetGRPCTensor = "grpc-tensor" // gRPC ModelInfer with the tensor as raw_input_contents
	TargetShmTensor  = "shm-tensor"  // POST /v2/models/{m}/infer naming the tensor's place in system shared memory
	// POST /v2/models/{m}/infer naming the tensor's place in CUDA shared memory
	TargetCUDAShmTensor = "cudashm-tensor"
	TargetRaw           = "raw" // ONNX Runtime session.Run in-process
)

// Load modes.
const (
	ModeConcurrency = "concurrency" // closed loop: N outstanding requests
	ModeRate        = "rate"        // open loop: requests started at a fixed schedule
)

// Step is one load level against one target.
type Step struct {
	Target      string  `json:"target"`
	Model       string  `json:"model"`
	Mode        string  `json:"mode"`
	Concurrency int     `json:"concurrency,omitempty"`
	Rate        float64 `json:"rate,omitempty"`     // requests/s offered (open loop)
	Arrivals    string  `json:"arrivals,omitempty"` // "constant" | "poisson" (open loop)
	// BatchSize is images per request (rows per session call for raw).
	BatchSize int `json:"batch_size"`

	Seconds      float64 `json:"seconds"` // measured (after warm-up)
	Requests     int64   `json:"requests"`
	Images       int64   `json:"images"`
	Throughput   float64 `json:"throughput"`     // successful requests/s
	ImagesPerSec float64 `json:"images_per_sec"` // successful images/s
	Latency      Latency `json:"latency_ms"`
	// Errors counts failed requests by HTTP status ("429", "503", …) or
	// "transport" for connection errors and timeouts.
	Errors map[string]int64 `json:"errors,omitempty"`
	// Windows is the throughput of every measurement window; Stable says
	// whether the last three agreed within the stability percentage.
	Windows []float64 `json:"windows"`
	Stable  bool      `json:"stable"`
	// Server is the server's own split of the step, from /metrics.
	Server *ServerSplit `json:"server,omitempty"`
	// ClientCPU is the load generator's CPU use as a fraction of the
	// machine (1 = every core busy).
	ClientCPU float64  `json:"client_cpu"`
	Warnings  []string `json:"warnings,omitempty"`
	// Rounds is the step's images/s in every round of a repeated run
	// (--repeat); the step reported is the round with the median.
	Rounds []float64 `json:"rounds,omitempty"`
}

// Latency percentiles of successful requests, in milliseconds. For open
// loop they are measured from each request's scheduled start, so a
// server that falls behind is charged for it (no coordinated omission).
type Latency struct {
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P95  float64 `json:"p95"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
}

// ServerSplit is where a request's time went inside the server over the
// step: means per request (queue, preprocess, request total) and per
// execution (compute), from the differences of the histograms' sums and
// counts before and after.
type ServerSplit struct {
	RequestMs    float64 `json:"request_ms"`
	PreprocessMs float64 `json:"preprocess_ms"`
	QueueMs      float64 `json:"queue_ms"`
	ComputeMs    float64 `json:"compute_ms"`
	// InputMs and OutputMs are the copies around each execution (into the
	// batch buffer, and back to the requests): time an instance holds a
	// batch but does not run it.
	InputMs       float64 `json:"input_ms,omitempty"`
	OutputMs      float64 `json:"output_ms,omitempty"`
	MeanBatchSize float64 `json:"mean_batch_size"`
	Executions    int64   `json:"executions"`
	Rejections    int64   `json:"rejections"`
	// CPUMsPerRequest is the server process's CPU time (all its threads:
	// HTTP, preprocessing, batching and ONNX Runtime) per successful
	// request. On a GPU host it says whether the CPU bounds the server.
	CPUMsPerRequest float64 `json:"cpu_ms_per_request,omitempty"`
	// CPUShare is the fraction of the machine's cores the server used (1 =
	// all busy), when it runs on the load generator's machine.
	CPUShare float64 `json:"cpu_share,omitempty"`
	// ExecutionsInFlight is the mean number of executions running at once
	// (compute time over wall time, warm-up included). InstanceBusy divides
	// it by the model's instances: below 1 at saturation, instances sat
	// idle or copied between runs, which is the batcher's share of a gap
	// to the raw runtime; at 1, the executions themselves were slower.
	ExecutionsInFlight float64 `json:"executions_in_flight,omitempty"`
	InstanceBusy       float64 `json:"instance_busy,omitempty"`
}

// Comparison relates two steps: the ratio of their images/s, or (Unit
// "ms") the p50 latency Of adds over Over.
type Comparison struct {
	Name  string  `json:"name"`
	Of    string  `json:"of"`   // Step.Key() of the numerator
	Over  string  `json:"over"` // Step.Key() of the denominator
	Value float64 `json:"value"`
	Unit  string  `json:"unit,omitempty"` // "" for a ratio, "ms"
	Goal  float64 `json:"goal,omitempty"`
	// AtMost makes Goal an upper bound (latency); otherwise a lower one.
	AtMost bool `json:"at_most,omitempty"`
	// Rounds is the value in every round of a repeated run; Value is
	// their median, so one noisy minute does not decide a ratio.
	Rounds []float64 `json:"rounds,omitempty"`
}

// Key identifies a step across result files (for diffs and comparisons).
func (s Step) Key() string {
	load := fmt.Sprintf("c%d", s.Concurrency)
	if s.Mode == ModeRate {
		load = fmt.Sprintf("r%g-%s", s.Rate, s.Arrivals)
	}
	return fmt.Sprintf("%s/%s/%s/b%d", s.Target, s.Model, load, s.BatchSize)
}

// WriteFile writes r as indented JSON.
func (r *Results) WriteFile(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// ReadFile reads a result file, rejecting unknown fields and schema
// versions so a mistyped or foreign file is an error, not an empty diff.
func ReadFile(path string) (*Results, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	var r Results
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if r.Schema != SchemaVersion {
		return nil, fmt.Errorf("%s: schema %d, this fastinfer reads %d", path, r.Schema, SchemaVersion)
	}
	return &r, nil
}

// MergeRounds combines the steps of repeated rounds (each round the same
// sweep, in the same order): each step is the round whose images/s is
// the median, with every round's figure in Rounds.
func MergeRounds(rounds [][]Step) []Step {
	if len(rounds) == 1 {
		return rounds[0]
	}
	byKey := map[string][]Step{}
	var order []string
	for _, r := range rounds {
		for _, st := range r {
			k := st.Key()
			if _, seen := byKey[k]; !seen {
				order = append(order, k)
			}
			byKey[k] = append(byKey[k], st)
		}
	}
	out := make([]Step, 0, len(order))
	for _, k := range order {
		sts := byKey[k]
		ips := make([]float64, len(sts))
		for i, st := range sts {
			ips[i] = st.ImagesPerSec
		}
		sorted := append([]Step(nil), sts...)
		sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].ImagesPerSec < sorted[j].ImagesPerSec })
		med := sorted[(len(sorted)-1)/2]
		med.Rounds = ips
		out = append(out, med)
	}
	return out
}

// MergeComparisons takes each comparison's median over rounds (matched by
// name), keeping every round's value.
func MergeComparisons(rounds [][]Comparison) []Comparison {
	if len(rounds) == 1 {
		return rounds[0]
	}
	byName := map[string][]Comparison{}
	var order []string
	for _, r := range rounds {
		for _, c := range r {
			if _, seen := byName[c.Name]; !seen {
				order = append(order, c.Name)
			}
			byName[c.Name] = append(byName[c.Name], c)
		}
	}
	out := make([]Comparison, 0, len(order))
	for _, name := range order {
		cs := byName[name]
		vals := make([]float64, len(cs))
		for i, c := range cs {
			vals[i] = c.Value
		}
		sorted := append([]float64(nil), vals...)
		sort.Float64s(sorted)
		m := cs[0]
		if n := len(sorted); n%2 == 1 {
			m.Value = sorted[n/2]
		} else {
			m.Value = (sorted[n/2-1] + sorted[n/2]) / 2
		}
		m.Rounds = vals
		out = append(out, m)
	}
	return out
}
