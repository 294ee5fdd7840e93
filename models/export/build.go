package export

import (
	"errors"
	"fmt"
	"math"

	"google.golang.org/protobuf/proto"

	"fastinfer/models/onnxpb"
)

// Names of the graph's input and output tensors.
const (
	InputName  = "data"
	OutputName = "logits"
)

const (
	opsetVersion = 17
	irVersion    = 8 // the newest IR that the vendored onnx.proto (ONNX 1.12) describes

	// maxElems bounds every tensor and activation, so shape arithmetic
	// cannot overflow and a corrupt Net cannot ask for terabytes.
	maxElems = 1 << 31
)

// shape is the C×H×W of one image's activations.
type shape struct{ c, h, w int }

func (s shape) String() string { return fmt.Sprintf("[%d %d %d]", s.c, s.h, s.w) }

// Build returns the ONNX graph of n (opset 17, IR version 8):
//
//	data [N,InC,InH,InW] → Conv → BatchNormalization → Relu
//	→ MaxPool (kernel = stride = StemPool, when StemPool > 0)
//	→ per Block: Conv → BN → Relu → Conv → BN, plus the identity or
//	  Shortcut (Conv → BN), Add, Relu
//	→ GlobalAveragePool → Flatten → Gemm (transB=1) → logits [N,classes]
//
// N is the symbolic dimension "N". Every shape is checked first (see
// Validate); the weights are copied, so changing n afterwards does not
// change the returned model.
func Build(n *Net) (*onnxpb.ModelProto, error) {
	out, err := validate(n)
	if err != nil {
		return nil, err
	}
	b := &graph{}
	x := b.convBN("stem", InputName, &n.Stem)
	x = b.Op("Relu", "stem.relu", []string{x})
	if n.StemPool > 0 {
		p := int64(n.StemPool)
		x = b.Op("MaxPool", "stem.pool", []string{x}, onnxpb.AttrInts("kernel_shape", p, p), onnxpb.AttrInts("strides", p, p))
	}
	for i := range n.Blocks {
		blk := &n.Blocks[i]
		prefix := fmt.Sprintf("block%d.", i)
		y := b.convBN(prefix+"a", x, &blk.A)
		y = b.Op("Relu", prefix+"a.relu", []string{y})
		y = b.convBN(prefix+"b", y, &blk.B)
		short := x
		if blk.Shortcut != nil {
			short = b.convBN(prefix+"shortcut", x, blk.Shortcut)
		}
		y = b.Op("Add", prefix+"add", []string{y, short})
		x = b.Op("Relu", prefix+"relu", []string{y})
	}
	x = b.Op("GlobalAveragePool", "gap", []string{x})
	x = b.Op("Flatten", "flatten", []string{x}, onnxpb.AttrInt("axis", 1))
	w := b.param("fc.weight", n.FCW.Dims, n.FCW.Data)
	bias := b.param("fc.bias", []int64{int64(len(n.FCB))}, n.FCB)
	b.Node("Gemm", "fc", OutputName, []string{x, w, bias}, onnxpb.AttrInt("transB", 1))

	classes := n.FCW.Dims[0]
	return &onnxpb.ModelProto{
		IrVersion:    proto.Int64(irVersion),
		ProducerName: proto.String("fastinfer"),
		DocString: proto.String(fmt.Sprintf("small ResNet: %d×%d×%d input, %d residual blocks, %d features, %d classes",
			n.InC, n.InH, n.InW, len(n.Blocks), out.c, classes)),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(opsetVersion)}},
		Graph: &onnxpb.GraphProto{
			Name:        proto.String("small_resnet"),
			Node:        b.Nodes,
			Initializer: b.Inits,
			Input: []*onnxpb.ValueInfoProto{onnxpb.FloatTensor(InputName,
				onnxpb.DimParam("N"), onnxpb.Dim(int64(n.InC)), onnxpb.Dim(int64(n.InH)), onnxpb.Dim(int64(n.InW)))},
			Output: []*onnxpb.ValueInfoProto{onnxpb.FloatTensor(OutputName, onnxpb.DimParam("N"), onnxpb.Dim(classes))},
		},
	}, nil
}

// Validate checks that n describes a network Build can export and Forward
// can run: tensor dimensions against their data and against the channels
// flowing in, BatchNormalization vectors against the output channels,
// spatial sizes that stay positive, residual shapes that match, and weights
// that are finite. It reports every problem it finds, each naming the layer.
func Validate(n *Net) error {
	_, err := validate(n)
	return err
}

