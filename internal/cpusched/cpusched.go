// Package cpusched sets the Linux scheduling policy of the whole process.
//
// Why: ONNX Runtime splits each operator across its intra-op threads and
// waits for the slowest at a barrier. The Go runtime's own threads (sysmon,
// the threads that wake goroutines) wake up thousands of times a second
// while a model runs; under the default policy each wake-up preempts a
// compute thread when every core is busy, and the whole operator waits for
// it. SCHED_BATCH tells the kernel not to preempt on wake-up, so those
// threads wait for the next tick instead. Measured on the 2-core CPU
// machine: ResNet-18 batch 1 through the batcher went from 0.87 to 0.99 of
// raw session.Run (BenchmarkRawVsBatcher).
package cpusched

import "errors"

// Policy names accepted by Set.
const (
	Normal = "normal" // the kernel default (SCHED_OTHER)
	Batch  = "batch"  // SCHED_BATCH: no preemption on wake-up
)

// ErrUnsupported is returned on systems without SCHED_BATCH.
var ErrUnsupported = errors.New("scheduling policies are only set on Linux")
