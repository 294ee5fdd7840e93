package runtime

import (
	"errors"
	"fmt"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"

	"fastinfer/internal/dtype"
)

// Binding is one model instance's reusable input and output buffers and the
// ORT tensors over them: one tensor pair per batch size, created the first
// time that size runs and kept until Close. Each pair sits in its own ORT
// I/O binding, so a steady-state Run is a single cgo call that allocates
// nothing on the Go side (DynamicAdvancedSession.Run would allocate its
// C-pointer slices on every call).
//
// On a GPU session the buffers are pinned host memory (see HostPinned),
// which Close gives back. On a session with CUDA graphs the tensors are
// over device buffers instead, and Run copies the batch in and the
// results out around the run (see devio.go).
//
// A Binding is not safe for concurrent use: one worker owns it. Several
// Bindings may run on the same Session at once. Close every Binding before
// closing its Session.
type Binding struct {
	s       *Session
	maxRows int
	buf     *batchBuffers
	owns    bool // buf is this Binding's to free (not a Buckets')
	// sizes[slot][rows-1] is nil until that slot runs that batch size. A
	// CUDA-graph session binds device buffers, the same for every slot,
	// and uses sizes[0] only.
	sizes  [][]*boundSize
	graph  int // the one batch size a CUDA-graph session runs; 0 until it has
	closed bool
}

// batchBuffers are an instance's batch memory: the host buffers the caller
// fills and reads (one input per slot: two for a staged instance, see
// batching.Staged) and, on a CUDA-graph session, the device buffers.
// Inputs hold the input's datatype; outRaw is the output as the model
// writes it, and out the same as float32: a view of outRaw for a FP32
// output, a buffer it is widened into after each run for FP16.
type batchBuffers struct {
	ins     [][]byte
	outRaw  []byte
	out     []float32
	pinned  bool
	dev     *devIO
	release func() error // frees ins and out
}

// newBuffers allocates batch memory for up to maxRows rows, with slots
// input buffers.
func (s *Session) newBuffers(maxRows, slots int) (*batchBuffers, error) {
	b := &batchBuffers{}
	b.ins, b.outRaw, b.pinned, b.release = s.hostBuffers(maxRows, slots)
	if s.outType == elemFP32 {
		b.out = dtype.Float32s(b.outRaw)
	} else {
		b.out = make([]float32, maxRows*s.outLen)
	}
	if s.graph {
		var err error
		if b.dev, err = s.newDevIO(maxRows); err != nil {
			b.release()
			return nil, fmt.Errorf("CUDA graphs need device buffers: %w", err)
		}
	}
	return b, nil
}

func (b *batchBuffers) free() error {
	var errs []error
	if b.dev != nil {
		errs = append(errs, b.dev.free())
		b.dev = nil
	}
	if b.release != nil {
		errs = append(errs, b.release())
		b.release = nil
	}
	b.ins, b.out, b.outRaw = nil, nil, nil
	return errors.Join(errs...)
}

// boundSize is the ORT state for one batch size: tensors over the prefixes
// of the Binding's buffers, bound to the session's input and output.
type boundSize struct {
	in, out *ort.CustomDataTensor // over host buffers
	dIn     unsafe.Pointer        // or OrtValues over device buffers
	dOut    unsafe.Pointer
	io      *ort.IoBinding
}

// errBindingClosed is returned by Run after Close.
var errBindingClosed = errors.New("binding is closed")

// NewBinding allocates buffers for up to maxRows batch rows
// (maxRows*InputBytes bytes and maxRows*OutputLen float32s). No ORT
// object is created until Run.
func (s *Session) NewBinding(maxRows int) (*Binding, error) { return s.newBinding(maxRows, 1) }

// NewStagedBinding is NewBinding with a second input buffer, so the next
// batch can be filled while one runs (batching.Staged: InputSlot and
// RunSlot).
func (s *Session) NewStagedBinding(maxRows int) (*Binding, error) { return s.newBinding(maxRows, 2) }

func (s *Session) newBinding(maxRows, slots int) (*Binding, error) {
	if maxRows < 1 {
		return nil, fmt.Errorf("%w: binding needs at least one row, got %d", ErrShape, maxRows)
	}
	buf, err := s.newBuffers(maxRows, slots)
	if err != nil {
		return nil, err
	}
	b := s.bindingOver(buf, maxRows)
	b.owns = true
	return b, nil
}

// Pinned reports whether the host buffers are pinned memory.
func (b *Binding) Pinned() bool { return b.buf.pinned }

// bindingOver is a Binding of up to maxRows rows over the given buffers,
// which may be shared with other Bindings (Buckets shares them).
func (s *Session) bindingOver(buf *batchBuffers, maxRows int) *Binding {
	b := &Binding{s: s, maxRows: maxRows, buf: buf, sizes: make([][]*boundSize, len(buf.ins))}
	for i := range b.sizes {
		b.sizes[i] = make([]*boundSize, maxRows)
	}
	return b
}

// Slots is how many input buffers the Binding has: 2 when staged.
func (b *Binding) Slots() int { return len(b.buf.ins) }

// MaxRows is the largest batch the Binding holds.
func (b *Binding) MaxRows() int { return b.maxRows }

// Input is the first rows*InputBytes bytes of the input buffer, in the
// input's datatype (dtype.Float32s views a FP32 one as floats), for the
// caller to fill before Run(rows). It panics when rows is outside
// 0..MaxRows, as slicing past a buffer does.
func (b *Binding) Input(rows int) []byte { return b.InputSlot(0, rows) }

