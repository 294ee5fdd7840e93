package batching

import (
	"context"
	"errors"
	"fmt"
	goruntime "runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"fastinfer/internal/fault"
)

// Instance is one execution instance of a model (an ONNX Runtime session
// with its own buffers). One worker goroutine owns it, so it need not be
// safe for concurrent use.
type Instance interface {
	// Input returns the buffer for rows rows of input (rows × the row's
	// bytes, in the model's input datatype); the scheduler fills it
	// before Run.
	Input(rows int) []byte
	// Output returns rows rows of output, valid after Run.
	Output(rows int) []float32
	// Run executes the first rows rows.
	Run(rows int) error
}

// Staged is an Instance with a second input buffer ("slot"), so the
// scheduler can copy the next batch into one slot while the other's batch
// runs: the copy leaves the instance's critical path. On a GPU a worker
// otherwise copies 64 ResNet rows (38 MB) between runs while the device
// idles. Slot 0 is Input's buffer. Run is not called on a Staged instance
// whose Slots is 2 or more; RunSlot is, one at a time, and Output holds
// its results until the next RunSlot.
type Staged interface {
	Instance
	Slots() int
	InputSlot(slot, rows int) []byte
	RunSlot(slot, rows int) error
}

// Config is a model's batching policy.
type Config struct {
	MaxBatchSize        int           // rows per execution; <= 1 runs one row at a time
	MaxQueueDelay       time.Duration // longest the oldest request waits for company
	PreferredBatchSizes []int         // sizes dispatched as soon as they can be formed
	MaxQueueRows        int           // rows allowed to wait; 0 = unbounded (not advised)
	DefaultTimeout      time.Duration // per-request timeout when the request names none; 0 = none
	PriorityLevels      int           // 1 (highest) .. PriorityLevels; 0 = 1 level
	DefaultPriority     int           // priority of requests that name none; 0 = the lowest
}

// RequestOptions are per-request scheduling parameters.
type RequestOptions struct {
	Priority int           // 1 = highest; 0 = the default
	Timeout  time.Duration // 0 = the model's default; may only shorten a default
	// Gone, when set, reports whether the caller has left (closed its
	// connection). It is asked, under the scheduler's lock, just before
	// the first rows of a request that has queued for GoneCheckAfter or
	// longer would start: a departed caller's rows are dropped instead of
	// run, and Do returns ErrClientGone. It must be cheap and must not block.
	Gone func() bool
	// MayFault says the input lies in memory another process can take
	// away while the request waits: a client's shared memory object,
	// which it may truncate, so that reading the pages past its new end
	// raises SIGBUS. Its rows are then copied into the batch with memory
	// faults turned into an error for this request (ErrInputFault), not
	// the end of the process.
	MayFault bool
}

// GoneCheckAfter is how long a request must have queued before Gone is
// asked: one that waited less has almost surely not been abandoned, and
// skipping the check keeps it off the unloaded path.
const GoneCheckAfter = time.Millisecond

// Timing is where a request's time in the scheduler went.
type Timing struct {
	Queue      time.Duration // until its first rows started executing
	Compute    time.Duration // executions its rows were part of, summed
	Executions int           // how many executions carried its rows
	BatchRows  int           // rows in the largest of those executions
	// Input and Output are those executions' copies into the batch and
	// back out, summed (Triton's compute_input and compute_output).
	Input, Output time.Duration
}

// Errors returned by Do (wrapped; test with errors.Is).
var (
	ErrQueueFull          = errors.New("queue full")
	ErrQueueTimeout       = errors.New("timed out in the queue")
	ErrDeadlineUnmeetable = errors.New("deadline cannot be met")
	ErrClosed             = errors.New("scheduler closed")
	ErrBadRequest         = errors.New("bad scheduling request")
	ErrClientGone         = errors.New("caller left before its request started")
	ErrInputFault         = errors.New("the input's memory could not be read")
)

