// Package vision turns encoded images into normalised CHW (or HWC)
// tensors of float32, float16 or uint8 (IntoBytes) with OpenCV (gocv), and
// libjpeg directly for most JPEGs (see directJPEG). It is the only cgo in
// this tree's image path.
//
// Every input first goes through guard.Check, which refuses empty,
// undecodable, truncated and oversized images before OpenCV sees a byte
// (OpenCV aborts the process on some of them, and silently returns a grey
// image for others); images whose resized size would be over the pixel
// limit are refused too. The pipeline is then:
//
//	decode (reduced-size JPEG decode when the image is much larger than needed;
//	  JPEGs without an EXIF rotation skip what the crop cannot reach)
//	→ resize the shorter side to Spec.Resize (area when shrinking, bilinear when enlarging)
//	→ centre crop Spec.Crop×Spec.Crop
//	→ channel order (rgb, bgr or gray)
//	→ (v*Scale - Mean[c]) / Std[c], written in CHW order into the caller's slice
//	  (through a lookup table per channel, in the slice's datatype).
//
// Package vision/reference implements the same steps in pure Go for tests.
package vision

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync/atomic"
	"unsafe"

	"fastinfer/internal/dtype"
	"fastinfer/vision/guard"
)

// MaxSide bounds Spec.Resize and Spec.Crop.
const MaxSide = 16384

// liveMats counts OpenCV Mats made and not yet closed, process-wide.
var liveMats atomic.Int64

// LiveMats is how many OpenCV Mats are open now across every
// Preprocessor: 0 whenever no image is being decoded (a leak shows as
// growth).
func LiveMats() int64 { return liveMats.Load() }

// ErrDstLen is returned by Into when len(dst) != Spec.Len().
var ErrDstLen = errors.New("vision: destination has the wrong length")

// Spec describes the preprocessing a model expects.
type Spec struct {
	Resize    int       // shorter side after resize, before the crop; 0 = same as Crop
	Crop      int       // centre square crop size (output H=W=Crop); must be > 0
	Color     string    // "rgb" | "bgr" | "gray" ("" = rgb)
	Scale     float32   // applied first to 0..255 values (0 = 1/255)
	Mean, Std []float32 // per channel (len 1 or channel count; empty = 0 mean, 1 std)
	Layout    string    // LayoutNCHW (planes; "" means the same) or LayoutNHWC (interleaved)
}

// Tensor layouts (Spec.Layout). PyTorch exports take channel planes; models
// converted from TensorFlow usually take interleaved channels.
const (
	LayoutNCHW = "nchw"
	LayoutNHWC = "nhwc"
)

// Channels is 1 for gray, else 3.
func (s Spec) Channels() int {
	if s.Color == "gray" {
		return 1
	}
	return 3
}

// Len is the number of float32 values of one preprocessed image.
func (s Spec) Len() int { return s.Channels() * s.Crop * s.Crop }

// Validate reports the first problem with s, or nil.
func (s Spec) Validate() error {
	switch {
	case s.Crop <= 0:
		return fmt.Errorf("vision: Crop must be > 0, got %d", s.Crop)
	case s.Crop > MaxSide:
		return fmt.Errorf("vision: Crop %d is over the %d limit", s.Crop, MaxSide)
	case s.Resize < 0:
		return fmt.Errorf("vision: Resize must be >= 0, got %d", s.Resize)
	case s.Resize > MaxSide:
		return fmt.Errorf("vision: Resize %d is over the %d limit", s.Resize, MaxSide)
	case s.Resize != 0 && s.Resize < s.Crop:
		return fmt.Errorf("vision: Resize %d is smaller than Crop %d", s.Resize, s.Crop)
	}
	switch s.Color {
	case "", "rgb", "bgr", "gray":
	default:
		return fmt.Errorf("vision: Color must be rgb, bgr or gray, got %q", s.Color)
	}
	switch s.Layout {
	case "", LayoutNCHW, LayoutNHWC:
	default:
		return fmt.Errorf("vision: Layout must be nchw or nhwc, got %q", s.Layout)
	}
	if !finite(s.Scale) {
		return fmt.Errorf("vision: Scale must be finite, got %v", s.Scale)
	}
	ch := s.Channels()
	for _, v := range []struct {
		name string
		vals []float32
	}{{"Mean", s.Mean}, {"Std", s.Std}} {
		if n := len(v.vals); n != 0 && n != 1 && n != ch {
			return fmt.Errorf("vision: %s has %d values; want 0, 1 or %d for %s", v.name, n, ch, s.color())
		}
		for i, x := range v.vals {
			if !finite(x) {
				return fmt.Errorf("vision: %s[%d] must be finite, got %v", v.name, i, x)
			}
			if v.name == "Std" && x == 0 {
				return fmt.Errorf("vision: Std[%d] is 0", i)
			}
		}
	}
	return nil
}

