package train

import (
	"reflect"
	"testing"

	"fastinfer/train/data"
)

func TestParseSweep(t *testing.T) {
	got, err := ParseSweep([]string{"lr=1e-3,3e-3", "width=16,32"})
	if err != nil {
		t.Fatal(err)
	}
	want := []map[string]string{
		{"lr": "1e-3", "width": "16"}, {"lr": "1e-3", "width": "32"},
		{"lr": "3e-3", "width": "16"}, {"lr": "3e-3", "width": "32"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseSweep = %v, want %v", got, want)
	}
	if got, err := ParseSweep(nil); err != nil || len(got) != 1 || len(got[0]) != 0 {
		t.Fatalf("no sweep = %v, %v; want one empty combination", got, err)
	}
	for _, bad := range [][]string{{"lr"}, {"lr="}, {"momentum=0.9"}, {"lr=1", "lr=2"}} {
		if _, err := ParseSweep(bad); err == nil {
			t.Errorf("ParseSweep(%q) succeeded", bad)
		}
	}
}

func TestApply(t *testing.T) {
	o, err := Apply(Options{LR: 1, Arch: Arch{Width: 8, Stages: []int{1}}}, map[string]string{
		"lr": "0.003", "width": "32", "blocks": "2-2-1", "batch": "128", "epochs": "3", "stem_pool": "2", "weight_decay": "1e-4", "warmup": "0.5",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Options{LR: 0.003, Batch: 128, Epochs: 3, WeightDecay: 1e-4, WarmupEpochs: 0.5,
		Arch: Arch{Width: 32, Stages: []int{2, 2, 1}, StemPool: 2}}
	if !reflect.DeepEqual(o, want) {
		t.Fatalf("Apply = %+v, want %+v", o, want)
	}
	for _, bad := range []map[string]string{{"lr": "fast"}, {"blocks": "0"}, {"blocks": ""}, {"width": "1.5"}} {
		if _, err := Apply(Options{}, bad); err == nil {
			t.Errorf("Apply(%v) succeeded", bad)
		}
	}
}

// Evaluate's confusion matrix and per-class accuracy agree with Predict.
func TestEvaluate(t *testing.T) {
	a := Arch{InC: 1, InH: 8, InW: 8, Classes: 3, Width: 2, Stages: []int{1}}
	p, err := NewParams(a, 9)
	if err != nil {
		t.Fatal(err)
	}
	s := &data.Set{C: 1, H: 8, W: 8, Classes: []string{"a", "b", "c"}}
	for i := range 7 {
		for j := range 64 {
			s.X = append(s.X, float32((i*j)%5)/5)
		}
		s.Y = append(s.Y, i%3)
	}
	e, err := Evaluate(p, s, 4)
	if err != nil {
		t.Fatal(err)
	}
	logits, err := Predict(p, s, 4)
	if err != nil {
		t.Fatal(err)
	}
	total, correct := 0, 0
	for i, y := range s.Y {
		pred := argmax(logits[i*3 : i*3+3])
		if pred == y {
			correct++
		}
		total++
	}
	sum := 0
	for _, row := range e.Confusion {
		for _, v := range row {
			sum += v
		}
	}
	if sum != 7 || e.Accuracy != float64(correct)/float64(total) {
		t.Fatalf("evaluation %+v; want accuracy %d/%d over 7 images", e, correct, total)
	}
}
