//go:build !nogocv

package vision

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"gocv.io/x/gocv"
	"golang.org/x/image/bmp"

	"fastinfer/vision/guard"
	"fastinfer/vision/reference"
)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	imagenet = Spec{Resize: 256, Crop: 224, Color: "rgb",
		Mean: []float32{0.485, 0.456, 0.406}, Std: []float32{0.229, 0.224, 0.225}}
	imagenetBGR = Spec{Resize: 256, Crop: 224, Color: "bgr",
		Mean: []float32{0.406, 0.456, 0.485}, Std: []float32{0.225, 0.224, 0.229}}
	gray28  = Spec{Resize: 28, Crop: 28, Color: "gray", Mean: []float32{0.1307}, Std: []float32{0.3081}}
	enlarge = Spec{Resize: 640, Crop: 600, Mean: []float32{0.5}, Std: []float32{0.5}}
	mid150  = Spec{Resize: 150, Crop: 128, Mean: []float32{0.485, 0.456, 0.406}, Std: []float32{0.229, 0.224, 0.225}}
	small96 = Spec{Resize: 96, Crop: 96, Mean: []float32{0.485, 0.456, 0.406}, Std: []float32{0.229, 0.224, 0.225}}
	small64 = Spec{Resize: 64, Crop: 56, Color: "bgr", Mean: []float32{0.406, 0.456, 0.485}, Std: []float32{0.225, 0.224, 0.229}}
)

func newP(t testing.TB, s Spec, opt Options) *Preprocessor {
	t.Helper()
	p, err := New(s, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if n := p.liveMats.Load(); n != 0 {
			t.Errorf("%d gocv.Mat(s) left open", n)
		}
	})
	return p
}

func runRef(t testing.TB, data []byte, s Spec) []float32 {
	t.Helper()
	out, err := reference.Preprocess(data, s.Resize, s.Crop, s.Color, s.Scale, s.Mean, s.Std)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diff(a, b []float32) (mean, maxAbs float64) {
	if len(a) != len(b) {
		panic("length mismatch")
	}
	sum := 0.0
	for i := range a {
		d := math.Abs(float64(a[i]) - float64(b[i]))
		sum += d
		maxAbs = math.Max(maxAbs, d)
	}
	return sum / float64(len(a)), maxAbs
}

func sentinelName(err error) string {
	switch {
	case err == nil:
		return "nil"
	case errors.Is(err, ErrDstLen):
		return "ErrDstLen"
	case errors.Is(err, guard.ErrEmpty):
		return "ErrEmpty"
	case errors.Is(err, guard.ErrBadImage):
		return "ErrBadImage"
	case errors.Is(err, guard.ErrTooLarge):
		return "ErrTooLarge"
	}
	return "other: " + err.Error()
}

func flagReduction(f gocv.IMReadFlag) int {
	switch f {
	case gocv.IMReadReducedColor2, gocv.IMReadReducedGrayscale2:
		return 2
	case gocv.IMReadReducedColor4, gocv.IMReadReducedGrayscale4:
		return 4
	case gocv.IMReadReducedColor8, gocv.IMReadReducedGrayscale8:
		return 8
	}
	return 1
}

func TestSpecValidate(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		ok   bool
		ch   int
		len  int
	}{
		{"imagenet", imagenet, true, 3, 3 * 224 * 224},
		{"defaults", Spec{Crop: 10}, true, 3, 300},
		{"gray", Spec{Crop: 28, Color: "gray"}, true, 1, 28 * 28},
		{"bgr, one mean for all", Spec{Crop: 4, Color: "bgr", Mean: []float32{0.5}, Std: []float32{2}}, true, 3, 48},
		{"resize equals crop", Spec{Resize: 8, Crop: 8}, true, 3, 192},
		{"zero crop", Spec{Crop: 0}, false, 3, 0},
		{"negative crop", Spec{Crop: -1}, false, 3, 3},
		{"huge crop", Spec{Crop: MaxSide + 1}, false, 3, 3 * (MaxSide + 1) * (MaxSide + 1)},
		{"negative resize", Spec{Resize: -1, Crop: 4}, false, 3, 48},
		{"huge resize", Spec{Resize: MaxSide + 1, Crop: 4}, false, 3, 48},
		{"resize below crop", Spec{Resize: 200, Crop: 224}, false, 3, 3 * 224 * 224},
		{"unknown color", Spec{Crop: 4, Color: "RGB"}, false, 3, 48},
		{"hsv", Spec{Crop: 4, Color: "hsv"}, false, 3, 48},
		{"two means", Spec{Crop: 4, Mean: []float32{1, 2}}, false, 3, 48},
		{"three stds for gray", Spec{Crop: 4, Color: "gray", Std: []float32{1, 2, 3}}, false, 1, 16},
		{"zero std", Spec{Crop: 4, Std: []float32{1, 0, 1}}, false, 3, 48},
		{"NaN mean", Spec{Crop: 4, Mean: []float32{float32(math.NaN())}}, false, 3, 48},
		{"Inf std", Spec{Crop: 4, Std: []float32{float32(math.Inf(1))}}, false, 3, 48},
		{"Inf scale", Spec{Crop: 4, Scale: float32(math.Inf(-1))}, false, 3, 48},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.spec.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
			if got := tc.spec.Channels(); got != tc.ch {
				t.Errorf("Channels() = %d, want %d", got, tc.ch)
			}
			if got := tc.spec.Len(); got != tc.len {
				t.Errorf("Len() = %d, want %d", got, tc.len)
			}
			p, nerr := New(tc.spec, Options{})
			if (nerr == nil) != tc.ok || (p != nil) != tc.ok {
				t.Errorf("New() = %v, %v; want ok=%v", p, nerr, tc.ok)
			}
		})
	}
}

