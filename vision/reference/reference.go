// Package reference is a slow, pure-Go implementation of the preprocessing
// that package vision does with OpenCV, for checking it in tests. It must
// stay free of cgo, so it takes the spec's fields as plain parameters
// rather than a vision.Spec.
//
// The steps mirror vision's, written independently of OpenCV's code:
//
//   - guard.Check (the same refusals as vision), then a full image.Decode;
//   - colour: RGB without alpha (alpha is dropped, not composited, as OpenCV
//     does), or luma: the Y plane for JPEG, else round(0.299R+0.587G+0.114B);
//   - resize so the shorter side is resize (longer side rounded, halves
//     up): when shrinking, each output pixel is the area-weighted mean of
//     the source pixels its footprint covers (OpenCV's INTER_AREA); when
//     enlarging, bilinear interpolation with pixel centres at half-integer
//     coordinates and clamped borders (OpenCV's INTER_LINEAR). The result is
//     rounded to 8 bits, as OpenCV's is;
//   - centre crop (offsets rounded down), then (v*scale-mean[c])/std[c] in
//     float32, channel-planar (CHW).
//
// Known differences from vision: no reduced-size JPEG decode (vision may
// decode at 1/2..1/8 scale), no EXIF orientation (OpenCV applies it), and
// Go's JPEG decoder upsamples chroma by replication where libjpeg
// interpolates, so colour edges differ slightly.
package reference

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"math"

	"fastinfer/vision/guard"
)

// Preprocess decodes data and returns the normalised CHW tensor of
// len channels*crop*crop. resize 0 means crop; color "" means "rgb";
// scale 0 means 1/255; mean and std have 0, 1 or channels values.
func Preprocess(data []byte, resize, crop int, color string, scale float32, mean, std []float32) ([]float32, error) {
	if color == "" {
		color = "rgb"
	}
	if resize == 0 {
		resize = crop
	}
	if scale == 0 {
		scale = 1.0 / 255
	}
	ch := 3
	switch color {
	case "gray":
		ch = 1
	case "rgb", "bgr":
	default:
		return nil, fmt.Errorf("reference: unknown color %q", color)
	}
	if crop <= 0 || resize < crop {
		return nil, fmt.Errorf("reference: need 0 < crop <= resize, got crop %d resize %d", crop, resize)
	}
	if !okLen(len(mean), ch) || !okLen(len(std), ch) {
		return nil, fmt.Errorf("reference: mean/std need 0, 1 or %d values, got %d and %d", ch, len(mean), len(std))
	}
	if _, err := guard.Check(data, 0); err != nil {
		return nil, fmt.Errorf("reference: %w", err)
	}
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("reference: %w: %v", guard.ErrBadImage, err)
	}

	b := img.Bounds()
	tw, th := FitShorter(b.Dx(), b.Dy(), resize)
	if int64(tw)*int64(th) > guard.DefaultMaxPixels {
		return nil, fmt.Errorf("reference: %w: resized to %dx%d", guard.ErrTooLarge, tw, th)
	}
	planes, w, h := Planes(img, color == "gray")
	for i, pl := range planes {
		planes[i] = ResizePlane(pl, w, h, tw, th)
	}

	out := make([]float32, ch*crop*crop)
	x0, y0 := (tw-crop)/2, (th-crop)/2
	for c := range ch {
		src := planes[c] // R, G, B (or Y)
		if color == "bgr" {
			src = planes[2-c]
		}
		m, s := float32(0), float32(1)
		if len(mean) > 0 {
			m = mean[min(c, len(mean)-1)]
		}
		if len(std) > 0 {
			s = std[min(c, len(std)-1)]
		}
		for y := range crop {
			for x := range crop {
				v := src[(y0+y)*tw+x0+x]
				out[(c*crop+y)*crop+x] = (float32(v)*scale - m) / s
			}
		}
	}
	return out, nil
}

func okLen(n, ch int) bool { return n == 0 || n == 1 || n == ch }

