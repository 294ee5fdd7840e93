package fp16

import (
	"encoding/binary"
	"math"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"fastinfer/internal/dtype"
	"fastinfer/models/onnxpb"
)

// smallModel is a hand-built CNN covering what Convert rewrites:
//
//	x [N,2,4,4] → Conv(w raw_data, b float_data) → conv → Relu → relu
//	relu · Constant(value_float 0.5) + Cast(int32 one, to FLOAT)
//	→ GlobalAveragePool → Flatten → Gemm(fcw, fcb) → y [N,2]
//
// relu is a second graph output as well as an intermediate tensor, and conv
// has a value_info entry.
func smallModel() *onnxpb.ModelProto {
	g := &onnxpb.Graph{}
	g.FloatInit("w", []int64{3, 2, 1, 1}, func(i int) float32 { return float32(i+1) / 8 })
	g.FloatInit("fcw", []int64{2, 3}, func(i int) float32 { return float32(i) - 2.5 })
	g.Inits = append(g.Inits,
		&onnxpb.TensorProto{Name: proto.String("b"), Dims: []int64{3}, DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)),
			FloatData: []float32{0.25, -0.5, 1}},
		&onnxpb.TensorProto{Name: proto.String("fcb"), Dims: []int64{2}, DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)),
			FloatData: []float32{0.125, 2}},
		&onnxpb.TensorProto{Name: proto.String("one"), Dims: []int64{1}, DataType: proto.Int32(int32(onnxpb.TensorProto_INT32)),
			Int32Data: []int32{1}})
	g.Op("Conv", "conv", []string{"x", "w", "b"}, onnxpb.AttrInts("kernel_shape", 1, 1))
	g.Op("Relu", "relu", []string{"conv"})
	g.Nodes = append(g.Nodes, &onnxpb.NodeProto{Name: proto.String("k"), OpType: proto.String("Constant"), Output: []string{"k"},
		Attribute: []*onnxpb.AttributeProto{onnxpb.AttrFloat("value_float", 0.5)}})
	g.Op("Cast", "onef", []string{"one"}, onnxpb.AttrInt("to", int64(onnxpb.TensorProto_FLOAT)))
	g.Op("Mul", "mul", []string{"relu", "k"})
	g.Op("Add", "add", []string{"mul", "onef"})
	g.Op("GlobalAveragePool", "gap", []string{"add"})
	g.Op("Flatten", "flat", []string{"gap"}, onnxpb.AttrInt("axis", 1))
	g.Node("Gemm", "fc", "y", []string{"flat", "fcw", "fcb"}, onnxpb.AttrInt("transB", 1))
	n := onnxpb.DimParam("N")
	return &onnxpb.ModelProto{
		IrVersion:   proto.Int64(8),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(17)}},
		Graph: &onnxpb.GraphProto{
			Name:        proto.String("small"),
			Node:        g.Nodes,
			Initializer: g.Inits,
			Input:       []*onnxpb.ValueInfoProto{onnxpb.FloatTensor("x", n, onnxpb.Dim(2), onnxpb.Dim(4), onnxpb.Dim(4))},
			Output: []*onnxpb.ValueInfoProto{
				onnxpb.FloatTensor("y", n, onnxpb.Dim(2)),
				onnxpb.FloatTensor("relu", n, onnxpb.Dim(3), onnxpb.Dim(4), onnxpb.Dim(4)),
			},
			ValueInfo: []*onnxpb.ValueInfoProto{onnxpb.FloatTensor("conv", n, onnxpb.Dim(3), onnxpb.Dim(4), onnxpb.Dim(4))},
		},
	}
}

func elemType(v *onnxpb.ValueInfoProto) onnxpb.TensorProto_DataType {
	return onnxpb.TensorProto_DataType(v.GetType().GetTensorType().GetElemType())
}

func findNode(g *onnxpb.GraphProto, name string) *onnxpb.NodeProto {
	for _, n := range g.GetNode() {
		if n.GetName() == name {
			return n
		}
	}
	return nil
}

func findInit(g *onnxpb.GraphProto, name string) *onnxpb.TensorProto {
	for _, t := range g.GetInitializer() {
		if t.GetName() == name {
			return t
		}
	}
	return nil
}

// halves decodes a float16 raw_data tensor.
func halves(t *testing.T, tp *onnxpb.TensorProto) []uint16 {
	t.Helper()
	if tp.GetDataType() != int32(onnxpb.TensorProto_FLOAT16) || len(tp.FloatData) != 0 || len(tp.RawData)%2 != 0 {
		t.Fatalf("tensor %q: type %d, %d float_data, %d raw bytes; want float16 raw_data", tp.GetName(), tp.GetDataType(), len(tp.FloatData), len(tp.RawData))
	}
	h := make([]uint16, len(tp.RawData)/2)
	for i := range h {
		h[i] = binary.LittleEndian.Uint16(tp.RawData[2*i:])
	}
	return h
}

