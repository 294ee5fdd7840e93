package dtype

import "math"

// MaxHalf is the largest finite float16 value, 0x7BFF.
const MaxHalf = 65504

// Rounding says what happened to a value on its way to float16 (for
// models/fp16's report).
type Rounding uint8

const (
	Fitted    Rounding = iota // rounded to nearest (or exact)
	Saturated                 // finite, beyond ±MaxHalf, stored as ±MaxHalf
	Flushed                   // nonzero, below half the smallest subnormal, stored as ±0
)

// FromFloat32 returns the IEEE 754 binary16 bits nearest to f, ties to
// even, with subnormals kept. Finite values beyond ±65504 saturate to
// ±65504 rather than becoming infinities: one infinite weight turns into
// NaN at the first multiplication by zero or subtraction of itself and
// spreads through every activation after it. Infinities stay infinite and
// NaNs stay NaN (quiet, sign and leading payload bits kept).
func FromFloat32(f float32) uint16 {
	h, _ := Half(f)
	return h
}

// Half is FromFloat32, also saying how the value fared.
func Half(f float32) (uint16, Rounding) {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	abs := b &^ (1 << 31)
	switch {
	case abs > 0x7f800000: // NaN: the quiet bit keeps it NaN once the low payload bits are cut
		return sign | 0x7e00 | uint16(abs>>13)&0x3ff, Fitted
	case abs == 0x7f800000:
		return sign | 0x7c00, Fitted
	case abs > math.Float32bits(MaxHalf):
		return sign | 0x7bff, Saturated
	case abs == 0:
		return sign, Fitted
	}
	exp := int(abs>>23) - 127
	sig := abs&0x7fffff | 0x800000 // float32 subnormals (below 2^-126) are flushed by the shift check below
	if exp >= -14 {
		// Normal half: drop 13 of the 23 fraction bits. A carry out of the
		// fraction rounds up into the exponent, which is what it should do;
		// it cannot reach infinity because abs ≤ MaxHalf.
		h := uint32(exp+15)<<10 | sig>>13&0x3ff
		if roundUp(sig, 13, h) {
			h++
		}
		return sign | uint16(h), Fitted
	}
	// Subnormal half: the value is k·2^-24 with k = sig·2^(exp-23+24).
	shift := uint(-exp - 1) // 14 for exp = -15
	if abs>>23 == 0 || shift > 24 {
		return sign, Flushed // below 2^-25, half the smallest subnormal
	}
	k := sig >> shift
	if roundUp(sig, shift, k) {
		k++ // k = 0x400 is the smallest normal, 0x0400, which is right
	}
	if k == 0 {
		return sign, Flushed
	}
	return sign | uint16(k), Fitted
}

// roundUp says whether dropping the low shift bits of sig, leaving kept,
// rounds up under round-to-nearest-even.
func roundUp(sig uint32, shift uint, kept uint32) bool {
	rem := sig & (1<<shift - 1)
	mid := uint32(1) << (shift - 1)
	return rem > mid || rem == mid && kept&1 == 1
}

// ToFloat32 returns the float32 value of the binary16 bits h (exact: every
// float16 is a float32).
func ToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h & 0x3ff)
	switch exp {
	case 0x1f: // infinity or NaN
		return math.Float32frombits(sign | 0x7f800000 | frac<<13)
	case 0: // zero or subnormal: frac·2^-24, exact in float32
		return math.Float32frombits(sign | math.Float32bits(float32(frac)*0x1p-24))
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | frac<<13)
}
