//go:build !nogocv

package vision

import (
	"fmt"
	"image"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"gocv.io/x/gocv"
)

// areaCrop gives, byte for byte, what OpenCV's INTER_AREA resize gives in
// the window, for photos and for random images at many sizes and ratios
// (crop windows at the centre and at the edges).
func TestAreaCropMatchesOpenCV(t *testing.T) {
	type tc struct {
		name       string
		img        gocv.Mat
		tw, th     int
		cw, ch     int
		atX0, atY0 int // -1: centred
	}
	var cases []tc
	for _, f := range []string{"Blender_Suzanne1.jpg", "butterfly.jpg", "fruits.jpg", "starry_night.jpg", "ela_original.jpg"} {
		b, err := os.ReadFile(filepath.Join("testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		for _, flag := range []gocv.IMReadFlag{gocv.IMReadColor, gocv.IMReadGrayScale} {
			m, err := gocv.IMDecode(b, flag)
			if err != nil || m.Empty() {
				t.Fatalf("%s: %v", f, err)
			}
			defer m.Close()
			tw, th := fitShorter(m.Cols(), m.Rows(), 256)
			cases = append(cases, tc{fmt.Sprintf("%s/%d", f, m.Channels()), m, tw, th, 224, 224, -1, -1})
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 40 {
		w, h := 20+rng.IntN(400), 20+rng.IntN(400)
		tw, th := 1+rng.IntN(w), 1+rng.IntN(h)
		cn := []int{1, 3}[i%2]
		typ := gocv.MatTypeCV8UC3
		if cn == 1 {
			typ = gocv.MatTypeCV8UC1
		}
		m := gocv.NewMatWithSize(h, w, typ)
		defer m.Close()
		pix, _ := m.DataPtrUint8()
		for j := range pix {
			pix[j] = byte(rng.IntN(256))
		}
		cw, ch := 1+rng.IntN(tw), 1+rng.IntN(th)
		cases = append(cases, tc{fmt.Sprintf("random%d_%dx%dto%dx%d", i, w, h, tw, th), m, tw, th, cw, ch, rng.IntN(tw - cw + 1), rng.IntN(th - ch + 1)})
	}
	n := 0
	for _, c := range cases {
		if areaFast(c.img.Cols(), c.img.Rows(), c.tw, c.th) {
			continue
		}
		n++
		t.Run(c.name, func(t *testing.T) {
			want := gocv.NewMat()
			defer want.Close()
			gocv.Resize(c.img, &want, image.Pt(c.tw, c.th), 0, 0, gocv.InterpolationArea)
			x0, y0 := c.atX0, c.atY0
			if x0 < 0 {
				x0, y0 = (c.tw-c.cw)/2, (c.th-c.ch)/2
			}
			cn := c.img.Channels()
			src, _ := c.img.DataPtrUint8()
			got := make([]byte, c.cw*c.ch*cn)
			if err := areaCrop(src, c.img.Cols(), c.img.Rows(), c.img.Step(), cn, c.tw, c.th, x0, y0, c.cw, c.ch, got); err != nil {
				t.Fatal(err)
			}
			wp, _ := want.DataPtrUint8()
			bad := 0
			for y := range c.ch {
				for x := range c.cw * cn {
					g, w := got[y*c.cw*cn+x], wp[(y0+y)*want.Step()+x0*cn+x]
					if g != w {
						if bad < 5 {
							t.Errorf("pixel byte (%d,%d): %d, OpenCV %d", x, y, g, w)
						}
						bad++
					}
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d bytes differ", bad, len(got))
			}
		})
	}
	if n < 30 {
		t.Errorf("only %d non-integer cases", n)
	}
}

// Into gives the same tensor with the crop's window resized alone as with
// the whole image resized by OpenCV, on every photo and colour mode, and
// takes the window path for the non-integer ratios.
func TestIntoCropAreaSameTensor(t *testing.T) {
	for _, f := range []string{"Blender_Suzanne1.jpg", "butterfly.jpg", "fruits.jpg", "starry_night.jpg", "ela_original.jpg", "baboon.jpg", "smarties.png"} {
		for _, spec := range []Spec{imagenet, gray28, {Resize: 300, Crop: 299, Color: "bgr", Layout: LayoutNHWC}} {
			t.Run(fmt.Sprintf("%s/%s-%d", f, spec.color(), spec.Crop), func(t *testing.T) {
				data := fixture(t, f)
				window, whole := newP(t, spec, Options{}), newP(t, spec, Options{})
				whole.noCropArea = true
				a, b := make([]float32, spec.Len()), make([]float32, spec.Len())
				if _, err := window.Into(data, a); err != nil {
					t.Fatal(err)
				}
				if _, err := whole.Into(data, b); err != nil {
					t.Fatal(err)
				}
				for i := range a {
					if a[i] != b[i] {
						t.Fatalf("value %d: %v with the window resized, %v with the whole image", i, a[i], b[i])
					}
				}
				if whole.cropAreas.Load() != 0 {
					t.Error("noCropArea still resized the window alone")
				}
			})
		}
	}
	p := newP(t, imagenet, Options{})
	if _, err := p.Into(fixture(t, "Blender_Suzanne1.jpg"), make([]float32, imagenet.Len())); err != nil || p.cropAreas.Load() != 1 {
		t.Errorf("640×480 to 256: %v, %d window resizes; want 1", err, p.cropAreas.Load())
	}
}
