// Package predlog is an asynchronous, batched log of predictions in SQLite
// or PostgreSQL that never slows a request down.
//
// Add only enqueues into a bounded buffer and never blocks; when the
// buffer is full (a slow or failing database) the record is dropped and
// counted. A single writer goroutine drains the buffer into batches
// (Options.BatchSize records, or whatever arrived within
// Options.FlushEvery) and writes each batch in one transaction. A batch
// whose write fails is retried a few times with backoff and then dropped
// (counted in Stats.Dropped, logged), so one bad disk moment never stalls
// the writer for good; writing resumes by itself when the fault clears.
//
// # Durability
//
// Flush returns once every record Added before the call has been
// committed, or has been dropped after failed writes (then Flush returns
// the write error). What "committed" means:
//
//   - SQLite: the database runs in WAL mode with synchronous=FULL, so the
//     commit returns only after the WAL has been fsync'ed. A record that
//     Flush acknowledged survives a crash of the process and of the
//     operating system or a power loss (as far as the disk honours fsync).
//     After a crash, the next Open recovers the WAL; a transaction is
//     present whole or not at all, so no partial batch or row is visible.
//   - PostgreSQL: the commit returns after the server acknowledged COMMIT.
//     Unless the DSN sets synchronous_commit itself, every connection runs
//     with synchronous_commit=on, so the server has flushed its WAL to
//     disk (and waited for synchronous standbys, if configured) before it
//     acknowledges: the record survives a crash of this process, of the
//     server and of its machine (with the server's fsync=on, the default).
//
// Records not yet acknowledged by Flush (or Close) may be lost by a crash:
// at most Options.Buffer+Options.BatchSize of them.
//
// # Storage
//
// PostgreSQL: one table, predictions, one row per record, created if
// missing and indexed on (model, version, time) and on (time); time is a
// timestamptz, TopK is jsonb: [{"index":3,"label":"cat","score":0.91}, ...].
//
// SQLite: one row per written batch and model version in
// prediction_batches (its earliest and latest record time in Unix
// microseconds, indexed, the model and version, and its records as a JSON
// array of arrays), because a row per record cost the pure-Go SQLite about
// three times the CPU. The view predictions shows one row per record with
// the same columns as PostgreSQL's (time as Unix microseconds, image as
// base64), for ad-hoc SQL. A database from the row-per-record release is
// migrated when it is opened. Retention deletes whole batches and trims
// the ones that straddle the cut-off.
//
// Both read time back in UTC to the microsecond, and top-k scores,
// brightness and contrast to float32 precision (see appendFloat32). Every
// float maps NaN to NULL (JSON null in SQLite, where ±Inf becomes null
// too) and back to NaN.
// An empty Image is stored as NULL and read back as nil. Strings are
// stored as valid UTF-8 without NUL bytes (invalid bytes become U+FFFD,
// NULs are removed) so that one odd request id can never make a whole
// batch fail on PostgreSQL.
package predlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Record is one prediction (one image).
type Record struct {
	Time      time.Time // zero: Add sets time.Now()
	RequestID string    // the server's id for the HTTP request (several images share it)
	Model     string
	Version   int
	TopK      []Class // top-k classes with scores
	Latency   Latency
	// Width and Height of the decoded image; 0 when unknown (tensor requests).
	Width, Height int
	// Brightness and Contrast of the image; NaN when unknown.
	Brightness, Contrast float64
	// Image is the encoded image, only when image logging is on; the caller
	// caps its size. Add keeps a reference: do not modify it afterwards.
	Image []byte
}

// Class is one of the top-k classes of a prediction.
type Class struct {
	Index int
	Label string
	Score float64
}

// Latency is where the time of one prediction went, in milliseconds.
type Latency struct {
	PreprocessMs, QueueMs, InferMs, TotalMs float64
}

