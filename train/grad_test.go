package train

import (
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
	tr, err := newTrainer(p, batch, G.NewVanillaSolver(G.WithLearnRate(0)))
	if err != nil {
		t.Fatal(err)
	}
	x, y := train.X[:batch*784], train.Y[:batch]
	loss := func() float64 {
		l, _, err := tr.step(x, y, batch)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	// One run to get the analytic gradients (the solver's step is a no-op).
	copy(tr.xT.Data().([]float32), x)
	oh := tr.yT.Data().([]float32)
	clear(oh)
	for i := range batch {
		oh[i*10+y[i]] = 1
	}
	if err := tr.vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	type probe struct {
		node int
		idx  int
	}
	var probes []probe
	for i := range tr.net.learnables {
		probes = append(probes, probe{i, 0}, probe{i, 1})
	}
	grads := make([]float32, len(probes))
	for k, pr := range probes {
		g, err := tr.net.learnables[pr.node].Grad()
		if err != nil {
			t.Fatal(err)
		}
		grads[k] = g.Data().([]float32)[pr.idx]
	}
	tr.vm.Reset()
	bad := 0
	for k, pr := range probes {
		n := tr.net.learnables[pr.node]
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
