package train

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"testing"

	"fastinfer/train/data"
)

// TestExperiment is a manual experiment (FASTINFER_EXPERIMENT=1).
func TestExperiment(t *testing.T) {
	if os.Getenv("FASTINFER_EXPERIMENT") == "" {
		t.Skip("manual")
	}
	tr, _ := data.FashionMNIST("", "train")
	te, _ := data.FashionMNIST("", "t10k")
	n, _ := strconv.Atoi(os.Getenv("N"))
	if n > 0 {
		tr = data.Subset(tr, n, 1)
	}
	mean, std := MeanStd(tr)
	Normalize(tr, mean, std)
	Normalize(te, mean, std)
	te = data.Subset(te, 2000, 3)
	w, _ := strconv.Atoi(os.Getenv("W"))
	lr, _ := strconv.ParseFloat(os.Getenv("LR"), 64)
	ep, _ := strconv.Atoi(os.Getenv("EP"))
	o := Options{Arch: Arch{InC: 1, InH: 28, InW: 28, Classes: 10, Width: w, Stages: []int{1, 1, 1}, StemPool: 2},
		Epochs: ep, Batch: 64, LR: lr, WarmupEpochs: 0.3, Augment: os.Getenv("AUG") == "1", Seed: 1, Logger: slog.Default()}
	if _, err := Fit(context.Background(), o, tr, te, nil, nil); err != nil {
		t.Fatal(err)
	}
}
