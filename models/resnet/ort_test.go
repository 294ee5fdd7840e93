package resnet

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	ort "github.com/yalue/onnxruntime_go"
)

// TestONNXRuntime loads built models in the real ONNX Runtime: the only way
// to know the graph is valid, not merely well-formed protobuf.
func TestONNXRuntime(t *testing.T) {
	lib := os.Getenv("ONNXRUNTIME_LIB")
	if lib == "" {
		if testing.Short() {
			t.Skip("ONNXRUNTIME_LIB is not set")
		}
		// Failing rather than skipping keeps a plain `go test ./...` from
		// passing without ever having run the model.
		t.Fatal("ONNXRUNTIME_LIB is not set: run the tests via `make test`, which installs ONNX Runtime and sets it (or pass -short)")
	}
	ort.SetSharedLibraryPath(lib)
	if err := ort.InitializeEnvironment(); err != nil {
		t.Fatalf("initialize ONNX Runtime from %s: %v", lib, err)
	}
	t.Cleanup(func() {
		if err := ort.DestroyEnvironment(); err != nil {
			t.Errorf("destroy ONNX Runtime environment: %v", err)
		}
	})

	tests := []struct {
		arch  string
		batch int64
		slow  bool
	}{
		{"resnet18", 2, false},
		{"resnet50", 1, true},
		{"head", 3, false},
	}
	for _, tc := range tests {
		t.Run(tc.arch, func(t *testing.T) {
			if tc.slow && testing.Short() {
				t.Skip("slow; runs without -short")
			}
			runModel(t, tc.arch, tc.batch)
		})
	}
}

func runModel(t *testing.T, arch string, batch int64) {
	const classes = 1000
	m, err := Build(arch, classes, 42)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	v, err := WriteModelDir(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, strconv.Itoa(v), "model.onnx")

	ins, outs, err := ort.GetInputOutputInfo(path)
	if err != nil {
		t.Fatalf("ONNX Runtime rejected %s: %v", arch, err)
	}
	if len(ins) != 1 || ins[0].Name != InputName || !slices.Equal(ins[0].Dimensions, ort.NewShape(-1, 3, 224, 224)) {
		t.Errorf("inputs = %v, want %s [-1 3 224 224]", ins, InputName)
	}
	if len(outs) != 1 || outs[0].Name != OutputName || !slices.Equal(outs[0].Dimensions, ort.NewShape(-1, classes)) {
		t.Errorf("outputs = %v, want %s [-1 %d]", outs, OutputName, classes)
	}

	sess, err := ort.NewDynamicAdvancedSession(path, []string{InputName}, []string{OutputName}, nil)
	if err != nil {
		t.Fatalf("create session: %v", err)
	}
	defer sess.Destroy()

	// Standard-normal pixels look like a normalised image to the network.
	rng := rand.New(rand.NewPCG(1, 2))
	pixels := make([]float32, batch*3*224*224)
	for i := range pixels {
		pixels[i] = float32(rng.NormFloat64())
	}
	input, err := ort.NewTensor(ort.NewShape(batch, 3, 224, 224), pixels)
	if err != nil {
		t.Fatal(err)
	}
	defer input.Destroy()

	outputs := []ort.Value{nil} // let ONNX Runtime allocate it
	if err := sess.Run([]ort.Value{input}, outputs); err != nil {
		t.Fatalf("run: %v", err)
	}
	defer outputs[0].Destroy()
	logits, ok := outputs[0].(*ort.Tensor[float32])
	if !ok {
		t.Fatalf("output is %T, want *Tensor[float32]", outputs[0])
	}
	if got := logits.GetShape(); !slices.Equal(got, ort.NewShape(batch, classes)) {
		t.Fatalf("output shape = %v, want [%d %d]", got, batch, classes)
	}

	data := logits.GetData()
	for r := range batch {
		row := data[r*classes : (r+1)*classes]
		lo, hi := slices.Min(row), slices.Max(row)
		for i, x := range row {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				t.Fatalf("row %d logit %d = %v", r, i, x)
			}
		}
		if lo < -50 || hi > 50 {
			t.Errorf("row %d logits in [%g, %g], want within ±50", r, lo, hi)
		}
		top := maxSoftmax(row)
		t.Logf("row %d: logits in [%.3f, %.3f], top softmax score %.4f", r, lo, hi, top)
		if top <= 1.0/classes || top >= 0.99 {
			t.Errorf("row %d top softmax score = %g, want in (1/%d, 0.99)", r, top, classes)
		}
	}
	if batch > 1 && slices.Equal(data[:classes], data[classes:2*classes]) {
		t.Error("different inputs gave identical logits")
	}
}

// maxSoftmax returns the largest softmax probability of logits.
func maxSoftmax(logits []float32) float64 {
	hi := float64(slices.Max(logits))
	var sum float64
	for _, x := range logits {
		sum += math.Exp(float64(x) - hi)
	}
	return 1 / sum // exp(hi-hi) / sum
}
