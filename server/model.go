package server

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sort"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"fastinfer/batching"
	"fastinfer/internal/dtype"
	"fastinfer/monitor/drift"
)

// Tensor describes a model input or output in Open Inference Protocol terms.
type Tensor struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

// Model is one served model version, as plain Go values and functions so
// the server needs no native code: the composition root fills Preprocess
// from vision and Infer from batching over a runtime session, and tests
// fill them with fakes.
type Model struct {
	Name     string
	Version  int
	Platform string // "onnxruntime_onnx"
	Provider string // execution provider actually in use: "cuda" | "cpu"
	// ProviderNote says why the model is on the CPU when a GPU was wanted.
	ProviderNote string
	Precision    string // "fp32" (or "") or "fp16": config.yaml's precision
	// Scores is "logits" (or ""): a score is the softmax of the outputs;
	// or "probabilities": the model ends in Softmax or Sigmoid, and a
	// score is the output value itself (models.DetectScores).
	Scores   string
	Inputs   []Tensor
	Outputs  []Tensor
	Labels   []string
	Classes  int // output floats per image
	InputLen int // input elements per image
	// InputDatatype is the datatype the model's input rows are in: FP32
	// ("" means the same), FP16 or UINT8 (the Open Inference Protocol's
	// names). Tensors of other datatypes, and preprocessed images, are
	// converted to it; a model whose input is not FP32 needs InferBytes.
	InputDatatype string
	// Preprocessing and Batching are echoed by GET /v1/models (the
	// configuration in force).
	Preprocessing any
	Batching      BatchingInfo
	// Card is the version's model card (card.json), shown as "card" by GET
	// /v1/models; nil for none. It must be a JSON object: anything else is
	// left out of the answers.
	Card json.RawMessage

	// Preprocess writes one image's input tensor into dst (len InputLen)
	// and returns facts about the image for drift monitoring and the
	// prediction log; stats says whether either wants them (brightness
	// and contrast cost a pass over the tensor). Errors wrapping
	// vision/guard's sentinels become 400/413 answers.
	// Nil for a model that takes tensors only; ImagesNote then says why.
	Preprocess func(img []byte, dst []float32, stats bool) (ImageStats, error)
	// PreprocessBytes, when set, is Preprocess for a model whose input is
	// not FP32: it writes the image's tensor as InputDatatype's bytes (len
	// InputLen times its size), with no float32 tensor made and converted
	// after (vision.Preprocessor.IntoBytes). Without it, such a model's
	// images go through Preprocess and are converted.
	PreprocessBytes func(img []byte, dst []byte, stats bool) (ImageStats, error)
	ImagesNote      string
	// Infer runs rows images: in has rows*InputLen floats, out receives
	// rows*Classes. batching.Scheduler.Do fits.
	Infer func(ctx context.Context, in []float32, rows int, out []float32, o batching.RequestOptions) (batching.Timing, error)
	// InferBytes, when set, is Infer for input given as the host's float32
	// bytes at any alignment (batching.Scheduler.DoBytes fits): a binary
	// FP32 tensor then goes from the request body into the batch in one
	// copy, wherever the client's JSON header made it start. Without it
	// such tensors are decoded into a buffer for Infer.
	InferBytes func(ctx context.Context, in []byte, rows int, out []float32, o batching.RequestOptions) (batching.Timing, error)

	// ExecutionStats, when set, reports the version's successful
	// executions by batch size (batching.Observer.Stats fits), for
	// GET /v2/models/{m}/stats.
	ExecutionStats func() []batching.SizeStats

	// InstanceGroups is where the instances run (GET .../config's
	// instance_group); nil reports Batching.Instances on Provider.
	InstanceGroups []InstanceGroup

	// Drift, when set, watches this version's predictions against its
	// reference profile (GET /v1/models/{m}/drift).
	Drift *drift.Monitor

	pool  sync.Pool // *[]float32 scratch for inputs and outputs
	bpool sync.Pool // *[]byte scratch for inputs in InputDatatype

	stats requestStats // for GET /v2/models/{m}/stats

	// refs counts requests using the model, so a replaced or removed
	// version is closed only after its last request (see Drain).
	refs sync.WaitGroup

	// Set by AddModel so requests skip the label lookups.
	versionLabel  string
	preprocessObs prometheus.Observer
	imagesCtr     prometheus.Counter
	classCtrs     []prometheus.Counter
	confidenceObs prometheus.Observer
}

// buffer returns a pooled float32 slice of length n.
func (m *Model) buffer(n int) *[]float32 {
	if p, ok := m.pool.Get().(*[]float32); ok && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	s := make([]float32, n)
	return &s
}

func (m *Model) release(p *[]float32) { m.pool.Put(p) }

// byteBuffer returns a pooled byte slice of length n.
func (m *Model) byteBuffer(n int) *[]byte {
	if p, ok := m.bpool.Get().(*[]byte); ok && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n)
	return &b
}

// outputType is the datatype the output is answered in: FP16 when the
// model's output is (the runtime widened its halves to float32 exactly,
// so narrowing them back is exact too), else FP32.
func (m *Model) outputType() string {
	if len(m.Outputs) == 1 && m.Outputs[0].Datatype == "FP16" {
		return "FP16"
	}
	return "FP32"
}

// outputSize is the bytes of rows rows of the output in outputType.
func (m *Model) outputSize(rows int) int { return rows * m.Classes * dtype.Size(m.outputType()) }

