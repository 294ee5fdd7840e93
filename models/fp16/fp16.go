// Package fp16 converts ONNX models from float32 to float16 (IEEE 754 half
// precision). On a GPU most layers of a CNN are bound by memory traffic,
// which float16 weights and activations halve; tensor cores also want them.
//
// Convert rewrites every float32 initializer, Constant tensor, value type
// and Cast target to float16 and, by default, keeps the graph's inputs and
// outputs float32 behind Cast nodes, so callers feed and read the same
// tensors as before. It handles the operators of CNNs like ResNet and
// refuses, with an error naming the node, the models it knows it would
// break: external weights, subgraphs, custom domains, quantized models and
// operators whose inputs must stay float32. Float64 tensors are left alone.
package fp16

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"

	"google.golang.org/protobuf/proto"

	"fastinfer/internal/dtype"
	"fastinfer/models/onnxpb"
)

// Options tunes Convert. The zero value is the safe default: float32 graph
// inputs and outputs.
type Options struct {
	// Float16IO makes the graph's float inputs and outputs float16 too,
	// instead of inserting Cast nodes at them. Callers must then feed and
	// read float16 (the server converts other tensors, and widens the
	// outputs to float32), and a batch moves half the bytes to a GPU.
	Float16IO bool
}

// Report counts what Convert changed.
type Report struct {
	Initializers  int // float initializers stored as float16
	Constants     int // float tensors of Constant and ConstantOfShape nodes stored as float16
	Values        int // value types changed to float16 (value_info, graph inputs and outputs)
	Casts         int // Cast nodes and dtype attributes (RandomNormal...) whose target changed from float to float16
	CastsInserted int // Cast nodes added to keep graph inputs and outputs float32
	Saturated     int // finite values beyond ±65504, stored as ±65504
	FlushedToZero int // nonzero values below float16's smallest subnormal, stored as ±0
}

// String is the report on one line.
func (r Report) String() string {
	return fmt.Sprintf("%d initializers, %d constants, %d values, %d casts retargeted, %d casts inserted, %d saturated, %d flushed to zero",
		r.Initializers, r.Constants, r.Values, r.Casts, r.CastsInserted, r.Saturated, r.FlushedToZero)
}

const (
	float32Type = int32(onnxpb.TensorProto_FLOAT)
	float16Type = int32(onnxpb.TensorProto_FLOAT16)
)

// refused are standard operators whose float16 version would be invalid,
// with the reason. The list is not exhaustive: ONNX Runtime names any other
// operator it has no float16 definition for when it loads the converted
// model.
var refused = map[string]string{
	"Resize":                "its scales input must stay float32",
	"Upsample":              "its scales input must stay float32",
	"NonMaxSuppression":     "its boxes and scores must stay float32",
	"QuantizeLinear":        "quantized models are not converted",
	"DequantizeLinear":      "quantized models are not converted",
	"DynamicQuantizeLinear": "quantized models are not converted",
}

// floatByDefault are the operators whose dtype attribute, when absent,
// makes float32 tensors.
var floatByDefault = map[string]bool{"RandomNormal": true, "RandomUniform": true}

// Convert returns a float16 copy of m and what it changed; m itself is not
// modified. Float32 initializers and Constant tensors are rounded to
// nearest, ties to even (see dtype.FromFloat32); value_info types and Cast nodes
// targeting float become float16. Unless o.Float16IO, each float32 graph
// input gets a Cast to float16 before its first use and each float32 graph
// output is computed in float16 under a new name and cast back, so the
// graph's interface is unchanged. Graph inputs that have an initializer are
// weights and become float16 either way.
func Convert(m *onnxpb.ModelProto, o Options) (*onnxpb.ModelProto, Report, error) {
	if err := check(m); err != nil {
		return nil, Report{}, err
	}
	out := proto.Clone(m).(*onnxpb.ModelProto)
	c := &converter{g: out.Graph}
	if err := c.convert(o); err != nil {
		return nil, Report{}, err
	}
	return out, c.r, nil
}

