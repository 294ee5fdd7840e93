package server

import (
	"math"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"fastinfer/monitor/drift"
)

// unknownModel labels requests for models that are not served, so a client
// cannot create a metric series per made-up name.
const unknownModel = "_unknown"

// Latency buckets from 100 µs to 10 s: a small model answers in well under
// a millisecond, CPU ResNet-50 near 100 ms, GPU requests near 1–5 ms.
// Histograms (not summaries) so a fleet p99 can be aggregated.
var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

type metrics struct {
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	images     *prometheus.CounterVec
	preprocess *prometheus.HistogramVec
	modelInfo  *prometheus.GaugeVec
	predicted  *prometheus.CounterVec
	confidence *prometheus.HistogramVec
	panics     prometheus.Counter
	grpcCalls  *prometheus.CounterVec
	handler    fasthttp.RequestHandler
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fastinfer_requests_total",
			Help: "Inference requests, HTTP and gRPC, by model and HTTP status code (a gRPC call by the status its error maps from).",
		}, []string{"model", "version", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fastinfer_request_duration_seconds",
			Help:    "End-to-end inference request latency, HTTP and gRPC, by model and HTTP status code.",
			Buckets: latencyBuckets,
		}, []string{"model", "version", "code"}),
		images: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fastinfer_images_total",
			Help: "Images classified, by model.",
		}, []string{"model", "version"}),
		preprocess: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fastinfer_preprocess_duration_seconds",
			Help:    "Time to decode and preprocess a request's images.",
			Buckets: latencyBuckets,
		}, []string{"model", "version"}),
		modelInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fastinfer_model_info",
			Help: "1 for each served model version, labelled with its execution provider.",
		}, []string{"model", "version", "provider"}),
		predicted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fastinfer_predictions_total",
			Help: "Predictions by top-1 class (its label, or its index when the model has no labels).",
		}, []string{"model", "version", "class"}),
		confidence: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fastinfer_prediction_confidence",
			Help:    "Top-1 score of each prediction: its softmax probability, or the output itself for a model ending in Softmax or Sigmoid.",
			Buckets: []float64{.1, .2, .3, .4, .5, .6, .7, .8, .9, .95, .99},
		}, []string{"model", "version"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fastinfer_handler_panics_total",
			Help: "Handler panics recovered (each answered 500).",
		}),
		// The names grpc-ecosystem's go-grpc-prometheus gives, which gRPC
		// dashboards read.
		grpcCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_handled_total",
			Help: "gRPC calls completed, by method and status code.",
		}, []string{"grpc_type", "grpc_service", "grpc_method", "grpc_code"}),
	}
	reg.MustRegister(m.requests, m.duration, m.images, m.preprocess, m.modelInfo, m.predicted, m.confidence, m.panics, m.grpcCalls,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.handler = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return m
}

func (m *metrics) serve(ctx *fasthttp.RequestCtx) { m.handler(ctx) }

// observePredictions counts each row's top-1 class and its score, and feeds the drift monitor when the version has one
// (stats may be nil: image facts unknown). The per-class counters are
// resolved at AddModel, so this is a few atomic adds per image.
func (m *Model) observePredictions(logits []float32, rows int, stats []ImageStats, sm []rowSoftmax) {
	for r := range rows {
		row := logits[r*m.Classes : (r+1)*m.Classes]
		best := 0
		for i, v := range row {
			if v > row[best] {
				best = i
			}
		}
		conf := sm[r].score(row[best])
		m.classCtrs[best].Inc()
		m.confidenceObs.Observe(conf)
		if m.Drift != nil {
			o := drift.Observation{Class: best, Confidence: conf,
				Brightness: math.NaN(), Contrast: math.NaN(), Width: math.NaN(), Height: math.NaN(), Aspect: math.NaN()}
			if stats != nil {
				st := stats[r]
				o.Brightness, o.Contrast = st.Brightness, st.Contrast
				if st.Width > 0 && st.Height > 0 {
					o.Width, o.Height = float64(st.Width), float64(st.Height)
					o.Aspect = o.Width / o.Height
				}
			}
			m.Drift.Add(o)
		}
	}
}
