// Package pixels moves an image classifier's input normalisation into its
// graph: the model then takes UINT8 pixels, as exporters that bake
// preprocessing in write models, and the server feeds it raw pixel
// values.
//
// Why: a float32 image row is four bytes a value, and every copy of a
// batch (request body, batch buffer, host to GPU) moves all of them. A
// UINT8 row is a quarter of that, and the normalisation, one multiply and
// one subtract per value, runs on the GPU with the rest of the graph.
package pixels

import (
	"errors"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"fastinfer/models/onnxpb"
)

// Options are the normalisation to embed: (v·Scale − Mean[c]) / Std[c]
// for pixel value v of channel c, as config.yaml's preprocess section and
// vision apply it.
type Options struct {
	Input  string // the input to replace; "" = the model's only input
	Layout string // "nchw" or "nhwc"; "" reads it from the shape
	Scale  float32
	// Mean and Std have one value, or one per channel; empty means 0 and 1.
	Mean, Std []float32
}

// Embed returns a copy of m whose input (same name and shape) is UINT8
// and feeds Cast → Mul(Scale/Std) → Sub(Mean/Std) into what the input fed
// before. m is not changed.
func Embed(m *onnxpb.ModelProto, o Options) (*onnxpb.ModelProto, error) {
	g := m.GetGraph()
	if g == nil {
		return nil, errors.New("pixels: the model has no graph")
	}
	inits := map[string]bool{}
	for _, t := range g.GetInitializer() {
		inits[t.GetName()] = true
	}
	var inputs []int // graph inputs that are not initializers
	for i, v := range g.GetInput() {
		if !inits[v.GetName()] {
			inputs = append(inputs, i)
		}
	}
	idx := -1
	for _, i := range inputs {
		if o.Input == "" && len(inputs) == 1 || g.Input[i].GetName() == o.Input {
			idx = i
		}
	}
	if idx < 0 {
		if o.Input == "" {
			return nil, fmt.Errorf("pixels: the model has %d inputs; name one", len(inputs))
		}
		return nil, fmt.Errorf("pixels: no input named %q", o.Input)
	}
	in := g.Input[idx]
	tt := in.GetType().GetTensorType()
	if tt.GetElemType() != int32(onnxpb.TensorProto_FLOAT) {
		return nil, fmt.Errorf("pixels: input %s is %s, not float32", in.GetName(), onnxpb.TensorProto_DataType(tt.GetElemType()))
	}
	dims := tt.GetShape().GetDim()
	if len(dims) != 4 {
		return nil, fmt.Errorf("pixels: input %s has %d dimensions; an image input has 4", in.GetName(), len(dims))
	}
	layout := o.Layout
	if layout == "" {
		layout = "nchw"
		if c := dims[1].GetDimValue(); c != 1 && c != 3 {
			if c3 := dims[3].GetDimValue(); c3 == 1 || c3 == 3 {
				layout = "nhwc"
			}
		}
	}
	chAxis := 1
	if layout == "nhwc" {
		chAxis = 3
	} else if layout != "nchw" {
		return nil, fmt.Errorf("pixels: layout %q: want nchw or nhwc", layout)
	}
	ch := int(dims[chAxis].GetDimValue())
	if ch <= 0 {
		return nil, fmt.Errorf("pixels: input %s has no fixed channel count at axis %d", in.GetName(), chAxis)
	}
	if o.Scale == 0 {
		return nil, errors.New("pixels: scale must not be 0")
	}
	per := func(name string, v []float32, def float32) ([]float32, error) {
		switch len(v) {
		case 0:
			return slices.Repeat([]float32{def}, ch), nil
		case 1:
			return slices.Repeat(v, ch), nil
		case ch:
			return v, nil
		}
		return nil, fmt.Errorf("pixels: %d %s values for %d channels", len(v), name, ch)
	}
	mean, err := per("mean", o.Mean, 0)
	if err != nil {
		return nil, err
	}
	std, err := per("std", o.Std, 1)
	if err != nil {
		return nil, err
	}
	a, b := make([]float32, ch), make([]float32, ch)
	for c := range ch {
		if std[c] == 0 {
			return nil, errors.New("pixels: std must not contain 0")
		}
		a[c], b[c] = o.Scale/std[c], mean[c]/std[c]
	}

	out := proto.Clone(m).(*onnxpb.ModelProto)
	g = out.Graph
	name := in.GetName()
	taken := map[string]bool{}
	for _, n := range g.GetNode() {
		for _, s := range append(slices.Clone(n.GetInput()), n.GetOutput()...) {
			taken[s] = true
		}
	}
	for _, t := range g.GetInitializer() {
		taken[t.GetName()] = true
	}
	fresh := func(base string) string {
		s := base
		for i := 1; taken[s]; i++ {
			s = fmt.Sprintf("%s_%d", base, i)
		}
		taken[s] = true
		return s
	}
	// The float tensor the graph used to take keeps a new name; every node
	// that read the input reads it instead.
	norm := fresh(name + "_normalized")
	for _, n := range g.Node {
		for i, s := range n.Input {
			if s == name {
				n.Input[i] = norm
			}
		}
	}
	for _, v := range g.Output {
		if v.GetName() == name {
			return nil, fmt.Errorf("pixels: input %s is also a graph output", name)
		}
	}
	bshape := []int64{1, 1, 1, 1}
	bshape[chAxis] = int64(ch)
	pre := &onnxpb.Graph{}
	aName, bName := fresh(name+"_scale"), fresh(name+"_shift")
	pre.FloatInit(aName, bshape, func(i int) float32 { return a[i] })
	pre.FloatInit(bName, bshape, func(i int) float32 { return b[i] })
	f := pre.Node("Cast", fresh(name+"_cast"), fresh(name+"_float"), []string{name}, onnxpb.AttrInt("to", int64(onnxpb.TensorProto_FLOAT)))
	s := pre.Node("Mul", fresh(name+"_mul"), fresh(name+"_scaled"), []string{f, aName})
	pre.Node("Sub", fresh(name+"_sub"), norm, []string{s, bName})
	g.Node = append(pre.Nodes, g.Node...)
	g.Initializer = append(g.Initializer, pre.Inits...)
	g.Input[idx].Type.GetTensorType().ElemType = proto.Int32(int32(onnxpb.TensorProto_UINT8))
	return out, nil
}
