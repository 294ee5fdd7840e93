package export

import (
	"fmt"
	"math"
)

// Forward runs n on batch images in plain Go and returns their logits,
// batch×classes in row-major order. x holds batch×InC×InH×InW floats (NCHW).
//
// It is the reference that Build's graph is tested against, and the
// trainer's second opinion on its own forward pass, so it is written for
// clarity, not speed: BatchNormalization is (x−mean)/√(var+eps)·gamma+beta,
// convolutions pad with zeros, MaxPool has kernel = stride = StemPool with
// no padding (the output size rounds down), and the global average pool is
// the mean over H×W. Sums are accumulated in float64.
//
// Forward panics if n is not valid (see Validate) or x has the wrong length:
// both are programming errors, and the signature has no room for an error.
func Forward(n *Net, x []float32, batch int) []float32 {
	if err := Validate(n); err != nil {
		panic(err.Error())
	}
	per := n.InC * n.InH * n.InW
	if batch < 0 || len(x) != batch*per {
		panic(fmt.Sprintf("export.Forward: %d input floats for a batch of %d; want %d×%d×%d per image",
			len(x), batch, n.InC, n.InH, n.InW))
	}
	classes := int(n.FCW.Dims[0])
	out := make([]float32, batch*classes)
	for i := range batch {
		img := act{shape{n.InC, n.InH, n.InW}, x[i*per : (i+1)*per]}
		forwardOne(n, img, out[i*classes:(i+1)*classes])
	}
	return out
}

// act is one image's activations, C×H×W.
type act struct {
	shape
	d []float32
}

func (a act) at(c, y, x int) float32 { return a.d[(c*a.h+y)*a.w+x] }

func forwardOne(n *Net, x act, logits []float32) {
	x = relu(convBN(x, &n.Stem))
	if n.StemPool > 0 {
		x = maxPool(x, n.StemPool)
	}
	for i := range n.Blocks {
		blk := &n.Blocks[i]
		y := convBN(relu(convBN(x, &blk.A)), &blk.B)
		short := x
		if blk.Shortcut != nil {
			short = convBN(x, blk.Shortcut)
		}
		for j := range y.d {
			y.d[j] += short.d[j]
		}
		x = relu(y)
	}
	// Global average pool, then the fully connected layer.
	feat := make([]float64, x.c)
	for c := range x.c {
		var s float64
		for _, v := range x.d[c*x.h*x.w : (c+1)*x.h*x.w] {
			s += float64(v)
		}
		feat[c] = float64(float32(s / float64(x.h*x.w)))
	}
	for k := range logits {
		s := float64(n.FCB[k])
		for c, f := range feat {
			s += float64(n.FCW.Data[k*x.c+c]) * f
		}
		logits[k] = float32(s)
	}
}

// convBN is a zero-padded convolution followed by inference-mode batch
// normalisation.
func convBN(in act, cb *ConvBN) act {
	d := cb.W.Dims
	cout, kh, kw := int(d[0]), int(d[2]), int(d[3])
	s, p := cb.Stride, cb.Pad
	out := act{shape: shape{
		c: cout,
		h: (in.h+2*p-kh)/s + 1,
		w: (in.w+2*p-kw)/s + 1,
	}}
	out.d = make([]float32, out.c*out.h*out.w)
	w := cb.W.Data
	for o := range cout {
		scale := float64(cb.Gamma[o]) / math.Sqrt(float64(cb.Var[o])+float64(cb.Eps))
		for oy := range out.h {
			for ox := range out.w {
				var sum float64
				for i := range in.c {
					for ky := range kh {
						iy := oy*s - p + ky
						if iy < 0 || iy >= in.h {
							continue
						}
						for kx := range kw {
							ix := ox*s - p + kx
							if ix < 0 || ix >= in.w {
								continue
							}
							sum += float64(w[((o*in.c+i)*kh+ky)*kw+kx]) * float64(in.at(i, iy, ix))
						}
					}
				}
				// The convolution's output is a float32 tensor in the
				// graph; round it before normalising, as ORT would.
				conv := float64(float32(sum))
				out.d[(o*out.h+oy)*out.w+ox] = float32((conv-float64(cb.Mean[o]))*scale + float64(cb.Beta[o]))
			}
		}
	}
	return out
}

// relu clamps negatives to zero in place.
func relu(a act) act {
	for i, v := range a.d {
		if v < 0 {
			a.d[i] = 0
		}
	}
	return a
}

// maxPool takes the maximum of each k×k window, stride k, no padding.
func maxPool(in act, k int) act {
	out := act{shape: shape{in.c, in.h / k, in.w / k}}
	out.d = make([]float32, out.c*out.h*out.w)
	for c := range out.c {
		for oy := range out.h {
			for ox := range out.w {
				m := float32(math.Inf(-1))
				for ky := range k {
					for kx := range k {
						m = max(m, in.at(c, oy*k+ky, ox*k+kx))
					}
				}
				out.d[(c*out.h+oy)*out.w+ox] = m
			}
		}
	}
	return out
}
