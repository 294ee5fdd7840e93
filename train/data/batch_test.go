package data

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// epoch runs b to the end of its current epoch and returns the images'
// indices in the order their real rows came, checking every batch.
func epoch(t *testing.T, b *Batcher, s *Set, batch int) []int {
	t.Helper()
	plane := s.ImageLen()
	x := make([]float32, batch*plane)
	y := make([]int, batch)
	n := s.Len()
	wantBatches := (n + batch - 1) / batch
	var order []int
	for k := 0; ; k++ {
		real, ok := b.Next(x, y)
		if !ok {
			if k != wantBatches {
				t.Fatalf("epoch ended after %d batches; want %d", k, wantBatches)
			}
			break
		}
		if k == wantBatches {
			t.Fatalf("more than %d batches", wantBatches)
		}
		wantReal := batch
		if k == wantBatches-1 {
			wantReal = n - k*batch
		}
		if real != wantReal {
			t.Fatalf("batch %d: %d real rows; want %d", k, real, wantReal)
		}
		for r := range batch {
			img := x[r*plane : (r+1)*plane]
			i := int(img[0])
			for _, v := range img {
				if v != img[0] {
					t.Fatalf("batch %d row %d is mixed: %v", k, r, img)
				}
			}
			if y[r] != s.Y[i] {
				t.Fatalf("batch %d row %d: image %d with label %d; want %d", k, r, i, y[r], s.Y[i])
			}
			if r < real {
				order = append(order, i)
				continue
			}
			// Padding repeats the epoch's order from its start.
			if want := order[(r-real)%n]; i != want {
				t.Fatalf("batch %d padding row %d is image %d; want %d (the epoch's image %d)", k, r, i, want, (r-real)%n)
			}
		}
	}
	// At the end, Next keeps saying so and leaves x and y alone.
	for i := range x {
		x[i] = -1
	}
	if _, ok := b.Next(x, y); ok || slices.ContainsFunc(x, func(v float32) bool { return v != -1 }) {
		t.Fatalf("Next after the end: ok = %v, x = %v", ok, x)
	}
	// Every image exactly once.
	sorted := slices.Clone(order)
	slices.Sort(sorted)
	for i, v := range sorted {
		if v != i {
			t.Fatalf("epoch visited %v; want each of 0..%d once", order, n-1)
		}
	}
	if len(sorted) != n {
		t.Fatalf("epoch visited %d images; want %d", len(sorted), n)
	}
	return order
}

func TestBatcher(t *testing.T) {
	tests := []struct {
		n, batch int
		shuffle  bool
		batches  int
	}{
		{n: 10, batch: 3, shuffle: true, batches: 4},  // 1 real + 2 padding in the last
		{n: 9, batch: 3, shuffle: true, batches: 3},   // no padding
		{n: 10, batch: 3, shuffle: false, batches: 4}, // in order
		{n: 2, batch: 5, shuffle: true, batches: 1},   // padding wraps the set twice
		{n: 1, batch: 1, shuffle: true, batches: 1},
		{n: 100, batch: 32, shuffle: true, batches: 4},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("n=%d,batch=%d,shuffle=%v", tt.n, tt.batch, tt.shuffle), func(t *testing.T) {
			s := numbered(tt.n, 3, func(i int) int { return i % 3 })
			b := NewBatcher(s, tt.batch, tt.shuffle, 42)
			if got := b.Batches(); got != tt.batches {
				t.Fatalf("Batches() = %d; want %d", got, tt.batches)
			}
			e0 := epoch(t, b, s, tt.batch) // a new Batcher starts at epoch 0
			b.Reset(1)
			e1 := epoch(t, b, s, tt.batch)
			b.Reset(2)
			e2 := epoch(t, b, s, tt.batch)
			b.Reset(1)
			if again := epoch(t, b, s, tt.batch); !slices.Equal(again, e1) {
				t.Errorf("epoch 1 again after epoch 2: %v; first time %v", again, e1)
			}
			b2 := NewBatcher(s, tt.batch, tt.shuffle, 42)
			b2.Reset(2)
			if got := epoch(t, b2, s, tt.batch); !slices.Equal(got, e2) {
				t.Errorf("another Batcher with the same seed, epoch 2: %v; want %v", got, e2)
			}
			other := epoch(t, NewBatcher(s, tt.batch, tt.shuffle, 43), s, tt.batch)
			identity := identity(make([]int, tt.n))
			switch {
			case !tt.shuffle:
				for e, o := range [][]int{e0, e1, e2, other} {
					if !slices.Equal(o, identity) {
						t.Errorf("unshuffled order %d: %v", e, o)
					}
				}
			case tt.n >= 9: // orders this long coincide by chance with p < 1/9!
				if slices.Equal(e0, e1) || slices.Equal(e1, e2) {
					t.Errorf("epochs share an order: %v, %v, %v", e0, e1, e2)
				}
				if slices.Equal(e0, identity) {
					t.Errorf("epoch 0 is not shuffled: %v", e0)
				}
				if slices.Equal(e0, other) {
					t.Errorf("seeds 42 and 43 give the same order %v", e0)
				}
			}
		})
	}
}

