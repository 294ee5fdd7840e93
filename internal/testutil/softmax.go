package testutil

import (
	"math"
	"slices"
)

// Softmax turns logits into probabilities, in float64.
func Softmax(logits []float32) []float64 {
	hi := float64(slices.Max(logits))
	p := make([]float64, len(logits))
	var sum float64
	for i, v := range logits {
		p[i] = math.Exp(float64(v) - hi)
		sum += p[i]
	}
	for i := range p {
		p[i] /= sum
	}
	return p
}

// Argmax is the index of the largest value, the first one on ties.
func Argmax(v []float32) int { return slices.Index(v, slices.Max(v)) }
