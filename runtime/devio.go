package runtime

import (
	"errors"
	"fmt"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"

	"fastinfer/cuda"
)

// Device I/O: for a session with CUDA graphs (CUDAOptions.Graphs), the
// batch's input and output live in device memory at fixed addresses, and
// the Binding copies them in and out around each run itself.
//
// Why: a CUDA graph replays the kernels it captured with the addresses it
// captured them with, and ONNX Runtime replays a captured graph without
// its usual first step of copying host inputs to the device. Host-bound
// inputs would be read once, at capture, and never again. So the input
// must be copied to the captured device address before each run, and the
// result read back from the captured output address after.

// devMem is a device buffer (cuda.DeviceBuffer).
type devMem interface {
	Ptr() uint64
	CopyIn(src []byte) error
	CopyOut(dst []byte) error
	Free() error
}

// allocDevice and deviceMemInfo are replaced by tests, which run the same
// code on the CPU with host memory standing in for the device's.
var (
	allocDevice   = func(dev, bytes int) (devMem, error) { return cuda.AllocDevice(dev, bytes) }
	deviceMemInfo = (*Env).cudaMemInfo
)

// devIO is an instance's device-side input and output, shared by all its
// Bindings (a Buckets' sizes run one at a time).
type devIO struct {
	in, out devMem
	info    memInfo
}

func (s *Session) newDevIO(maxRows int) (_ *devIO, err error) {
	d := &devIO{}
	defer func() {
		if err != nil {
			d.free()
		}
	}()
	if d.info, err = deviceMemInfo(s.env, s.device); err != nil {
		return nil, fmt.Errorf("device memory description: %w", err)
	}
	if d.in, err = allocDevice(s.device, maxRows*s.InputBytes()); err != nil {
		return nil, fmt.Errorf("device input buffer: %w", err)
	}
	if d.out, err = allocDevice(s.device, maxRows*s.outLen*s.outType.size); err != nil {
		return nil, fmt.Errorf("device output buffer: %w", err)
	}
	return d, nil
}

func (d *devIO) free() error {
	var errs []error
	for _, m := range []devMem{d.in, d.out} {
		if m != nil {
			errs = append(errs, m.Free())
		}
	}
	d.in, d.out = nil, nil
	d.info.release()
	d.info = memInfo{}
	return errors.Join(errs...)
}

// bind binds tensors of rows rows over the device buffers to io's input
// and output, returning the two OrtValues for the caller to release after
// io.
func (d *devIO) bind(s *Session, rows int, io *ort.IoBinding) (in, out unsafe.Pointer, err error) {
	defer func() {
		if err != nil {
			releaseValue(in)
			releaseValue(out)
			in, out = nil, nil
		}
	}()
	if in, err = deviceTensor(d.info, uintptr(d.in.Ptr()), batchShape(rows, s.inRow), s.inType); err != nil {
		return nil, nil, fmt.Errorf("device input tensor (batch %d): %w", rows, err)
	}
	if out, err = deviceTensor(d.info, uintptr(d.out.Ptr()), batchShape(rows, s.outRow), s.outType); err != nil {
		return in, nil, fmt.Errorf("device output tensor (batch %d): %w", rows, err)
	}
	if err = bindValue(io, true, s.in.Name, in); err != nil {
		return in, out, fmt.Errorf("binding input %s (batch %d): %w", s.in.Name, rows, err)
	}
	if err = bindValue(io, false, s.out.Name, out); err != nil {
		return in, out, fmt.Errorf("binding output %s (batch %d): %w", s.out.Name, rows, err)
	}
	return in, out, nil
}
