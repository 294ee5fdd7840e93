package batching

import (
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the batcher's Prometheus series, labelled by model and
// version. Histograms, not summaries, so a fleet-wide p99 can be computed.
type Metrics struct {
	queue      *prometheus.HistogramVec
	compute    *prometheus.HistogramVec
	input      *prometheus.HistogramVec
	output     *prometheus.HistogramVec
	batchRows  *prometheus.HistogramVec
	executions *prometheus.CounterVec
	failures   *prometheus.CounterVec
	rows       *prometheus.CounterVec
	rejections *prometheus.CounterVec
	pending    *prometheus.GaugeVec
}

var durationBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// copyBuckets time the copies around an execution: microseconds for a
// small model's rows, milliseconds for 64 ResNet inputs (38 MB).
var copyBuckets = []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1}

// NewMetrics registers the batcher's series with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	labels := []string{"model", "version"}
	m := &Metrics{
		queue: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fastinfer_queue_duration_seconds", Buckets: durationBuckets,
			Help: "Time a request waited in the batcher before its first rows started executing.",
		}, labels),
		compute: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fastinfer_compute_duration_seconds", Buckets: durationBuckets,
			Help: "Time of one execution (one batch) inside the model instance.",
		}, labels),
		input: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fastinfer_compute_input_duration_seconds", Buckets: copyBuckets,
			Help: "Time per execution copying the requests' rows into the instance's batch buffer (Triton's compute_input); the instance does not run meanwhile.",
		}, labels),
		output: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fastinfer_compute_output_duration_seconds", Buckets: copyBuckets,
			Help: "Time per execution copying the batch's outputs back to its requests (Triton's compute_output).",
		}, labels),
		batchRows: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fastinfer_batch_size",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
			Help:    "Rows (images) per execution: the batch size the batcher achieved.",
		}, labels),
		executions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fastinfer_executions_total",
			Help: "Model executions (batches); rows_total / executions_total is the mean batch size.",
		}, labels),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fastinfer_execution_failures_total",
			Help: "Executions that returned an error (all their requests failed).",
		}, labels),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fastinfer_rows_total",
			Help: "Rows (images) executed.",
		}, labels),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fastinfer_rejections_total",
			Help: "Requests refused or dropped by the batcher, by reason: queue_full, deadline_unmeetable, timeout, cancelled, client_gone, closed.",
		}, append(labels, "reason")),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fastinfer_pending_rows",
			Help: "Rows waiting in the batcher.",
		}, labels),
	}
	reg.MustRegister(m.queue, m.compute, m.input, m.output, m.batchRows, m.executions, m.failures, m.rows, m.rejections, m.pending)
	return m
}

// Observer is one model version's curried series: label lookups happen
// once here, not per request.
type Observer struct {
	queue, compute, batchRows  prometheus.Observer
	input, output              prometheus.Observer
	executions, failures, rows prometheus.Counter
	pendingGauge               prometheus.Gauge
	rejectionsBy               func(reason string) prometheus.Counter

	// Successful executions by batch size, for Stats (Triton's statistics
	// extension): one lock per execution, not per request.
	mu    sync.Mutex
	sizes map[int]*SizeStats
}

// SizeStats are the successful executions of one batch size: how many,
// and their copies in, runs and copies out, summed.
type SizeStats struct {
	BatchSize              int
	Count                  int64
	Input, Compute, Output time.Duration
}

// Stats returns the successful executions so far, by batch size, smallest
// first.
func (o *Observer) Stats() []SizeStats {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]SizeStats, 0, len(o.sizes))
	for _, st := range o.sizes {
		out = append(out, *st)
	}
	slices.SortFunc(out, func(a, b SizeStats) int { return a.BatchSize - b.BatchSize })
	return out
}

// For returns the Observer of one model version.
func (m *Metrics) For(model, version string) *Observer {
	byReason := map[string]prometheus.Counter{}
	for _, r := range []string{"queue_full", "deadline_unmeetable", "timeout", "cancelled", "client_gone", "closed"} {
		byReason[r] = m.rejections.WithLabelValues(model, version, r)
	}
	return &Observer{
		queue:        m.queue.WithLabelValues(model, version),
		compute:      m.compute.WithLabelValues(model, version),
		input:        m.input.WithLabelValues(model, version),
		output:       m.output.WithLabelValues(model, version),
		batchRows:    m.batchRows.WithLabelValues(model, version),
		executions:   m.executions.WithLabelValues(model, version),
		failures:     m.failures.WithLabelValues(model, version),
		rows:         m.rows.WithLabelValues(model, version),
		pendingGauge: m.pending.WithLabelValues(model, version),
		rejectionsBy: func(reason string) prometheus.Counter {
			if c, ok := byReason[reason]; ok {
				return c
			}
			return m.rejections.WithLabelValues(model, version, reason)
		},
	}
}

// nopObserver records nothing (tests, and schedulers built without metrics).
var nopObserver = &Observer{}

func (o *Observer) pending(rows int) {
	if o.pendingGauge != nil {
		o.pendingGauge.Set(float64(rows))
	}
}

func (o *Observer) rejected(reason string) {
	if o.rejectionsBy != nil {
		o.rejectionsBy(reason).Inc()
	}
}

func (o *Observer) queued(d time.Duration) {
	if o.queue != nil {
		o.queue.Observe(d.Seconds())
	}
}

// executed records one execution: in and out are its copies (out is 0
// when it failed), d the run itself.
func (o *Observer) executed(rows int, in, d, out time.Duration, err error) {
	if o.executions == nil {
		return
	}
	o.executions.Inc()
	o.rows.Add(float64(rows))
	o.batchRows.Observe(float64(rows))
	o.input.Observe(in.Seconds())
	o.compute.Observe(d.Seconds())
	if err != nil {
		o.failures.Inc()
		return
	}
	o.output.Observe(out.Seconds())
	o.mu.Lock()
	st := o.sizes[rows]
	if st == nil {
		if o.sizes == nil {
			o.sizes = map[int]*SizeStats{}
		}
		st = &SizeStats{BatchSize: rows}
		o.sizes[rows] = st
	}
	st.Count++
	st.Input += in
	st.Compute += d
	st.Output += out
	o.mu.Unlock()
}
