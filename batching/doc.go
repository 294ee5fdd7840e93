// Package batching is fastinfer's dynamic batcher: a per-model scheduler
// between the HTTP server and the model's execution instances.
//
// Requests carry already-preprocessed input rows. Workers, one per model
// instance, take rows from a priority queue, concatenate them into the
// instance's batch buffer, run one execution, and copy each request exactly
// its own output rows. A request with more rows than the largest batch is
// split across executions and reassembled in order.
//
// When a batch leaves (Triton's rules, plus one):
//   - at once when the queue holds a full batch (MaxBatchSize rows) or can
//     form one of the PreferredBatchSizes (the largest that fits is taken);
//   - at once when the oldest request has waited MaxQueueDelay: the delay
//     is a ceiling, not a sleep;
//   - at once when no further request is expected before that ceiling: the
//     batcher keeps a moving average of the gap between arrivals, and an
//     idle instance does not wait for company that will arrive too late.
//
// An instance with two input buffers (Staged) gets two goroutines: one
// runs batches, the other forms the next batch and copies its rows into
// the free buffer meanwhile, so on a GPU the copy does not leave the
// device idle between runs. It copies ahead only when the queue holds a
// full batch beyond one for every idle instance; otherwise it waits for
// the running batch to end, as a plain worker does. A batch copied ahead
// is settled: a higher-priority request arriving meanwhile waits for it,
// and its requests' callers are not asked again whether they left.
//
// Overload is refused, never queued without bound: past MaxQueueRows
// waiting rows a request gets ErrQueueFull (HTTP 429). A request may carry a
// timeout: if it is still waiting when the timeout passes it gets
// ErrQueueTimeout (504), and if the latency model predicts at admission that
// it cannot finish in time it gets ErrDeadlineUnmeetable (503) at once
// instead of running late (BentoML's idea; Triton has no equivalent).
//
// The latency model: execution time of a batch of n rows is fitted as
// t(n) = a + b·n by exponentially weighted least squares over recent
// executions (each new one weighs 1, older ones decay by 0.9 per
// execution). A new request of r rows at priority p must wait for the rows
// queued ahead of it (R rows at priority p or higher). With maximum batch
// B and N instances, those R+r rows take k = ⌈(R+r)/B⌉ executions, run
// ⌈k/N⌉ at a time, so the prediction is ⌈k/N⌉·t(min(R+r, B)), plus half an
// execution when every instance is busy (the expected remainder of the
// running one). Shedding starts once three executions have been observed.
package batching
