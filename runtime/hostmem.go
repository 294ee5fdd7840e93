package runtime

import (
	"errors"
	"fmt"

	"fastinfer/cuda"
	"fastinfer/internal/dtype"
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
	Bytes() []byte
	Free() error
}

// allocPinned allocates page-locked memory on device dev; tests replace it.
var allocPinned = func(dev, bytes int) (pinnedMem, error) { return cuda.AllocHost(dev, bytes) }

// hostBuffers returns slots input buffers and one output buffer, in the
// session's input and output datatypes, for maxRows rows, whether they
// are pinned, and a function that releases them. They are pinned when the
// session runs on a GPU and the Env asks for pinned memory. When pinning
// fails (a driver without the calls, say, or no page-locked memory left)
// the buffers are Go memory, the reason is logged once, and the session
// still works, only with slower copies.
func (s *Session) hostBuffers(maxRows, slots int) (ins [][]byte, out []byte, pinned bool, release func() error) {
	nIn, nOut := maxRows*s.InputBytes(), maxRows*s.outLen*s.outType.size
	goMem := func() ([][]byte, []byte, bool, func() error) {
		ins := make([][]byte, slots)
		for i := range ins {
			ins[i] = make([]byte, nIn)
		}
		// float32 words: a FP32 output is read as []float32.
		return ins, dtype.Bytes(make([]float32, (nOut+3)/4))[:nOut], false, func() error { return nil }
	}
	if !s.pin {
		return goMem()
	}
	var held []pinnedMem
	freeAll := func() error {
		var errs []error
		for _, m := range held {
			errs = append(errs, m.Free())
		}
		return errors.Join(errs...)
	}
	var err error
	for i := range slots + 1 {
		n := nIn
		if i == slots {
			n = nOut
		}
		var m pinnedMem
		if m, err = allocPinned(s.device, n); err != nil {
			break
		}
		held = append(held, m)
		b := m.Bytes()[:n]
		clear(b) // the driver does not zero what it hands out; Go memory is
		if i < slots {
			ins = append(ins, b)
		} else {
			out = b
		}
	}
	if err == nil {
		return ins, out, true, freeAll
	}
	freeAll()
	if s.env != nil {
		s.env.noteOnce("pinned:"+err.Error(), func() {
			s.env.logger.Warn("pinned host memory unavailable; batch copies to the GPU use pageable memory (slower)",
				"model", s.path, "error", err)
		})
	}
	return goMem()
}

// validHostMemory checks CUDAOptions.HostMemory.
func validHostMemory(m string) error {
	switch m {
	case "", HostPinned, HostPageable:
		return nil
	}
	return fmt.Errorf("GPU host memory %q: want pinned or pageable", m)
}