// FitShorter returns the size of w×h scaled so that its shorter side is
// side, the longer side rounded to the nearest integer (halves up).
func FitShorter(w, h, side int) (int, int) {
	long, short := int64(max(w, h)), int64(min(w, h))
	// round(long*side/short) in integers: floor((2*long*side + short) / (2*short)).
	scaled := int((2*long*int64(side) + short) / (2 * short))
	if w <= h {
		return side, scaled
	}
	return scaled, side
}

// Planes converts img to 8-bit planes: [R, G, B], or [Y] when gray.
func Planes(img image.Image, gray bool) ([][]uint8, int, int) {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if gray {
		y := make([]uint8, w*h)
		switch m := img.(type) {
		case *image.YCbCr: // libjpeg hands over the luma plane as is
			for r := range h {
				copy(y[r*w:(r+1)*w], m.Y[r*m.YStride:])
			}
			return [][]uint8{y}, w, h
		case *image.Gray:
			for r := range h {
				copy(y[r*w:(r+1)*w], m.Pix[r*m.Stride:])
			}
			return [][]uint8{y}, w, h
		}
		rgb, _, _ := Planes(img, false)
		for i := range y {
			l := 0.299*float64(rgb[0][i]) + 0.587*float64(rgb[1][i]) + 0.114*float64(rgb[2][i])
			y[i] = uint8(min(255, math.Round(l)))
		}
		return [][]uint8{y}, w, h
	}

	r, g, bl := make([]uint8, w*h), make([]uint8, w*h), make([]uint8, w*h)
	if m, ok := img.(*image.YCbCr); ok {
		cb, cr := upsampleChroma(m)
		for y := range h {
			for x := range w {
				i := y*w + x
				r[i], g[i], bl[i] = color.YCbCrToRGB(m.Y[(y+b.Min.Y-m.Rect.Min.Y)*m.YStride+x+b.Min.X-m.Rect.Min.X], cb[i], cr[i])
			}
		}
		return [][]uint8{r, g, bl}, w, h
	}
	set := func(i int, c color.NRGBA) { r[i], g[i], bl[i] = c.R, c.G, c.B }
	i := 0
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			switch m := img.(type) {
			case *image.Gray:
				v := m.GrayAt(x, y).Y
				set(i, color.NRGBA{v, v, v, 255})
			case *image.NRGBA: // straight alpha: drop it, keep the colour
				set(i, m.NRGBAAt(x, y))
			case *image.RGBA:
				c := m.RGBAAt(x, y)
				set(i, color.NRGBA{c.R, c.G, c.B, 255})
			case *image.NRGBA64: // 16-bit: keep the high byte
				c := m.NRGBA64At(x, y)
				set(i, color.NRGBA{uint8(c.R >> 8), uint8(c.G >> 8), uint8(c.B >> 8), 255})
			case *image.Paletted:
				set(i, color.NRGBAModel.Convert(m.Palette[m.ColorIndexAt(x, y)]).(color.NRGBA))
			default:
				c := color.NRGBA64Model.Convert(img.At(x, y)).(color.NRGBA64)
				set(i, color.NRGBA{uint8(c.R >> 8), uint8(c.G >> 8), uint8(c.B >> 8), 255})
			}
			i++
		}
	}
	return [][]uint8{r, g, bl}, w, h
}

