package runtime

import (
	"maps"
	"testing"
)

func TestCUDAProviderOptions(t *testing.T) {
	tests := []struct {
		name    string
		in      CUDAOptions
		want    map[string]string
		wantErr bool
	}{
		{"defaults", CUDAOptions{}, map[string]string{"cudnn_conv_algo_search": "HEURISTIC"}, false},
		{"exhaustive", CUDAOptions{ConvAlgoSearch: "exhaustive"}, map[string]string{"cudnn_conv_algo_search": "EXHAUSTIVE"}, false},
		{"cudnn default", CUDAOptions{ConvAlgoSearch: "default"}, map[string]string{"cudnn_conv_algo_search": "DEFAULT"}, false},
		{"memory and arena", CUDAOptions{MemLimit: 8 << 30, ArenaExtend: "requested"},
			map[string]string{"cudnn_conv_algo_search": "HEURISTIC", "gpu_mem_limit": "8589934592", "arena_extend_strategy": "kSameAsRequested"}, false},
		{"power of two is ORT's own", CUDAOptions{ArenaExtend: "power-of-two"}, map[string]string{"cudnn_conv_algo_search": "HEURISTIC"}, false},
		{"bad search", CUDAOptions{ConvAlgoSearch: "fastest"}, nil, true},
		{"negative memory", CUDAOptions{MemLimit: -1}, nil, true},
		{"bad arena", CUDAOptions{ArenaExtend: "double"}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.in.providerOptions()
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && !maps.Equal(got, tt.want) {
				t.Errorf("options = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCUDAOptionsValidateHostMemory(t *testing.T) {
	for m, ok := range map[string]bool{"": true, HostPinned: true, HostPageable: true, "locked": false, "Pinned": false} {
		if err := (CUDAOptions{HostMemory: m}).Validate(); (err == nil) != ok {
			t.Errorf("HostMemory %q: Validate() = %v, want ok %v", m, err, ok)
		}
	}
}
