package runtime

import (
	"errors"
	"fmt"
	"slices"
)

// Buckets runs every batch on a session that only ever sees one batch
// size, padding a batch up to the next size it has.
//
// Why: ONNX Runtime's CUDA convolutions keep the state of the last input
// shape they ran (descriptors, the cuDNN plan). When the batch size
// changes from one run to the next, every Conv sets itself up again. On
// an H100 with ResNet-50 (ORT 1.29, cuDNN 9) a batcher that alternates
// between sizes took ~100 ms per run instead of 2-11 ms; onnxruntime
// #23006 reports the same 15× for interleaved shapes since ORT 1.20.
// Warming every size up front does not help: the cost is paid on each
// change, not on each new shape. One session per size never changes
// shape. The price is GPU memory (the weights once per session: about
// 100 MB each for ResNet-50 in float32) and padded rows, which cost
// little where GPU batches are latency-bound.
//
// Like Binding, a Buckets is one worker's and not safe for concurrent
// use. All its Bindings share one input and one output buffer, so filling
// Input(rows) and reading Output(rows) involve no copies.
type Buckets struct {
	sizes   []int      // ascending; the last is the largest batch
	bind    []*Binding // bind[i] runs exactly sizes[i] rows
	pick    []int      // rows-1 → index into sizes
	buf     *batchBuffers
	inBytes int // per row
	outLen  int
}

// BucketSizes are the batch sizes Buckets keeps for batches of up to
// maxRows rows: powers of two, with 1.5× steps in between from 8 on (so
// padding wastes at most a third of a batch there), and maxRows itself.
// 64 gives 1, 2, 4, 8, 12, 16, 24, 32, 48, 64.
func BucketSizes(maxRows int) []int {
	var s []int
	for p := 1; p < maxRows; p *= 2 {
		s = append(s, p)
		if q := p + p/2; p >= 8 && q < maxRows {
			s = append(s, q)
		}
	}
	if maxRows >= 1 {
		s = append(s, maxRows)
	}
	return s
}

// NewBuckets builds a Buckets over one session per size: sessions[i]
// runs sizes[i] rows. sizes must ascend; the sessions must take rows of
// the same length (the same model).
func NewBuckets(sessions []*Session, sizes []int) (*Buckets, error) {
	return newBuckets(sessions, sizes, 1)
}

// NewStagedBuckets is NewBuckets with two input slots (see
// NewStagedBinding).
func NewStagedBuckets(sessions []*Session, sizes []int) (*Buckets, error) {
	return newBuckets(sessions, sizes, 2)
}

func newBuckets(sessions []*Session, sizes []int, slots int) (*Buckets, error) {
	if len(sessions) == 0 || len(sessions) != len(sizes) {
		return nil, fmt.Errorf("%w: %d sessions for %d bucket sizes", ErrShape, len(sessions), len(sizes))
	}
	if sizes[0] < 1 || !slices.IsSorted(sizes) || len(slices.Compact(slices.Clone(sizes))) != len(sizes) {
		return nil, fmt.Errorf("%w: bucket sizes %v must be positive and strictly ascending", ErrShape, sizes)
	}
	first := sessions[0]
	maxRows := sizes[len(sizes)-1]
	for i, s := range sessions {
		if s.inLen != first.inLen || s.outLen != first.outLen || s.inType != first.inType || s.outType != first.outType {
			return nil, fmt.Errorf("%w: session %d takes %d %s → %d %s per row, session 0 %d %s → %d %s", ErrShape,
				i, s.inLen, s.in.DataType, s.outLen, s.out.DataType, first.inLen, first.in.DataType, first.outLen, first.out.DataType)
		}
	}
	buf, err := first.newBuffers(maxRows, slots)
	if err != nil {
		return nil, err
	}
	b := &Buckets{
		sizes:   slices.Clone(sizes),
		pick:    make([]int, maxRows),
		buf:     buf,
		inBytes: first.InputBytes(), outLen: first.outLen,
	}
	// One set of buffers for every size (pinned, and on the device with
	// CUDA graphs, as a Binding's are).
	for i, s := range sessions {
		b.bind = append(b.bind, s.bindingOver(buf, sizes[i]))
	}
	for rows, i := 1, 0; rows <= maxRows; rows++ {
		for sizes[i] < rows {
			i++
		}
		b.pick[rows-1] = i
	}
	return b, nil
}

// Sizes are the batch sizes the Buckets runs.
func (b *Buckets) Sizes() []int { return slices.Clone(b.sizes) }

// Pinned reports whether the shared buffers are pinned host memory.
func (b *Buckets) Pinned() bool { return b.buf.pinned }

// MaxRows is the largest batch.
func (b *Buckets) MaxRows() int { return b.sizes[len(b.sizes)-1] }

// Slots is how many input buffers the Buckets has: 2 when staged.
func (b *Buckets) Slots() int { return len(b.buf.ins) }

// Input is the first rows*InputBytes bytes of the shared input buffer.
func (b *Buckets) Input(rows int) []byte { return b.InputSlot(0, rows) }

// InputSlot is Input of one slot's buffer.
func (b *Buckets) InputSlot(slot, rows int) []byte { return b.buf.ins[slot][:rows*b.inBytes] }

// Output is the first rows*OutputLen floats of the shared output buffer,
// valid after Run(rows).
func (b *Buckets) Output(rows int) []float32 { return b.buf.out[:rows*b.outLen] }

// Run executes the first rows rows on the session of the smallest size
// that holds them. The padding rows are zeroed first, so a padded batch
// computes the same thing every time.
func (b *Buckets) Run(rows int) error { return b.RunSlot(0, rows) }

// RunSlot is Run on one slot's input buffer.
func (b *Buckets) RunSlot(slot, rows int) error {
	if b.buf.ins == nil {
		return errBindingClosed
	}
	if rows < 1 || rows > len(b.pick) {
		return fmt.Errorf("%w: batch %d outside 1..%d rows", ErrShape, rows, len(b.pick))
	}
	if slot < 0 || slot >= len(b.buf.ins) {
		return fmt.Errorf("%w: input slot %d of %d", ErrShape, slot, len(b.buf.ins))
	}
	i := b.pick[rows-1]
	size := b.sizes[i]
	clear(b.buf.ins[slot][rows*b.inBytes : size*b.inBytes])
	return b.bind[i].RunSlot(slot, size)
}

// Close destroys every Binding's ORT objects, then frees the buffers. It
// does not close the sessions, which the caller owns. Closing twice is a
// no-op.
func (b *Buckets) Close() error {
	var errs []error
	for _, x := range b.bind {
		errs = append(errs, x.Close())
	}
	errs = append(errs, b.buf.free())
	return errors.Join(errs...)
}
