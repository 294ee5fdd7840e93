package train

import (
	"fmt"
	"sync"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// trainer runs optimisation steps on a fixed-size batch. Only Gorgonia's
// TapeMachine supports BatchNorm's backward pass, so that is what runs.
//
// A TapeMachine runs on one goroutine and OpenBLAS's threads gain little on
// these small convolutions (two single-threaded processes train 1.84× as
// fast as one multi-threaded one, measured), so the batch is split across
// replicas: graphs over copies of the weights, run concurrently, their
// gradients averaged into the first before one solver step (data
// parallelism without a device).
type trainer struct {
	p        *Params
	replicas []*replica
	solver   G.Solver
	batch    int
}

// replica is one graph over a slice of the batch.
type replica struct {
	net    *network
	vm     G.VM
	cost   *G.Node
	y      *G.Node
	xT, yT *tensor.Dense
	rows   int
	err    error
}

func newTrainer(p *Params, batch, replicas int, solver G.Solver) (*trainer, error) {
	if replicas < 1 || batch%replicas != 0 {
		return nil, fmt.Errorf("batch %d does not split into %d replicas", batch, replicas)
	}
	t := &trainer{p: p, solver: solver, batch: batch}
	for i := range replicas {
		rp := p
		if i > 0 {
			rp = p.clone()
		}
		r, err := newReplica(rp, batch/replicas)
		if err != nil {
			t.close()
			return nil, err
		}
		t.replicas = append(t.replicas, r)
	}
	return t, nil
}

func newReplica(p *Params, rows int) (*replica, error) {
	n, err := p.build(rows, true)
	if err != nil {
		return nil, err
	}
	a := p.Arch
	r := &replica{net: n, rows: rows}
	r.y = G.NewMatrix(n.g, tensor.Float32, G.WithShape(rows, a.Classes), G.WithName("y"))
	logp, err := G.LogSoftMax(n.logits)
	if err != nil {
		return nil, err
	}
	// Cross-entropy: −Σ y·log p per row, averaged over the rows. Padded
	// rows have an all-zero y and add nothing.
	ce, err := G.HadamardProd(r.y, logp)
	if err != nil {
		return nil, err
	}
	if ce, err = G.Sum(ce, 1); err != nil {
		return nil, err
	}
	if ce, err = G.Mean(ce); err != nil {
		return nil, err
	}
	if r.cost, err = G.Neg(ce); err != nil {
		return nil, err
	}
	if _, err := G.Grad(r.cost, n.learnables...); err != nil {
		return nil, fmt.Errorf("gradients: %w", err)
	}
	r.vm = G.NewTapeMachine(n.g, G.BindDualValues(n.learnables...))
	// NewTapeMachine resets BatchNorm statistics; a resumed run restores them.
	if err := p.loadStats(n); err != nil {
		return nil, err
	}
	r.xT = tensor.New(tensor.WithShape(rows, a.InC, a.InH, a.InW), tensor.WithBacking(make([]float32, rows*a.InC*a.InH*a.InW)))
	r.yT = tensor.New(tensor.WithShape(rows, a.Classes), tensor.WithBacking(make([]float32, rows*a.Classes)))
	if err := G.Let(n.x, r.xT); err != nil {
		return nil, err
	}
	if err := G.Let(r.y, r.yT); err != nil {
		return nil, err
	}
	return r, nil
}

// forward loads the replica's rows (real of them carry a label) and runs
// forward and backward.
func (r *replica) forward(x []float32, y []int, real, k int) error {
	copy(r.xT.Data().([]float32), x)
	oh := r.yT.Data().([]float32)
	clear(oh)
	for i := range real {
		oh[i*k+y[i]] = 1
	}
	if err := r.vm.RunAll(); err != nil {
		return fmt.Errorf("forward/backward: %w", err)
	}
	return nil
}

// step trains on one batch (x: batch images, y: labels; rows past real are
// padding and carry no loss) and returns the mean loss and the number of
// correct predictions among the real rows.
func (t *trainer) step(x []float32, y []int, real int) (loss float64, correct int, err error) {
	defer t.reset()
	if loss, correct, err = t.gradients(x, y, real); err != nil {
		return 0, 0, err
	}
	if err := t.solver.Step(G.NodesToValueGrads(t.replicas[0].net.learnables)); err != nil {
		return 0, 0, fmt.Errorf("solver: %w", err)
	}
	t.syncWeights()
	return loss, correct, nil
}

// gradients runs forward and backward on every replica concurrently and
// leaves the batch's gradients in the first replica's parameter nodes.
// The caller resets the machines after reading them.
func (t *trainer) gradients(x []float32, y []int, real int) (loss float64, correct int, err error) {
	a := t.p.Arch
	k := a.Classes
	img := a.InC * a.InH * a.InW
	var wg sync.WaitGroup
	for i, r := range t.replicas {
		lo := i * r.rows
		rr := min(max(real-lo, 0), r.rows)
		run := func() { r.err = r.forward(x[lo*img:(lo+r.rows)*img], y[lo:lo+r.rows], rr, k) }
		if i == len(t.replicas)-1 {
			run() // the last on this goroutine
			continue
		}
		wg.Go(run)
	}
	wg.Wait()
	for _, r := range t.replicas {
		if r.err != nil {
			return 0, 0, r.err
		}
	}
	if err := t.averageGrads(); err != nil {
		return 0, 0, err
	}
	// Each replica's cost is the mean over its rows, padding included;
	// their sum × rows / real is the mean over the real rows.
	var sum float64
	for i, r := range t.replicas {
		sum += float64(r.cost.Value().Data().(float32)) * float64(r.rows)
		rr := min(max(real-i*r.rows, 0), r.rows)
		correct += countCorrect(r.net.logits.Value().Data().([]float32), y[i*r.rows:], rr, k)
	}
	return sum / float64(max(real, 1)), correct, nil
}

// syncWeights copies the updated weights from the first replica (bound
// to Params) into the others.
func (t *trainer) syncWeights() {
	for j, n := range t.replicas[0].net.learnables {
		src := n.Value().Data().([]float32)
		for _, r := range t.replicas[1:] {
			copy(r.net.learnables[j].Value().Data().([]float32), src)
		}
	}
}

func (t *trainer) reset() {
	for _, r := range t.replicas {
		r.vm.Reset()
	}
}

// averageGrads leaves the mean of every replica's gradients in the first
// replica's, which the solver reads. Each replica's cost is a mean over
// its own rows, so the mean of the gradients is the full batch's gradient.
func (t *trainer) averageGrads() error {
	if len(t.replicas) == 1 {
		return nil
	}
	scale := 1 / float32(len(t.replicas))
	for j, n := range t.replicas[0].net.learnables {
		g0, err := n.Grad()
		if err != nil {
			return fmt.Errorf("gradient of %s: %w", n.Name(), err)
		}
		dst := g0.Data().([]float32)
		for _, r := range t.replicas[1:] {
			g, err := r.net.learnables[j].Grad()
			if err != nil {
				return fmt.Errorf("gradient of %s: %w", n.Name(), err)
			}
			gs := g.Data().([]float32)
			for i, v := range gs {
				dst[i] += v
			}
			// Gorgonia accumulates into gradients that the solver zeroes
			// after its step; only the first replica's reach the solver.
			clear(gs)
		}
		for i := range dst {
			dst[i] *= scale
		}
	}
	return nil
}

// saveStats keeps the mean of the replicas' running statistics (each is
// an exponential average over its share of every batch).
func (t *trainer) saveStats() {
	if len(t.replicas) == 0 {
		return
	}
	t.p.saveStats(t.replicas[0].net)
	if len(t.replicas) == 1 {
		return
	}
	scale := 1 / float32(len(t.replicas))
	for i, c := range t.p.convs() {
		for _, r := range t.replicas[1:] {
			m, v := r.net.bn[i].Stats()
			for j, x := range m.Data().([]float32) {
				c.Mean[j] += x
			}
			for j, x := range v.Data().([]float32) {
				c.Var[j] += x
			}
		}
		for j := range c.Mean {
			c.Mean[j] *= scale
			c.Var[j] *= scale
		}
	}
}

// close keeps the running statistics and releases the machines.
func (t *trainer) close() {
	t.saveStats()
	for _, r := range t.replicas {
		r.vm.Close()
	}
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
