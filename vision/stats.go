package vision

import "math"

// statsSamples bounds the pixels Stats reads: a regular subsample is
// enough for drift statistics and keeps them cheap beside inference.
const statsSamples = 4096

// Stats returns a preprocessed image's brightness (mean) and contrast
// (standard deviation) in 0..1 pixel units, over all channels, by undoing
// the spec's normalisation of dst (planar, Len() values).
func (s Spec) Stats(dst []float32) (brightness, contrast float64) {
	s = s.withDefaults()
	ch := s.Channels()
	plane := len(dst) / max(ch, 1)
	if plane == 0 {
		return math.NaN(), math.NaN()
	}
	step := max(1, len(dst)/statsSamples)
	var sum, sumSq float64
	n := 0
	for i := 0; i < len(dst); i += step {
		c := min(i/plane, ch-1)
		mean, std := s.MeanStd(c)
		// x = (p·scale − mean)/std with p in 0..255, so p/255 = (x·std+mean)/(scale·255).
		v := (float64(dst[i])*std + mean) / (float64(s.Scale) * 255)
		sum += v
		sumSq += v * v
		n++
	}
	brightness = sum / float64(n)
	return brightness, math.Sqrt(max(0, sumSq/float64(n)-brightness*brightness))
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
