package bench

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeTarget counts calls and requests in flight (and the most ever in
// flight) around a behaviour given per call number, from 0.
type fakeTarget struct {
	batch int
	do    func(ctx context.Context, call int64) (int, string)

	calls    atomic.Int64
	inflight atomic.Int64
	maxIn    atomic.Int64

	mu     sync.Mutex
	starts []time.Time // when each call began, if record
	record bool
}

func (f *fakeTarget) BatchSize() int { return f.batch }

func (f *fakeTarget) Do(ctx context.Context) (int, string) {
	n := f.inflight.Add(1)
	defer f.inflight.Add(-1)
	for {
		m := f.maxIn.Load()
		if n <= m || f.maxIn.CompareAndSwap(m, n) {
			break
		}
	}
	if f.record {
		f.mu.Lock()
		f.starts = append(f.starts, time.Now())
		f.mu.Unlock()
	}
	return f.do(ctx, f.calls.Add(1)-1)
}

// sleeper succeeds with batch images after d, or fails as "transport"
// when ctx ends first (as the HTTP targets would).
func sleeper(batch int, d time.Duration) *fakeTarget {
	return &fakeTarget{batch: batch, do: func(ctx context.Context, _ int64) (int, string) {
		if !sleepCtx(ctx, d) {
			return 0, "transport"
		}
		return batch, ""
	}}
}

func hasWarning(st Step, sub string) bool {
	return slices.ContainsFunc(st.Warnings, func(w string) bool { return strings.Contains(w, sub) })
}

// checkLatencyOrder checks the percentiles are ordered and at least min.
func checkLatencyOrder(t *testing.T, l Latency, minMs float64) {
	t.Helper()
	seq := []float64{l.P50, l.P90, l.P95, l.P99, l.P999, l.Max}
	if !slices.IsSorted(seq) {
		t.Errorf("percentiles not ordered p50 ≤ p90 ≤ p95 ≤ p99 ≤ p99.9 ≤ max: %+v", l)
	}
	if l.P50 < minMs || l.Mean < minMs {
		t.Errorf("p50 %.2f ms, mean %.2f ms: want both ≥ %.0f ms (the target's service time)", l.P50, l.Mean, minMs)
	}
	if l.Max < l.Mean {
		t.Errorf("max %.2f ms below mean %.2f ms", l.Max, l.Mean)
	}
}

// checkRates checks throughput and images/s are the counts over Seconds.
func checkRates(t *testing.T, st Step) {
	t.Helper()
	if st.Seconds <= 0 {
		t.Fatalf("Seconds = %v, want > 0", st.Seconds)
	}
	if want := float64(st.Requests) / st.Seconds; math.Abs(st.Throughput-want) > 1e-9*want {
		t.Errorf("Throughput = %v, want Requests/Seconds = %v", st.Throughput, want)
	}
	if want := float64(st.Images) / st.Seconds; math.Abs(st.ImagesPerSec-want) > 1e-9*want {
		t.Errorf("ImagesPerSec = %v, want Images/Seconds = %v", st.ImagesPerSec, want)
	}
}

func TestRunClosedLoop(t *testing.T) {
	const service = 10 * time.Millisecond
	tests := []struct {
		name        string
		concurrency int
		batch       int
	}{
		{"c1 b1", 1, 1},
		{"c4 b1", 4, 1},
		{"c3 b8", 3, 8},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg := sleeper(tc.batch, service)
			l := Load{Mode: ModeConcurrency, Concurrency: tc.concurrency,
				Warmup: 100 * time.Millisecond, Window: 100 * time.Millisecond, Duration: 200 * time.Millisecond}
			st, err := Run(context.Background(), tg, l, nil)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode != ModeConcurrency || st.Concurrency != tc.concurrency || st.BatchSize != tc.batch || st.Rate != 0 || st.Arrivals != "" {
				t.Errorf("step load = %q c%d b%d rate %v %q, want the load run", st.Mode, st.Concurrency, st.BatchSize, st.Rate, st.Arrivals)
			}
			if got := tg.maxIn.Load(); got != int64(tc.concurrency) {
				t.Errorf("most requests in flight = %d, want exactly the concurrency %d", got, tc.concurrency)
			}
			if n := tg.inflight.Load(); n != 0 {
				t.Errorf("%d requests still in flight after Run returned", n)
			}
			if st.Requests < 2 {
				t.Fatalf("Requests = %d, want a few", st.Requests)
			}
			if st.Images != st.Requests*int64(tc.batch) {
				t.Errorf("Images = %d, want Requests × batch = %d × %d", st.Images, st.Requests, tc.batch)
			}
			// Each worker finishes at most one request per service time.
			if limit := int64(tc.concurrency) * (int64(st.Seconds/service.Seconds()) + 2); st.Requests > limit {
				t.Errorf("Requests = %d in %.3fs, more than %d workers sleeping %v can finish (%d)", st.Requests, st.Seconds, tc.concurrency, service, limit)
			}
			checkRates(t, st)
			checkLatencyOrder(t, st.Latency, ms(service))
			// Little's law: throughput × mean latency is the mean number in
			// flight, which a closed loop keeps at its concurrency.
			inFlight := st.Throughput * st.Latency.Mean / 1000
			t.Logf("%d requests in %.3fs, %.2f in flight, latency %+v", st.Requests, st.Seconds, inFlight, st.Latency)
			if inFlight < 0.7*float64(tc.concurrency) || inFlight > 1.3*float64(tc.concurrency) {
				t.Errorf("throughput × mean latency = %.2f requests in flight, want about %d", inFlight, tc.concurrency)
			}
			if len(st.Windows) != 2 {
				t.Errorf("%d windows, want 2", len(st.Windows))
			}
			if st.Errors != nil {
				t.Errorf("Errors = %v, want none", st.Errors)
			}
			if st.ClientCPU < 0 || math.IsNaN(st.ClientCPU) {
				t.Errorf("ClientCPU = %v", st.ClientCPU)
			}
		})
	}
}

