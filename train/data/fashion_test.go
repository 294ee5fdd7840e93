package data

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The sha256 of `cat SPLIT-images-idx3-ubyte.gz SPLIT-labels-idx1-ubyte.gz`
// for Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1.
const (
	fashionTrainSHA256 = "8a7d774f94e35a4b1b24d354583140d3cad10f742fae0e0465e4e7f3b13c09be"
	fashionTestSHA256  = "2745d3e0a451fa5316dcdbabb5ffe689a6aa831f9f3922f9c2b96a38d353b07b"
)

// idxBytes encodes an IDX file of unsigned bytes.
func idxBytes(dims []int, data []byte) []byte {
	b := []byte{0, 0, 0x08, byte(len(dims))}
	for _, d := range dims {
		b = append(b, byte(d>>24), byte(d>>16), byte(d>>8), byte(d))
	}
	return append(b, data...)
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestFashionMNISTFixture runs the loader on the 3-image fixtures, copied
// under Fashion-MNIST's names: gzipped for train, plain for t10k.
func TestFashionMNISTFixture(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"train-images-idx3-ubyte.gz": "images-idx3-ubyte.gz",
		"train-labels-idx1-ubyte.gz": "labels-idx1-ubyte.gz",
		"t10k-images-idx3-ubyte":     "images-idx3-ubyte",
		"t10k-labels-idx1-ubyte":     "labels-idx1-ubyte",
	}
	for dst, src := range files {
		writeFile(t, filepath.Join(dir, dst), readFixture(t, src))
	}
	for _, tt := range []struct{ split, images, labels string }{
		{"train", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"},
		{"t10k", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"},
	} {
		t.Run(tt.split, func(t *testing.T) {
			s, err := FashionMNIST(dir, tt.split)
			if err != nil {
				t.Fatal(err)
			}
			if s.Len() != 3 || s.C != 1 || s.H != 2 || s.W != 2 {
				t.Fatalf("got %d images of %d×%d×%d; want 3 of 1×2×2", s.Len(), s.C, s.H, s.W)
			}
			if err := s.Validate(); err != nil {
				t.Fatal(err)
			}
			for i, p := range fixturePixels {
				if want := float32(p) / 255; s.X[i] != want {
					t.Errorf("X[%d] = %v; want %d/255 = %v", i, s.X[i], p, want)
				}
			}
			if got := s.Image(1); !slices.Equal(got, s.X[4:8]) {
				t.Errorf("Image(1) = %v; want X[4:8] = %v", got, s.X[4:8])
			}
			if want := []int{0, 9, 4}; !slices.Equal(s.Y, want) {
				t.Errorf("Y = %v; want %v", s.Y, want)
			}
			if !slices.Equal(s.Classes, FashionMNISTClasses) || s.Classes[9] != "Ankle boot" {
				t.Errorf("Classes = %q", s.Classes)
			}
			imgPath, lblPath := filepath.Join(dir, tt.images), filepath.Join(dir, tt.labels)
			if want := imgPath + ", " + lblPath; s.Source != want {
				t.Errorf("Source = %q; want %q", s.Source, want)
			}
			h := sha256.New()
			h.Write(readFixture(t, files[tt.images]))
			h.Write(readFixture(t, files[tt.labels]))
			if want := hex.EncodeToString(h.Sum(nil)); s.SHA256 != want {
				t.Errorf("SHA256 = %s; want sha256(images ‖ labels) = %s", s.SHA256, want)
			}
		})
	}
}

func TestFashionMNISTErrors(t *testing.T) {
	images := idxBytes([]int{3, 2, 2}, fixturePixels)
	tests := []struct {
		name    string
		split   string
		files   map[string][]byte // in a fresh dir, under t10k-*
		wantErr string
		wantIs  error
	}{
		{name: "unknown split", split: "test", wantErr: `split "test"`},
		{name: "missing files", split: "t10k", wantErr: "make deps", wantIs: fs.ErrNotExist},
		{name: "missing labels", split: "t10k", files: map[string][]byte{"images": images}, wantErr: "labels-idx1-ubyte", wantIs: fs.ErrNotExist},
		{name: "fewer labels than images", split: "t10k", files: map[string][]byte{
			"images": images, "labels": idxBytes([]int{2}, []byte{1, 2}),
		}, wantErr: "holds 3 images but"},
		{name: "label out of range", split: "t10k", files: map[string][]byte{
			"images": images, "labels": idxBytes([]int{3}, []byte{1, 10, 2}),
		}, wantErr: "label 10 of image 1"},
		{name: "images not 3-d", split: "t10k", files: map[string][]byte{
			"images": idxBytes([]int{3, 4}, fixturePixels), "labels": idxBytes([]int{3}, fixtureLabels),
		}, wantErr: "want 3 (images×rows×columns)"},
		{name: "labels not 1-d", split: "t10k", files: map[string][]byte{
			"images": images, "labels": idxBytes([]int{3, 1}, fixtureLabels),
		}, wantErr: "want 1 (labels)"},
		{name: "bad IDX", split: "t10k", files: map[string][]byte{
			"images": images[:len(images)-1], "labels": idxBytes([]int{3}, fixtureLabels),
		}, wantIs: ErrIDX},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for kind, b := range tt.files {
				name := "t10k-images-idx3-ubyte"
				if kind == "labels" {
					name = "t10k-labels-idx1-ubyte"
				}
				writeFile(t, filepath.Join(dir, name), b)
			}
			s, err := FashionMNIST(dir, tt.split)
			if err == nil {
				t.Fatalf("FashionMNIST loaded %d images; want an error", s.Len())
			}
			if !strings.Contains(err.Error(), tt.wantErr) || (tt.wantIs != nil && !errors.Is(err, tt.wantIs)) {
				t.Fatalf("error %q; want one containing %q and wrapping %v", err, tt.wantErr, tt.wantIs)
			}
		})
	}
}

