package predlog

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The crash test re-executes this test binary as a child that writes to
// the log until it is killed.
const (
	envChild = "PREDLOG_TEST_CHILD"
	envDSN   = "PREDLOG_TEST_DSN"
	envK     = "PREDLOG_TEST_K"
)

func TestMain(m *testing.M) {
	if os.Getenv(envChild) == "crash" {
		os.Exit(crashChild())
	}
	os.Exit(m.Run())
}

// crashChild adds and flushes K records, says "flushed", then keeps adding
// (and flushing now and then) until it is killed.
func crashChild() int {
	ctx := context.Background()
	k, _ := strconv.Atoi(os.Getenv(envK))
	l, err := Open(ctx, os.Getenv(envDSN), Options{BatchSize: 16, FlushEvery: 2 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: open:", err)
		return 2
	}
	for i := range k {
		if !l.Add(makeRecord(i)) {
			fmt.Fprintln(os.Stderr, "child: Add refused record", i)
			return 2
		}
	}
	if err := l.Flush(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "child: flush:", err)
		return 2
	}
	fmt.Println("flushed")
	for i, end := k, time.Now().Add(60*time.Second); time.Now().Before(end); i++ {
		if !l.Add(makeRecord(i)) {
			time.Sleep(100 * time.Microsecond)
		}
		if i%64 == 0 {
			l.Flush(ctx)
		}
	}
	fmt.Fprintln(os.Stderr, "child: nobody killed me")
	return 3
}

var recordBase = time.Date(2026, 3, 1, 12, 0, 0, 0, time.FixedZone("CET", 3600))

// makeRecord is record i: every field derives from i (TopK[0].Index is i),
// with NaNs, unknown sizes and missing images sprinkled in.
func makeRecord(i int) Record {
	nanIf := func(c bool, v float64) float64 {
		if c {
			return math.NaN()
		}
		return v
	}
	r := Record{
		Time:      recordBase.Add(time.Duration(i)*time.Millisecond + time.Duration(i%997)*time.Microsecond),
		RequestID: fmt.Sprintf("req-%d", i/4), // four images per request
		Model:     []string{"resnet50", "fashion-resnet"}[i%2],
		Version:   1 + i%3,
		TopK: []Class{
			{Index: i, Label: fmt.Sprintf("class «%d»", i), Score: 0.5 + float64(i%100)/1000},
			{Index: i + 1, Label: "other", Score: nanIf(i%5 == 0, 0.125)},
		},
		Latency: Latency{
			PreprocessMs: float64(i) / 7,
			QueueMs:      nanIf(i%4 == 0, 0.5),
			InferMs:      1.25 + float64(i%10),
			TotalMs:      float64(i) + 0.75,
		},
		Brightness: nanIf(i%2 == 0, 0.25+float64(i%50)/100),
		Contrast:   nanIf(i%3 == 0, 1.0/float64(i+1)),
	}
	if i%3 != 0 {
		r.Width, r.Height = 224, 200+i%100
		r.Image = bytes.Repeat([]byte{byte(i), 0, 0xff, byte(i >> 8)}, 4+i%40)
	}
	return r
}

func sameFloat(a, b float64) bool { return a == b || math.IsNaN(a) && math.IsNaN(b) }