// Options tune a Log; the zero value gives the defaults.
type Options struct {
	// Buffer is how many records may wait for the writer (default 10,000);
	// beyond that Add drops the record and counts it. The writer holds one
	// more batch besides, so up to Buffer+BatchSize records can be pending.
	Buffer int
	// BatchSize is the most records written in one transaction (default 1024: each commit fsyncs, so fewer and larger batches cost less).
	BatchSize int
	// FlushEvery is the longest a record waits before it is written
	// (default 1 s).
	FlushEvery time.Duration
	// Retention: records older than this are deleted (0 keeps everything).
	// Checked when the writer starts (right after Open) and every ~10 min.
	Retention time.Duration
	// Logger receives write failures (default slog.Default()).
	Logger *slog.Logger

	// Test hooks.
	retentionEvery time.Duration
	retryBackoff   time.Duration
	attempts       int
}

// Defaults.
const (
	DefaultBuffer     = 10000
	DefaultBatchSize  = 1024
	DefaultFlushEvery = time.Second

	defaultRetentionEvery = 10 * time.Minute
	defaultRetryBackoff   = 100 * time.Millisecond
	defaultAttempts       = 4 // the first try and three retries
	writeTimeout          = 30 * time.Second
	retentionChunk        = 5000
	logEvery              = 10 * time.Second
)

// Query selects records for reports.
type Query struct {
	Since time.Time // inclusive; zero: no lower bound
	Until time.Time // exclusive; zero: no upper bound
	Model string    // "" for all models
	Limit int       // 0 for no limit
}

// Stats are the log's counters since Open.
type Stats struct {
	Added       uint64 // records accepted by Add
	Written     uint64 // records committed
	Dropped     uint64 // records lost: rejected by Add (buffer full or closed) or dropped after failed writes
	WriteErrors uint64 // failed write transactions, each attempt counted (a retried batch can count several)
	Pending     int    // accepted records not yet committed nor dropped
}

// ErrClosed is returned by Query after Close.
var ErrClosed = errors.New("predlog: log is closed")

// store is what the writer writes to; implemented by SQLite, PostgreSQL
// and, in tests, by failing or stalling fakes.
type store interface {
	// insert writes all records in one transaction: all or nothing.
	insert(ctx context.Context, recs []Record) error
	// deleteBefore deletes at most limit records older than t and says how
	// many it deleted.
	deleteBefore(ctx context.Context, t time.Time, limit int) (int64, error)
	query(ctx context.Context, q Query) ([]Record, error)
	close() error
}

// Log is an asynchronous, batched prediction log. Its methods are safe for
// concurrent use.
type Log struct {
	opt   Options
	store store
	log   *slog.Logger

	// mu guards the waiting records and the Flush bookkeeping. The records
	// wait in a ring, not a channel: an Add is then one short critical
	// section under one lock (a channel send takes the channel's lock
	// besides), and the writer takes a whole batch under one acquisition
	// instead of one per record, which under load made the handlers
	// calling Add queue on the channel's lock (go test -bench AddParallel:
	// 110 against 280 ns per Add with 32 goroutines adding, and the
	// channel's writer fell behind and dropped 2-15 %).
	mu        sync.Mutex
	ring      []Record // Buffer slots; ring[head:] then ring[:…] hold n records in order
	head, n   int
	closed    bool
	seq       uint64 // records accepted so far; the last one's number
	processed uint64 // records the writer committed or dropped, a prefix of seq
	flushMark uint64 // seq at the latest Flush call
	fails     []failRange
	waiters   []*waiter

	kick   chan struct{} // Flush: write everything now
	first  chan struct{} // Add: a record is waiting in an empty ring
	full   chan struct{} // Add: wakeAt records are waiting
	wakeAt int
	stop   chan struct{}
	done   chan struct{}
	wctx   context.Context
	cancel context.CancelFunc

	added, written, dropped, writeDropped, writeErrors atomic.Uint64
	writeDuration                                      prometheus.Histogram

	// The writer's own: failure logs are rate-limited.
	lastWarn, lastDrop time.Time
	unlogged           uint64

	closeOnce sync.Once
	closeErr  error
}

// failRange is a range (lo, hi] of sequence numbers whose batch was dropped.
type failRange struct {
	lo, hi uint64
	err    error
}

// waiter is a Flush waiting for records (lo, hi].
type waiter struct {
	lo, hi uint64
	err    error
	done   chan struct{}
}

