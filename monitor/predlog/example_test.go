package predlog_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"fastinfer/monitor/predlog"
)

// The server opens the log at start, registers its metrics, Adds one
// record per image after answering each request, and Closes it at
// shutdown (after the HTTP server stopped, so nothing is Added late).
func Example() {
	dir, _ := os.MkdirTemp("", "predlog-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	l, err := predlog.Open(ctx, "sqlite:"+filepath.Join(dir, "predictions.db"),
		predlog.Options{Retention: 30 * 24 * time.Hour})
	if err != nil {
		fmt.Println(err)
		return
	}
	prometheus.NewRegistry().MustRegister(l.Collector())

	// Per image, after the response went out: never blocks.
	l.Add(predlog.Record{
		RequestID: "req-1", Model: "resnet50", Version: 1,
		TopK:    []predlog.Class{{Index: 281, Label: "tabby", Score: 0.92}},
		Latency: predlog.Latency{PreprocessMs: 1.2, QueueMs: 0.3, InferMs: 8.5, TotalMs: 10.1},
		Width:   640, Height: 480,
		Brightness: 0.45, Contrast: math.NaN(),
	})

	// At shutdown: writes what is pending.
	shutdown, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := l.Close(shutdown); err != nil {
		fmt.Println(err)
	}
	fmt.Printf("%+v\n", l.Stats())
	// Output: {Added:1 Written:1 Dropped:0 WriteErrors:0 Pending:0}
}