// check refuses what Convert cannot convert correctly, before any work.
func check(m *onnxpb.ModelProto) error {
	g := m.GetGraph()
	switch {
	case g == nil:
		return errors.New("fp16: the model has no graph")
	case len(m.GetFunctions()) > 0:
		return errors.New("fp16: model-local functions are not supported")
	case len(m.GetTrainingInfo()) > 0:
		return errors.New("fp16: training_info is not supported")
	case len(g.GetSparseInitializer()) > 0:
		return errors.New("fp16: sparse initializers are not supported")
	}
	for i, n := range g.GetNode() {
		name := nodeName(n, i)
		if d := n.GetDomain(); d != "" && d != "ai.onnx" {
			return fmt.Errorf("fp16: node %s: operator %s of domain %q: its float16 support is unknown", name, n.GetOpType(), d)
		}
		if why, ok := refused[n.GetOpType()]; ok {
			return fmt.Errorf("fp16: node %s: cannot convert %s: %s", name, n.GetOpType(), why)
		}
		for _, a := range n.GetAttribute() {
			if a.G != nil || len(a.Graphs) > 0 {
				return fmt.Errorf("fp16: node %s: %s has a subgraph (attribute %s); control flow is not supported", name, n.GetOpType(), a.GetName())
			}
			if a.SparseTensor != nil || len(a.SparseTensors) > 0 {
				return fmt.Errorf("fp16: node %s: sparse tensor attribute %s is not supported", name, a.GetName())
			}
		}
	}
	return nil
}

// nodeName names node i of a graph in errors: its name, or its operator
// and index when it has none.
func nodeName(n *onnxpb.NodeProto, i int) string {
	if n.GetName() != "" {
		return strconv.Quote(n.GetName())
	}
	return fmt.Sprintf("#%d (%s)", i, n.GetOpType())
}

type converter struct {
	g *onnxpb.GraphProto
	r Report
}

func (c *converter) convert(o Options) error {
	g := c.g
	for _, t := range g.Initializer {
		if t.GetDataType() != float32Type {
			continue
		}
		if err := c.tensor(t, "initializer "+strconv.Quote(t.GetName())); err != nil {
			return err
		}
		c.r.Initializers++
	}
	for i, n := range g.Node {
		if err := c.node(n, nodeName(n, i)); err != nil {
			return err
		}
	}
	for _, v := range g.ValueInfo {
		if retype(v.GetType()) {
			c.r.Values++
		}
	}
	inits := map[string]bool{}
	for _, t := range g.Initializer {
		inits[t.GetName()] = true
	}
	if o.Float16IO {
		for _, v := range append(append([]*onnxpb.ValueInfoProto(nil), g.Input...), g.Output...) {
			if retype(v.GetType()) {
				c.r.Values++
			}
		}
		return nil
	}
	// Inputs with an initializer are weights: float16 like the others.
	var edge []*onnxpb.ValueInfoProto
	for _, v := range g.Input {
		if inits[v.GetName()] {
			if retype(v.GetType()) {
				c.r.Values++
			}
			continue
		}
		edge = append(edge, v)
	}
	for _, v := range append(edge, g.Output...) {
		if !isFloat32Tensor(v.GetType()) && hasFloat32(v.GetType()) {
			return fmt.Errorf("fp16: graph input or output %q is not a plain tensor but holds float32 values; only float32 tensors can be kept at the interface (use Float16IO)", v.GetName())
		}
	}
	return c.keepFloat32IO(inits)
}

