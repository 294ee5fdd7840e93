package data

import (
	"fmt"
	"math/rand/v2"
)

// Batcher walks a Set in batches of a fixed size, one epoch at a time.
// Gorgonia graphs have a fixed batch size, so the last batch of an epoch,
// when the set does not divide evenly, is filled up by repeating images
// from the start of the epoch's order, and Next reports how many of its
// rows are real. A Batcher is not safe for concurrent use.
type Batcher struct {
	s       *Set
	batch   int
	shuffle bool
	seed    uint64
	perm    []int // this epoch's order
	pos     int   // index in perm of the next batch's first row
	pcg     *rand.PCG
	rng     *rand.Rand
}

// NewBatcher returns a Batcher over s with batches of batch images,
// positioned at the start of epoch 0. With shuffle, each epoch visits the
// images in its own order, fixed by seed and the epoch number; without,
// in the order of s. It panics if batch < 1.
func NewBatcher(s *Set, batch int, shuffle bool, seed uint64) *Batcher {
	if batch < 1 {
		panic(fmt.Sprintf("data: batch size %d; want >= 1", batch))
	}
	pcg := rand.NewPCG(0, 0)
	b := &Batcher{
		s:       s,
		batch:   batch,
		shuffle: shuffle,
		seed:    seed,
		perm:    make([]int, s.Len()),
		pcg:     pcg,
		rng:     rand.New(pcg),
	}
	b.Reset(0)
	return b
}

// Reset starts epoch number epoch: the order depends only on the seed and
// epoch, not on what came before. It does not allocate.
func (b *Batcher) Reset(epoch int) {
	identity(b.perm)
	if b.shuffle {
		b.pcg.Seed(b.seed, streamBatch^uint64(epoch))
		shuffle(b.perm, b.rng)
	}
	b.pos = 0
}

// Batches is the number of batches in an epoch, counting a padded last
// one.
func (b *Batcher) Batches() int { return (len(b.perm) + b.batch - 1) / b.batch }

// Next copies the next batch into x (batch×C×H×W values) and y (batch
// labels) and returns the number of real rows at the front of the batch;
// the rows after them repeat the epoch's first images. At the end of the
// epoch it returns ok == false and leaves x and y alone; call Reset to
// begin the next epoch. Next does not allocate; it panics if x or y has
// the wrong length.
func (b *Batcher) Next(x []float32, y []int) (real int, ok bool) {
	plane := b.s.ImageLen()
	if len(x) != b.batch*plane || len(y) != b.batch {
		panic(fmt.Sprintf("data: Batcher.Next got len(x) = %d, len(y) = %d; want %d and %d", len(x), len(y), b.batch*plane, b.batch))
	}
	n := len(b.perm)
	if b.pos >= n {
		return 0, false
	}
	for r := range b.batch {
		k := b.pos + r
		if k < n {
			real++
		} else {
			k = (k - n) % n // a batch larger than the set wraps more than once
		}
		i := b.perm[k]
		copy(x[r*plane:(r+1)*plane], b.s.X[i*plane:(i+1)*plane])
		y[r] = b.s.Y[i]
	}
	b.pos += b.batch
	return real, true
}

// Augment applies a random crop and a random horizontal flip, in place, to
// one c×h×w CHW image: the image is padded with pad zero pixels on every
// side, an h×w window is cut from a uniformly random position of the
// padded image, and with probability 1/2 the result is mirrored left to
// right (pad = 2 suits 28×28 images). scratch must hold at least c×h×w
// values; Augment does not allocate. It panics on a wrong length or a
// negative pad.
//
// The draws from rng, in order: when pad > 0, the window's column offset
// dx = rng.Uint64N(2*pad+1) and row offset dy = rng.Uint64N(2*pad+1) in
// the padded image; then flip = rng.Uint64N(2) == 1. So the output pixel
// (x, y) before the flip is the input pixel (x+dx-pad, y+dy-pad), or 0
// outside the input.
func Augment(img []float32, c, h, w, pad int, rng *rand.Rand, scratch []float32) {
	n := c * h * w
	if c < 1 || h < 1 || w < 1 || len(img) != n || len(scratch) < n || pad < 0 {
		panic(fmt.Sprintf("data: Augment of %d×%d×%d with len(img) = %d, len(scratch) = %d, pad = %d", c, h, w, len(img), len(scratch), pad))
	}
	ox, oy := 0, 0
	if pad > 0 {
		ox = int(rng.Uint64N(uint64(2*pad+1))) - pad
		oy = int(rng.Uint64N(uint64(2*pad+1))) - pad
	}
	flip := rng.Uint64N(2) == 1
	if ox == 0 && oy == 0 && !flip {
		return
	}
	src := scratch[:n]
	copy(src, img)
	// Columns x in [lo, hi) of an unflipped output row come from input
	// columns x+ox; the rest are padding.
	lo := min(max(0, -ox), w)
	hi := max(min(w, w-ox), lo)
	for ch := range c {
		for y := range h {
			out := img[(ch*h+y)*w : (ch*h+y+1)*w]
			sy := y + oy
			if sy < 0 || sy >= h {
				clear(out)
				continue
			}
			row := src[(ch*h+sy)*w : (ch*h+sy+1)*w]
			if !flip {
				clear(out[:lo])
				if hi > lo {
					copy(out[lo:hi], row[lo+ox:hi+ox])
				}
				clear(out[hi:])
				continue
			}
			// Mirrored: output column x shows unflipped column w-1-x.
			for x := range out {
				if sx := w - 1 - x + ox; sx >= 0 && sx < w {
					out[x] = row[sx]
				} else {
					out[x] = 0
				}
			}
		}
	}
}