func TestNewOptionsAndSpec(t *testing.T) {
	if _, err := New(imagenet, Options{MaxPixels: -1}); err == nil {
		t.Error("negative MaxPixels accepted")
	}
	if _, err := New(imagenet, Options{MaxConcurrent: -1}); err == nil {
		t.Error("negative MaxConcurrent accepted")
	}
	p := newP(t, Spec{Crop: 8, Mean: []float32{1}}, Options{})
	if got := cap(p.sem); got < 1 {
		t.Errorf("default MaxConcurrent gave a semaphore of %d", got)
	}
	s := p.Spec()
	if s.Resize != 8 || s.Color != "rgb" || s.Scale != float32(1.0/255) {
		t.Errorf("Spec() = %+v, want defaults filled in", s)
	}
	s.Mean[0] = 42
	if p.Spec().Mean[0] != 1 {
		t.Error("Spec() shares its Mean slice with the caller")
	}
}

func TestReductionAndFit(t *testing.T) {
	red := []struct{ w, h, resize, want int }{
		{512, 512, 256, 1}, {512, 512, 128, 2}, {752, 600, 64, 4}, {752, 600, 37, 8}, {752, 600, 38, 4},
		{4032, 3024, 256, 4}, {4032, 3024, 189, 8}, {3024, 4032, 224, 4},
		{902, 770, 28, 2}, // 902 is not a multiple of 4
		{493, 356, 28, 1}, // 493 is odd
		{1000, 750, 100, 2}, {100, 100, 100, 1}, {100, 4000, 25, 2}, {100, 4000, 26, 1},
	}
	for _, tc := range red {
		if got := reduction(tc.w, tc.h, tc.resize); got != tc.want {
			t.Errorf("reduction(%d, %d, %d) = %d, want %d", tc.w, tc.h, tc.resize, got, tc.want)
		}
	}
	fit := []struct{ w, h, side, tw, th int }{
		{512, 512, 256, 256, 256}, {512, 480, 256, 273, 256}, {493, 356, 256, 355, 256},
		{356, 493, 256, 256, 355}, {3, 2, 1, 2, 1}, {5, 2, 1, 3, 1}, {7, 2, 1, 4, 1}, {94, 75, 64, 80, 64},
	}
	for _, tc := range fit {
		tw, th := fitShorter(tc.w, tc.h, tc.side)
		if tw != tc.tw || th != tc.th {
			t.Errorf("fitShorter(%d, %d, %d) = %dx%d, want %dx%d", tc.w, tc.h, tc.side, tw, th, tc.tw, tc.th)
		}
		// The reference must agree on geometry.
		if rw, rh := reference.FitShorter(tc.w, tc.h, tc.side); rw != tw || rh != th {
			t.Errorf("reference.FitShorter(%d, %d, %d) = %dx%d, vision says %dx%d", tc.w, tc.h, tc.side, rw, rh, tw, th)
		}
	}
}

