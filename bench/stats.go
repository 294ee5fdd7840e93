package bench

import (
	"math"
	"slices"
	"sync"
	"time"
)

// Recorder collects request latencies from many goroutines. Add only
// appends under a mutex so it stays cheap on the hot path; sorting and
// percentiles happen once, in Latency.
type Recorder struct {
	mu      sync.Mutex
	samples []time.Duration
}

// NewRecorder returns a Recorder with room for capacityHint samples, so
// a step of known length does not grow the slice while measuring.
func NewRecorder(capacityHint int) *Recorder {
	return &Recorder{samples: make([]time.Duration, 0, max(capacityHint, 0))}
}

// Add records one sample. It is safe for concurrent use.
func (r *Recorder) Add(d time.Duration) {
	r.mu.Lock()
	r.samples = append(r.samples, d)
	r.mu.Unlock()
}

// Len is the number of samples recorded since the last Reset.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.samples)
}

// Reset drops every sample, keeping the allocation for the next step.
func (r *Recorder) Reset() {
	r.mu.Lock()
	r.samples = r.samples[:0]
	r.mu.Unlock()
}

// Latency summarises the samples in milliseconds; with no samples every
// field is zero. Adds may continue meanwhile: it works on a copy.
func (r *Recorder) Latency() Latency {
	r.mu.Lock()
	s := slices.Clone(r.samples)
	r.mu.Unlock()
	if len(s) == 0 {
		return Latency{}
	}
	slices.Sort(s)
	var sum float64
	for _, d := range s {
		sum += float64(d)
	}
	return Latency{
		Mean: sum / float64(len(s)) / float64(time.Millisecond),
		P50:  ms(Percentile(s, 50)),
		P90:  ms(Percentile(s, 90)),
		P95:  ms(Percentile(s, 95)),
		P99:  ms(Percentile(s, 99)),
		P999: ms(Percentile(s, 99.9)),
		Max:  ms(s[len(s)-1]),
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Percentile is the nearest-rank p-th percentile (0 ≤ p ≤ 100) of sorted
// samples: the smallest sample with at least p% of samples at or below
// it, so it is always an observed value. Empty input gives 0.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	// The small slack keeps ranks that are whole numbers in exact
	// arithmetic (99.9% of 1000) from rounding up past them in float64.
	i := int(math.Ceil(p*float64(n)/100-1e-9)) - 1
	return sorted[min(max(i, 0), n-1)]
}
