package runtime

import (
	"errors"
	"fmt"

	ort "github.com/yalue/onnxruntime_go"
)

// Binding is one model instance's reusable input and output buffers and the
// ORT tensors over them: one tensor pair per batch size, created the first
// time that size runs and kept until Close. Each pair sits in its own ORT
// I/O binding, so a steady-state Run is a single cgo call that allocates
// nothing on the Go side (DynamicAdvancedSession.Run would allocate its
// C-pointer slices on every call).
//
// On a GPU session the buffers are pinned host memory (see HostPinned),
// which Close gives back.
//
// A Binding is not safe for concurrent use: one worker owns it. Several
// Bindings may run on the same Session at once. Close every Binding before
// closing its Session.
type Binding struct {
	s       *Session
	maxRows int
	in, out []float32
	sizes   []*boundSize // index rows-1; nil until that batch size first runs
	release func() error // frees the buffers when this Binding owns them
	pinned  bool
	closed  bool
}

// boundSize is the ORT state for one batch size: tensors over the prefixes
// of the Binding's buffers, bound to the session's input and output.
type boundSize struct {
	in, out *ort.Tensor[float32]
	io      *ort.IoBinding
}

// errBindingClosed is returned by Run after Close.
var errBindingClosed = errors.New("binding is closed")

// NewBinding allocates buffers for up to maxRows batch rows
// (maxRows*InputLen and maxRows*OutputLen float32s). No ORT object is
// created until Run.
func (s *Session) NewBinding(maxRows int) (*Binding, error) {
	if maxRows < 1 {
		return nil, fmt.Errorf("%w: binding needs at least one row, got %d", ErrShape, maxRows)
	}
	in, out, pinned, release := s.hostBuffers(maxRows)
	b := s.bindingOver(in, out, maxRows)
	b.release, b.pinned = release, pinned
	return b, nil
}

// Pinned reports whether the buffers are pinned host memory.
func (b *Binding) Pinned() bool { return b.pinned }

// bindingOver is a Binding of up to maxRows rows over the given buffers,
// which may be shared with other Bindings (Buckets shares them).
func (s *Session) bindingOver(in, out []float32, maxRows int) *Binding {
	return &Binding{s: s, maxRows: maxRows, in: in, out: out, sizes: make([]*boundSize, maxRows)}
}

// MaxRows is the largest batch the Binding holds.
func (b *Binding) MaxRows() int { return b.maxRows }

// Input is the first rows*InputLen floats of the input buffer, for the
// caller to fill before Run(rows). It panics when rows is outside
// 0..MaxRows, as slicing past a buffer does.
func (b *Binding) Input(rows int) []float32 { return b.in[:rows*b.s.inLen] }

// Output is the first rows*OutputLen floats of the output buffer, valid
// after Run(rows) until the next Run. It panics when rows is outside
// 0..MaxRows.
func (b *Binding) Output(rows int) []float32 { return b.out[:rows*b.s.outLen] }

// Run executes the first rows rows of the input buffer and writes their
// results to the output buffer, creating that batch size's tensors on its
// first use and reusing them afterwards.
func (b *Binding) Run(rows int) error {
	if b.closed {
		return errBindingClosed
	}
	if rows < 1 || rows > b.maxRows {
		return fmt.Errorf("%w: batch %d outside 1..%d rows of this binding", ErrShape, rows, b.maxRows)
	}
	bs := b.sizes[rows-1]
	if bs == nil {
		var err error
		if bs, err = b.bind(rows); err != nil {
			return err
		}
		b.sizes[rows-1] = bs
	}
	if err := b.s.sess.RunWithBinding(bs.io); err != nil {
		return fmt.Errorf("running %s (batch %d): %w", b.s.in.Name, rows, err)
	}
	return nil
}

// bind creates the tensors and I/O binding for one batch size.
func (b *Binding) bind(rows int) (_ *boundSize, err error) {
	bs := &boundSize{}
	defer func() {
		if err != nil {
			bs.destroy()
		}
	}()
	if bs.in, err = ort.NewTensor(batchShape(rows, b.s.inRow), b.Input(rows)); err != nil {
		return nil, fmt.Errorf("input tensor (batch %d): %w", rows, err)
	}
	if bs.out, err = ort.NewTensor(batchShape(rows, b.s.outRow), b.Output(rows)); err != nil {
		return nil, fmt.Errorf("output tensor (batch %d): %w", rows, err)
	}
	if bs.io, err = b.s.sess.CreateIoBinding(); err != nil {
		return nil, fmt.Errorf("I/O binding (batch %d): %w", rows, err)
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
}

// Close destroys every cached tensor and I/O binding, then frees the
// buffers if the Binding allocated them. Closing twice is a no-op; Run
// after Close fails, and Input and Output are empty (a slice taken from
// them before must not be used after).
func (b *Binding) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	for i, bs := range b.sizes {
		if bs != nil {
			bs.destroy()
			b.sizes[i] = nil
		}
	}
	b.in, b.out, b.maxRows = nil, nil, 0
	if b.release != nil {
		return b.release()
	}
	return nil
}
