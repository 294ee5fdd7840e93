package cuda

import (
	"fmt"
	"sync"
	"unsafe"
)

// deviceMemAPI is the part of the driver API device buffers need.
type deviceMemAPI interface {
	DeviceSupported() bool
	DeviceAlloc(dev, bytes int) (uint64, cuResult)
	DeviceFree(dev int, p uint64) cuResult
	DeviceCopy(dev int, toDevice bool, d uint64, h unsafe.Pointer, bytes int) cuResult
}

// DeviceBuffer is memory on a GPU at an address that does not change: what
// a CUDA graph, which replays kernels with the addresses they were
// captured with, needs its inputs and outputs in.
type DeviceBuffer struct {
	mu  sync.Mutex
	p   uint64
	n   int
	dev int
	lib deviceMemAPI
}

// AllocDevice allocates bytes on CUDA device ordinal dev (cuMemAlloc in
// its primary context, the one ONNX Runtime uses). The memory is not
// zeroed.
func AllocDevice(dev, bytes int) (*DeviceBuffer, error) {
	if bytes <= 0 {
		return nil, fmt.Errorf("device memory: %d bytes requested", bytes)
	}
	lib, err := driver()
	if err != nil {
		return nil, err
	}
	d, ok := lib.(deviceMemAPI)
	if !ok || !d.DeviceSupported() {
		return nil, fmt.Errorf("%w: the driver lacks cuMemAlloc_v2 or the copy calls", ErrNoDriver)
	}
	p, r := d.DeviceAlloc(dev, bytes)
	if r != cuSuccess {
		return nil, fmt.Errorf("cuMemAlloc(%d bytes, device %d): %v", bytes, dev, r)
	}
	return &DeviceBuffer{p: p, n: bytes, dev: dev, lib: d}, nil
}

// Ptr is the device address (a CUdeviceptr); 0 after Free.
func (b *DeviceBuffer) Ptr() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.p
}

// Len is the size in bytes; 0 after Free.
func (b *DeviceBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// CopyIn copies src to the start of the buffer and returns when the data
// is in device memory (it waits for the copy's stream, so another process
// may read it next). From a pinned HostBuffer the copy is one DMA.
func (b *DeviceBuffer) CopyIn(src []byte) error { return b.copy(true, src) }

// CopyOut copies the start of the buffer into dst and returns when the
// copy is done.
func (b *DeviceBuffer) CopyOut(dst []byte) error { return b.copy(false, dst) }

func (b *DeviceBuffer) copy(toDevice bool, h []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	bytes := len(h)
	switch {
	case b.p == 0:
		return fmt.Errorf("device buffer used after Free")
	case bytes > b.n:
		return fmt.Errorf("copy of %d bytes into a %d-byte device buffer", bytes, b.n)
	case bytes == 0:
		return nil
	}
	if r := b.lib.DeviceCopy(b.dev, toDevice, b.p, unsafe.Pointer(&h[0]), bytes); r != cuSuccess {
		if toDevice {
			return fmt.Errorf("cuMemcpyHtoD(%d bytes): %v", bytes, r)
		}
		return fmt.Errorf("cuMemcpyDtoH(%d bytes): %v", bytes, r)
	}
	return nil
}

// Free returns the memory to the driver. A second Free does nothing.
func (b *DeviceBuffer) Free() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.p == 0 {
		return nil
	}
	r := b.lib.DeviceFree(b.dev, b.p)
	b.p, b.n = 0, 0
	if r != cuSuccess {
		return fmt.Errorf("cuMemFree: %v", r)
	}
	return nil
}
