package runtime

import (
	"errors"
	"math"
	"strings"
	"testing"

	"fastinfer/internal/dtype"
)

// fakePinned stands in for the driver: it hands out Go memory filled with
// NaN (the driver does not zero what it allocates) and counts frees.
type fakePinned struct {
	allocs, frees int
	sizes         []int
	fail          error
	failAfter     int // allocations that succeed before fail applies
}

type fakeBuf struct {
	f     []float32
	owner *fakePinned
	freed bool
}

func (b *fakeBuf) Bytes() []byte { return dtype.Bytes(b.f) }
func (b *fakeBuf) Free() error {
	if b.freed {
		return errors.New("double free")
	}
	b.freed = true
	b.owner.frees++
	return nil
}

func (p *fakePinned) alloc(dev, bytes int) (pinnedMem, error) {
	if dev != 3 {
		return nil, errors.New("wrong device")
	}
	if p.fail != nil && p.allocs >= p.failAfter {
		return nil, p.fail
	}
	p.allocs++
	p.sizes = append(p.sizes, bytes)
	f := make([]float32, bytes/4+5) // the driver may round up
	for i := range f {
		f[i] = float32(math.NaN())
	}
	return &fakeBuf{f: f, owner: p}, nil
}

// fillInts writes small integers, whose products and sums the tiny model
// computes exactly.
func fillInts(x []float32, seed int) {
	for i := range x {
		x[i] = float32((i*7+seed*3)%11) - 5
	}
}

func useFakePinned(t *testing.T, p *fakePinned) {
	old := allocPinned
	allocPinned = p.alloc
	t.Cleanup(func() { allocPinned = old })
}

// fakeGPUSession is a CPU session of the tiny model that the tests then
// mark, for its Bindings, as a GPU session on device 3.
func fakeGPUSession(t *testing.T) *Session {
	t.Helper()
	s, err := env(t).NewSession(tinyModel(t), SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if s.PinnedHost() || s.Graphs() {
		t.Fatal("a CPU session asks for pinned memory or CUDA graphs")
	}
	s.device = 3
	return s
}

// pinnedSession behaves, for its Bindings, as a GPU session on device 3.
func pinnedSession(t *testing.T) *Session {
	t.Helper()
	s := fakeGPUSession(t)
	s.pin = true
	return s
}

// A Binding over a GPU session keeps its batch in pinned memory, zeroed,
// computes over it exactly, and gives it back once on Close.
func TestBindingPinnedBuffers(t *testing.T) {
	p := &fakePinned{}
	useFakePinned(t, p)
	s := pinnedSession(t)
	b, err := s.NewBinding(4)
	if err != nil {
		t.Fatal(err)
	}
	if p.allocs != 2 || p.sizes[0] != 4*4*tinyIn || p.sizes[1] != 4*4*tinyOut || !b.Pinned() {
		t.Fatalf("pinned allocations %d of %v bytes, Pinned() %v; want input and output for 4 rows", p.allocs, p.sizes, b.Pinned())
	}
	if in := b.in32(4); len(in) != 4*tinyIn || in[0] != 0 || in[len(in)-1] != 0 {
		t.Fatalf("input buffer %v: want 16 zeros", in)
	}
	in := b.in32(3)
	fillInts(in, 1)
	if err := b.Run(3); err != nil {
		t.Fatal(err)
	}
	want := tinyExpect(in)
	for i, v := range b.Output(3) {
		if v != want[i] {
			t.Fatalf("output[%d] = %v, want %v", i, v, want[i])
		}
	}
	if err := b.Close(); err != nil || p.frees != 2 {
		t.Fatalf("Close = %v with %d frees, want both buffers freed", err, p.frees)
	}
	if err := b.Close(); err != nil || p.frees != 2 {
		t.Errorf("second Close = %v, %d frees", err, p.frees)
	}
	if err := b.Run(1); err == nil {
		t.Error("Run after Close succeeded")
	}
}

// When the driver will not pin, the Binding uses Go memory, works, and the
// reason is logged once however many Bindings meet it.
func TestBindingPinnedFallsBack(t *testing.T) {
	p := &fakePinned{fail: errors.New("cuMemHostAlloc: 2 CUDA_ERROR_OUT_OF_MEMORY (test)")}
	useFakePinned(t, p)
	s := pinnedSession(t)
	for range 2 {
		b, err := s.NewBinding(2)
		if err != nil {
			t.Fatal(err)
		}
		if b.Pinned() {
			t.Error("Pinned() after the driver refused")
		}
		in := b.in32(2)
		fillInts(in, 2)
		if err := b.Run(2); err != nil {
			t.Fatal(err)
		}
		if got, want := b.Output(2)[5], tinyExpect(in)[5]; got != want {
			t.Errorf("output[5] = %v, want %v", got, want)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(testLogs.String(), "CUDA_ERROR_OUT_OF_MEMORY (test)"); n != 1 {
		t.Errorf("pinning failure logged %d times, want once:\n%s", n, testLogs.String())
	}
}

// Buckets pin one shared pair of buffers for all their sizes and free it
// once.
func TestBucketsPinnedBuffers(t *testing.T) {
	p := &fakePinned{}
	useFakePinned(t, p)
	s1, s2 := pinnedSession(t), pinnedSession(t)
	b, err := NewBuckets([]*Session{s1, s2}, []int{1, 4})
	if err != nil {
		t.Fatal(err)
	}
	if p.allocs != 2 || !b.Pinned() {
		t.Fatalf("%d pinned allocations, Pinned() %v; want one input and one output", p.allocs, b.Pinned())
	}
	in := b.in32(3)
	fillInts(in, 3)
	if err := b.Run(3); err != nil {
		t.Fatal(err)
	}
	if got, want := b.Output(3)[8], tinyExpect(in)[8]; got != want {
		t.Errorf("output[8] = %v, want %v", got, want)
	}
	if err := b.Close(); err != nil || p.frees != 2 {
		t.Fatalf("Close = %v with %d frees, want 2", err, p.frees)
	}
	if err := b.Close(); err != nil || p.frees != 2 {
		t.Errorf("second Close = %v with %d frees", err, p.frees)
	}
	if err := b.Run(1); err == nil {
		t.Error("Run after Close succeeded")
	}
}