// keepFloat32IO puts Cast nodes between the float32 graph inputs and
// outputs and the float16 graph, renaming the tensors inside.
func (c *converter) keepFloat32IO(inits map[string]bool) error {
	g := c.g
	names := c.names()
	nodeNames := map[string]bool{}
	for _, n := range g.Node {
		nodeNames[n.GetName()] = true
	}
	used := map[string]bool{}
	produced := map[string]bool{}
	for _, n := range g.Node {
		for _, in := range n.Input {
			used[in] = true
		}
		for _, out := range n.Output {
			produced[out] = true
		}
	}

	inputs := map[string]bool{}  // graph inputs without an initializer
	weights := map[string]bool{} // graph inputs with one
	var head []*onnxpb.NodeProto
	for _, v := range g.Input {
		name := v.GetName()
		if inits[name] {
			weights[name] = true
			continue
		}
		inputs[name] = true
		if !isFloat32Tensor(v.GetType()) || !used[name] {
			continue
		}
		inside := fresh(names, name+"_fp16")
		c.rename(name, inside)
		head = append(head, castNode(fresh(nodeNames, name+"_to_fp16"), name, inside, float16Type))
	}

	var tail []*onnxpb.NodeProto
	done := map[string]bool{}
	for _, v := range g.Output {
		name := v.GetName()
		// An output that is a graph input passes the float32 input through.
		if done[name] || inputs[name] || !isFloat32Tensor(v.GetType()) {
			continue
		}
		done[name] = true
		if !produced[name] && !inits[name] {
			return fmt.Errorf("fp16: graph output %q is produced by no node or initializer", name)
		}
		if !produced[name] && weights[name] {
			// Renaming the initializer would cut it from its graph input.
			return fmt.Errorf("fp16: graph output %q is a graph input with an initializer, which is not supported", name)
		}
		inside := fresh(names, name+"_fp16")
		c.rename(name, inside)
		tail = append(tail, castNode(fresh(nodeNames, name+"_to_fp32"), inside, name, float32Type))
	}
	// Inputs' casts come before every node and outputs' after, so the
	// node list stays topologically sorted.
	g.Node = append(append(head, g.Node...), tail...)
	c.r.CastsInserted += len(head) + len(tail)
	return nil
}

// fresh returns base, or else the first of base_2, base_3... not in taken,
// and adds it to taken.
func fresh(taken map[string]bool, base string) string {
	name := base
	for i := 2; taken[name]; i++ {
		name = base + "_" + strconv.Itoa(i)
	}
	taken[name] = true
	return name
}

// names is every tensor name the graph uses.
func (c *converter) names() map[string]bool {
	g := c.g
	names := map[string]bool{}
	for _, n := range g.Node {
		for _, s := range n.Input {
			names[s] = true
		}
		for _, s := range n.Output {
			names[s] = true
		}
	}
	for _, t := range g.Initializer {
		names[t.GetName()] = true
	}
	for _, vs := range [][]*onnxpb.ValueInfoProto{g.Input, g.Output, g.ValueInfo} {
		for _, v := range vs {
			names[v.GetName()] = true
		}
	}
	return names
}

// rename renames tensor from to to inside the graph: node inputs and
// outputs, initializers and value_info, but not the graph's own inputs and
// outputs, which keep their names and float32 types.
func (c *converter) rename(from, to string) {
	g := c.g
	for _, n := range g.Node {
		for _, ss := range [][]string{n.Input, n.Output} {
			for i, s := range ss {
				if s == from {
					ss[i] = to
				}
			}
		}
	}
	for _, t := range g.Initializer {
		if t.GetName() == from {
			t.Name = proto.String(to)
		}
	}
	for _, v := range g.ValueInfo {
		if v.GetName() == from {
			v.Name = proto.String(to)
		}
	}
}

func castNode(name, in, out string, to int32) *onnxpb.NodeProto {
	return &onnxpb.NodeProto{
		Name:      proto.String(name),
		OpType:    proto.String("Cast"),
		Input:     []string{in},
		Output:    []string{out},
		Attribute: []*onnxpb.AttributeProto{onnxpb.AttrInt("to", int64(to))},
	}
}

// node converts one node's float tensors and types in place.
func (c *converter) node(n *onnxpb.NodeProto, name string) error {
	hasValue, hasDtype := false, false
	for i, a := range n.Attribute {
		where := fmt.Sprintf("node %s attribute %s", name, a.GetName())
		switch {
		case n.GetOpType() == "Cast" && a.GetName() == "to", a.GetName() == "dtype":
			if a.GetI() == int64(float32Type) {
				a.I = proto.Int64(int64(float16Type))
				c.r.Casts++
			}
		case n.GetOpType() == "Constant" && (a.GetName() == "value_float" || a.GetName() == "value_floats"):
			// A float32 scalar or list becomes the same value as a float16
			// tensor (converted below), so it meets float16 consumers.
			t := &onnxpb.TensorProto{DataType: proto.Int32(float32Type)}
			if a.GetName() == "value_float" {
				t.FloatData = []float32{a.GetF()}
			} else {
				t.Dims = []int64{int64(len(a.Floats))}
				t.FloatData = a.Floats
			}
			a = &onnxpb.AttributeProto{Name: proto.String("value"), Type: onnxpb.AttributeProto_TENSOR.Enum(), T: t}
			n.Attribute[i] = a
		}
		switch a.GetName() {
		case "value":
			hasValue = true
		case "dtype":
			hasDtype = true
		}
		for _, t := range append([]*onnxpb.TensorProto{a.T}, a.Tensors...) {
			if t.GetDataType() != float32Type {
				continue
			}
			if err := c.tensor(t, where); err != nil {
				return err
			}
			c.r.Constants++
		}
		for _, tp := range append([]*onnxpb.TypeProto{a.Tp}, a.TypeProtos...) {
			retype(tp)
		}
	}
	if n.GetOpType() == "ConstantOfShape" && !hasValue {
		// The default is a float32 zero, which would meet float16 tensors.
		n.Attribute = append(n.Attribute, &onnxpb.AttributeProto{
			Name: proto.String("value"), Type: onnxpb.AttributeProto_TENSOR.Enum(),
			T: &onnxpb.TensorProto{Dims: []int64{1}, DataType: proto.Int32(float16Type), RawData: []byte{0, 0}},
		})
		c.r.Constants++
	}
	if floatByDefault[n.GetOpType()] && !hasDtype {
		n.Attribute = append(n.Attribute, onnxpb.AttrInt("dtype", int64(float16Type)))
		c.r.Casts++
	}
	return nil
}