// checkSorted fails unless every node input is defined before the node
// (graph input, initializer or earlier output), no tensor is produced
// twice, and every graph output is defined.
func checkSorted(t *testing.T, g *onnxpb.GraphProto) {
	t.Helper()
	defined := map[string]bool{"": true}
	for _, v := range g.GetInput() {
		defined[v.GetName()] = true
	}
	for _, init := range g.GetInitializer() {
		defined[init.GetName()] = true
	}
	for _, n := range g.GetNode() {
		for _, in := range n.GetInput() {
			if !defined[in] {
				t.Errorf("node %s reads %q before it is defined", n.GetName(), in)
			}
		}
		for _, out := range n.GetOutput() {
			if defined[out] {
				t.Errorf("node %s redefines %q", n.GetName(), out)
			}
			defined[out] = true
		}
	}
	for _, v := range g.GetOutput() {
		if !defined[v.GetName()] {
			t.Errorf("graph output %q is never defined", v.GetName())
		}
	}
}

func TestConvertSmallGraph(t *testing.T) {
	tests := []struct {
		name      string
		opts      Options
		want      Report
		ioType    onnxpb.TensorProto_DataType
		firstOp   string   // first node's op type
		convIn    string   // the Conv's data input
		lastCasts []string // trailing Cast nodes' input → output
	}{
		{
			name:      "float32 I/O by default",
			want:      Report{Initializers: 4, Constants: 1, Values: 1, Casts: 1, CastsInserted: 3},
			ioType:    onnxpb.TensorProto_FLOAT,
			firstOp:   "Cast",
			convIn:    "x_fp16",
			lastCasts: []string{"y_fp16→y", "relu_fp16→relu"},
		},
		{
			name:    "float16 I/O",
			opts:    Options{Float16IO: true},
			want:    Report{Initializers: 4, Constants: 1, Values: 4, Casts: 1},
			ioType:  onnxpb.TensorProto_FLOAT16,
			firstOp: "Conv",
			convIn:  "x",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := smallModel()
			before := proto.Clone(in)
			out, r, err := Convert(in, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(in, before) {
				t.Error("Convert modified its input")
			}
			if r != tt.want {
				t.Errorf("report %+v, want %+v", r, tt.want)
			}
			g := out.GetGraph()
			checkSorted(t, g)

			// The interface keeps its names; its types follow the option.
			for _, v := range slices.Concat(g.GetInput(), g.GetOutput()) {
				if elemType(v) != tt.ioType {
					t.Errorf("graph I/O %s is %v, want %v", v.GetName(), elemType(v), tt.ioType)
				}
			}
			if got := []string{g.GetInput()[0].GetName(), g.GetOutput()[0].GetName(), g.GetOutput()[1].GetName()}; !slices.Equal(got, []string{"x", "y", "relu"}) {
				t.Errorf("graph I/O names %v", got)
			}
			if elemType(g.GetValueInfo()[0]) != onnxpb.TensorProto_FLOAT16 {
				t.Errorf("value_info conv is %v", elemType(g.GetValueInfo()[0]))
			}

			if op := g.GetNode()[0].GetOpType(); op != tt.firstOp {
				t.Errorf("first node is %s, want %s", op, tt.firstOp)
			}
			if got := findNode(g, "conv").GetInput()[0]; got != tt.convIn {
				t.Errorf("Conv reads %q, want %q", got, tt.convIn)
			}
			var casts []string
			for _, n := range g.GetNode()[len(g.GetNode())-len(tt.lastCasts):] {
				if n.GetOpType() != "Cast" || n.GetAttribute()[0].GetI() != int64(onnxpb.TensorProto_FLOAT) {
					t.Errorf("trailing node %s is %s %v, want a Cast to FLOAT", n.GetName(), n.GetOpType(), n.GetAttribute())
				}
				casts = append(casts, n.GetInput()[0]+"→"+n.GetOutput()[0])
			}
			if !slices.Equal(casts, tt.lastCasts) {
				t.Errorf("trailing casts %v, want %v", casts, tt.lastCasts)
			}
			if tt.opts.Float16IO {
				if n := findNode(g, "relu"); n.GetOutput()[0] != "relu" {
					t.Errorf("relu renamed to %q with float16 I/O", n.GetOutput()[0])
				}
			} else {
				first := g.GetNode()[0]
				if first.GetInput()[0] != "x" || first.GetOutput()[0] != "x_fp16" || first.GetAttribute()[0].GetI() != int64(onnxpb.TensorProto_FLOAT16) {
					t.Errorf("first node %v, want Cast x → x_fp16 to FLOAT16", first)
				}
				// relu is renamed where it is made and where it is read.
				if findNode(g, "relu").GetOutput()[0] != "relu_fp16" || findNode(g, "mul").GetInput()[0] != "relu_fp16" {
					t.Errorf("relu not renamed: %v, %v", findNode(g, "relu"), findNode(g, "mul"))
				}
			}

			// The Cast inside the graph now makes float16, and the Constant
			// is a float16 tensor of 0.5.
			if to := findNode(g, "onef").GetAttribute()[0].GetI(); to != int64(onnxpb.TensorProto_FLOAT16) {
				t.Errorf("Cast inside the graph targets %d", to)
			}
			k := findNode(g, "k").GetAttribute()[0]
			if k.GetName() != "value" || k.GetType() != onnxpb.AttributeProto_TENSOR || !slices.Equal(halves(t, k.GetT()), []uint16{0x3800}) || len(k.GetT().GetDims()) != 0 {
				t.Errorf("Constant attribute %v, want a float16 scalar 0.5", k)
			}

			wantInits := map[string][]uint16{
				"w":   {0x3000, 0x3400, 0x3600, 0x3800, 0x3900, 0x3a00}, // 1/8 .. 6/8
				"fcw": {0xc100, 0xbe00, 0xb800, 0x3800, 0x3e00, 0x4100}, // -2.5 .. 2.5
				"b":   {0x3400, 0xb800, 0x3c00},
				"fcb": {0x3000, 0x4000},
			}
			for name, want := range wantInits {
				if got := halves(t, findInit(g, name)); !slices.Equal(got, want) {
					t.Errorf("initializer %s = %#04x, want %#04x", name, got, want)
				}
			}
			if one := findInit(g, "one"); one.GetDataType() != int32(onnxpb.TensorProto_INT32) || !slices.Equal(one.Int32Data, []int32{1}) {
				t.Errorf("int32 initializer changed: %v", one)
			}
		})
	}
}

