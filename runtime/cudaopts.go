package runtime

import (
	"fmt"
	"strconv"
)

// CUDAOptions tune the CUDA provider; the CPU ignores them.
type CUDAOptions struct {
	// ConvAlgoSearch is how cuDNN picks convolution algorithms:
	// "heuristic" (the default: fast start), "exhaustive" (benchmarks every
	// algorithm the first time each shape runs: seconds per batch size,
	// which the loader's warm-up pays so that no request does; often the
	// fastest kernels after) or "default" (cuDNN's fixed choice).
	ConvAlgoSearch string
	// MemLimit caps each session's GPU memory arena in bytes; 0 = no cap.
	MemLimit int64
	// ArenaExtend is how the arena grows: "power-of-two" (ORT's default:
	// fewer, larger allocations) or "requested" (exactly what is asked:
	// tighter memory, for several models on one GPU).
	ArenaExtend string
	// HostMemory is where a GPU session's Bindings keep their batch
	// buffers: "pinned" (the default) or "pageable" (see HostPinned).
	HostMemory string
	// Graphs captures each CUDA session's kernels into a CUDA graph on its
	// second run and replays it after: one launch per batch instead of one
	// per kernel. The session's input and output then live in device
	// memory, and each session runs one batch size (Buckets gives that).
	Graphs bool
}

// Values of CUDAOptions.
const (
	ConvSearchHeuristic  = "heuristic"
	ConvSearchExhaustive = "exhaustive"
	ConvSearchDefault    = "default"
	ArenaPowerOfTwo      = "power-of-two"
	ArenaRequested       = "requested"
)

// Validate reports an unknown or out-of-range option.
func (o CUDAOptions) Validate() error {
	if _, err := o.providerOptions(); err != nil {
		return err
	}
	return validHostMemory(o.HostMemory)
}

// providerOptions are o as ONNX Runtime's CUDA provider option strings.
func (o CUDAOptions) providerOptions() (map[string]string, error) {
	m := map[string]string{}
	switch o.ConvAlgoSearch {
	case "", ConvSearchHeuristic:
		m["cudnn_conv_algo_search"] = "HEURISTIC"
	case ConvSearchExhaustive:
		m["cudnn_conv_algo_search"] = "EXHAUSTIVE"
	case ConvSearchDefault:
		m["cudnn_conv_algo_search"] = "DEFAULT"
	default:
		return nil, fmt.Errorf("CUDA conv algorithm search %q: want heuristic, exhaustive or default", o.ConvAlgoSearch)
	}
	switch {
	case o.MemLimit < 0:
		return nil, fmt.Errorf("GPU memory limit %d: must not be negative", o.MemLimit)
	case o.MemLimit > 0:
		m["gpu_mem_limit"] = strconv.FormatInt(o.MemLimit, 10)
	}
	switch o.ArenaExtend {
	case "", ArenaPowerOfTwo:
	case ArenaRequested:
		m["arena_extend_strategy"] = "kSameAsRequested"
	default:
		return nil, fmt.Errorf("CUDA arena extend strategy %q: want power-of-two or requested", o.ArenaExtend)
	}
	return m, nil
}