// validate is Validate that also returns the feature shape entering the
// global average pool.
func validate(n *Net) (shape, error) {
	if n == nil {
		return shape{}, errors.New("export: nil Net")
	}
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	done := func() error {
		if len(errs) == 0 {
			return nil
		}
		return fmt.Errorf("export: invalid Net: %w", errors.Join(errs...))
	}

	if n.InC <= 0 || n.InH <= 0 || n.InW <= 0 {
		fail("input InC×InH×InW = %d×%d×%d: all must be positive", n.InC, n.InH, n.InW)
		return shape{}, done()
	}
	if int64(n.InC)*int64(n.InH)*int64(n.InW) > maxElems {
		fail("input %d×%d×%d is too large", n.InC, n.InH, n.InW)
		return shape{}, done()
	}
	s, ok := n.Stem.check("stem", shape{n.InC, n.InH, n.InW}, fail)
	if !ok {
		return shape{}, done()
	}
	switch p := n.StemPool; {
	case p < 0:
		fail("stem_pool %d: want 0 (none) or a positive kernel size", p)
	case p > 0:
		if s.h < p || s.w < p {
			fail("stem_pool %d is larger than the stem's output %s", p, s)
			return shape{}, done()
		}
		s.h, s.w = s.h/p, s.w/p
	}
	for i := range n.Blocks {
		blk := &n.Blocks[i]
		name := fmt.Sprintf("blocks[%d]", i)
		a, ok := blk.A.check(name+".a", s, fail)
		if !ok {
			return shape{}, done()
		}
		out, ok := blk.B.check(name+".b", a, fail)
		if !ok {
			return shape{}, done()
		}
		if blk.Shortcut == nil {
			if out != s {
				fail("%s: the identity shortcut needs the block's output %s to equal its input %s; give it a Shortcut", name, out, s)
			}
		} else if sc, ok := blk.Shortcut.check(name+".shortcut", s, fail); ok && sc != out {
			fail("%s.shortcut: output %s does not match the residual branch's %s", name, sc, out)
		}
		s = out
	}
	fc := n.FCW
	switch {
	case len(fc.Dims) != 2:
		fail("fc: FCW has dims %v; want [classes, %d]", fc.Dims, s.c)
	case fc.Dims[0] <= 0 || fc.Dims[0] > maxElems:
		fail("fc: FCW has dims %v; want a positive number of classes", fc.Dims)
	case fc.Dims[1] != int64(s.c):
		fail("fc: FCW has dims %v, but the last block gives %d features; want [%d, %d]", fc.Dims, s.c, fc.Dims[0], s.c)
	default:
		checkData("fc: FCW", fc, fail)
		if int64(len(n.FCB)) != fc.Dims[0] {
			fail("fc: FCB has %d values; want %d (one per class)", len(n.FCB), fc.Dims[0])
		}
		checkFinite("fc: FCB", n.FCB, fail)
	}
	return s, done()
}

