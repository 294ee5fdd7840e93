package runtime

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"fastinfer/internal/dtype"
	"fastinfer/internal/testutil"
	"fastinfer/models/fp16"
	"fastinfer/models/onnxpb"
)

// tinyTyped is the tiny model with its input (and, for FP16, output) of
// another datatype: FP16 is models/fp16's conversion with float16 I/O;
// UINT8 and INT64 cast their input to float before the Gemm.
func tinyTyped(t *testing.T, dt string) string {
	return testutil.ModelFile(t, "tiny-"+dt, func() (*onnxpb.ModelProto, error) {
		m := tinyModelProto()
		if dt == "FP16" {
			h, _, err := fp16.Convert(m, fp16.Options{Float16IO: true})
			return h, err
		}
		elem := map[string]onnxpb.TensorProto_DataType{"UINT8": onnxpb.TensorProto_UINT8, "INT64": onnxpb.TensorProto_INT64}[dt]
		g := m.Graph
		g.Input[0].Type.GetTensorType().ElemType = proto.Int32(int32(elem))
		cast := &onnxpb.NodeProto{
			Name: proto.String("cast"), OpType: proto.String("Cast"), Input: []string{"x"}, Output: []string{"xf"},
			Attribute: []*onnxpb.AttributeProto{{Name: proto.String("to"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(int64(onnxpb.TensorProto_FLOAT))}},
		}
		g.Node[0].Input[0] = "xf"
		g.Node = append([]*onnxpb.NodeProto{cast}, g.Node...)
		return m, nil
	})
}

// A FP16 or UINT8 input is fed in its own datatype, and a FP16 output
// read back as float32, through a Binding, Buckets, a staged slot and
// Session.Run alike. Small integers keep every value exact in float16.
func TestSessionInputDatatypes(t *testing.T) {
	e := env(t)
	for _, tt := range []struct {
		dt, out  string
		rowBytes int
	}{
		{"FP32", "FP32", 4 * tinyIn},
		{"FP16", "FP16", 2 * tinyIn},
		{"UINT8", "FP32", tinyIn},
	} {
		t.Run(tt.dt, func(t *testing.T) {
			path := tinyModel(t)
			if tt.dt != "FP32" {
				path = tinyTyped(t, tt.dt)
			}
			s, err := e.NewSession(path, SessionOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if s.Input().DataType != tt.dt || s.Output().DataType != tt.out || s.InputBytes() != tt.rowBytes {
				t.Fatalf("input %s output %s, %d bytes a row; want %s, %s, %d", s.Input().DataType, s.Output().DataType, s.InputBytes(), tt.dt, tt.out, tt.rowBytes)
			}
			const rows = 3
			x := make([]float32, rows*tinyIn)
			for i := range x {
				x[i] = float32((i*7 + 3) % 10)
			}
			want := tinyExpect(x)
			check := func(what string, got []float32) {
				t.Helper()
				for i := range want {
					if got[i] != want[i] {
						t.Fatalf("%s: output %d = %v, want %v", what, i, got[i], want[i])
					}
				}
			}

			b, err := s.NewStagedBinding(4)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if len(b.Input(rows)) != rows*tt.rowBytes {
				t.Fatalf("Input(%d) holds %d bytes, want %d", rows, len(b.Input(rows)), rows*tt.rowBytes)
			}
			dtype.Encode(tt.dt, b.Input(rows), x)
			if err := b.Run(rows); err != nil {
				t.Fatal(err)
			}
			check("binding", b.Output(rows))
			clear(b.Output(4))
			dtype.Encode(tt.dt, b.InputSlot(1, rows), x)
			clear(b.Input(rows))
			if err := b.RunSlot(1, rows); err != nil {
				t.Fatal(err)
			}
			check("staged slot 1", b.Output(rows))

			var sessions []*Session
			for range 2 {
				s2, err := e.NewSession(path, SessionOptions{})
				if err != nil {
					t.Fatal(err)
				}
				defer s2.Close()
				sessions = append(sessions, s2)
			}
			bk, err := NewBuckets(sessions, []int{2, 4})
			if err != nil {
				t.Fatal(err)
			}
			defer bk.Close()
			for i := range bk.Input(4) {
				bk.Input(4)[i] = 0xff // stale bytes the padding must clear
			}
			dtype.Encode(tt.dt, bk.Input(rows), x)
			if err := bk.Run(rows); err != nil {
				t.Fatal(err)
			}
			check("buckets", bk.Output(rows))

			got := make([]float32, rows*tinyOut)
			if err := s.Run(x, rows, got); err != nil {
				t.Fatal(err)
			}
			check("Session.Run", got)
		})
	}
}

// Buckets refuse sessions whose datatypes differ, and a session refuses
// an input datatype it does not serve, naming those it does.
func TestSessionDatatypeRefusals(t *testing.T) {
	e := env(t)
	s32, err := e.NewSession(tinyModel(t), SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s32.Close()
	s16, err := e.NewSession(tinyTyped(t, "FP16"), SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s16.Close()
	if _, err := NewBuckets([]*Session{s32, s16}, []int{1, 2}); err == nil || !strings.Contains(err.Error(), "FP16") {
		t.Errorf("buckets over FP32 and FP16 sessions: %v", err)
	}
	_, err = e.NewSession(tinyTyped(t, "INT64"), SessionOptions{})
	if err == nil || !strings.Contains(err.Error(), "input x is INT64; fastinfer serves FP32, FP16 or UINT8 inputs") {
		t.Errorf("INT64 input: %v", err)
	}
	// An INT64 argmax output first, the scores second: the error names
	// the one to serve.
	argmax := testutil.ModelFile(t, "tiny-argmax", func() (*onnxpb.ModelProto, error) {
		m := tinyModelProto()
		g := m.Graph
		g.Node = append(g.Node, &onnxpb.NodeProto{
			Name: proto.String("argmax"), OpType: proto.String("ArgMax"), Input: []string{"y"}, Output: []string{"label"},
			Attribute: []*onnxpb.AttributeProto{{Name: proto.String("axis"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(1)}},
		})
		label := floatValueInfo("label", &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "N"}},
			&onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: 1}})
		label.Type.GetTensorType().ElemType = proto.Int32(int32(onnxpb.TensorProto_INT64))
		g.Output = append([]*onnxpb.ValueInfoProto{label}, g.Output...)
		return m, nil
	})
	_, err = e.NewSession(argmax, SessionOptions{})
	if err == nil || !strings.Contains(err.Error(), "output label is INT64; fastinfer serves FP32 or FP16 outputs (output y is FP32: name it in config.yaml, output: y)") {
		t.Errorf("argmax output first: %v", err)
	}
	if s, err := e.NewSession(argmax, SessionOptions{Output: "y"}); err != nil {
		t.Errorf("with the scores named: %v", err)
	} else {
		s.Close()
	}
}

// A FP16 session's pinned buffers are half the bytes of a FP32 one's:
// the copy to the GPU is what FP16 inputs are for.
func TestPinnedBuffersInInputDatatype(t *testing.T) {
	p := &fakePinned{}
	useFakePinned(t, p)
	s, err := env(t).NewSession(tinyTyped(t, "FP16"), SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.device, s.pin = 3, true
	b, err := s.NewBinding(4)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if len(p.sizes) != 2 || p.sizes[0] != 4*2*tinyIn || p.sizes[1] != 4*2*tinyOut {
		t.Fatalf("pinned allocations of %v bytes; want %d and %d", p.sizes, 4*2*tinyIn, 4*2*tinyOut)
	}
	x := []float32{1, 2, 3, 4}
	dtype.Encode("FP16", b.Input(1), x)
	if err := b.Run(1); err != nil {
		t.Fatal(err)
	}
	if got, want := b.Output(1), tinyExpect(x); got[0] != want[0] || got[2] != want[2] {
		t.Errorf("output %v, want %v", got, want)
	}
}
