package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"fastinfer/internal/testutil"
	"fastinfer/models"
	"fastinfer/models/onnxpb"
	"fastinfer/runtime"
	"fastinfer/train/data"
)

// The float16 version of the default model, made by `fastinfer models
// convert --fp16`, names Fashion-MNIST's 10,000 test images as the float32
// one does, on ONNX Runtime's CPU provider.
func TestFP16FashionAgreement(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 10,000 images through two models; skipped in -short")
	}
	src := filepath.Join("..", "..", "models", "fashion-resnet")
	b, err := os.ReadFile(filepath.Join(src, models.ConfigFile))
	if err != nil {
		t.Fatalf("the default model is missing (%v): run `make train`", err)
	}
	cfg, err := models.ParseConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Preprocess
	// For 28×28 gray images the resize and crop are identities, so the
	// served input is the pixel lookup of vision.New: (v·scale − mean)/std.
	if p.Color != "gray" || p.Crop != 28 || (p.Resize != 0 && p.Resize != 28) || len(p.Mean) != 1 || len(p.Std) != 1 {
		t.Fatalf("config.yaml preprocess %+v; this test expects 28×28 gray with one mean and std", *p)
	}
	var lut [256]float32
	for v := range lut {
		lut[v] = (float32(v)*p.Scale - p.Mean[0]) / p.Std[0]
	}
	var card struct {
		Accuracy struct{ Test float64 } `json:"accuracy"`
	}
	if b, err := os.ReadFile(filepath.Join(src, "3", "card.json")); err != nil || json.Unmarshal(b, &card) != nil {
		t.Fatalf("card.json: %v", err)
	}

	model32 := filepath.Join(src, "3", models.ModelFile)
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	if code := run([]string{"models", "convert", "--fp16", model32, out}, &stdout, &stderr, func(string) string { return "" }); code != 0 {
		t.Fatalf("models convert: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	t.Log(strings.TrimSpace(stdout.String()))
	model16 := filepath.Join(out, models.ModelFile)

	test, err := data.FashionMNIST("", "t10k")
	if err != nil {
		t.Fatal(err)
	}
	// The set holds v/255 correctly rounded, so v comes back exactly.
	x := make([]float32, len(test.X))
	for i, u := range test.X {
		x[i] = lut[int(math.Round(float64(u)*255))]
	}

	env := cpuEnv(t)
	logits := func(path string) []float32 {
		t.Helper()
		s, err := env.NewSession(path, runtime.SessionOptions{Kind: runtime.KindCPU})
		if err != nil {
			t.Fatalf("ONNX Runtime rejected %s: %v", path, err)
		}
		defer s.Close()
		if s.InputLen() != test.ImageLen() || s.OutputLen() != len(test.Classes) {
			t.Fatalf("%s: input %d and output %d values per row; want %d and %d", path, s.InputLen(), s.OutputLen(), test.ImageLen(), len(test.Classes))
		}
		const batch = 256
		out := make([]float32, test.Len()*s.OutputLen())
		for lo := 0; lo < test.Len(); lo += batch {
			n := min(batch, test.Len()-lo)
			if err := s.Run(x[lo*s.InputLen():], n, out[lo*s.OutputLen():]); err != nil {
				t.Fatal(err)
			}
		}
		return out
	}
	l32, l16 := logits(model32), logits(model16)

	classes := len(test.Classes)
	var agree, right32, right16 int
	var maxDiff float64
	for i, y := range test.Y {
		a, b := l32[i*classes:(i+1)*classes], l16[i*classes:(i+1)*classes]
		c32, c16 := slices.Index(a, slices.Max(a)), slices.Index(b, slices.Max(b))
		if c32 == c16 {
			agree++
		}
		if c32 == y {
			right32++
		}
		if c16 == y {
			right16++
		}
		pa, pb := testutil.Softmax(a), testutil.Softmax(b)
		for k := range pa {
			maxDiff = max(maxDiff, math.Abs(pa[k]-pb[k]))
		}
	}
	n := float64(test.Len())
	agreement, acc32, acc16 := float64(agree)/n, float64(right32)/n, float64(right16)/n
	t.Logf("%d images: top-1 agreement %.2f %% (%d differ); accuracy float32 %.2f %%, float16 %.2f %% (card: %.2f %%); max |Δsoftmax| %.5f",
		test.Len(), 100*agreement, test.Len()-agree, 100*acc32, 100*acc16, 100*card.Accuracy.Test, maxDiff)
	if agreement < 0.995 {
		t.Errorf("top-1 agreement %.4f, want ≥ 0.995", agreement)
	}
	// The float32 run reproducing the card's accuracy (scored by the
	// trainer) shows the preprocessing here is the model's.
	if math.Abs(acc32-card.Accuracy.Test) > 0.002 {
		t.Errorf("float32 accuracy %.4f, card says %.4f: is the preprocessing right?", acc32, card.Accuracy.Test)
	}
}

// tinyModel writes a one-node ONNX model (y = x + w) to dir/name.
func tinyModel(t *testing.T, dir, name string) string {
	t.Helper()
	g := &onnxpb.Graph{}
	g.FloatInit("w", []int64{2}, func(i int) float32 { return float32(i) + 0.5 })
	g.Node("Add", "add", "y", []string{"x", "w"})
	m := &onnxpb.ModelProto{
		IrVersion:   proto.Int64(8),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(17)}},
		Graph: &onnxpb.GraphProto{
			Name: proto.String("tiny"), Node: g.Nodes, Initializer: g.Inits,
			Input:  []*onnxpb.ValueInfoProto{onnxpb.FloatTensor("x", onnxpb.Dim(2))},
			Output: []*onnxpb.ValueInfoProto{onnxpb.FloatTensor("y", onnxpb.Dim(2))},
		},
	}
	return testutil.WriteModel(t, dir, name, m)
}