// diffRecord says how got differs from want ("" when equal, Time to the
// microsecond).
func diffRecord(got, want Record) string {
	var d []string
	if !got.Time.Equal(want.Time.Truncate(time.Microsecond)) {
		d = append(d, fmt.Sprintf("Time %v, want %v", got.Time, want.Time))
	}
	if got.Time.Location() != time.UTC {
		d = append(d, "Time not in UTC")
	}
	if got.RequestID != want.RequestID || got.Model != want.Model || got.Version != want.Version {
		d = append(d, fmt.Sprintf("id %q %q %d, want %q %q %d", got.RequestID, got.Model, got.Version,
			want.RequestID, want.Model, want.Version))
	}
	if len(got.TopK) != len(want.TopK) {
		d = append(d, fmt.Sprintf("TopK %v, want %v", got.TopK, want.TopK))
	} else {
		for j := range got.TopK {
			g, w := got.TopK[j], want.TopK[j]
			if g.Index != w.Index || g.Label != w.Label || !sameFloat(g.Score, float64(float32(w.Score))) {
				d = append(d, fmt.Sprintf("TopK[%d] %v, want %v", j, g, w))
			}
		}
	}
	gl, wl := got.Latency, want.Latency
	if !sameFloat(gl.PreprocessMs, wl.PreprocessMs) || !sameFloat(gl.QueueMs, wl.QueueMs) ||
		!sameFloat(gl.InferMs, wl.InferMs) || !sameFloat(gl.TotalMs, wl.TotalMs) {
		d = append(d, fmt.Sprintf("Latency %v, want %v", gl, wl))
	}
	if got.Width != want.Width || got.Height != want.Height {
		d = append(d, fmt.Sprintf("size %dx%d, want %dx%d", got.Width, got.Height, want.Width, want.Height))
	}
	if !sameFloat(got.Brightness, float64(float32(want.Brightness))) || !sameFloat(got.Contrast, float64(float32(want.Contrast))) {
		d = append(d, fmt.Sprintf("brightness/contrast %v/%v, want %v/%v", got.Brightness, got.Contrast,
			want.Brightness, want.Contrast))
	}
	if !bytes.Equal(got.Image, want.Image) || (got.Image == nil) != (want.Image == nil) {
		d = append(d, fmt.Sprintf("Image %d bytes (nil %v), want %d (nil %v)", len(got.Image), got.Image == nil,
			len(want.Image), want.Image == nil))
	}
	return strings.Join(d, "; ")
}

// backend makes a fresh database for a test and, for the crash test,
// crashes the database server itself (nil for SQLite).
type backend struct {
	name  string
	dsn   func(t *testing.T) string
	crash func(t *testing.T)
}

func sqliteBackend() backend {
	return backend{name: "sqlite", dsn: func(t *testing.T) string {
		return "sqlite:" + filepath.Join(t.TempDir(), "predictions.db")
	}}
}

func postgresBackend(t *testing.T) backend {
	pg := startPostgres(t)
	var n atomic.Int64
	return backend{
		name: "postgres",
		dsn: func(t *testing.T) string {
			return pg.createDB(t, fmt.Sprintf("predlog_%d", n.Add(1)))
		},
		crash: pg.crashRestart,
	}
}

// TestBackends runs the same tests against SQLite and a real PostgreSQL
// server (not under -short).
func TestBackends(t *testing.T) {
	backends := func(yield func(backend) bool) {
		if !yield(sqliteBackend()) {
			return
		}
		if testing.Short() {
			t.Log("postgres: skipped under -short")
			return
		}
		yield(postgresBackend(t))
	}
	for b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, b) })
			t.Run("CrashRestart", func(t *testing.T) { testCrashRestart(t, b) })
			t.Run("Retention", func(t *testing.T) { testRetention(t, b) })
			t.Run("Sanitize", func(t *testing.T) { testSanitize(t, b) })
		})
	}
}

func openT(t *testing.T, dsn string, o Options) *Log {
	t.Helper()
	l, err := Open(context.Background(), dsn, o)
	if err != nil {
		t.Fatalf("Open(%q): %v", dsn, err)
	}
	return l
}

func closeT(t *testing.T, l *Log) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func flushT(t *testing.T, l *Log) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}

func queryT(t *testing.T, l *Log, q Query) []Record {
	t.Helper()
	recs, err := l.Query(context.Background(), q)
	if err != nil {
		t.Fatalf("Query(%+v): %v", q, err)
	}
	return recs
}

// checkRecords says whether recs are exactly records want[0..], in order.
func checkRecords(t *testing.T, recs []Record, want []int) {
	t.Helper()
	if len(recs) != len(want) {
		t.Fatalf("got %d records, want %d", len(recs), len(want))
	}
	bad := 0
	for j, r := range recs {
		if d := diffRecord(r, makeRecord(want[j])); d != "" {
			if bad++; bad <= 5 {
				t.Errorf("record %d (want #%d): %s", j, want[j], d)
			}
		}
	}
	if bad > 5 {
		t.Errorf("... %d records differ in all", bad)
	}
}

func seq(lo, hi int) []int {
	var s []int
	for i := lo; i < hi; i++ {
		s = append(s, i)
	}
	return s
}

