package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// msRange returns lo..hi milliseconds, ascending.
func msRange(lo, hi int) []time.Duration {
	var s []time.Duration
	for i := lo; i <= hi; i++ {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	return s
}

func TestPercentile(t *testing.T) {
	// 999 samples of 1 ms and one of 1 s: nearest rank 99.9 of 1000 is
	// index 998, still 1 ms; only the maximum sees the outlier.
	outlier := slices.Repeat([]time.Duration{time.Millisecond}, 999)
	outlier = append(outlier, time.Second)

	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"uniform p50", msRange(1, 100), 50, 50 * time.Millisecond},
		{"uniform p90", msRange(1, 100), 90, 90 * time.Millisecond},
		{"uniform p99", msRange(1, 100), 99, 99 * time.Millisecond},
		{"uniform p99.9", msRange(1, 100), 99.9, 100 * time.Millisecond},
		{"uniform max", msRange(1, 100), 100, 100 * time.Millisecond},
		{"uniform p0 is min", msRange(1, 100), 0, time.Millisecond},
		{"uniform p1", msRange(1, 100), 1, time.Millisecond},
		{"uniform p1.5", msRange(1, 100), 1.5, 2 * time.Millisecond},
		{"single p0", []time.Duration{7}, 0, 7},
		{"single p50", []time.Duration{7}, 50, 7},
		{"single p100", []time.Duration{7}, 100, 7},
		{"two p50", []time.Duration{3, 9}, 50, 3},
		{"two p50.1", []time.Duration{3, 9}, 50.1, 9},
		{"two p99", []time.Duration{3, 9}, 99, 9},
		{"outlier p99", outlier, 99, time.Millisecond},
		{"outlier p99.9", outlier, 99.9, time.Millisecond},
		{"outlier p99.95", outlier, 99.95, time.Second},
		{"outlier max", outlier, 100, time.Second},
		{"p over 100 clamps", msRange(1, 10), 150, 10 * time.Millisecond},
		{"negative p clamps", msRange(1, 10), -5, time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("Percentile(p=%g) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

// TestPercentileExponential checks sample quantiles of a seeded
// exponential distribution against the analytic -mean·ln(1-p).
func TestPercentileExponential(t *testing.T) {
	const n = 100_000
	const mean = 10 * float64(time.Millisecond)
	rng := rand.New(rand.NewPCG(1, 2))
	s := make([]time.Duration, n)
	for i := range s {
		s[i] = time.Duration(rng.ExpFloat64() * mean)
	}
	slices.Sort(s)
	for _, p := range []float64{50, 90, 95, 99, 99.9} {
		want := -mean * math.Log(1-p/100)
		got := float64(Percentile(s, p))
		if math.Abs(got-want) > 0.05*want {
			t.Errorf("p%g = %v, want %v ±5%%", p, time.Duration(got), time.Duration(want))
		}
	}
}

func TestRecorderLatency(t *testing.T) {
	tests := []struct {
		name    string
		samples []time.Duration
		want    Latency
	}{
		{"empty", nil, Latency{}},
		{"single", []time.Duration{1500 * time.Microsecond},
			Latency{Mean: 1.5, P50: 1.5, P90: 1.5, P95: 1.5, P99: 1.5, P999: 1.5, Max: 1.5}},
		// Shuffled order: Latency must sort.
		{"uniform 1..100 reversed", reversed(msRange(1, 100)),
			Latency{Mean: 50.5, P50: 50, P90: 90, P95: 95, P99: 99, P999: 100, Max: 100}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRecorder(len(tt.samples))
			for _, d := range tt.samples {
				r.Add(d)
			}
			if r.Len() != len(tt.samples) {
				t.Errorf("Len = %d, want %d", r.Len(), len(tt.samples))
			}
			if got := r.Latency(); got != tt.want {
				t.Errorf("Latency = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func reversed(s []time.Duration) []time.Duration {
	slices.Reverse(s)
	return s
}

func TestRecorderConcurrentAndReset(t *testing.T) {
	tests := []struct {
		name       string
		goroutines int
		perG       int
		capHint    int
	}{
		{"preallocated", 8, 1000, 8000},
		{"growing", 8, 1000, 0},
		{"negative hint", 2, 10, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRecorder(tt.capHint)
			var wg sync.WaitGroup
			for g := range tt.goroutines {
				wg.Go(func() {
					// Goroutine g adds g+1 ms, so the max and mean are known.
					for range tt.perG {
						r.Add(time.Duration(g+1) * time.Millisecond)
					}
				})
			}
			wg.Wait()
			if got, want := r.Len(), tt.goroutines*tt.perG; got != want {
				t.Fatalf("Len = %d, want %d", got, want)
			}
			l := r.Latency()
			if want := float64(tt.goroutines); l.Max != want {
				t.Errorf("Max = %g, want %g", l.Max, want)
			}
			if want := float64(tt.goroutines+1) / 2; math.Abs(l.Mean-want) > 1e-9 {
				t.Errorf("Mean = %g, want %g", l.Mean, want)
			}
			r.Reset()
			if r.Len() != 0 || r.Latency() != (Latency{}) {
				t.Errorf("after Reset: Len = %d, Latency = %+v", r.Len(), r.Latency())
			}
			r.Add(2 * time.Millisecond)
			if l := r.Latency(); l.P50 != 2 || l.Max != 2 {
				t.Errorf("after Reset and Add: %+v", l)
			}
		})
	}
}
