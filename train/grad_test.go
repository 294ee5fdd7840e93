package train

import (
	"fmt"
	"math"
	"testing"

	G "gorgonia.org/gorgonia"
)

// Gorgonia's gradients for every kind of parameter agree with finite
// differences of the loss (the backward passes of Conv2d, BatchNorm,
// MaxPool, the reshaped mean and the head are all checked).
func TestGradientsMatchFiniteDifferences(t *testing.T) {
	train, _ := fashion(t)
	a := Arch{InC: 1, InH: 28, InW: 28, Classes: 10, Width: 4, Stages: []int{1, 1}, StemPool: 2}
	p, err := NewParams(a, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range p.Blocks { // non-zero so the residual branch is exercised
		for i := range b.B.Gamma.Data().([]float32) {
			b.B.Gamma.Data().([]float32)[i] = 0.7
		}
	}
	const batch = 8
	for _, replicas := range []int{1, 2} {
		t.Run(fmt.Sprintf("replicas=%d", replicas), func(t *testing.T) {
			checkGradients(t, p, train.X[:batch*784], train.Y[:batch], batch, replicas)
		})
	}
}

// checkGradients compares the trainer's (averaged) gradients with central
// differences of its loss, two entries of every parameter.
func checkGradients(t *testing.T, p *Params, x []float32, y []int, batch, replicas int) {
	tr, err := newTrainer(p, batch, replicas, G.NewVanillaSolver(G.WithLearnRate(0)))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.close()
	loss := func() float64 {
		tr.syncWeights() // the probe perturbs the first replica's weights
		l, _, err := tr.step(x, y, batch)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	// A first step, so gradients left over from it would show: Gorgonia
	// accumulates into them and relies on the solver to zero them.
	loss()
	// One run to get the analytic gradients (the solver's step is a no-op).
	if _, _, err := tr.gradients(x, y, batch); err != nil {
		t.Fatal(err)
	}
	lead := tr.replicas[0]
	type probe struct {
		node int
		idx  int
	}
	var probes []probe
	for i := range lead.net.learnables {
		probes = append(probes, probe{i, 0}, probe{i, 1})
	}
	grads := make([]float32, len(probes))
	for k, pr := range probes {
		g, err := lead.net.learnables[pr.node].Grad()
		if err != nil {
			t.Fatal(err)
		}
		grads[k] = g.Data().([]float32)[pr.idx]
	}
	tr.reset()
	bad := 0
	for k, pr := range probes {
		n := lead.net.learnables[pr.node]
		w := n.Value().Data().([]float32)
		const h = 1e-2
		orig := w[pr.idx]
		w[pr.idx] = orig + h
		up := loss()
		w[pr.idx] = orig - h
		down := loss()
		w[pr.idx] = orig
		num := (up - down) / (2 * h)
		if d := math.Abs(num - float64(grads[k])); d > 2e-3+0.05*math.Abs(num) {
			bad++
			t.Errorf("%s[%d]: analytic %.5f, numeric %.5f", n.Name(), pr.idx, grads[k], num)
		}
	}
	t.Logf("%d of %d gradients checked wrong", bad, len(probes))
}