func TestIntoHostile(t *testing.T) {
	var gifBuf bytes.Buffer
	pal := image.NewPaletted(image.Rect(0, 0, 40, 30), color.Palette{color.Black, color.White})
	if err := gif.Encode(&gifBuf, pal, nil); err != nil {
		t.Fatal(err)
	}
	var bmpBuf bytes.Buffer
	if err := bmp.Encode(&bmpBuf, image.NewRGBA(image.Rect(0, 0, 100, 100))); err != nil {
		t.Fatal(err)
	}
	truncBMP := bmpBuf.Bytes()[:bmpBuf.Len()*6/10]
	var thinBuf bytes.Buffer // 200000x1 passes guard, but is 51200000x256 (or 5600000x28) resized
	if err := png.Encode(&thinBuf, image.NewGray(image.Rect(0, 0, 200000, 1))); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		data      []byte
		want      string
		reachesCV bool // whether OpenCV is asked to decode it
	}{
		{"bomb.png", fixture(t, "bomb.png"), "ErrTooLarge", false},
		{"bomb.jpg", fixture(t, "bomb.jpg"), "ErrTooLarge", false},
		{"truncated.jpg", fixture(t, "truncated.jpg"), "ErrBadImage", false},
		{"truncated_thumb.jpg", fixture(t, "truncated_thumb.jpg"), "ErrBadImage", false},
		{"truncated.png", fixture(t, "truncated.png"), "ErrBadImage", false},
		{"garbage.bin", fixture(t, "garbage.bin"), "ErrBadImage", false},
		{"text.txt", fixture(t, "text.txt"), "ErrBadImage", false},
		{"empty.jpg", fixture(t, "empty.jpg"), "ErrEmpty", false},
		{"nil", nil, "ErrEmpty", false},
		{"200000x1 png", thinBuf.Bytes(), "ErrTooLarge", false},
		// Headers fine, so guard passes them; OpenCV 4.6 has no GIF
		// decoder, and refuses the truncated BMP. Both come back empty.
		{"gif", gifBuf.Bytes(), "ErrBadImage", true},
		{"truncated bmp", truncBMP, "ErrBadImage", true},
	}
	for _, spec := range []Spec{imagenet, gray28} {
		for _, tc := range tests {
			t.Run(spec.Color+"/"+tc.name, func(t *testing.T) {
				p := newP(t, spec, Options{})
				dst := make([]float32, spec.Len())
				_, err := p.Into(tc.data, dst)
				if got := sentinelName(err); got != tc.want {
					t.Fatalf("Into error = %v (%s), want %s", err, got, tc.want)
				}
				if reached := p.decodes.Load() > 0; reached != tc.reachesCV {
					t.Errorf("reached OpenCV = %v, want %v", reached, tc.reachesCV)
				}
				for i, v := range dst {
					if v != 0 {
						t.Fatalf("dst[%d] = %v written on error", i, v)
					}
				}
			})
		}
	}
}

func TestIntoMaxPixelsOption(t *testing.T) {
	data := fixture(t, "butterfly.jpg") // 493x356 = 175508 pixels
	for _, tc := range []struct {
		max  int64
		want string
	}{{175508, "nil"}, {175507, "ErrTooLarge"}, {0, "nil"}} {
		p := newP(t, imagenet, Options{MaxPixels: tc.max})
		_, err := p.Into(data, make([]float32, imagenet.Len()))
		if got := sentinelName(err); got != tc.want {
			t.Errorf("MaxPixels %d: error %v, want %s", tc.max, err, tc.want)
		}
	}
}