// check validates cb applied to activations of shape in and returns its
// output shape. ok is false when the output shape cannot be known, so the
// caller must stop walking the network.
func (cb *ConvBN) check(name string, in shape, fail func(string, ...any)) (out shape, ok bool) {
	d := cb.W.Dims
	if len(d) != 4 {
		fail("%s: W has dims %v; want [out, %d, k, k]", name, d, in.c)
		return shape{}, false
	}
	for _, v := range d {
		if v <= 0 || v > maxElems {
			fail("%s: W has dims %v; each must be positive", name, d)
			return shape{}, false
		}
	}
	ok = true
	if d[1] != int64(in.c) {
		fail("%s: W has dims %v, so it takes %d channels, but its input has %d", name, d, d[1], in.c)
		ok = false
	}
	if cb.Stride < 1 {
		fail("%s: stride %d: want at least 1", name, cb.Stride)
		ok = false
	}
	if cb.Pad < 0 {
		fail("%s: pad %d: want 0 or more", name, cb.Pad)
		ok = false
	}
	checkData(name+": W", cb.W, fail)
	c := int(d[0])
	for _, v := range []struct {
		field string
		vals  []float32
	}{{"Gamma", cb.Gamma}, {"Beta", cb.Beta}, {"Mean", cb.Mean}, {"Var", cb.Var}} {
		if len(v.vals) != c {
			fail("%s: %s has %d values; want %d (one per output channel)", name, v.field, len(v.vals), c)
		}
		checkFinite(name+": "+v.field, v.vals, fail)
	}
	eps := float64(cb.Eps)
	if math.IsNaN(eps) || math.IsInf(eps, 0) || eps < 0 {
		fail("%s: Eps %g: want a finite value ≥ 0", name, eps)
	} else {
		for i, v := range cb.Var {
			if float64(v)+eps <= 0 {
				fail("%s: Var[%d] + Eps = %g; want it positive", name, i, float64(v)+eps)
				break
			}
		}
	}
	if !ok {
		return shape{}, false
	}
	kh, kw := int(d[2]), int(d[3])
	if in.h+2*cb.Pad < kh || in.w+2*cb.Pad < kw {
		fail("%s: %d×%d kernel is larger than its padded input (%d×%d, pad %d)", name, kh, kw, in.h, in.w, cb.Pad)
		return shape{}, false
	}
	out = shape{
		c: c,
		h: (in.h+2*cb.Pad-kh)/cb.Stride + 1,
		w: (in.w+2*cb.Pad-kw)/cb.Stride + 1,
	}
	if int64(out.c)*int64(out.h)*int64(out.w) > maxElems {
		fail("%s: output %s is too large", name, out)
		return shape{}, false
	}
	return out, true
}

// checkData reports a tensor whose data length is not the product of its
// dimensions, or that holds NaN or ±Inf. The dims are known positive and
// bounded by the caller.
func checkData(name string, t Tensor, fail func(string, ...any)) {
	n := int64(1)
	for _, v := range t.Dims {
		n *= v
		if n > maxElems {
			fail("%s: dims %v are too large", name, t.Dims)
			return
		}
	}
	if int64(len(t.Data)) != n {
		fail("%s has %d values; its dims %v need %d", name, len(t.Data), t.Dims, n)
	}
	checkFinite(name, t.Data, fail)
}

func checkFinite(name string, v []float32, fail func(string, ...any)) {
	for i, x := range v {
		if f := float64(x); math.IsNaN(f) || math.IsInf(f, 0) {
			fail("%s[%d] is %g", name, i, f)
			return
		}
	}
}

// Params counts trainable parameters the way PyTorch does: convolution and
// Gemm weights and biases, and BatchNormalization's scale and bias (not its
// running statistics). For a valid Net it equals resnet.ParamCount of the
// graph Build returns.
func Params(n *Net) int64 {
	count := func(cb *ConvBN) int64 { return int64(len(cb.W.Data) + len(cb.Gamma) + len(cb.Beta)) }
	total := count(&n.Stem) + int64(len(n.FCW.Data)+len(n.FCB))
	for i := range n.Blocks {
		total += count(&n.Blocks[i].A) + count(&n.Blocks[i].B)
		if s := n.Blocks[i].Shortcut; s != nil {
			total += count(s)
		}
	}
	return total
}

// graph accumulates nodes and initializers in topological order.
type graph struct{ onnxpb.Graph }

// convBN adds name.conv and name.bn over in and returns the BN's output.
func (g *graph) convBN(name, in string, cb *ConvBN) string {
	d := cb.W.Dims
	s, p := int64(cb.Stride), int64(cb.Pad)
	w := g.param(name+".conv.weight", d, cb.W.Data)
	x := g.Op("Conv", name+".conv", []string{in, w},
		onnxpb.AttrInts("kernel_shape", d[2], d[3]), onnxpb.AttrInts("strides", s, s), onnxpb.AttrInts("pads", p, p, p, p))
	c := []int64{d[0]}
	return g.Op("BatchNormalization", name+".bn", []string{
		x,
		g.param(name+".bn.weight", c, cb.Gamma),
		g.param(name+".bn.bias", c, cb.Beta),
		g.param(name+".bn.running_mean", c, cb.Mean),
		g.param(name+".bn.running_var", c, cb.Var),
	}, onnxpb.AttrFloat("epsilon", cb.Eps))
}

// param adds a float32 initializer holding a copy of data (Validate has
// checked that len(data) matches dims).
func (g *graph) param(name string, dims []int64, data []float32) string {
	return g.FloatInit(name, dims, func(i int) float32 { return data[i] })
}
