package train

import (
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"gorgonia.org/tensor"

	"fastinfer/models"
)

// checkpoint is what a paused run needs to continue: weights, running
// statistics, the epochs done and the options. Adam's moment estimates are
// not kept (Gorgonia does not expose them), so a resumed run restarts
// them; the learning-rate schedule continues where it stopped.
type checkpoint struct {
	Options hyper
	Arch    Arch
	Tensors [][]float32 // in paramTensors order
	Stats   [][]float32 // Mean, Var per convolution, in convs order
	Done    []EpochStats
}

// paramTensors lists every parameter tensor in a fixed order.
func (p *Params) paramTensors() []*tensor.Dense {
	var ts []*tensor.Dense
	for _, c := range p.convs() {
		ts = append(ts, c.W, c.Gamma, c.Beta)
	}
	return append(ts, p.FCW, p.FCB)
}

// SaveCheckpoint writes the run's state to path atomically.
func SaveCheckpoint(path string, o Options, p *Params, done []EpochStats) error {
	ck := checkpoint{Options: hyperOf(o), Arch: p.Arch, Done: done}
	for _, t := range p.paramTensors() {
		ck.Tensors = append(ck.Tensors, t.Data().([]float32))
	}
	for _, c := range p.convs() {
		ck.Stats = append(ck.Stats, c.Mean, c.Var)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(&ck); err != nil {
		return fmt.Errorf("encoding checkpoint: %w", err)
	}
	return models.WriteFileAtomic(filepath.Dir(path), filepath.Base(path), buf.Bytes())
}

// LoadCheckpoint reads a checkpoint back into fresh Params.
func LoadCheckpoint(path string) (Options, *Params, []EpochStats, error) {
	f, err := os.Open(path)
	if err != nil {
		return Options{}, nil, nil, err
	}
	defer f.Close()
	var ck checkpoint
	if err := gob.NewDecoder(f).Decode(&ck); err != nil {
		return Options{}, nil, nil, fmt.Errorf("decoding checkpoint %s: %w", path, err)
	}
	p, err := NewParams(ck.Arch, 0)
	if err != nil {
		return Options{}, nil, nil, err
	}
	ts := p.paramTensors()
	cs := p.convs()
	if len(ck.Tensors) != len(ts) || len(ck.Stats) != 2*len(cs) {
		return Options{}, nil, nil, errors.New("checkpoint does not match its architecture")
	}
	for i, t := range ts {
		d := t.Data().([]float32)
		if len(d) != len(ck.Tensors[i]) {
			return Options{}, nil, nil, fmt.Errorf("checkpoint tensor %d has %d values, want %d", i, len(ck.Tensors[i]), len(d))
		}
		copy(d, ck.Tensors[i])
	}
	for i, c := range cs {
		copy(c.Mean, ck.Stats[2*i])
		copy(c.Var, ck.Stats[2*i+1])
	}
	return ck.Options.options(), p, ck.Done, nil
}

// hyper is Options without its logger and callback, for gob.
type hyper struct {
	Arch                 Arch
	Epochs, Batch        int
	LR, WarmupEpochs, WD float64
	Augment              bool
	Seed                 uint64
}

func hyperOf(o Options) hyper {
	return hyper{o.Arch, o.Epochs, o.Batch, o.LR, o.WarmupEpochs, o.WeightDecay, o.Augment, o.Seed}
}

func (h hyper) options() Options {
	return Options{Arch: h.Arch, Epochs: h.Epochs, Batch: h.Batch, LR: h.LR, WarmupEpochs: h.WarmupEpochs,
		WeightDecay: h.WD, Augment: h.Augment, Seed: h.Seed}
}