func TestRunFailures(t *testing.T) {
	t.Run("mixed", func(t *testing.T) {
		// One at a time: 429, 503 (both at once), then a 5 ms success.
		const service = 5 * time.Millisecond
		tg := &fakeTarget{batch: 2, do: func(ctx context.Context, call int64) (int, string) {
			switch call % 3 {
			case 0:
				return 0, "429"
			case 1:
				return 0, "503"
			}
			sleepCtx(ctx, service)
			return 2, ""
		}}
		l := Load{Mode: ModeConcurrency, Concurrency: 1,
			Warmup: 50 * time.Millisecond, Window: 100 * time.Millisecond, Duration: 200 * time.Millisecond}
		st, err := Run(context.Background(), tg, l, nil)
		if err != nil {
			t.Fatal(err)
		}
		if st.Requests < 2 {
			t.Fatalf("Requests = %d, want a few", st.Requests)
		}
		if len(st.Errors) != 2 {
			t.Errorf("Errors = %v, want exactly the keys 429 and 503", st.Errors)
		}
		for _, code := range []string{"429", "503"} {
			if n := st.Errors[code]; n < st.Requests-1 || n > st.Requests+1 {
				t.Errorf("Errors[%s] = %d, want one per success (%d) ±1", code, n, st.Requests)
			}
		}
		if st.Images != 2*st.Requests {
			t.Errorf("Images = %d, want 2 × %d successful requests", st.Images, st.Requests)
		}
		checkRates(t, st)
		// Two thirds of the calls fail at once: had they been recorded,
		// p50 would be about zero.
		checkLatencyOrder(t, st.Latency, ms(service))
		if hasWarning(st, "no request succeeded") {
			t.Errorf("warnings %q with %d successes", st.Warnings, st.Requests)
		}
	})

	allFail := func() *fakeTarget {
		return &fakeTarget{batch: 1, do: func(ctx context.Context, _ int64) (int, string) {
			sleepCtx(ctx, time.Millisecond)
			return 0, "503"
		}}
	}
	tests := []struct {
		name         string
		load         Load
		wantWarnings []string
	}{
		{"fixed duration", Load{Mode: ModeConcurrency, Concurrency: 2, Warmup: 50 * time.Millisecond,
			Window: 100 * time.Millisecond, Duration: 200 * time.Millisecond},
			[]string{"no request succeeded"}},
		{"until stable", Load{Mode: ModeConcurrency, Concurrency: 2, Warmup: 50 * time.Millisecond,
			Window: 100 * time.Millisecond, MaxWindows: 3},
			[]string{"no request succeeded", "did not settle"}},
		{"open loop", Load{Mode: ModeRate, Rate: 300, Warmup: 50 * time.Millisecond,
			Window: 100 * time.Millisecond, Duration: 200 * time.Millisecond},
			[]string{"no request succeeded"}},
	}
	for _, tc := range tests {
		t.Run("only failures/"+tc.name, func(t *testing.T) {
			st, err := Run(context.Background(), allFail(), tc.load, nil)
			if err != nil {
				t.Fatal(err)
			}
			if st.Requests != 0 || st.Images != 0 || st.Throughput != 0 || st.ImagesPerSec != 0 {
				t.Errorf("requests %d images %d throughput %v images/s %v, want all zero",
					st.Requests, st.Images, st.Throughput, st.ImagesPerSec)
			}
			if st.Latency != (Latency{}) {
				t.Errorf("Latency = %+v, want zero with no success", st.Latency)
			}
			if st.Errors["503"] < 1 || len(st.Errors) != 1 {
				t.Errorf("Errors = %v, want only 503, counted", st.Errors)
			}
			for i, w := range st.Windows {
				if w != 0 {
					t.Errorf("window %d throughput %v, want 0", i, w)
				}
			}
			if st.Stable {
				t.Error("Stable with zero throughput")
			}
			for _, w := range tc.wantWarnings {
				if !hasWarning(st, w) {
					t.Errorf("warnings %q lack %q", st.Warnings, w)
				}
			}
			if len(st.Warnings) != len(tc.wantWarnings) {
				t.Errorf("warnings %q, want %d", st.Warnings, len(tc.wantWarnings))
			}
		})
	}
}

