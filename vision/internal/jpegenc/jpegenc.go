//go:build !nogocv

// Package jpegenc writes JPEGs that Go's image/jpeg cannot, with libjpeg,
// for vision's tests: CMYK (Adobe) JPEGs, which OpenCV decodes and the
// direct decoder leaves to it.
package jpegenc

/*
#cgo pkg-config: libjpeg
#include <stdio.h>
#include <stdlib.h>
#include <jpeglib.h>

// fi_cmyk compresses w×h CMYK pixels (4 bytes each) at quality q into a
// malloc'ed buffer (*out, *outlen); libjpeg's default error handler
// exits the process, which suits a test helper given valid arguments.
static void fi_cmyk(const unsigned char *pix, int w, int h, int q,
		unsigned char **out, unsigned long *outlen) {
	struct jpeg_compress_struct c;
	struct jpeg_error_mgr e;
	c.err = jpeg_std_error(&e);
	jpeg_create_compress(&c);
	*out = NULL;
	*outlen = 0;
	jpeg_mem_dest(&c, out, outlen);
	c.image_width = w;
	c.image_height = h;
	c.input_components = 4;
	c.in_color_space = JCS_CMYK;
	jpeg_set_defaults(&c);
	jpeg_set_quality(&c, q, TRUE);
	jpeg_start_compress(&c, TRUE);
	while (c.next_scanline < c.image_height) {
		JSAMPROW row = (JSAMPROW)(pix + (size_t)c.next_scanline * w * 4);
		jpeg_write_scanlines(&c, &row, 1);
	}
	jpeg_finish_compress(&c);
	jpeg_destroy_compress(&c);
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// CMYK encodes w×h pixels of 4 bytes (C, M, Y, K; Adobe's inverted
// convention, as Photoshop writes them) as a JPEG.
func CMYK(pix []byte, w, h, quality int) ([]byte, error) {
	if w <= 0 || h <= 0 || len(pix) != w*h*4 {
		return nil, fmt.Errorf("jpegenc: %d bytes for %dx%d CMYK", len(pix), w, h)
	}
	var out *C.uchar
	var n C.ulong
	C.fi_cmyk((*C.uchar)(unsafe.Pointer(&pix[0])), C.int(w), C.int(h), C.int(quality), &out, &n)
	defer C.free(unsafe.Pointer(out))
	return C.GoBytes(unsafe.Pointer(out), C.int(n)), nil
}