// Open opens (creating it and its schema if missing) the prediction log
// at dsn and starts its writer:
//
//   - "postgres://…" or "postgresql://…": PostgreSQL through pgx (a pgxpool
//     connection string; pool_max_conns and the like are honoured).
//   - "sqlite:PATH", a plain file path, or "" (predictions.db in the working
//     directory): SQLite (pure Go, modernc.org/sqlite). "sqlite::memory:" is
//     an in-memory database (for tests; nothing is durable).
func Open(ctx context.Context, dsn string, o Options) (*Log, error) {
	var (
		s   store
		err error
	)
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		s, err = openPostgres(ctx, dsn)
	default:
		path := strings.TrimPrefix(dsn, "sqlite:")
		if path != dsn {
			path = strings.TrimPrefix(path, "//")
		}
		if path == "" {
			path = "predictions.db"
		}
		s, err = openSQLite(ctx, path)
	}
	if err != nil {
		return nil, err
	}
	return newLog(s, o), nil
}

func newLog(s store, o Options) *Log {
	if o.Buffer <= 0 {
		o.Buffer = DefaultBuffer
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.FlushEvery <= 0 {
		o.FlushEvery = DefaultFlushEvery
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.retentionEvery <= 0 {
		o.retentionEvery = defaultRetentionEvery
	}
	if o.retryBackoff <= 0 {
		o.retryBackoff = defaultRetryBackoff
	}
	if o.attempts <= 0 {
		o.attempts = defaultAttempts
	}
	l := &Log{
		opt:   o,
		store: s,
		log:   o.Logger.With("component", "predlog"),
		ring:  make([]Record, o.Buffer),
		kick:  make(chan struct{}, 1),
		first: make(chan struct{}, 1),
		full:  make(chan struct{}, 1),
		// A full batch, or half the buffer when that is smaller, so a
		// small buffer does not overflow while the writer waits.
		wakeAt: max(1, min(o.BatchSize, o.Buffer/2)),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		writeDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fastinfer_prediction_log_write_duration_seconds",
			Help:    "Duration of each prediction-log write transaction (one batch, one attempt).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
	}
	l.wctx, l.cancel = context.WithCancel(context.Background())
	go l.run()
	return l
}

// Add enqueues r for writing and never blocks. It returns false, and
// counts a drop, when the buffer is full or the log is closed. Add keeps
// references to r.TopK and r.Image: do not modify them afterwards.
func (l *Log) Add(r Record) bool {
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	l.mu.Lock()
	if l.closed || l.n == len(l.ring) {
		l.mu.Unlock()
		l.dropped.Add(1)
		return false
	}
	i := l.head + l.n
	if i >= len(l.ring) {
		i -= len(l.ring)
	}
	l.ring[i] = r
	l.n++
	l.seq++
	n := l.n
	l.mu.Unlock()
	l.added.Add(1)
	switch {
	case n >= l.wakeAt:
		signal(l.full)
	case n == 1:
		signal(l.first)
	}
	return true
}

// signal wakes the writer through c (capacity 1) without blocking.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// takeInto moves up to k waiting records, oldest first, to the end of
// batch, and frees their slots.
func (l *Log) takeInto(batch []Record, k int) []Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k = min(k, l.n); k > 0; {
		seg := l.ring[l.head:min(l.head+k, len(l.ring))]
		batch = append(batch, seg...)
		clear(seg) // the ring must not keep images and strings alive
		l.head += len(seg)
		if l.head == len(l.ring) {
			l.head = 0
		}
		l.n -= len(seg)
		k -= len(seg)
	}
	return batch
}

// Flush waits until every record Added before the call is committed (see
// the package documentation for what that guarantees) or dropped after
// failed writes. It returns the write error if any record Added between
// the previous Flush (or Close) call and this one was dropped after failed
// writes; records that Add rejected are not write errors (Add said false).
// It returns ctx.Err() if ctx ends first; the records are still written.
// Flush after Close returns at once.
func (l *Log) Flush(ctx context.Context) error {
	l.mu.Lock()
	lo, hi := l.flushMark, l.seq
	if hi > l.flushMark {
		l.flushMark = hi
	}
	var err error
	for _, f := range l.fails {
		if f.lo < hi && f.hi > lo {
			err = f.err
			break
		}
	}
	// Failures before the newest flush mark can no longer concern a
	// future Flush; waiting ones get later failures as they happen.
	kept := l.fails[:0]
	for _, f := range l.fails {
		if f.hi > l.flushMark {
			kept = append(kept, f)
		}
	}
	clear(l.fails[len(kept):])
	l.fails = kept
	if l.processed >= hi {
		l.mu.Unlock()
		return err
	}
	w := &waiter{lo: lo, hi: hi, err: err, done: make(chan struct{})}
	l.waiters = append(l.waiters, w)
	l.mu.Unlock()

	signal(l.kick)
	select {
	case <-w.done:
		return w.err
	case <-ctx.Done():
		l.mu.Lock()
		for i, x := range l.waiters {
			if x == w {
				l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
				break
			}
		}
		l.mu.Unlock()
		return ctx.Err()
	}
}

// Close rejects further Adds, writes what is pending (as Flush) and stops
// the writer and the database. If ctx ends first, what is still pending
// is dropped (counted) and ctx.Err() is returned. Close is idempotent.
func (l *Log) Close(ctx context.Context) error {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.stop)
	}
	l.mu.Unlock()

	err := l.Flush(ctx)
	select {
	case <-l.done:
	case <-ctx.Done():
		l.cancel() // aborts the write in progress; the writer drops the rest
		<-l.done
		if err == nil {
			err = ctx.Err()
		}
	}
	l.cancel()
	l.closeOnce.Do(func() { l.closeErr = l.store.close() })
	return errors.Join(err, l.closeErr)
}