func TestBatcherPanicsOnWrongBuffers(t *testing.T) {
	s := numbered(4, 2, func(i int) int { return i % 2 })
	b := NewBatcher(s, 2, false, 1)
	for _, tt := range []struct{ nx, ny int }{{11, 2}, {12, 1}, {13, 2}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Next with len(x) = %d, len(y) = %d did not panic", tt.nx, tt.ny)
				}
			}()
			b.Next(make([]float32, tt.nx), make([]int, tt.ny))
		}()
	}
}

// refAugment is Augment written the slow, obvious way: pad, cut, mirror.
func refAugment(img []float32, c, h, w, pad, dx, dy int, flip bool) []float32 {
	ph, pw := h+2*pad, w+2*pad
	padded := make([]float32, c*ph*pw)
	for ch := range c {
		for y := range h {
			for x := range w {
				padded[(ch*ph+y+pad)*pw+x+pad] = img[(ch*h+y)*w+x]
			}
		}
	}
	out := make([]float32, c*h*w)
	for ch := range c {
		for y := range h {
			for x := range w {
				ox := x
				if flip {
					ox = w - 1 - x
				}
				out[(ch*h+y)*w+ox] = padded[(ch*ph+y+dy)*pw+x+dx]
			}
		}
	}
	return out
}

// draws predicts Augment's use of a generator seeded like rng, following
// the order Augment documents.
func draws(seed uint64, pad int) (dx, dy int, flip bool) {
	r := rand.New(rand.NewPCG(seed, 0))
	if pad > 0 {
		dx = int(r.Uint64N(uint64(2*pad + 1)))
		dy = int(r.Uint64N(uint64(2*pad + 1)))
	}
	return dx, dy, r.Uint64N(2) == 1
}

// ramp returns c×h×w distinct non-zero values, so that no row is its own
// mirror image and no pixel looks like padding.
func ramp(n int) []float32 {
	img := make([]float32, n)
	for i := range img {
		img[i] = float32(i + 1)
	}
	return img
}

