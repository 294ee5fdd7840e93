//go:build !nogocv

package vision

import (
	"errors"
	"fmt"
	"image"
	"math"
	"sync"

	"gocv.io/x/gocv"

	"fastinfer/vision/guard"
)

// Decoder names the image decoder this binary was built with.
const Decoder = "opencv"

func (p *Preprocessor) decodeInto(data []byte, info guard.Info, dst out) error {
	p.decodes.Add(1)
	if info.Format == "jpeg" && !p.noDirect {
		// EXIF-rotated photos go to OpenCV, which applies the rotation.
		if o, ok := guard.JPEGOrientation(data); ok && o == 1 {
			err := p.directJPEG(data, info, dst)
			if !errors.Is(err, errJPEGUnsupported) {
				return err
			}
		}
	}
	img, err := gocv.IMDecode(data, p.readFlag(info))
	if err != nil { // only for an empty buffer, which guard refused already
		return fmt.Errorf("vision: %w: %v", guard.ErrBadImage, err)
	}
	p.opened()
	defer p.closeMat(&img)
	if img.Empty() {
		return fmt.Errorf("vision: %w: OpenCV could not decode this %s (%dx%d)", guard.ErrBadImage, info.Format, info.Width, info.Height)
	}
	return p.resizeCrop(img, dst)
}

// directJPEG decodes a JPEG with libjpeg itself rather than through
// OpenCV's imdecode, for two savings (at Resize 256, crop 224, this
// folder's baboon.jpg takes 2.0 ms instead of 2.9, starry_night.jpg 4.7
// instead of 6.4; go test -bench Into ./vision):
//   - libjpeg writes BGR directly, where OpenCV 4.6 asks for RGB and swaps
//     it with a scalar loop (12 % of imdecode's time);
//   - rows and columns that cannot reach the centre crop are not
//     transformed, and rows below it not even entropy-decoded.
//
// The skipped pixels stay in the Mat as garbage, so the resize still sees
// the whole image's geometry and the crop's pixels come out exactly as
// from a full decode (TestDirectJPEGMatchesOpenCV). errJPEGUnsupported
// means the image is left to OpenCV (CMYK, or a header libjpeg refuses).
func (p *Preprocessor) directJPEG(data []byte, info guard.Info, dst out) error {
	d := 1
	if !p.noReduce {
		d = reduction(info.Width, info.Height, p.spec.Resize)
	}
	w, h := (info.Width+d-1)/d, (info.Height+d-1)/d
	gray := p.spec.Channels() == 1
	typ := gocv.MatTypeCV8UC3
	if gray {
		typ = gocv.MatTypeCV8UC1
	}
	img := gocv.NewMatWithSize(h, w, typ)
	p.opened()
	defer p.closeMat(&img)
	pix, err := img.DataPtrUint8()
	if err != nil {
		return fmt.Errorf("vision: %v", err)
	}
	tw, th := fitShorter(w, h, p.spec.Resize)
	c0, c1 := sourceSpan(w, tw, p.spec.Crop)
	r0, r1 := sourceSpan(h, th, p.spec.Crop)
	if err := decodeJPEG(data, d, gray, pix, w, h, img.Step(), r0, r1, c0, c1); err != nil {
		if errors.Is(err, errJPEGUnsupported) {
			return err
		}
		return fmt.Errorf("vision: %w: %v", guard.ErrBadImage, err)
	}
	p.directs.Add(1)
	return p.resizeCrop(img, dst)
}

// sourceSpan is the range of source pixels, along an axis of n, that the
// centre crop of a resize to out can read: the crop's footprint under an
// area resize, widened by two pixels for the taps of a bilinear one.
func sourceSpan(n, out, crop int) (lo, hi int) {
	o := (out - crop) / 2
	if out == n {
		return o, o + crop
	}
	lo = int(math.Floor(float64(o)*float64(n)/float64(out))) - 2
	hi = int(math.Ceil(float64(o+crop)*float64(n)/float64(out))) + 2
	return max(lo, 0), min(hi, n)
}

func (p *Preprocessor) opened() {
	p.liveMats.Add(1)
	liveMats.Add(1)
}

