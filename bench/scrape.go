package bench

import (
	"bytes"
	"fmt"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Snapshot is one model's server-side totals at an instant: histogram
// sums and counts and counter values, summed over its versions.
type Snapshot map[string]float64

// The series the split is computed from.
var splitSeries = []string{
	"fastinfer_request_duration_seconds", // code="200" only
	"fastinfer_preprocess_duration_seconds",
	"fastinfer_queue_duration_seconds",
	"fastinfer_compute_duration_seconds",
	"fastinfer_compute_input_duration_seconds",
	"fastinfer_compute_output_duration_seconds",
	"fastinfer_batch_size",
	"fastinfer_executions_total",
	"fastinfer_rejections_total",
}

const processCPU = "process_cpu_seconds_total"

// scrapedAt is the Snapshot key of when it was read (Unix seconds), for
// rates between two snapshots.
const scrapedAt = "scraped_at"

// Scrape reads GET /metrics and keeps modelName's series.
func (c *Client) Scrape(modelName string) (Snapshot, error) {
	at := time.Now()
	b, err := c.Get("/metrics")
	if err != nil {
		return nil, err
	}
	s, err := ParseSnapshot(b, modelName)
	if err != nil {
		return nil, err
	}
	s[scrapedAt] = float64(at.UnixNano()) / 1e9
	return s, nil
}

// ParseSnapshot extracts modelName's totals from a Prometheus text
// exposition.
func ParseSnapshot(text []byte, modelName string) (Snapshot, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("parsing metrics: %w", err)
	}
	s := Snapshot{}
	// The whole process's CPU (client_golang's process collector): with
	// one model under load, what serving it costs.
	if f := fams[processCPU]; f != nil {
		for _, m := range f.GetMetric() {
			if m.Counter != nil {
				s[processCPU] += m.Counter.GetValue()
			}
		}
	}
	for _, name := range splitSeries {
		f := fams[name]
		if f == nil {
			continue
		}
		for _, m := range f.GetMetric() {
			if label(m, "model") != modelName {
				continue
			}
			if name == "fastinfer_request_duration_seconds" && label(m, "code") != "200" {
				continue
			}
			switch {
			case m.Histogram != nil:
				s[name+"_sum"] += m.Histogram.GetSampleSum()
				s[name+"_count"] += float64(m.Histogram.GetSampleCount())
			case m.Counter != nil:
				s[name] += m.Counter.GetValue()
			}
		}
	}
	return s, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// Split is the server's account of what happened between two snapshots:
// mean request, preprocessing and queue time per request, mean compute
// time, copy times and batch size per execution, how many executions ran
// at once on average, and the process's CPU time per successful request.
func Split(before, after Snapshot) *ServerSplit {
	d := func(k string) float64 { return after[k] - before[k] }
	meanMs := func(name string) float64 {
		if n := d(name + "_count"); n > 0 {
			return d(name+"_sum") / n * 1000
		}
		return 0
	}
	sp := &ServerSplit{
		RequestMs:    meanMs("fastinfer_request_duration_seconds"),
		PreprocessMs: meanMs("fastinfer_preprocess_duration_seconds"),
		QueueMs:      meanMs("fastinfer_queue_duration_seconds"),
		ComputeMs:    meanMs("fastinfer_compute_duration_seconds"),
		InputMs:      meanMs("fastinfer_compute_input_duration_seconds"),
		OutputMs:     meanMs("fastinfer_compute_output_duration_seconds"),
		Executions:   int64(d("fastinfer_executions_total")),
		Rejections:   int64(d("fastinfer_rejections_total")),
	}
	if n := d("fastinfer_batch_size_count"); n > 0 {
		sp.MeanBatchSize = d("fastinfer_batch_size_sum") / n
	}
	if n := d("fastinfer_request_duration_seconds_count"); n > 0 {
		sp.CPUMsPerRequest = d(processCPU) / n * 1000
	}
	if wall := d(scrapedAt); wall > 0 && before[scrapedAt] > 0 {
		sp.ExecutionsInFlight = d("fastinfer_compute_duration_seconds_sum") / wall
	}
	return sp
}

// SetInstances fills InstanceBusy from ExecutionsInFlight for a model
// served by instances instances (0: unknown, left out).
func (sp *ServerSplit) SetInstances(instances int) {
	if instances > 0 {
		sp.InstanceBusy = sp.ExecutionsInFlight / float64(instances)
	}
}
