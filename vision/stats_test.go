package vision

import (
	"math"
	"testing"
)

func TestSpecStats(t *testing.T) {
	norm := func(s Spec, pixels []float64) []float32 {
		s = s.withDefaults()
		out := make([]float32, len(pixels))
		plane := len(pixels) / s.Channels()
		for i, p := range pixels {
			c := i / plane
			out[i] = float32((p*float64(s.Scale) - pick(s.Mean, c, 0)) / pick(s.Std, c, 1))
		}
		return out
	}
	gray := Spec{Crop: 2, Color: "gray", Mean: []float32{0.2860}, Std: []float32{0.3530}}
	imagenet := Spec{Crop: 2, Mean: []float32{0.485, 0.456, 0.406}, Std: []float32{0.229, 0.224, 0.225}}
	tests := []struct {
		name               string
		spec               Spec
		pixels             []float64 // 0..255, planar
		brightness, spread float64
	}{
		{"gray uniform", gray, []float64{51, 51, 51, 51}, 0.2, 0},
		{"gray half", gray, []float64{0, 0, 255, 255}, 0.5, 0.5},
		{"rgb per-channel mean", imagenet, []float64{255, 255, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0}, 1.0 / 3, math.Sqrt(2) / 3},
		{"no normalisation", Spec{Crop: 2, Color: "gray"}, []float64{255, 255, 255, 255}, 1, 0},
	}
	for _, tt := range tests {
		b, c := tt.spec.Stats(norm(tt.spec, tt.pixels))
		if math.Abs(b-tt.brightness) > 1e-5 || math.Abs(c-tt.spread) > 1e-5 {
			t.Errorf("%s: brightness %.6f contrast %.6f, want %.6f %.6f", tt.name, b, c, tt.brightness, tt.spread)
		}
	}
	if b, _ := gray.Stats(nil); !math.IsNaN(b) {
		t.Errorf("empty input: %v", b)
	}
}

// TestSpecStatsSamplesLikeOneStride checks the per-channel loops against
// the plain definition: every step-th value of dst, each un-normalised
// with its own channel's mean and std, on inputs large enough to subsample.
func TestSpecStatsSamplesLikeOneStride(t *testing.T) {
	imagenet := Spec{Crop: 224, Mean: []float32{0.485, 0.456, 0.406}, Std: []float32{0.229, 0.224, 0.225}}
	for _, tt := range []struct {
		name string
		spec Spec
		n    int
	}{
		{"rgb 224", imagenet, 3 * 224 * 224},
		{"rgb odd plane", imagenet, 3 * 97 * 89},
		{"gray 28", Spec{Crop: 28, Color: "gray", Mean: []float32{0.286}, Std: []float32{0.353}}, 28 * 28},
	} {
		dst := make([]float32, tt.n)
		for i := range dst {
			dst[i] = float32(math.Sin(float64(i)*0.37)) * 2
		}
		s := tt.spec.withDefaults()
		ch, plane := s.Channels(), tt.n/s.Channels()
		step := max(1, tt.n/statsSamples)
		var sum, sumSq float64
		n := 0
		for i := 0; i < tt.n; i += step {
			mean, std := s.MeanStd(min(i/plane, ch-1))
			v := (float64(dst[i])*std + mean) / (float64(s.Scale) * 255)
			sum += v
			sumSq += v * v
			n++
		}
		wantB := sum / float64(n)
		wantC := math.Sqrt(sumSq/float64(n) - wantB*wantB)
		b, c := tt.spec.Stats(dst)
		if math.Abs(b-wantB) > 1e-9 || math.Abs(c-wantC) > 1e-9 {
			t.Errorf("%s: Stats = %.12f, %.12f; one stride gives %.12f, %.12f", tt.name, b, c, wantB, wantC)
		}
	}
}
