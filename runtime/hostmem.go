package runtime

import (
	"errors"
	"fmt"

	"fastinfer/cuda"
)

// Host memory for a GPU session's batch buffers (CUDAOptions.HostMemory).
const (
	// HostPinned puts them in page-locked memory. ONNX Runtime copies a
	// batch to the GPU and its results back on every Run; from pageable
	// memory the driver first copies through a staging buffer of its own,
	// on the CPU, at a fraction of the bus's rate, and the calling thread
	// waits for all of it. From pinned memory the copy is one DMA.
	HostPinned = "pinned"
	// HostPageable keeps them in ordinary Go memory.
	HostPageable = "pageable"
)

// pinnedMem is a page-locked buffer (cuda.HostBuffer).
type pinnedMem interface {
	Float32s() []float32
	Free() error
}

// allocPinned allocates page-locked memory on device dev; tests replace it.
var allocPinned = func(dev, bytes int) (pinnedMem, error) { return cuda.AllocHost(dev, bytes) }

// hostBuffers returns the input and output buffers for maxRows rows,
// whether they are pinned, and a function that releases them. They are pinned when the session runs on a
// GPU and the Env asks for pinned memory. When pinning fails (a driver
// without the calls, say, or no page-locked memory left) the buffers are
// Go memory, the reason is logged once, and the session still works, only
// with slower copies.
func (s *Session) hostBuffers(maxRows int) (in, out []float32, pinned bool, release func() error) {
	nIn, nOut := maxRows*s.inLen, maxRows*s.outLen
	if !s.pin {
		return make([]float32, nIn), make([]float32, nOut), false, func() error { return nil }
	}
	pi, err := allocPinned(s.device, 4*nIn)
	if err == nil {
		var po pinnedMem
		if po, err = allocPinned(s.device, 4*nOut); err == nil {
			in, out = pi.Float32s()[:nIn], po.Float32s()[:nOut]
			// The driver does not zero what it hands out; Go memory is.
			clear(in)
			clear(out)
			return in, out, true, func() error { return errors.Join(pi.Free(), po.Free()) }
		}
		pi.Free()
	}
	if s.env != nil {
		s.env.noteOnce("pinned:"+err.Error(), func() {
			s.env.logger.Warn("pinned host memory unavailable; batch copies to the GPU use pageable memory (slower)",
				"model", s.path, "error", err)
		})
	}
	return make([]float32, nIn), make([]float32, nOut), false, func() error { return nil }
}

// validHostMemory checks CUDAOptions.HostMemory.
func validHostMemory(m string) error {
	switch m {
	case "", HostPinned, HostPageable:
		return nil
	}
	return fmt.Errorf("GPU host memory %q: want pinned or pageable", m)
}