func TestModelsConvertArguments(t *testing.T) {
	dir := t.TempDir()
	in := tinyModel(t, dir, "model.onnx")
	junk := filepath.Join(dir, "junk.onnx")
	os.WriteFile(junk, []byte("not a model"), 0o644)
	os.Symlink(in, filepath.Join(dir, "link.onnx"))
	tests := []struct {
		name    string
		args    []string
		code    int
		out     string
		written string // file that must hold a float16 model afterwards
	}{
		{"no paths", []string{"--fp16"}, 2, "usage: fastinfer models convert", ""},
		{"one path", []string{"--fp16", in}, 2, "usage", ""},
		{"three paths", []string{"--fp16", in, "a.onnx", "b.onnx"}, 2, "usage", ""},
		{"no conversion", []string{in, filepath.Join(dir, "out.onnx")}, 2, "nothing to do without --fp16", ""},
		{"same file", []string{"--fp16", in, in}, 1, "refusing to overwrite", ""},
		{"pixels, not an image", []string{"--pixels", in, filepath.Join(dir, "px.onnx")}, 1, "input x has 1 dimensions; an image input has 4", ""},
		{"pixels, missing config", []string{"--pixels", "--config", filepath.Join(dir, "nope.yaml"), in, filepath.Join(dir, "px.onnx")}, 1, "nope.yaml: no such file", ""},
		{"folder of the input", []string{"--fp16", in, dir}, 1, "refusing to overwrite", ""},
		{"symlink to the input", []string{"--fp16", in, filepath.Join(dir, "link.onnx")}, 1, "refusing to overwrite", ""},
		{"missing input", []string{"--fp16", filepath.Join(dir, "nope.onnx"), filepath.Join(dir, "o.onnx")}, 1, "no such file", ""},
		{"not ONNX", []string{"--fp16", junk, filepath.Join(dir, "o.onnx")}, 1, "not an ONNX model", ""},
		{"file", []string{"--fp16", in, filepath.Join(dir, "half.onnx")}, 0, "1 initializers, 0 constants, 0 values, 0 casts retargeted, 2 casts inserted, 0 saturated, 0 flushed to zero",
			filepath.Join(dir, "half.onnx")},
		{"new folder, flags last", []string{in, filepath.Join(dir, "v2"), "--fp16", "--fp16-io"}, 0, "float16 inputs and outputs",
			filepath.Join(dir, "v2", models.ModelFile)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			code := run(append([]string{"models", "convert"}, tt.args...), &out, &out, func(string) string { return "" })
			if code != tt.code || !strings.Contains(out.String(), tt.out) {
				t.Fatalf("exit %d, output %q; want %d and %q", code, out.String(), tt.code, tt.out)
			}
			if tt.written == "" {
				return
			}
			b, err := os.ReadFile(tt.written)
			if err != nil {
				t.Fatal(err)
			}
			var m onnxpb.ModelProto
			if err := proto.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			if dt := m.GetGraph().GetInitializer()[0].GetDataType(); dt != int32(onnxpb.TensorProto_FLOAT16) {
				t.Errorf("written initializer has type %d, want FLOAT16", dt)
			}
		})
	}
	// The input is untouched.
	var m onnxpb.ModelProto
	if b, err := os.ReadFile(in); err != nil || proto.Unmarshal(b, &m) != nil || m.GetGraph().GetInitializer()[0].GetDataType() != int32(onnxpb.TensorProto_FLOAT) {
		t.Errorf("input model changed: %v", err)
	}
}

