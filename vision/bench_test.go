//go:build !nogocv

package vision

import (
	"strings"
	"testing"

	"fastinfer/internal/dtype"
)

// BenchmarkInto: one photo to an ImageNet tensor (resize 256, crop 224),
// and a large-photo case where the reduced JPEG decode applies; JPEGs
// through the direct libjpeg decode and, for comparison, through OpenCV's
// imdecode, and with the whole image resized by OpenCV rather than only
// the crop's window (whole-resize).
func BenchmarkInto(b *testing.B) {
	cases := []struct {
		name string
		file string
		spec Spec
	}{
		{"baboon-512-jpeg-224", "baboon.jpg", imagenet},
		{"starry-752x600-jpeg-224", "starry_night.jpg", imagenet},
		{"smarties-413x356-png-224", "smarties.png", imagenet},
		{"suzanne-640x480-jpeg-224", "Blender_Suzanne1.jpg", imagenet},
		{"starry-752x600-jpeg-gray28-reduced8", "starry_night.jpg", gray28},
	}
	for _, c := range cases {
		for _, mode := range []string{"", "/imdecode", "/whole-resize"} {
			if mode == "/imdecode" && !strings.HasSuffix(c.file, ".jpg") {
				continue
			}
			b.Run(c.name+mode, func(b *testing.B) {
				p := newP(b, c.spec, Options{})
				p.noDirect = mode == "/imdecode"
				p.noCropArea = mode == "/whole-resize"
				data := fixture(b, c.file)
				dst := make([]float32, c.spec.Len())
				b.ReportAllocs()
				b.SetBytes(int64(len(data)))
				for b.Loop() {
					if _, err := p.Into(data, dst); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkIntoBytes: a photo to an FP16 or UINT8 tensor, written
// directly (IntoBytes) against the float32 tensor converted after
// (Into, then dtype.Encode), which is what the server did before.
func BenchmarkIntoBytes(b *testing.B) {
	for _, dt := range []string{"FP16", "UINT8"} {
		for _, mode := range []string{"direct", "into+encode"} {
			b.Run(dt+"/"+mode, func(b *testing.B) {
				p := newP(b, imagenet, Options{})
				data := fixture(b, "baboon.jpg")
				f := make([]float32, imagenet.Len())
				dst := make([]byte, imagenet.Len()*dtype.Size(dt))
				b.ReportAllocs()
				for b.Loop() {
					if mode == "direct" {
						if _, err := p.IntoBytes(data, dt, dst); err != nil {
							b.Fatal(err)
						}
						continue
					}
					if _, err := p.Into(data, f); err != nil {
						b.Fatal(err)
					}
					dtype.Encode(dt, dst, f)
				}
			})
		}
	}
}