// Scheduler batches requests for one model version onto its instances.
type Scheduler struct {
	cfg       Config
	inBytes   int // an input row, in the model's datatype
	outLen    int // output floats per row
	instances int
	obs       *Observer

	mu          sync.Mutex
	levels      [][]*request // FIFO per priority level, index 0 = priority 1
	pendingRows int
	busy        int // batches taken and not yet finished
	// running counts executions in progress. It is atomic so that an
	// instance starting a run does not queue for mu behind every request
	// arriving; aheadRoomLocked reads it under mu as before.
	running     atomic.Int32
	closed      bool
	lastArrival time.Time
	gap         float64 // moving average of the time between arrivals, seconds
	arrivals    uint64  // requests admitted, ever
	// payoff[n] is a moving average of whether waiting for company, with
	// n rows pending, brought any: closed-loop clients cannot send again
	// until answered, so for them waiting only adds latency, whatever the
	// arrival gap says. Kept per n because with k such clients waiting
	// pays while fewer than k are queued and never once all k are.
	payoff []float64
	skips  []uint64 // waits skipped per n since payoff fell, for probing
	// probeGap[n] is how many skips pass between probes: probeEvery,
	// doubling after each probe that brought nobody (up to maxProbeEvery),
	// so that a lone client's p99 is not the probes' delay.
	probeGap []uint64
	probing  bool // the wait in progress is a probe
	fit      linearFit

	arrive chan struct{} // wakes the worker that is forming a batch
	// stageWake wakes a staged worker's stager waiting for enough rows to
	// copy a batch ahead; stagers counts those waiting.
	stageWake chan struct{}
	stagers   atomic.Int32
	formMu    sync.Mutex // one worker forms a batch at a time
	wg        sync.WaitGroup
	pool      sync.Pool
}

// New starts one worker per instance. inBytes is the bytes of one input
// row, in whatever datatype the model takes (the scheduler only moves
// them), and outLen the floats of one output row.
func New(cfg Config, inBytes, outLen int, instances []Instance, obs *Observer) (*Scheduler, error) {
	if len(instances) == 0 {
		return nil, fmt.Errorf("%w: no instances", ErrBadRequest)
	}
	if inBytes <= 0 || outLen <= 0 {
		return nil, fmt.Errorf("%w: row sizes %d bytes and %d floats", ErrBadRequest, inBytes, outLen)
	}
	cfg.MaxBatchSize = max(cfg.MaxBatchSize, 1)
	cfg.PriorityLevels = max(cfg.PriorityLevels, 1)
	if cfg.DefaultPriority <= 0 || cfg.DefaultPriority > cfg.PriorityLevels {
		cfg.DefaultPriority = cfg.PriorityLevels
	}
	var pref []int
	for _, p := range cfg.PreferredBatchSizes {
		if p >= 1 && p <= cfg.MaxBatchSize {
			pref = append(pref, p)
		}
	}
	slices.Sort(pref)
	cfg.PreferredBatchSizes = slices.Compact(pref)
	if obs == nil {
		obs = nopObserver
	}
	s := &Scheduler{
		cfg: cfg, inBytes: inBytes, outLen: outLen, instances: len(instances), obs: obs,
		levels:    make([][]*request, cfg.PriorityLevels),
		arrive:    make(chan struct{}, 1),
		stageWake: make(chan struct{}, 1),
		fit:       linearFit{decay: 0.9},
		payoff:    make([]float64, cfg.MaxBatchSize+1),
		skips:     make([]uint64, cfg.MaxBatchSize+1),
		probeGap:  make([]uint64, cfg.MaxBatchSize+1),
	}
	for i := range s.payoff {
		s.payoff[i] = 1 // waiting is presumed to pay until it has not
		s.probeGap[i] = probeEvery
	}
	s.pool.New = func() any {
		t := time.NewTimer(time.Hour)
		t.Stop()
		return &request{done: make(chan struct{}, 1), timer: t}
	}
	warmed := make(chan error, len(instances))
	pinned := 0
	for _, inst := range instances {
		s.wg.Add(1)
		if p, ok := inst.(Pinned); ok {
			pinned++
			go s.pinnedWorker(p, warmed)
			continue
		}
		go s.serve(inst)
	}
	var errs []error
	for range pinned {
		errs = append(errs, <-warmed)
	}
	if err := errors.Join(errs...); err != nil {
		s.Close()
		return nil, fmt.Errorf("warming up: %w", err)
	}
	return s, nil
}