// upsampleChroma returns m's Cb and Cr planes at full resolution, w*h
// each. Where chroma is halved along an axis, it is interpolated the way
// libjpeg's default "fancy" upsampling does: a triangle filter, which is
// bilinear interpolation with chroma samples centred between the luma
// samples they cover (weights 3/4, 1/4). Other ratios replicate samples.
// image/jpeg's own YCbCr.At replicates, which differs visibly from what
// OpenCV (libjpeg) returns on saturated, high-frequency colour.
func upsampleChroma(m *image.YCbCr) (cb, cr []uint8) {
	w, h := m.Rect.Dx(), m.Rect.Dy()
	hf, vf := 1, 1
	switch m.SubsampleRatio {
	case image.YCbCrSubsampleRatio422:
		hf = 2
	case image.YCbCrSubsampleRatio420:
		hf, vf = 2, 2
	case image.YCbCrSubsampleRatio440:
		vf = 2
	case image.YCbCrSubsampleRatio411:
		hf = 4
	case image.YCbCrSubsampleRatio410:
		hf, vf = 4, 2
	}
	cw, ch := (w+hf-1)/hf, (h+vf-1)/vf
	planes := [2][]uint8{make([]uint8, cw*ch), make([]uint8, cw*ch)}
	for y := range ch {
		copy(planes[0][y*cw:(y+1)*cw], m.Cb[y*m.CStride:])
		copy(planes[1][y*cw:(y+1)*cw], m.Cr[y*m.CStride:])
	}
	var out [2][]uint8
	for k, pl := range planes {
		var up []uint8
		uw, uh := cw*hf, ch*vf
		if hf <= 2 && vf <= 2 {
			up = ResizePlane(pl, cw, ch, uw, uh)
		} else {
			up = make([]uint8, uw*uh)
			for y := range uh {
				for x := range uw {
					up[y*uw+x] = pl[(y/vf)*cw+x/hf]
				}
			}
		}
		out[k] = make([]uint8, w*h)
		for y := range h {
			copy(out[k][y*w:(y+1)*w], up[y*uw:])
		}
	}
	return out[0], out[1]
}

// tap is one source index and its weight.
type tap struct {
	i int
	w float64
}

// axisTaps returns, for each of n output positions, the source taps along
// one axis of length in: area weights when shrinking, bilinear otherwise.
func axisTaps(in, n int) [][]tap {
	taps := make([][]tap, n)
	scale := float64(in) / float64(n)
	for d := range n {
		if n == in {
			taps[d] = []tap{{d, 1}}
			continue
		}
		if n < in { // area: the footprint [d*scale, (d+1)*scale)
			lo, hi := float64(d)*scale, math.Min(float64(d+1)*scale, float64(in))
			var ts []tap
			sum := 0.0
			for s := int(math.Floor(lo)); s < in && float64(s) < hi; s++ {
				ov := math.Min(hi, float64(s+1)) - math.Max(lo, float64(s))
				if ov > 1e-9 {
					ts = append(ts, tap{s, ov})
					sum += ov
				}
			}
			for k := range ts {
				ts[k].w /= sum
			}
			taps[d] = ts
			continue
		}
		// bilinear: output centre d+0.5 maps to source (d+0.5)*scale.
		f := (float64(d)+0.5)*scale - 0.5
		s := int(math.Floor(f))
		a := f - float64(s)
		switch {
		case s < 0:
			s, a = 0, 0
		case s >= in-1:
			s, a = in-1, 0
		}
		if a == 0 {
			taps[d] = []tap{{s, 1}}
		} else {
			taps[d] = []tap{{s, 1 - a}, {s + 1, a}}
		}
	}
	return taps
}

// ResizePlane resamples one w×h 8-bit plane to tw×th (area when
// shrinking, bilinear when enlarging, per axis), rounding to 8 bits.
func ResizePlane(src []uint8, w, h, tw, th int) []uint8 {
	if w == tw && h == th {
		return src
	}
	xt, yt := axisTaps(w, tw), axisTaps(h, th)
	tmp := make([]float64, tw*h) // horizontal pass
	for y := range h {
		row := src[y*w : (y+1)*w]
		for x, ts := range xt {
			v := 0.0
			for _, t := range ts {
				v += t.w * float64(row[t.i])
			}
			tmp[y*tw+x] = v
		}
	}
	out := make([]uint8, tw*th)
	for y, ts := range yt {
		for x := range tw {
			v := 0.0
			for _, t := range ts {
				v += t.w * tmp[t.i*tw+x]
			}
			out[y*tw+x] = uint8(math.Max(0, math.Min(255, math.Round(v))))
		}
	}
	return out
}
