package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Target sends one request. It is called from many goroutines at once.
type Target interface {
	// Do sends one request and returns the images it carried and its
	// outcome: "" for success, else the HTTP status ("429") or "transport".
	Do(ctx context.Context) (images int, failure string)
	// BatchSize is images per request.
	BatchSize() int
}

// TargetFunc adapts a function to Target.
type TargetFunc struct {
	Batch int
	F     func(ctx context.Context) (images int, failure string)
}

func (t TargetFunc) Do(ctx context.Context) (int, string) { return t.F(ctx) }
func (t TargetFunc) BatchSize() int                       { return t.Batch }

// Load is one load level and how to measure it.
type Load struct {
	Mode        string  // ModeConcurrency or ModeRate
	Concurrency int     // closed loop: requests outstanding
	Rate        float64 // open loop: requests/s
	Poisson     bool    // open loop: exponential gaps instead of constant
	// MaxOutstanding caps open-loop requests in flight (default 1024):
	// past it, requests start late, and their latency counts from when
	// they were due, so a server that falls behind is charged for it.
	MaxOutstanding int
	Seed           uint64

	Warmup    time.Duration // discarded before measuring (default 2 s)
	Window    time.Duration // one throughput sample (default 2 s)
	Stability float64       // last 3 windows within ±this of their mean (default 0.10)
	// MaxWindows ends an unstable measurement (default 10). Duration, when
	// set, measures exactly that long instead of waiting for stability.
	MaxWindows int
	Duration   time.Duration
}

func (l *Load) defaults() error {
	switch l.Mode {
	case ModeConcurrency:
		if l.Concurrency < 1 {
			return fmt.Errorf("concurrency must be at least 1, got %d", l.Concurrency)
		}
	case ModeRate:
		if !(l.Rate > 0) || math.IsInf(l.Rate, 0) {
			return fmt.Errorf("rate must be positive, got %v", l.Rate)
		}
	default:
		return fmt.Errorf("unknown load mode %q", l.Mode)
	}
	if l.MaxOutstanding <= 0 {
		l.MaxOutstanding = 1024
	}
	if l.Warmup <= 0 {
		l.Warmup = 2 * time.Second
	}
	if l.Window <= 0 {
		l.Window = 2 * time.Second
	}
	if l.Stability <= 0 {
		l.Stability = 0.10
	}
	if l.MaxWindows <= 0 {
		l.MaxWindows = 10
	}
	l.MaxWindows = max(l.MaxWindows, 3) // the stability rule needs three
	return nil
}

// Progress is reported after every measurement window.
type Progress struct {
	Warmup     bool
	Window     int
	Throughput float64 // images/s in the last window
	Elapsed    time.Duration
}

