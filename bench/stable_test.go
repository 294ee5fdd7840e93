package bench

import (
	"math"
	"testing"
)

func TestStable(t *testing.T) {
	tests := []struct {
		name    string
		windows []float64
		pct     float64
		want    bool
	}{
		{"nil", nil, 0.10, false},
		{"one window", []float64{100}, 0.10, false},
		{"two windows", []float64{100, 100}, 0.10, false},
		{"three equal", []float64{100, 100, 100}, 0.10, true},
		{"exactly at the edge", []float64{90, 100, 110}, 0.10, true},
		{"at the edge, fractional", []float64{0.9, 1, 1.1}, 0.10, true},
		{"just past the edge", []float64{89.9, 100, 110.1}, 0.10, false},
		{"one outlier in the last three", []float64{100, 100, 100, 100, 130}, 0.10, false},
		{"outlier first of the last three", []float64{100, 70, 100, 100}, 0.10, false},
		{"older unstable windows ignored", []float64{10, 500, 3, 100, 102, 98}, 0.10, true},
		{"tighter pct", []float64{95, 100, 105}, 0.04, false},
		{"zero mean", []float64{0, 0, 0}, 0.10, false},
		{"NaN", []float64{100, math.NaN(), 100}, 0.10, false},
		{"zero pct needs equality", []float64{5, 5, 5}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Stable(tt.windows, tt.pct); got != tt.want {
				t.Errorf("Stable(%v, %g) = %v, want %v", tt.windows, tt.pct, got, tt.want)
			}
		})
	}
}
