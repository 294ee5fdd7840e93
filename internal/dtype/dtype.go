// Package dtype converts tensor rows between float32, which preprocessing
// and the protocol's decoders produce, and the element types a model's
// input takes (Open Inference Protocol names: FP32, FP16, UINT8), in the
// little-endian layout ONNX Runtime and the protocol's binary form share.
// It is pure Go, so the server converts without native code and the
// runtime converts the same way.
package dtype

import (
	"encoding/binary"
	"math"
	"unsafe"
)

// Size is the bytes of one element of datatype name, or 0 for a datatype
// Encode does not produce.
func Size(name string) int {
	switch name {
	case "FP32":
		return 4
	case "FP16":
		return 2
	case "UINT8":
		return 1
	}
	return 0
}

// HostLittleEndian says the host stores numbers as the protocol sends
// them: a float32 slice's memory is then its FP32 bytes, and a uint16's
// its FP16 bytes.
var HostLittleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// Encode writes src as datatype name into dst (len(src)*Size(name)
// bytes). FP16 rounds to nearest, ties to even, and saturates at ±65504
// (FromFloat32); UINT8 rounds to nearest and clamps to 0..255, NaN
// becoming 0. Callers that must refuse values these change use Check
// first.
func Encode(name string, dst []byte, src []float32) {
	switch name {
	case "FP32":
		if HostLittleEndian {
			copy(dst, Bytes(src))
			return
		}
		for i, v := range src {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
	case "FP16":
		encodeHalf(dst[:2*len(src)], src)
	case "UINT8":
		for i, v := range src {
			dst[i] = toUint8(v)
		}
	default:
		panic("dtype: cannot encode " + name)
	}
}

// encodeHalf is Encode's FP16 loop. Values in the normal float16 range
// (2^-14 ≤ |v| ≤ 65504), which is nearly all of any image tensor, round
// with one add and shift; the rest go through FromFloat32. 3.6× the
// per-element call here (BenchmarkEncode).
func encodeHalf(dst []byte, src []float32) {
	for i, v := range src {
		b := math.Float32bits(v)
		abs := b &^ (1 << 31)
		var h uint16
		if abs-0x38800000 <= 0x477fe000-0x38800000 {
			// Rebias the exponent and round the 13 dropped bits to
			// nearest, ties to even; a carry out of the fraction rounds
			// into the exponent, as it should. 0x477fe000 is 65504, and
			// the largest value below it that rounds up still gives
			// 0x7bff.
			r := abs - 0x38000000 + 0xfff + (abs>>13)&1
			h = uint16(b>>16)&0x8000 | uint16(r>>13)
		} else {
			h = FromFloat32(v)
		}
		binary.LittleEndian.PutUint16(dst[2*i:], h)
	}
}

func toUint8(v float32) uint8 {
	switch {
	case v >= 255:
		return 255
	case v > 0:
		return uint8(v + 0.5)
	}
	return 0 // negative, zero or NaN
}

// Check returns the index of the first element of src that datatype name
// cannot hold as it is: for FP16 a value beyond ±65504 (or not finite);
// for UINT8 one that is not a whole number in 0..255. -1 when all fit.
// FP16's rounding of in-range values is not a misfit: it is the
// datatype's precision.
func Check(name string, src []float32) int {
	switch name {
	case "FP16":
		for i, v := range src {
			if !(v <= MaxHalf && v >= -MaxHalf) {
				return i
			}
		}
	case "UINT8":
		for i, v := range src {
			if !(v >= 0 && v <= 255 && v == float32(int32(v))) {
				return i
			}
		}
	}
	return -1
}

// Widen converts n FP16 values in src to float32 in dst.
func Widen(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = ToFloat32(binary.LittleEndian.Uint16(src[2*i:]))
	}
}

// CheckHalf returns the index of the first FP16 value in src (little
// endian) that is not finite, or -1.
func CheckHalf(src []byte) int {
	for i := 0; i+2 <= len(src); i += 2 {
		if binary.LittleEndian.Uint16(src[i:])&0x7c00 == 0x7c00 {
			return i / 2
		}
	}
	return -1
}

// Bytes is x's memory as bytes (the host's layout).
func Bytes(x []float32) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x))), 4*len(x))
}

// Float32s is b's memory as float32s (len(b)/4 of them). b must be
// 4-byte aligned, as Go allocations and pinned buffers are.
func Float32s(b []byte) []float32 {
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/4)
}
