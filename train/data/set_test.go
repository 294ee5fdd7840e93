package data

import (
	"fmt"
	"math"
	"slices"
	"testing"
)

// numbered returns a set of n 1×2×3 images whose every pixel is the
// image's index, so that an image can be traced through splits and
// batches, with labels from label(i) over classes classes.
func numbered(n, classes int, label func(i int) int) *Set {
	s := &Set{C: 1, H: 2, W: 3, X: make([]float32, n*6), Y: make([]int, n)}
	for i := range n {
		for k := range 6 {
			s.X[i*6+k] = float32(i)
		}
		s.Y[i] = label(i)
	}
	for c := range classes {
		s.Classes = append(s.Classes, fmt.Sprint("class", c))
	}
	s.Source, s.SHA256 = "numbered", "abc"
	return s
}

// indices returns the index each image of s carries, checking that all
// its pixels agree and that its label is the one orig gives that index.
func indices(t *testing.T, s, orig *Set) []int {
	t.Helper()
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if s.C != orig.C || s.H != orig.H || s.W != orig.W || !slices.Equal(s.Classes, orig.Classes) ||
		s.Source != orig.Source || s.SHA256 != orig.SHA256 {
		t.Fatalf("shape, classes or provenance changed: %+v", *s)
	}
	idx := make([]int, s.Len())
	for i := range idx {
		img := s.Image(i)
		idx[i] = int(img[0])
		for _, v := range img {
			if v != img[0] {
				t.Fatalf("image %d is mixed: %v", i, img)
			}
		}
		if s.Y[i] != orig.Y[idx[i]] {
			t.Fatalf("image %d (index %d) has label %d; want %d", i, idx[i], s.Y[i], orig.Y[idx[i]])
		}
	}
	return idx
}

// skewed gives classes of unequal sizes (50, 21 and 32 of 103), interleaved.
func skewed(i int) int {
	switch {
	case i%2 == 0 && i < 100:
		return 0
	case i%5 == 1 || i%5 == 3:
		return 1
	default:
		return 2
	}
}

func TestSplit(t *testing.T) {
	s := numbered(103, 3, skewed)
	count := make([]int, 3)
	for _, y := range s.Y {
		count[y]++
	}
	tests := []struct {
		val  float64
		seed uint64
	}{
		{0.2, 1}, {0.2, 2}, {0.1, 7}, {0.5, 7}, {0, 3}, {1, 3},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("val=%v,seed=%d", tt.val, tt.seed), func(t *testing.T) {
			tr, va := Split(s, tt.val, tt.seed)
			ti, vi := indices(t, tr, s), indices(t, va, s)
			// Disjoint, and together every image exactly once.
			all := append(slices.Clone(ti), vi...)
			slices.Sort(all)
			for i, v := range all {
				if v != i {
					t.Fatalf("train ∪ valid = %v; want 0..%d each once", all, s.Len()-1)
				}
			}
			// Each set keeps the order of s.
			if !slices.IsSorted(ti) || !slices.IsSorted(vi) {
				t.Errorf("not in the order of s: train %v, valid %v", ti, vi)
			}
			// Stratified: round(val × count) of each class.
			got := make([]int, 3)
			for _, y := range va.Y {
				got[y]++
			}
			for c := range got {
				if want := int(math.Round(tt.val * float64(count[c]))); got[c] != want {
					t.Errorf("class %d: %d of %d in valid; want %d", c, got[c], count[c], want)
				}
			}
			// Same seed, same split.
			tr2, va2 := Split(s, tt.val, tt.seed)
			if !slices.Equal(tr.X, tr2.X) || !slices.Equal(va.Y, va2.Y) || !slices.Equal(va.X, va2.X) {
				t.Error("a second Split with the same seed differs")
			}
		})
	}
	// Different seeds choose different images (and not just the first of each class).
	_, a := Split(s, 0.2, 1)
	_, b := Split(s, 0.2, 2)
	ai, bi := indices(t, a, s), indices(t, b, s)
	if slices.Equal(ai, bi) {
		t.Errorf("seeds 1 and 2 give the same validation set %v", ai)
	}
	if first := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}; slices.Equal(ai[:10], first) {
		t.Errorf("validation set %v is not shuffled", ai)
	}
	// Out-of-range fractions panic.
	for _, val := range []float64{-0.1, 1.5, math.NaN()} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Split(%v) did not panic", val)
				}
			}()
			Split(s, val, 1)
		}()
	}
}

func TestSubset(t *testing.T) {
	s := numbered(50, 2, func(i int) int { return i % 2 })
	tests := []struct {
		n, seed, want int
	}{
		{10, 1, 10}, {10, 2, 10}, {0, 1, 0}, {50, 1, 50}, {80, 1, 50}, {-3, 1, 0},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("n=%d,seed=%d", tt.n, tt.seed), func(t *testing.T) {
			sub := Subset(s, tt.n, uint64(tt.seed))
			idx := indices(t, sub, s)
			if len(idx) != tt.want {
				t.Fatalf("got %d images; want %d", len(idx), tt.want)
			}
			sorted := slices.Clone(idx)
			slices.Sort(sorted)
			if len(slices.Compact(sorted)) != len(idx) {
				t.Errorf("repeated images: %v", idx)
			}
			if again := indices(t, Subset(s, tt.n, uint64(tt.seed)), s); !slices.Equal(idx, again) {
				t.Errorf("same seed: %v then %v", idx, again)
			}
			if tt.want >= 10 && slices.IsSorted(idx) {
				t.Errorf("not shuffled: %v", idx)
			}
		})
	}
	if a, b := indices(t, Subset(s, 10, 1), s), indices(t, Subset(s, 10, 2), s); slices.Equal(a, b) {
		t.Errorf("seeds 1 and 2 give the same subset %v", a)
	}
}
