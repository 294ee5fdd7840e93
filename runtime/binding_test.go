package runtime

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"

	ort "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/proto"

	"fastinfer/internal/dtype"
	"fastinfer/internal/testutil"
	"fastinfer/models/onnxpb"
)

// The tiny model is y = x·W + c with x [N,4], W [4,3], c [3]: small
// integers, so every output is exact in float32 and can be checked by hand.
const tinyIn, tinyOut = 4, 3

func tinyW(i, j int) float32 { return float32(i + 1 + 10*j) }
func tinyC(j int) float32    { return float32(100 * (j + 1)) }

// tinyExpect is the model's output for rows of x, computed in Go.
func tinyExpect(x []float32) []float32 {
	rows := len(x) / tinyIn
	y := make([]float32, rows*tinyOut)
	for r := range rows {
		for j := range tinyOut {
			v := tinyC(j)
			for i := range tinyIn {
				v += x[r*tinyIn+i] * tinyW(i, j)
			}
			y[r*tinyOut+j] = v
		}
	}
	return y
}

func floatInit(name string, dims []int64, vals []float32) *onnxpb.TensorProto {
	raw := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	return &onnxpb.TensorProto{
		Name:     proto.String(name),
		Dims:     dims,
		DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)),
		RawData:  raw,
	}
}

func floatValueInfo(name string, dims ...*onnxpb.TensorShapeProto_Dimension) *onnxpb.ValueInfoProto {
	return &onnxpb.ValueInfoProto{
		Name: proto.String(name),
		Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{
			ElemType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)),
			Shape:    &onnxpb.TensorShapeProto{Dim: dims},
		}}},
	}
}

func tinyModelProto() *onnxpb.ModelProto {
	w := make([]float32, 0, tinyIn*tinyOut)
	for i := range tinyIn {
		for j := range tinyOut {
			w = append(w, tinyW(i, j))
		}
	}
	c := make([]float32, tinyOut)
	for j := range c {
		c[j] = tinyC(j)
	}
	batch := &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "N"}}
	fixed := func(v int64) *onnxpb.TensorShapeProto_Dimension {
		return &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: v}}
	}
	return &onnxpb.ModelProto{
		IrVersion:    proto.Int64(8),
		ProducerName: proto.String("fastinfer-test"),
		OpsetImport:  []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(17)}},
		Graph: &onnxpb.GraphProto{
			Name: proto.String("tiny"),
			Node: []*onnxpb.NodeProto{{
				Name:   proto.String("fc"),
				OpType: proto.String("Gemm"),
				Input:  []string{"x", "W", "c"},
				Output: []string{"y"},
			}},
			Initializer: []*onnxpb.TensorProto{
				floatInit("W", []int64{tinyIn, tinyOut}, w),
				floatInit("c", []int64{tinyOut}, c),
			},
			Input:  []*onnxpb.ValueInfoProto{floatValueInfo("x", batch, fixed(tinyIn))},
			Output: []*onnxpb.ValueInfoProto{floatValueInfo("y", batch, fixed(tinyOut))},
		},
	}
}

// tinyModel writes the tiny Gemm model once per test binary.
func tinyModel(t testing.TB) string {
	return testutil.ModelFile(t, "tiny", func() (*onnxpb.ModelProto, error) { return tinyModelProto(), nil })
}

// fill writes a deterministic pattern that differs with seed and row.
func fill(x []float32, seed int) {
	for i := range x {
		x[i] = float32(math.Sin(float64(i)*0.37 + float64(seed)*1.3))
	}
}

// The tiny model's outputs through a Binding are exact, including when a
// batch size is reused with new data and when sizes alternate.
func TestBindingTinyExact(t *testing.T) {
	e := env(t)
	s, err := e.NewSession(tinyModel(t), SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b, err := s.NewBinding(5)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for step, rows := range []int{1, 3, 5, 3, 1, 5, 2} {
		t.Run(fmt.Sprintf("step%d_rows%d", step, rows), func(t *testing.T) {
			in := b.in32(rows)
			for i := range in {
				in[i] = float32((i*7+step*3)%11) - 5 // small integers: exact
			}
			if err := b.Run(rows); err != nil {
				t.Fatal(err)
			}
			want := tinyExpect(in)
			got := b.Output(rows)
			if len(got) != len(want) {
				t.Fatalf("output has %d floats, want %d", len(got), len(want))
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("output %d = %v, want %v", i, got[i], want[i])
				}
			}
		})
	}
}

