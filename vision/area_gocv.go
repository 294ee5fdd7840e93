//go:build !nogocv

package vision

/*
// -O3 vectorises the row sums (Into on Suzanne 640×480: 3.45 → 3.12 ms on
// one core). It changes no result: no -ffast-math, and x86-64's baseline
// has no FMA to fuse the multiply-adds (TestAreaCropMatchesOpenCV). cgo
// applies it to all of this package's C, the small libjpeg glue too.
#cgo CFLAGS: -O3
#include <math.h>
#include <stdlib.h>
#ifdef __SSE__
#include <xmmintrin.h>
#endif

// fi_taps lists, for destination indices [d0, d1) of an area resize of n
// source pixels to out, the source pixels each reads and their weights:
// first[d-d0] is the index into src/w of destination d's first tap, and
// first[d1-d0] ends the last. The taps are OpenCV's INTER_AREA ones for a
// non-integer ratio, in its order, from the same double arithmetic (the
// scale is 1/(out/n), as cv::resize computes it), so the weighted sums
// below round to the same bytes. cap bounds the taps written.
static int fi_taps(int n, int out, int d0, int d1, int *first, int *src, float *w, int cap) {
	double scale = 1.0 / ((double)out / n);
	int k = 0;
	for (int d = d0; d < d1; d++) {
		first[d - d0] = k;
		double lo = d * scale, hi = lo + scale;
		double cell = scale < n - lo ? scale : n - lo;
		int a = (int)ceil(lo), b = (int)floor(hi);
		if (b > n - 1) b = n - 1;
		if (a > b) a = b;
		if (k + (b - a) + 2 > cap) return -1;
		if (a - lo > 1e-3) {
			src[k] = a - 1;
			w[k++] = (float)((a - lo) / cell);
		}
		for (int s = a; s < b; s++) {
			src[k] = s;
			w[k++] = (float)(1.0 / cell);
		}
		if (hi - b > 1e-3) {
			double part = hi - b < 1.0 ? hi - b : 1.0;
			if (part > cell) part = cell;
			src[k] = b;
			w[k++] = (float)(part / cell);
		}
	}
	first[d1 - d0] = k;
	return k;
}

static inline unsigned char fi_sat(float v) {
	// Round half to even, as cvRound: on x86 the same instruction it
	// uses, inline (lrintf was a library call per byte, 1.3 % of the
	// server's CPU on JPEGs).
#ifdef __SSE__
	int r = _mm_cvtss_si32(_mm_set_ss(v));
#else
	long r = lrintf(v);
#endif
	return r < 0 ? 0 : r > 255 ? 255 : (unsigned char)r;
}

// fi_hpass is one source row's horizontal pass across the window: each
// output pixel's taps summed in order, per channel, into buf. The channel
// counts are spelled out so the compiler keeps the sums in registers.
static void fi_hpass(const unsigned char *s, int cn, int cw, const int *first, const int *src, const float *w, float *buf) {
	if (cn == 3) {
		for (int dx = 0; dx < cw; dx++) {
			float b0 = 0.0f, b1 = 0.0f, b2 = 0.0f;
			for (int k = first[dx]; k < first[dx + 1]; k++) {
				const unsigned char *p = s + src[k] * 3;
				float a = w[k];
				b0 += p[0] * a;
				b1 += p[1] * a;
				b2 += p[2] * a;
			}
			buf[3 * dx] = b0;
			buf[3 * dx + 1] = b1;
			buf[3 * dx + 2] = b2;
		}
		return;
	}
	for (int dx = 0; dx < cw; dx++) {
		for (int c = 0; c < cn; c++) {
			float b = 0.0f;
			for (int k = first[dx]; k < first[dx + 1]; k++) b += s[src[k] * cn + c] * w[k];
			buf[dx * cn + c] = b;
		}
	}
}

// fi_area_crop writes into dst (rows of cw*cn bytes, packed) the window
// [x0, x0+cw) × [y0, y0+ch) of src (sh rows of sw pixels of cn bytes,
// step bytes apart) area-resized to tw × th: the bytes cv::resize with
// INTER_AREA gives at those pixels, computing only them. buf and sum hold
// cw*cn floats each. Returns 0, or -1 when the taps do not fit.
static int fi_area_crop(const unsigned char *src, int sw, int sh, int step, int cn,
		int tw, int th, int x0, int y0, int cw, int ch, unsigned char *dst,
		int *xfirst, int *xsrc, float *xw, int xcap,
		int *yfirst, int *ysrc, float *yw, int ycap, float *buf, float *sum) {
	if (fi_taps(sw, tw, x0, x0 + cw, xfirst, xsrc, xw, xcap) < 0 ||
			fi_taps(sh, th, y0, y0 + ch, yfirst, ysrc, yw, ycap) < 0) {
		return -1;
	}
	int row = cw * cn;
	int cached = -1; // the source row whose horizontal pass buf holds
	for (int dy = 0; dy < ch; dy++) {
		for (int j = yfirst[dy]; j < yfirst[dy + 1]; j++) {
			// A source row on the boundary of two output rows feeds both:
			// its pass is done once.
			if (ysrc[j] != cached) {
				cached = ysrc[j];
				fi_hpass(src + (size_t)cached * step, cn, cw, xfirst, xsrc, xw, buf);
			}
			float beta = yw[j];
			if (j == yfirst[dy]) {
				for (int i = 0; i < row; i++) sum[i] = 0.0f + beta * buf[i];
			} else {
				for (int i = 0; i < row; i++) sum[i] += beta * buf[i];
			}
		}
		unsigned char *d = dst + (size_t)dy * row;
		for (int i = 0; i < row; i++) d[i] = fi_sat(sum[i]);
	}
	return 0;
}
*/
import "C"