func testRoundTrip(t *testing.T, b backend) {
	const n, writers = 1200, 12
	dsn := b.dsn(t)
	l := openT(t, dsn, Options{BatchSize: 50, FlushEvery: 10 * time.Millisecond})
	var wg sync.WaitGroup
	var refused atomic.Int64
	for w := range writers {
		wg.Go(func() {
			for i := w; i < n; i += writers {
				if !l.Add(makeRecord(i)) {
					refused.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if refused.Load() != 0 {
		t.Fatalf("Add refused %d records with a buffer of 10,000", refused.Load())
	}
	flushT(t, l)
	if s := l.Stats(); s != (Stats{Added: n, Written: n}) {
		t.Errorf("Stats after Flush = %+v, want Added=Written=%d", s, n)
	}
	checkRecords(t, queryT(t, l, Query{}), seq(0, n))

	// Filters: model, time range, limit.
	var resnet []int
	for i := 100; i < 300; i++ {
		if i%2 == 0 {
			resnet = append(resnet, i)
		}
	}
	for _, tc := range []struct {
		name string
		q    Query
		want []int
	}{
		{"limit", Query{Limit: 10}, seq(0, 10)},
		{"since-until", Query{Since: makeRecord(100).Time, Until: makeRecord(300).Time}, seq(100, 300)},
		{"model", Query{Model: "resnet50", Since: makeRecord(100).Time, Until: makeRecord(300).Time}, resnet},
		{"model-limit", Query{Model: "fashion-resnet", Limit: 3}, []int{1, 3, 5}},
		{"none", Query{Model: "nope"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) { checkRecords(t, queryT(t, l, tc.q), tc.want) })
	}
	closeT(t, l)

	// Everything is still there after a clean reopen.
	l = openT(t, dsn, Options{})
	defer closeT(t, l)
	checkRecords(t, queryT(t, l, Query{}), seq(0, n))
}

// testCrashRestart: a child process writes and flushes K records
// (acknowledged), keeps writing, and is SIGKILLed; the database then opens
// cleanly and holds every acknowledged record, and only whole records.
func testCrashRestart(t *testing.T, b backend) {
	const k = 300
	dsn := b.dsn(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"=crash", envDSN+"="+dsn, envK+"="+strconv.Itoa(k))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	flushed := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "flushed" {
				flushed <- true
				io.Copy(io.Discard, stdout)
				return
			}
		}
		flushed <- false
	}()
	select {
	case ok := <-flushed:
		if !ok {
			cmd.Wait()
			t.Fatalf("child ended without flushing: %s", stderr.String())
		}
	case <-time.After(45 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child did not flush within 45 s: %s", stderr.String())
	}
	time.Sleep(300 * time.Millisecond) // let it write more, mid-transaction when killed
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child was not killed by SIGKILL: %v; stderr: %s", err, stderr.String())
	}
	if b.crash != nil {
		b.crash(t) // the server crashes too and recovers from its WAL
	}
	if path, ok := strings.CutPrefix(dsn, "sqlite:"); ok {
		if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() == 0 {
			t.Errorf("no WAL left behind by the killed child (%v): the test would not exercise recovery", err)
		}
	}

	l := openT(t, dsn, Options{})
	defer closeT(t, l)
	recs := queryT(t, l, Query{})
	seen := map[int]bool{}
	for _, r := range recs {
		if len(r.TopK) == 0 {
			t.Fatalf("record without TopK: %+v", r)
		}
		i := r.TopK[0].Index
		if seen[i] {
			t.Errorf("record %d twice", i)
		}
		seen[i] = true
		if d := diffRecord(r, makeRecord(i)); d != "" {
			t.Errorf("record %d is not whole: %s", i, d)
		}
	}
	for i := range k {
		if !seen[i] {
			t.Fatalf("acknowledged record %d lost (%d records present)", i, len(recs))
		}
	}
	t.Logf("%d acknowledged + %d unacknowledged records survived the kill", k, len(recs)-k)
	if s, ok := l.store.(*sqliteStore); ok {
		var res string
		if err := s.db.QueryRow("PRAGMA integrity_check").Scan(&res); err != nil || res != "ok" {
			t.Errorf("integrity_check = %q, %v", res, err)
		}
	}
}

func testRetention(t *testing.T, b backend) {
	ctx := context.Background()
	dsn := b.dsn(t)
	now := time.Now()
	rec := func(i int, age time.Duration) Record {
		r := makeRecord(i)
		r.Time = now.Add(-age)
		return r
	}
	l := openT(t, dsn, Options{FlushEvery: 5 * time.Millisecond})
	l.Add(rec(0, 48*time.Hour))
	l.Add(rec(1, 3*time.Hour))
	l.Add(rec(2, time.Minute))
	l.Add(rec(3, 0))
	flushT(t, l)
	closeT(t, l)

	indexes := func(l *Log) []int {
		var got []int
		for _, r := range queryT(t, l, Query{}) {
			got = append(got, r.TopK[0].Index)
		}
		return got
	}
	waitFor := func(l *Log, want []int) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			got := indexes(l)
			if fmt.Sprint(got) == fmt.Sprint(want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("records %v, want %v", got, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// At Open: keep an hour.
	l = openT(t, dsn, Options{Retention: time.Hour, FlushEvery: 5 * time.Millisecond, retentionEvery: 50 * time.Millisecond})
	defer closeT(t, l)
	waitFor(l, []int{2, 3})
	// Periodically: an old record added now goes at the next check.
	l.Add(rec(4, 2*time.Hour))
	l.Add(rec(5, 0))
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(l, []int{2, 3, 5})
}

// testSanitize: strings PostgreSQL would refuse (NUL, invalid UTF-8) do
// not fail the batch; they are stored cleaned.
func testSanitize(t *testing.T, b backend) {
	l := openT(t, b.dsn(t), Options{FlushEvery: 5 * time.Millisecond})
	defer closeT(t, l)
	r := makeRecord(7)
	r.RequestID = "a\x00b\xffc"
	r.TopK[0].Label = "nul\x00label"
	good := makeRecord(8)
	l.Add(r)
	l.Add(good)
	flushT(t, l)
	recs := queryT(t, l, Query{})
	if len(recs) != 2 {
		t.Fatalf("got %d records, want 2", len(recs))
	}
	if recs[0].RequestID != "ab\uFFFDc" || recs[0].TopK[0].Label != "nullabel" {
		t.Errorf("stored %q / %q, want cleaned %q / %q", recs[0].RequestID, recs[0].TopK[0].Label, "ab\uFFFDc", "nullabel")
	}
	if d := diffRecord(recs[1], good); d != "" {
		t.Error(d)
	}
}

func TestOpenDSN(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for _, tc := range []struct{ dsn, file string }{
		{"", "predictions.db"},
		{"plain.db", "plain.db"},
		{"sqlite:prefixed.db", "prefixed.db"},
		{"sqlite://slashes.db", "slashes.db"},
		{"sqlite:" + filepath.Join(dir, "odd?name#1%.db"), "odd?name#1%.db"},
		{filepath.Join(dir, "abs.db"), "abs.db"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			l := openT(t, tc.dsn, Options{})
			l.Add(makeRecord(1))
			flushT(t, l)
			closeT(t, l)
			if _, err := os.Stat(filepath.Join(dir, tc.file)); err != nil {
				t.Fatalf("dsn %q: %v", tc.dsn, err)
			}
		})
	}
	if _, err := Open(context.Background(), "sqlite:"+filepath.Join(dir, "no", "such", "dir", "x.db"), Options{}); err == nil {
		t.Error("Open in a missing directory succeeded")
	}
	if _, err := Open(context.Background(), "postgres://%zz", Options{}); err == nil {
		t.Error("Open with a malformed postgres DSN succeeded")
	}
}

var errDiskFull = fmt.Errorf("disk I/O error: %w", syscall.ENOSPC)

// faultStore wraps a real store with faults: stall makes inserts wait for
// the channel to close; fail makes them fail like a full disk.
type faultStore struct {
	store
	stall   chan struct{}
	fail    atomic.Bool
	inserts atomic.Int64

	mu    sync.Mutex
	sizes []int // records of each committed batch
}

func (f *faultStore) insert(ctx context.Context, recs []Record) error {
	f.inserts.Add(1)
	if f.stall != nil {
		select {
		case <-f.stall:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if f.fail.Load() {
		return errDiskFull
	}
	if err := f.store.insert(ctx, recs); err != nil {
		return err
	}
	f.mu.Lock()
	f.sizes = append(f.sizes, len(recs))
	f.mu.Unlock()
	return nil
}

func newFaultLog(t *testing.T, o Options) (*Log, *faultStore) {
	t.Helper()
	inner, err := openSQLite(context.Background(), filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	fs := &faultStore{store: inner}
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	return newLog(fs, o), fs
}

// addTimed adds records from several goroutines and returns the slowest Add.
func addTimed(l *Log, lo, hi, goroutines int) time.Duration {
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		slowest time.Duration
	)
	for g := range goroutines {
		wg.Go(func() {
			for i := lo + g; i < hi; i += goroutines {
				start := time.Now()
				l.Add(makeRecord(i))
				d := time.Since(start)
				mu.Lock()
				slowest = max(slowest, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return slowest
}

// TestAddNeverBlocks: with the writer stalled in a write, Add returns at
// once and drops (counted) what does not fit in the buffer.
func TestAddNeverBlocks(t *testing.T) {
	const buffer, batch, n = 40, 10, 1000
	l, fs := newFaultLog(t, Options{Buffer: buffer, BatchSize: batch, FlushEvery: time.Millisecond})
	fs.stall = make(chan struct{})
	defer closeT(t, l)
	// The writer takes a first batch and stalls on it.
	l.Add(makeRecord(0))
	for deadline := time.Now().Add(10 * time.Second); fs.inserts.Load() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("writer never started a write")
		}
		time.Sleep(time.Millisecond)
	}
	if slowest := addTimed(l, 1, n, 8); slowest > time.Second {
		t.Errorf("slowest Add took %v with the writer stalled", slowest)
	}
	s := l.Stats()
	if s.Added+s.Dropped != n || s.Added > buffer+batch || s.Dropped < n-buffer-batch {
		t.Errorf("Stats = %+v: want Added+Dropped=%d, Added <= %d", s, n, buffer+batch)
	}
	if s.Written != 0 || s.Pending != int(s.Added) {
		t.Errorf("Stats = %+v: nothing can be written yet", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	if err := l.Flush(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Flush with the writer stalled = %v, want DeadlineExceeded", err)
	}
	cancel()

	close(fs.stall) // the disk is back
	flushT(t, l)
	s = l.Stats()
	if s.Written != s.Added || s.Pending != 0 || s.WriteErrors != 0 {
		t.Errorf("Stats after the stall = %+v, want all accepted written", s)
	}
	if recs := queryT(t, l, Query{}); len(recs) != int(s.Added) {
		t.Errorf("Query: %d records, want %d", len(recs), s.Added)
	}
}

// TestFullBatchWakesWriter: the writer does not wait out FlushEvery when a
// full batch is waiting, nor when half a small buffer is.
func TestFullBatchWakesWriter(t *testing.T) {
	for _, tt := range []struct {
		o Options
		n int
	}{
		{Options{FlushEvery: time.Hour, BatchSize: 8}, 20},
		{Options{FlushEvery: time.Hour, BatchSize: 1000, Buffer: 16}, 12}, // 8 waiting of 16; none dropped
	} {
		o := tt.o
		l := openT(t, "sqlite::memory:", o)
		for i := range tt.n {
			if !l.Add(makeRecord(i)) {
				t.Fatalf("%+v: record %d dropped", o, i)
			}
		}
		for deadline := time.Now().Add(10 * time.Second); l.Stats().Written == 0; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%+v: nothing written 10 s after %d records: %+v", o, tt.n, l.Stats())
			}
		}
		closeT(t, l)
	}
}

// TestCommitsAreFullBatches: records arriving one by one are committed
// in full batches (a wake-up must not also commit the few records that
// came after the full batch: that doubled the commits).
func TestCommitsAreFullBatches(t *testing.T) {
	const batch, n = 8, 80
	l, fs := newFaultLog(t, Options{FlushEvery: time.Hour, BatchSize: batch})
	defer closeT(t, l)
	for i := range n {
		l.Add(makeRecord(i))
		time.Sleep(100 * time.Microsecond) // spread out, as requests come
	}
	for deadline := time.Now().Add(10 * time.Second); l.Stats().Written < n-batch; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %+v after 10 s", l.Stats())
		}
	}
	fs.mu.Lock()
	sizes := slices.Clone(fs.sizes)
	fs.mu.Unlock()
	for _, n := range sizes {
		if n != batch {
			t.Fatalf("commits of %v records, want full batches of %d", sizes, batch)
		}
	}
}

// TestDiskFull: while writes fail, batches are retried then dropped and
// counted, Flush reports the error, Add never blocks; when the fault
// clears, writing resumes.
func TestDiskFull(t *testing.T) {
	l, fs := newFaultLog(t, Options{Buffer: 100, BatchSize: 20, FlushEvery: time.Millisecond,
		attempts: 3, retryBackoff: time.Millisecond})
	defer closeT(t, l)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(l.Collector())

	fs.fail.Store(true)
	if slowest := addTimed(l, 0, 500, 4); slowest > time.Second {
		t.Errorf("slowest Add took %v with the disk failing", slowest)
	}
	err := l.Flush(context.Background())
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Flush with the disk failing = %v, want ENOSPC", err)
	}
	s := l.Stats()
	if s.Written != 0 || s.Pending != 0 || s.Dropped != 500 {
		t.Errorf("Stats = %+v: want all 500 dropped (rejected or after failed writes), none written", s)
	}
	if s.Added == 0 || s.WriteErrors < 3 || s.WriteErrors%3 != 0 {
		t.Errorf("Stats = %+v: want each accepted batch tried 3 times", s)
	}
	if err := l.Flush(context.Background()); err != nil {
		t.Errorf("second Flush with nothing new = %v, want nil (the error was reported)", err)
	}

	fs.fail.Store(false)
	addTimed(l, 1000, 1050, 2)
	flushT(t, l)
	checkRecords(t, queryT(t, l, Query{}), seq(1000, 1050))
	s2 := l.Stats()
	if s2.Written != 50 || s2.Dropped != s.Dropped || s2.WriteErrors != s.WriteErrors || s2.Pending != 0 {
		t.Errorf("Stats after the fault = %+v (before %+v): want 50 more written, no more drops", s2, s)
	}

	// The metrics say the same.
	want := map[string]float64{
		`fastinfer_prediction_log_records_total{outcome="written"}`: 50,
		`fastinfer_prediction_log_records_total{outcome="dropped"}`: float64(s2.Dropped),
		`fastinfer_prediction_log_pending`:                          0,
		`fastinfer_prediction_log_write_errors_total`:               float64(s2.WriteErrors),
	}
	got := gather(t, reg)
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	if c := got["fastinfer_prediction_log_write_duration_seconds_count"]; c < float64(s2.WriteErrors)+1 {
		t.Errorf("write duration histogram counted %v writes, want >= %d", c, s2.WriteErrors+1)
	}
}

// gather flattens a registry into "name{labels}" → value (histograms as
// name_count).
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
			}
			if len(labels) > 0 {
				name += "{" + strings.Join(labels, ",") + "}"
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[name] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[name] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[name+"_count"] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

func TestClose(t *testing.T) {
	t.Run("writes what is pending", func(t *testing.T) {
		dsn := "sqlite:" + filepath.Join(t.TempDir(), "p.db")
		l := openT(t, dsn, Options{FlushEvery: time.Hour, BatchSize: 1000})
		for i := range 100 {
			l.Add(makeRecord(i))
		}
		closeT(t, l)
		if l.Add(makeRecord(100)) {
			t.Error("Add after Close accepted a record")
		}
		if s := l.Stats(); s != (Stats{Added: 100, Written: 100, Dropped: 1}) {
			t.Errorf("Stats = %+v", s)
		}
		if _, err := l.Query(context.Background(), Query{}); !errors.Is(err, ErrClosed) {
			t.Errorf("Query after Close = %v, want ErrClosed", err)
		}
		if err := l.Flush(context.Background()); err != nil {
			t.Errorf("Flush after Close = %v", err)
		}
		closeT(t, l) // idempotent
		l = openT(t, dsn, Options{})
		defer closeT(t, l)
		checkRecords(t, queryT(t, l, Query{}), seq(0, 100))
	})
	t.Run("gives up at the deadline", func(t *testing.T) {
		l, fs := newFaultLog(t, Options{FlushEvery: time.Millisecond})
		fs.stall = make(chan struct{}) // never released
		for i := range 30 {
			l.Add(makeRecord(i))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		if err := l.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Close with a stalled writer = %v, want DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("Close took %v", d)
		}
		if s := l.Stats(); s.Dropped != 30 || s.Pending != 0 || s.Written != 0 {
			t.Errorf("Stats = %+v, want the 30 pending records dropped", s)
		}
	})
}

// testLogger sends the log's slog output to t.Log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