func TestIntoDstLength(t *testing.T) {
	p := newP(t, imagenet, Options{})
	data := fixture(t, "butterfly.jpg")
	for _, n := range []int{0, 1, imagenet.Len() - 1, imagenet.Len() + 1, 224 * 224} {
		_, err := p.Into(data, make([]float32, n))
		if !errors.Is(err, ErrDstLen) {
			t.Errorf("len(dst) = %d: error %v, want ErrDstLen", n, err)
		}
	}
	if _, err := p.Into(data, nil); !errors.Is(err, ErrDstLen) {
		t.Errorf("nil dst: error %v, want ErrDstLen", err)
	}
	if n := p.decodes.Load(); n != 0 {
		t.Errorf("%d decodes with a wrong dst", n)
	}
}

type refCase struct {
	file      string
	spec      Spec
	specName  string
	reduction int // expected decode reduction
}

func refCases() []refCase {
	var cases []refCase
	add := func(name string, s Spec, red map[string]int) {
		for _, f := range []string{"baboon.jpg", "fruits.jpg", "butterfly.jpg", "starry_night.jpg",
			"ela_original.jpg", "Blender_Suzanne1.jpg", "smarties.png"} {
			d, ok := red[f]
			if !ok {
				d = 1
			}
			cases = append(cases, refCase{f, s, name, d})
		}
	}
	// Every photo here is at most 902 px, so ImageNet sizes decode fully.
	add("imagenet-rgb-256-224", imagenet, nil)
	add("imagenet-bgr-256-224", imagenetBGR, nil)
	add("gray-28-28", gray28, map[string]int{"baboon.jpg": 8, "fruits.jpg": 8, "starry_night.jpg": 8,
		"Blender_Suzanne1.jpg": 8, "ela_original.jpg": 2})
	add("enlarge-640-600", enlarge, nil)
	add("rgb-150-128", mid150, map[string]int{"starry_night.jpg": 2, "ela_original.jpg": 2})
	add("rgb-96-96", small96, map[string]int{"baboon.jpg": 2, "fruits.jpg": 2, "starry_night.jpg": 2,
		"ela_original.jpg": 2, "Blender_Suzanne1.jpg": 2})
	add("rgb-64-56", small64, map[string]int{"baboon.jpg": 4, "fruits.jpg": 2, "starry_night.jpg": 4,
		"ela_original.jpg": 2, "Blender_Suzanne1.jpg": 2})
	return cases
}

