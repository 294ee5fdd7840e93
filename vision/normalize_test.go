package vision

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
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
			p.normalize(out{f32: got}, pix, stride, tt.spec.Crop)
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
			p.normalize(out{f32: dst}, pix, stride, 224)
		}
	})
	b.Run("strided", func(b *testing.B) {
		for b.Loop() {
			normalizeStrided(p, dst, pix, stride, 224)
		}
	})
	spec.Layout = LayoutNHWC
	hwc, err := New(spec, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("nhwc", func(b *testing.B) {
		for b.Loop() {
			hwc.normalize(out{f32: dst}, pix, stride, 224)
		}
	})
}

// An NHWC preprocessor writes what an NCHW one writes, interleaved: the
// value of channel c at pixel i is planes[c][i], for every colour mode,
// from the unit (normalize) to whole photos (Into, both decoders), and the
// drift statistics read the same image from either.
func TestLayoutNHWC(t *testing.T) {
	base := []Spec{
		{Crop: 7, Color: "rgb", Mean: []float32{0.4, 0.5, 0.6}, Std: []float32{0.2, 0.3, 0.4}},
		{Crop: 7, Color: "bgr", Mean: []float32{0.4, 0.5, 0.6}, Std: []float32{0.2, 0.3, 0.4}},
		{Crop: 7, Color: "gray", Mean: []float32{0.5}, Std: []float32{0.25}},
	}
	interleaved := func(planar []float32, ch int) []float32 {
		plane := len(planar) / ch
		out := make([]float32, len(planar))
		for c := range ch {
			for i := range plane {
				out[i*ch+c] = planar[c*plane+i]
			}
		}
		return out
	}
	for _, spec := range base {
		t.Run(spec.Color, func(t *testing.T) {
			nchw, pix, stride := normalizeCase(t, spec, spec.Crop)
			hwcSpec := spec
			hwcSpec.Layout = LayoutNHWC
			nhwc, err := New(hwcSpec, Options{})
			if err != nil {
				t.Fatal(err)
			}
			planar := make([]float32, spec.Len())
			nchw.normalize(out{f32: planar}, pix, stride, spec.Crop)
			got := make([]float32, spec.Len())
			nhwc.normalize(out{f32: got}, pix, stride, spec.Crop)
			if want := interleaved(planar, spec.Channels()); !slices.Equal(got, want) {
				t.Errorf("normalize:\n got %v\nwant %v", got, want)
			}

			// A photo through the decoder, at a crop small enough that
			// Stats reads every value.
			spec.Crop, spec.Resize, hwcSpec.Crop, hwcSpec.Resize = 32, 40, 32, 40
			photo, err := os.ReadFile(filepath.Join("testdata", "fruits.jpg"))
			if err != nil {
				t.Fatal(err)
			}
			a, _ := New(spec, Options{})
			b, _ := New(hwcSpec, Options{})
			planar, got = make([]float32, spec.Len()), make([]float32, spec.Len())
			if _, err := a.Into(photo, planar); err != nil {
				t.Fatal(err)
			}
			if _, err := b.Into(photo, got); err != nil {
				t.Fatal(err)
			}
			if want := interleaved(planar, spec.Channels()); !slices.Equal(got, want) {
				t.Errorf("Into: the NHWC tensor is not the NCHW one interleaved")
			}
			b1, c1 := spec.Stats(planar)
			b2, c2 := hwcSpec.Stats(got)
			if math.Abs(b1-b2) > 1e-9 || math.Abs(c1-c2) > 1e-9 {
				t.Errorf("Stats: NCHW %v %v, NHWC %v %v", b1, c1, b2, c2)
			}
		})
	}
	if err := (Spec{Crop: 7, Layout: "hwc"}).Validate(); err == nil {
		t.Error(`Layout "hwc" accepted`)
	}
}