// Pinned is an Instance that must always run on the same OS thread, and
// be warmed up there before its first batch. ONNX Runtime's CUDA provider
// keeps per-thread state for each session (cuBLAS and cuDNN handles and
// their workspaces, created on a thread's first run): a goroutine that
// wanders over Go's threads makes one set per thread it touches, each
// first run there pays for creating them, and with several instances of
// bucketed sessions on an H100 the GPU ran out of memory for them
// ("CUBLAS failure 3: the resource allocation failed").
type Pinned interface {
	Instance
	// Warmup runs on the worker's locked thread before New returns.
	Warmup() error
}

// pinnedWorker locks its OS thread, warms inst up there and reports the
// outcome on warmed, then serves like worker. A failed warm-up ends it.
func (s *Scheduler) pinnedWorker(inst Pinned, warmed chan<- error) {
	goruntime.LockOSThread() // for good: the thread ends with the goroutine
	if err := warmSafely(inst); err != nil {
		warmed <- err
		s.wg.Done()
		return
	}
	warmed <- nil
	s.serve(inst)
}

// serve runs inst's worker: staged when it has two input slots.
func (s *Scheduler) serve(inst Instance) {
	defer s.wg.Done()
	if st, ok := inst.(Staged); ok && st.Slots() >= 2 {
		s.stagedWorker(st)
		return
	}
	s.worker(inst)
}

// Config is the policy in force, with defaults filled in.
func (s *Scheduler) Config() Config { return s.cfg }

// request is one caller's rows. It is pooled: Do returns it to the pool
// only when no worker and no queue refers to it any more.
type request struct {
	in       []byte // rows × inBytes, at any alignment
	out      []float32
	rows     int
	next     int // next row to dispatch
	inflight int // executions carrying its rows, not yet finished
	priority int
	enqueued time.Time
	started  time.Time // first dispatch
	err      error
	timing   Timing
	done     chan struct{} // capacity 1: a send, so the channel is reusable
	timer    *time.Timer
	gone     func() bool
	mayFault bool        // RequestOptions.MayFault
	faulted  atomic.Bool // a copy of its rows faulted (set by gather)
}

// part is a run of one request's rows inside a batch.
type part struct {
	r          *request
	from, rows int
}

// Do queues rows rows of in and waits until out (rows × outLen floats)
// holds their outputs, or an error. It is for a model whose input is
// FP32: in holds rows × inBytes/4 floats (DoBytes takes any datatype). A
// request whose ctx ends, or whose timeout passes, while none of its rows
// has started is removed from the queue; once rows run, Do waits for
// them, since workers write into out.
func (s *Scheduler) Do(ctx context.Context, in []float32, rows int, out []float32, o RequestOptions) (Timing, error) {
	if rows <= 0 || 4*len(in) < rows*s.inBytes || len(out) < rows*s.outLen {
		return Timing{}, fmt.Errorf("%w: %d rows need %d input bytes and %d output floats, got %d and %d",
			ErrBadRequest, rows, rows*s.inBytes, rows*s.outLen, 4*len(in), len(out))
	}
	return s.do(ctx, floatBytes(in), rows, out, o)
}

// DoBytes is Do for input given as bytes: rows × inBytes in the model's
// input datatype and the host's byte order, at any alignment. A binary
// tensor in an HTTP body starts wherever its JSON header ends, so it can
// be copied from the body straight into the batch even when it does not
// start at a multiple of four bytes.
func (s *Scheduler) DoBytes(ctx context.Context, in []byte, rows int, out []float32, o RequestOptions) (Timing, error) {
	if rows <= 0 || len(in) < rows*s.inBytes || len(out) < rows*s.outLen {
		return Timing{}, fmt.Errorf("%w: %d rows need %d input bytes and %d output floats, got %d and %d",
			ErrBadRequest, rows, rows*s.inBytes, rows*s.outLen, len(in), len(out))
	}
	return s.do(ctx, in, rows, out, o)
}

