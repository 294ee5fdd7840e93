package vision

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// normalizeStrided is normalize's definition, and what it replaced: for
// each output channel, a pass over the rows reading every pixel's byte of
// the source channel it takes, through that channel's table.
func normalizeStrided(p *Preprocessor, dst []float32, pix []byte, stride, crop int) {
	ch := p.spec.Channels()
	plane := crop * crop
	for c := range ch {
		lut := &p.lut[c]
		for y := range crop {
			start := y*stride + p.srcChan[c]
			row := pix[start : start+(crop-1)*ch+1]
			o := dst[c*plane+y*crop : c*plane+(y+1)*crop]
			for x := range o {
				o[x] = lut[row[x*ch]]
			}
		}
	}
}

// normalizeCase is a preprocessor for spec and a random crop×crop image
// inside a wider one (rows stride bytes apart).
func normalizeCase(t testing.TB, spec Spec, crop int) (*Preprocessor, []byte, int) {
	p, err := New(spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ch := spec.Channels()
	stride := (crop+7)*ch + 5
	pix := make([]byte, (crop-1)*stride+crop*ch) // the last row ends where the crop does
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range pix {
		pix[i] = byte(rng.IntN(256))
	}
	return p, pix, stride
}

func TestNormalize(t *testing.T) {
	for _, tt := range []struct {
		name string
		spec Spec
	}{
		{"rgb", Spec{Crop: 7, Color: "rgb", Mean: []float32{0.4, 0.5, 0.6}, Std: []float32{0.2, 0.3, 0.4}}},
		{"bgr", Spec{Crop: 7, Color: "bgr", Mean: []float32{0.4, 0.5, 0.6}, Std: []float32{0.2, 0.3, 0.4}}},
		{"gray", Spec{Crop: 7, Color: "gray", Mean: []float32{0.5}, Std: []float32{0.25}}},
		{"rgb-1", Spec{Crop: 1, Color: "rgb", Mean: []float32{0.4, 0.5, 0.6}, Std: []float32{0.2, 0.3, 0.4}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, pix, stride := normalizeCase(t, tt.spec, tt.spec.Crop)
			want := make([]float32, tt.spec.Len())
			normalizeStrided(p, want, pix, stride, tt.spec.Crop)
			got := make([]float32, tt.spec.Len())
			p.normalize(got, pix, stride, tt.spec.Crop)
			if !slices.Equal(got, want) {
				t.Errorf("normalize:\n got %v\nwant %v", got, want)
			}
		})
	}
}

// BenchmarkNormalize: the crop of a 256-pixel ImageNet resize into its
// 3×224×224 tensor, fused (normalize) and one strided pass per channel.
func BenchmarkNormalize(b *testing.B) {
	spec := Spec{Crop: 224, Color: "rgb", Mean: []float32{0.485, 0.456, 0.406}, Std: []float32{0.229, 0.224, 0.225}}
	p, pix, stride := normalizeCase(b, spec, 224)
	dst := make([]float32, spec.Len())
	b.Run("fused", func(b *testing.B) {
		for b.Loop() {
			p.normalize(dst, pix, stride, 224)
		}
	})
	b.Run("strided", func(b *testing.B) {
		for b.Loop() {
			normalizeStrided(p, dst, pix, stride, 224)
		}
	})
}