// resizeCrop resizes a decoded 8-bit Mat (BGR or grey) to Spec.Resize,
// crops its centre and writes the normalised tensor into dst.
func (p *Preprocessor) resizeCrop(img gocv.Mat, dst out) error {
	ch := p.spec.Channels()
	wantType := gocv.MatTypeCV8UC3
	if ch == 1 {
		wantType = gocv.MatTypeCV8UC1
	}
	if t := img.Type(); t != wantType {
		return fmt.Errorf("vision: OpenCV decoded a %v Mat, want %v", t, wantType)
	}

	// Geometry comes from the decoded Mat, so a reduced decode or an EXIF
	// rotation (which OpenCV applies) is accounted for.
	cols, rows := img.Cols(), img.Rows()
	tw, th := fitShorter(cols, rows, p.spec.Resize)
	crop := p.spec.Crop
	if tw <= cols && th <= rows && (tw != cols || th != rows) && !areaFast(cols, rows, tw, th) && !p.noCropArea {
		// A non-integer area downscale: resize only the crop's window,
		// to the bytes OpenCV would give there (areaCrop).
		pix, err := img.DataPtrUint8()
		if err != nil {
			return fmt.Errorf("vision: %v", err)
		}
		win := windowPool.Get().(*[]byte)
		defer windowPool.Put(win)
		if n := crop * crop * ch; cap(*win) < n {
			*win = make([]byte, n)
		}
		*win = (*win)[:crop*crop*ch]
		if err := areaCrop(pix, cols, rows, img.Step(), ch, tw, th, (tw-crop)/2, (th-crop)/2, crop, crop, *win); err != nil {
			return err
		}
		p.cropAreas.Add(1)
		p.normalize(dst, *win, crop*ch, crop)
		return nil
	}
	src := img
	if tw != cols || th != rows {
		resized := gocv.NewMat()
		p.opened()
		defer p.closeMat(&resized)
		interp := gocv.InterpolationArea
		if tw > cols {
			interp = gocv.InterpolationLinear
		}
		gocv.Resize(img, &resized, image.Pt(tw, th), 0, 0, interp)
		src = resized
	}
	pix, err := src.DataPtrUint8()
	if err != nil {
		return fmt.Errorf("vision: %v", err)
	}
	stride := src.Step()
	x0, y0 := (tw-crop)/2, (th-crop)/2
	if len(pix) < (th-1)*stride+tw*ch || x0 < 0 || y0 < 0 {
		return fmt.Errorf("vision: resized Mat is %dx%d with %d bytes; cannot crop %d", src.Cols(), src.Rows(), len(pix), crop)
	}
	p.normalize(dst, pix[y0*stride+x0*ch:], stride, crop)
	return nil
}

// windowPool holds areaCrop's output windows (crop×crop pixels).
var windowPool = sync.Pool{New: func() any { return new([]byte) }}

func (p *Preprocessor) closeMat(m *gocv.Mat) {
	m.Close()
	p.liveMats.Add(-1)
	liveMats.Add(-1)
}

// readFlag picks the IMDecode flag. For JPEG, libjpeg can decode at 1/2,
// 1/4 or 1/8 scale, skipping most of the IDCT and colour work; the
// result is (within rounding) the d×d box average of the full decode.
// See reduction for when it is used. Other formats are always decoded at
// full size: OpenCV implements their "reduced" modes as a full decode
// followed by a subsampling resize, which saves nothing and aliases.
func (p *Preprocessor) readFlag(info guard.Info) gocv.IMReadFlag {
	gray := p.spec.Color == "gray"
	full := gocv.IMReadColor
	if gray {
		full = gocv.IMReadGrayScale
	}
	if p.noReduce || info.Format != "jpeg" {
		return full
	}
	switch d := reduction(info.Width, info.Height, p.spec.Resize); {
	case d == 8 && gray:
		return gocv.IMReadReducedGrayscale8
	case d == 8:
		return gocv.IMReadReducedColor8
	case d == 4 && gray:
		return gocv.IMReadReducedGrayscale4
	case d == 4:
		return gocv.IMReadReducedColor4
	case d == 2 && gray:
		return gocv.IMReadReducedGrayscale2
	case d == 2:
		return gocv.IMReadReducedColor2
	}
	return full
}

// reduceGap is how much larger than Resize the shorter side of a
// reduced-size decode must stay. Box-averaging d×d blocks and then
// area-resizing is not the same as area-resizing directly: output pixels
// whose footprint cuts through a block take the whole block's average,
// which blurs. The effect shrinks as the remaining resize ratio grows.
// Measured on this folder's photos (mean |difference| from a full decode,
// ImageNet-normalised units, where 0.02 is about one grey level): a
// remaining ratio of ~1.2 gives 0.06-0.09, ~1.9 gives 0.02-0.035, 2.3-2.7
// gives 0.02-0.03 on the texture-heavy starry_night and under 0.01 on
// smoother photos. With a gap of 1 (reduce whenever the reduced side is
// still >= Resize) a 512×512 photo at Resize 256 would decode at 1/2 and
// land 0.045 from a full decode (0.063 for starry_night); with 2, images
// up to twice Resize decode fully, and a 4032×3024 photo at Resize 256
// decodes at 1/4 (1008×756). Pillow's Image.thumbnail makes the same
// trade with its reducing_gap=2.
const reduceGap = 2

// reduction returns the largest d of 8, 4, 2 such that a w×h JPEG decoded
// at 1/d scale keeps a shorter side of at least reduceGap*resize and d
// divides both w and h, else 1. Divisibility matters because libjpeg
// rounds w/d up: the last reduced pixel then averages a partial block
// (and encoder padding), which stretches the geometry by up to a reduced
// pixel in a direction that depends on the EXIF orientation OpenCV
// applies. Camera and video sizes (4032×3024, 4000×3000, 1920×1080,
// 640×480) are multiples of 8.
func reduction(w, h, resize int) int {
	short := min(w, h)
	for _, d := range []int{8, 4, 2} {
		if short/d >= reduceGap*resize && w%d == 0 && h%d == 0 {
			return d
		}
	}
	return 1
}
