package main

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"fastinfer/batching"
	"fastinfer/models"
	"fastinfer/runtime"
)

func intp(v int) *int { return &v }

func TestPlanInstances(t *testing.T) {
	tests := []struct {
		name       string
		in         models.Instances
		flagCount  int
		threads    int
		gpus       int
		want       instancePlan
		wantErrSub string
	}{
		{name: "cpu default: one instance, all cores", want: instancePlan{kind: "cpu", devices: []int{0}, threads: 8}},
		{name: "cpu count divides cores", in: models.Instances{Count: intp(2)}, want: instancePlan{kind: "cpu", devices: []int{0, 0}, threads: 4}},
		{name: "flag count", flagCount: 3, want: instancePlan{kind: "cpu", devices: []int{0, 0, 0}, threads: 2}},
		{name: "threads flag wins", in: models.Instances{Count: intp(2)}, threads: 1, want: instancePlan{kind: "cpu", devices: []int{0, 0}, threads: 1}},
		{name: "gpu auto: two per device", gpus: 2, want: instancePlan{kind: "gpu", devices: []int{0, 0, 1, 1}, threads: 1}},
		{name: "gpu listed", gpus: 4, in: models.Instances{Count: intp(1), GPUs: []int{2, 3}}, want: instancePlan{kind: "gpu", devices: []int{2, 3}, threads: 1}},
		{name: "cpu forced on gpu machine", gpus: 2, in: models.Instances{Kind: "cpu"}, want: instancePlan{kind: "cpu", devices: []int{0}, threads: 8}},
		{name: "gpu asked, none found", in: models.Instances{Kind: "gpu", Count: intp(1)}, want: instancePlan{kind: "gpu", devices: []int{0}, threads: 1}},
		{name: "missing device", gpus: 1, in: models.Instances{GPUs: []int{1}}, wantErrSub: "device 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := planInstances(tt.in, tt.flagCount, tt.threads, tt.gpus, 8)
			if tt.wantErrSub != "" {
				if err == nil {
					t.Fatalf("plan = %+v, want error", got)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("plan = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestBatchConfigOverridesFlags(t *testing.T) {
	cfg := &serveConfig{maxBatch: 8, maxQueueDelay: 2 * time.Millisecond, maxQueue: 256, priorityLevels: 1}
	got := batchConfig(models.Batching{}, cfg)
	want := batching.Config{MaxBatchSize: 8, MaxQueueDelay: 2 * time.Millisecond, MaxQueueRows: 256, PriorityLevels: 1}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("flags only: %+v, want %+v", got, want)
	}
	got = batchConfig(models.Batching{MaxBatchSize: intp(32), MaxQueueDelayUS: intp(500), PreferredBatchSizes: []int{16, 32},
		MaxQueueSize: intp(512), DefaultTimeoutUS: intp(100000), PriorityLevels: intp(2)}, cfg)
	want = batching.Config{MaxBatchSize: 32, MaxQueueDelay: 500 * time.Microsecond, PreferredBatchSizes: []int{16, 32},
		MaxQueueRows: 512, DefaultTimeout: 100 * time.Millisecond, PriorityLevels: 2}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("config.yaml: %+v, want %+v", got, want)
	}
}

func TestWarmupSizes(t *testing.T) {
	tests := []struct {
		provider string
		maxRows  int
		want     []int
	}{
		{runtime.ProviderCPU, 1, []int{1}},
		{runtime.ProviderCPU, 32, []int{1, 32}},
		{runtime.ProviderCUDA, 1, []int{1}},
		{runtime.ProviderCUDA, 4, []int{1, 2, 3, 4}},
	}
	for _, tt := range tests {
		if got := warmupSizes(tt.provider, tt.maxRows); !slices.Equal(got, tt.want) {
			t.Errorf("warmupSizes(%s, %d) = %v, want %v", tt.provider, tt.maxRows, got, tt.want)
		}
	}
}
