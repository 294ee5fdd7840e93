package vision

import (
	"encoding/binary"
	"math"

	"fastinfer/internal/dtype"
)

// statsSamples bounds the pixels Stats reads: a regular subsample is
// enough for drift statistics and keeps them cheap beside inference.
const statsSamples = 4096

// Stats returns a preprocessed image's brightness (mean) and contrast
// (standard deviation) in 0..1 pixel units, over all channels, by undoing
// the spec's normalisation of dst (Len() values in the spec's layout).
func (s Spec) Stats(dst []float32) (brightness, contrast float64) {
	return s.stats(len(dst), func(i int) float64 { return float64(dst[i]) })
}

// StatsBytes is Stats for a tensor in datatype dt (FP32, FP16 or UINT8,
// little-endian), as IntoBytes writes it.
func (s Spec) StatsBytes(dt string, b []byte) (brightness, contrast float64) {
	switch dt {
	case "FP16":
		return s.stats(len(b)/2, func(i int) float64 { return float64(dtype.ToFloat32(binary.LittleEndian.Uint16(b[2*i:]))) })
	case "UINT8":
		return s.stats(len(b), func(i int) float64 { return float64(b[i]) })
	}
	return s.stats(len(b)/4, func(i int) float64 { return float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))) })
}

// stats is Stats over n values read by at.
func (s Spec) stats(n int, at func(i int) float64) (brightness, contrast float64) {
	s = s.withDefaults()
	ch := s.Channels()
	plane := n / max(ch, 1)
	if plane == 0 {
		return math.NaN(), math.NaN()
	}
	step := max(1, n/statsSamples)
	// Per channel, p/255 = x·a + b: hoisted out of the loop, which reads
	// every value of a small image (it was 1 % of a small model's CPU).
	var a, b [3]float64
	for c := range ch {
		mean, std := s.MeanStd(c)
		den := float64(s.Scale) * 255
		a[c], b[c] = std/den, mean/den
	}
	// Every step-th value; its channel is its plane, or its index modulo
	// ch when channels are interleaved.
	nhwc := s.Layout == LayoutNHWC
	var sum, sumSq float64
	count := 0
	for i := 0; i < n; i += step {
		c := min(i/plane, ch-1)
		if nhwc {
			c = i % ch
		}
		v := at(i)*a[c] + b[c]
		sum += v
		sumSq += v * v
		count++
	}
	brightness = sum / float64(count)
	return brightness, math.Sqrt(max(0, sumSq/float64(count)-brightness*brightness))
}

// MeanStd is channel c's normalisation: x = (p·Scale − mean)/std. A single
// value serves every channel; none means 0 and 1.
func (s Spec) MeanStd(c int) (mean, std float64) {
	return pick(s.Mean, c, 0), pick(s.Std, c, 1)
}

// pick is v[c], v[0] for a single value, def for none.
func pick(v []float32, c int, def float64) float64 {
	switch {
	case len(v) == 0:
		return def
	case len(v) == 1:
		return float64(v[0])
	case c < len(v):
		return float64(v[c])
	}
	return def
}