func (s *Scheduler) do(ctx context.Context, in []byte, rows int, out []float32, o RequestOptions) (Timing, error) {
	prio := o.Priority
	if prio == 0 {
		prio = s.cfg.DefaultPriority
	}
	if prio < 1 || prio > s.cfg.PriorityLevels {
		return Timing{}, fmt.Errorf("%w: priority %d outside 1..%d", ErrBadRequest, o.Priority, s.cfg.PriorityLevels)
	}
	timeout := s.cfg.DefaultTimeout
	if o.Timeout > 0 && (timeout == 0 || o.Timeout < timeout) {
		timeout = o.Timeout
	}

	r := s.pool.Get().(*request)
	*r = request{in: in, out: out, rows: rows, priority: prio, done: r.done, timer: r.timer, gone: o.Gone, mayFault: o.MayFault}
	now := time.Now()
	r.enqueued = now

	s.mu.Lock()
	if err := s.admit(rows, prio, timeout); err != nil {
		s.mu.Unlock()
		s.pool.Put(r)
		return Timing{}, err
	}
	s.levels[prio-1] = append(s.levels[prio-1], r)
	s.pendingRows += rows
	if !s.lastArrival.IsZero() {
		s.gap = ewma(s.gap, now.Sub(s.lastArrival).Seconds(), 0.2)
	}
	s.lastArrival = now
	s.arrivals++
	s.obs.pending(s.pendingRows)
	s.mu.Unlock()
	s.wake()
	if s.stagers.Load() > 0 {
		select {
		case s.stageWake <- struct{}{}:
		default:
		}
	}

	var expired <-chan time.Time
	if timeout > 0 {
		r.timer.Reset(timeout)
		expired = r.timer.C
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		if s.withdraw(r) {
			return s.finish(r, Timing{}, fmt.Errorf("waiting in the queue: %w", ctx.Err()), "cancelled")
		}
		<-r.done
	case <-expired:
		if s.withdraw(r) {
			return s.finish(r, Timing{}, fmt.Errorf("%w after %s", ErrQueueTimeout, timeout), "timeout")
		}
		<-r.done
	}
	if r.err != nil && errors.Is(r.err, ErrClientGone) {
		return s.finish(r, Timing{}, r.err, "client_gone")
	}
	return s.finish(r, r.timing, r.err, "")
}

// admit applies the queue bound and latency shedding; s.mu is held.
func (s *Scheduler) admit(rows, prio int, timeout time.Duration) error {
	if s.closed {
		s.obs.rejected("closed")
		return ErrClosed
	}
	if s.cfg.MaxQueueRows > 0 && s.pendingRows+rows > s.cfg.MaxQueueRows {
		s.obs.rejected("queue_full")
		return fmt.Errorf("%w: %d rows waiting, limit %d", ErrQueueFull, s.pendingRows, s.cfg.MaxQueueRows)
	}
	if timeout > 0 {
		if p, ok := s.predict(rows, prio); ok && p > timeout {
			s.obs.rejected("deadline_unmeetable")
			return fmt.Errorf("%w: predicted %s, timeout %s", ErrDeadlineUnmeetable, p.Round(time.Microsecond), timeout)
		}
	}
	return nil
}

// predict is the latency model documented on the package; s.mu is held.
func (s *Scheduler) predict(rows, prio int) (time.Duration, bool) {
	if s.fit.n < 3 {
		return 0, false
	}
	ahead := 0
	for _, lvl := range s.levels[:prio] {
		for _, q := range lvl {
			ahead += q.rows - q.next
		}
	}
	total := ahead + rows
	b := s.cfg.MaxBatchSize
	execs := (total + b - 1) / b
	rounds := (execs + s.instances - 1) / s.instances
	per := s.fit.at(float64(min(total, b)))
	d := float64(rounds) * per
	if s.busy >= s.instances {
		d += s.fit.at(float64(b)) / 2
	}
	return time.Duration(d * float64(time.Second)), true
}

// withdraw removes a request none of whose rows has started. It reports
// false if rows are already running (the caller must wait for them).
func (s *Scheduler) withdraw(r *request) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.next > 0 || r.inflight > 0 {
		return false
	}
	lvl := s.levels[r.priority-1]
	if i := slices.Index(lvl, r); i >= 0 {
		s.levels[r.priority-1] = slices.Delete(lvl, i, i+1)
		s.pendingRows -= r.rows
		s.obs.pending(s.pendingRows)
	}
	return true
}