// floatModel is a graph whose only initializer holds vals, in raw_data or
// float_data.
func floatModel(vals []float32, raw bool) *onnxpb.ModelProto {
	t := &onnxpb.TensorProto{Name: proto.String("v"), Dims: []int64{int64(len(vals))}, DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT))}
	if raw {
		t.RawData = make([]byte, 4*len(vals))
		for i, v := range vals {
			binary.LittleEndian.PutUint32(t.RawData[4*i:], math.Float32bits(v))
		}
	} else {
		t.FloatData = vals
	}
	return &onnxpb.ModelProto{Graph: &onnxpb.GraphProto{
		Node:        []*onnxpb.NodeProto{{Name: proto.String("add"), OpType: proto.String("Add"), Input: []string{"x", "v"}, Output: []string{"y"}}},
		Initializer: []*onnxpb.TensorProto{t},
		Input:       []*onnxpb.ValueInfoProto{onnxpb.FloatTensor("x", onnxpb.Dim(int64(len(vals))))},
		Output:      []*onnxpb.ValueInfoProto{onnxpb.FloatTensor("y", onnxpb.Dim(int64(len(vals))))},
	}}
}

func TestConvertInitializerValues(t *testing.T) {
	nan := float32(math.NaN())
	vals := []float32{1, 65504, 70000, -70000, 1e-8, nan, 0x1p-24, 0x1p-20, 0.1, -2}
	want := []uint16{0x3c00, 0x7bff, 0x7bff, 0xfbff, 0x0000, 0x7e00, 0x0001, 0x0010, 0x2e66, 0xc000}
	for _, raw := range []bool{true, false} {
		name := "float_data"
		if raw {
			name = "raw_data"
		}
		t.Run(name, func(t *testing.T) {
			out, r, err := Convert(floatModel(vals, raw), Options{})
			if err != nil {
				t.Fatal(err)
			}
			got := halves(t, out.GetGraph().GetInitializer()[0])
			if !slices.Equal(got, want) {
				t.Errorf("float16 bits %#04x, want %#04x", got, want)
			}
			if !math.IsNaN(float64(dtype.ToFloat32(got[5]))) {
				t.Errorf("NaN became %#04x", got[5])
			}
			if r.Saturated != 2 || r.FlushedToZero != 1 || r.Initializers != 1 || r.CastsInserted != 2 {
				t.Errorf("report %+v; want 2 saturated, 1 flushed, 1 initializer, 2 casts", r)
			}
		})
	}
}

