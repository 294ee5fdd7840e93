//go:build nogocv

package vision

import (
	"fmt"

	"fastinfer/internal/dtype"
	"fastinfer/vision/guard"
	"fastinfer/vision/reference"
)

// Decoder names the image decoder this binary was built with. A nogocv
// build has no OpenCV: it decodes with Go's image packages (vision/
// reference), several times slower and without reduced-size JPEG decode.
// It exists for machines without OpenCV's shared libraries that serve
// tensors, and for carrying a small binary to a GPU box to measure there.
const Decoder = "go (nogocv build)"

func (p *Preprocessor) decodeInto(data []byte, _ guard.Info, to out) error {
	p.decodes.Add(1)
	s := p.spec
	planes, err := reference.Preprocess(data, s.Resize, s.Crop, s.Color, s.Scale, s.Mean, s.Std)
	if err != nil {
		return fmt.Errorf("vision: %w: %w", guard.ErrBadImage, err)
	}
	dst := to.f32
	if dst == nil {
		dst = make([]float32, len(planes))
	}
	if ch := s.Channels(); s.Layout == LayoutNHWC && ch > 1 {
		plane := len(planes) / ch
		for i := range plane {
			for c := range ch {
				dst[i*ch+c] = planes[c*plane+i]
			}
		}
	} else {
		copy(dst, planes)
	}
	if to.f32 == nil {
		dtype.Encode(to.dt, to.b, dst)
	}
	return nil
}
