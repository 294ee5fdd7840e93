package predlog

import (
	"context"
	"math"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// BenchmarkSQLiteWrite is the writer's cost per record, as the server pays
// it at saturation: Add from the request path, batched transactions on
// the writer goroutine, a final Flush. cpu-µs/record counts every thread
// of the process (the writer, SQLite, the garbage collector).
func BenchmarkSQLiteWrite(b *testing.B) {
	ctx := context.Background()
	l, err := Open(ctx, "sqlite:"+filepath.Join(b.TempDir(), "p.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close(ctx)
	labels := []string{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"}
	// Values as the server makes them: latencies from whole microseconds,
	// scores from a float64 softmax, statistics from float32 pixels.
	rec := Record{RequestID: "mi9x2k3a-1b4f", Model: "fashion-resnet", Version: 3,
		Latency: Latency{PreprocessMs: 0.021, QueueMs: 3.456, InferMs: 0.85, TotalMs: 4.512},
		Width:   28, Height: 28, Brightness: float64(float32(0.28612345)), Contrast: float64(float32(0.35301234))}
	cpu0 := cpuTime()
	for i := 0; b.Loop(); i++ {
		r := rec
		r.TopK = make([]Class, 5)
		sum := 0.0
		for k := range 5 {
			sum += math.Exp(float64(5-k) + float64(i%7)/10)
		}
		for k := range r.TopK {
			r.TopK[k] = Class{Index: (i + k) % 10, Label: labels[k], Score: math.Exp(float64(5-k)+float64(i%7)/10) / sum}
		}
		r.RequestID = "mi9x2k3a-" + strconv.FormatUint(uint64(i), 36)
		for !l.Add(r) {
			time.Sleep(time.Millisecond)
		}
	}
	if err := l.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/record")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// discardStore commits everything at once.
type discardStore struct{}

func (discardStore) insert(context.Context, []Record) error { return nil }
func (discardStore) deleteBefore(context.Context, time.Time, int) (int64, error) {
	return 0, nil
}
func (discardStore) query(context.Context, Query) ([]Record, error) { return nil, nil }
func (discardStore) close() error                                   { return nil }

// BenchmarkAddParallel is Add's cost on the request path with many
// handlers adding at once, as at saturation, and the writer taking the
// records into batches (the store discards them).
func BenchmarkAddParallel(b *testing.B) {
	l := newLog(discardStore{}, Options{})
	defer l.Close(context.Background())
	rec := Record{RequestID: "mi9x2k3a-1b4f", Model: "fashion-resnet", Version: 3,
		TopK: []Class{{Index: 1, Label: "Trouser", Score: 0.9}}, Brightness: 0.3, Contrast: 0.4}
	b.SetParallelism(16)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Add(rec)
		}
	})
	b.StopTimer()
	if s := l.Stats(); s.Dropped > s.Added/100 {
		b.Logf("%d of %d dropped: the writer fell behind", s.Dropped, s.Added+s.Dropped)
	}
}
