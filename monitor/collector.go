// Package monitor exports what the drift monitors see as Prometheus
// metrics. The statistics themselves are in monitor/drift.
package monitor

import (
	"math"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"fastinfer/monitor/drift"
)

var (
	descPValue = prometheus.NewDesc("fastinfer_drift_pvalue",
		"p-value of each drift test of the recent window against the reference profile (p-value tests only).",
		[]string{"model", "version", "test"}, nil)
	descStatistic = prometheus.NewDesc("fastinfer_drift_statistic",
		"Statistic of each drift test: chi-square, Kolmogorov–Smirnov D or PSI.",
		[]string{"model", "version", "test"}, nil)
	descAlarm = prometheus.NewDesc("fastinfer_drift_alarm",
		"1 when any drift test of the version alarms, else 0 (also 0 while the window warms up).",
		[]string{"model", "version"}, nil)
	descWindow = prometheus.NewDesc("fastinfer_drift_window_observations",
		"Predictions in the drift window.",
		[]string{"model", "version"}, nil)
)

// DriftCollector runs every monitor's tests at scrape time, so the gauges
// are as fresh as the scrape and cost nothing between scrapes (about half
// a millisecond per model version per scrape).
type DriftCollector struct {
	monitors func() []*drift.Monitor
}

// NewDriftCollector collects the monitors that list returns at each scrape.
func NewDriftCollector(list func() []*drift.Monitor) *DriftCollector {
	return &DriftCollector{monitors: list}
}

// Describe implements prometheus.Collector.
func (c *DriftCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPValue, descStatistic, descAlarm, descWindow} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *DriftCollector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c.monitors() {
		r := m.Check()
		v := strconv.Itoa(r.Version)
		alarm := 0.0
		if r.Drift {
			alarm = 1
		}
		ch <- prometheus.MustNewConstMetric(descAlarm, prometheus.GaugeValue, alarm, r.Model, v)
		ch <- prometheus.MustNewConstMetric(descWindow, prometheus.GaugeValue, float64(r.Window), r.Model, v)
		for _, t := range r.Tests {
			ch <- prometheus.MustNewConstMetric(descStatistic, prometheus.GaugeValue, t.Statistic, r.Model, v, t.Name)
			if !math.IsNaN(t.PValue) {
				ch <- prometheus.MustNewConstMetric(descPValue, prometheus.GaugeValue, t.PValue, r.Model, v, t.Name)
			}
		}
	}
}