func TestRunStopsWhenStable(t *testing.T) {
	tg := sleeper(1, 5*time.Millisecond)
	l := Load{Mode: ModeConcurrency, Concurrency: 4, Warmup: 100 * time.Millisecond,
		Window: 100 * time.Millisecond, Stability: 0.25, MaxWindows: 8}
	st, err := Run(context.Background(), tg, l, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Stable {
		t.Fatalf("steady target not Stable: windows %v", st.Windows)
	}
	if n := len(st.Windows); n < stableWindows || n >= l.MaxWindows {
		t.Errorf("%d windows %v, want from %d to fewer than MaxWindows %d", n, st.Windows, stableWindows, l.MaxWindows)
	}
	// It stops at the first stable window, not later.
	for n := stableWindows; n < len(st.Windows); n++ {
		if Stable(st.Windows[:n], l.Stability) {
			t.Errorf("windows %v were already stable after %d; Run went on", st.Windows, n)
			break
		}
	}
	if len(st.Warnings) != 0 {
		t.Errorf("warnings %q for a stable step", st.Warnings)
	}
}

func TestRunUnstable(t *testing.T) {
	// The progress callback flips the target between fast and slow after
	// every window, so consecutive windows differ many times over.
	var slow atomic.Bool
	tg := &fakeTarget{batch: 1, do: func(ctx context.Context, _ int64) (int, string) {
		d := time.Millisecond
		if slow.Load() {
			d = 30 * time.Millisecond
		}
		if !sleepCtx(ctx, d) {
			return 0, "transport"
		}
		return 1, ""
	}}
	progress := func(p Progress) {
		if !p.Warmup {
			slow.Store(!slow.Load())
		}
	}
	l := Load{Mode: ModeConcurrency, Concurrency: 2, Warmup: 50 * time.Millisecond,
		Window: 100 * time.Millisecond, Stability: 0.10, MaxWindows: 5}
	st, err := Run(context.Background(), tg, l, progress)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Windows) != l.MaxWindows {
		t.Fatalf("%d windows %v, want MaxWindows = %d", len(st.Windows), st.Windows, l.MaxWindows)
	}
	if lo, hi := slices.Min(st.Windows), slices.Max(st.Windows); !(hi > 3*lo) {
		t.Fatalf("windows %v do not alternate: the test's target is broken", st.Windows)
	}
	if st.Stable {
		t.Errorf("Stable with windows %v", st.Windows)
	}
	if !hasWarning(st, "did not settle") || !hasWarning(st, "5 windows") {
		t.Errorf("warnings %q, want one saying it did not settle in 5 windows", st.Warnings)
	}
	if st.Requests == 0 {
		t.Error("no requests counted")
	}
}

