package predlog

import (
	"context"
	"fmt"
	"path/filepath"
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
	rec := Record{RequestID: "req-000001", Model: "fashion-resnet", Version: 3,
		Latency: Latency{PreprocessMs: 0.05, QueueMs: 0.4, InferMs: 1.2, TotalMs: 1.8},
		Width:   28, Height: 28, Brightness: 0.31, Contrast: 0.22}
	cpu0 := cpuTime()
	for i := 0; b.Loop(); i++ {
		r := rec
		r.TopK = make([]Class, 5)
		for k := range r.TopK {
			r.TopK[k] = Class{Index: (i + k) % 10, Label: labels[k], Score: 0.9 / float64(k+1)}
		}
		r.RequestID = fmt.Sprintf("req-%06d", i)
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
