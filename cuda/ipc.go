package cuda

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"
)

// IPCHandleSize is the bytes of a CUipcMemHandle (cudaIpcMemHandle_t).
const IPCHandleSize = 64

// ipcAPI is the part of the driver API CUDA IPC memory needs: the device
// copies, plus exporting and opening allocations.
type ipcAPI interface {
	deviceMemAPI
	// IPCSupported reports whether the library has the copies and
	// cuIpcGetMemHandle, cuIpcOpenMemHandle, cuIpcCloseMemHandle,
	// cuMemGetAddressRange_v2 and cuStreamSynchronize.
	IPCSupported() bool
	// IPCGetHandle is cuIpcGetMemHandle in dev's primary context.
	IPCGetHandle(dev int, p uint64) ([IPCHandleSize]byte, cuResult)
	// IPCOpen is cuIpcOpenMemHandle in dev's primary context, with avail
	// the bytes of the allocation from the opened address on. It answers
	// ipcTooSmall, the handle closed again, when avail < size; on success
	// the mapping holds a context reference until IPCClose.
	IPCOpen(dev int, handle *[IPCHandleSize]byte, size int64) (p uint64, avail int64, r cuResult)
	IPCClose(dev int, p uint64) cuResult
}

// ipcTooSmall is IPCOpen's answer for an allocation shorter than asked:
// not a CUresult (those are never negative).
const ipcTooSmall cuResult = -1

// ipcLib is the driver, if it has the IPC calls.
func ipcLib() (ipcAPI, error) {
	lib, err := driver()
	if err != nil {
		return nil, err
	}
	i, ok := lib.(ipcAPI)
	if !ok || !i.IPCSupported() {
		return nil, fmt.Errorf("%w: %s lacks the CUDA IPC calls (cuIpcOpenMemHandle, cuMemGetAddressRange_v2) or the device-memory ones", ErrNoDriver, lib.Path())
	}
	return i, nil
}

// IPCMemory is another process's device allocation opened through its IPC handle.
//
// Copies hold mu's read side, so any number run at once; Close holds the
// write side, so none touches the mapping after the driver unmaps it.
type IPCMemory struct {
	mu   sync.RWMutex
	p    uint64 // the opened address; 0 after Close
	size int64
	dev  int
	lib  ipcAPI
}

var errIPCClosed = errors.New("CUDA IPC memory used after Close")

// OpenIPC opens handle (IPCHandleSize bytes) on CUDA device ordinal dev:
// cuIpcOpenMemHandle (CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS = 1, as Triton does) in dev's primary context,
// keeping a reference to that context until Close (as allocations do). The first size bytes must
// lie within the allocation: checked with cuMemGetAddressRange_v2 (the opened pointer's base and
// size), else the handle is closed again and an error returned. Errors wrap ErrNoDriver when no
// usable driver or the driver lacks the IPC functions.
func OpenIPC(handle []byte, dev int, size int64) (*IPCMemory, error) {
	if len(handle) != IPCHandleSize {
		return nil, fmt.Errorf("CUDA IPC handle of %d bytes, want %d", len(handle), IPCHandleSize)
	}
	if size <= 0 {
		return nil, fmt.Errorf("CUDA IPC memory: %d bytes requested", size)
	}
	lib, err := ipcLib()
	if err != nil {
		return nil, err
	}
	p, avail, r := lib.IPCOpen(dev, (*[IPCHandleSize]byte)(handle), size)
	switch {
	case r == ipcTooSmall:
		return nil, fmt.Errorf("CUDA IPC handle on device %d: its allocation has %d bytes from the opened address, fewer than the %d asked for", dev, avail, size)
	case r != cuSuccess:
		return nil, fmt.Errorf("cuIpcOpenMemHandle(device %d): %v", dev, r)
	}
	return &IPCMemory{p: p, size: size, dev: dev, lib: lib}, nil
}

// Size is the bytes OpenIPC was asked for, after Close too.
func (m *IPCMemory) Size() int64 { return m.size }

// Device is the CUDA device ordinal the handle was opened on.
func (m *IPCMemory) Device() int { return m.dev }

// ReadAt copies len(dst) bytes from offset off (device to host, synchronous).
func (m *IPCMemory) ReadAt(dst []byte, off int64) error { return m.copy(false, dst, off) }

// WriteAt copies src to offset off (host to device, synchronous).
func (m *IPCMemory) WriteAt(src []byte, off int64) error { return m.copy(true, src, off) }

func (m *IPCMemory) copy(toDevice bool, h []byte, off int64) error {
	n := int64(len(h))
	if off < 0 || off > m.size || n > m.size-off {
		return fmt.Errorf("copy of %d bytes at offset %d of %d-byte CUDA IPC memory", n, off, m.size)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	switch {
	case m.p == 0:
		return errIPCClosed
	case n == 0:
		return nil
	}
	d, hp := m.p+uint64(off), unsafe.Pointer(&h[0])
	// DeviceCopy to the device waits for its stream: the other process
	// reads the data next.
	if r := m.lib.DeviceCopy(m.dev, toDevice, d, hp, len(h)); r != cuSuccess {
		if toDevice {
			return fmt.Errorf("cuMemcpyHtoD(%d bytes at offset %d of CUDA IPC memory): %v", n, off, r)
		}
		return fmt.Errorf("cuMemcpyDtoH(%d bytes at offset %d of CUDA IPC memory): %v", n, off, r)
	}
	return nil
}

// Close is cuIpcCloseMemHandle; a second Close does nothing. ReadAt/WriteAt after Close return an error.
func (m *IPCMemory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.p == 0 {
		return nil
	}
	r := m.lib.IPCClose(m.dev, m.p)
	m.p = 0
	if r != cuSuccess {
		return fmt.Errorf("cuIpcCloseMemHandle: %v", r)
	}
	return nil
}

// IPCHandle exports the buffer for another process (cuIpcGetMemHandle): what a client
// (fastinfer bench, tests) registers with a server.
//
// The driver refuses to open a handle in the process that exported it.
func (b *DeviceBuffer) IPCHandle() ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.p == 0 {
		return nil, fmt.Errorf("device buffer used after Free")
	}
	lib, ok := b.lib.(ipcAPI)
	if !ok || !lib.IPCSupported() {
		return nil, fmt.Errorf("%w: the driver lacks the CUDA IPC calls (cuIpcGetMemHandle)", ErrNoDriver)
	}
	h, r := lib.IPCGetHandle(b.dev, b.p)
	if r != cuSuccess {
		return nil, fmt.Errorf("cuIpcGetMemHandle(device %d): %v", b.dev, r)
	}
	return h[:], nil
}
