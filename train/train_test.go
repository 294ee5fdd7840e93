package train

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"fastinfer/models"
	"fastinfer/models/export"
	"fastinfer/runtime"
	"fastinfer/train/data"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fashion loads a normalised subset of Fashion-MNIST once per test binary.
var (
	fashionOnce               sync.Once
	fashionTrain, fashionTest *data.Set
	fashionErr                error
)

func fashion(t *testing.T) (*data.Set, *data.Set) {
	t.Helper()
	if testing.Short() {
		t.Skip("trains a network; skipped in -short")
	}
	if _, err := os.Stat(data.FashionMNISTDir); err != nil {
		t.Skipf("Fashion-MNIST not installed (%v): `make deps` installs dataset-fashion-mnist", err)
	}
	fashionOnce.Do(func() {
		tr, err := data.FashionMNIST("", "train")
		if err != nil {
			fashionErr = err
			return
		}
		te, err := data.FashionMNIST("", "t10k")
		if err != nil {
			fashionErr = err
			return
		}
		fashionTrain, fashionTest = data.Subset(tr, 512, 1), data.Subset(te, 512, 2)
		mean, std := MeanStd(fashionTrain)
		Normalize(fashionTrain, mean, std)
		Normalize(fashionTest, mean, std)
	})
	if fashionErr != nil {
		t.Fatal(fashionErr)
	}
	return fashionTrain, fashionTest
}

var tinyArch = Arch{InC: 1, InH: 28, InW: 28, Classes: 10, Width: 16, Stages: []int{1, 1, 1}, StemPool: 2}

func quickOptions() Options {
	return Options{Arch: tinyArch, Epochs: 2, Batch: 16, LR: 3e-3, WarmupEpochs: 0, Augment: false, Seed: 1, Logger: quiet}
}

// Two epochs on 512 images must beat chance (10 %) by a wide margin, and
// the exported model must reproduce Gorgonia's logits in ONNX Runtime.
func TestFitBeatsChanceAndRegisters(t *testing.T) {
	train, test := fashion(t)
	res, err := Fit(context.Background(), quickOptions(), train, test, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Epochs) != quickOptions().Epochs || res.Interrupted {
		t.Fatalf("epochs %d, interrupted %v", len(res.Epochs), res.Interrupted)
	}
	acc := res.Epochs[len(res.Epochs)-1].ValAccuracy
	t.Logf("test accuracy after %d epochs on 512 images: %.3f (loss %.3f → %.3f)", len(res.Epochs), acc, res.Epochs[0].Loss, res.Epochs[len(res.Epochs)-1].Loss)
	if acc < 0.3 { // chance is 0.1
		t.Fatalf("accuracy %.3f: not clearly better than chance", acc)
	}

	lib := os.Getenv(runtime.LibEnv)
	if lib == "" {
		t.Fatalf("%s is not set: run the tests with `make test`", runtime.LibEnv)
	}
	env, err := runtime.Open(runtime.Config{Lib: lib, Provider: runtime.ProviderCPU})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	dir := filepath.Join(t.TempDir(), "fashion-resnet")
	cfg := export.ConfigYAML(28, "gray", []float32{0.286}, []float32{0.353})
	v, err := Register(env, dir, res.Params, test, cfg, export.Card{Epochs: 2, Notes: "test"})
	if err != nil {
		t.Fatal(err)
	}
	m, ok, err := models.Read(dir)
	if err != nil || !ok || m.Latest().Number != v || len(m.Labels) != 10 {
		t.Fatalf("registered model reads back as %+v, %v, %v", m, ok, err)
	}
	var card export.Card
	if err := json.Unmarshal(m.Card, &card); err != nil || card.Parameters != res.Params.Count() {
		t.Fatalf("card %s: %v", m.Card, err)
	}
}

func TestCheckpointRoundTrip(t *testing.T) {
	p, err := NewParams(tinyArch, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range p.convs() {
		for j := range c.Mean {
			c.Mean[j], c.Var[j] = float32(i+j)/10, 1+float32(j)/7
		}
	}
	path := filepath.Join(t.TempDir(), "run.ckpt")
	o := quickOptions()
	done := []EpochStats{{Epoch: 1, Loss: 1.5}}
	if err := SaveCheckpoint(path, o, p, done); err != nil {
		t.Fatal(err)
	}
	o2, q, done2, err := LoadCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	if o2.Epochs != o.Epochs || o2.LR != o.LR || len(done2) != 1 || done2[0].Loss != 1.5 {
		t.Fatalf("options %+v done %+v", o2, done2)
	}
	pa, qa := p.Export(), q.Export()
	if !equalNets(pa, qa) {
		t.Fatal("loaded parameters differ from the saved ones")
	}
	if _, _, _, err := LoadCheckpoint(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Fatal("loading a missing checkpoint succeeded")
	}
}

func equalNets(a, b *export.Net) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// Ending the context stops training and returns the weights so far.
func TestFitInterrupted(t *testing.T) {
	train, test := fashion(t)
	ctx, cancel := context.WithCancel(context.Background())
	o := quickOptions()
	o.Progress = func(epoch, step, steps int) {
		if step == 3 {
			cancel()
		}
	}
	res, err := Fit(ctx, o, train, test, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Interrupted || len(res.Epochs) != 1 || res.Epochs[0].StepsCompleted != 3 {
		t.Fatalf("interrupted %v, epochs %+v", res.Interrupted, res.Epochs)
	}
}

func TestSchedule(t *testing.T) {
	o := Options{LR: 1, Epochs: 10, WarmupEpochs: 1}
	tests := []struct {
		epoch, step int
		want        float64
	}{
		{0, 99, 1},     // end of warm-up
		{1, 0, 1},      // peak
		{5, 50, 0.5},   // half-way through the cosine
		{9, 99, 0.000}, // the end
	}
	for _, tt := range tests {
		if got := schedule(o, tt.epoch, tt.step, 100); math.Abs(got-tt.want) > 0.01 {
			t.Errorf("schedule(epoch %d, step %d) = %v, want %v", tt.epoch, tt.step, got, tt.want)
		}
	}
}
