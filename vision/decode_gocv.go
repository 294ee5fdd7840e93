//go:build !nogocv

package vision

import (
	"fmt"
	"image"

	"gocv.io/x/gocv"

	"fastinfer/vision/guard"
)

// Decoder names the image decoder this binary was built with.
const Decoder = "opencv"

func (p *Preprocessor) decodeInto(data []byte, info guard.Info, dst []float32) error {
	flag := p.readFlag(info)
	p.decodes.Add(1)
	img, err := gocv.IMDecode(data, flag)
	if err != nil { // only for an empty buffer, which guard refused already
		return fmt.Errorf("vision: %w: %v", guard.ErrBadImage, err)
	}
	p.liveMats.Add(1)
	liveMats.Add(1)
	defer p.closeMat(&img)
	if img.Empty() {
		return fmt.Errorf("vision: %w: OpenCV could not decode this %s (%dx%d)", guard.ErrBadImage, info.Format, info.Width, info.Height)
	}
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
	src := img
	if tw != cols || th != rows {
		resized := gocv.NewMat()
		p.liveMats.Add(1)
		liveMats.Add(1)
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
	crop := p.spec.Crop
	x0, y0 := (tw-crop)/2, (th-crop)/2
	if len(pix) < (th-1)*stride+tw*ch || x0 < 0 || y0 < 0 {
		return fmt.Errorf("vision: resized Mat is %dx%d with %d bytes; cannot crop %d", src.Cols(), src.Rows(), len(pix), crop)
	}
	plane := crop * crop
	for c := range ch {
		lut := &p.lut[c]
		sc := p.srcChan[c]
		out := dst[c*plane : (c+1)*plane]
		for y := range crop {
			start := (y0+y)*stride + x0*ch + sc
			row := pix[start : start+(crop-1)*ch+1]
			o := out[y*crop : (y+1)*crop]
			for x := range o {
				o[x] = lut[row[x*ch]]
			}
		}
	}
	return nil
}

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