func TestAugment(t *testing.T) {
	tests := []struct {
		name       string
		c, h, w    int
		pad, seeds int
	}{
		{name: "flip only", c: 3, h: 4, w: 5, pad: 0, seeds: 200},
		{name: "mnist", c: 1, h: 28, w: 28, pad: 2, seeds: 600},
		{name: "not square", c: 2, h: 5, w: 4, pad: 2, seeds: 600},
		{name: "pad wider than the image", c: 1, h: 3, w: 2, pad: 4, seeds: 3000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := tt.c * tt.h * tt.w
			in := ramp(n)
			scratch := make([]float32, n+7)
			for i := range scratch {
				scratch[i] = float32(math.NaN()) // Augment must not read stale scratch
			}
			seen := map[[3]int]bool{}
			flips := 0
			for seed := range uint64(tt.seeds) {
				img := slices.Clone(in)
				rng := rand.New(rand.NewPCG(seed, 0))
				Augment(img, tt.c, tt.h, tt.w, tt.pad, rng, scratch)
				dx, dy, flip := draws(seed, tt.pad)
				want := refAugment(in, tt.c, tt.h, tt.w, tt.pad, dx, dy, flip)
				if !slices.Equal(img, want) {
					t.Fatalf("seed %d (dx %d, dy %d, flip %v):\n got %v\nwant %v", seed, dx, dy, flip, img, want)
				}
				if tt.pad == 0 && !flip && !slices.Equal(img, in) {
					t.Fatalf("seed %d: pad 0 without a flip changed the image", seed)
				}
				// Augment drew exactly what it documents.
				twin := rand.New(rand.NewPCG(seed, 0))
				draws := 1
				if tt.pad > 0 {
					draws = 3
				}
				for range draws {
					twin.Uint64()
				}
				if rng.Uint64() != twin.Uint64() {
					t.Fatalf("seed %d: Augment did not make exactly %d draws", seed, draws)
				}
				seen[[3]int{dx, dy, map[bool]int{false: 0, true: 1}[flip]}] = true
				if flip {
					flips++
				}
			}
			// Every placement and both flips happened (a fixed rng or an
			// ignored draw would fail here), and flips are about half.
			if want := (2*tt.pad + 1) * (2*tt.pad + 1) * 2; len(seen) != want {
				t.Errorf("%d distinct (dx, dy, flip); want %d", len(seen), want)
			}
			if lo, hi := tt.seeds*3/10, tt.seeds*7/10; flips < lo || flips > hi {
				t.Errorf("%d flips in %d; want %d to %d", flips, tt.seeds, lo, hi)
			}
		})
	}
}

// TestAugmentFlip checks the mirror directly, without the reference: with
// pad 0, the output is either the input or each row reversed.
func TestAugmentFlip(t *testing.T) {
	const c, h, w = 2, 3, 4
	in := ramp(c * h * w)
	var gotFlip, gotSame bool
	for seed := range uint64(64) {
		img := slices.Clone(in)
		Augment(img, c, h, w, 0, rand.New(rand.NewPCG(seed, 0)), make([]float32, c*h*w))
		if slices.Equal(img, in) {
			gotSame = true
			continue
		}
		gotFlip = true
		for row := range c * h {
			got, src := img[row*w:(row+1)*w], in[row*w:(row+1)*w]
			for x := range w {
				if got[x] != src[w-1-x] {
					t.Fatalf("seed %d row %d: %v is neither %v nor its mirror", seed, row, got, src)
				}
			}
		}
	}
	if !gotFlip || !gotSame {
		t.Fatalf("in 64 seeds: flipped %v, unchanged %v; want both", gotFlip, gotSame)
	}
}

func TestAugmentPanics(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tt := range []struct {
		name        string
		img, scr    int
		c, h, w, pd int
	}{
		{"short scratch", 12, 11, 1, 3, 4, 1},
		{"wrong image length", 13, 13, 1, 3, 4, 1},
		{"negative pad", 12, 12, 1, 3, 4, -1},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", tt.name)
				}
			}()
			Augment(make([]float32, tt.img), tt.c, tt.h, tt.w, tt.pd, rng, make([]float32, tt.scr))
		}()
	}
}

// TestHotPathsDoNotAllocate covers Batcher.Next, Batcher.Reset and Augment.
func TestHotPathsDoNotAllocate(t *testing.T) {
	s := numbered(50, 3, func(i int) int { return i % 3 })
	b := NewBatcher(s, 8, true, 1)
	x := make([]float32, 8*s.ImageLen())
	y := make([]int, 8)
	e := 0
	if a := testing.AllocsPerRun(200, func() {
		if _, ok := b.Next(x, y); !ok {
			e++
			b.Reset(e)
		}
	}); a != 0 {
		t.Errorf("Next and Reset: %v allocations per call", a)
	}
	img := ramp(28 * 28)
	scratch := make([]float32, 28*28)
	rng := rand.New(rand.NewPCG(3, 4))
	if a := testing.AllocsPerRun(200, func() { Augment(img, 1, 28, 28, 2, rng, scratch) }); a != 0 {
		t.Errorf("Augment: %v allocations per call", a)
	}
}