func finite(x float32) bool { return !math.IsNaN(float64(x)) && !math.IsInf(float64(x), 0) }

func (s Spec) color() string {
	if s.Color == "" {
		return "rgb"
	}
	return s.Color
}

// withDefaults returns s with Resize, Color and Scale filled in and its
// slices copied.
func (s Spec) withDefaults() Spec {
	if s.Resize == 0 {
		s.Resize = s.Crop
	}
	s.Color = s.color()
	if s.Layout == "" {
		s.Layout = LayoutNCHW
	}
	if s.Scale == 0 {
		s.Scale = 1.0 / 255
	}
	s.Mean = slices.Clone(s.Mean)
	s.Std = slices.Clone(s.Std)
	return s
}

// Options are the resource limits of a Preprocessor.
type Options struct {
	// MaxPixels bounds both the header's Width*Height and the size of the
	// image after resizing (a 200000×1 image would become 51200000×256).
	MaxPixels     int64 // 0 = 40_000_000
	MaxConcurrent int   // bounded concurrent decodes; 0 = runtime.NumCPU()
}

// Preprocessor decodes and preprocesses images for one Spec. It is safe
// for concurrent use; at most Options.MaxConcurrent decodes run at once.
type Preprocessor struct {
	spec      Spec
	maxPixels int64
	sem       chan struct{}
	lut       [3][256]float32 // per output channel: byte value → normalised value
	lut16     [3][256]uint16  // lut's values as float16 (dtype.Encode's rounding)
	lut8      [3][256]uint8   // lut's values as UINT8 (rounded, clamped to 0..255)
	srcChan   [3]int          // per output channel: channel index in the decoded Mat

	// Instrumentation, read by tests.
	noReduce    bool         // always decode at full size
	noDirect    bool         // decode every JPEG with OpenCV's imdecode
	noCropArea  bool         // resize whole images with OpenCV, never only the crop
	cropAreas   atomic.Int64 // images resized by areaCrop
	liveMats    atomic.Int64 // Mats made and not yet closed
	decodes     atomic.Int64 // calls that reached a decoder
	directs     atomic.Int64 // JPEGs decoded by directJPEG
	inflight    atomic.Int64 // decodes running now
	maxInflight atomic.Int64 // high-water mark of inflight
}

// New validates spec and prepares a Preprocessor.
func New(spec Spec, opt Options) (*Preprocessor, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if opt.MaxPixels < 0 {
		return nil, fmt.Errorf("vision: MaxPixels must be >= 0, got %d", opt.MaxPixels)
	}
	if opt.MaxConcurrent < 0 {
		return nil, fmt.Errorf("vision: MaxConcurrent must be >= 0, got %d", opt.MaxConcurrent)
	}
	if opt.MaxPixels == 0 {
		opt.MaxPixels = guard.DefaultMaxPixels
	}
	if opt.MaxConcurrent == 0 {
		opt.MaxConcurrent = runtime.NumCPU()
	}
	s := spec.withDefaults()
	p := &Preprocessor{
		spec:      s,
		maxPixels: opt.MaxPixels,
		sem:       make(chan struct{}, opt.MaxConcurrent),
	}
	for c := range s.Channels() {
		mean, std := float32(0), float32(1)
		if len(s.Mean) > 0 {
			mean = s.Mean[min(c, len(s.Mean)-1)]
		}
		if len(s.Std) > 0 {
			std = s.Std[min(c, len(s.Std)-1)]
		}
		for v := range 256 {
			p.lut[c][v] = (float32(v)*s.Scale - mean) / std
		}
		var half [512]byte
		dtype.Encode("FP16", half[:], p.lut[c][:])
		for v := range 256 {
			p.lut16[c][v] = binary.LittleEndian.Uint16(half[2*v:])
		}
		dtype.Encode("UINT8", p.lut8[c][:], p.lut[c][:])
		p.srcChan[c] = c
		if s.Color == "rgb" { // OpenCV decodes to BGR
			p.srcChan[c] = 2 - c
		}
	}
	return p, nil
}

