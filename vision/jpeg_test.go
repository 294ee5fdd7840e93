//go:build !nogocv

package vision

import (
	"bytes"
	"fmt"
	"image"
	"image/draw"
	"image/jpeg"
	"testing"

	"fastinfer/vision/internal/jpegenc"
)

// bothDecoders runs data through a Preprocessor with the direct JPEG
// decoder and one without, and says how many decodes the first made
// directly.
func bothDecoders(t *testing.T, spec Spec, data []byte) (got, want []float32, directs int64) {
	t.Helper()
	direct := newP(t, spec, Options{})
	viaCV := newP(t, spec, Options{})
	viaCV.noDirect = true
	got = make([]float32, spec.Len())
	want = make([]float32, spec.Len())
	if _, err := direct.Into(data, got); err != nil {
		t.Fatal(err)
	}
	if _, err := viaCV.Into(data, want); err != nil {
		t.Fatal(err)
	}
	if n := viaCV.directs.Load(); n != 0 {
		t.Fatalf("the OpenCV-only Preprocessor decoded %d directly", n)
	}
	return got, want, direct.directs.Load()
}

// The direct libjpeg decode must give exactly what OpenCV's imdecode
// gives, at every spec (full-size and reduced decodes, shrinking and
// enlarging resizes, grey and both channel orders): the rows and columns
// it skips must be ones the centre crop never reads.
func TestDirectJPEGMatchesOpenCV(t *testing.T) {
	for _, tc := range refCases() {
		if tc.file == "smarties.png" {
			continue
		}
		t.Run(tc.specName+"/"+tc.file, func(t *testing.T) {
			got, want, directs := bothDecoders(t, tc.spec, fixture(t, tc.file))
			if directs != 1 {
				t.Fatalf("direct decodes = %d, want 1", directs)
			}
			if mean, maxAbs := diff(got, want); maxAbs != 0 {
				t.Errorf("direct vs OpenCV: mean |diff| %.6f, max %.6f, want identical", mean, maxAbs)
			}
		})
	}
}

// withOrientation inserts, after SOI, an EXIF segment whose IFD0 holds
// only an orientation tag (big-endian TIFF).
func withOrientation(jpeg []byte, o uint16) []byte {
	seg := []byte{0xFF, 0xE1, 0, 34, 'E', 'x', 'i', 'f', 0, 0,
		'M', 'M', 0, 42, 0, 0, 0, 8, // TIFF header, IFD0 at 8
		0, 1, // one entry:
		0x01, 0x12, 0, 3, 0, 0, 0, 1, byte(o >> 8), byte(o), 0, 0, // orientation, SHORT, 1
		0, 0, 0, 0} // no IFD1
	out := append([]byte{}, jpeg[:2]...)
	out = append(out, seg...)
	return append(out, jpeg[2:]...)
}

// A JPEG with an EXIF rotation goes to OpenCV, which applies it, so the
// result is the same whether the direct decoder is on or off; one without
// (orientation 1) is decoded directly.
func TestEXIFRotatedJPEGGoesToOpenCV(t *testing.T) {
	photo := fixture(t, "butterfly.jpg") // 493×356: a rotation changes the crop
	var upright []float32
	for o := uint16(1); o <= 8; o++ {
		t.Run(fmt.Sprint("orientation ", o), func(t *testing.T) {
			got, want, directs := bothDecoders(t, imagenet, withOrientation(photo, o))
			wantDirect := int64(0)
			if o == 1 {
				wantDirect = 1
			}
			if directs != wantDirect {
				t.Errorf("direct decodes = %d, want %d", directs, wantDirect)
			}
			if _, maxAbs := diff(got, want); maxAbs != 0 {
				t.Errorf("max |diff| from OpenCV = %v, want 0", maxAbs)
			}
			// The fixture must really rotate: every orientation but 1
			// changes the tensor.
			if o == 1 {
				upright = got
			} else if _, maxAbs := diff(got, upright); maxAbs == 0 {
				t.Errorf("orientation %d gives the upright tensor; OpenCV did not apply it", o)
			}
		})
	}
}

// Grey JPEGs (one component) and damaged scan data decode the same
// through both decoders; damage libjpeg can get through (a warning)
// must not become an error, and a fatal one must be ErrBadImage.
func TestDirectJPEGGreyAndDamaged(t *testing.T) {
	photo := fixture(t, "butterfly.jpg")
	img, err := jpeg.Decode(bytes.NewReader(photo))
	if err != nil {
		t.Fatal(err)
	}
	grey := image.NewGray(img.Bounds())
	draw.Draw(grey, grey.Bounds(), img, img.Bounds().Min, draw.Src)
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, grey, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	damaged := bytes.Clone(fixture(t, "baboon.jpg"))
	for i := len(damaged) / 2; i < len(damaged)/2+64; i += 8 {
		damaged[i] ^= 0x5A
	}
	for _, tc := range []struct {
		name string
		data []byte
		spec Spec
	}{
		{"grey JPEG to rgb", buf.Bytes(), imagenet},
		{"grey JPEG to gray", buf.Bytes(), gray28},
		{"damaged scan to rgb", damaged, imagenet},
		{"damaged scan to gray", damaged, gray28},
	} {
		t.Run(tc.name, func(t *testing.T) {
			direct := newP(t, tc.spec, Options{})
			viaCV := newP(t, tc.spec, Options{})
			viaCV.noDirect = true
			got := make([]float32, tc.spec.Len())
			want := make([]float32, tc.spec.Len())
			_, gotErr := direct.Into(tc.data, got)
			_, wantErr := viaCV.Into(tc.data, want)
			if sentinelName(gotErr) != sentinelName(wantErr) {
				t.Fatalf("direct: %v; OpenCV: %v", gotErr, wantErr)
			}
			if gotErr != nil {
				return
			}
			if direct.directs.Load() != 1 {
				t.Errorf("direct decodes = %d, want 1", direct.directs.Load())
			}
			if _, maxAbs := diff(got, want); maxAbs != 0 {
				t.Errorf("max |diff| from OpenCV = %v, want 0", maxAbs)
			}
		})
	}
}

// A CMYK JPEG (as Photoshop writes them) is left to OpenCV, which
// converts it; libjpeg cannot give BGR from CMYK.
func TestCMYKJPEGGoesToOpenCV(t *testing.T) {
	img, err := jpeg.Decode(bytes.NewReader(fixture(t, "butterfly.jpg")))
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	pix := make([]byte, 0, b.Dx()*b.Dy()*4)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			// Adobe's inverted inks: no black, cyan = red's complement
			// stored inverted, and so on.
			pix = append(pix, byte(r>>8), byte(g>>8), byte(bl>>8), 255)
		}
	}
	data, err := jpegenc.CMYK(pix, b.Dx(), b.Dy(), 90)
	if err != nil {
		t.Fatal(err)
	}
	got, want, directs := bothDecoders(t, imagenet, data)
	if directs != 0 {
		t.Errorf("direct decodes = %d, want 0 (CMYK)", directs)
	}
	if _, maxAbs := diff(got, want); maxAbs != 0 {
		t.Errorf("max |diff| from OpenCV = %v, want 0", maxAbs)
	}
	// OpenCV read the colours, not garbage: close to the photo itself.
	_, orig, _ := bothDecoders(t, imagenet, fixture(t, "butterfly.jpg"))
	if mean, _ := diff(got, orig); mean > 0.1 {
		t.Errorf("CMYK copy is %.3f (mean |diff|) from the photo", mean)
	}
}
