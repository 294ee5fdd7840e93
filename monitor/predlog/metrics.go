package predlog

import "github.com/prometheus/client_golang/prometheus"

var (
	descRecords = prometheus.NewDesc("fastinfer_prediction_log_records_total",
		"Prediction-log records by outcome: written (committed) or dropped (buffer full, log closed, or given up after failed writes).",
		[]string{"outcome"}, nil)
	descPending = prometheus.NewDesc("fastinfer_prediction_log_pending",
		"Prediction-log records accepted but not yet committed nor dropped.",
		nil, nil)
	descWriteErrors = prometheus.NewDesc("fastinfer_prediction_log_write_errors_total",
		"Failed prediction-log write transactions (each attempt; a batch is retried before it is dropped).",
		nil, nil)
)

// Collector exports the log's metrics: fastinfer_prediction_log_records_total
// {outcome="written|dropped"}, fastinfer_prediction_log_pending,
// fastinfer_prediction_log_write_errors_total and the per-batch histogram
// fastinfer_prediction_log_write_duration_seconds. Register it once (the
// names are fixed, so one Log per registry).
func (l *Log) Collector() prometheus.Collector { return collector{l} }

type collector struct{ l *Log }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRecords
	ch <- descPending
	ch <- descWriteErrors
	c.l.writeDuration.Describe(ch)
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.l.Stats()
	ch <- prometheus.MustNewConstMetric(descRecords, prometheus.CounterValue, float64(s.Written), "written")
	ch <- prometheus.MustNewConstMetric(descRecords, prometheus.CounterValue, float64(s.Dropped), "dropped")
	ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(s.Pending))
	ch <- prometheus.MustNewConstMetric(descWriteErrors, prometheus.CounterValue, float64(s.WriteErrors))
	c.l.writeDuration.Collect(ch)
}
