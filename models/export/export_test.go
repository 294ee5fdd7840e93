package export

import (
	"encoding/binary"
	"io"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"fastinfer/models/onnxpb"
	"fastinfer/models/resnet"
	"fastinfer/runtime"
)

var (
	envOnce sync.Once
	testEnv *runtime.Env
	envErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if testEnv != nil {
		testEnv.Close()
	}
	os.Exit(code)
}

// ortEnv opens ONNX Runtime (CPU, one thread) once per test binary.
func ortEnv(t *testing.T) *runtime.Env {
	t.Helper()
	lib := os.Getenv(runtime.LibEnv)
	if lib == "" {
		if testing.Short() {
			t.Skip(runtime.LibEnv + " is not set")
		}
		// Failing rather than skipping keeps a plain `go test ./...` from
		// passing without ever having run the exported graph.
		t.Fatal(runtime.LibEnv + " is not set: run the tests with `make test`, which installs ONNX Runtime and sets it (or pass -short to skip these)")
	}
	envOnce.Do(func() {
		testEnv, envErr = runtime.Open(runtime.Config{
			Lib: lib, Provider: runtime.ProviderCPU, IntraOpThreads: 1,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
	})
	if envErr != nil {
		t.Fatal(envErr)
	}
	return testEnv
}

// testNet is the small ResNet of the tests, with seeded random weights and
// BatchNorm statistics: 1×28×28 input, a 1→4 stem with 2×2 max pool, an
// identity block at 4 channels, a 4→8 block with stride 2 and a 1×1
// shortcut, and 10 classes.
func testNet(seed uint64) *Net {
	rng := rand.New(rand.NewPCG(seed, 7))
	uniform := func(lo, hi float64) float32 { return float32(lo + (hi-lo)*rng.Float64()) }
	vec := func(n int, lo, hi float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = uniform(lo, hi)
		}
		return v
	}
	convBN := func(out, in, k, stride, pad int) ConvBN {
		w := make([]float32, out*in*k*k)
		std := math.Sqrt(2 / float64(in*k*k))
		for i := range w {
			w[i] = float32(rng.NormFloat64() * std)
		}
		return ConvBN{
			W:      Tensor{Dims: []int64{int64(out), int64(in), int64(k), int64(k)}, Data: w},
			Stride: stride, Pad: pad,
			Gamma: vec(out, 0.5, 1.5), Beta: vec(out, -0.2, 0.2),
			Mean: vec(out, -0.3, 0.3), Var: vec(out, 0.5, 1.5),
			Eps: 1e-5,
		}
	}
	short := convBN(8, 4, 1, 2, 0)
	return &Net{
		InC: 1, InH: 28, InW: 28,
		Stem:     convBN(4, 1, 3, 1, 1),
		StemPool: 2,
		Blocks: []Block{
			{A: convBN(4, 4, 3, 1, 1), B: convBN(4, 4, 3, 1, 1)},
			{A: convBN(8, 4, 3, 2, 1), B: convBN(8, 8, 3, 1, 1), Shortcut: &short},
		},
		FCW: Tensor{Dims: []int64{10, 8}, Data: vec(80, -0.5, 0.5)},
		FCB: vec(10, -0.1, 0.1),
	}
}

func randomImages(seed uint64, n int) []float32 {
	rng := rand.New(rand.NewPCG(seed, 11))
	x := make([]float32, n*28*28)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

// writeModel writes m to a temporary folder and returns the file's path.
func writeModel(t *testing.T, m *onnxpb.ModelProto) string {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "model.onnx")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBuildMatchesForwardInONNXRuntime(t *testing.T) {
	env := ortEnv(t)
	n := testNet(1)
	m, err := Build(n)
	if err != nil {
		t.Fatal(err)
	}
	path := writeModel(t, m)

	ins, outs, err := env.Inspect(path)
	if err != nil {
		t.Fatalf("ONNX Runtime rejected the graph: %v", err)
	}
	if len(ins) != 1 || ins[0].Name != "data" || !slices.Equal(ins[0].Shape, []int64{-1, 1, 28, 28}) {
		t.Errorf("inputs = %+v, want data [-1 1 28 28]", ins)
	}
	if len(outs) != 1 || outs[0].Name != "logits" || !slices.Equal(outs[0].Shape, []int64{-1, 10}) {
		t.Errorf("outputs = %+v, want logits [-1 10]", outs)
	}

	for _, batch := range []int{8, 1} {
		x := randomImages(uint64(batch), batch)
		want := Forward(n, x, batch)
		if err := CheckParity(env, path, x, batch, want, 1e-4); err != nil {
			t.Errorf("batch %d: %v", batch, err)
		}
		// At tolerance 0 the error reports the largest difference.
		t.Logf("batch %d, largest difference: %v", batch, CheckParity(env, path, x, batch, want, 0))
		// The reference must not be trivially flat, or parity proves
		// little: rows must differ and logits must spread.
		if batch > 1 && slices.Equal(want[:10], want[10:20]) {
			t.Errorf("batch %d: two images gave the same logits", batch)
		}
		if lo, hi := slices.Min(want), slices.Max(want); hi-lo < 0.1 {
			t.Errorf("batch %d: logits span only [%g, %g]", batch, lo, hi)
		}
	}
}

func TestCheckParityCatchesCorruption(t *testing.T) {
	env := ortEnv(t)
	x := randomImages(3, 8)
	tests := []struct {
		name    string
		corrupt func(n *Net)
		wantErr string
	}{
		// A bias moves one logit of every row by exactly 1.
		{"fc bias", func(n *Net) { n.FCB[3] += 1 }, "logit 3"},
		{"stem weight", func(n *Net) { n.Stem.W.Data[4] += 1 }, "row "},
		{"shortcut running mean", func(n *Net) { n.Blocks[1].Shortcut.Mean[2] -= 2 }, "parity check failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := testNet(1)
			m, err := Build(n)
			if err != nil {
				t.Fatal(err)
			}
			path := writeModel(t, m)
			tt.corrupt(n) // after export: the file keeps the old weight
			err = CheckParity(env, path, x, 8, Forward(n, x, 8), 1e-4)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want a parity failure mentioning %q", err, tt.wantErr)
			}
			t.Log(err)
		})
	}
}