// appendOutput appends logits as the output's raw form: little-endian
// values of outputType. When b has the room it writes in place (into a
// shared memory region, for one).
func (m *Model) appendOutput(b []byte, logits []float32) []byte {
	if m.outputType() != "FP16" {
		return appendFP32(b, logits)
	}
	n := len(b)
	b = slices.Grow(b, 2*len(logits))[:n+2*len(logits)]
	dtype.Encode("FP16", b[n:], logits)
	return b
}

// inputType is InputDatatype with its default.
func (m *Model) inputType() string {
	if m.InputDatatype == "" {
		return "FP32"
	}
	return m.InputDatatype
}

// errNoBytes is a Model whose input is not FP32 but that has no
// InferBytes to take it: a composition error, answered 500.
var errNoBytes = errors.New("model input is not FP32 and the model has no InferBytes")

// inferFloats runs rows given as float32s (preprocessed images, decoded
// tensors): as they are when the input is FP32, else converted to its
// datatype first (dtype.Encode: FP16 rounds to nearest, UINT8 rounds and
// clamps; callers that must refuse misfits check with dtype.Check).
func (m *Model) inferFloats(ctx context.Context, in []float32, rows int, out []float32, o batching.RequestOptions) (batching.Timing, error) {
	dt := m.inputType()
	if dt == "FP32" {
		return m.Infer(ctx, in, rows, out, o)
	}
	if m.InferBytes == nil {
		return batching.Timing{}, errNoBytes
	}
	p := m.byteBuffer(len(in) * dtype.Size(dt))
	defer m.bpool.Put(p)
	b := *p
	dtype.Encode(dt, b, in)
	return m.InferBytes(ctx, b, rows, out, o)
}

// ImageStats are cheap facts about one input image, for drift monitoring:
// its size as uploaded, and the brightness and contrast (mean and standard
// deviation, 0..1) of what the model saw.
type ImageStats struct {
	Width, Height        int
	Brightness, Contrast float64
}

// InstanceGroup is where some of a version's instances run, as Triton's
// configuration reports it: Count instances on the CPU, or on each of GPUs.
type InstanceGroup struct {
	Kind  string // "cpu" or "gpu"
	Count int
	GPUs  []int
}

// BatchingInfo is the batching policy and instance layout in force.
type BatchingInfo struct {
	MaxBatchSize        int   `json:"max_batch_size"`
	MaxQueueDelayUS     int64 `json:"max_queue_delay_us"`
	PreferredBatchSizes []int `json:"preferred_batch_sizes,omitempty"`
	MaxQueueSize        int   `json:"max_queue_size"`
	DefaultTimeoutUS    int64 `json:"default_timeout_us"`
	PriorityLevels      int   `json:"priority_levels"`
	Instances           int   `json:"instances"`
	ThreadsPerInstance  int   `json:"threads_per_instance,omitempty"`
	// StagedBatches: each instance copies the next batch into a second
	// input buffer while one runs (--stage-batches).
	StagedBatches bool `json:"staged_batches,omitempty"`
}

// registry maps names to the versions served. Reads far outnumber writes
// (models are added at start-up), so it is an RWMutex over small maps.
type registry struct {
	mu     sync.RWMutex
	models map[string]map[int]*Model
}

// add serves m, returning the model it replaces (same name and version).
func (r *registry) add(m *Model) (old *Model) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.models == nil {
		r.models = map[string]map[int]*Model{}
	}
	if r.models[m.Name] == nil {
		r.models[m.Name] = map[int]*Model{}
	}
	old = r.models[m.Name][m.Version]
	r.models[m.Name][m.Version] = m
	return old
}

// remove stops serving a version and returns it (nil if not served).
func (r *registry) remove(name string, version int) *Model {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.models[name][version]
	if m == nil {
		return nil
	}
	delete(r.models[name], version)
	if len(r.models[name]) == 0 {
		delete(r.models, name)
	}
	return m
}

// acquire is get for a request that will use the model: the caller must
// call m.refs.Done when finished. The reference is taken under the read
// lock, so once remove has returned no new reference can appear and
// Drain's wait is final.
func (r *registry) acquire(name, version string) (*Model, *apiError) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	m, aerr := r.getLocked(name, version)
	if aerr == nil {
		m.refs.Add(1)
	}
	return m, aerr
}

// get finds a model by name and version ("" = the highest served).
func (r *registry) get(name, version string) (*Model, *apiError) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.getLocked(name, version)
}

func (r *registry) getLocked(name, version string) (*Model, *apiError) {
	vs := r.models[name]
	if len(vs) == 0 {
		return nil, errorf(404, codeModelNotFound, "model "+strconv.Quote(name)+" is not served")
	}
	if version == "" {
		best := -1
		for v := range vs {
			best = max(best, v)
		}
		return vs[best], nil
	}
	v, err := strconv.Atoi(version)
	if m := vs[v]; err == nil && m != nil && strconv.Itoa(v) == version {
		return m, nil
	}
	return nil, errorf(404, codeModelNotFound, "version "+strconv.Quote(version)+" of model "+strconv.Quote(name)+" is not served")
}

// list returns every served model version, by name then version.
func (r *registry) list() []*Model {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []*Model
	for _, vs := range r.models {
		for _, m := range vs {
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Version < out[j].Version
	})
	return out
}

// Drain waits until no request uses m; call it after m stopped being
// served (Server.AddModel's replaced model, Server.RemoveModel's result)
// and before closing what m's functions use.
func (m *Model) Drain() { m.refs.Wait() }