func TestRunDuration(t *testing.T) {
	tests := []struct {
		name       string
		duration   time.Duration
		maxWindows int
		want       int
	}{
		{"whole windows", 300 * time.Millisecond, 0, 3},
		{"rounds half up", 250 * time.Millisecond, 0, 3},
		{"rounds down", 140 * time.Millisecond, 0, 1},
		{"at least one window", 30 * time.Millisecond, 0, 1},
		// Stable after three windows and MaxWindows 3, yet it goes on.
		{"overrides stability and MaxWindows", 500 * time.Millisecond, 3, 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := Load{Mode: ModeConcurrency, Concurrency: 4, Warmup: 50 * time.Millisecond,
				Window: 100 * time.Millisecond, Stability: 0.5, MaxWindows: tc.maxWindows, Duration: tc.duration}
			st, err := Run(context.Background(), sleeper(1, 5*time.Millisecond), l, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Windows) != tc.want {
				t.Fatalf("%d windows, want round(%v / %v) = %d", len(st.Windows), tc.duration, l.Window, tc.want)
			}
			// Each tick comes at least a window after the previous one.
			if lo := float64(tc.want) * l.Window.Seconds(); st.Seconds < 0.99*lo {
				t.Errorf("Seconds = %.3f, want ≥ %d windows of %v", st.Seconds, tc.want, l.Window)
			}
			if st.Stable != Stable(st.Windows, l.Stability) {
				t.Errorf("Stable = %v for windows %v", st.Stable, st.Windows)
			}
			if hasWarning(st, "did not settle") {
				t.Errorf("warnings %q: a fixed duration does not wait for stability", st.Warnings)
			}
		})
	}
}

// gapCV is the coefficient of variation of the gaps between times.
func gapCV(ts []time.Time) float64 {
	var gaps []float64
	for i := 1; i < len(ts); i++ {
		gaps = append(gaps, ts[i].Sub(ts[i-1]).Seconds())
	}
	var sum, sq float64
	for _, g := range gaps {
		sum += g
	}
	mean := sum / float64(len(gaps))
	for _, g := range gaps {
		sq += (g - mean) * (g - mean)
	}
	return math.Sqrt(sq/float64(len(gaps))) / mean
}

