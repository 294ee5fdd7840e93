package fp16

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	ort "github.com/yalue/onnxruntime_go"

	"fastinfer/internal/dtype"
	"fastinfer/internal/testutil"
	"fastinfer/models/resnet"
	"fastinfer/runtime"
)

// margin is how far the largest of x is above the second largest.
func margin(x []float32) float32 {
	s := slices.Sorted(slices.Values(x))
	return s[len(s)-1] - s[len(s)-2]
}

// openEnv opens ONNX Runtime on the CPU, or skips without a library.
func openEnv(t *testing.T) *runtime.Env {
	t.Helper()
	lib := os.Getenv(runtime.LibEnv)
	if lib == "" {
		t.Skip(runtime.LibEnv + " is not set")
	}
	env, err := runtime.Open(runtime.Config{Lib: lib, Provider: runtime.ProviderCPU})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Close() })
	return env
}

// runModel runs batch rows of in through the model at path on the CPU and
// returns its first output.
func runModel(t *testing.T, env *runtime.Env, path string, in []float32, batch int) []float32 {
	t.Helper()
	s, err := env.NewSession(path, runtime.SessionOptions{Kind: runtime.KindCPU})
	if err != nil {
		t.Fatalf("ONNX Runtime rejected %s: %v", filepath.Base(path), err)
	}
	defer s.Close()
	out := make([]float32, batch*s.OutputLen())
	if err := s.Run(in, batch, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// The hand-built graph, with its Constant, Cast and value_info, is valid
// for ONNX Runtime after conversion and computes nearly the same values
// (its weights and inputs are exact in float16; the sums in between are
// rounded).
func TestConvertSmallGraphInORT(t *testing.T) {
	env := openEnv(t)
	dir := t.TempDir()
	m := smallModel()
	h, _, err := Convert(m, Options{})
	if err != nil {
		t.Fatal(err)
	}
	in := make([]float32, 2*2*4*4)
	for i := range in {
		in[i] = float32(i%7) - 3
	}
	want := runModel(t, env, testutil.WriteModel(t, dir, "fp32.onnx", m), in, 2)
	got := runModel(t, env, testutil.WriteModel(t, dir, "fp16.onnx", h), in, 2)
	for i := range want {
		if d := math.Abs(float64(want[i] - got[i])); d > 1e-2*max(1, math.Abs(float64(want[i]))) {
			t.Errorf("output %d: float16 model %g, float32 model %g", i, got[i], want[i])
		}
	}
	t.Logf("float32 %v, float16 %v", want, got)
}

// ONNX Runtime's CPU provider loads a converted ResNet-18 (inserting its own
// float32 casts around the float16 nodes it has no kernel for) and gives
// nearly the float32 model's outputs, with float32 and with float16 I/O.
func TestConvertResNetInORT(t *testing.T) {
	env := openEnv(t)
	const classes, batch = 10, 2
	m, err := resnet.Build("resnet18", classes, 7)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	paths := map[string]string{"fp32": testutil.WriteModel(t, dir, "fp32.onnx", m)}
	for name, o := range map[string]Options{"fp16": {}, "fp16io": {Float16IO: true}} {
		h, r, err := Convert(m, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %v", name, r)
		paths[name] = testutil.WriteModel(t, dir, name+".onnx", h)
	}
	if a, b := fileSize(t, paths["fp32"]), fileSize(t, paths["fp16"]); b > a*51/100 {
		t.Errorf("float16 model is %d bytes, float32 %d: want about half", b, a)
	}

	rng := rand.New(rand.NewPCG(3, 4))
	in := make([]float32, batch*3*224*224)
	for i := range in {
		in[i] = float32(rng.NormFloat64())
	}
	want := runModel(t, env, paths["fp32"], in, batch)
	got := map[string][]float32{
		"fp16":   runModel(t, env, paths["fp16"], in, batch),
		"fp16io": runFloat16IO(t, env, paths["fp16io"], in, batch, classes),
	}

	for name, out := range got {
		var maxLogit, maxProb float64
		for r := range batch {
			w, g := want[r*classes:(r+1)*classes], out[r*classes:(r+1)*classes]
			// Only a clear winner must stay the winner: random weights can
			// leave two classes within float16's error of each other.
			if testutil.Argmax(w) != testutil.Argmax(g) && margin(w) > 0.1 {
				t.Errorf("%s row %d: top class %d, float32 model %d", name, r, testutil.Argmax(g), testutil.Argmax(w))
			}
			pw, pg := testutil.Softmax(w), testutil.Softmax(g)
			for i := range w {
				maxLogit = max(maxLogit, math.Abs(float64(w[i]-g[i])))
				maxProb = max(maxProb, math.Abs(pw[i]-pg[i]))
			}
		}
		t.Logf("%s: max |Δlogit| %.4f, max |Δsoftmax| %.5f (logits in [%.2f, %.2f])", name, maxLogit, maxProb, slices.Min(want), slices.Max(want))
		if maxLogit > 0.1 || maxProb > 0.01 {
			t.Errorf("%s: max |Δlogit| %g, max |Δsoftmax| %g; want ≤ 0.1 and ≤ 0.01", name, maxLogit, maxProb)
		}
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// runFloat16IO runs a model with float16 input and output, which
// fastinfer's runtime does not serve, through onnxruntime_go directly.
func runFloat16IO(t *testing.T, env *runtime.Env, path string, in []float32, batch, classes int) []float32 {
	t.Helper()
	ins, outs, err := env.Inspect(path)
	if err != nil {
		t.Fatal(err)
	}
	if ins[0].DataType != "FP16" || outs[0].DataType != "FP16" {
		t.Fatalf("float16 I/O model has %s input and %s output", ins[0].DataType, outs[0].DataType)
	}
	inBytes := make([]byte, 2*len(in))
	for i, v := range in {
		binary.LittleEndian.PutUint16(inBytes[2*i:], dtype.FromFloat32(v))
	}
	outBytes := make([]byte, 2*batch*classes)
	inT, err := ort.NewCustomDataTensor(ort.NewShape(int64(batch), 3, 224, 224), inBytes, ort.TensorElementDataTypeFloat16)
	if err != nil {
		t.Fatal(err)
	}
	defer inT.Destroy()
	outT, err := ort.NewCustomDataTensor(ort.NewShape(int64(batch), int64(classes)), outBytes, ort.TensorElementDataTypeFloat16)
	if err != nil {
		t.Fatal(err)
	}
	defer outT.Destroy()
	s, err := ort.NewDynamicAdvancedSession(path, []string{ins[0].Name}, []string{outs[0].Name}, nil)
	if err != nil {
		t.Fatalf("ONNX Runtime rejected %s: %v", filepath.Base(path), err)
	}
	defer s.Destroy()
	if err := s.Run([]ort.Value{inT}, []ort.Value{outT}); err != nil {
		t.Fatal(err)
	}
	out := make([]float32, batch*classes)
	for i := range out {
		out[i] = dtype.ToFloat32(binary.LittleEndian.Uint16(outBytes[2*i:]))
	}
	return out
}
