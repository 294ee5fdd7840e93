package batching

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// stagedFake is a Staged instance computing what fakeInstance does, from
// whichever slot runs. It records a copy into a slot whose batch is
// running (the one thing staging must never do), the OS threads it ran
// on, and can hold a run until released.
type stagedFake struct {
	in       [2][]float32
	out      []float32
	runSlot  atomic.Int32 // slot running, or -1
	overlaps atomic.Int32 // InputSlot on the running slot
	copied   chan int     // if non-nil, InputSlot announces its slot
	hold     chan struct{}
	started  chan int // if non-nil, RunSlot announces its rows
	delay    time.Duration
	failOn   float32
	mu       sync.Mutex
	threads  map[int]bool
	batches  []int
}

func newStagedFake(maxRows int) *stagedFake {
	f := &stagedFake{out: make([]float32, maxRows*outLen), failOn: float32(math.NaN()), threads: map[int]bool{}}
	f.in[0], f.in[1] = make([]float32, maxRows*inLen), make([]float32, maxRows*inLen)
	f.runSlot.Store(-1)
	return f
}

func (f *stagedFake) Slots() int                { return 2 }
func (f *stagedFake) Input(rows int) []byte     { return f.InputSlot(0, rows) }
func (f *stagedFake) Output(rows int) []float32 { return f.out[:rows*outLen] }
func (f *stagedFake) Run(int) error             { return errors.New("Run called on a staged instance") }
func (f *stagedFake) Warmup() error             { f.note(0); return nil }
func (f *stagedFake) note(rows int)             { f.mu.Lock(); f.threads[syscall.Gettid()] = true; f.mu.Unlock() }
func (f *stagedFake) ranBatches() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.batches...)
}
func (f *stagedFake) threadCount() int { f.mu.Lock(); defer f.mu.Unlock(); return len(f.threads) }

func (f *stagedFake) InputSlot(slot, rows int) []byte {
	if int(f.runSlot.Load()) == slot {
		f.overlaps.Add(1)
	}
	if f.copied != nil {
		f.copied <- slot
	}
	return floatBytes(f.in[slot][:rows*inLen])
}

func (f *stagedFake) RunSlot(slot, rows int) error {
	f.runSlot.Store(int32(slot))
	defer f.runSlot.Store(-1)
	f.note(rows)
	f.mu.Lock()
	f.batches = append(f.batches, rows)
	f.mu.Unlock()
	if f.started != nil {
		f.started <- rows
	}
	if f.hold != nil {
		<-f.hold
	}
	time.Sleep(f.delay)
	in := f.in[slot]
	for r := range rows {
		if in[r*inLen] == f.failOn {
			return errors.New("injected failure")
		}
		f.out[r*outLen] = 2 * in[r*inLen]
		f.out[r*outLen+1] = in[r*inLen+1] + in[r*inLen+2]
	}
	return nil
}