// finish records the outcome and returns r to the pool.
func (s *Scheduler) finish(r *request, t Timing, err error, reason string) (Timing, error) {
	r.timer.Stop()
	if reason != "" {
		s.obs.rejected(reason)
	} else if err == nil {
		s.obs.queued(t.Queue)
	}
	*r = request{done: r.done, timer: r.timer}
	s.pool.Put(r)
	return t, err
}

func (s *Scheduler) wake() {
	select {
	case s.arrive <- struct{}{}:
	default:
	}
}

// Pending is the number of rows waiting to start.
func (s *Scheduler) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pendingRows
}

// Close stops admitting requests, lets the workers drain what is queued,
// and returns when they have finished.
func (s *Scheduler) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.wake()
	s.wg.Wait()
}

func (s *Scheduler) worker(inst Instance) {
	// Not locked to an OS thread: a locked goroutine can only be woken on
	// its own thread, which cost about 7 µs per hand-off here (DoNoop
	// serial 15 µs locked, 0.8 µs not), and locking gained nothing
	// measurable on ResNet-18/50 executions.
	var parts []part
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		s.formMu.Lock()
		var ok bool
		parts, ok = s.form(parts[:0], timer, false)
		s.formMu.Unlock()
		if !ok {
			s.wake() // let the next worker see the closed, empty queue too
			return
		}
		s.execute(inst, parts)
	}
}

// form waits until a batch should leave, then takes it from the queue.
// It returns false when the scheduler is closed and the queue empty.
//
// ahead is a stager's formation while its instance runs: it takes a batch
// only if aheadRoomLocked allows, checked under the same lock as the
// take, and otherwise returns no parts (and true) at once.
func (s *Scheduler) form(parts []part, timer *time.Timer, ahead bool) ([]part, bool) {
	for {
		s.mu.Lock()
		if ahead && !s.aheadRoomLocked() {
			s.mu.Unlock()
			return parts, true
		}
		if s.pendingRows == 0 {
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return parts, false
			}
			<-s.arrive
			continue
		}
		size, wait := s.decide(time.Now())
		if wait <= 0 {
			parts = s.take(parts, size)
			if len(parts) == 0 {
				s.mu.Unlock()
				continue // every request it came to had been abandoned
			}
			s.busy++
			s.mu.Unlock()
			return parts, true
		}
		before, pending := s.arrivals, min(s.pendingRows, len(s.payoff)-1)
		s.mu.Unlock()
		timer.Reset(wait)
		select {
		case <-s.arrive:
			timer.Stop()
		case <-timer.C:
		}
		s.mu.Lock()
		hit := 0.0
		if s.arrivals != before {
			hit = 1
		}
		s.payoff[pending] = ewma(s.payoff[pending], hit, 0.2)
		switch {
		case hit == 1:
			s.probeGap[pending] = probeEvery
		case s.probing:
			s.probeGap[pending] = min(2*s.probeGap[pending], maxProbeEvery)
		}
		s.probing = false
		s.mu.Unlock()
	}
}

// decide returns how many rows to take now, or how long to wait before
// deciding again; s.mu is held and pendingRows > 0.
func (s *Scheduler) decide(now time.Time) (int, time.Duration) {
	b, n := s.cfg.MaxBatchSize, s.pendingRows
	if n >= b {
		return b, 0
	}
	for i := len(s.cfg.PreferredBatchSizes) - 1; i >= 0; i-- {
		if p := s.cfg.PreferredBatchSizes[i]; p <= n {
			return p, 0
		}
	}
	if s.closed {
		return n, 0 // draining: nobody else is coming
	}
	oldest := now
	for _, lvl := range s.levels {
		if len(lvl) > 0 && lvl[0].enqueued.Before(oldest) {
			oldest = lvl[0].enqueued
		}
	}
	ceiling := oldest.Add(s.cfg.MaxQueueDelay)
	wait := ceiling.Sub(now)
	if wait <= 0 {
		return n, 0
	}
	// Wait only if company is expected before the ceiling.
	if s.gap <= 0 || s.lastArrival.Add(time.Duration(s.gap*float64(time.Second))).After(ceiling) {
		return n, 0
	}
	// When recent waits brought nobody, go now, but still wait one time in
	// probeEvery so a change in traffic is noticed.
	if i := min(n, len(s.payoff)-1); s.payoff[i] < payoffFloor {
		s.skips[i]++
		if s.skips[i]%s.probeGap[i] != 0 {
			return n, 0
		}
		s.probing = true
	}
	return n, wait
}

