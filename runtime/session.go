package runtime

import (
	"errors"
	"fmt"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync/atomic"

	ort "github.com/yalue/onnxruntime_go"

	"fastinfer/internal/dtype"
)

// SessionOptions picks the tensors a Session runs and where.
type SessionOptions struct {
	Input, Output string // "" = the model's only input / first output
	// RowShape fills dynamic non-batch input dimensions (e.g. [3,224,224]
	// for a model exported with dynamic H and W); nil uses the model's.
	RowShape []int64
	Device   int // CUDA device ordinal
	// Threads is this session's intra-op thread count; 0 = the Env's
	// IntraOpThreads.
	Threads int
	// Kind narrows the Env's provider choice for this session: "auto" (or
	// "") follows the Env, "gpu" insists on CUDA as ProviderCUDA does
	// (falling back to the CPU, with a reason, when it cannot be had), and
	// "cpu" never tries CUDA.
	Kind string
	// Model, when set, is the model itself (e.g. a converted copy); path
	// then only names it in messages.
	Model []byte
}

// Session kinds (SessionOptions.Kind).
const (
	KindAuto = "auto"
	KindGPU  = "gpu"
	KindCPU  = "cpu"
)

// Session is one ONNX Runtime session over a model's input (FP32, FP16 or
// UINT8) and output (FP32 or FP16), each with the batch as its first
// dimension. Run is safe for concurrent use (ORT sessions are).
type Session struct {
	sess           *ort.DynamicAdvancedSession
	inputs         []TensorInfo
	outputs        []TensorInfo
	in, out        TensorInfo
	inRow, outRow  []int64 // shape of one batch row
	inLen, outLen  int     // elements per row
	inType         elemType
	outType        elemType
	threads        int // intra-op threads the session was created with
	provider       string
	fallbackReason string
	env            *Env
	path           string                  // the model's, for messages
	device         int                     // CUDA ordinal, on a GPU
	pin            bool                    // Bindings put their buffers in pinned host memory
	graph          bool                    // CUDA graphs: Bindings run over device buffers, one batch size each
	graphOwner     atomic.Pointer[Binding] // with graph, the one Binding that may run the session
}

// ErrShape is returned (wrapped) for buffers that do not fit the model.
var ErrShape = errors.New("tensor shape mismatch")