// Stats returns the counters.
func (l *Log) Stats() Stats {
	written, wdropped := l.written.Load(), l.writeDropped.Load()
	added := l.added.Load()
	pending := int64(added) - int64(written) - int64(wdropped)
	if pending < 0 {
		pending = 0
	}
	return Stats{
		Added:       added,
		Written:     written,
		Dropped:     l.dropped.Load(),
		WriteErrors: l.writeErrors.Load(),
		Pending:     int(pending),
	}
}

// Query returns the records matching q, ordered by time (then by the
// order they were written). It reads committed records only and runs
// beside the writer.
func (l *Log) Query(ctx context.Context, q Query) ([]Record, error) {
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	return l.store.query(ctx, q)
}

// run is the single writer goroutine.
func (l *Log) run() {
	defer close(l.done)
	if l.opt.Retention > 0 {
		l.retain()
	}
	var retC <-chan time.Time
	if l.opt.Retention > 0 {
		tk := time.NewTicker(l.opt.retentionEvery)
		defer tk.Stop()
		retC = tk.C
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	batch := make([]Record, 0, l.opt.BatchSize)
	write := func() {
		timer.Stop()
		if len(batch) > 0 {
			l.write(batch)
			clear(batch) // let images be collected
			batch = batch[:0]
		}
	}
	// takeWaiting takes what is waiting now, writing full batches; the
	// rest waits for more, or for its time.
	takeWaiting := func() {
		l.mu.Lock()
		left := l.n // not what arrives meanwhile: the loop must end under load
		l.mu.Unlock()
		for left > 0 {
			had := len(batch)
			batch = l.takeInto(batch, min(left, l.opt.BatchSize-had))
			left -= len(batch) - had
			if had == 0 && len(batch) > 0 {
				timer.Reset(l.opt.FlushEvery)
			}
			if len(batch) < l.opt.BatchSize {
				return
			}
			write()
		}
	}
	// drain writes what is waiting now (a Flush waits for it).
	drain := func() {
		takeWaiting()
		write()
	}
	// Idle, the writer waits for the first record; then it ignores new
	// ones until the batch is due (FlushEvery) or Add says a full batch
	// is waiting, and takes everything at once: one wake-up per batch
	// instead of one per prediction, and every commit but the timed ones
	// a full batch.
	for {
		var first <-chan struct{}
		if len(batch) == 0 {
			first = l.first
		}
		select {
		case <-first:
			// One record, as a receive would: what waits behind it keeps
			// counting towards wakeAt.
			if batch = l.takeInto(batch, 1); len(batch) > 0 {
				timer.Reset(l.opt.FlushEvery)
			}
		case <-l.full:
			if l.wakeAt < l.opt.BatchSize {
				drain() // half a small buffer: no full batch will come in time
			} else {
				takeWaiting()
			}
		case <-timer.C:
			drain()
		case <-l.kick:
			drain()
		case <-retC:
			l.retain()
		case <-l.stop:
			// Add accepts nothing once stop is closed, so this ends.
			drain()
			l.mu.Lock()
			for _, w := range l.waiters {
				close(w.done) // all processed by now
			}
			l.waiters = nil
			l.mu.Unlock()
			return
		}
	}
}

// write commits one batch, retrying with backoff, or drops it.
func (l *Log) write(batch []Record) {
	var err error
	for attempt := 0; attempt < l.opt.attempts; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(l.opt.retryBackoff << (attempt - 1))
			select {
			case <-t.C:
			case <-l.wctx.Done():
				t.Stop()
			}
		}
		if e := l.wctx.Err(); e != nil {
			err = fmt.Errorf("log closed before the write: %w", e)
			break
		}
		ctx, cancel := context.WithTimeout(l.wctx, writeTimeout)
		start := time.Now()
		err = l.store.insert(ctx, batch)
		cancel()
		l.writeDuration.Observe(time.Since(start).Seconds())
		if err == nil {
			break
		}
		l.writeErrors.Add(1)
		if l.logNow(&l.lastWarn) {
			l.log.Warn("prediction log write failed, retrying", "records", len(batch), "attempt", attempt+1, "err", err)
		}
	}
	n := uint64(len(batch))
	if err == nil {
		l.written.Add(n)
	} else {
		l.writeDropped.Add(n)
		l.dropped.Add(n)
		l.unlogged += n
		if l.logNow(&l.lastDrop) {
			l.log.Error("prediction log dropped records after failed writes",
				"records", l.unlogged, "attempts", l.opt.attempts, "err", err)
			l.unlogged = 0
		}
	}
	l.advance(n, err)
}