// Waiting for company is skipped while fewer than payoffFloor of recent
// waits (moving average) saw an arrival; every probeEvery-th is still
// tried, and every 2×, 4× … maxProbeEvery-th while probes keep failing.
const (
	payoffFloor   = 0.3
	probeEvery    = 16
	maxProbeEvery = 1024
)

// take moves size rows from the queue, highest priority and oldest first,
// into parts; s.mu is held.
func (s *Scheduler) take(parts []part, size int) []part {
	now := time.Now()
	for li := range s.levels {
		lvl := s.levels[li]
		for size > 0 && len(lvl) > 0 {
			r := lvl[0]
			if r.next == 0 && r.gone != nil && now.Sub(r.enqueued) >= GoneCheckAfter && r.gone() {
				lvl[0] = nil
				lvl = lvl[1:]
				s.pendingRows -= r.rows
				r.next = r.rows
				r.err = fmt.Errorf("%w (after %s in the queue)", ErrClientGone, now.Sub(r.enqueued).Round(time.Microsecond))
				r.done <- struct{}{}
				continue
			}
			k := min(r.rows-r.next, size)
			if r.next == 0 {
				r.started = now
				r.timing.Queue = now.Sub(r.enqueued)
			}
			parts = append(parts, part{r: r, from: r.next, rows: k})
			r.next += k
			r.inflight++
			size -= k
			s.pendingRows -= k
			if r.next == r.rows {
				lvl[0] = nil
				lvl = lvl[1:]
			}
		}
		// Reuse the backing array once a level empties.
		if len(lvl) == 0 {
			lvl = s.levels[li][:0]
		}
		s.levels[li] = lvl
		if size == 0 {
			break
		}
	}
	s.obs.pending(s.pendingRows)
	return parts
}

// parallelGatherBytes is the batch input size from which gather splits
// its copy across goroutines. A worker's copy is time its instance does
// not run: 64 ResNet-50 rows are 38 MB, ~4 ms for one core against the
// 11-20 ms the batch then takes on an H100, which capped the HTTP tensor
// path at 0.75 of the raw runtime there. Small batches (every CPU model
// here) stay on the worker's own goroutine.
var parallelGatherBytes = 4 << 20

// gatherWorkers bounds the goroutines of one gather.
const gatherWorkers = 8

// gather copies the parts' rows, in order, into in (total rows).
func (s *Scheduler) gather(in []byte, parts []part, total int) {
	if total*s.inBytes < parallelGatherBytes || total == 1 {
		copyRows(in, parts, s.inBytes, 0, total)
		return
	}
	n := min(gatherWorkers, total, max(goruntime.GOMAXPROCS(0)/2, 2))
	var wg sync.WaitGroup
	for w := range n {
		lo, hi := total*w/n, total*(w+1)/n
		wg.Go(func() { copyRows(in, parts, s.inBytes, lo, hi) })
	}
	wg.Wait()
}

// copyRows copies batch rows lo..hi-1 (numbered across the parts in
// order), n bytes each, into their places in dst.
func copyRows(dst []byte, parts []part, n, lo, hi int) {
	row := 0 // batch row of the current part's first row
	for _, p := range parts {
		a, b := max(lo, row), min(hi, row+p.rows)
		switch {
		case a >= b:
		case p.r.mayFault:
			if fault.Guard(func() { copy(dst[a*n:b*n], p.r.in[(p.from+a-row)*n:(p.from+b-row)*n]) }) {
				p.r.faulted.Store(true)
			}
		default:
			copy(dst[a*n:b*n], p.r.in[(p.from+a-row)*n:(p.from+b-row)*n])
		}
		row += p.rows
		if row >= hi {
			return
		}
	}
}