func TestRunOpenLoop(t *testing.T) {
	const rate = 200.0
	tests := []struct {
		name     string
		poisson  bool
		arrivals string
		// The gaps between starts: near-constant, or exponential (CV 1).
		cvOK func(float64) bool
	}{
		{"constant", false, "constant", func(cv float64) bool { return cv < 0.5 }},
		{"poisson", true, "poisson", func(cv float64) bool { return cv > 0.6 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg := sleeper(1, 2*time.Millisecond)
			tg.record = true
			l := Load{Mode: ModeRate, Rate: rate, Poisson: tc.poisson, Seed: 42,
				Warmup: 100 * time.Millisecond, Window: 250 * time.Millisecond, Duration: 500 * time.Millisecond}
			st, err := Run(context.Background(), tg, l, nil)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode != ModeRate || st.Rate != rate || st.Arrivals != tc.arrivals || st.Concurrency != 0 || st.BatchSize != 1 {
				t.Errorf("step load = %q rate %v %q c%d b%d", st.Mode, st.Rate, st.Arrivals, st.Concurrency, st.BatchSize)
			}
			want := rate * st.Seconds
			if got := float64(st.Requests); math.Abs(got-want) > 0.3*want {
				t.Errorf("%d requests in %.3fs at %v/s, want about %.0f ±30%%", st.Requests, st.Seconds, rate, want)
			}
			if st.Images != st.Requests {
				t.Errorf("Images = %d, Requests = %d at batch 1", st.Images, st.Requests)
			}
			checkRates(t, st)
			checkLatencyOrder(t, st.Latency, 2)
			tg.mu.Lock()
			cv := gapCV(tg.starts)
			tg.mu.Unlock()
			t.Logf("%d requests in %.3fs, gap CV %.2f, latency %+v", st.Requests, st.Seconds, cv, st.Latency)
			if !tc.cvOK(cv) {
				t.Errorf("gaps between request starts have CV %.2f: not %s arrivals", cv, tc.arrivals)
			}
			if n := tg.inflight.Load(); n != 0 {
				t.Errorf("%d requests still in flight after Run returned", n)
			}
		})
	}
}

func TestRunOpenLoopChargesBacklog(t *testing.T) {
	// One request at a time of 20 ms, due every 5 ms: the server serves a
	// quarter of the schedule and every request starts later than the
	// last. Latency counts from when each was due, so it climbs far past
	// the 20 ms a request takes once it starts.
	const service = 20 * time.Millisecond
	tg := sleeper(1, service)
	l := Load{Mode: ModeRate, Rate: 200, MaxOutstanding: 1,
		Warmup: 100 * time.Millisecond, Window: 150 * time.Millisecond, Duration: 300 * time.Millisecond}
	st, err := Run(context.Background(), tg, l, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := tg.maxIn.Load(); got != 1 {
		t.Errorf("most requests in flight = %d, want MaxOutstanding 1", got)
	}
	if st.Requests < 2 {
		t.Fatalf("Requests = %d", st.Requests)
	}
	if limit := int64(st.Seconds/service.Seconds()) + 2; st.Requests > limit {
		t.Errorf("Requests = %d in %.3fs, more than one 20 ms worker can finish (%d)", st.Requests, st.Seconds, limit)
	}
	t.Logf("%d requests in %.3fs, latency %+v", st.Requests, st.Seconds, st.Latency)
	checkLatencyOrder(t, st.Latency, 3*ms(service))
	if st.Latency.Max < 5*ms(service) {
		t.Errorf("max latency %.1f ms: the backlog was not charged (want ≥ %.0f ms)", st.Latency.Max, 5*ms(service))
	}
}

func TestRunInvalidLoad(t *testing.T) {
	tests := []struct {
		name string
		load Load
		want string
	}{
		{"no mode", Load{Concurrency: 1}, "mode"},
		{"unknown mode", Load{Mode: "burst", Concurrency: 1, Rate: 10}, "burst"},
		{"concurrency 0", Load{Mode: ModeConcurrency}, "concurrency"},
		{"negative concurrency", Load{Mode: ModeConcurrency, Concurrency: -2}, "concurrency"},
		{"rate 0", Load{Mode: ModeRate}, "rate"},
		{"negative rate", Load{Mode: ModeRate, Rate: -5}, "rate"},
		{"NaN rate", Load{Mode: ModeRate, Rate: math.NaN()}, "rate"},
		{"infinite rate", Load{Mode: ModeRate, Rate: math.Inf(1)}, "rate"},
		{"rate without concurrency in closed loop", Load{Mode: ModeConcurrency, Rate: 100}, "concurrency"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg := sleeper(1, time.Millisecond)
			tc.load.Warmup, tc.load.Window, tc.load.Duration = 10*time.Millisecond, 10*time.Millisecond, 10*time.Millisecond
			_, err := Run(context.Background(), tg, tc.load, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Run error = %v, want one mentioning %q", err, tc.want)
			}
			if n := tg.calls.Load(); n != 0 {
				t.Errorf("the target was called %d times for an invalid load", n)
			}
		})
	}
}