// NewSession loads the ONNX model at path on the best provider the
// environment allows, falling back to the CPU when CUDA cannot be used.
func (e *Env) NewSession(path string, o SessionOptions) (*Session, error) {
	want, err := e.sessionProvider(o.Kind)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if o.Threads < 0 {
		return nil, fmt.Errorf("%s: negative intra-op thread count %d", path, o.Threads)
	}
	var ins, outs []ort.InputOutputInfo
	if o.Model != nil {
		ins, outs, err = ort.GetInputOutputInfoWithONNXData(o.Model)
	} else {
		ins, outs, err = ort.GetInputOutputInfo(path)
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	s := &Session{threads: o.Threads, env: e, path: path, device: o.Device}
	if s.threads == 0 {
		s.threads = e.cfg.IntraOpThreads
	}
	for _, i := range ins {
		s.inputs = append(s.inputs, toInfo(i))
	}
	for _, i := range outs {
		s.outputs = append(s.outputs, toInfo(i))
	}
	if s.in, err = pick("input", s.inputs, o.Input, path); err != nil {
		return nil, err
	}
	if s.out, err = pick("output", s.outputs, o.Output, path); err != nil {
		return nil, err
	}
	var ok bool
	if s.inType, ok = servedInput[s.in.DataType]; !ok {
		return nil, fmt.Errorf("%s: input %s is %s; fastinfer serves %s inputs", path, s.in.Name, s.in.DataType, ServedInputTypes)
	}
	if s.outType, ok = servedOutput[s.out.DataType]; !ok {
		hint := ""
		for _, o := range s.outputs {
			if _, fits := servedOutput[o.DataType]; fits && o.Name != s.out.Name {
				// Exporters often put an INT64 argmax first and the
				// scores after it.
				hint = fmt.Sprintf(" (output %s is %s: name it in config.yaml, output: %s)", o.Name, o.DataType, o.Name)
				break
			}
		}
		return nil, fmt.Errorf("%s: output %s is %s; fastinfer serves %s outputs%s", path, s.out.Name, s.out.DataType, ServedOutputTypes, hint)
	}
	if s.inRow, err = rowShape(s.in, o.RowShape); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if s.outRow, err = rowShape(s.out, nil); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s.inLen, s.outLen = prod(s.inRow), prod(s.outRow)

	provLib := cudaProviderLib(e.cfg.Lib)
	_, statErr := os.Stat(provLib)
	try, reason := cudaPlan(want, e.gpus, statErr == nil, provLib)
	gpuWanted := want == ProviderCUDA || (want == ProviderAuto && e.gpus.Available())
	if try && e.tryTensorRT() {
		sess, err := e.open(path, o.Model, s, ProviderTensorRT, o.Device)
		if err == nil {
			s.sess, s.provider = sess, ProviderTensorRT
			s.pin = e.cfg.CUDA.HostMemory != HostPageable
			return s, nil
		}
		s.fallbackReason = e.noteTensorRT(path, err)
	}
	if try {
		sess, err := e.open(path, o.Model, s, ProviderCUDA, o.Device)
		if err == nil {
			s.sess, s.provider = sess, ProviderCUDA
			s.pin = e.cfg.CUDA.HostMemory != HostPageable
			s.graph = e.cfg.CUDA.Graphs
			return s, nil
		}
		reason = "CUDA provider failed to initialise: " + err.Error()
	}
	if reason != "" {
		e.noteFallback(path, reason, gpuWanted)
	}
	sess, err := e.open(path, o.Model, s, ProviderCPU, 0)
	if err != nil {
		return nil, err
	}
	s.sess, s.provider, s.fallbackReason = sess, ProviderCPU, reason
	return s, nil
}

// sessionProvider maps a session Kind onto the provider plan cudaPlan
// takes: the Env's own for auto, ProviderCUDA for gpu, ProviderCPU for cpu.
func (e *Env) sessionProvider(kind string) (string, error) {
	switch kind {
	case "", KindAuto:
		return e.cfg.Provider, nil
	case KindGPU:
		return ProviderCUDA, nil
	case KindCPU:
		return ProviderCPU, nil
	}
	return "", fmt.Errorf("unknown session kind %q (want auto, gpu or cpu)", kind)
}

// open creates the ORT session on the CPU (ep "" or ProviderCPU), CUDA or
// TensorRT.
func (e *Env) open(path string, model []byte, s *Session, ep string, device int) (*ort.DynamicAdvancedSession, error) {
	opts, err := newSessionOptions(s.threads, e.opt, e.spin)
	if err != nil {
		return nil, err
	}
	defer opts.Destroy()
	switch ep {
	case ProviderCUDA:
		if err := e.appendCUDA(opts, device, e.cfg.CUDA.Graphs); err != nil {
			return nil, err
		}
	case ProviderTensorRT:
		if err := e.appendTensorRT(opts, device); err != nil {
			return nil, err
		}
	}
	var sess *ort.DynamicAdvancedSession
	if model != nil {
		sess, err = ort.NewDynamicAdvancedSessionWithONNXData(model, []string{s.in.Name}, []string{s.out.Name}, opts)
	} else {
		sess, err = ort.NewDynamicAdvancedSession(path, []string{s.in.Name}, []string{s.out.Name}, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("creating session for %s: %w", path, err)
	}
	return sess, nil
}

// appendCUDA adds the CUDA provider to opts: through the legacy entry point
// when the library has it (ORT's own GPU builds), else as a plugin provider
// (the npm-packaged build scripts/deps.sh installs).
func (e *Env) appendCUDA(opts *ort.SessionOptions, device int, graph bool) error {
	// HEURISTIC by default: EXHAUSTIVE conv search makes the first run of
	// every batch size take seconds (onnxruntime #21541).
	tuning, err := e.cfg.CUDA.providerOptions()
	if err != nil {
		return err
	}
	if graph {
		// The second run of each session captures its kernels into a
		// graph; later runs replay it with one launch.
		tuning["enable_cuda_graph"] = "1"
	}
	legacy := appendLegacyCUDA(opts, device, tuning)
	if legacy == nil || !strings.Contains(legacy.Error(), "not enabled in this build") {
		return legacy
	}
	e.cudaOnce.Do(func() {
		e.cudaEP, e.cudaErr = registerCUDAPlugin(e.cfg.Lib, cudaProviderLib(e.cfg.Lib))
	})
	if e.cudaErr != nil {
		return fmt.Errorf("CUDA plugin provider: %w", e.cudaErr)
	}
	return e.cudaEP.appendTo(opts, device, tuning)
}

func appendLegacyCUDA(opts *ort.SessionOptions, device int, tuning map[string]string) error {
	co, err := ort.NewCUDAProviderOptions()
	if err != nil {
		return fmt.Errorf("CUDA provider options: %w", err)
	}
	defer co.Destroy()
	o := map[string]string{"device_id": strconv.Itoa(device)}
	for k, v := range tuning {
		o[k] = v
	}
	if err := co.Update(o); err != nil {
		return fmt.Errorf("CUDA provider options: %w", err)
	}
	if err := opts.AppendExecutionProviderCUDA(co); err != nil {
		return fmt.Errorf("appending CUDA provider: %w", err)
	}
	return nil
}

// Run executes batch rows: in holds batch*InputLen() floats, out receives
// batch*OutputLen() floats. FP32 buffers are used in place; an input of
// another type is converted into a new buffer first (FP16 rounds to
// nearest, UINT8 rounds and clamps to 0..255), and a FP16 output is
// widened into out. The served path is a Binding's.
func (s *Session) Run(in []float32, batch int, out []float32) error {
	if s.graph {
		// Host tensors would be copied to the device at capture only.
		return fmt.Errorf("%w: a CUDA-graph session runs through a Binding, not Run", ErrShape)
	}
	if batch <= 0 || len(in) < batch*s.inLen || len(out) < batch*s.outLen {
		return fmt.Errorf("%w: batch %d needs %d input and %d output floats, got %d and %d",
			ErrShape, batch, batch*s.inLen, batch*s.outLen, len(in), len(out))
	}
	in, out = in[:batch*s.inLen], out[:batch*s.outLen]
	inB := dtype.Bytes(in)
	if s.inType != elemFP32 {
		inB = make([]byte, len(in)*s.inType.size)
		dtype.Encode(s.in.DataType, inB, in)
	}
	outB := dtype.Bytes(out)
	if s.outType != elemFP32 {
		outB = make([]byte, len(out)*s.outType.size)
	}
	inT, err := ort.NewCustomDataTensor(batchShape(batch, s.inRow), inB, s.inType.ort)
	if err != nil {
		return fmt.Errorf("input tensor: %w", err)
	}
	defer inT.Destroy()
	outT, err := ort.NewCustomDataTensor(batchShape(batch, s.outRow), outB, s.outType.ort)
	if err != nil {
		return fmt.Errorf("output tensor: %w", err)
	}
	defer outT.Destroy()
	err = s.sess.Run([]ort.Value{inT}, []ort.Value{outT})
	goruntime.KeepAlive(inB)
	goruntime.KeepAlive(outB)
	if err != nil {
		return fmt.Errorf("running %s: %w", s.in.Name, err)
	}
	if s.outType == elemFP16 {
		dtype.Widen(out, outB)
	}
	return nil
}

// Close releases the session.
func (s *Session) Close() error { return s.sess.Destroy() }

// Inputs and Outputs describe every tensor of the model.
func (s *Session) Inputs() []TensorInfo  { return s.inputs }
func (s *Session) Outputs() []TensorInfo { return s.outputs }

// Input and Output are the tensors Run feeds and reads.
func (s *Session) Input() TensorInfo  { return s.in }
func (s *Session) Output() TensorInfo { return s.out }

// InputRow and OutputRow are the shapes of one batch row.
func (s *Session) InputRow() []int64  { return s.inRow }
func (s *Session) OutputRow() []int64 { return s.outRow }

// InputLen and OutputLen are elements per batch row.
func (s *Session) InputLen() int  { return s.inLen }
func (s *Session) OutputLen() int { return s.outLen }

// InputBytes is the bytes of one input row in the input's datatype: what
// a Binding's Input holds per row.
func (s *Session) InputBytes() int { return s.inLen * s.inType.size }

// Threads is the intra-op thread count the session was created with.
func (s *Session) Threads() int { return s.threads }

// Provider is the execution provider the session runs on: "tensorrt",
// "cuda" or "cpu".
func (s *Session) Provider() string { return s.provider }

// PinnedHost reports whether Bindings over the session put their buffers
// in pinned host memory (a GPU session unless HostMemory is pageable; a
// Binding still falls back to Go memory if pinning fails).
func (s *Session) PinnedHost() bool { return s.pin }

// Graphs reports whether the session captures CUDA graphs; its Bindings
// then run one batch size each, over device buffers.
func (s *Session) Graphs() bool { return s.graph }

// FallbackReason says why a session is not on the provider it tried first:
// why it is on the CPU, or on CUDA when TensorRT was tried ("" when none
// was needed or the CPU was asked for).
func (s *Session) FallbackReason() string { return s.fallbackReason }

func pick(kind string, infos []TensorInfo, name, path string) (TensorInfo, error) {
	if name != "" {
		for _, i := range infos {
			if i.Name == name {
				return i, nil
			}
		}
		return TensorInfo{}, fmt.Errorf("%s: no %s named %q (model has %v)", path, kind, name, names(infos))
	}
	if len(infos) == 0 {
		return TensorInfo{}, fmt.Errorf("%s: model has no %s", path, kind)
	}
	if kind == "input" && len(infos) > 1 {
		return TensorInfo{}, fmt.Errorf("%s: model has inputs %v; name one in config.yaml", path, names(infos))
	}
	return infos[0], nil
}

func names(infos []TensorInfo) []string {
	n := make([]string, len(infos))
	for i, t := range infos {
		n[i] = t.Name
	}
	return n
}

// rowShape is the tensor's shape without its batch dimension, with dynamic
// dimensions filled from fill.
func rowShape(t TensorInfo, fill []int64) ([]int64, error) {
	if len(t.Shape) < 2 {
		return nil, fmt.Errorf("%s has shape %v; want a batch dimension first", t.Name, t.Shape)
	}
	row := append([]int64(nil), t.Shape[1:]...)
	if fill != nil && len(fill) != len(row) {
		return nil, fmt.Errorf("%s: row shape %v does not match the model's %v", t.Name, fill, row)
	}
	for i, d := range row {
		if fill != nil {
			if d >= 0 && d != fill[i] {
				return nil, fmt.Errorf("%s: row shape %v does not match the model's %v", t.Name, fill, row)
			}
			row[i] = fill[i]
			continue
		}
		if d < 0 {
			return nil, fmt.Errorf("%s has dynamic dimension %d in %v; give its size", t.Name, i+1, t.Shape)
		}
	}
	return row, nil
}

func prod(s []int64) int {
	n := 1
	for _, d := range s {
		n *= int(d)
	}
	return n
}

func batchShape(batch int, row []int64) ort.Shape {
	s := make(ort.Shape, 0, len(row)+1)
	s = append(s, int64(batch))
	return append(s, row...)
}

// Inspect lists a model's inputs and outputs without creating a session.
// The environment must be open.
func (e *Env) Inspect(path string) (inputs, outputs []TensorInfo, err error) {
	ins, outs, err := ort.GetInputOutputInfo(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", path, err)
	}
	for _, i := range ins {
		inputs = append(inputs, toInfo(i))
	}
	for _, o := range outs {
		outputs = append(outputs, toInfo(o))
	}
	return inputs, outputs, nil
}