// execute runs one batch on inst and hands every request its rows.
func (s *Scheduler) execute(inst Instance, parts []part) {
	total := batchRows(parts)
	t0 := time.Now()
	s.gather(inst.Input(total), parts, total)
	s.runBatch(inst, -1, parts, total, time.Since(t0))
}

func batchRows(parts []part) int {
	total := 0
	for _, p := range parts {
		total += p.rows
	}
	return total
}

// runBatch runs a gathered batch (on slot, or -1 for Run), copies each
// request its outputs, and finishes the requests whose rows are all done.
func (s *Scheduler) runBatch(inst Instance, slot int, parts []part, total int, inDur time.Duration) {
	s.running.Add(1)
	start := time.Now()
	err := runSafely(inst, slot, total)
	end := time.Now()
	dur := end.Sub(start)
	var outDur time.Duration
	if err == nil {
		out := inst.Output(total)
		off := 0
		for _, p := range parts {
			off += copy(p.r.out[p.from*s.outLen:(p.from+p.rows)*s.outLen], out[off:off+p.rows*s.outLen])
		}
		outDur = time.Since(end)
	}
	s.obs.executed(total, inDur, dur, outDur, err)

	s.mu.Lock()
	s.busy--
	s.running.Add(-1)
	if err == nil {
		s.fit.add(float64(total), dur.Seconds())
	}
	for _, p := range parts {
		r := p.r
		r.inflight--
		r.timing.Compute += dur
		r.timing.Input += inDur
		r.timing.Output += outDur
		r.timing.Executions++
		r.timing.BatchRows = max(r.timing.BatchRows, total)
		if slot >= 0 && p.from == 0 {
			// Staged: the rows queued until their batch ran, not until it
			// was copied in.
			r.timing.Queue = start.Sub(r.enqueued)
		}
		if r.faulted.Load() && r.err == nil {
			// The batch ran with whatever its rows held; its answer is
			// not this request's.
			r.err = fmt.Errorf("copying its rows into the batch: %w", ErrInputFault)
			if r.next < r.rows {
				s.dropRest(r)
			}
		}
		if err != nil && r.err == nil {
			r.err = fmt.Errorf("executing a batch of %d rows: %w", total, err)
			// Its remaining rows will not be needed.
			if r.next < r.rows {
				s.dropRest(r)
			}
		}
		if r.next == r.rows && r.inflight == 0 {
			r.done <- struct{}{}
		}
	}
	s.mu.Unlock()
	for i := range parts {
		parts[i] = part{}
	}
}

// stagedBatch is a batch copied into one slot of a Staged instance.
type stagedBatch struct {
	slot, total int
	parts       []part
	in          time.Duration
}

// stagedWorker serves a Staged instance with two goroutines: this one
// runs batches, and a stager forms the next batch and copies it into the
// free slot meanwhile. The stager copies ahead only when the queue holds
// a full batch for this instance beyond one for every idle instance, so
// it never holds rows back from an instance that could run them now; at
// other times it forms a batch once the running one is done, as worker
// does.
func (s *Scheduler) stagedWorker(inst Staged) {
	free := make(chan int, 2)
	free <- 0
	free <- 1
	ready := make(chan stagedBatch, 1)
	done := make(chan struct{}, 1) // a batch finished
	var queued atomic.Int32        // batches handed to the runner, not finished
	go func() {
		defer close(ready)
		var bufs [2][]part
		timer := time.NewTimer(time.Hour)
		timer.Stop()
		for slot := range free {
			var parts []part
			for len(parts) == 0 {
				ahead := s.awaitRoom(&queued, done)
				var ok bool
				s.formMu.Lock()
				parts, ok = s.form(bufs[slot][:0], timer, ahead)
				s.formMu.Unlock()
				if !ok {
					s.wake()
					return
				}
				// No parts: the room went to another stager first.
			}
			bufs[slot] = parts
			total := batchRows(parts)
			t0 := time.Now()
			s.gather(inst.InputSlot(slot, total), parts, total)
			queued.Add(1)
			ready <- stagedBatch{slot: slot, total: total, parts: parts, in: time.Since(t0)}
		}
	}()
	for b := range ready {
		s.runBatch(inst, b.slot, b.parts, b.total, b.in)
		queued.Add(-1)
		// done before the slot: the stager, given the slot, drops this
		// signal, and a later one means a later finish.
		select {
		case done <- struct{}{}:
		default:
		}
		free <- b.slot
	}
}

