//go:build !nogocv

package vision

/*
#cgo pkg-config: libjpeg
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <jpeglib.h>

// libjpeg reports fatal errors through error_exit, which must not return:
// longjmp back to fi_jpeg with the message. Warnings (corrupt but
// decodable data) are dropped, as OpenCV does, instead of being printed
// on stderr.
typedef struct {
	struct jpeg_error_mgr pub;
	jmp_buf jump;
	char msg[JMSG_LENGTH_MAX];
} fi_jpeg_err;

static void fi_jpeg_exit(j_common_ptr c) {
	fi_jpeg_err *e = (fi_jpeg_err *)c->err;
	(*c->err->format_message)(c, e->msg);
	longjmp(e->jump, 1);
}

static void fi_jpeg_quiet(j_common_ptr c) { (void)c; }

enum { FI_JPEG_OK = 0, FI_JPEG_UNSUPPORTED = 1, FI_JPEG_FAILED = 2 };

// fi_jpeg decodes a JPEG at 1/denom scale into dst (h rows of w pixels,
// step bytes apart; BGR, or one grey byte with gray), filling only rows
// [r0, r1) and, within them, at least columns [c0, c1): libjpeg skips the
// IDCT and colour conversion of the rest, and the entropy decoding of the
// rows after r1. Columns outside the range may be written too (libjpeg
// widens the range to whole blocks); other bytes are left as they were.
static int fi_jpeg(const unsigned char *data, unsigned long n, int denom, int gray,
		unsigned char *dst, int w, int h, size_t step,
		int r0, int r1, int c0, int c1, char *msg, size_t msglen) {
	struct jpeg_decompress_struct cinfo;
	fi_jpeg_err err;
	// An error before the first row is read leaves the image to OpenCV,
	// which decides for itself; one after it fails the image. volatile:
	// read after longjmp.
	volatile int status = FI_JPEG_UNSUPPORTED;

	memset(&cinfo, 0, sizeof cinfo);
	cinfo.err = jpeg_std_error(&err.pub);
	err.pub.error_exit = fi_jpeg_exit;
	err.pub.output_message = fi_jpeg_quiet;
	err.msg[0] = 0;
	if (setjmp(err.jump)) {
		snprintf(msg, msglen, "%s", err.msg);
		jpeg_destroy_decompress(&cinfo);
		return status;
	}
	jpeg_create_decompress(&cinfo);
	jpeg_mem_src(&cinfo, data, n);
	jpeg_read_header(&cinfo, TRUE);
	// CMYK and YCCK: libjpeg cannot convert them to BGR; OpenCV can.
	if (cinfo.jpeg_color_space != JCS_GRAYSCALE && cinfo.jpeg_color_space != JCS_YCbCr &&
			cinfo.jpeg_color_space != JCS_RGB) {
		snprintf(msg, msglen, "colour space %d", (int)cinfo.jpeg_color_space);
		jpeg_destroy_decompress(&cinfo);
		return FI_JPEG_UNSUPPORTED;
	}
	cinfo.scale_num = 1;
	cinfo.scale_denom = denom;
	cinfo.out_color_space = gray ? JCS_GRAYSCALE : JCS_EXT_BGR;
	jpeg_calc_output_dimensions(&cinfo);
	if ((int)cinfo.output_width != w || (int)cinfo.output_height != h) {
		snprintf(msg, msglen, "output is %ux%u, want %dx%d",
			cinfo.output_width, cinfo.output_height, w, h);
		jpeg_destroy_decompress(&cinfo);
		return FI_JPEG_UNSUPPORTED;
	}
	jpeg_start_decompress(&cinfo);
	status = FI_JPEG_FAILED;
	JDIMENSION x = 0, cw = cinfo.output_width;
	if (c0 > 0 || c1 < w) {
		x = c0;
		cw = c1 - c0;
		jpeg_crop_scanline(&cinfo, &x, &cw);
	}
	int ch = cinfo.output_components;
	if (r0 > 0 && jpeg_skip_scanlines(&cinfo, r0) != (JDIMENSION)r0) {
		snprintf(msg, msglen, "could not skip to row %d", r0);
		jpeg_destroy_decompress(&cinfo);
		return FI_JPEG_FAILED;
	}
	JSAMPROW rows[16];
	while ((int)cinfo.output_scanline < r1) {
		int k = 0;
		for (; k < 16 && (int)cinfo.output_scanline + k < r1; k++) {
			rows[k] = dst + (size_t)(cinfo.output_scanline + k) * step + (size_t)x * ch;
		}
		if (jpeg_read_scanlines(&cinfo, rows, k) == 0) {
			snprintf(msg, msglen, "no data at row %u", cinfo.output_scanline);
			jpeg_destroy_decompress(&cinfo);
			return FI_JPEG_FAILED;
		}
	}
	// The rows after r1 are not needed: stop without reading them.
	jpeg_abort_decompress(&cinfo);
	jpeg_destroy_decompress(&cinfo);
	return FI_JPEG_OK;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"unsafe"
)

// errJPEGUnsupported: the direct decoder leaves this JPEG to OpenCV.
var errJPEGUnsupported = errors.New("vision: JPEG not for the direct decoder")

// decodeJPEG runs fi_jpeg on data into pix (see fi_jpeg for the window).
func decodeJPEG(data []byte, denom int, gray bool, pix []byte, w, h, step int, r0, r1, c0, c1 int) error {
	ch := 3
	if gray {
		ch = 1
	}
	if len(data) == 0 || w <= 0 || h <= 0 || step < w*ch || len(pix) < (h-1)*step+w*ch ||
		r0 < 0 || r1 > h || r0 >= r1 || c0 < 0 || c1 > w || c0 >= c1 {
		return fmt.Errorf("vision: direct JPEG decode: bad window %d..%d × %d..%d of %dx%d", c0, c1, r0, r1, w, h)
	}
	var msg [200]C.char
	g := C.int(0)
	if gray {
		g = 1
	}
	rc := C.fi_jpeg((*C.uchar)(unsafe.Pointer(&data[0])), C.ulong(len(data)), C.int(denom), g,
		(*C.uchar)(unsafe.Pointer(&pix[0])), C.int(w), C.int(h), C.size_t(step),
		C.int(r0), C.int(r1), C.int(c0), C.int(c1), &msg[0], C.size_t(len(msg)))
	switch rc {
	case C.FI_JPEG_OK:
		return nil
	case C.FI_JPEG_UNSUPPORTED:
		return fmt.Errorf("%w: %s", errJPEGUnsupported, C.GoString(&msg[0]))
	}
	return fmt.Errorf("libjpeg: %s", C.GoString(&msg[0]))
}