// logNow rate-limits the writer's failure logs: true at most once per
// logEvery for each *last.
func (l *Log) logNow(last *time.Time) bool {
	now := time.Now()
	if now.Sub(*last) < logEvery {
		return false
	}
	*last = now
	return true
}

// advance records that the next n records were committed (err nil) or
// dropped, and wakes the Flush calls that waited for them.
func (l *Log) advance(n uint64, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lo := l.processed
	hi := lo + n
	l.processed = hi
	if err != nil {
		if k := len(l.fails); k > 0 && l.fails[k-1].hi == lo {
			l.fails[k-1].hi, l.fails[k-1].err = hi, err // a run of failures: one range
		} else {
			l.fails = append(l.fails, failRange{lo, hi, err})
		}
		if len(l.fails) > 64 { // nobody flushes: keep it bounded, err on the safe side
			l.fails = []failRange{{l.fails[0].lo, hi, err}}
		}
	}
	kept := l.waiters[:0]
	for _, w := range l.waiters {
		if err != nil && w.err == nil && lo < w.hi && hi > w.lo {
			w.err = err
		}
		if hi >= w.hi {
			close(w.done)
			continue
		}
		kept = append(kept, w)
	}
	clear(l.waiters[len(kept):])
	l.waiters = kept
}

// retain deletes records older than the retention, in chunks so the
// writer goes back to its batches between them.
func (l *Log) retain() {
	cutoff := time.Now().Add(-l.opt.Retention)
	var total int64
	for {
		ctx, cancel := context.WithTimeout(l.wctx, writeTimeout)
		n, err := l.store.deleteBefore(ctx, cutoff, retentionChunk)
		cancel()
		total += n
		if err != nil {
			if l.wctx.Err() == nil {
				l.log.Warn("prediction log retention failed", "deleted", total, "err", err)
			}
			return
		}
		if n < retentionChunk {
			break
		}
	}
	if total > 0 {
		l.log.Info("prediction log retention", "deleted", total, "older_than", cutoff)
	}
}