// awaitRoom returns when a stager may form its next batch: at once if its
// runner has nothing to run, else once the queue holds a batch to copy
// ahead (see aheadRoom) or the runner has finished. It reports whether
// the batch would be copied ahead (its runner still busy). It never takes
// the workers' arrival signal.
func (s *Scheduler) awaitRoom(queued *atomic.Int32, done <-chan struct{}) (ahead bool) {
	select {
	case <-done: // a finish already seen by the check below
	default:
	}
	for queued.Load() > 0 {
		// Counted before the check: rows arriving after it signal stageWake.
		s.stagers.Add(1)
		if s.aheadRoom() {
			s.stagers.Add(-1)
			return true
		}
		select {
		case <-done:
			s.stagers.Add(-1)
			return false
		case <-s.stageWake:
		}
		s.stagers.Add(-1)
	}
	return false
}

// aheadRoom reports whether the queue holds a full batch beyond one for
// each instance not running.
func (s *Scheduler) aheadRoom() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.aheadRoomLocked()
}

// aheadRoomLocked is aheadRoom with s.mu held.
func (s *Scheduler) aheadRoomLocked() bool {
	idle := s.instances - int(s.running.Load())
	return s.pendingRows >= s.cfg.MaxBatchSize*(idle+1)
}

// dropRest removes a failed request's undispatched rows; s.mu is held.
func (s *Scheduler) dropRest(r *request) {
	lvl := s.levels[r.priority-1]
	if i := slices.Index(lvl, r); i >= 0 {
		s.levels[r.priority-1] = slices.Delete(lvl, i, i+1)
	}
	s.pendingRows -= r.rows - r.next
	r.next = r.rows
	s.obs.pending(s.pendingRows)
}

// runSafely turns a panic in an executor into an error for that batch
// only. slot -1 is Run; others RunSlot.
func runSafely(inst Instance, slot, rows int) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("executor panic: %v", v)
		}
	}()
	if slot >= 0 {
		return inst.(Staged).RunSlot(slot, rows)
	}
	return inst.Run(rows)
}

func warmSafely(inst Pinned) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("executor panic in warm-up: %v", v)
		}
	}()
	return inst.Warmup()
}

func ewma(avg, x, alpha float64) float64 {
	if avg == 0 {
		return x
	}
	return avg + alpha*(x-avg)
}

// linearFit is exponentially weighted least squares of y = a + b·x.
type linearFit struct {
	decay                float64
	n                    int
	sw, sx, sy, sxx, sxy float64
	a, b                 float64
}

func (f *linearFit) add(x, y float64) {
	d := f.decay
	f.sw = f.sw*d + 1
	f.sx = f.sx*d + x
	f.sy = f.sy*d + y
	f.sxx = f.sxx*d + x*x
	f.sxy = f.sxy*d + x*y
	f.n++
	den := f.sw*f.sxx - f.sx*f.sx
	if den > 1e-9*f.sw*f.sxx {
		f.b = (f.sw*f.sxy - f.sx*f.sy) / den
		f.a = (f.sy - f.b*f.sx) / f.sw
	} else {
		// One batch size seen so far: assume time proportional to rows.
		f.a, f.b = 0, f.sy/f.sx
	}
	if f.b < 0 { // noise; time does not fall with more rows
		f.a, f.b = f.sy/f.sw, 0
	}
	if f.a < 0 {
		f.a, f.b = 0, f.sxy/f.sxx
	}
}

func (f *linearFit) at(x float64) float64 { return f.a + f.b*x }

// floatBytes is x's memory as bytes.
func floatBytes(x []float32) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x))), 4*len(x))
}
