package data

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func solid(w, h int, c color.Color) image.Image {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, c)
		}
	}
	return img
}

func encodePNG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encodeJPEG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 100}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// captureSlog sends the default slog logger to a buffer for the test.
func captureSlog(t *testing.T) *bytes.Buffer {
	var buf bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, nil)))
	t.Cleanup(func() { slog.SetDefault(old) })
	return &buf
}

// TestImageFolder builds a folder of two classes, created in reverse
// order, with solid-colour PNG and JPEG images (each colour identifies
// its file), one corrupt file and files that must be ignored.
func TestImageFolder(t *testing.T) {
	red := color.NRGBA{255, 0, 0, 255}
	green := color.NRGBA{0, 255, 0, 255}
	blue := color.NRGBA{0, 0, 255, 255}
	grey := color.NRGBA{90, 90, 90, 255}
	dir := t.TempDir()
	type entry struct {
		rel  string
		data []byte
	}
	// Written in this order; loaded in sorted order.
	written := []entry{
		{"zebra/b.png", encodePNG(t, solid(8, 6, blue))},
		{"zebra/a.JPG", encodeJPEG(t, solid(6, 8, green))},
		{"zebra/broken.png", []byte("\x89PNG\r\n\x1a\n but nothing after the signature")},
		{"zebra/notes.txt", []byte("not an image")},
		{"zebra/.hidden.png", encodePNG(t, solid(4, 4, blue))},
		{"zebra/deeper/c.png", encodePNG(t, solid(4, 4, blue))},
		{"ant/y.jpeg", encodeJPEG(t, solid(5, 5, grey))},
		{"ant/x.png", encodePNG(t, solid(4, 4, red))},
		{"README", []byte("a file beside the class folders")},
	}
	for _, e := range written {
		writeFile(t, filepath.Join(dir, e.rel), e.data)
	}
	data := map[string][]byte{}
	for _, e := range written {
		data[e.rel] = e.data
	}
	// The candidates in load order, and the colour each loaded image has.
	order := []string{"ant/x.png", "ant/y.jpeg", "zebra/a.JPG", "zebra/b.png", "zebra/broken.png"}
	want := []struct {
		label int
		rgb   color.NRGBA
		exact bool // PNG: exact; JPEG: within a few levels
	}{
		{0, red, true},
		{0, grey, false},
		{1, green, false},
		{1, blue, true},
	}
	h := sha256.New()
	for _, rel := range order {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(data[rel])))
		h.Write([]byte(rel))
		h.Write([]byte{0})
		h.Write(n[:])
		h.Write(data[rel])
	}
	wantSHA := hex.EncodeToString(h.Sum(nil))

	for _, tt := range []struct {
		color string
		c     int
	}{{"rgb", 3}, {"gray", 1}} {
		t.Run(tt.color, func(t *testing.T) {
			logs := captureSlog(t)
			const size = 4
			s, skipped, err := ImageFolder(dir, size, tt.color)
			if err != nil {
				t.Fatal(err)
			}
			if skipped != 1 {
				t.Errorf("skipped = %d; want 1", skipped)
			}
			if l := logs.String(); strings.Count(l, "level=WARN") != 1 || !strings.Contains(l, "broken.png") {
				t.Errorf("want one warning naming broken.png; log:\n%s", l)
			}
			if err := s.Validate(); err != nil {
				t.Fatal(err)
			}
			if s.Len() != len(want) || s.C != tt.c || s.H != size || s.W != size {
				t.Fatalf("got %d images of %d×%d×%d; want %d of %d×%d×%d", s.Len(), s.C, s.H, s.W, len(want), tt.c, size, size)
			}
			if !slices.Equal(s.Classes, []string{"ant", "zebra"}) {
				t.Errorf("Classes = %q; want [ant zebra]", s.Classes)
			}
			if s.Source != dir || s.SHA256 != wantSHA {
				t.Errorf("Source, SHA256 = %q, %s; want %q, %s", s.Source, s.SHA256, dir, wantSHA)
			}
			for i, w := range want {
				if s.Y[i] != w.label {
					t.Errorf("image %d: label %d; want %d", i, s.Y[i], w.label)
				}
				r, g, b := float64(w.rgb.R), float64(w.rgb.G), float64(w.rgb.B)
				chans := []float64{r, g, b}
				if tt.c == 1 { // OpenCV's grey: 0.299 R + 0.587 G + 0.114 B
					chans = []float64{0.299*r + 0.587*g + 0.114*b}
				}
				tol := 1.0 // grey levels: rounding
				if !w.exact {
					tol = 4 // JPEG
				}
				img := s.Image(i)
				for c, v := range chans {
					for p, got := range img[c*size*size : (c+1)*size*size] {
						if math.Abs(float64(got)*255-v) > tol {
							t.Fatalf("image %d channel %d pixel %d = %v (%.1f/255); want %.1f/255 ± %v", i, c, p, got, float64(got)*255, v, tol)
						}
					}
				}
			}
		})
	}
}

func TestImageFolderErrors(t *testing.T) {
	good := encodePNG(t, solid(4, 4, color.NRGBA{1, 2, 3, 255}))
	tests := []struct {
		name    string
		files   map[string][]byte
		size    int
		color   string
		wantErr string
	}{
		{name: "bad color", files: map[string][]byte{"a/x.png": good}, size: 4, color: "bgr", wantErr: `color "bgr"`},
		{name: "zero size", files: map[string][]byte{"a/x.png": good}, size: 0, color: "rgb", wantErr: "size 0"},
		{name: "no class folders", files: map[string][]byte{"x.png": good}, size: 4, color: "rgb", wantErr: "no class folders"},
		{name: "no images", files: map[string][]byte{"a/x.txt": good}, size: 4, color: "rgb", wantErr: "hold no .jpg"},
		{name: "nothing decodes", files: map[string][]byte{"a/x.png": []byte("garbage"), "b/y.jpg": nil}, size: 4, color: "rgb", wantErr: "none of the 2 images"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			captureSlog(t)
			dir := t.TempDir()
			for rel, b := range tt.files {
				writeFile(t, filepath.Join(dir, rel), b)
			}
			s, _, err := ImageFolder(dir, tt.size, tt.color)
			if err == nil {
				t.Fatalf("ImageFolder loaded %d images; want an error", s.Len())
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
	if _, _, err := ImageFolder(filepath.Join(t.TempDir(), "absent"), 4, "rgb"); err == nil {
		t.Error("ImageFolder of a missing folder: no error")
	}
}
