package dtype

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

// encodeHalf's fast path gives FromFloat32's bits for every float32 in
// and around the normal float16 range: each exponent from 2^-16 to 2^17
// with both signs and random fractions, plus the edges of the fast
// path's range and the ties.
func TestEncodeHalfMatchesFromFloat32(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var vals []float32
	for e := uint32(127 - 16); e <= 127+17; e++ {
		for range 2000 {
			bits := e<<23 | rng.Uint32N(1<<23)
			vals = append(vals, math.Float32frombits(bits), -math.Float32frombits(bits))
		}
		// Exact ties at this exponent: the 13 dropped bits are 0x1000.
		for _, frac := range []uint32{0x1000, 0x3000, 0x7fe000 | 0x1000, 0x7ff000} {
			vals = append(vals, math.Float32frombits(e<<23|frac))
		}
	}
	for _, bits := range []uint32{0x38800000, 0x38800000 - 1, 0x477fe000, 0x477fe000 + 1, 0x477fefff, 0x477ff000, 0x7f800000, 0x7fc00000, 0, 1} {
		vals = append(vals, math.Float32frombits(bits), -math.Float32frombits(bits))
	}
	dst := make([]byte, 2*len(vals))
	Encode("FP16", dst, vals)
	for i, v := range vals {
		got, want := binary.LittleEndian.Uint16(dst[2*i:]), FromFloat32(v)
		if got != want && !(math.IsNaN(float64(v)) && got&0x7c00 == 0x7c00 && got&0x3ff != 0) {
			t.Fatalf("Encode FP16 of %g (%#08x) = %#04x, FromFloat32 %#04x", v, math.Float32bits(v), got, want)
		}
	}
}

func TestEncode(t *testing.T) {
	src := []float32{0, 0.4, 0.5, 1.49, 254.5, 255, 300, -3, float32(math.NaN()), 1, -2.5, 65504}
	tests := []struct {
		name string
		want []byte
	}{
		{"UINT8", []byte{0, 0, 1, 1, 255, 255, 255, 0, 0, 1, 0, 255}},
		{"FP16", nil}, // checked against FromFloat32 below
		{"FP32", nil}, // checked against the bits below
	}
	for _, tt := range tests {
		dst := make([]byte, Size(tt.name)*len(src))
		Encode(tt.name, dst, src)
		for i, v := range src {
			switch tt.name {
			case "UINT8":
				if dst[i] != tt.want[i] {
					t.Errorf("UINT8 of %v = %d, want %d", v, dst[i], tt.want[i])
				}
			case "FP16":
				if got := binary.LittleEndian.Uint16(dst[2*i:]); got != FromFloat32(v) {
					t.Errorf("FP16 of %v = %#04x, want %#04x", v, got, FromFloat32(v))
				}
			case "FP32":
				if got := binary.LittleEndian.Uint32(dst[4*i:]); got != math.Float32bits(v) {
					t.Errorf("FP32 of %v = %#08x", v, got)
				}
			}
		}
	}
	if Size("INT64") != 0 || Size("FP16") != 2 {
		t.Error("Size is wrong")
	}
}

func TestCheck(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	tests := []struct {
		dt   string
		src  []float32
		want int
	}{
		{"FP16", []float32{0, -65504, 65504, 1e-9}, -1},
		{"FP16", []float32{0, 65505}, 1},
		{"FP16", []float32{-70000}, 0},
		{"FP16", []float32{1, nan}, 1},
		{"FP16", []float32{inf}, 0},
		{"UINT8", []float32{0, 1, 255, 17}, -1},
		{"UINT8", []float32{0, 1.5}, 1},
		{"UINT8", []float32{256}, 0},
		{"UINT8", []float32{2, -1}, 1},
		{"UINT8", []float32{nan}, 0},
		{"FP32", []float32{nan, inf}, -1}, // FP32 holds anything; finiteness is checked elsewhere
	}
	for _, tt := range tests {
		if got := Check(tt.dt, tt.src); got != tt.want {
			t.Errorf("Check(%s, %v) = %d, want %d", tt.dt, tt.src, got, tt.want)
		}
	}
}

func TestWidenAndCheckHalf(t *testing.T) {
	src := []byte{0x00, 0x3c, 0x00, 0xc0, 0x00, 0x7c, 0x01, 0x00}
	dst := make([]float32, 4)
	Widen(dst, src)
	if dst[0] != 1 || dst[1] != -2 || !math.IsInf(float64(dst[2]), 1) || dst[3] != 0x1p-24 {
		t.Errorf("Widen = %v", dst)
	}
	if got := CheckHalf(src); got != 2 {
		t.Errorf("CheckHalf = %d, want 2 (the infinity)", got)
	}
	if got := CheckHalf(src[:4]); got != -1 {
		t.Errorf("CheckHalf of finite values = %d", got)
	}
	if got := CheckHalf([]byte{0x00, 0x3c, 0x01, 0xfe}); got != 1 {
		t.Errorf("CheckHalf of a NaN = %d, want 1", got)
	}
}

func BenchmarkEncode(b *testing.B) {
	src := make([]float32, 3*224*224)
	for i := range src {
		src[i] = float32(math.Sin(float64(i))) * 2.5
	}
	dst := make([]byte, 2*len(src))
	b.Run("FP16", func(b *testing.B) {
		b.SetBytes(int64(4 * len(src)))
		for b.Loop() {
			Encode("FP16", dst, src)
		}
	})
	b.Run("FP16-per-element", func(b *testing.B) {
		b.SetBytes(int64(4 * len(src)))
		for b.Loop() {
			for i, v := range src {
				binary.LittleEndian.PutUint16(dst[2*i:], FromFloat32(v))
			}
		}
	})
	b.Run("UINT8", func(b *testing.B) {
		b.SetBytes(int64(4 * len(src)))
		for b.Loop() {
			Encode("UINT8", dst, src)
		}
	})
}