// Run drives t at one load level: a warm-up, then windows until the last
// three agree (or Duration passes, or MaxWindows). Latency counts only
// requests that finished while measuring. The Step it returns has the
// client-side figures; Target, Model and Server are the caller's to fill.
func Run(ctx context.Context, t Target, l Load, progress func(Progress)) (Step, error) {
	if err := l.defaults(); err != nil {
		return Step{}, err
	}
	st := Step{Mode: l.Mode, BatchSize: t.BatchSize()}
	if l.Mode == ModeConcurrency {
		st.Concurrency = l.Concurrency
	} else {
		st.Rate = l.Rate
		st.Arrivals = "constant"
		if l.Poisson {
			st.Arrivals = "poisson"
		}
	}

	m := &meter{rec: NewRecorder(4096), errs: map[string]int64{}}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if l.Mode == ModeConcurrency {
		for range l.Concurrency {
			wg.Go(func() {
				for runCtx.Err() == nil {
					start := time.Now()
					n, fail := t.Do(runCtx)
					m.done(start, n, fail, runCtx)
				}
			})
		}
	} else {
		wg.Go(func() { openLoop(runCtx, t, l, m) })
	}

	finish := func() {
		stop()
		wg.Wait()
	}
	start := time.Now()
	if !sleepCtx(ctx, l.Warmup) {
		finish()
		return st, ctx.Err()
	}
	if progress != nil {
		progress(Progress{Warmup: true, Elapsed: time.Since(start)})
	}
	m.startMeasuring()
	cpu0 := cpuTime()
	t0 := time.Now()
	windows := 0
	want := l.MaxWindows
	if l.Duration > 0 {
		want = max(1, int(math.Round(float64(l.Duration)/float64(l.Window))))
	}
	tick := time.NewTicker(l.Window)
	var last time.Time = t0
	for windows < want {
		select {
		case <-ctx.Done():
			tick.Stop()
			finish()
			return st, ctx.Err()
		case now := <-tick.C:
			imgs := m.takeWindow()
			tp := float64(imgs) / now.Sub(last).Seconds()
			last = now
			st.Windows = append(st.Windows, tp)
			windows++
			if progress != nil {
				progress(Progress{Window: windows, Throughput: tp, Elapsed: time.Since(start)})
			}
		}
		if l.Duration == 0 && Stable(st.Windows, l.Stability) {
			break
		}
	}
	tick.Stop()
	m.stopMeasuring()
	elapsed := time.Since(t0) // what finished after the last tick counted too
	cpu := cpuTime() - cpu0
	finish()

	st.Stable = Stable(st.Windows, l.Stability)
	st.Seconds = elapsed.Seconds()
	st.Requests, st.Images = m.requests, m.images
	if st.Seconds > 0 {
		st.Throughput = float64(st.Requests) / st.Seconds
		st.ImagesPerSec = float64(st.Images) / st.Seconds
		st.ClientCPU = cpu.Seconds() / st.Seconds / float64(runtime.NumCPU())
	}
	st.Latency = m.rec.Latency()
	if len(m.errs) > 0 {
		st.Errors = m.errs
	}
	if !st.Stable && l.Duration == 0 {
		st.Warnings = append(st.Warnings, fmt.Sprintf("throughput did not settle within ±%.0f%% in %d windows", l.Stability*100, windows))
	}
	if st.Requests == 0 {
		st.Warnings = append(st.Warnings, "no request succeeded while measuring")
	}
	return st, nil
}

// openLoop starts requests on schedule, each on one of MaxOutstanding
// workers; latency counts from the scheduled time.
func openLoop(ctx context.Context, t Target, l Load, m *meter) {
	due := make(chan time.Time)
	var wg sync.WaitGroup
	for range l.MaxOutstanding {
		wg.Go(func() {
			for at := range due {
				n, fail := t.Do(ctx)
				m.done(at, n, fail, ctx)
			}
		})
	}
	defer func() {
		close(due)
		wg.Wait()
	}()
	rng := rand.New(rand.NewPCG(l.Seed, 0x5eed))
	gap := func() time.Duration {
		if l.Poisson {
			return time.Duration(rng.ExpFloat64() / l.Rate * float64(time.Second))
		}
		return time.Duration(float64(time.Second) / l.Rate)
	}
	next := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		if d := time.Until(next); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		}
		select {
		case due <- next:
		case <-ctx.Done():
			return
		}
		next = next.Add(gap())
	}
}

// meter counts outcomes; only those finishing while measuring count.
type meter struct {
	measuring atomic.Bool
	window    atomic.Int64 // images this window
	rec       *Recorder

	mu       sync.Mutex
	requests int64
	images   int64
	errs     map[string]int64
}

func (m *meter) done(start time.Time, images int, failure string, ctx context.Context) {
	if !m.measuring.Load() {
		return
	}
	if failure != "" {
		if ctx.Err() != nil && failure == "transport" {
			return // cut off by the end of the step, not the server
		}
		m.mu.Lock()
		m.errs[failure]++
		m.mu.Unlock()
		return
	}
	m.rec.Add(time.Since(start))
	m.window.Add(int64(images))
	m.mu.Lock()
	m.requests++
	m.images += int64(images)
	m.mu.Unlock()
}

func (m *meter) startMeasuring() {
	m.rec.Reset()
	m.window.Store(0)
	m.measuring.Store(true)
}

func (m *meter) stopMeasuring() { m.measuring.Store(false) }

func (m *meter) takeWindow() int64 { return m.window.Swap(0) }

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// cpuTime is this process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ErrNoSteps is returned when a sweep has nothing to run.
var ErrNoSteps = errors.New("nothing to measure: give --concurrency or --rate")
