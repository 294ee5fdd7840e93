// Package batching schedules inference requests onto a model's execution
// instances. This first scheduler runs each request on its own (no
// micro-batching yet) on a bounded number of instances behind a bounded
// queue: overload is refused at once with ErrQueueFull instead of piling up.
package batching

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Executor runs rows of input through a model: in holds rows*inputLen
// floats, out receives rows*outputLen. runtime.Session satisfies it.
type Executor interface {
	Run(in []float32, rows int, out []float32) error
}

// Options bound a Scheduler.
type Options struct {
	Instances int // executions at once; 0 = 1
	MaxQueue  int // requests allowed to wait for an instance; 0 = 64
}

// Timing splits a request's time in the scheduler.
type Timing struct {
	Queue   time.Duration // waiting for an instance
	Compute time.Duration // inside Executor.Run
}

// ErrQueueFull is returned when MaxQueue requests are already waiting.
var ErrQueueFull = errors.New("queue full")

// Scheduler runs requests on at most Instances executions at a time.
type Scheduler struct {
	exec    Executor
	slots   chan struct{}
	waiting atomic.Int64
	limit   int64
}

// New returns a Scheduler over exec.
func New(exec Executor, o Options) *Scheduler {
	if o.Instances <= 0 {
		o.Instances = 1
	}
	if o.MaxQueue <= 0 {
		o.MaxQueue = 64
	}
	return &Scheduler{exec: exec, slots: make(chan struct{}, o.Instances), limit: int64(o.MaxQueue)}
}

// Do runs rows of in into out once an instance is free. A request whose
// context ends while it waits is dropped before it runs.
func (s *Scheduler) Do(ctx context.Context, in []float32, rows int, out []float32) (Timing, error) {
	start := time.Now()
	var t Timing
	// Count everyone not yet running; refuse rather than grow the queue.
	if s.waiting.Add(1) > s.limit+int64(cap(s.slots)-len(s.slots)) {
		s.waiting.Add(-1)
		return t, fmt.Errorf("%w: %d requests waiting", ErrQueueFull, s.limit)
	}
	select {
	case s.slots <- struct{}{}:
		s.waiting.Add(-1)
	case <-ctx.Done():
		s.waiting.Add(-1)
		return t, fmt.Errorf("waiting for an instance: %w", ctx.Err())
	}
	defer func() { <-s.slots }()
	t.Queue = time.Since(start)
	if err := ctx.Err(); err != nil {
		return t, fmt.Errorf("before execution: %w", err)
	}
	c := time.Now()
	err := s.exec.Run(in, rows, out)
	t.Compute = time.Since(c)
	return t, err
}

// Pending is the number of requests waiting for an instance.
func (s *Scheduler) Pending() int { return int(s.waiting.Load()) }