// TestIntoMatchesReference compares OpenCV's output with the pure-Go
// reference. Differences come from the JPEG decoders (libjpeg-turbo vs
// image/jpeg: IDCT rounding and chroma upsampling), fixed-point resize
// arithmetic, and, where vision decodes at reduced size, from libjpeg's
// scaled IDCT standing in for part of the area averaging.
//
// Tolerances are on the mean |difference| in normalised units (the specs
// here divide by std 0.22-0.5, so 0.02 is 1-2.5 grey levels). Measured:
// full decodes 0.0000-0.006; reduced decodes 0.0005-0.033, the largest
// from the painting starry_night.jpg at 1/4 and from baboon.jpg, whose
// 4:2:2 chroma libjpeg reconstructs differently at reduced scale.
func TestIntoMatchesReference(t *testing.T) {
	const (
		tolerance        = 0.02 // full-size decode
		reducedTolerance = 0.04 // 1/2, 1/4 or 1/8 JPEG decode
	)
	seen := map[int]bool{}
	for _, tc := range refCases() {
		t.Run(tc.specName+"/"+tc.file, func(t *testing.T) {
			data := fixture(t, tc.file)
			p := newP(t, tc.spec, Options{})
			info, err := guard.Check(data, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got := flagReduction(p.readFlag(info)); got != tc.reduction {
				t.Errorf("decode reduction = %d, want %d", got, tc.reduction)
			}
			seen[tc.reduction] = true

			dst := make([]float32, tc.spec.Len())
			gotInfo, err := p.Into(data, dst)
			if err != nil {
				t.Fatal(err)
			}
			if gotInfo != info {
				t.Errorf("Into info = %+v, want %+v", gotInfo, info)
			}
			ref := runRef(t, data, tc.spec)
			mean, maxAbs := diff(dst, ref)
			t.Logf("reduction %d: mean |diff| %.5f, max %.4f", tc.reduction, mean, maxAbs)
			tol := tolerance
			if tc.reduction > 1 {
				tol = reducedTolerance
			}
			if mean >= tol {
				t.Errorf("mean |diff| = %.5f, want < %v", mean, tol)
			}
			if tc.reduction > 1 { // the same spec decoded at full size
				p.noReduce = true
				full := make([]float32, len(dst))
				if _, err := p.Into(data, full); err != nil {
					t.Fatal(err)
				}
				fm, fmax := diff(full, ref)
				rm, rmax := diff(dst, full)
				t.Logf("full decode vs reference: mean %.5f, max %.4f; reduced vs full: mean %.5f, max %.4f", fm, fmax, rm, rmax)
				if fm >= tolerance {
					t.Errorf("full decode: mean |diff| = %.5f, want < %v", fm, tolerance)
				}
			}
		})
	}
	for _, d := range []int{1, 2, 4, 8} {
		if !seen[d] {
			t.Errorf("no case decodes with reduction %d", d)
		}
	}
}

// BGR output must be RGB output with the channel planes swapped, exactly.
func TestBGRIsSwappedRGB(t *testing.T) {
	s := Spec{Resize: 100, Crop: 90, Mean: []float32{0.1, 0.2, 0.3}, Std: []float32{0.4, 0.5, 0.6}}
	sb := s
	sb.Color = "bgr"
	sb.Mean = []float32{0.3, 0.2, 0.1}
	sb.Std = []float32{0.6, 0.5, 0.4}
	rgb, bgr := newP(t, s, Options{}), newP(t, sb, Options{})
	for _, f := range []string{"fruits.jpg", "smarties.png"} {
		data := fixture(t, f)
		a, b := make([]float32, s.Len()), make([]float32, s.Len())
		if _, err := rgb.Into(data, a); err != nil {
			t.Fatal(err)
		}
		if _, err := bgr.Into(data, b); err != nil {
			t.Fatal(err)
		}
		plane := s.Crop * s.Crop
		for c := range 3 {
			if !slicesEqual(a[c*plane:(c+1)*plane], b[(2-c)*plane:(3-c)*plane]) {
				t.Errorf("%s: rgb channel %d != bgr channel %d", f, c, 2-c)
			}
		}
		if slicesEqual(a[:plane], a[2*plane:]) {
			t.Errorf("%s: R and B planes are identical; the test proves nothing", f)
		}
	}
}

func slicesEqual(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Normalisation: (v*Scale - mean)/std, checked on a flat-colour image so
// that the expected value is known exactly.
func TestNormalisation(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 64, 48))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = 200, 100, 50, 255
	}
	var buf bytes.Buffer
	if err := bmp.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		spec Spec
		want []float32 // per channel
	}{
		{Spec{Crop: 8}, []float32{200.0 / 255, 100.0 / 255, 50.0 / 255}},
		{Spec{Crop: 8, Color: "bgr", Scale: 1}, []float32{50, 100, 200}},
		{Spec{Crop: 8, Scale: 1, Mean: []float32{10, 20, 30}, Std: []float32{2, 4, 5}}, []float32{95, 20, 4}},
		{Spec{Crop: 8, Scale: 2, Mean: []float32{100}, Std: []float32{10}}, []float32{30, 10, 0}},
		// OpenCV's BGR→gray: round(0.299*200 + 0.587*100 + 0.114*50) = 124.
		{Spec{Crop: 8, Color: "gray", Scale: 1}, []float32{124}},
	}
	for i, tc := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			p := newP(t, tc.spec, Options{})
			dst := make([]float32, tc.spec.Len())
			if _, err := p.Into(buf.Bytes(), dst); err != nil {
				t.Fatal(err)
			}
			plane := tc.spec.Crop * tc.spec.Crop
			for c, want := range tc.want {
				for j, v := range dst[c*plane : (c+1)*plane] {
					if math.Abs(float64(v-want)) > 1e-5 {
						t.Fatalf("channel %d pixel %d = %v, want %v", c, j, v, want)
					}
				}
			}
		})
	}
}

