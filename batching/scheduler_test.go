package batching

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const inLen, outLen = 3, 2

// recorder is shared by the fake instances of one scheduler.
type recorder struct {
	mu      sync.Mutex
	batches []int     // rows per execution, in execution order
	firsts  []float32 // first input value of each execution
	running atomic.Int32
}

// fakeInstance computes out = [2·in0, in1+in2] per row, so every row's
// answer is checkable, and can be held, slowed or made to fail.
type fakeInstance struct {
	in, out []float32
	rec     *recorder
	hold    chan struct{} // if non-nil, Run waits for a receive
	started chan int      // if non-nil, Run announces its rows
	delay   time.Duration
	failOn  float32 // a batch containing a row whose in0 is this value fails
}

func newFake(rec *recorder, maxRows int) *fakeInstance {
	return &fakeInstance{in: make([]float32, maxRows*inLen), out: make([]float32, maxRows*outLen), rec: rec, failOn: float32(math.NaN())}
}

func (f *fakeInstance) Input(rows int) []byte     { return floatBytes(f.in[:rows*inLen]) }
func (f *fakeInstance) Output(rows int) []float32 { return f.out[:rows*outLen] }

func (f *fakeInstance) Run(rows int) error {
	f.rec.running.Add(1)
	defer f.rec.running.Add(-1)
	if f.started != nil {
		f.started <- rows
	}
	if f.hold != nil {
		<-f.hold
	}
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	f.rec.mu.Lock()
	f.rec.batches = append(f.rec.batches, rows)
	f.rec.firsts = append(f.rec.firsts, f.in[0])
	f.rec.mu.Unlock()
	for r := range rows {
		if f.in[r*inLen] == f.failOn {
			return errors.New("injected failure")
		}
		f.out[r*outLen] = 2 * f.in[r*inLen]
		f.out[r*outLen+1] = f.in[r*inLen+1] + f.in[r*inLen+2]
	}
	return nil
}