import (
	"fmt"
	"math"
	"sync"
	"unsafe"
)

// areaScratch is fi_area_crop's tables and rows, pooled: a 224 crop of
// a 4032×3024 photo needs about 4,000 taps an axis.
type areaScratch struct {
	xfirst, yfirst, xsrc, ysrc []C.int
	xw, yw, buf, sum           []C.float
}

var areaPool = sync.Pool{New: func() any { return new(areaScratch) }}

func growInts(s []C.int, n int) []C.int {
	if cap(s) < n {
		return make([]C.int, n)
	}
	return s[:n]
}

func growFloats(s []C.float, n int) []C.float {
	if cap(s) < n {
		return make([]C.float, n)
	}
	return s[:n]
}

// areaFast says whether cv::resize takes its integer-ratio area path for
// w×h to tw×th (both ratios whole numbers), whose rounding differs.
func areaFast(w, h, tw, th int) bool {
	sx, sy := 1/(float64(tw)/float64(w)), 1/(float64(th)/float64(h))
	return math.Abs(sx-math.Round(sx)) < 2.220446049250313e-16 && math.Abs(sy-math.Round(sy)) < 2.220446049250313e-16
}

// areaCrop writes into dst (ch rows of cw*cn bytes) the window [x0,x0+cw) ×
// [y0,y0+ch) of src (h rows of w pixels of cn bytes, step apart)
// area-resized to tw×th, byte for byte what cv::resize with INTER_AREA
// gives there for a non-integer ratio, without resizing the rest.
func areaCrop(src []byte, w, h, step, cn, tw, th, x0, y0, cw, ch int, dst []byte) error {
	if w <= 0 || h <= 0 || tw <= 0 || th <= 0 || tw > w || th > h || cn < 1 || cn > 4 || step < w*cn ||
		len(src) < (h-1)*step+w*cn || x0 < 0 || y0 < 0 || cw <= 0 || ch <= 0 || x0+cw > tw || y0+ch > th || len(dst) < cw*ch*cn {
		return fmt.Errorf("vision: area crop of %dx%d (%d channels, step %d, %d bytes) to %dx%d at %d,%d+%dx%d into %d bytes: bad geometry",
			w, h, cn, step, len(src), tw, th, x0, y0, cw, ch, len(dst))
	}
	sc := areaPool.Get().(*areaScratch)
	defer areaPool.Put(sc)
	// Taps per destination pixel are at most ceil(ratio)+1.
	xcap := cw * (w/tw + 3)
	ycap := ch * (h/th + 3)
	sc.xfirst, sc.yfirst = growInts(sc.xfirst, cw+1), growInts(sc.yfirst, ch+1)
	sc.xsrc, sc.ysrc = growInts(sc.xsrc, xcap), growInts(sc.ysrc, ycap)
	sc.xw, sc.yw = growFloats(sc.xw, xcap), growFloats(sc.yw, ycap)
	sc.buf, sc.sum = growFloats(sc.buf, cw*cn), growFloats(sc.sum, cw*cn)
	rc := C.fi_area_crop((*C.uchar)(unsafe.Pointer(&src[0])), C.int(w), C.int(h), C.int(step), C.int(cn),
		C.int(tw), C.int(th), C.int(x0), C.int(y0), C.int(cw), C.int(ch), (*C.uchar)(unsafe.Pointer(&dst[0])),
		&sc.xfirst[0], &sc.xsrc[0], &sc.xw[0], C.int(xcap),
		&sc.yfirst[0], &sc.ysrc[0], &sc.yw[0], C.int(ycap), &sc.buf[0], &sc.sum[0])
	if rc != 0 {
		return fmt.Errorf("vision: area crop of %dx%d to %dx%d: tap tables overflow", w, h, tw, th)
	}
	return nil
}
