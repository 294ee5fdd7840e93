package dtype

import (
	"math"
	"sort"
	"testing"
)

func TestFP16HalfKnownValues(t *testing.T) {
	tests := []struct {
		name string
		in   float32
		want uint16
		how  Rounding
	}{
		{"one", 1, 0x3c00, Fitted},
		{"minus two", -2, 0xc000, Fitted},
		{"tenth", 0.1, 0x2e66, Fitted},
		{"third", 1.0 / 3, 0x3555, Fitted},
		{"max", 65504, 0x7bff, Fitted},
		{"minus max", -65504, 0xfbff, Fitted},
		{"just over max", 65505, 0x7bff, Saturated},
		{"70000", 70000, 0x7bff, Saturated},
		{"minus 1e9", -1e9, 0xfbff, Saturated},
		{"float32 max", math.MaxFloat32, 0x7bff, Saturated},
		{"zero", 0, 0x0000, Fitted},
		{"minus zero", float32(math.Copysign(0, -1)), 0x8000, Fitted},
		{"infinity", float32(math.Inf(1)), 0x7c00, Fitted},
		{"minus infinity", float32(math.Inf(-1)), 0xfc00, Fitted},
		{"smallest normal", 0x1p-14, 0x0400, Fitted},
		{"largest subnormal", 0x1p-14 - 0x1p-24, 0x03ff, Fitted},
		{"smallest subnormal", 0x1p-24, 0x0001, Fitted},
		{"minus smallest subnormal", -0x1p-24, 0x8001, Fitted},
		{"subnormal 3·2^-24", 3 * 0x1p-24, 0x0003, Fitted},
		// Ties go to the even neighbour.
		{"tie 1+2^-11 down", 1 + 0x1p-11, 0x3c00, Fitted},
		{"tie 1+3·2^-11 up", 1 + 3*0x1p-11, 0x3c02, Fitted},
		{"subnormal tie 1.5·2^-24 up", 1.5 * 0x1p-24, 0x0002, Fitted},
		{"subnormal tie 2.5·2^-24 down", 2.5 * 0x1p-24, 0x0002, Fitted},
		{"rounds up into the normals", 0x1p-14 - 0x1p-26, 0x0400, Fitted},
		{"rounds up to the next exponent", 2 - 0x1p-12, 0x4000, Fitted},
		// Half the smallest subnormal ties to the even zero; above it rounds up.
		{"2^-25", 0x1p-25, 0x0000, Flushed},
		{"just over 2^-25", 0x1p-25 * (1 + 0x1p-23), 0x0001, Fitted},
		{"1e-8", 1e-8, 0x0000, Flushed},
		{"minus 1e-8", -1e-8, 0x8000, Flushed},
		{"float32 subnormal", 0x1p-149, 0x0000, Flushed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, how := Half(tt.in)
			if got != tt.want || how != tt.how {
				t.Errorf("Half(%g) = %#04x, %d; want %#04x, %d", tt.in, got, how, tt.want, tt.how)
			}
			if FromFloat32(tt.in) != tt.want {
				t.Errorf("FromFloat32(%g) = %#04x, want %#04x", tt.in, FromFloat32(tt.in), tt.want)
			}
		})
	}
}

func TestFP16HalfNaN(t *testing.T) {
	for _, bits := range []uint32{0x7fc00000, 0xffc00000, 0x7f800001, 0x7fffffff, 0x7fa00000} {
		f := math.Float32frombits(bits)
		h := FromFloat32(f)
		if h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
			t.Errorf("FromFloat32(NaN %#08x) = %#04x, not a NaN", bits, h)
		}
		if h>>15 != uint16(bits>>31) {
			t.Errorf("FromFloat32(NaN %#08x) = %#04x lost the sign", bits, h)
		}
		if back := ToFloat32(h); !math.IsNaN(float64(back)) {
			t.Errorf("ToFloat32(%#04x) = %v, want NaN", h, back)
		}
	}
}

// Every float16 survives the trip through float32 and back.
func TestFP16HalfRoundTrip(t *testing.T) {
	for h := range 1 << 16 {
		f := ToFloat32(uint16(h))
		if h&0x7c00 == 0x7c00 && h&0x3ff != 0 {
			if !math.IsNaN(float64(f)) {
				t.Fatalf("ToFloat32(%#04x) = %v, want NaN", h, f)
			}
			continue
		}
		if got := FromFloat32(f); got != uint16(h) {
			t.Fatalf("FromFloat32(ToFloat32(%#04x) = %g) = %#04x", h, f, got)
		}
	}
}

// Against a brute-force reference: the midpoint between each pair of
// neighbouring float16 values goes to the one with the even bit pattern, and
// the float32 values either side of it go to the nearer one.
func TestFP16HalfNearestEven(t *testing.T) {
	for k := range uint16(0x7bff) {
		lo, hi := float64(ToFloat32(k)), float64(ToFloat32(k+1))
		mid := float32((lo + hi) / 2) // exact: 12 significant bits
		if float64(mid) != (lo+hi)/2 {
			t.Fatalf("midpoint of %#04x and %#04x is not a float32", k, k+1)
		}
		even := k
		if k&1 == 1 {
			even = k + 1
		}
		below := math.Nextafter32(mid, 0)
		above := math.Nextafter32(mid, math.MaxFloat32)
		for _, c := range []struct {
			in   float32
			want uint16
		}{{mid, even}, {below, k}, {above, k + 1}, {-mid, even | 0x8000}, {-above, (k + 1) | 0x8000}} {
			if got := FromFloat32(c.in); got != c.want {
				t.Fatalf("FromFloat32(%g) = %#04x, want %#04x (between %#04x and %#04x)", c.in, got, c.want, k, k+1)
			}
		}
	}
	// A spread of float32 values, checked against a search of all
	// non-negative finite float16 values (increasing with their bits).
	vals := make([]float64, 0x7c00)
	for h := range vals {
		vals[h] = float64(ToFloat32(uint16(h)))
	}
	for bits := uint32(0); bits <= math.Float32bits(MaxHalf); bits += 7919 {
		f := float64(math.Float32frombits(bits))
		i := sort.SearchFloat64s(vals, f) // vals[i-1] < f <= vals[i]
		want := uint16(i)
		if i > 0 && (f-vals[i-1] < vals[i]-f || f-vals[i-1] == vals[i]-f && (i-1)%2 == 0) {
			want = uint16(i - 1)
		}
		if got := FromFloat32(float32(f)); got != want {
			t.Fatalf("FromFloat32(%g) = %#04x, want %#04x", f, got, want)
		}
	}
}