func newScheduler(t testing.TB, cfg Config, fakes ...*fakeInstance) *Scheduler {
	t.Helper()
	insts := make([]Instance, len(fakes))
	for i, f := range fakes {
		insts[i] = f
	}
	s, err := New(cfg, 4*inLen, outLen, insts, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// rowsFor makes rows of input whose values identify request id and row.
func rowsFor(id, rows int) []float32 {
	in := make([]float32, rows*inLen)
	for r := range rows {
		in[r*inLen] = float32(id*100 + r)
		in[r*inLen+1] = float32(id)
		in[r*inLen+2] = float32(r)
	}
	return in
}

func checkRows(t testing.TB, id int, in, out []float32, rows int) {
	t.Helper()
	for r := range rows {
		if out[r*outLen] != 2*in[r*inLen] || out[r*outLen+1] != float32(id+r) {
			t.Errorf("request %d row %d: got %v, want [%v %v]", id, r, out[r*outLen:r*outLen+2], 2*in[r*inLen], id+r)
			return
		}
	}
}

// do runs one request in a goroutine and returns a channel for its result.
func do(s *Scheduler, ctx context.Context, id, rows int, o RequestOptions) <-chan result {
	ch := make(chan result, 1)
	go func() {
		in := rowsFor(id, rows)
		out := make([]float32, rows*outLen)
		tm, err := s.Do(ctx, in, rows, out, o)
		ch <- result{id: id, in: in, out: out, rows: rows, t: tm, err: err}
	}()
	return ch
}

type result struct {
	id, rows int
	in, out  []float32
	t        Timing
	err      error
}

// waitPending waits until n rows are queued (the test's only synchronisation
// with the scheduler's internals).
func waitPending(t *testing.T, s *Scheduler, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.Pending() != n {
		if time.Now().After(deadline) {
			t.Fatalf("pending = %d, want %d", s.Pending(), n)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// blockInstance starts a one-row request that holds the single instance
// until release is closed.
func blockInstance(t *testing.T, s *Scheduler, f *fakeInstance) (release func(), blocked <-chan result) {
	t.Helper()
	f.hold = make(chan struct{})
	f.started = make(chan int, 64)
	ch := do(s, context.Background(), 999, 1, RequestOptions{})
	<-f.started
	var once sync.Once
	return func() { once.Do(func() { close(f.hold) }) }, ch
}

func TestEveryRequestGetsItsOwnRows(t *testing.T) {
	for _, tc := range []struct {
		name      string
		threshold int // parallelGatherBytes
	}{{"serial gather", 1 << 30}, {"parallel gather", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			old := parallelGatherBytes
			parallelGatherBytes = tc.threshold
			defer func() { parallelGatherBytes = old }()
			everyRequestGetsItsOwnRows(t)
		})
	}
}

func everyRequestGetsItsOwnRows(t *testing.T) {
	rec := &recorder{}
	const maxBatch = 8
	s := newScheduler(t, Config{MaxBatchSize: maxBatch, MaxQueueDelay: time.Millisecond, PreferredBatchSizes: []int{4}, PriorityLevels: 2},
		newFake(rec, maxBatch), newFake(rec, maxBatch), newFake(rec, maxBatch))
	const n = 1000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for id := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rows := 1 + rand.IntN(12) // some larger than a batch: split
			in := rowsFor(id, rows)
			out := make([]float32, rows*outLen)
			o := RequestOptions{Priority: 1 + id%2}
			var err error
			if id%3 == 0 {
				_, err = s.Do(context.Background(), in, rows, out, o)
			} else {
				// As bytes, starting 1, 2 or 3 bytes into a buffer
				// (an HTTP body's tensor after its header).
				off := id%3 + id%2
				buf := make([]byte, off+4*len(in))
				copy(buf[off:], floatBytes(in))
				_, err = s.DoBytes(context.Background(), buf[off:], rows, out, o)
			}
			if err != nil {
				errs <- err
				return
			}
			checkRows(t, id, in, out, rows)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	batched := 0
	for _, b := range rec.batches {
		if b > maxBatch {
			t.Fatalf("execution of %d rows exceeds max batch %d", b, maxBatch)
		}
		if b > 1 {
			batched++
		}
	}
	if batched == 0 {
		t.Error("no execution carried more than one row: the batcher did not batch")
	}
}

func TestLoneRequestDoesNotWaitForCompany(t *testing.T) {
	rec := &recorder{}
	s := newScheduler(t, Config{MaxBatchSize: 8, MaxQueueDelay: time.Second}, newFake(rec, 8))
	r := <-do(s, context.Background(), 1, 1, RequestOptions{})
	if r.err != nil {
		t.Fatal(r.err)
	}
	// No arrivals have been seen, so nothing is expected before the 1 s
	// ceiling: the request must leave at once, not after the delay.
	if r.t.Queue > 200*time.Millisecond {
		t.Fatalf("lone request waited %s", r.t.Queue)
	}
}

func TestMaxQueueDelayIsACeiling(t *testing.T) {
	rec := &recorder{}
	const delay = 30 * time.Millisecond
	s := newScheduler(t, Config{MaxBatchSize: 1000, MaxQueueDelay: delay}, newFake(rec, 1000))
	// Arrivals every 2 ms teach the batcher to expect company, so it waits,
	// but never past the delay.
	var results []<-chan result
	for id := range 40 {
		results = append(results, do(s, context.Background(), id, 1, RequestOptions{}))
		time.Sleep(2 * time.Millisecond)
	}
	waited := false
	for _, ch := range results {
		r := <-ch
		if r.err != nil {
			t.Fatal(r.err)
		}
		checkRows(t, r.id, r.in, r.out, 1)
		if r.t.Queue > delay+50*time.Millisecond {
			t.Errorf("request %d waited %s, ceiling %s", r.id, r.t.Queue, delay)
		}
		if r.t.BatchRows > 1 {
			waited = true
		}
	}
	if !waited {
		t.Error("steady arrivals were never batched together")
	}
}

// A closed-loop client cannot send again before it is answered, so for it
// waiting only adds latency: after a few fruitless waits the batcher stops
// waiting (bar one probe in probeEvery) even though the arrival gap is
// well under the delay.
// Closed-loop clients (each sends again only when answered): once all k
// of them are queued nobody else can come, so the batch must not wait for
// the delay ceiling round after round. With 4 such clients the batcher used
// to wait the full delay every round (one payoff average for all queue
// lengths, kept up by the waits that did bring the other three).
func TestClosedLoopClientsAreNotMadeToWait(t *testing.T) {
	for _, clients := range []int{1, 3, 4} {
		t.Run(fmt.Sprintf("%d clients", clients), func(t *testing.T) {
			rec := &recorder{}
			const delay = 40 * time.Millisecond
			s := newScheduler(t, Config{MaxBatchSize: 8, MaxQueueDelay: delay}, newFake(rec, 8))
			const rounds = 96
			var waited atomic.Int32
			var wg sync.WaitGroup
			for c := range clients {
				wg.Go(func() {
					for i := range rounds {
						r := <-do(s, context.Background(), c*1000+i, 1, RequestOptions{})
						if r.err != nil {
							t.Error(r.err)
							return
						}
						if r.t.Queue >= delay/2 {
							waited.Add(1)
						}
					}
				})
			}
			wg.Wait()
			// Six misses take a payoff from 1 below the floor (0.8⁶ < 0.3);
			// after that one wait in probeEvery is still tried. Each wasted
			// wait delays the whole round of clients.
			if max := clients * (7 + rounds/probeEvery); int(waited.Load()) > max {
				t.Fatalf("%d of %d requests waited for company, want at most %d", waited.Load(), clients*rounds, max)
			}
			t.Logf("%d of %d requests waited", waited.Load(), clients*rounds)
		})
	}
}

// Probes that keep bringing nobody are spaced out: a lone closed-loop
// client over 2,000 requests pays the delay about 15 times, not once in
// every probeEvery requests (125 times).
func TestFailedProbesBackOff(t *testing.T) {
	rec := &recorder{}
	const delay = 20 * time.Millisecond
	s := newScheduler(t, Config{MaxBatchSize: 8, MaxQueueDelay: delay}, newFake(rec, 8))
	const n = 2000
	waited := 0
	for id := range n {
		r := <-do(s, context.Background(), id, 1, RequestOptions{})
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.t.Queue >= delay/2 {
			waited++
		}
	}
	// 6 misses before the floor, then probes after 16, 32, … 1024 skips.
	if waited > 15 {
		t.Fatalf("%d of %d sequential requests waited, want at most 15", waited, n)
	}
	t.Logf("%d of %d requests waited", waited, n)
}

func TestFullOrPreferredBatchLeavesAtOnce(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		queued    int
		wantBatch int
	}{
		{"preferred size", Config{MaxBatchSize: 8, PreferredBatchSizes: []int{4, 6}}, 5, 4},
		{"largest preferred", Config{MaxBatchSize: 8, PreferredBatchSizes: []int{2, 4}}, 7, 4},
		{"full batch", Config{MaxBatchSize: 3}, 5, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			f := newFake(rec, 8)
			tt.cfg.MaxQueueDelay = time.Hour // only the size rules may release it
			s := newScheduler(t, tt.cfg, f)
			release, blocked := blockInstance(t, s, f)
			var chans []<-chan result
			for id := range tt.queued {
				chans = append(chans, do(s, context.Background(), id, 1, RequestOptions{}))
				waitPending(t, s, id+1)
			}
			release()
			<-blocked
			// The first wantBatch requests finish as one execution, long
			// before the hour-long delay.
			for _, ch := range chans[:tt.wantBatch] {
				select {
				case r := <-ch:
					if r.err != nil || r.t.BatchRows != tt.wantBatch {
						t.Fatalf("request %d: %v, batch of %d, want %d", r.id, r.err, r.t.BatchRows, tt.wantBatch)
					}
					checkRows(t, r.id, r.in, r.out, 1)
				case <-time.After(10 * time.Second):
					t.Fatal("batch did not leave")
				}
			}
			// Close drains the rest at once.
			s.Close()
			for _, ch := range chans[tt.wantBatch:] {
				if r := <-ch; r.err != nil {
					t.Fatal(r.err)
				}
			}
		})
	}
}

func TestQueueFull(t *testing.T) {
	rec := &recorder{}
	f := newFake(rec, 4)
	s := newScheduler(t, Config{MaxBatchSize: 4, MaxQueueRows: 5}, f)
	release, _ := blockInstance(t, s, f)
	defer release()
	first := do(s, context.Background(), 1, 3, RequestOptions{})
	waitPending(t, s, 3)
	second := do(s, context.Background(), 2, 2, RequestOptions{})
	waitPending(t, s, 5)
	_, err := s.Do(context.Background(), rowsFor(3, 1), 1, make([]float32, outLen), RequestOptions{})
	if !errors.Is(err, ErrQueueFull) {
		t.Fatalf("err = %v, want ErrQueueFull", err)
	}
	release()
	for _, ch := range []<-chan result{first, second} {
		if r := <-ch; r.err != nil {
			t.Fatal(r.err)
		}
	}
}

func TestQueueTimeout(t *testing.T) {
	rec := &recorder{}
	f := newFake(rec, 4)
	s := newScheduler(t, Config{MaxBatchSize: 4, DefaultTimeout: time.Hour}, f)
	release, _ := blockInstance(t, s, f)
	defer release()
	// The request's own timeout shortens the hour-long default.
	r := <-do(s, context.Background(), 7, 2, RequestOptions{Timeout: 20 * time.Millisecond})
	if !errors.Is(r.err, ErrQueueTimeout) {
		t.Fatalf("err = %v, want ErrQueueTimeout", r.err)
	}
	if s.Pending() != 0 {
		t.Fatalf("timed-out rows still queued: %d", s.Pending())
	}
	release()
	s.Close()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, first := range rec.firsts {
		if first == 700 {
			t.Fatal("the timed-out request was executed")
		}
	}
}

func TestCancelledWhileQueued(t *testing.T) {
	rec := &recorder{}
	f := newFake(rec, 4)
	s := newScheduler(t, Config{MaxBatchSize: 4}, f)
	release, _ := blockInstance(t, s, f)
	defer release()
	ctx, cancel := context.WithCancel(context.Background())
	ch := do(s, ctx, 5, 1, RequestOptions{})
	waitPending(t, s, 1)
	cancel()
	if r := <-ch; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("err = %v", r.err)
	}
	if s.Pending() != 0 {
		t.Fatal("cancelled rows still queued")
	}
}

func TestGoneClientsRowsNeverRun(t *testing.T) {
	rec := &recorder{}
	f := newFake(rec, 1)
	s := newScheduler(t, Config{MaxBatchSize: 1}, f)
	release, blocked := blockInstance(t, s, f)
	defer release()
	var asked [5]atomic.Int32
	chans := map[int]<-chan result{}
	for id := 1; id <= 4; id++ {
		left := id%2 == 0
		o := RequestOptions{Gone: func() bool { asked[id].Add(1); return left }}
		chans[id] = do(s, context.Background(), id, 1, o)
		waitPending(t, s, id) // keeps the queue in id order
	}
	time.Sleep(GoneCheckAfter + time.Millisecond) // every request has now queued long enough to be asked
	release()
	if r := <-blocked; r.err != nil {
		t.Fatal(r.err)
	}
	for id := 1; id <= 4; id++ {
		r := <-chans[id]
		if id%2 == 0 {
			if !errors.Is(r.err, ErrClientGone) {
				t.Errorf("request %d whose client left: err = %v, want ErrClientGone", id, r.err)
			}
			continue
		}
		if r.err != nil {
			t.Errorf("request %d: %v", id, r.err)
		}
		checkRows(t, id, r.in, r.out, 1)
	}
	for id := 1; id <= 4; id++ {
		if n := asked[id].Load(); n != 1 {
			t.Errorf("request %d: Gone asked %d times, want 1", id, n)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if want := []float32{99900, 100, 300}; !slices.Equal(rec.firsts, want) {
		t.Errorf("executions started with rows %v, want %v (the left clients' rows must not run)", rec.firsts, want)
	}
	if s.Pending() != 0 {
		t.Errorf("%d rows still pending", s.Pending())
	}
}

func TestDeadlineShedding(t *testing.T) {
	rec := &recorder{}
	f := newFake(rec, 4)
	f.delay = 20 * time.Millisecond
	s := newScheduler(t, Config{MaxBatchSize: 4}, f)
	// Teach the latency model: executions take about 20 ms.
	for id := range 3 {
		if r := <-do(s, context.Background(), id, 2, RequestOptions{}); r.err != nil {
			t.Fatal(r.err)
		}
	}
	f.delay = 0
	release, _ := blockInstance(t, s, f)
	defer release()
	start := time.Now()
	_, err := s.Do(context.Background(), rowsFor(9, 4), 4, make([]float32, 4*outLen), RequestOptions{Timeout: 5 * time.Millisecond})
	if !errors.Is(err, ErrDeadlineUnmeetable) {
		t.Fatalf("err = %v, want ErrDeadlineUnmeetable", err)
	}
	if d := time.Since(start); d > 5*time.Millisecond {
		t.Errorf("shedding took %s; it must answer at once", d)
	}
	// A generous timeout is admitted.
	ok := do(s, context.Background(), 10, 1, RequestOptions{Timeout: 10 * time.Second})
	waitPending(t, s, 1)
	release()
	if r := <-ok; r.err != nil {
		t.Fatal(r.err)
	}
}

func TestPriorityOvertakes(t *testing.T) {
	rec := &recorder{}
	f := newFake(rec, 1)
	s := newScheduler(t, Config{MaxBatchSize: 1, PriorityLevels: 2}, f)
	release, blocked := blockInstance(t, s, f)
	low := do(s, context.Background(), 1, 1, RequestOptions{Priority: 2})
	waitPending(t, s, 1)
	high := do(s, context.Background(), 2, 1, RequestOptions{Priority: 1})
	waitPending(t, s, 2)
	release()
	<-blocked
	for _, ch := range []<-chan result{low, high} {
		if r := <-ch; r.err != nil {
			t.Fatal(r.err)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	// Executions: the blocker (999 → 99900), then high (200), then low (100).
	if len(rec.firsts) != 3 || rec.firsts[1] != 200 || rec.firsts[2] != 100 {
		t.Fatalf("execution order by first input: %v, want [99900 200 100]", rec.firsts)
	}
	if _, err := s.Do(context.Background(), rowsFor(3, 1), 1, make([]float32, outLen), RequestOptions{Priority: 3}); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("priority 3 of 2: %v", err)
	}
}

func TestCloseDrainsQueue(t *testing.T) {
	rec := &recorder{}
	f := newFake(rec, 2)
	s := newScheduler(t, Config{MaxBatchSize: 2, MaxQueueDelay: time.Hour}, f)
	release, blocked := blockInstance(t, s, f)
	var chans []<-chan result
	for id := range 5 {
		chans = append(chans, do(s, context.Background(), id, 1, RequestOptions{}))
	}
	waitPending(t, s, 5)
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	// Closed to newcomers at once… (an already-cancelled context makes an
	// admitted probe withdraw instead of waiting on the held instance)
	probe, cancel := context.WithCancel(context.Background())
	cancel()
	for {
		_, err := s.Do(probe, rowsFor(8, 1), 1, make([]float32, outLen), RequestOptions{})
		if errors.Is(err, ErrClosed) {
			break
		}
		if !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Microsecond)
	}
	release()
	<-blocked
	// …while everything queued before still completes.
	for _, ch := range chans {
		r := <-ch
		if r.err != nil {
			t.Fatal(r.err)
		}
		checkRows(t, r.id, r.in, r.out, 1)
	}
	<-closed
}

func TestFailedExecutionFailsOnlyItsRequests(t *testing.T) {
	rec := &recorder{}
	f := newFake(rec, 1)
	f.failOn = 300 // request 3, row 0
	s := newScheduler(t, Config{MaxBatchSize: 1}, f)
	for id := range 6 {
		r := <-do(s, context.Background(), id, 2, RequestOptions{})
		if id == 3 {
			if r.err == nil {
				t.Fatal("request 3 succeeded despite its failed execution")
			}
			continue
		}
		if r.err != nil {
			t.Fatalf("request %d: %v", id, r.err)
		}
		checkRows(t, id, r.in, r.out, 2)
	}
	if s.Pending() != 0 {
		t.Fatal("the failed request's second row is still queued")
	}
}

func TestBadRequests(t *testing.T) {
	s := newScheduler(t, Config{}, newFake(&recorder{}, 1))
	tests := []struct {
		name    string
		in, out int
		rows    int
	}{
		{"zero rows", 3, 2, 0},
		{"short input", 2, 2, 1},
		{"short output", 3, 1, 1},
	}
	for _, tt := range tests {
		if _, err := s.Do(context.Background(), make([]float32, tt.in), tt.rows, make([]float32, tt.out), RequestOptions{}); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s: %v", tt.name, err)
		}
		if _, err := s.DoBytes(context.Background(), make([]byte, 4*tt.in), tt.rows, make([]float32, tt.out), RequestOptions{}); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s, as bytes: %v", tt.name, err)
		}
	}
	// A byte short of a row is short too.
	if _, err := s.DoBytes(context.Background(), make([]byte, 4*3-1), 1, make([]float32, 2), RequestOptions{}); !errors.Is(err, ErrBadRequest) {
		t.Errorf("input a byte short: %v", err)
	}
	if _, err := New(Config{}, 3, 2, nil, nil); err == nil {
		t.Error("New without instances succeeded")
	}
}

func TestLinearFit(t *testing.T) {
	tests := []struct {
		name   string
		points [][2]float64
		x, y   float64
	}{
		{"line", [][2]float64{{1, 3}, {2, 5}, {4, 9}, {8, 17}}, 16, 33},
		{"one size", [][2]float64{{4, 8}, {4, 8}}, 8, 16},
		{"flat", [][2]float64{{1, 5}, {2, 5}, {3, 5}}, 10, 5},
	}
	for _, tt := range tests {
		f := linearFit{decay: 0.9}
		for _, p := range tt.points {
			f.add(p[0], p[1])
		}
		if got := f.at(tt.x); math.Abs(got-tt.y) > 1e-6 {
			t.Errorf("%s: at(%v) = %v, want %v (a=%v b=%v)", tt.name, tt.x, got, tt.y, f.a, f.b)
		}
	}
}

// noopInstance does nothing: it measures the batcher's own cost.
type noopInstance struct{ buf []float32 }

func (n *noopInstance) Input(rows int) []byte     { return floatBytes(n.buf[:rows*inLen]) }
func (n *noopInstance) Output(rows int) []float32 { return n.buf[:rows*outLen] }
func (n *noopInstance) Run(int) error             { return nil }

// BenchmarkDoNoop is the batcher's overhead per request: queue, hand-off to
// a worker, copy in and out, and wake-up, with an executor that does nothing.
func BenchmarkDoNoop(b *testing.B) {
	for _, tc := range []struct {
		name     string
		parallel bool
	}{{"serial", false}, {"parallel", true}} {
		b.Run(tc.name, func(b *testing.B) {
			s, err := New(Config{MaxBatchSize: 32, MaxQueueDelay: 0}, 4*inLen, outLen,
				[]Instance{&noopInstance{buf: make([]float32, 32*inLen)}}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			b.ReportAllocs()
			if !tc.parallel {
				in, out := make([]float32, inLen), make([]float32, outLen)
				for b.Loop() {
					if _, err := s.Do(context.Background(), in, 1, out, RequestOptions{}); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				in, out := make([]float32, inLen), make([]float32, outLen)
				for pb.Next() {
					if _, err := s.Do(context.Background(), in, 1, out, RequestOptions{}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// Copying a batch in pieces of rows puts every row where one copy would.
func TestCopyRowsInPieces(t *testing.T) {
	sizes := []int{3, 1, 5, 2} // rows of four parts, the third starting mid-request
	var parts []part
	for i, n := range sizes {
		from := 0
		if i == 2 {
			from = 4
		}
		parts = append(parts, part{r: &request{in: floatBytes(rowsFor(i, from+n))}, from: from, rows: n})
	}
	const total = 11
	want := make([]float32, total*inLen)
	copyRows(floatBytes(want), parts, 4*inLen, 0, total)
	for _, cuts := range [][]int{{0, 11}, {0, 5, 11}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {0, 3, 4, 9, 11}} {
		got := make([]float32, total*inLen)
		for i := range len(cuts) - 1 {
			copyRows(floatBytes(got), parts, 4*inLen, cuts[i], cuts[i+1])
		}
		if !slices.Equal(got, want) {
			t.Errorf("cuts %v: %v, want %v", cuts, got, want)
		}
	}
	// The one-copy answer itself: part 2 starts at its request's row 4.
	if got, w := want[4*inLen], rowsFor(2, 9)[4*inLen]; got != w {
		t.Errorf("row 4 = %v, want the third request's row 4 (%v)", got, w)
	}
}

// pinnedFake records the OS thread of its warm-up and of every run.
type pinnedFake struct {
	*fakeInstance
	warmErr error
	mu      sync.Mutex
	threads map[int]bool
}

func (p *pinnedFake) note() {
	p.mu.Lock()
	p.threads[syscall.Gettid()] = true
	p.mu.Unlock()
}

func (p *pinnedFake) Warmup() error { p.note(); return p.warmErr }

func (p *pinnedFake) Run(rows int) error { p.note(); return p.fakeInstance.Run(rows) }

// A Pinned instance is warmed up and runs on one OS thread only, however
// the Go scheduler moves goroutines; a failed warm-up fails New.
func TestPinnedInstancesStayOnOneThread(t *testing.T) {
	rec := &recorder{}
	pins := []*pinnedFake{
		{fakeInstance: newFake(rec, 4), threads: map[int]bool{}},
		{fakeInstance: newFake(rec, 4), threads: map[int]bool{}},
	}
	s, err := New(Config{MaxBatchSize: 4, MaxQueueDelay: 100 * time.Microsecond}, 4*inLen, outLen, []Instance{pins[0], pins[1]}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var wg sync.WaitGroup
	for id := range 200 {
		wg.Go(func() {
			in := rowsFor(id, 1)
			out := make([]float32, outLen)
			if _, err := s.Do(context.Background(), in, 1, out, RequestOptions{}); err != nil {
				t.Error(err)
				return
			}
			checkRows(t, id, in, out, 1)
			runtime.Gosched()
		})
	}
	wg.Wait()
	for i, p := range pins {
		if len(p.threads) != 1 {
			t.Errorf("instance %d ran on %d OS threads, want 1", i, len(p.threads))
		}
	}

	bad := &pinnedFake{fakeInstance: newFake(rec, 4), threads: map[int]bool{}, warmErr: errors.New("out of GPU memory")}
	if _, err := New(Config{MaxBatchSize: 4}, 4*inLen, outLen, []Instance{newFake(rec, 4), bad}, nil); err == nil || !strings.Contains(err.Error(), "out of GPU memory") {
		t.Errorf("New with a failing warm-up: %v", err)
	}
}
