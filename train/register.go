package train

import (
	"fmt"
	"math"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/proto"

	"fastinfer/models/export"
	"fastinfer/runtime"
	"fastinfer/train/data"
)

// ParityImages is how many images the export parity check runs.
const ParityImages = 64

// Register exports p to ONNX, checks that ONNX Runtime gives the same
// logits as Gorgonia's evaluation graph on up to ParityImages images of
// sample (max abs difference ≤ 1e-4, same argmax) and, only then, writes it
// as the next version of the model folder dir. A failed check writes
// nothing and says why.
func Register(env *runtime.Env, dir string, p *Params, sample *data.Set, configYAML string, card export.Card) (int, error) {
	m, err := export.Build(p.Export())
	if err != nil {
		return 0, fmt.Errorf("export: %w", err)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return 0, err
	}
	tmp, err := os.MkdirTemp("", "fastinfer-export-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)
	path := filepath.Join(tmp, "model.onnx")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return 0, err
	}
	n := min(ParityImages, sample.Len())
	head := data.Subset(sample, sample.Len(), 0)
	head.X, head.Y = head.X[:n*head.ImageLen()], head.Y[:n]
	want, err := Predict(p, head, n)
	if err != nil {
		return 0, fmt.Errorf("parity reference: %w", err)
	}
	if err := export.CheckParity(env, path, head.X, n, want, 1e-4); err != nil {
		return 0, fmt.Errorf("export parity check failed, nothing registered: %w", err)
	}
	card.Parameters = p.Count()
	return export.WriteVersion(dir, m, configYAML, sample.Classes, card)
}

// MeanStd is the mean and standard deviation of every pixel of s (one
// channel), the normalisation the trainer applies and config.yaml repeats.
func MeanStd(s *data.Set) (float32, float32) {
	var sum, sq float64
	for _, v := range s.X {
		sum += float64(v)
		sq += float64(v) * float64(v)
	}
	n := float64(len(s.X))
	mean := sum / n
	return float32(mean), float32(max(1e-6, math.Sqrt(sq/n-mean*mean)))
}

// Normalize maps s's pixels to (x-mean)/std in place.
func Normalize(s *data.Set, mean, std float32) {
	for i, v := range s.X {
		s.X[i] = (v - mean) / std
	}
}
