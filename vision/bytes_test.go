//go:build !nogocv

package vision

import (
	"bytes"
	"errors"
	"math"
	"testing"

	"fastinfer/internal/dtype"
)

// IntoBytes writes, for every datatype, layout, colour and path through
// the decoders (direct JPEG, OpenCV, the crop-only resize, PNG), exactly
// the bytes dtype.Encode makes of Into's float32 tensor.
func TestIntoBytes(t *testing.T) {
	pixels := Spec{Resize: 256, Crop: 224, Color: "rgb", Scale: 1, Layout: LayoutNHWC}
	specs := map[string]Spec{
		"imagenet": imagenet,
		"bgr-nhwc": {Resize: 256, Crop: 224, Color: "bgr", Mean: []float32{0.4, 0.5, 0.6}, Std: []float32{0.2, 0.3, 0.4}, Layout: LayoutNHWC},
		"gray28":   gray28,
		"pixels":   pixels,
		// Values beyond float16's range and below UINT8's, to reach
		// saturation and clamping.
		"extremes": {Resize: 64, Crop: 48, Color: "rgb", Scale: 1000, Mean: []float32{60000}, Std: []float32{0.5}},
	}
	for name, spec := range specs {
		for _, file := range []string{"baboon.jpg", "starry_night.jpg", "smarties.png"} {
			p := newP(t, spec, Options{})
			data := fixture(t, file)
			want := make([]float32, spec.Len())
			if _, err := p.Into(data, want); err != nil {
				t.Fatal(err)
			}
			for _, dt := range []string{"FP32", "FP16", "UINT8"} {
				t.Run(name+"/"+file+"/"+dt, func(t *testing.T) {
					enc := make([]byte, spec.Len()*dtype.Size(dt))
					dtype.Encode(dt, enc, want)
					got := make([]byte, len(enc))
					if _, err := p.IntoBytes(data, dt, got); err != nil {
						t.Fatal(err)
					}
					if i := firstDiff(got, enc); i >= 0 {
						t.Fatalf("byte %d: got %d, want %d (of %d)", i, got[i], enc[i], len(enc))
					}
					// The drift statistics read the same from the bytes,
					// where the datatype holds the values.
					tol := map[string]float64{"FP32": 0, "FP16": 2e-3, "UINT8": 0}[dt]
					if name == "extremes" || dt == "UINT8" && name != "pixels" {
						return
					}
					wb, wc := spec.Stats(want)
					gb, gc := spec.StatsBytes(dt, got)
					if math.Abs(gb-wb) > tol || math.Abs(gc-wc) > tol {
						t.Fatalf("StatsBytes = %v, %v; Stats = %v, %v", gb, gc, wb, wc)
					}
				})
			}
		}
	}
}

func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return len(a)
}

func TestIntoBytesRefusals(t *testing.T) {
	p := newP(t, gray28, Options{})
	data := fixture(t, "baboon.jpg")
	n := gray28.Len()
	buf := make([]byte, 2*n+2)
	for _, tc := range []struct {
		name string
		dt   string
		dst  []byte
		is   error
		want string
	}{
		{"INT64", "INT64", make([]byte, 8*n), nil, "cannot write a INT64 tensor"},
		{"FP64", "FP64", make([]byte, 8*n), nil, "cannot write a FP64 tensor"},
		{"short", "FP16", make([]byte, 2*n-2), ErrDstLen, ""},
		{"float32 length for FP16", "FP16", make([]byte, 4*n), ErrDstLen, ""},
		{"misaligned", "FP16", buf[1 : 2*n+1], nil, "2-byte aligned"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.IntoBytes(data, tc.dt, tc.dst)
			if err == nil || tc.is != nil && !errors.Is(err, tc.is) || tc.want != "" && !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
				t.Fatalf("IntoBytes = %v", err)
			}
		})
	}
}