// TestFashionMNISTDebian loads Debian's real files.
func TestFashionMNISTDebian(t *testing.T) {
	if _, err := os.Stat(FashionMNISTDir); errors.Is(err, fs.ErrNotExist) {
		t.Skipf("%s is missing: `make deps` installs Debian's dataset-fashion-mnist", FashionMNISTDir)
	}
	tests := []struct {
		split    string
		n        int
		perClass int
		sha256   string
	}{
		{"train", 60000, 6000, fashionTrainSHA256},
		{"t10k", 10000, 1000, fashionTestSHA256},
	}
	for _, tt := range tests {
		t.Run(tt.split, func(t *testing.T) {
			start := time.Now()
			s, err := FashionMNIST("", tt.split)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("loaded %d images in %v", s.Len(), time.Since(start))
			if s.Len() != tt.n || s.C != 1 || s.H != 28 || s.W != 28 || len(s.X) != tt.n*28*28 {
				t.Fatalf("got %d images of %d×%d×%d (len(X) = %d); want %d of 1×28×28", s.Len(), s.C, s.H, s.W, len(s.X), tt.n)
			}
			if err := s.Validate(); err != nil { // labels in range
				t.Fatal(err)
			}
			counts := make([]int, len(s.Classes))
			for _, y := range s.Y {
				counts[y]++
			}
			for c, n := range counts {
				if n != tt.perClass {
					t.Errorf("class %d (%s) has %d images; want %d", c, s.Classes[c], n, tt.perClass)
				}
			}
			if s.SHA256 != tt.sha256 {
				t.Errorf("SHA256 = %s; want %s", s.SHA256, tt.sha256)
			}
			// The pixels span [0, 1] exactly, and every value is k/255.
			lo, hi := float32(1), float32(0)
			for i, v := range s.X {
				lo, hi = min(lo, v), max(hi, v)
				if k := v * 255; k != float32(int(k+0.5)) {
					t.Fatalf("X[%d] = %v is not a multiple of 1/255", i, v)
				}
			}
			if lo != 0 || hi != 1 {
				t.Errorf("pixels span [%v, %v]; want [0, 1]", lo, hi)
			}
		})
	}
}

// BenchmarkFashionMNIST measures loading the training split.
func BenchmarkFashionMNIST(b *testing.B) {
	if _, err := os.Stat(FashionMNISTDir); errors.Is(err, fs.ErrNotExist) {
		b.Skipf("%s is missing: `make deps` installs Debian's dataset-fashion-mnist", FashionMNISTDir)
	}
	for b.Loop() {
		if _, err := FashionMNIST("", "train"); err != nil {
			b.Fatal(err)
		}
	}
}