// tensor stores the float32 tensor t as float16 raw_data in place.
func (c *converter) tensor(t *onnxpb.TensorProto, where string) error {
	if t.GetDataLocation() == onnxpb.TensorProto_EXTERNAL || len(t.ExternalData) > 0 {
		return fmt.Errorf("fp16: %s is stored as external data, which is not supported: save the model with its weights inside the .onnx file", where)
	}
	if t.Segment != nil {
		return fmt.Errorf("fp16: %s is a segment of a tensor, which is not supported", where)
	}
	n := 1
	for _, d := range t.Dims {
		if d < 0 || d > math.MaxInt32 || n > math.MaxInt32/max(1, int(d)) {
			return fmt.Errorf("fp16: %s has dimensions %v", where, t.Dims)
		}
		n *= int(d)
	}
	var at func(i int) float32
	switch {
	case len(t.RawData) > 0:
		if len(t.RawData) != 4*n {
			return fmt.Errorf("fp16: %s has %d bytes of raw_data for %d float32 values", where, len(t.RawData), n)
		}
		at = func(i int) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(t.RawData[4*i:])) }
	case len(t.FloatData) == n:
		at = func(i int) float32 { return t.FloatData[i] }
	default:
		return fmt.Errorf("fp16: %s has %d float_data values for %d elements", where, len(t.FloatData), n)
	}
	raw := make([]byte, 2*n)
	for i := range n {
		h, how := dtype.Half(at(i))
		switch how {
		case dtype.Saturated:
			c.r.Saturated++
		case dtype.Flushed:
			c.r.FlushedToZero++
		}
		binary.LittleEndian.PutUint16(raw[2*i:], h)
	}
	t.DataType = proto.Int32(float16Type)
	t.RawData, t.FloatData = raw, nil
	return nil
}

// retype changes every float32 element type in tp to float16 and says
// whether it changed any.
func retype(tp *onnxpb.TypeProto) bool {
	switch v := tp.GetValue().(type) {
	case *onnxpb.TypeProto_TensorType:
		if v.TensorType.GetElemType() == float32Type {
			v.TensorType.ElemType = proto.Int32(float16Type)
			return true
		}
	case *onnxpb.TypeProto_SparseTensorType:
		if v.SparseTensorType.GetElemType() == float32Type {
			v.SparseTensorType.ElemType = proto.Int32(float16Type)
			return true
		}
	case *onnxpb.TypeProto_SequenceType:
		return retype(v.SequenceType.GetElemType())
	case *onnxpb.TypeProto_MapType:
		return retype(v.MapType.GetValueType())
	case *onnxpb.TypeProto_OptionalType:
		return retype(v.OptionalType.GetElemType())
	}
	return false
}

func isFloat32Tensor(tp *onnxpb.TypeProto) bool {
	return tp.GetTensorType().GetElemType() == float32Type
}

// hasFloat32 says whether tp is or holds a float32 type, without changing it.
func hasFloat32(tp *onnxpb.TypeProto) bool {
	return tp != nil && retype(proto.Clone(tp).(*onnxpb.TypeProto))
}