// Corner cases: keeping float32 I/O, and float32 made by attributes.
func TestConvertEdges(t *testing.T) {
	t.Run("output that is an input passes through", func(t *testing.T) {
		m := floatModel([]float32{1}, true)
		g := m.Graph
		g.Output = append(g.Output, onnxpb.FloatTensor("x", onnxpb.Dim(1)))
		out, r, err := Convert(m, Options{})
		if err != nil {
			t.Fatal(err)
		}
		checkSorted(t, out.Graph)
		if r.CastsInserted != 2 {
			t.Errorf("%d casts inserted, want 2 (x in, y out)", r.CastsInserted)
		}
	})
	t.Run("names already taken", func(t *testing.T) {
		m := floatModel([]float32{1}, true)
		g := m.Graph
		// A tensor already called x_fp16, and a node called x_to_fp16.
		g.Node = append(g.Node, &onnxpb.NodeProto{Name: proto.String("x_to_fp16"), OpType: proto.String("Relu"), Input: []string{"y"}, Output: []string{"x_fp16"}})
		g.Output = append(g.Output, onnxpb.FloatTensor("x_fp16", onnxpb.Dim(1)))
		out, _, err := Convert(m, Options{})
		if err != nil {
			t.Fatal(err)
		}
		checkSorted(t, out.Graph)
		first := out.Graph.Node[0]
		if first.GetName() != "x_to_fp16_2" || first.GetOutput()[0] != "x_fp16_2" {
			t.Errorf("input cast %s → %s, want x_to_fp16_2 → x_fp16_2", first.GetName(), first.GetOutput()[0])
		}
		// The old x_fp16 output is itself renamed, to x_fp16_fp16.
		last := out.Graph.Node[len(out.Graph.Node)-1]
		if last.GetInput()[0] != "x_fp16_fp16" || last.GetOutput()[0] != "x_fp16" {
			t.Errorf("output cast %v", last)
		}
	})
	t.Run("output straight from an initializer", func(t *testing.T) {
		m := floatModel([]float32{1}, true)
		m.Graph.Output = append(m.Graph.Output, onnxpb.FloatTensor("v", onnxpb.Dim(1)))
		out, _, err := Convert(m, Options{})
		if err != nil {
			t.Fatal(err)
		}
		checkSorted(t, out.Graph)
		if findInit(out.Graph, "v_fp16") == nil || findNode(out.Graph, "add").GetInput()[1] != "v_fp16" {
			t.Errorf("initializer v not renamed to v_fp16: %v", out.Graph)
		}
	})
	t.Run("unused input gets no cast", func(t *testing.T) {
		m := floatModel([]float32{1}, true)
		m.Graph.Input = append(m.Graph.Input, onnxpb.FloatTensor("unused", onnxpb.Dim(1)))
		_, r, err := Convert(m, Options{})
		if err != nil || r.CastsInserted != 2 {
			t.Errorf("%d casts inserted, err %v; want 2", r.CastsInserted, err)
		}
	})
	t.Run("ConstantOfShape default value", func(t *testing.T) {
		m := floatModel([]float32{1}, true)
		m.Graph.Node = append(m.Graph.Node, &onnxpb.NodeProto{Name: proto.String("zeros"), OpType: proto.String("ConstantOfShape"), Input: []string{"shape"}, Output: []string{"z"}})
		out, r, err := Convert(m, Options{})
		if err != nil {
			t.Fatal(err)
		}
		a := findNode(out.Graph, "zeros").GetAttribute()
		if len(a) != 1 || a[0].GetName() != "value" || !slices.Equal(halves(t, a[0].GetT()), []uint16{0}) || r.Constants != 1 {
			t.Errorf("ConstantOfShape attributes %v, constants %d; want a float16 zero", a, r.Constants)
		}
	})
	t.Run("dtype", func(t *testing.T) {
		m := floatModel([]float32{1}, true)
		m.Graph.Node = append(m.Graph.Node,
			&onnxpb.NodeProto{Name: proto.String("noise"), OpType: proto.String("RandomNormal"), Output: []string{"noise"},
				Attribute: []*onnxpb.AttributeProto{onnxpb.AttrInts("shape", 1)}},
			&onnxpb.NodeProto{Name: proto.String("eye"), OpType: proto.String("EyeLike"), Input: []string{"y"}, Output: []string{"eye"},
				Attribute: []*onnxpb.AttributeProto{onnxpb.AttrInt("dtype", int64(onnxpb.TensorProto_FLOAT))}},
			&onnxpb.NodeProto{Name: proto.String("ieye"), OpType: proto.String("EyeLike"), Input: []string{"y"}, Output: []string{"ieye"},
				Attribute: []*onnxpb.AttributeProto{onnxpb.AttrInt("dtype", int64(onnxpb.TensorProto_INT64))}})
		out, r, err := Convert(m, Options{})
		if err != nil {
			t.Fatal(err)
		}
		dtype := func(node string) int64 {
			for _, a := range findNode(out.Graph, node).GetAttribute() {
				if a.GetName() == "dtype" {
					return a.GetI()
				}
			}
			return -1
		}
		f16 := int64(onnxpb.TensorProto_FLOAT16)
		if dtype("noise") != f16 || dtype("eye") != f16 || dtype("ieye") != int64(onnxpb.TensorProto_INT64) || r.Casts != 2 {
			t.Errorf("dtypes %d %d %d, %d retargeted; want %d %d %d, 2", dtype("noise"), dtype("eye"), dtype("ieye"), r.Casts, f16, f16, onnxpb.TensorProto_INT64)
		}
	})
	t.Run("value_floats", func(t *testing.T) {
		m := floatModel([]float32{1}, true)
		m.Graph.Node = append(m.Graph.Node, &onnxpb.NodeProto{Name: proto.String("c"), OpType: proto.String("Constant"), Output: []string{"c"},
			Attribute: []*onnxpb.AttributeProto{{Name: proto.String("value_floats"), Type: onnxpb.AttributeProto_FLOATS.Enum(), Floats: []float32{2, -1e6}}}})
		out, r, err := Convert(m, Options{})
		if err != nil {
			t.Fatal(err)
		}
		v := findNode(out.Graph, "c").GetAttribute()[0].GetT()
		if !slices.Equal(halves(t, v), []uint16{0x4000, 0xfbff}) || !slices.Equal(v.GetDims(), []int64{2}) || r.Saturated != 1 {
			t.Errorf("value_floats became %v (saturated %d)", v, r.Saturated)
		}
	})
}

