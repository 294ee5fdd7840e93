package train

import (
	"fmt"
	"math"
	"math/rand/v2"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"fastinfer/models/export"
)

// Arch is a small ResNet for little images: a 3×3 stem convolution with
// BatchNorm and ReLU, an optional max-pool, residual stages of basic blocks
// (each stage after the first doubles the width and halves the
// resolution), a global average pool and a dense head.
type Arch struct {
	InC, InH, InW int
	Classes       int
	Width         int   // channels of the first stage
	Stages        []int // basic blocks per stage
	StemPool      int   // max-pool kernel and stride after the stem; 0 = none
}

// bnEps and bnMomentum follow PyTorch's defaults (Gorgonia's momentum is
// the weight of the new batch, as PyTorch's is).
const (
	bnEps      = 1e-5
	bnMomentum = 0.1
)

// convParams is one convolution and its batch normalisation, as values
// shared by the training and the evaluation graphs.
type convParams struct {
	W           *tensor.Dense // (out, in, k, k)
	Gamma, Beta *tensor.Dense // (1, out, 1, 1)
	Mean, Var   []float32     // running statistics, copied out of the training graph
	Stride, Pad int
}

type blockParams struct {
	A, B     *convParams
	Shortcut *convParams
}

// Params are a network's weights: the trainer's state, the checkpoint's
// content and the exporter's input.
type Params struct {
	Arch   Arch
	Stem   *convParams
	Blocks []blockParams
	FCW    *tensor.Dense // (C, classes)
	FCB    *tensor.Dense // (1, classes)
}

// NewParams initialises weights: He-normal convolutions, BatchNorm γ=1 β=0
// (γ=0 on each block's last BatchNorm, so blocks start as identities, which
// trains faster), and a small uniform head, all from seed.
func NewParams(a Arch, seed uint64) (*Params, error) {
	if a.InC <= 0 || a.InH <= 0 || a.InW <= 0 || a.Classes < 2 || a.Width <= 0 || len(a.Stages) == 0 {
		return nil, fmt.Errorf("invalid architecture %+v", a)
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	p := &Params{Arch: a}
	p.Stem = newConv(rng, a.InC, a.Width, 3, 1, 1, 1)
	in := a.Width
	for s, n := range a.Stages {
		out := a.Width << s
		for b := range n {
			stride := 1
			if s > 0 && b == 0 {
				stride = 2
			}
			bp := blockParams{
				A: newConv(rng, in, out, 3, stride, 1, 1),
				B: newConv(rng, out, out, 3, 1, 1, 0),
			}
			if stride != 1 || in != out {
				bp.Shortcut = newConv(rng, in, out, 1, stride, 0, 1)
			}
			p.Blocks = append(p.Blocks, bp)
			in = out
		}
	}
	bound := 1 / math.Sqrt(float64(in))
	p.FCW = dense(uniform(rng, in*a.Classes, bound), in, a.Classes)
	p.FCB = dense(uniform(rng, a.Classes, bound), 1, a.Classes)
	return p, nil
}

// clone is a deep copy, for a replica graph: Gorgonia transposes weight
// tensors in place during a run, so concurrent graphs cannot share them.
func (p *Params) clone() *Params {
	cc := func(c *convParams) *convParams {
		if c == nil {
			return nil
		}
		d := *c
		d.W, d.Gamma, d.Beta = c.W.Clone().(*tensor.Dense), c.Gamma.Clone().(*tensor.Dense), c.Beta.Clone().(*tensor.Dense)
		d.Mean, d.Var = clone(c.Mean), clone(c.Var)
		return &d
	}
	q := &Params{Arch: p.Arch, Stem: cc(p.Stem), FCW: p.FCW.Clone().(*tensor.Dense), FCB: p.FCB.Clone().(*tensor.Dense)}
	for _, b := range p.Blocks {
		q.Blocks = append(q.Blocks, blockParams{A: cc(b.A), B: cc(b.B), Shortcut: cc(b.Shortcut)})
	}
	return q
}

func newConv(rng *rand.Rand, in, out, k, stride, pad int, gamma float32) *convParams {
	std := math.Sqrt(2 / float64(in*k*k))
	w := make([]float32, out*in*k*k)
	for i := range w {
		w[i] = float32(rng.NormFloat64() * std)
	}
	g := make([]float32, out)
	v := make([]float32, out)
	for i := range g {
		g[i], v[i] = gamma, 1
	}
	return &convParams{
		W:      dense(w, out, in, k, k),
		Gamma:  dense(g, 1, out, 1, 1),
		Beta:   dense(make([]float32, out), 1, out, 1, 1),
		Mean:   make([]float32, out),
		Var:    v,
		Stride: stride, Pad: pad,
	}
}

func uniform(rng *rand.Rand, n int, bound float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32((rng.Float64()*2 - 1) * bound)
	}
	return x
}

