package bench

import "math"

// stableWindows is how many trailing windows must agree, as in
// perf_analyzer.
const stableWindows = 3

// Stable reports perf_analyzer's stability rule: at least three windows,
// and each of the last three within ±pct (0.10 = 10%) of their mean.
// Earlier windows are warm-up history and do not count. A zero mean (no
// throughput at all) is never stable.
func Stable(windows []float64, pct float64) bool {
	if len(windows) < stableWindows {
		return false
	}
	last := windows[len(windows)-stableWindows:]
	var sum float64
	for _, w := range last {
		sum += w
	}
	mean := sum / stableWindows
	if mean == 0 || math.IsNaN(mean) || math.IsInf(mean, 0) {
		return false
	}
	// Relative slack so a window exactly on the edge is not lost to
	// float rounding of the mean.
	limit := pct * math.Abs(mean) * (1 + 1e-9)
	for _, w := range last {
		if !(math.Abs(w-mean) <= limit) {
			return false
		}
	}
	return true
}