func TestIntoConcurrent(t *testing.T) {
	files := []string{"baboon.jpg", "fruits.jpg", "smarties.png", "starry_night.jpg", "bomb.png", "truncated.jpg", "garbage.bin"}
	for _, limit := range []int{1, 2} {
		t.Run(fmt.Sprint("MaxConcurrent=", limit), func(t *testing.T) {
			p := newP(t, imagenet, Options{MaxConcurrent: limit})
			want := make(map[string][]float32)
			wantErr := make(map[string]string)
			for _, f := range files {
				dst := make([]float32, imagenet.Len())
				_, err := p.Into(fixture(t, f), dst)
				want[f], wantErr[f] = dst, sentinelName(err)
			}
			const workers, rounds = 12, 3
			var wg sync.WaitGroup
			errs := make(chan error, workers*rounds*len(files))
			for w := range workers {
				wg.Go(func() {
					dst := make([]float32, imagenet.Len())
					for r := range rounds {
						for k := range files {
							f := files[(k+w+r)%len(files)]
							clear(dst)
							_, err := p.Into(fixture(t, f), dst)
							if got := sentinelName(err); got != wantErr[f] {
								errs <- fmt.Errorf("%s: error %s, want %s", f, got, wantErr[f])
							} else if !slicesEqual(dst, want[f]) {
								errs <- fmt.Errorf("%s: output differs from the serial run", f)
							}
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if m := p.maxInflight.Load(); m > int64(limit) || m < 1 {
				t.Errorf("max concurrent decodes = %d, limit %d", m, limit)
			}
			t.Logf("max concurrent decodes: %d (limit %d)", p.maxInflight.Load(), limit)
		})
	}
}

// synthetic draws a smooth colour pattern with some texture.
func synthetic(w, h int, alpha bool) *image.NRGBA64 {
	img := image.NewNRGBA64(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			fx, fy := float64(x)/float64(w), float64(y)/float64(h)
			r := 0.5 + 0.5*math.Sin(6*fx+2*fy)
			g := 0.5 + 0.5*math.Cos(9*fy-3*fx)
			b := 0.5 + 0.4*math.Sin(40*fx*fy)
			a := 1.0
			if alpha {
				a = 0.2 + 0.8*fx // straight alpha: colour kept as is
			}
			img.SetNRGBA64(x, y, color.NRGBA64{uint16(r * 65535), uint16(g * 65535), uint16(b * 65535), uint16(a * 65535)})
		}
	}
	return img
}

// Formats and pixel layouts other than the photos: each goes through a
// different branch of reference.Planes and of OpenCV's decoders.
func TestIntoMatchesReferenceFormats(t *testing.T) {
	src := synthetic(300, 200, false)
	to8 := func(img image.Image) *image.NRGBA {
		b := img.Bounds()
		out := image.NewNRGBA(b)
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				out.Set(x, y, img.At(x, y))
			}
		}
		return out
	}
	gray := image.NewGray(src.Bounds())
	for y := range 200 {
		for x := range 300 {
			gray.Set(x, y, src.At(x, y))
		}
	}
	pal := image.NewPaletted(src.Bounds(), color.Palette{
		color.NRGBA{255, 0, 0, 255}, color.NRGBA{0, 128, 255, 255}, color.NRGBA{30, 200, 60, 128}, color.NRGBA{250, 250, 10, 255}})
	for y := range 200 {
		for x := range 300 {
			pal.SetColorIndex(x, y, uint8((x/7+y/5)%4))
		}
	}
	enc := map[string]func() []byte{
		"png rgb 8-bit":        func() []byte { return encodeWith(t, "png", to8(src)) },
		"png rgba straight":    func() []byte { return encodeWith(t, "png", to8(synthetic(300, 200, true))) },
		"png rgb 16-bit":       func() []byte { return encodeWith(t, "png", src) },
		"png rgba 16-bit":      func() []byte { return encodeWith(t, "png", synthetic(300, 200, true)) },
		"png gray":             func() []byte { return encodeWith(t, "png", gray) },
		"png paletted + tRNS":  func() []byte { return encodeWith(t, "png", pal) },
		"jpeg gray":            func() []byte { return encodeWith(t, "jpeg", gray) },
		"jpeg 4:2:0 (Go enc.)": func() []byte { return encodeWith(t, "jpeg", to8(src)) },
		"bmp 24-bit":           func() []byte { return encodeWith(t, "bmp", to8(src)) },
	}
	specs := map[string]Spec{
		"rgb":     {Resize: 150, Crop: 128, Mean: []float32{0.485, 0.456, 0.406}, Std: []float32{0.229, 0.224, 0.225}},
		"bgr":     {Resize: 150, Crop: 128, Color: "bgr", Mean: []float32{0.5}, Std: []float32{0.25}},
		"gray":    {Resize: 64, Crop: 60, Color: "gray", Mean: []float32{0.5}, Std: []float32{0.25}},
		"enlarge": {Resize: 400, Crop: 400, Mean: []float32{0.5}, Std: []float32{0.25}},
	}
	for name, mk := range enc {
		data := mk()
		for sn, spec := range specs {
			t.Run(name+"/"+sn, func(t *testing.T) {
				p := newP(t, spec, Options{})
				dst := make([]float32, spec.Len())
				if _, err := p.Into(data, dst); err != nil {
					t.Fatal(err)
				}
				mean, maxAbs := diff(dst, runRef(t, data, spec))
				t.Logf("mean |diff| %.5f, max %.4f", mean, maxAbs)
				if mean >= 0.02 {
					t.Errorf("mean |diff| = %.5f, want < 0.02", mean)
				}
			})
		}
	}
}

func encodeWith(t *testing.T, format string, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	var err error
	switch format {
	case "png":
		err = png.Encode(&buf, img)
	case "jpeg":
		err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90})
	case "bmp":
		err = bmp.Encode(&buf, img)
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// The bomb fixtures are real: handed straight to OpenCV they kill the
// process (an uncaught cv::Exception from validateInputImageSize). This
// runs the test binary again in a child process to show it, which is
// what makes TestIntoHostile's "never reaches OpenCV" matter.
func TestBombsWouldAbortOpenCV(t *testing.T) {
	if f := os.Getenv("VISION_TEST_RAW_IMDECODE"); f != "" {
		m, _ := gocv.IMDecode(fixture(t, f), gocv.IMReadColor)
		m.Close()
		fmt.Println("survived raw IMDecode")
		return
	}
	if testing.Short() {
		t.Skip("starts child processes")
	}
	for _, f := range []string{"bomb.png", "bomb.jpg"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestBombsWouldAbortOpenCV$")
		cmd.Env = append(os.Environ(), "VISION_TEST_RAW_IMDECODE="+f, "GOTRACEBACK=single")
		out, err := cmd.CombinedOutput()
		if err == nil || bytes.Contains(out, []byte("survived raw IMDecode")) {
			t.Errorf("%s: OpenCV survived a raw decode (err %v); is the fixture still a bomb?", f, err)
			continue
		}
		if !bytes.Contains(out, []byte("CV_IO_MAX_IMAGE_PIXELS")) {
			t.Errorf("%s: child died, but not from OpenCV's size check:\n%.600s", f, out)
		}
	}
}
