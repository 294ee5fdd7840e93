package runtime

import (
	"errors"
	"strings"
	"testing"
	"unsafe"

	"fastinfer/internal/dtype"
)

// fakeDevice stands in for GPU memory with Go memory, and its CopyIn adds
// one to every value, so that a result computed from the host buffer
// rather than the device buffer shows.
type fakeDevice struct {
	allocs, frees, ins, outs int
	fail                     error
}

type fakeDevBuf struct {
	f     []float32
	owner *fakeDevice
}

func (d *fakeDevice) alloc(dev, bytes int) (devMem, error) {
	if dev != 3 {
		return nil, errors.New("wrong device")
	}
	if d.fail != nil && d.allocs == 1 { // the output buffer
		return nil, d.fail
	}
	d.allocs++
	return &fakeDevBuf{f: make([]float32, bytes/4), owner: d}, nil
}

func (b *fakeDevBuf) Ptr() uint64 { return uint64(uintptr(unsafe.Pointer(&b.f[0]))) }
func (b *fakeDevBuf) CopyIn(src []byte) error {
	b.owner.ins++
	for i, v := range dtype.Float32s(src) { // the tiny model's FP32 rows
		b.f[i] = v + 1
	}
	return nil
}
func (b *fakeDevBuf) CopyOut(dst []byte) error {
	b.owner.outs++
	copy(dst, dtype.Bytes(b.f))
	return nil
}
func (b *fakeDevBuf) Free() error { b.owner.frees++; return nil }

// graphSession is a CPU session of the tiny model whose Bindings behave as
// a CUDA-graph session's on device 3 would: device buffers, CPU memory
// standing in for the device's.
func graphSession(t *testing.T, d *fakeDevice) *Session {
	t.Helper()
	oldAlloc, oldInfo := allocDevice, deviceMemInfo
	allocDevice = d.alloc
	deviceMemInfo = func(e *Env, _ int) (memInfo, error) { return e.cpuMemInfo() }
	t.Cleanup(func() { allocDevice, deviceMemInfo = oldAlloc, oldInfo })
	s := fakeGPUSession(t)
	s.graph = true
	return s
}

// plusOne is x with one added to each value, as the fake device's CopyIn
// stores it.
func plusOne(x []float32) []float32 {
	y := make([]float32, len(x))
	for i, v := range x {
		y[i] = v + 1
	}
	return y
}

func TestDeviceIOBinding(t *testing.T) {
	d := &fakeDevice{}
	s := graphSession(t, d)
	b, err := s.NewBinding(4)
	if err != nil {
		t.Fatal(err)
	}
	if d.allocs != 2 {
		t.Fatalf("%d device buffers, want an input and an output", d.allocs)
	}
	for run := range 3 {
		in := b.in32(3)
		fillInts(in, run)
		if err := b.Run(3); err != nil {
			t.Fatal(err)
		}
		// The model read the device copy (the host rows plus one) and the
		// result came back through CopyOut.
		want := tinyExpect(plusOne(in))
		for i, v := range b.Output(3) {
			if v != want[i] {
				t.Fatalf("run %d: output[%d] = %v, want %v (from the device buffer)", run, i, v, want[i])
			}
		}
	}
	if d.ins != 3 || d.outs != 3 {
		t.Errorf("%d copies in and %d out for 3 runs", d.ins, d.outs)
	}
	// The captured graph has one shape.
	if err := b.Run(2); err == nil || !strings.Contains(err.Error(), "one session per batch size") {
		t.Errorf("Run(2) after Run(3) = %v, want the one-size error", err)
	}
	if err := s.Run(b.in32(1), 1, make([]float32, tinyOut)); err == nil {
		t.Error("Session.Run on a CUDA-graph session succeeded")
	}
	// A second Binding would replay the graph over the first one's device
	// buffers.
	other, err := s.NewBinding(3)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Run(3); err == nil || !strings.Contains(err.Error(), "one Binding per session") {
		t.Errorf("a second Binding's Run = %v, want the one-Binding error", err)
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil || d.frees != 4 {
		t.Errorf("Close = %v with %d device frees, want 4 (both Bindings' pairs)", err, d.frees)
	}
}

// A Buckets of graph sessions shares one pair of device buffers across
// its sizes, each size on its own session.
func TestDeviceIOBuckets(t *testing.T) {
	d := &fakeDevice{}
	s1, s4 := graphSession(t, d), graphSession(t, d)
	b, err := NewBuckets([]*Session{s1, s4}, []int{1, 4})
	if err != nil {
		t.Fatal(err)
	}
	if d.allocs != 2 {
		t.Fatalf("%d device buffers, want one pair", d.allocs)
	}
	for _, rows := range []int{1, 3, 1, 4} {
		in := b.in32(rows)
		fillInts(in, rows)
		if err := b.Run(rows); err != nil {
			t.Fatalf("rows %d: %v", rows, err)
		}
		want := tinyExpect(plusOne(in))
		for i, v := range b.Output(rows) {
			if v != want[i] {
				t.Fatalf("rows %d: output[%d] = %v, want %v", rows, i, v, want[i])
			}
		}
	}
	if err := b.Close(); err != nil || d.frees != 2 {
		t.Errorf("Close = %v with %d device frees, want 2", err, d.frees)
	}
}

// When device memory cannot be had, NewBinding fails (a graph session
// bound to host memory would replay its first batch forever) and gives
// back what it took.
func TestDeviceIOAllocationFails(t *testing.T) {
	d := &fakeDevice{fail: errors.New("2 CUDA_ERROR_OUT_OF_MEMORY (test)")}
	s := graphSession(t, d)
	p := &fakePinned{}
	useFakePinned(t, p)
	s.pin = true
	_, err := s.NewBinding(2)
	if err == nil || !strings.Contains(err.Error(), "CUDA graphs need device buffers") || !strings.Contains(err.Error(), "OUT_OF_MEMORY (test)") {
		t.Fatalf("NewBinding = %v, want the device allocation's error", err)
	}
	if d.frees != d.allocs || p.frees != p.allocs {
		t.Errorf("device %d/%d and pinned %d/%d buffers freed", d.frees, d.allocs, p.frees, p.allocs)
	}
}