func dense(data []float32, shape ...int) *tensor.Dense {
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(data))
}

// Count is the number of trainable parameters (weights, γ, β, head).
func (p *Params) Count() int64 {
	var n int64
	add := func(c *convParams) {
		n += int64(c.W.Size() + c.Gamma.Size() + c.Beta.Size())
	}
	add(p.Stem)
	for _, b := range p.Blocks {
		add(b.A)
		add(b.B)
		if b.Shortcut != nil {
			add(b.Shortcut)
		}
	}
	return n + int64(p.FCW.Size()+p.FCB.Size())
}

// network is one Gorgonia graph over Params, for training (BatchNorm on
// batch statistics, gradients) or evaluation (running statistics).
type network struct {
	g          *G.ExprGraph
	x, logits  *G.Node
	learnables G.Nodes
	bn         []*G.BatchNormOp // in the order of Params.convs()
	batch      int
}

// convs lists every convolution in a fixed order.
func (p *Params) convs() []*convParams {
	cs := []*convParams{p.Stem}
	for _, b := range p.Blocks {
		cs = append(cs, b.A, b.B)
		if b.Shortcut != nil {
			cs = append(cs, b.Shortcut)
		}
	}
	return cs
}

// build makes the graph for a fixed batch size; every parameter node is
// bound to the Params' tensors, so the solver's in-place updates are seen
// by every graph built over them.
func (p *Params) build(batch int, training bool) (*network, error) {
	a := p.Arch
	g := G.NewGraph()
	n := &network{g: g, batch: batch}
	n.x = G.NewTensor(g, tensor.Float32, 4, G.WithShape(batch, a.InC, a.InH, a.InW), G.WithName("x"))
	param := func(t *tensor.Dense, name string) *G.Node {
		node := G.NodeFromAny(g, t, G.WithName(name))
		n.learnables = append(n.learnables, node)
		return node
	}
	id := 0
	convBN := func(in *G.Node, c *convParams, relu bool) (*G.Node, error) {
		id++
		w := param(c.W, fmt.Sprintf("w%d", id))
		k := c.W.Shape()[2]
		out, err := G.Conv2d(in, w, tensor.Shape{k, k}, []int{c.Pad, c.Pad}, []int{c.Stride, c.Stride}, []int{1, 1})
		if err != nil {
			return nil, fmt.Errorf("conv %d: %w", id, err)
		}
		gamma := param(c.Gamma, fmt.Sprintf("gamma%d", id))
		beta := param(c.Beta, fmt.Sprintf("beta%d", id))
		out, _, _, op, err := G.BatchNorm(out, gamma, beta, bnMomentum, bnEps)
		if err != nil {
			return nil, fmt.Errorf("batchnorm %d: %w", id, err)
		}
		n.bn = append(n.bn, op)
		if relu {
			out, err = G.Rectify(out)
		}
		return out, err
	}
	h, err := convBN(n.x, p.Stem, true)
	if err != nil {
		return nil, err
	}
	if a.StemPool > 0 {
		if h, err = G.MaxPool2D(h, tensor.Shape{a.StemPool, a.StemPool}, []int{0, 0}, []int{a.StemPool, a.StemPool}); err != nil {
			return nil, fmt.Errorf("max-pool: %w", err)
		}
	}
	for _, b := range p.Blocks {
		r, err := convBN(h, b.A, true)
		if err != nil {
			return nil, err
		}
		if r, err = convBN(r, b.B, false); err != nil {
			return nil, err
		}
		short := h
		if b.Shortcut != nil {
			if short, err = convBN(h, b.Shortcut, false); err != nil {
				return nil, err
			}
		}
		if h, err = G.Add(r, short); err != nil {
			return nil, fmt.Errorf("residual add: %w", err)
		}
		if h, err = G.Rectify(h); err != nil {
			return nil, err
		}
	}
	// Global average pool as a mean over the flattened spatial axis:
	// Gorgonia's GlobalAveragePool2D gradient panics and Mean over two axes
	// is wrong (measured).
	s := h.Shape()
	if h, err = G.Reshape(h, tensor.Shape{s[0], s[1], s[2] * s[3]}); err != nil {
		return nil, err
	}
	if h, err = G.Mean(h, 2); err != nil {
		return nil, err
	}
	fcW := param(p.FCW, "fcw")
	fcB := param(p.FCB, "fcb")
	if h, err = G.Mul(h, fcW); err != nil {
		return nil, fmt.Errorf("head: %w", err)
	}
	if n.logits, err = G.BroadcastAdd(h, fcB, nil, []byte{0}); err != nil {
		return nil, fmt.Errorf("head bias: %w", err)
	}
	for _, op := range n.bn {
		if err := op.SetTraining(training); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// saveStats copies the running statistics out of a training graph.
func (p *Params) saveStats(n *network) {
	for i, c := range p.convs() {
		m, v := n.bn[i].Stats()
		copy(c.Mean, m.Data().([]float32))
		copy(c.Var, v.Data().([]float32))
	}
}

// loadStats sets an evaluation graph's running statistics. It must run
// after the graph's TapeMachine exists: creating one resets them.
func (p *Params) loadStats(n *network) error {
	if len(n.bn) == 0 {
		return nil
	}
	for i, c := range p.convs() {
		ch := len(c.Mean)
		if err := n.bn[i].SetStats(dense(c.Mean, ch), dense(c.Var, ch)); err != nil {
			return err
		}
	}
	return nil
}

// Export converts the parameters to the exporter's plain description.
func (p *Params) Export() *export.Net {
	a := p.Arch
	conv := func(c *convParams) export.ConvBN {
		ch := len(c.Mean)
		return export.ConvBN{
			W:      export.Tensor{Dims: int64s(c.W.Shape()), Data: clone(c.W.Data().([]float32))},
			Stride: c.Stride, Pad: c.Pad,
			Gamma: clone(c.Gamma.Data().([]float32))[:ch],
			Beta:  clone(c.Beta.Data().([]float32))[:ch],
			Mean:  clone(c.Mean), Var: clone(c.Var), Eps: bnEps,
		}
	}
	n := &export.Net{InC: a.InC, InH: a.InH, InW: a.InW, Stem: conv(p.Stem), StemPool: a.StemPool}
	for _, b := range p.Blocks {
		eb := export.Block{A: conv(b.A), B: conv(b.B)}
		if b.Shortcut != nil {
			s := conv(b.Shortcut)
			eb.Shortcut = &s
		}
		n.Blocks = append(n.Blocks, eb)
	}
	// The head is (C, classes) here and [classes, C] for ONNX's Gemm.
	c, k := p.FCW.Shape()[0], p.FCW.Shape()[1]
	w := p.FCW.Data().([]float32)
	t := make([]float32, len(w))
	for i := range c {
		for j := range k {
			t[j*c+i] = w[i*k+j]
		}
	}
	n.FCW = export.Tensor{Dims: []int64{int64(k), int64(c)}, Data: t}
	n.FCB = clone(p.FCB.Data().([]float32))
	return n
}

func int64s(s tensor.Shape) []int64 {
	out := make([]int64, len(s))
	for i, d := range s {
		out[i] = int64(d)
	}
	return out
}

func clone(x []float32) []float32 { return append([]float32(nil), x...) }