// Spec returns the preprocessor's spec with defaults filled in (Resize,
// Color and Scale are never zero).
func (p *Preprocessor) Spec() Spec {
	s := p.spec
	s.Mean = slices.Clone(s.Mean)
	s.Std = slices.Clone(s.Std)
	return s
}

// Into decodes data and writes the normalised float32 tensor (CHW, or HWC
// for LayoutNHWC) into dst,
// whose length must be Spec().Len(). Bad input yields errors wrapping
// guard.ErrEmpty, guard.ErrBadImage or guard.ErrTooLarge; a wrong dst
// length yields ErrDstLen. dst is written only when the error is nil.
// Info is the header's view of the image (dimensions before any EXIF
// rotation, which OpenCV applies when decoding).
func (p *Preprocessor) Into(data []byte, dst []float32) (guard.Info, error) {
	if want := p.spec.Len(); len(dst) != want {
		return guard.Info{}, fmt.Errorf("%w: len(dst) = %d, want %d", ErrDstLen, len(dst), want)
	}
	return p.into(data, out{f32: dst})
}

// IntoBytes is Into for a model whose input datatype is dt (FP32, FP16
// or UINT8): it writes the tensor's bytes into dst (Len()*dtype.Size(dt)
// of them), each value what dtype.Encode would make of Into's. FP16 and
// UINT8 are written directly, through lookup tables of that datatype.
// dst must be aligned to its element size, as every Go allocation of
// that size or more and every row of one is.
func (p *Preprocessor) IntoBytes(data []byte, dt string, dst []byte) (guard.Info, error) {
	switch dt {
	case "FP32", "FP16", "UINT8":
	default:
		return guard.Info{}, fmt.Errorf("vision: cannot write a %s tensor; FP32, FP16 or UINT8", dt)
	}
	size := dtype.Size(dt)
	if want := p.spec.Len() * size; len(dst) != want {
		return guard.Info{}, fmt.Errorf("%w: len(dst) = %d bytes, want %d for %s", ErrDstLen, len(dst), want, dt)
	}
	if size > 1 && uintptr(unsafe.Pointer(unsafe.SliceData(dst)))%uintptr(size) != 0 {
		return guard.Info{}, fmt.Errorf("vision: a %s destination must be %d-byte aligned", dt, size)
	}
	switch {
	case dt == "FP32":
		return p.into(data, out{f32: dtype.Float32s(dst)})
	case dt == "FP16" && !dtype.HostLittleEndian:
		// The half tables hold native uint16s; the wire wants little
		// endian. Convert after, as a big-endian host must.
		f := make([]float32, p.spec.Len())
		info, err := p.into(data, out{f32: f})
		if err == nil {
			dtype.Encode(dt, dst, f)
		}
		return info, err
	}
	return p.into(data, out{b: dst, dt: dt})
}

// into checks data and the limits, then decodes it into dst.
func (p *Preprocessor) into(data []byte, dst out) (guard.Info, error) {
	if len(data) > math.MaxInt32 { // gocv hands OpenCV the length as a C int
		return guard.Info{}, fmt.Errorf("vision: %w: %d bytes of encoded data", guard.ErrTooLarge, len(data))
	}
	info, err := guard.Check(data, p.maxPixels)
	if err != nil {
		return info, fmt.Errorf("vision: %w", err)
	}
	// A thin image is small, but scaling its shorter side up to Resize
	// multiplies its area: 20000×1 at Resize 256 would be 5120000×256.
	// The resized image is held to the same pixel limit.
	if tw, th := fitShorter(info.Width, info.Height, p.spec.Resize); int64(tw)*int64(th) > p.maxPixels {
		return info, fmt.Errorf("vision: %w: resizing %dx%d to a shorter side of %d gives %dx%d, over the %d pixel limit",
			guard.ErrTooLarge, info.Width, info.Height, p.spec.Resize, tw, th, p.maxPixels)
	}
	p.sem <- struct{}{}
	defer func() { <-p.sem }()
	n := p.inflight.Add(1)
	defer p.inflight.Add(-1)
	for m := p.maxInflight.Load(); n > m && !p.maxInflight.CompareAndSwap(m, n); m = p.maxInflight.Load() {
	}
	return info, p.decodeInto(data, info, dst)
}

// fitShorter scales w×h so that the shorter side becomes side, rounding
// the longer side to the nearest integer (halves up).
func fitShorter(w, h, side int) (int, int) {
	if w <= h {
		return side, roundDiv(int64(h)*int64(side), int64(w))
	}
	return roundDiv(int64(w)*int64(side), int64(h)), side
}