func TestRunContextCancelled(t *testing.T) {
	const long = 20 * time.Second // any wait this long means Run ignored ctx
	tests := []struct {
		name  string
		load  Load
		after time.Duration // cancel after; < 0: before Run
		want  error
	}{
		{"before run", Load{Mode: ModeConcurrency, Concurrency: 2, Warmup: long}, -1, context.Canceled},
		{"during warm-up", Load{Mode: ModeConcurrency, Concurrency: 2, Warmup: long}, 100 * time.Millisecond, context.Canceled},
		{"while measuring", Load{Mode: ModeConcurrency, Concurrency: 2, Warmup: 50 * time.Millisecond, Window: long}, 150 * time.Millisecond, context.Canceled},
		{"open loop while measuring", Load{Mode: ModeRate, Rate: 100, Warmup: 50 * time.Millisecond, Window: long}, 150 * time.Millisecond, context.Canceled},
		{"deadline", Load{Mode: ModeConcurrency, Concurrency: 1, Warmup: 50 * time.Millisecond, Duration: long, Window: long}, 0, context.DeadlineExceeded},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg := sleeper(1, 5*time.Millisecond)
			var ctx context.Context
			var cancel context.CancelFunc
			switch {
			case tc.want == context.DeadlineExceeded:
				ctx, cancel = context.WithTimeout(context.Background(), 150*time.Millisecond)
			case tc.after < 0:
				ctx, cancel = context.WithCancel(context.Background())
				cancel()
			default:
				ctx, cancel = context.WithCancel(context.Background())
				time.AfterFunc(tc.after, cancel)
			}
			defer cancel()
			start := time.Now()
			_, err := Run(ctx, tg, tc.load, nil)
			took := time.Since(start)
			if !errors.Is(err, tc.want) {
				t.Errorf("Run error = %v, want %v", err, tc.want)
			}
			if took > 5*time.Second {
				t.Errorf("Run took %v to notice the cancellation", took)
			}
			if n := tg.inflight.Load(); n != 0 {
				t.Errorf("%d requests still in flight after Run returned", n)
			}
		})
	}
}

func TestRunProgress(t *testing.T) {
	var got []Progress
	l := Load{Mode: ModeConcurrency, Concurrency: 2, Warmup: 100 * time.Millisecond,
		Window: 100 * time.Millisecond, Duration: 300 * time.Millisecond}
	st, err := Run(context.Background(), sleeper(1, 5*time.Millisecond), l, func(p Progress) { got = append(got, p) })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1+len(st.Windows) || len(st.Windows) != 3 {
		t.Fatalf("%d progress calls for %d windows, want the warm-up and 3 windows: %+v", len(got), len(st.Windows), got)
	}
	if !got[0].Warmup || got[0].Window != 0 || got[0].Elapsed < l.Warmup {
		t.Errorf("first progress %+v, want the warm-up after ≥ %v", got[0], l.Warmup)
	}
	for i, p := range got[1:] {
		if p.Warmup || p.Window != i+1 {
			t.Errorf("progress %d = %+v, want window %d", i+1, p, i+1)
		}
		if p.Throughput != st.Windows[i] {
			t.Errorf("progress %d throughput %v, window %v", i+1, p.Throughput, st.Windows[i])
		}
		if p.Elapsed <= got[i].Elapsed {
			t.Errorf("progress %d elapsed %v not after %v", i+1, p.Elapsed, got[i].Elapsed)
		}
		if p.Throughput <= 0 {
			t.Errorf("progress %d throughput %v", i+1, p.Throughput)
		}
	}
}
