package batching

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeExec is an Executor that records concurrency and can be held.
type fakeExec struct {
	running, peak atomic.Int32
	calls         atomic.Int32
	hold          chan struct{} // if non-nil, Run waits for a receive
	err           error
}

func (f *fakeExec) Run(in []float32, rows int, out []float32) error {
	n := f.running.Add(1)
	for {
		p := f.peak.Load()
		if n <= p || f.peak.CompareAndSwap(p, n) {
			break
		}
	}
	defer f.running.Add(-1)
	f.calls.Add(1)
	if f.hold != nil {
		<-f.hold
	}
	for i := range rows {
		out[i] = in[i] * 2
	}
	return f.err
}

func TestDoRunsAndTimes(t *testing.T) {
	f := &fakeExec{}
	s := New(f, Options{})
	out := make([]float32, 2)
	tm, err := s.Do(context.Background(), []float32{1, 2}, 2, out)
	if err != nil || out[0] != 2 || out[1] != 4 {
		t.Fatalf("Do = %v, out %v", err, out)
	}
	if tm.Compute <= 0 {
		t.Errorf("compute time %v", tm.Compute)
	}
}

func TestInstancesBoundConcurrency(t *testing.T) {
	for _, instances := range []int{1, 3} {
		f := &fakeExec{hold: make(chan struct{})}
		s := New(f, Options{Instances: instances, MaxQueue: 100})
		var wg sync.WaitGroup
		for range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := s.Do(context.Background(), []float32{1}, 1, make([]float32, 1)); err != nil {
					t.Error(err)
				}
			}()
		}
		for range 10 {
			f.hold <- struct{}{}
		}
		wg.Wait()
		if p := f.peak.Load(); p != int32(instances) {
			t.Errorf("instances %d: peak concurrency %d", instances, p)
		}
	}
}

func TestQueueFullRejectsAtOnce(t *testing.T) {
	f := &fakeExec{hold: make(chan struct{})}
	s := New(f, Options{Instances: 1, MaxQueue: 2})
	var wg sync.WaitGroup
	// One running and two waiting fill it.
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Do(context.Background(), []float32{1}, 1, make([]float32, 1))
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for (f.running.Load() != 1 || s.Pending() != 2) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if _, err := s.Do(context.Background(), []float32{1}, 1, make([]float32, 1)); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("fourth request: %v, want ErrQueueFull", err)
	}
	for range 3 {
		f.hold <- struct{}{}
	}
	wg.Wait()
	if s.Pending() != 0 {
		t.Fatalf("pending = %d after drain", s.Pending())
	}
}

func TestCancelledWhileWaitingIsDropped(t *testing.T) {
	f := &fakeExec{hold: make(chan struct{})}
	s := New(f, Options{Instances: 1})
	done := make(chan struct{})
	go func() {
		s.Do(context.Background(), []float32{1}, 1, make([]float32, 1))
		close(done)
	}()
	for f.running.Load() != 1 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() {
		_, err := s.Do(ctx, []float32{1}, 1, make([]float32, 1))
		errc <- err
	}()
	for s.Pending() != 1 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	f.hold <- struct{}{}
	<-done
	if c := f.calls.Load(); c != 1 {
		t.Fatalf("executor ran %d times; the cancelled request must not run", c)
	}
}

func TestExecutorErrorReturned(t *testing.T) {
	boom := errors.New("boom")
	s := New(&fakeExec{err: boom}, Options{})
	if _, err := s.Do(context.Background(), []float32{1}, 1, make([]float32, 1)); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
}