// --pixels and --fp16 together: the pixel input stays UINT8, the Cast
// that reads it targets float16, and the normalisation comes from
// --config.
func TestModelsConvertPixelsFP16(t *testing.T) {
	dir := t.TempDir()
	g := &onnxpb.Graph{}
	g.FloatInit("w", []int64{1, 3, 2, 2}, func(i int) float32 { return float32(i) })
	g.Node("Add", "add", "y", []string{"x", "w"})
	in := testutil.WriteModel(t, dir, "img.onnx", &onnxpb.ModelProto{
		IrVersion:   proto.Int64(8),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(17)}},
		Graph: &onnxpb.GraphProto{
			Name: proto.String("img"), Node: g.Nodes, Initializer: g.Inits,
			Input:  []*onnxpb.ValueInfoProto{onnxpb.FloatTensor("x", onnxpb.DimParam("N"), onnxpb.Dim(3), onnxpb.Dim(2), onnxpb.Dim(2))},
			Output: []*onnxpb.ValueInfoProto{onnxpb.FloatTensor("y", onnxpb.DimParam("N"), onnxpb.Dim(3), onnxpb.Dim(2), onnxpb.Dim(2))},
		},
	})
	cfg := filepath.Join(dir, "c.yaml")
	os.WriteFile(cfg, []byte("preprocess: {scale: 2, mean: [1], std: [4]}\n"), 0o644)
	out := filepath.Join(dir, "px16.onnx")
	var stdout bytes.Buffer
	if code := run([]string{"models", "convert", "--pixels", "--fp16", "--config", cfg, in, out}, &stdout, &stdout, func(string) string { return "" }); code != 0 {
		t.Fatalf("exit %d: %s", code, stdout.String())
	}
	for _, want := range []string{"c.yaml's normalisation in the graph (scale 2, mean [1], std [4])", "float16, float32 inputs and outputs"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output %q lacks %q", stdout.String(), want)
		}
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if dt := m.GetGraph().GetInput()[0].GetType().GetTensorType().GetElemType(); dt != int32(onnxpb.TensorProto_UINT8) {
		t.Errorf("input type %d, want UINT8", dt)
	}
	cast := m.GetGraph().GetNode()[0]
	if cast.GetOpType() != "Cast" || cast.GetAttribute()[0].GetI() != int64(onnxpb.TensorProto_FLOAT16) {
		t.Errorf("first node %s to %d; want a Cast to FLOAT16", cast.GetOpType(), cast.GetAttribute()[0].GetI())
	}
	// And ONNX Runtime runs it: (v·2 − 1)/4 + w, in float16.
	s, err := cpuEnv(t).NewSession(out, runtime.SessionOptions{Kind: runtime.KindCPU})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	px := []float32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}
	got := make([]float32, 12)
	if err := s.Run(px, 1, got); err != nil {
		t.Fatal(err)
	}
	for i, v := range px {
		if want := (v*2-1)/4 + float32(i); got[i] != want {
			t.Errorf("element %d = %v, want %v", i, got[i], want)
		}
	}
}