func TestCheckParityArguments(t *testing.T) {
	env := ortEnv(t)
	n := testNet(1)
	m, err := Build(n)
	if err != nil {
		t.Fatal(err)
	}
	path := writeModel(t, m)
	x := randomImages(4, 2)
	want := Forward(n, x, 2)
	for _, tt := range []struct {
		name    string
		path    string
		x, want []float32
		batch   int
		wantErr string
	}{
		{"short input", path, x[:100], want, 2, "input floats"},
		{"short want", path, x, want[:19], 2, "expected logits"},
		{"zero batch", path, nil, nil, 0, "batch of 0"},
		{"missing file", filepath.Join(t.TempDir(), "none.onnx"), x, want, 2, "none.onnx"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckParity(env, tt.path, tt.x, tt.batch, tt.want, 1e-4)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
	if err := CheckParity(nil, path, x, 2, want, 1e-4); err == nil {
		t.Error("CheckParity with a nil env succeeded")
	}
}

func TestCompareLogits(t *testing.T) {
	want := []float32{0, 1, 2, 5, 4, 3}
	tests := []struct {
		name    string
		got     []float32
		tol     float32
		wantErr string
	}{
		{"equal", []float32{0, 1, 2, 5, 4, 3}, 0, ""},
		{"within tolerance", []float32{0.05, 1, 1.95, 5, 4, 3.04}, 0.06, ""},
		{"worst logit named", []float32{0, 1, 2, 5, 4.5, 3.2}, 0.3, "row 1 logit 1"},
		{"argmax differs", []float32{0, 1, 2, 4, 5, 3}, 10, "row 1: ONNX Runtime (cpu) predicts class 1"},
		{"NaN", []float32{0, 1, 2, 5, float32(math.NaN()), 3}, 10, "row 1 logit 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := compareLogits(tt.got, want, 2, 3, tt.tol, "cpu")
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}

// TestForwardByHand checks the reference itself on values worked out on
// paper, so that parity with ONNX Runtime is not two copies of one mistake.
func TestForwardByHand(t *testing.T) {
	one := func(w float32, k, pad int) ConvBN {
		return ConvBN{
			W:      Tensor{Dims: []int64{1, 1, int64(k), int64(k)}, Data: slices.Repeat([]float32{w}, k*k)},
			Stride: 1, Pad: pad,
			Gamma: []float32{1}, Beta: []float32{0}, Mean: []float32{0}, Var: []float32{1},
		}
	}
	x := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9} // 3×3

	t.Run("batchnorm and pool", func(t *testing.T) {
		// BN: (x−1)/√(3+1)·2 − 3 = x − 4 → relu → rows [0 0 0] [0 1 2]
		// [3 4 5]; the 2×2 pool keeps only the top-left window: max 1.
		stem := one(1, 1, 0)
		stem.Gamma, stem.Beta, stem.Mean, stem.Var, stem.Eps = []float32{2}, []float32{-3}, []float32{1}, []float32{3}, 1
		n := &Net{InC: 1, InH: 3, InW: 3, Stem: stem, StemPool: 2,
			FCW: Tensor{Dims: []int64{2, 1}, Data: []float32{2, -1}}, FCB: []float32{0.5, 0}}
		if got := Forward(n, x, 1); !slices.Equal(got, []float32{2.5, -1}) {
			t.Errorf("logits = %v, want [2.5 -1]", got)
		}
	})

	t.Run("padded conv and identity block", func(t *testing.T) {
		// A: 3×3 box sums with zero padding = [12 21 16; 27 45 33;
		// 24 39 28]. B scales by −0.1; adding x and a relu leaves
		// [0 0 1.4; 1.3 0.5 2.7; 4.6 4.1 6.2], whose mean is 20.8/9.
		n := &Net{InC: 1, InH: 3, InW: 3, Stem: one(1, 1, 0),
			Blocks: []Block{{A: one(1, 3, 1), B: one(-0.1, 1, 0)}},
			FCW:    Tensor{Dims: []int64{1, 1}, Data: []float32{1}}, FCB: []float32{0}}
		got := Forward(n, slices.Concat(x, x), 2) // a batch of two equal images
		if len(got) != 2 || math.Abs(float64(got[0])-20.8/9) > 1e-5 || got[0] != got[1] {
			t.Errorf("logits = %v, want [%g %g]", got, 20.8/9, 20.8/9)
		}
	})

	t.Run("strided shortcut", func(t *testing.T) {
		// 4×4 input of ones; A (1×1, stride 2) gives 2×2 of w_a; B is
		// the identity conv; the shortcut (1×1, stride 2, weight 3) adds
		// 3. Output 2×2 of w_a+3 → mean w_a+3.
		a := one(0.5, 1, 0)
		a.Stride = 2
		sc := one(3, 1, 0)
		sc.Stride = 2
		n := &Net{InC: 1, InH: 4, InW: 4, Stem: one(1, 1, 0),
			Blocks: []Block{{A: a, B: one(1, 1, 0), Shortcut: &sc}},
			FCW:    Tensor{Dims: []int64{1, 1}, Data: []float32{1}}, FCB: []float32{0}}
		if got := Forward(n, slices.Repeat([]float32{1}, 16), 1); !slices.Equal(got, []float32{3.5}) {
			t.Errorf("logits = %v, want [3.5]", got)
		}
	})
}

func TestForwardPanicsOnBadInput(t *testing.T) {
	for name, f := range map[string]func(){
		"short input": func() { Forward(testNet(1), make([]float32, 28*28-1), 1) },
		"invalid net": func() { n := testNet(1); n.FCB = n.FCB[:3]; Forward(n, make([]float32, 28*28), 1) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			f()
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(n *Net)
		wantErr string
	}{
		{"nil W dims", func(n *Net) { n.Stem.W.Dims = nil }, "stem: W has dims []"},
		{"3-d W", func(n *Net) { n.Stem.W.Dims = []int64{4, 1, 9} }, "want [out, 1, k, k]"},
		{"W data length", func(n *Net) { n.Blocks[0].A.W.Data = n.Blocks[0].A.W.Data[1:] }, "blocks[0].a: W has 143 values; its dims [4 4 3 3] need 144"},
		{"W in-channels", func(n *Net) {
			n.Blocks[1].B.W = Tensor{Dims: []int64{8, 4, 3, 3}, Data: make([]float32, 8*4*9)}
		}, "blocks[1].b: W has dims [8 4 3 3], so it takes 4 channels, but its input has 8"},
		{"input channels", func(n *Net) { n.InC = 3 }, "stem: W has dims [4 1 3 3], so it takes 1 channels, but its input has 3"},
		{"gamma length", func(n *Net) { n.Blocks[1].A.Gamma = n.Blocks[1].A.Gamma[:7] }, "blocks[1].a: Gamma has 7 values; want 8"},
		{"var length", func(n *Net) { n.Stem.Var = append(n.Stem.Var, 1) }, "stem: Var has 5 values; want 4"},
		{"var plus eps", func(n *Net) { n.Stem.Var[2], n.Stem.Eps = 0, 0 }, "stem: Var[2] + Eps = 0"},
		{"negative eps", func(n *Net) { n.Stem.Eps = -1 }, "Eps -1"},
		{"NaN weight", func(n *Net) { n.Blocks[0].B.W.Data[5] = float32(math.NaN()) }, "blocks[0].b: W[5] is NaN"},
		{"zero stride", func(n *Net) { n.Blocks[0].A.Stride = 0 }, "blocks[0].a: stride 0"},
		{"negative pad", func(n *Net) { n.Stem.Pad = -1 }, "stem: pad -1"},
		{"identity shortcut on a shape change", func(n *Net) { n.Blocks[1].Shortcut = nil }, "blocks[1]: the identity shortcut needs the block's output [8 7 7] to equal its input [4 14 14]"},
		{"shortcut stride", func(n *Net) { n.Blocks[1].Shortcut.Stride = 1 }, "blocks[1].shortcut: output [8 14 14] does not match the residual branch's [8 7 7]"},
		{"shortcut channels", func(n *Net) {
			n.Blocks[1].Shortcut.W = Tensor{Dims: []int64{8, 8, 1, 1}, Data: make([]float32, 64)}
		}, "blocks[1].shortcut: W has dims [8 8 1 1], so it takes 8 channels, but its input has 4"},
		{"stem pool too big", func(n *Net) { n.StemPool = 29 }, "stem_pool 29 is larger than the stem's output [4 28 28]"},
		{"negative stem pool", func(n *Net) { n.StemPool = -2 }, "stem_pool -2"},
		{"kernel over input", func(n *Net) { n.InH, n.InW, n.StemPool = 2, 2, 0; n.Stem.Pad = 0 }, "3×3 kernel is larger than its padded input (2×2, pad 0)"},
		{"no input", func(n *Net) { n.InH = 0 }, "must be positive"},
		{"FCW features", func(n *Net) { n.FCW = Tensor{Dims: []int64{10, 4}, Data: make([]float32, 40)} }, "fc: FCW has dims [10 4], but the last block gives 8 features; want [10, 8]"},
		{"FCW rank", func(n *Net) { n.FCW.Dims = []int64{80} }, "fc: FCW has dims [80]; want [classes, 8]"},
		{"FCW data", func(n *Net) { n.FCW.Data = n.FCW.Data[:79] }, "fc: FCW has 79 values"},
		{"FCB length", func(n *Net) { n.FCB = n.FCB[:9] }, "fc: FCB has 9 values; want 10"},
		{"FCB infinite", func(n *Net) { n.FCB[9] = float32(math.Inf(1)) }, "fc: FCB[9] is +Inf"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := testNet(1)
			tt.mutate(n)
			m, err := Build(n)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
			if m != nil {
				t.Error("Build returned a model with its error")
			}
		})
	}
	if _, err := Build(nil); err == nil {
		t.Error("Build(nil) succeeded")
	}
	// Several faults are reported together.
	n := testNet(1)
	n.Stem.Gamma, n.FCB = nil, nil
	if err := Validate(n); err == nil || !strings.Contains(err.Error(), "stem: Gamma") || !strings.Contains(err.Error(), "fc: FCB") {
		t.Errorf("err = %v, want both stem Gamma and fc FCB named", err)
	}
}

func TestGraph(t *testing.T) {
	n := testNet(1)
	m, err := Build(n)
	if err != nil {
		t.Fatal(err)
	}
	if m.GetIrVersion() != 8 || len(m.GetOpsetImport()) != 1 || m.GetOpsetImport()[0].GetVersion() != 17 {
		t.Errorf("ir_version %d, opsets %v; want 8 and opset 17", m.GetIrVersion(), m.GetOpsetImport())
	}
	ops := map[string]int{}
	for _, node := range m.GetGraph().GetNode() {
		ops[node.GetOpType()]++
	}
	want := map[string]int{
		"Conv": 6, "BatchNormalization": 6, "Relu": 5, "MaxPool": 1, "Add": 2,
		"GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1,
	}
	if !maps.Equal(ops, want) {
		t.Errorf("op counts = %v, want %v", ops, want)
	}
	n.StemPool = 0
	if m2, _ := Build(n); countOp(m2, "MaxPool") != 0 {
		t.Error("StemPool 0 still exported a MaxPool")
	}

	// BatchNormalization carries its epsilon and its four vectors, Gemm
	// transposes FCW.
	for _, node := range m.GetGraph().GetNode() {
		switch node.GetOpType() {
		case "BatchNormalization":
			if len(node.GetInput()) != 5 || len(node.GetAttribute()) != 1 || node.GetAttribute()[0].GetF() != 1e-5 {
				t.Errorf("%s: inputs %v, attributes %v", node.GetName(), node.GetInput(), node.GetAttribute())
			}
		case "Gemm":
			if node.GetOutput()[0] != "logits" || node.GetAttribute()[0].GetName() != "transB" || node.GetAttribute()[0].GetI() != 1 {
				t.Errorf("gemm = %v", node)
			}
		}
	}

	if got, want := Params(testNet(1)), resnet.ParamCount(m); got != want {
		t.Errorf("Params = %d, resnet.ParamCount of the graph = %d", got, want)
	}
	// 4·9 + 4·2 | 2·(4·4·9 + 4·2) | 8·4·9 + 8·8·9 + 2·8·2 + 8·4 + 8·2 | 80 + 10
	if got := Params(testNet(1)); got != 44+304+(288+576+32+32+16)+90 {
		t.Errorf("Params = %d, want 1382", got)
	}

	// The weights are copied: changing the Net later leaves the graph.
	before := initializer(t, m, "fc.bias")
	n.FCB[0] = 99
	if after := initializer(t, m, "fc.bias"); after[0] != before[0] || after[0] == 99 {
		t.Errorf("fc.bias[0] followed the Net: %g", after[0])
	}
	if got := initializer(t, m, "block1.shortcut.conv.weight"); len(got) != 32 {
		t.Errorf("shortcut weight has %d values, want 32", len(got))
	}
}

func countOp(m *onnxpb.ModelProto, op string) int {
	c := 0
	for _, n := range m.GetGraph().GetNode() {
		if n.GetOpType() == op {
			c++
		}
	}
	return c
}

func initializer(t *testing.T, m *onnxpb.ModelProto, name string) []float32 {
	t.Helper()
	for _, in := range m.GetGraph().GetInitializer() {
		if in.GetName() == name {
			raw := in.GetRawData()
			v := make([]float32, len(raw)/4)
			for i := range v {
				v[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
			}
			return v
		}
	}
	t.Fatalf("no initializer %s", name)
	return nil
}
