package server

import (
	"github.com/valyala/fasthttp"
	"strconv"
)

// GET /v2/models/{m}[/versions/{v}]/config: the version's configuration in
// the shape of Triton's model configuration, which perf_analyzer and
// Triton's clients read to learn the batch limit and the per-image input
// shape (dims leave out the batch dimension when max_batch_size > 0).

type tritonTensor struct {
	Name     string  `json:"name"`
	DataType string  `json:"data_type"`
	Dims     []int64 `json:"dims"`
}

type tritonConfig struct {
	Name            string            `json:"name"`
	Platform        string            `json:"platform"`
	Backend         string            `json:"backend"`
	MaxBatchSize    int               `json:"max_batch_size"`
	Input           []tritonTensor    `json:"input"`
	Output          []tritonTensor    `json:"output"`
	DynamicBatching *tritonBatching   `json:"dynamic_batching,omitempty"`
	InstanceGroup   []tritonInstances `json:"instance_group"`
}

type tritonBatching struct {
	PreferredBatchSize        []int       `json:"preferred_batch_size,omitempty"`
	MaxQueueDelayMicroseconds int64       `json:"max_queue_delay_microseconds"`
	PriorityLevels            int         `json:"priority_levels,omitempty"`
	DefaultQueuePolicy        tritonQueue `json:"default_queue_policy"`
}

type tritonQueue struct {
	MaxQueueSize               int   `json:"max_queue_size"`
	DefaultTimeoutMicroseconds int64 `json:"default_timeout_microseconds"`
}

type tritonInstances struct {
	Name  string `json:"name"`
	Kind  string `json:"kind"`
	Count int    `json:"count"`
	GPUs  []int  `json:"gpus,omitempty"`
}

// tritonDataType is a protocol datatype as model_config.proto names it.
func tritonDataType(dt string) string { return "TYPE_" + dt }

func (m *Model) tritonConfig() tritonConfig {
	b := m.Batching
	c := tritonConfig{Name: m.Name, Platform: m.Platform, Backend: "onnxruntime", MaxBatchSize: b.MaxBatchSize,
		Input: []tritonTensor{}, Output: []tritonTensor{}}
	dims := func(shape []int64) []int64 {
		if b.MaxBatchSize > 0 && len(shape) > 0 {
			return shape[1:]
		}
		return shape
	}
	for _, t := range m.Inputs {
		c.Input = append(c.Input, tritonTensor{t.Name, tritonDataType(t.Datatype), dims(t.Shape)})
	}
	for _, t := range m.Outputs {
		c.Output = append(c.Output, tritonTensor{t.Name, tritonDataType(t.Datatype), dims(t.Shape)})
	}
	if b.MaxBatchSize > 0 {
		c.DynamicBatching = &tritonBatching{
			PreferredBatchSize: b.PreferredBatchSizes, MaxQueueDelayMicroseconds: b.MaxQueueDelayUS, PriorityLevels: b.PriorityLevels,
			DefaultQueuePolicy: tritonQueue{MaxQueueSize: b.MaxQueueSize, DefaultTimeoutMicroseconds: b.DefaultTimeoutUS},
		}
	}
	if len(m.InstanceGroups) == 0 {
		kind := "KIND_CPU"
		if m.Provider != "cpu" {
			kind = "KIND_GPU"
		}
		c.InstanceGroup = []tritonInstances{{Name: m.Name, Kind: kind, Count: max(b.Instances, 1)}}
		return c
	}
	for i, g := range m.InstanceGroups {
		t := tritonInstances{Name: m.Name, Kind: "KIND_CPU", Count: g.Count}
		if g.Kind == "gpu" {
			t.Kind, t.GPUs = "KIND_GPU", g.GPUs
		}
		if len(m.InstanceGroups) > 1 {
			t.Name = m.Name + "_" + strconv.Itoa(i)
		}
		c.InstanceGroup = append(c.InstanceGroup, t)
	}
	return c
}

// v2Config answers GET /v2/models/{m}[/versions/{v}]/config.
func (s *Server) v2Config(ctx *fasthttp.RequestCtx, name, version string) {
	m, aerr := s.models.get(name, version)
	if aerr != nil {
		writeV2Error(ctx, aerr)
		return
	}
	writeJSON(ctx, m.tritonConfig())
}
