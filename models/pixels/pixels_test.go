package pixels

import (
	"math"
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"fastinfer/internal/testutil"
	"fastinfer/models/onnxpb"
	"fastinfer/runtime"
)

// flatModel is y = Flatten(x) for x of the given shape: its output is the
// normalised input, checkable value by value.
func flatModel(shape ...int64) *onnxpb.ModelProto {
	dims := []*onnxpb.TensorShapeProto_Dimension{onnxpb.DimParam("N")}
	n := int64(1)
	for _, d := range shape {
		dims = append(dims, onnxpb.Dim(d))
		n *= d
	}
	g := &onnxpb.Graph{}
	g.Node("Flatten", "flat", "y", []string{"x"})
	return &onnxpb.ModelProto{
		IrVersion:   proto.Int64(8),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(17)}},
		Graph: &onnxpb.GraphProto{
			Name: proto.String("flat"), Node: g.Nodes,
			Input:  []*onnxpb.ValueInfoProto{onnxpb.FloatTensor("x", dims...)},
			Output: []*onnxpb.ValueInfoProto{onnxpb.FloatTensor("y", onnxpb.DimParam("N"), onnxpb.Dim(n))},
		},
	}
}

// The embedded normalisation gives what vision computes,
// (v·scale − mean[c]) / std[c], for every channel in both layouts, and
// the model keeps its input's name and shape with UINT8 elements.
func TestEmbedNormalises(t *testing.T) {
	lib := os.Getenv(runtime.LibEnv)
	if lib == "" {
		t.Skip(runtime.LibEnv + " is not set")
	}
	env, err := runtime.Open(runtime.Config{Lib: lib, Provider: runtime.ProviderCPU})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	mean, std := []float32{0.485, 0.456, 0.406}, []float32{0.229, 0.224, 0.225}
	for _, tt := range []struct {
		layout string
		shape  []int64
		ch     func(i int) int // channel of element i
	}{
		{"nchw", []int64{3, 2, 2}, func(i int) int { return i / 4 }},
		{"nhwc", []int64{2, 2, 3}, func(i int) int { return i % 3 }},
	} {
		t.Run(tt.layout, func(t *testing.T) {
			m, err := Embed(flatModel(tt.shape...), Options{Scale: 1.0 / 255, Mean: mean, Std: std})
			if err != nil {
				t.Fatal(err)
			}
			path := testutil.WriteModel(t, t.TempDir(), "model.onnx", m)
			s, err := env.NewSession(path, runtime.SessionOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if in := s.Input(); in.Name != "x" || in.DataType != "UINT8" || len(in.Shape) != 4 {
				t.Fatalf("input %+v; want x, UINT8, 4 dimensions", in)
			}
			const rows = 2
			px := make([]float32, rows*12)
			for i := range px {
				px[i] = float32((i * 53) % 256)
			}
			px[0], px[1] = 0, 255
			got := make([]float32, len(px))
			if err := s.Run(px, rows, got); err != nil {
				t.Fatal(err)
			}
			for i, v := range px {
				c := tt.ch(i % 12)
				want := (v/255 - mean[c]) / std[c]
				if d := math.Abs(float64(got[i] - want)); d > 1e-5 {
					t.Fatalf("element %d (pixel %v, channel %d) = %v, want %v", i, v, c, got[i], want)
				}
			}
		})
	}
}

func TestEmbedRefuses(t *testing.T) {
	two := flatModel(3, 2, 2)
	two.Graph.Input = append(two.Graph.Input, onnxpb.FloatTensor("z", onnxpb.Dim(1)))
	gray := flatModel(1, 4, 4)
	for _, tt := range []struct {
		name string
		m    *onnxpb.ModelProto
		o    Options
		want string
	}{
		{"two inputs", two, Options{Scale: 1}, "has 2 inputs; name one"},
		{"unknown input", flatModel(3, 2, 2), Options{Input: "q", Scale: 1}, `no input named "q"`},
		{"not an image", flatModel(12), Options{Scale: 1}, "has 2 dimensions"},
		{"mean count", flatModel(3, 2, 2), Options{Scale: 1, Mean: []float32{1, 2}}, "2 mean values for 3 channels"},
		{"std zero", gray, Options{Scale: 1, Std: []float32{0}}, "std must not contain 0"},
		{"scale zero", gray, Options{}, "scale must not be 0"},
		{"layout", gray, Options{Scale: 1, Layout: "chw"}, `layout "chw"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Embed(tt.m, tt.o); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err %v, want %q", err, tt.want)
			}
		})
	}
	// A UINT8 input is not converted twice.
	m, err := Embed(gray, Options{Scale: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Embed(m, Options{Scale: 1}); err == nil || !strings.Contains(err.Error(), "is UINT8, not float32") {
		t.Errorf("second Embed: %v", err)
	}
	if gray.Graph.Input[0].GetType().GetTensorType().GetElemType() != int32(onnxpb.TensorProto_FLOAT) {
		t.Error("Embed changed its argument")
	}
}