// Many clients through staged instances: every request gets exactly its
// rows back, a slot is never written while it runs, and a pinned staged
// instance runs on one OS thread.
func TestStagedRowsAndSlots(t *testing.T) {
	fakes := []*stagedFake{newStagedFake(8), newStagedFake(8)}
	for _, f := range fakes {
		f.delay = 300 * time.Microsecond // a copy into a running slot has time to happen
	}
	s, err := New(Config{MaxBatchSize: 8, MaxQueueDelay: 200 * time.Microsecond}, 4*inLen, outLen, []Instance{fakes[0], fakes[1]}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var wg sync.WaitGroup
	for id := range 64 {
		wg.Go(func() {
			for k := range 20 {
				rows := 1 + (id+k)%11 // some larger than a batch: split across executions
				in := rowsFor(id*20+k, rows)
				out := make([]float32, rows*outLen)
				if _, err := s.Do(context.Background(), in, rows, out, RequestOptions{}); err != nil {
					t.Error(err)
					return
				}
				checkRows(t, id*20+k, in, out, rows)
			}
		})
	}
	wg.Wait()
	for i, f := range fakes {
		if n := f.overlaps.Load(); n > 0 {
			t.Errorf("instance %d: %d copies into the slot that was running", i, n)
		}
		if len(f.ranBatches()) == 0 {
			t.Errorf("instance %d never ran", i)
		}
		if n := f.threadCount(); n != 1 {
			t.Errorf("instance %d ran on %d OS threads, want 1", i, n)
		}
	}
}

// The next batch is copied in while one runs, when the queue holds a full
// batch for it; with less, nothing is copied ahead, and the rows wait for
// the run to end (another instance could have taken them).
func TestStagedCopiesAhead(t *testing.T) {
	f := newStagedFake(4)
	f.hold = make(chan struct{})
	f.started = make(chan int, 8)
	f.copied = make(chan int, 8)
	s, err := New(Config{MaxBatchSize: 4}, 4*inLen, outLen, []Instance{f}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	defer close(f.hold) // on failure, let held runs end so Close returns
	first := do(s, context.Background(), 1, 4, RequestOptions{})
	if slot := <-f.copied; slot != 0 {
		t.Fatalf("first batch copied into slot %d", slot)
	}
	<-f.started // batch 1 runs, held

	// Three rows: not a full batch, so not copied ahead.
	second := do(s, context.Background(), 2, 3, RequestOptions{})
	waitPending(t, s, 3)
	select {
	case slot := <-f.copied:
		t.Fatalf("a partial batch was copied ahead into slot %d", slot)
	case <-time.After(50 * time.Millisecond):
	}
	// One more row makes a full batch: copied into the other slot while
	// batch 1 still runs.
	third := do(s, context.Background(), 3, 1, RequestOptions{})
	select {
	case slot := <-f.copied:
		if slot != 1 {
			t.Errorf("copied ahead into slot %d, want 1", slot)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a full batch was not copied ahead while the instance ran")
	}
	if f.runSlot.Load() != 0 {
		t.Fatal("batch 1 is no longer running: the copy was not ahead")
	}
	f.hold <- struct{}{} // batch 1 ends
	if rows := <-f.started; rows != 4 {
		t.Errorf("second batch %d rows, want 4", rows)
	}
	f.hold <- struct{}{}
	for _, ch := range []<-chan result{first, second, third} {
		r := <-ch
		if r.err != nil {
			t.Fatal(r.err)
		}
		checkRows(t, r.id, r.in, r.out, r.rows)
		if r.id == 2 && r.t.Queue < 50*time.Millisecond {
			// Queued until its batch ran, not until it was copied in.
			t.Errorf("request %d queued %s, but waited for batch 1's run", r.id, r.t.Queue)
		}
	}
	if n := f.overlaps.Load(); n > 0 {
		t.Errorf("%d copies into the running slot", n)
	}
}

// A failed staged batch fails its requests only; a request split across
// the failed batch and a staged one gets the error once, and the
// scheduler serves on and closes.
func TestStagedFailure(t *testing.T) {
	f := newStagedFake(2)
	f.failOn = 300 // request 3's first row
	s, err := New(Config{MaxBatchSize: 2}, 4*inLen, outLen, []Instance{f}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := <-do(s, context.Background(), 3, 5, RequestOptions{}); r.err == nil {
		t.Fatal("a request whose batch failed succeeded")
	}
	r := <-do(s, context.Background(), 4, 5, RequestOptions{})
	if r.err != nil {
		t.Fatal(r.err)
	}
	checkRows(t, 4, r.in, r.out, 5)
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if _, err := s.Do(context.Background(), rowsFor(5, 1), 1, make([]float32, outLen), RequestOptions{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Do after Close: %v", err)
	}
}

// Close with a batch running and one copied ahead: everything queued
// before still completes, and Close returns.
func TestStagedCloseDrains(t *testing.T) {
	f := newStagedFake(2)
	f.hold = make(chan struct{})
	f.started = make(chan int, 8)
	s, err := New(Config{MaxBatchSize: 2, MaxQueueDelay: time.Hour}, 4*inLen, outLen, []Instance{f}, nil)
	if err != nil {
		t.Fatal(err)
	}
	blocked := do(s, context.Background(), 9, 2, RequestOptions{})
	<-f.started
	var chans []<-chan result
	for id := range 5 {
		chans = append(chans, do(s, context.Background(), id, 1, RequestOptions{}))
	}
	waitPending(t, s, 3) // two rows copied ahead
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	close(f.hold)
	for _, ch := range append(chans, blocked) {
		r := <-ch
		if r.err != nil {
			t.Fatal(r.err)
		}
		checkRows(t, r.id, r.in, r.out, r.rows)
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if n := f.overlaps.Load(); n > 0 {
		t.Errorf("%d copies into the running slot", n)
	}
}

// Staged instances under a random mix of request sizes, priorities,
// timeouts, cancellations and departed clients, with a bounded queue:
// every request either gets exactly its rows or one of the batcher's
// errors, no slot is written while it runs, and Close returns.
func TestStagedChaos(t *testing.T) {
	fakes := []*stagedFake{newStagedFake(6), newStagedFake(6), newStagedFake(6)}
	insts := make([]Instance, len(fakes))
	for i, f := range fakes {
		f.delay = 200 * time.Microsecond
		insts[i] = f
	}
	s, err := New(Config{MaxBatchSize: 6, MaxQueueDelay: 300 * time.Microsecond, MaxQueueRows: 300, PriorityLevels: 2}, 4*inLen, outLen, insts, nil)
	if err != nil {
		t.Fatal(err)
	}
	known := []error{ErrQueueFull, ErrQueueTimeout, ErrDeadlineUnmeetable, ErrClientGone, context.Canceled, context.DeadlineExceeded}
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for g := range 48 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for k := range 40 {
				id := g*100 + k
				rows := 1 + rng.IntN(10)
				o := RequestOptions{Priority: 1 + rng.IntN(2)}
				if rng.IntN(4) == 0 {
					o.Timeout = time.Duration(1+rng.IntN(5)) * time.Millisecond
				}
				if rng.IntN(8) == 0 {
					o.Gone = func() bool { return true }
				}
				ctx, cancel := context.WithCancel(context.Background())
				if rng.IntN(8) == 0 {
					time.AfterFunc(time.Duration(rng.IntN(2000))*time.Microsecond, cancel)
				}
				in := rowsFor(id, rows)
				out := make([]float32, rows*outLen)
				_, err := s.Do(ctx, in, rows, out, o)
				cancel()
				if err == nil {
					ok.Add(1)
					checkRows(t, id, in, out, rows)
					continue
				}
				failed.Add(1)
				if !slices.ContainsFunc(known, func(e error) bool { return errors.Is(err, e) }) {
					t.Errorf("request %d: unexpected error %v", id, err)
				}
			}
		})
	}
	wg.Wait()
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	for i, f := range fakes {
		if n := f.overlaps.Load(); n > 0 {
			t.Errorf("instance %d: %d copies into the running slot", i, n)
		}
	}
	if ok.Load() == 0 {
		t.Fatal("no request succeeded")
	}
	t.Logf("%d answered, %d refused or dropped", ok.Load(), failed.Load())
}
