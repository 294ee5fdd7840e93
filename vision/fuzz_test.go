//go:build !nogocv

package vision

import (
	"bytes"
	"errors"
	"image"
	"image/color/palette"
	"image/gif"
	"image/jpeg"
	"image/png"
	"math"
	"testing"

	"golang.org/x/image/bmp"
	"golang.org/x/image/tiff"

	"fastinfer/internal/dtype"
	"fastinfer/vision/guard"
)

// FuzzInto feeds untrusted bytes through guard and OpenCV, as the server
// does, with a small pixel limit so every decode is cheap. Into must not
// crash the process (OpenCV aborts on some inputs guard exists to stop),
// must refuse with exactly one of guard's sentinels (anything else is
// answered 500), must leave dst alone when it refuses, must write only
// values the normalisation can produce when it accepts, and must close
// every Mat. vision/guard's FuzzCheck covers the header checks alone.
//
//	go test ./vision -run '^$' -fuzz '^FuzzInto$' -fuzztime 30s
func FuzzInto(f *testing.F) {
	for _, name := range []string{"bomb.png", "bomb.jpg", "empty.jpg", "text.txt", "garbage.bin"} {
		f.Add(fixture(f, name), false)
	}
	for _, name := range []string{"truncated.png", "truncated.jpg", "truncated_thumb.jpg"} {
		b := fixture(f, name)
		f.Add(b[:min(len(b), 4096)], true)
	}
	src := synthetic(24, 16, true)
	gray := image.NewGray(image.Rect(0, 0, 12, 9))
	for i := range gray.Pix {
		gray.Pix[i] = uint8(i * 29)
	}
	pal := image.NewPaletted(image.Rect(0, 0, 10, 10), palette.Plan9)
	for i := range pal.Pix {
		pal.Pix[i] = uint8(i * 7)
	}
	encoders := []func(*bytes.Buffer) error{
		func(b *bytes.Buffer) error { return png.Encode(b, src) },  // 16-bit RGBA
		func(b *bytes.Buffer) error { return png.Encode(b, gray) }, // 8-bit gray
		func(b *bytes.Buffer) error { return png.Encode(b, pal) },  // paletted
		func(b *bytes.Buffer) error { return jpeg.Encode(b, src, &jpeg.Options{Quality: 50}) },
		func(b *bytes.Buffer) error { return jpeg.Encode(b, gray, nil) },
		func(b *bytes.Buffer) error { return bmp.Encode(b, gray) },
		func(b *bytes.Buffer) error { return bmp.Encode(b, src) },
		func(b *bytes.Buffer) error { return tiff.Encode(b, gray, nil) },
		func(b *bytes.Buffer) error { return tiff.Encode(b, src, &tiff.Options{Compression: tiff.Deflate}) },
		func(b *bytes.Buffer) error { return gif.Encode(b, pal, nil) },
	}
	for _, enc := range encoders {
		var b bytes.Buffer
		if err := enc(&b); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes(), false)
		f.Add(b.Bytes(), true)
	}
	f.Add(cmykJPEG(), false)

	const maxPixels = 1 << 16
	grayP := newFuzzP(f, Spec{Resize: 8, Crop: 8, Color: "gray", Mean: []float32{0.5}, Std: []float32{0.25}}, maxPixels)
	rgbP := newFuzzP(f, Spec{Resize: 10, Crop: 8, Color: "rgb", Mean: []float32{0.485, 0.456, 0.406}, Std: []float32{0.229, 0.224, 0.225}}, maxPixels)
	const canary = 0x7fc0beef // a NaN Into never writes
	f.Fuzz(func(t *testing.T, data []byte, rgb bool) {
		p := grayP
		if rgb {
			p = rgbP
		}
		dst := make([]float32, p.spec.Len())
		for i := range dst {
			dst[i] = math.Float32frombits(canary)
		}
		info, err := p.Into(data, dst)
		if n := p.liveMats.Load(); n != 0 {
			t.Fatalf("%d Mats left open", n)
		}
		if err != nil {
			n := 0
			for _, s := range []error{guard.ErrEmpty, guard.ErrBadImage, guard.ErrTooLarge} {
				if errors.Is(err, s) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("error %q wraps %d of guard's sentinels; the server would answer 500", err, n)
			}
			for i, v := range dst {
				if math.Float32bits(v) != canary {
					t.Fatalf("refused (%v) but wrote dst[%d] = %v", err, i, v)
				}
			}
			return
		}
		if info.Width <= 0 || info.Height <= 0 || int64(info.Width)*int64(info.Height) > maxPixels {
			t.Fatalf("accepted with info %+v", info)
		}
		plane := p.spec.Crop * p.spec.Crop
		for i, v := range dst {
			lut := &p.lut[i/plane]
			lo, hi := min(lut[0], lut[255]), max(lut[0], lut[255])
			if !(v >= lo && v <= hi) {
				t.Fatalf("dst[%d] = %v, outside the normalised range [%v, %v]", i, v, lo, hi)
			}
		}
		// The same image in a model's datatype: the bytes Encode makes of
		// the float32 tensor.
		for _, dt := range []string{"FP16", "UINT8"} {
			got, want := make([]byte, len(dst)*dtype.Size(dt)), make([]byte, len(dst)*dtype.Size(dt))
			dtype.Encode(dt, want, dst)
			if _, err := p.IntoBytes(data, dt, got); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("IntoBytes %s = %v, % x; want % x", dt, err, got, want)
			}
		}
		if n := p.liveMats.Load(); n != 0 {
			t.Fatalf("%d Mats left open by IntoBytes", n)
		}
	})
}

func newFuzzP(t testing.TB, s Spec, maxPixels int64) *Preprocessor {
	t.Helper()
	p, err := New(s, Options{MaxPixels: maxPixels, MaxConcurrent: 1})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// cmykJPEG is a hand-made 8x8 baseline JPEG with four components and an
// Adobe APP14 marker saying CMYK, every block all zero coefficients.
func cmykJPEG() []byte {
	b := []byte{0xff, 0xd8, 0xff, 0xee, 0x00, 0x0e, 'A', 'd', 'o', 'b', 'e', 0x00, 0x64, 0, 0, 0, 0, 0}
	b = append(b, 0xff, 0xdb, 0x00, 0x43, 0x00)
	b = append(b, bytes.Repeat([]byte{1}, 64)...)
	b = append(b, 0xff, 0xc0, 0x00, 0x14, 8, 0, 8, 0, 8, 4)
	for id := byte(1); id <= 4; id++ {
		b = append(b, id, 0x11, 0)
	}
	b = append(b, 0xff, 0xc4, 0x00, 0x26)
	for _, class := range []byte{0x00, 0x10} {
		b = append(b, class, 1)
		b = append(b, make([]byte, 15)...)
		b = append(b, 0)
	}
	b = append(b, 0xff, 0xda, 0x00, 0x0e, 4)
	for id := byte(1); id <= 4; id++ {
		b = append(b, id, 0x00)
	}
	return append(b, 0, 63, 0, 0x00, 0xff, 0xd9)
}
