// Package data holds the labelled image sets the trainer learns from:
// Fashion-MNIST from Debian's IDX files, folders of JPEG and PNG images,
// stratified train/validation splits, fixed-size batches and the random
// crop-and-flip augmentation.
//
// Images are float32 in CHW order, scaled from 0..255 to [0,1]. Everything
// random takes an explicit seed, so the same seed gives the same split, the
// same batches and the same augmentation on every run.
package data

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// Set is an in-memory labelled image set: N images of C×H×W float32 in
// [0,1] (pixel/255), in CHW order, stored one after another in X.
type Set struct {
	X       []float32 // N*C*H*W
	Y       []int     // N labels in [0, len(Classes))
	C, H, W int
	Classes []string // class names; label i is Classes[i]
	Source  string   // where it came from (paths), for the model card
	SHA256  string   // hex sha256 over the source files' bytes; each loader documents the order
}

// Len is the number of images.
func (s *Set) Len() int { return len(s.Y) }

// ImageLen is the number of float32 values of one image, C*H*W.
func (s *Set) ImageLen() int { return s.C * s.H * s.W }

// Image returns image i as a view into X (not a copy).
func (s *Set) Image(i int) []float32 {
	n := s.ImageLen()
	return s.X[i*n : (i+1)*n : (i+1)*n]
}

// Validate reports the first inconsistency between the fields of s.
func (s *Set) Validate() error {
	if s.C <= 0 || s.H <= 0 || s.W <= 0 {
		return fmt.Errorf("data: image shape %d×%d×%d is not positive", s.C, s.H, s.W)
	}
	if want := len(s.Y) * s.ImageLen(); len(s.X) != want {
		return fmt.Errorf("data: len(X) = %d, want %d images × %d = %d", len(s.X), len(s.Y), s.ImageLen(), want)
	}
	for i, y := range s.Y {
		if y < 0 || y >= len(s.Classes) {
			return fmt.Errorf("data: label %d of image %d is outside [0, %d)", y, i, len(s.Classes))
		}
	}
	return nil
}

// gather returns a new Set holding the images of s at idx, in that order.
// Classes, Source and SHA256 are those of s: a split or subset comes from
// the same source files.
func (s *Set) gather(idx []int) *Set {
	n := s.ImageLen()
	out := &Set{
		X:       make([]float32, len(idx)*n),
		Y:       make([]int, len(idx)),
		C:       s.C,
		H:       s.H,
		W:       s.W,
		Classes: slices.Clone(s.Classes),
		Source:  s.Source,
		SHA256:  s.SHA256,
	}
	for k, i := range idx {
		copy(out.X[k*n:(k+1)*n], s.X[i*n:(i+1)*n])
		out.Y[k] = s.Y[i]
	}
	return out
}

// Stream constants for the PCG generators, one per use, so that the same
// seed given to Split, Subset and a Batcher does not produce correlated
// permutations.
const (
	streamSplit  = 0x73706c6974000000 // "split"
	streamSubset = 0x7375627365740000 // "subset"
	streamBatch  = 0x6261746368000000 // "batch"
)

// shuffle is a Fisher–Yates shuffle of p driven by r. It is written out
// (rather than rand.Shuffle with a closure) so that the Batcher's
// per-epoch reshuffle provably does not allocate, and so that the
// permutation for a seed is fixed by this code, not by the library.
func shuffle(p []int, r *rand.Rand) {
	for i := len(p) - 1; i > 0; i-- {
		j := int(r.Uint64N(uint64(i + 1)))
		p[i], p[j] = p[j], p[i]
	}
}

// Split deterministically divides s into a training and a validation set.
// Within each class, the images are shuffled with seed and the first
// round(val × count) go to validation, the rest to training; each
// returned set keeps the images in their order in s. The same s, val and
// seed always give the same split. val must be in [0, 1] and the labels
// of s in range (see Validate); Split panics otherwise.
func Split(s *Set, val float64, seed uint64) (train, valid *Set) {
	if !(val >= 0 && val <= 1) { // also catches NaN
		panic(fmt.Sprintf("data: Split fraction %v is outside [0, 1]", val))
	}
	byClass := make([][]int, len(s.Classes))
	for i, y := range s.Y {
		byClass[y] = append(byClass[y], i)
	}
	r := rand.New(rand.NewPCG(seed, streamSplit))
	var tr, va []int
	for _, idx := range byClass {
		shuffle(idx, r)
		k := int(math.Round(val * float64(len(idx))))
		va = append(va, idx[:k]...)
		tr = append(tr, idx[k:]...)
	}
	slices.Sort(tr)
	slices.Sort(va)
	return s.gather(tr), s.gather(va)
}

// Subset returns the first n images of a shuffle of s seeded with seed,
// in the shuffled order (all of them when n >= s.Len()). For quick runs
// and tests.
func Subset(s *Set, n int, seed uint64) *Set {
	n = max(0, min(n, s.Len()))
	p := identity(make([]int, s.Len()))
	shuffle(p, rand.New(rand.NewPCG(seed, streamSubset)))
	return s.gather(p[:n])
}

// identity sets p[i] = i and returns p.
func identity(p []int) []int {
	for i := range p {
		p[i] = i
	}
	return p
}
