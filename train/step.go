package train

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// trainer runs optimisation steps on a fixed-size batch. Only Gorgonia's
// TapeMachine supports BatchNorm's backward pass, so that is what runs.
type trainer struct {
	p      *Params
	net    *network
	vm     G.VM
	solver G.Solver
	cost   *G.Node
	y      *G.Node
	xT, yT *tensor.Dense
	batch  int
}

func newTrainer(p *Params, batch int, solver G.Solver) (*trainer, error) {
	n, err := p.build(batch, true)
	if err != nil {
		return nil, err
	}
	a := p.Arch
	t := &trainer{p: p, net: n, solver: solver, batch: batch}
	t.y = G.NewMatrix(n.g, tensor.Float32, G.WithShape(batch, a.Classes), G.WithName("y"))
	logp, err := G.LogSoftMax(n.logits)
	if err != nil {
		return nil, err
	}
	// Cross-entropy: −Σ y·log p per row, averaged over the batch. Padded
	// rows have an all-zero y and add nothing.
	ce, err := G.HadamardProd(t.y, logp)
	if err != nil {
		return nil, err
	}
	if ce, err = G.Sum(ce, 1); err != nil {
		return nil, err
	}
	if ce, err = G.Mean(ce); err != nil {
		return nil, err
	}
	if t.cost, err = G.Neg(ce); err != nil {
		return nil, err
	}
	if _, err := G.Grad(t.cost, n.learnables...); err != nil {
		return nil, fmt.Errorf("gradients: %w", err)
	}
	t.vm = G.NewTapeMachine(n.g, G.BindDualValues(n.learnables...))
	// NewTapeMachine resets BatchNorm statistics; a resumed run restores them.
	if err := p.loadStats(n); err != nil {
		return nil, err
	}
	t.xT = tensor.New(tensor.WithShape(batch, a.InC, a.InH, a.InW), tensor.WithBacking(make([]float32, batch*a.InC*a.InH*a.InW)))
	t.yT = tensor.New(tensor.WithShape(batch, a.Classes), tensor.WithBacking(make([]float32, batch*a.Classes)))
	if err := G.Let(n.x, t.xT); err != nil {
		return nil, err
	}
	if err := G.Let(t.y, t.yT); err != nil {
		return nil, err
	}
	return t, nil
}

// step trains on one batch (x: batch images, y: labels; rows past real are
// padding and carry no loss) and returns the mean loss and the number of
// correct predictions among the real rows.
func (t *trainer) step(x []float32, y []int, real int) (loss float64, correct int, err error) {
	copy(t.xT.Data().([]float32), x)
	oh := t.yT.Data().([]float32)
	clear(oh)
	k := t.p.Arch.Classes
	for i := range real {
		oh[i*k+y[i]] = 1
	}
	defer t.vm.Reset()
	if err := t.vm.RunAll(); err != nil {
		return 0, 0, fmt.Errorf("forward/backward: %w", err)
	}
	if err := t.solver.Step(G.NodesToValueGrads(t.net.learnables)); err != nil {
		return 0, 0, fmt.Errorf("solver: %w", err)
	}
	loss = float64(t.cost.Value().Data().(float32)) * float64(t.batch) / float64(max(real, 1))
	correct = countCorrect(t.net.logits.Value().Data().([]float32), y, real, k)
	return loss, correct, nil
}

// close keeps the running statistics and releases the machine.
func (t *trainer) close() {
	t.p.saveStats(t.net)
	t.vm.Close()
}

// evaluator runs the evaluation graph (BatchNorm on running statistics).
type evaluator struct {
	p     *Params
	net   *network
	vm    G.VM
	xT    *tensor.Dense
	batch int
}

func newEvaluator(p *Params, batch int) (*evaluator, error) {
	n, err := p.build(batch, false)
	if err != nil {
		return nil, err
	}
	a := p.Arch
	e := &evaluator{p: p, net: n, batch: batch}
	// EvalMode: a plain NewTapeMachine switches every BatchNorm back to
	// training (batch statistics) and resets its running statistics.
	e.vm = G.NewTapeMachine(n.g, G.EvalMode())
	e.xT = tensor.New(tensor.WithShape(batch, a.InC, a.InH, a.InW), tensor.WithBacking(make([]float32, batch*a.InC*a.InH*a.InW)))
	if err := G.Let(n.x, e.xT); err != nil {
		return nil, err
	}
	return e, nil
}

// logits runs one batch and copies its logits into out (batch × classes).
// The running statistics are loaded from Params first, as training moves
// them.
func (e *evaluator) logits(x []float32, out []float32) error {
	if err := e.p.loadStats(e.net); err != nil {
		return err
	}
	copy(e.xT.Data().([]float32), x)
	defer e.vm.Reset()
	if err := e.vm.RunAll(); err != nil {
		return fmt.Errorf("evaluation: %w", err)
	}
	copy(out, e.net.logits.Value().Data().([]float32))
	return nil
}

func (e *evaluator) close() { e.vm.Close() }

func countCorrect(logits []float32, y []int, rows, k int) int {
	c := 0
	for i := range rows {
		if argmax(logits[i*k:(i+1)*k]) == y[i] {
			c++
		}
	}
	return c
}

func argmax(x []float32) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}