// ResNet-18 through a Binding gives what Session.Run gives, for several
// batch sizes, and a size run again with new data gives the new answer.
func TestBindingMatchesSessionRun(t *testing.T) {
	e := env(t)
	s, err := e.NewSession(resnet18(t), SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b, err := s.NewBinding(4)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.MaxRows() != 4 {
		t.Fatalf("MaxRows = %d", b.MaxRows())
	}
	tests := []struct {
		name       string
		rows, seed int
	}{
		{"batch 1", 1, 1},
		{"batch 3", 3, 2},
		{"batch 4", 4, 3},
		{"batch 3 again, new data", 3, 4},
		{"batch 1 again, new data", 1, 5},
	}
	var prev3 []float32
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := b.in32(tt.rows)
			if len(in) != tt.rows*s.InputLen() {
				t.Fatalf("Input(%d) has %d floats", tt.rows, len(in))
			}
			fill(in, tt.seed)
			if err := b.Run(tt.rows); err != nil {
				t.Fatal(err)
			}
			want := make([]float32, tt.rows*s.OutputLen())
			if err := s.Run(append([]float32(nil), in...), tt.rows, want); err != nil {
				t.Fatal(err)
			}
			got := b.Output(tt.rows)
			worst := 0.0
			for i := range want {
				d := math.Abs(float64(got[i] - want[i]))
				if d > 1e-5 || math.IsNaN(float64(got[i])) {
					t.Fatalf("logit %d: binding %v, Session.Run %v", i, got[i], want[i])
				}
				worst = max(worst, d)
			}
			t.Logf("largest difference from Session.Run: %g", worst)
			if tt.rows == 3 {
				if prev3 != nil && equalFloats(prev3, got) {
					t.Fatal("batch 3 with new data gave the old output")
				}
				prev3 = append([]float32(nil), got...)
			}
		})
	}
}

