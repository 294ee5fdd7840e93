package cuda

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"
)

// hostMemAPI is the part of the driver API that page-locked host memory
// needs. The cgo library implements it; discovery's fakes need not.
type hostMemAPI interface {
	// HostAlloc is cuMemHostAlloc (portable) in dev's primary context.
	HostAlloc(dev, bytes int) (unsafe.Pointer, cuResult)
	HostFree(dev int, p unsafe.Pointer) cuResult
	// HostPinned reports whether cuMemHostGetFlags knows p.
	HostPinned(dev int, p unsafe.Pointer) (bool, cuResult)
	// HostSupported reports whether the library has every function the
	// three need (drivers have had them since CUDA 7).
	HostSupported() bool
}

// ErrNoDriver is returned (wrapped) by AllocHost when no CUDA driver with
// a device was found, or the driver lacks the functions it needs.
var ErrNoDriver = errors.New("no usable CUDA driver")

// HostBuffer is page-locked ("pinned") host memory. The GPU copies to and
// from it by DMA at the bus's full rate, without the driver first copying
// through a staging buffer of its own as it must for pageable memory; and
// the copy does not hold the CPU thread that asked for it.
//
// It is C memory that the Go collector neither scans nor moves. Free it
// once, after every user (ONNX Runtime tensors included) is done with it.
type HostBuffer struct {
	mu  sync.Mutex
	p   unsafe.Pointer
	n   int
	dev int
	lib hostMemAPI
}

// AllocHost allocates bytes of pinned host memory in the primary context
// of CUDA device ordinal dev, the context ONNX Runtime's CUDA provider
// uses. Discover runs first if it has not yet. The memory is not zeroed.
func AllocHost(dev, bytes int) (*HostBuffer, error) {
	if bytes <= 0 {
		return nil, fmt.Errorf("pinned host memory: %d bytes requested", bytes)
	}
	lib, err := hostLib()
	if err != nil {
		return nil, err
	}
	p, r := lib.HostAlloc(dev, bytes)
	if r != cuSuccess {
		return nil, fmt.Errorf("cuMemHostAlloc(%d bytes, device %d): %v", bytes, dev, r)
	}
	if p == nil {
		return nil, fmt.Errorf("cuMemHostAlloc(%d bytes, device %d) returned no memory", bytes, dev)
	}
	return &HostBuffer{p: p, n: bytes, dev: dev, lib: lib}, nil
}

// driver is the libcuda discovery settled on; Discover runs first if it
// has not yet.
func driver() (cudaAPI, error) {
	state.mu.Lock()
	defer state.mu.Unlock()
	if !state.done {
		refreshLocked()
	}
	if !state.info.Available() || state.cuda == nil {
		return nil, fmt.Errorf("%w: %s", ErrNoDriver, state.info.Reason)
	}
	return state.cuda, nil
}

// hostLib is the driver, if it can pin memory.
func hostLib() (hostMemAPI, error) {
	lib, err := driver()
	if err != nil {
		return nil, err
	}
	h, ok := lib.(hostMemAPI)
	if !ok || !h.HostSupported() {
		return nil, fmt.Errorf("%w: %s lacks cuMemHostAlloc and the primary-context calls", ErrNoDriver, lib.Path())
	}
	return h, nil
}

// Len is the buffer's size in bytes; 0 after Free.
func (b *HostBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// Bytes is the buffer's memory; nil after Free. The slice must not be
// used after Free. The driver page-aligns it, so it may be viewed as any
// element type.
func (b *HostBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.p == nil {
		return nil
	}
	return unsafe.Slice((*byte)(b.p), b.n)
}

// Pinned asks the driver whether the buffer is page-locked memory it
// knows (cuMemHostGetFlags), for tests on a real GPU.
func (b *HostBuffer) Pinned() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.p == nil {
		return false
	}
	ok, _ := b.lib.HostPinned(b.dev, b.p)
	return ok
}

// Free returns the memory to the driver. A second Free does nothing.
func (b *HostBuffer) Free() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.p == nil {
		return nil
	}
	r := b.lib.HostFree(b.dev, b.p)
	b.p, b.n = nil, 0
	if r != cuSuccess {
		return fmt.Errorf("cuMemFreeHost: %v", r)
	}
	return nil
}
