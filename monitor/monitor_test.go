package monitor

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"fastinfer/cuda"
	"fastinfer/monitor/drift"
)

func TestGPUCollector(t *testing.T) {
	info := cuda.Info{Devices: []cuda.Device{{Index: 0, Name: "NVIDIA H100 80GB HBM3", UUID: "GPU-1"}}}
	tests := []struct {
		name    string
		samples []cuda.Sample
		ok      bool
		want    string
	}{
		{"no GPU", nil, false, ""},
		{"one GPU", []cuda.Sample{{Index: 0, UUID: "GPU-1", UtilizationPct: 75, MemoryUsed: 1 << 30, MemoryTotal: 80 << 30, PowerWatts: 350.5}}, true, `
# HELP fastinfer_gpu_memory_total_bytes GPU memory in all.
# TYPE fastinfer_gpu_memory_total_bytes gauge
fastinfer_gpu_memory_total_bytes{gpu="0",name="NVIDIA H100 80GB HBM3"} 8.589934592e+10
# HELP fastinfer_gpu_memory_used_bytes GPU memory in use (all processes).
# TYPE fastinfer_gpu_memory_used_bytes gauge
fastinfer_gpu_memory_used_bytes{gpu="0",name="NVIDIA H100 80GB HBM3"} 1.073741824e+09
# HELP fastinfer_gpu_power_watts GPU board power draw (absent where the product does not report it).
# TYPE fastinfer_gpu_power_watts gauge
fastinfer_gpu_power_watts{gpu="0",name="NVIDIA H100 80GB HBM3"} 350.5
# HELP fastinfer_gpu_utilization_ratio Fraction of the last NVML sample period during which a kernel ran on the GPU.
# TYPE fastinfer_gpu_utilization_ratio gauge
fastinfer_gpu_utilization_ratio{gpu="0",name="NVIDIA H100 80GB HBM3"} 0.75
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewGPUCollector(func() ([]cuda.Sample, bool) { return tt.samples, tt.ok }, info)
			if err := testutil.CollectAndCompare(c, strings.NewReader(tt.want)); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestDriftCollector(t *testing.T) {
	b := drift.NewBuilder("m", 2, "test", nil)
	for i := range 300 {
		b.Add(drift.Observation{Class: i % 3, Confidence: 0.9, Brightness: 0.5, Contrast: 0.2, Width: 28, Height: 28, Aspect: 1})
	}
	mon, err := drift.New(b.Profile(), drift.Options{Window: 100, MinSamples: 50})
	if err != nil {
		t.Fatal(err)
	}
	for range 80 { // one class only: the class test must alarm
		mon.Add(drift.Observation{Class: 0, Confidence: 0.9, Brightness: 0.5, Contrast: 0.2, Width: 28, Height: 28, Aspect: 1})
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewDriftCollector(func() []*drift.Monitor { return []*drift.Monitor{mon} }))
	got, err := testutil.GatherAndCount(reg, "fastinfer_drift_alarm", "fastinfer_drift_window_observations")
	if err != nil || got != 2 {
		t.Fatalf("gathered %d alarm/window series: %v", got, err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP fastinfer_drift_alarm 1 when any drift test of the version alarms, else 0 (also 0 while the window warms up).
# TYPE fastinfer_drift_alarm gauge
fastinfer_drift_alarm{model="m",version="2"} 1
# HELP fastinfer_drift_window_observations Predictions in the drift window.
# TYPE fastinfer_drift_window_observations gauge
fastinfer_drift_window_observations{model="m",version="2"} 80
`), "fastinfer_drift_alarm", "fastinfer_drift_window_observations"); err != nil {
		t.Error(err)
	}
	n, _ := testutil.GatherAndCount(reg, "fastinfer_drift_pvalue")
	if n == 0 {
		t.Error("no p-value series")
	}
}