func equalFloats(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestBindingRejectsRowsOutOfRange(t *testing.T) {
	e := env(t)
	s, err := e.NewSession(tinyModel(t), SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, max := range []int{0, -1} {
		if _, err := s.NewBinding(max); !errors.Is(err, ErrShape) {
			t.Errorf("NewBinding(%d) err = %v, want ErrShape", max, err)
		}
	}
	b, err := s.NewBinding(3)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, rows := range []int{0, -1, 4, 100} {
		t.Run(fmt.Sprint("rows", rows), func(t *testing.T) {
			if err := b.Run(rows); !errors.Is(err, ErrShape) {
				t.Fatalf("Run(%d) err = %v, want ErrShape", rows, err)
			}
		})
	}
}

// Close destroys every cached tensor and binding, may be called twice, and
// Run afterwards fails instead of touching freed ORT objects.
func TestBindingClose(t *testing.T) {
	e := env(t)
	s, err := e.NewSession(tinyModel(t), SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b, err := s.NewBinding(4)
	if err != nil {
		t.Fatal(err)
	}
	for _, rows := range []int{1, 4, 2, 4} {
		if err := b.Run(rows); err != nil {
			t.Fatal(err)
		}
	}
	var tensors []*ort.CustomDataTensor
	for _, bs := range b.sizes[0] {
		if bs != nil {
			tensors = append(tensors, bs.in, bs.out)
		}
	}
	if len(tensors) != 6 {
		t.Fatalf("%d tensors cached after running 1, 4, 2, 4; want 6", len(tensors))
	}
	for i, ts := range tensors {
		if ts.GetData() == nil {
			t.Fatalf("live tensor %d has no data", i)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for i, ts := range tensors {
		// Tensor.Destroy releases the OrtValue and drops the data slice.
		if ts.GetData() != nil {
			t.Errorf("tensor %d not destroyed by Close", i)
		}
	}
	for i, bs := range b.sizes[0] {
		if bs != nil {
			t.Errorf("size %d still cached after Close", i+1)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := b.Run(1); err == nil {
		t.Fatal("Run after Close succeeded")
	}
}

// Several Bindings on one Session run at once (one goroutine each), as the
// batcher's workers do.
func TestBindingsConcurrentOnOneSession(t *testing.T) {
	e := env(t)
	s, err := e.NewSession(tinyModel(t), SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Go(func() {
			b, err := s.NewBinding(8)
			if err != nil {
				errs <- err
				return
			}
			defer b.Close()
			for it := range 200 {
				rows := 1 + (w+it)%8
				in := b.in32(rows)
				for i := range in {
					in[i] = float32((i+w*5+it)%9) - 4
				}
				if err := b.Run(rows); err != nil {
					errs <- err
					return
				}
				if !equalFloats(b.Output(rows), tinyExpect(in)) {
					errs <- fmt.Errorf("worker %d iteration %d: wrong output", w, it)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// runWithValues is the alternative to I/O bindings: cached tensors passed
// through DynamicAdvancedSession.Run in prebuilt slices. Kept here to
// measure what that path allocates.
func runWithValues(s *Session, ins, outs []ort.Value) error {
	return s.sess.Run(ins, outs)
}

// A steady-state Binding.Run makes no Go allocation; the other two ways of
// running are measured for comparison.
func TestBindingRunAllocs(t *testing.T) {
	e := env(t)
	s, err := e.NewSession(tinyModel(t), SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b, err := s.NewBinding(4)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	fill(b.in32(4), 1)
	if err := b.Run(4); err != nil { // creates the batch-4 tensors
		t.Fatal(err)
	}
	var runErr error
	bindingAllocs := testing.AllocsPerRun(200, func() {
		if err := b.Run(4); err != nil {
			runErr = err
		}
	})
	if runErr != nil {
		t.Fatal(runErr)
	}
	if bindingAllocs != 0 {
		t.Errorf("Binding.Run allocates %v times per call in steady state, want 0", bindingAllocs)
	}

	in, out := make([]float32, 4*tinyIn), make([]float32, 4*tinyOut)
	sessionAllocs := testing.AllocsPerRun(200, func() {
		if err := s.Run(in, 4, out); err != nil {
			runErr = err
		}
	})
	bs := b.sizes[0][3]
	ins, outs := []ort.Value{bs.in}, []ort.Value{bs.out}
	valuesAllocs := testing.AllocsPerRun(200, func() {
		if err := runWithValues(s, ins, outs); err != nil {
			runErr = err
		}
	})
	if runErr != nil {
		t.Fatal(runErr)
	}
	t.Logf("allocs per run: Binding.Run %v, Session.Run %v, DynamicAdvancedSession.Run with cached tensors %v",
		bindingAllocs, sessionAllocs, valuesAllocs)
}

func TestSessionThreadsAndKind(t *testing.T) {
	e := env(t)
	tests := []struct {
		name        string
		opts        SessionOptions
		wantErr     string
		threads     int
		reason      string // substring of FallbackReason; "" = must be empty
		logsNothing bool
	}{
		{name: "default threads", opts: SessionOptions{}, threads: e.cfg.IntraOpThreads, reason: "CUDA provider failed to initialise"},
		{name: "two threads", opts: SessionOptions{Threads: 2}, threads: 2, reason: "CUDA provider failed to initialise"},
		{name: "negative threads", opts: SessionOptions{Threads: -1}, wantErr: "thread"},
		{name: "kind auto", opts: SessionOptions{Kind: KindAuto}, threads: e.cfg.IntraOpThreads, reason: "CUDA provider failed to initialise"},
		{name: "kind gpu", opts: SessionOptions{Kind: KindGPU}, threads: e.cfg.IntraOpThreads, reason: "CUDA provider failed to initialise"},
		{name: "kind cpu", opts: SessionOptions{Kind: KindCPU, Threads: 2}, threads: 2, logsNothing: true},
		{name: "kind bogus", opts: SessionOptions{Kind: "bogus"}, wantErr: `"bogus"`},
		{name: "kind upper case", opts: SessionOptions{Kind: "CPU"}, wantErr: `"CPU"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logsBefore := testLogs.String()
			s, err := e.NewSession(tinyModel(t), tt.opts)
			if tt.wantErr != "" {
				if err == nil {
					s.Close()
					t.Fatal("NewSession succeeded")
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %q does not mention %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if s.Provider() != ProviderCPU {
				t.Errorf("provider = %s, want cpu", s.Provider())
			}
			if s.Threads() != tt.threads {
				t.Errorf("Threads() = %d, want %d", s.Threads(), tt.threads)
			}
			r := s.FallbackReason()
			if tt.reason == "" && r != "" || !strings.Contains(r, tt.reason) {
				t.Errorf("fallback reason = %q, want %q", r, tt.reason)
			}
			if tt.logsNothing {
				if d := strings.TrimPrefix(testLogs.String(), logsBefore); d != "" {
					t.Errorf("session logged:\n%s", d)
				}
			}
			x := []float32{1, 2, 3, 4}
			y := make([]float32, tinyOut)
			if err := s.Run(x, 1, y); err != nil {
				t.Fatal(err)
			}
			if !equalFloats(y, tinyExpect(x)) {
				t.Errorf("output %v, want %v", y, tinyExpect(x))
			}
		})
	}
}

// BenchmarkBindingRunResNet18 runs ResNet-18 through a Binding, through
// Session.Run and through DynamicAdvancedSession.Run with cached tensors.
func BenchmarkBindingRunResNet18(b *testing.B) {
	benchBinding(b, resnet18(b), []int{1, 4})
}

// The tiny model makes the per-call overhead of each way visible.
func BenchmarkBindingRunTiny(b *testing.B) {
	benchBinding(b, tinyModel(b), []int{1, 4})
}

func benchBinding(b *testing.B, path string, batches []int) {
	if envErr != nil {
		b.Fatal(envErr)
	}
	s, err := testEnv.NewSession(path, SessionOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for _, rows := range batches {
		b.Run(fmt.Sprintf("binding/batch=%d", rows), func(b *testing.B) {
			bd, err := s.NewBinding(rows)
			if err != nil {
				b.Fatal(err)
			}
			defer bd.Close()
			fill(bd.in32(rows), rows)
			if err := bd.Run(rows); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := bd.Run(rows); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("session/batch=%d", rows), func(b *testing.B) {
			in := make([]float32, rows*s.InputLen())
			out := make([]float32, rows*s.OutputLen())
			fill(in, rows)
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Run(in, rows, out); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("values/batch=%d", rows), func(b *testing.B) {
			bd, err := s.NewBinding(rows)
			if err != nil {
				b.Fatal(err)
			}
			defer bd.Close()
			fill(bd.in32(rows), rows)
			if err := bd.Run(rows); err != nil {
				b.Fatal(err)
			}
			bs := bd.sizes[0][rows-1]
			ins, outs := []ort.Value{bs.in}, []ort.Value{bs.out}
			b.ReportAllocs()
			for b.Loop() {
				if err := runWithValues(s, ins, outs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// in32 and inSlot32 view a FP32 model's input buffers as floats.
func (b *Binding) in32(rows int) []float32 { return dtype.Float32s(b.Input(rows)) }
func (b *Binding) inSlot32(slot, rows int) []float32 {
	return dtype.Float32s(b.InputSlot(slot, rows))
}
func (b *Buckets) in32(rows int) []float32 { return dtype.Float32s(b.Input(rows)) }
func (b *Buckets) inSlot32(slot, rows int) []float32 {
	return dtype.Float32s(b.InputSlot(slot, rows))
}
