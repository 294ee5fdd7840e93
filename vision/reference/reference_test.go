package reference

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"testing"

	"fastinfer/vision/guard"
)

func TestFitShorter(t *testing.T) {
	tests := []struct{ w, h, side, tw, th int }{
		{512, 512, 256, 256, 256},
		{512, 480, 256, 273, 256}, // 273.07
		{480, 512, 256, 256, 273},
		{752, 600, 256, 321, 256}, // 320.85
		{3, 2, 1, 2, 1},           // 1.5 rounds up
		{5, 2, 1, 3, 1},           // 2.5 rounds up
		{100, 100, 300, 300, 300},
		{4032, 3024, 256, 341, 256}, // 341.33
	}
	for _, tc := range tests {
		tw, th := FitShorter(tc.w, tc.h, tc.side)
		if tw != tc.tw || th != tc.th {
			t.Errorf("FitShorter(%d, %d, %d) = %dx%d, want %dx%d", tc.w, tc.h, tc.side, tw, th, tc.tw, tc.th)
		}
	}
}

func TestResizePlane(t *testing.T) {
	tests := []struct {
		name         string
		src          []uint8
		w, h, tw, th int
		want         []uint8
	}{
		{"identity", []uint8{1, 2, 3, 4}, 2, 2, 2, 2, []uint8{1, 2, 3, 4}},
		{"area 2x: block means", []uint8{
			0, 2, 10, 20,
			4, 6, 30, 40,
		}, 4, 2, 2, 1, []uint8{3, 25}},
		// 3 → 2: output 0 covers source [0, 1.5): (10*1 + 40*0.5)/1.5 = 20.
		{"area 1.5x: partial pixels", []uint8{10, 40, 100}, 3, 1, 2, 1, []uint8{20, 80}},
		// 2 → 4: positions -0.25, 0.25, 0.75, 1.25 → clamp, 3/4+1/4 mixes, clamp.
		{"bilinear 2x: half-pixel centres, clamped edges", []uint8{0, 100}, 2, 1, 4, 1, []uint8{0, 25, 75, 100}},
		{"bilinear vertical", []uint8{0, 200}, 1, 2, 1, 4, []uint8{0, 50, 150, 200}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ResizePlane(tc.src, tc.w, tc.h, tc.tw, tc.th)
			if !bytes.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// Area weights must sum to one: a flat image stays flat at any ratio.
func TestResizePlaneFlat(t *testing.T) {
	src := bytes.Repeat([]uint8{77}, 37*23)
	for _, sz := range [][2]int{{10, 7}, {36, 22}, {5, 3}, {1, 1}, {80, 50}, {37, 23}} {
		for i, v := range ResizePlane(src, 37, 23, sz[0], sz[1]) {
			if v != 77 {
				t.Fatalf("%dx%d: pixel %d = %d, want 77", sz[0], sz[1], i, v)
			}
		}
	}
}

func TestPlanes(t *testing.T) {
	nrgba := image.NewNRGBA(image.Rect(0, 0, 2, 1))
	nrgba.SetNRGBA(0, 0, color.NRGBA{200, 100, 50, 0}) // transparent: colour kept
	nrgba.SetNRGBA(1, 0, color.NRGBA{10, 20, 30, 128})
	p, w, h := Planes(nrgba, false)
	if w != 2 || h != 1 || p[0][0] != 200 || p[1][0] != 100 || p[2][0] != 50 || p[0][1] != 10 {
		t.Errorf("NRGBA planes = %v (%dx%d), want straight colour", p, w, h)
	}
	g, _, _ := Planes(nrgba, true)
	if want := uint8(math.Round(0.299*200 + 0.587*100 + 0.114*50)); g[0][0] != want {
		t.Errorf("gray = %d, want %d", g[0][0], want)
	}

	ycc := image.NewYCbCr(image.Rect(0, 0, 4, 2), image.YCbCrSubsampleRatio420)
	copy(ycc.Y, []uint8{10, 20, 30, 40, 50, 60, 70, 80})
	ycc.Cb[0], ycc.Cb[1] = 128, 128
	ycc.Cr[0], ycc.Cr[1] = 128, 128
	y, _, _ := Planes(ycc, true)
	if !bytes.Equal(y[0], ycc.Y) {
		t.Errorf("YCbCr gray = %v, want the Y plane %v", y[0], ycc.Y)
	}
	rgb, _, _ := Planes(ycc, false)
	if !bytes.Equal(rgb[0], ycc.Y) || !bytes.Equal(rgb[2], ycc.Y) {
		t.Errorf("neutral chroma: R %v B %v, want Y", rgb[0], rgb[2])
	}
}

// Chroma upsampling uses libjpeg's triangle weights: 3/4 nearest, 1/4 next.
func TestUpsampleChroma(t *testing.T) {
	m := image.NewYCbCr(image.Rect(0, 0, 4, 1), image.YCbCrSubsampleRatio422)
	m.Cb[0], m.Cb[1] = 0, 200
	m.Cr[0], m.Cr[1] = 100, 100
	cb, cr := upsampleChroma(m)
	if want := []uint8{0, 50, 150, 200}; !bytes.Equal(cb, want) {
		t.Errorf("Cb = %v, want %v", cb, want)
	}
	if want := []uint8{100, 100, 100, 100}; !bytes.Equal(cr, want) {
		t.Errorf("Cr = %v, want %v", cr, want)
	}
}

func TestPreprocess(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 6, 4))
	for i := 0; i < len(img.Pix); i += 4 {
		copy(img.Pix[i:], []uint8{51, 102, 204, 255})
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()

	out, err := Preprocess(data, 0, 2, "", 0, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []float32{0.2, 0.2, 0.2, 0.2, 0.4, 0.4, 0.4, 0.4, 0.8, 0.8, 0.8, 0.8}
	for i := range want {
		if math.Abs(float64(out[i]-want[i])) > 1e-6 {
			t.Fatalf("rgb out = %v, want %v", out, want)
		}
	}
	out, err = Preprocess(data, 3, 3, "bgr", 1, []float32{4}, []float32{2, 1, 0.5})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 27 || out[0] != 100 || out[9] != 98 || out[18] != 94 {
		t.Errorf("bgr out = %v, want planes 100, 98, 94", out)
	}

	bad := []struct {
		name         string
		resize, crop int
		color        string
		mean         []float32
	}{
		{"crop 0", 0, 0, "rgb", nil},
		{"resize < crop", 2, 3, "rgb", nil},
		{"color", 4, 4, "hsv", nil},
		{"mean length", 4, 4, "gray", []float32{1, 2, 3}},
	}
	for _, tc := range bad {
		if _, err := Preprocess(data, tc.resize, tc.crop, tc.color, 0, tc.mean, nil); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

func TestPreprocessRefusesWhatGuardRefuses(t *testing.T) {
	for name, want := range map[string]error{
		"bomb.png":            guard.ErrTooLarge,
		"truncated.jpg":       guard.ErrBadImage,
		"truncated_thumb.jpg": guard.ErrBadImage,
		"garbage.bin":         guard.ErrBadImage,
		"empty.jpg":           guard.ErrEmpty,
	} {
		data, err := os.ReadFile("../testdata/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Preprocess(data, 256, 224, "rgb", 0, nil, nil); !errors.Is(err, want) {
			t.Errorf("%s: error %v, want %v", name, err, want)
		}
	}
}