// InputSlot is Input of one slot's buffer (0 or, when staged, 1).
func (b *Binding) InputSlot(slot, rows int) []byte { return b.buf.ins[slot][:rows*b.s.InputBytes()] }

// Output is the first rows*OutputLen floats of the output buffer, valid
// after Run(rows) until the next Run. It panics when rows is outside
// 0..MaxRows.
func (b *Binding) Output(rows int) []float32 { return b.buf.out[:rows*b.s.outLen] }

// Run executes the first rows rows of the input buffer and writes their
// results to the output buffer, creating that batch size's tensors on its
// first use and reusing them afterwards.
func (b *Binding) Run(rows int) error { return b.RunSlot(0, rows) }

// RunSlot is Run on one slot's input buffer.
func (b *Binding) RunSlot(slot, rows int) error {
	if b.closed {
		return errBindingClosed
	}
	if slot < 0 || slot >= len(b.sizes) {
		return fmt.Errorf("%w: input slot %d of %d", ErrShape, slot, len(b.sizes))
	}
	if rows < 1 || rows > b.maxRows {
		return fmt.Errorf("%w: batch %d outside 1..%d rows of this binding", ErrShape, rows, b.maxRows)
	}
	if b.s.graph {
		// A captured graph replays the shape and the device addresses it
		// was captured with: another size, or another Binding's buffers,
		// would run on the first one's rows.
		if !b.s.graphOwner.CompareAndSwap(nil, b) && b.s.graphOwner.Load() != b {
			return fmt.Errorf("%w: this CUDA-graph session already runs another Binding (one Binding per session)", ErrShape)
		}
		if b.graph != 0 && rows != b.graph {
			return fmt.Errorf("%w: this CUDA-graph session runs batches of %d rows, not %d (one session per batch size)", ErrShape, b.graph, rows)
		}
	}
	dev := b.buf.dev
	k := slot
	if dev != nil {
		k = 0
	}
	bs := b.sizes[k][rows-1]
	if bs == nil {
		var err error
		if bs, err = b.bind(k, rows); err != nil {
			return err
		}
		b.sizes[k][rows-1] = bs
		if b.s.graph {
			b.graph = rows
		}
	}
	if dev != nil {
		if err := dev.in.CopyIn(b.InputSlot(slot, rows)); err != nil {
			return fmt.Errorf("copying batch %d to the device: %w", rows, err)
		}
	}
	if err := b.s.sess.RunWithBinding(bs.io); err != nil {
		return fmt.Errorf("running %s (batch %d): %w", b.s.in.Name, rows, err)
	}
	if dev != nil {
		if err := dev.out.CopyOut(b.buf.outRaw[:rows*b.s.outLen*b.s.outType.size]); err != nil {
			return fmt.Errorf("copying batch %d from the device: %w", rows, err)
		}
	}
	if b.s.outType == elemFP16 {
		dtype.Widen(b.Output(rows), b.buf.outRaw)
	}
	return nil
}

// bind creates the tensors and I/O binding for one slot and batch size.
func (b *Binding) bind(slot, rows int) (_ *boundSize, err error) {
	bs := &boundSize{}
	defer func() {
		if err != nil {
			bs.destroy()
		}
	}()
	if bs.io, err = b.s.sess.CreateIoBinding(); err != nil {
		return nil, fmt.Errorf("I/O binding (batch %d): %w", rows, err)
	}
	if b.buf.dev != nil {
		bs.dIn, bs.dOut, err = b.buf.dev.bind(b.s, rows, bs.io)
		return bs, err
	}
	if bs.in, err = ort.NewCustomDataTensor(batchShape(rows, b.s.inRow), b.InputSlot(slot, rows), b.s.inType.ort); err != nil {
		return nil, fmt.Errorf("input tensor (batch %d): %w", rows, err)
	}
	outRaw := b.buf.outRaw[:rows*b.s.outLen*b.s.outType.size]
	if bs.out, err = ort.NewCustomDataTensor(batchShape(rows, b.s.outRow), outRaw, b.s.outType.ort); err != nil {
		return nil, fmt.Errorf("output tensor (batch %d): %w", rows, err)
	}
	if err = bs.io.BindInput(b.s.in.Name, bs.in); err != nil {
		return nil, fmt.Errorf("binding input %s (batch %d): %w", b.s.in.Name, rows, err)
	}
	if err = bs.io.BindOutput(b.s.out.Name, bs.out); err != nil {
		return nil, fmt.Errorf("binding output %s (batch %d): %w", b.s.out.Name, rows, err)
	}
	return bs, nil
}

// destroy releases whatever bind managed to create; the I/O binding goes
// first since it refers to the tensors.
func (bs *boundSize) destroy() {
	if bs.io != nil {
		bs.io.Destroy()
		bs.io = nil
	}
	if bs.in != nil {
		bs.in.Destroy()
		bs.in = nil
	}
	if bs.out != nil {
		bs.out.Destroy()
		bs.out = nil
	}
	releaseValue(bs.dIn)
	releaseValue(bs.dOut)
	bs.dIn, bs.dOut = nil, nil
}

// Close destroys every cached tensor and I/O binding, then frees the
// buffers if the Binding allocated them. Closing twice is a no-op; Run
// after Close fails. Input and Output must not be used after Close (their
// memory may be freed).
func (b *Binding) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	for _, sizes := range b.sizes {
		for i, bs := range sizes {
			if bs != nil {
				bs.destroy()
				sizes[i] = nil
			}
		}
	}
	if b.owns {
		return b.buf.free()
	}
	return nil
}