func roundDiv(a, b int64) int { return int((2*a + b) / (2 * b)) }

// out is where one preprocessed image goes: Len() values as float32
// (Into), or as the bytes of a model's input datatype (IntoBytes), written
// by lookup tables of that datatype so that no float32 tensor is made and
// converted after.
type out struct {
	f32 []float32 // FP32; else nil
	b   []byte    // FP16 or UINT8: Len()*Size(dt) bytes
	dt  string
}

// normalize writes the crop×crop pixels at the start of pix (8-bit, one
// or three interleaved channels, rows stride bytes apart) into dst in the
// spec's layout and dst's datatype, through the per-channel lookup tables.
func (p *Preprocessor) normalize(dst out, pix []byte, stride, crop int) {
	nhwc := p.spec.Layout == LayoutNHWC
	switch {
	case dst.f32 != nil:
		normalizeAs(dst.f32, &p.lut, p.srcChan, p.spec.Channels(), nhwc, pix, stride, crop)
	case dst.dt == "FP16":
		// The halves are written in place: IntoBytes has checked the
		// host is little-endian and b is 2-byte aligned.
		h := unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(dst.b))), len(dst.b)/2)
		normalizeAs(h, &p.lut16, p.srcChan, p.spec.Channels(), nhwc, pix, stride, crop)
	default:
		normalizeAs(dst.b, &p.lut8, p.srcChan, p.spec.Channels(), nhwc, pix, stride, crop)
	}
}

// normalizeAs is normalize for one element type. Three channels go in one
// pass over each row, each byte read once (the pixel's bytes at constant
// offsets, one bounds check a pixel): 54 µs for ImageNet's 224×224 crop
// into float32 against 64 for a strided pass per channel
// (BenchmarkNormalize). What is left is writing the tensor: 602 KB of
// float32, half that in FP16, a quarter in UINT8.
func normalizeAs[T float32 | uint16 | uint8](dst []T, lut *[3][256]T, srcChan [3]int, channels int, nhwc bool, pix []byte, stride, crop int) {
	plane := crop * crop
	if channels == 1 {
		l := &lut[0]
		for y := range crop {
			row := pix[y*stride : y*stride+crop]
			o := dst[y*crop : (y+1)*crop]
			for x := range o {
				o[x] = l[row[x]]
			}
		}
		return
	}
	if nhwc {
		// Interleaved, as decoded: each output pixel's channel c reads
		// source byte srcChan[c], which is 2-c (RGB from OpenCV's BGR) or
		// c. One loop for each, with constant indices: 56 µs for 224×224
		// (BenchmarkNormalize/nhwc), against 80 with srcChan read in the
		// loop.
		l0, l1, l2 := &lut[0], &lut[1], &lut[2]
		swap := srcChan[0] == 2
		for y := range crop {
			row := pix[y*stride : y*stride+3*crop]
			o := dst[3*y*crop : 3*(y+1)*crop]
			if swap {
				for x := range crop {
					px := row[3*x : 3*x+3 : 3*x+3]
					q := o[3*x : 3*x+3 : 3*x+3]
					q[0], q[1], q[2] = l0[px[2]], l1[px[1]], l2[px[0]]
				}
				continue
			}
			for x := range crop {
				px := row[3*x : 3*x+3 : 3*x+3]
				q := o[3*x : 3*x+3 : 3*x+3]
				q[0], q[1], q[2] = l0[px[0]], l1[px[1]], l2[px[2]]
			}
		}
		return
	}
	// By source byte: the plane and table each of a pixel's three bytes
	// feeds (BGR bytes to RGB planes swap 0 and 2).
	var planes [3][]T
	var luts [3]*[256]T
	for c := range 3 {
		planes[srcChan[c]] = dst[c*plane : (c+1)*plane]
		luts[srcChan[c]] = &lut[c]
	}
	l0, l1, l2 := luts[0], luts[1], luts[2]
	for y := range crop {
		row := pix[y*stride : y*stride+3*crop]
		o0 := planes[0][y*crop : (y+1)*crop]
		o1 := planes[1][y*crop : (y+1)*crop]
		o2 := planes[2][y*crop : (y+1)*crop]
		for x := range o0 {
			px := row[3*x : 3*x+3 : 3*x+3]
			o0[x], o1[x], o2[x] = l0[px[0]], l1[px[1]], l2[px[2]]
		}
	}
}
