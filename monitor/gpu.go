package monitor

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"fastinfer/cuda"
)

var (
	gpuLabels   = []string{"gpu", "name"}
	descGPUUtil = prometheus.NewDesc("fastinfer_gpu_utilization_ratio",
		"Fraction of the last NVML sample period during which a kernel ran on the GPU.", gpuLabels, nil)
	descGPUMemUsed = prometheus.NewDesc("fastinfer_gpu_memory_used_bytes",
		"GPU memory in use (all processes).", gpuLabels, nil)
	descGPUMemTotal = prometheus.NewDesc("fastinfer_gpu_memory_total_bytes",
		"GPU memory in all.", gpuLabels, nil)
	descGPUPower = prometheus.NewDesc("fastinfer_gpu_power_watts",
		"GPU board power draw (absent where the product does not report it).", gpuLabels, nil)
)

// GPUCollector reads NVML at scrape time through package cuda. Without a
// GPU or NVML it collects nothing: no GPU is a normal state.
type GPUCollector struct {
	samples func() ([]cuda.Sample, bool)
	names   map[string]string // UUID → marketing name
}

// NewGPUCollector collects what samples returns (cuda.Samples in the
// server), naming devices from info (cuda.Discover()).
func NewGPUCollector(samples func() ([]cuda.Sample, bool), info cuda.Info) *GPUCollector {
	names := map[string]string{}
	for _, d := range info.Devices {
		names[d.UUID] = d.Name
	}
	return &GPUCollector{samples: samples, names: names}
}

// Describe implements prometheus.Collector.
func (c *GPUCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descGPUUtil, descGPUMemUsed, descGPUMemTotal, descGPUPower} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *GPUCollector) Collect(ch chan<- prometheus.Metric) {
	samples, ok := c.samples()
	if !ok {
		return
	}
	for _, s := range samples {
		gpu, name := strconv.Itoa(s.Index), c.names[s.UUID]
		ch <- prometheus.MustNewConstMetric(descGPUUtil, prometheus.GaugeValue, s.UtilizationPct/100, gpu, name)
		ch <- prometheus.MustNewConstMetric(descGPUMemUsed, prometheus.GaugeValue, float64(s.MemoryUsed), gpu, name)
		ch <- prometheus.MustNewConstMetric(descGPUMemTotal, prometheus.GaugeValue, float64(s.MemoryTotal), gpu, name)
		if s.PowerWatts > 0 {
			ch <- prometheus.MustNewConstMetric(descGPUPower, prometheus.GaugeValue, s.PowerWatts, gpu, name)
		}
	}
}