func TestConvertRefuses(t *testing.T) {
	tests := []struct {
		name   string
		modify func(m *onnxpb.ModelProto)
		want   string
	}{
		{"no graph", func(m *onnxpb.ModelProto) { m.Graph = nil }, "no graph"},
		{"external data", func(m *onnxpb.ModelProto) {
			v := m.Graph.Initializer[0]
			v.RawData = nil
			v.DataLocation = onnxpb.TensorProto_EXTERNAL.Enum()
			v.ExternalData = []*onnxpb.StringStringEntryProto{{Key: proto.String("location"), Value: proto.String("weights.bin")}}
		}, `initializer "v" is stored as external data`},
		{"short raw_data", func(m *onnxpb.ModelProto) { m.Graph.Initializer[0].RawData = []byte{1, 2, 3} }, "3 bytes of raw_data for 1 float32"},
		{"Resize", func(m *onnxpb.ModelProto) { m.Graph.Node[0].OpType = proto.String("Resize") }, `node "add": cannot convert Resize: its scales input must stay float32`},
		{"custom domain", func(m *onnxpb.ModelProto) { m.Graph.Node[0].Domain = proto.String("com.microsoft") }, `domain "com.microsoft"`},
		{"subgraph", func(m *onnxpb.ModelProto) {
			m.Graph.Node[0].OpType = proto.String("If")
			m.Graph.Node[0].Attribute = []*onnxpb.AttributeProto{{Name: proto.String("then_branch"), Type: onnxpb.AttributeProto_GRAPH.Enum(), G: &onnxpb.GraphProto{}}}
		}, "control flow is not supported"},
		{"sequence output", func(m *onnxpb.ModelProto) {
			m.Graph.Output[0].Type = &onnxpb.TypeProto{Value: &onnxpb.TypeProto_SequenceType{SequenceType: &onnxpb.TypeProto_Sequence{
				ElemType: onnxpb.FloatTensor("", onnxpb.Dim(1)).Type}}}
		}, `"y" is not a plain tensor`},
		{"output from nowhere", func(m *onnxpb.ModelProto) { m.Graph.Output[0].Name = proto.String("nowhere") }, `"nowhere" is produced by no node`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := floatModel([]float32{1}, true)
			tt.modify(m)
			out, _, err := Convert(m, Options{})
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "fp16: ") || out != nil {
				t.Errorf("Convert = %v, %v; want an error containing %q", out != nil, err, tt.want)
			}
		})
	}
}
