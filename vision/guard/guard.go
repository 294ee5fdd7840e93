// Package guard inspects untrusted image bytes before any native decoder
// sees them. It is pure Go (no cgo) and never decodes pixels: it reads the
// image header to learn the format and dimensions, refuses images whose
// pixel count is over a limit, checks that JPEG and PNG streams are
// complete, and refuses JPEGs of more scans than any encoder writes
// (MaxJPEGScans). JPEGOrientation reads a JPEG's EXIF orientation.
//
// Why this exists: OpenCV aborts the whole process (an uncaught C++
// exception crossing cgo) on a tiny PNG whose header claims 40000×40000
// pixels, and it returns a grey-filled image with no error for a truncated
// JPEG. Both are cheap to detect here.
package guard

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"io"
	"math"
	"strconv"

	// Formats whose headers Check understands.
	_ "image/gif"
	_ "image/jpeg"
	_ "image/png"

	_ "golang.org/x/image/bmp"
	_ "golang.org/x/image/tiff"
	_ "golang.org/x/image/webp"
)

// Sentinel errors. Check wraps exactly one of them (use errors.Is).
var (
	ErrEmpty    = errors.New("empty image")           // 0 bytes
	ErrBadImage = errors.New("not a decodable image") // garbage, unknown format, truncated, corrupt header
	ErrTooLarge = errors.New("image too large")       // over the pixel limit
)

// DefaultMaxPixels is the pixel limit used when Check is given 0.
const DefaultMaxPixels int64 = 40_000_000

// Info is what the header says about an image.
type Info struct {
	Format        string // "jpeg", "png", "gif", "bmp", "webp" or "tiff"
	Width, Height int
}

// Check validates data without decoding its pixels. maxPixels <= 0 means
// DefaultMaxPixels. On success it returns the header's format and
// dimensions; every error wraps ErrEmpty, ErrBadImage or ErrTooLarge.
//
// The pixel limit is enforced from the header alone, before anything
// proportional to the claimed size is allocated. JPEG and PNG streams are
// also checked for truncation by walking their segment/chunk structure:
// a JPEG must reach its EOI marker within MaxJPEGScans scans and a PNG
// its IEND chunk (bytes after either are allowed). Other formats get the
// header checks only.
func Check(data []byte, maxPixels int64) (Info, error) {
	if len(data) == 0 {
		return Info{}, ErrEmpty
	}
	if maxPixels <= 0 {
		maxPixels = DefaultMaxPixels
	}
	cfg, format, err := image.DecodeConfig(&peekReader{Reader: bytes.NewReader(data), data: data})
	if err != nil {
		if errors.Is(err, image.ErrFormat) {
			return Info{}, fmt.Errorf("%w: unknown format (%d bytes starting %s)", ErrBadImage, len(data), magic(data))
		}
		return Info{}, fmt.Errorf("%w: bad header: %v", ErrBadImage, err)
	}
	info := Info{Format: format, Width: cfg.Width, Height: cfg.Height}
	if info.Width <= 0 || info.Height <= 0 {
		return info, fmt.Errorf("%w: %s header has non-positive dimensions %dx%d", ErrBadImage, format, info.Width, info.Height)
	}
	// Overflow-free test of Width*Height > maxPixels.
	w, h := int64(info.Width), int64(info.Height)
	if w > maxPixels/h || w*h > maxPixels {
		mp := float64(w) * float64(h) / 1e6
		return info, fmt.Errorf("%w: %dx%d = %s MP exceeds the %s MP limit",
			ErrTooLarge, info.Width, info.Height, megapixels(mp), megapixels(float64(maxPixels)/1e6))
	}
	switch format {
	case "jpeg":
		err = jpegComplete(data)
	case "png":
		err = pngComplete(data)
	}
	if err != nil {
		return info, fmt.Errorf("%w: %v", ErrBadImage, err)
	}
	return info, nil
}

// peekReader gives image.DecodeConfig the Peek method it looks for, so
// that it does not wrap data in a 4 KiB bufio.Reader.
type peekReader struct {
	*bytes.Reader
	data []byte
}

func (r *peekReader) Peek(n int) ([]byte, error) {
	pos := len(r.data) - r.Len()
	if n < 0 {
		return nil, errors.New("guard: negative peek")
	}
	if pos+n > len(r.data) {
		return r.data[pos:], io.EOF
	}
	return r.data[pos : pos+n], nil
}

// megapixels formats v without trailing zeros: 1600, 40, 0.25.
func megapixels(v float64) string {
	switch {
	case v >= 10:
		v = math.Round(v)
	case v >= 0.01:
		v = math.Round(v*100) / 100
	}
	return strconv.FormatFloat(v, 'g', 6, 64)
}

// magic renders the first bytes of data for an error message.
func magic(data []byte) string {
	n := min(len(data), 8)
	return strconv.Quote(string(data[:n]))
}

// jpegComplete walks the marker structure of a JPEG stream from SOI to EOI.
//
// Simply looking for FF D9 near the end of the file is not enough: segment
// payloads are opaque and may contain any bytes, and an EXIF APP1 segment
// usually embeds a whole thumbnail JPEG with its own EOI. A photo truncated
// a few KiB after its header would then pass a "last 4 KiB contain FF D9"
// test. Instead, segments with a length are skipped by that length, and
// only inside entropy-coded scan data (where a 0xFF data byte is always
// followed by a stuffed 0x00, and RSTn markers may appear) is the stream
// searched for the next marker. The stream is complete once EOI is
// reached; anything after it is ignored, as decoders do.
func jpegComplete(d []byte) error {
	if len(d) < 2 || d[0] != 0xFF || d[1] != 0xD8 {
		return errors.New("JPEG does not start with SOI")
	}
	i, scans := 2, 0
	for {
		// Find the next marker. Normally d[i] is 0xFF already; decoders
		// tolerate extraneous bytes before a marker, and so does this.
		j := bytes.IndexByte(d[i:], 0xFF)
		if j < 0 {
			return truncatedJPEG(len(d), "between segments")
		}
		i += j
		for i < len(d) && d[i] == 0xFF { // fill bytes
			i++
		}
		if i >= len(d) {
			return truncatedJPEG(len(d), "inside a marker")
		}
		m := d[i]
		i++
		switch {
		case m == 0xD9: // EOI
			return nil
		case m == 0x00, m == 0x01, m == 0xD8, m >= 0xD0 && m <= 0xD7:
			// Stray stuffed byte, TEM, SOI or RSTn: no length follows.
			continue
		}
		if i+2 > len(d) {
			return truncatedJPEG(len(d), fmt.Sprintf("in the length of marker 0x%02X", m))
		}
		n := int(d[i])<<8 | int(d[i+1])
		if n < 2 {
			return fmt.Errorf("JPEG marker 0x%02X at offset %d has invalid length %d", m, i-2, n)
		}
		if i+n > len(d) {
			return truncatedJPEG(len(d), fmt.Sprintf("inside segment 0x%02X at offset %d (length %d)", m, i-2, n))
		}
		i += n
		if m != 0xDA { // not SOS
			continue
		}
		if scans++; scans > MaxJPEGScans {
			return fmt.Errorf("JPEG has more than %d scans", MaxJPEGScans)
		}
		// Entropy-coded data follows the SOS header; find the marker
		// that ends it.
		for {
			j := bytes.IndexByte(d[i:], 0xFF)
			if j < 0 || i+j+1 >= len(d) {
				return truncatedJPEG(len(d), "inside entropy-coded scan data")
			}
			i += j
			c := d[i+1]
			if c == 0x00 || c >= 0xD0 && c <= 0xD7 { // stuffed 0xFF or RSTn
				i += 2
				continue
			}
			if c == 0xFF { // fill byte before a marker
				i++
				continue
			}
			break // a real marker at d[i]; handled by the outer loop
		}
	}
}

// MaxJPEGScans bounds the scans of a JPEG. libjpeg decodes every scan of
// a progressive JPEG over the whole image, and tolerates scans that repeat
// or refine nothing, so a small file of many tiny scans is a CPU bomb: a
// 985 KB 640×480 JPEG of 80,000 twelve-byte scans took 13.5 s to decode
// (through OpenCV and through vision's own libjpeg call alike), and the
// cost grows with the pixel count. Encoders write 1 scan (baseline) or
// about 10 (libjpeg's and mozjpeg's progressive scripts); 64 leaves room
// for unusual scripts and bounds the work at 64 passes over the image.
const MaxJPEGScans = 64

func truncatedJPEG(size int, where string) error {
	return fmt.Errorf("truncated JPEG: no EOI marker (%d bytes, data ends %s)", size, where)
}

// pngComplete walks the chunk list of a PNG stream up to IEND, checking
// that every chunk fits in data and that some IDAT precedes IEND. CRCs are
// left to the decoder (a corrupt chunk makes it fail rather than return a
// partial image).
func pngComplete(d []byte) error {
	const sigLen = 8
	i := int64(sigLen)
	size := int64(len(d))
	sawIDAT := false
	for {
		if i+8 > size {
			return fmt.Errorf("truncated PNG: no IEND chunk (%d bytes, data ends between chunks)", size)
		}
		n := int64(binary.BigEndian.Uint32(d[i:]))
		typ := string(d[i+4 : i+8])
		if n > math.MaxInt32 {
			return fmt.Errorf("PNG chunk %q at offset %d has invalid length %d", typ, i, n)
		}
		end := i + 12 + n // length, type, data, CRC
		if end > size {
			return fmt.Errorf("truncated PNG: no IEND chunk (%d bytes, data ends inside chunk %q at offset %d of length %d)", size, typ, i, n)
		}
		switch typ {
		case "IDAT":
			sawIDAT = true
		case "IEND":
			if !sawIDAT {
				return errors.New("PNG has no IDAT chunk before IEND")
			}
			return nil
		}
		i = end
	}
}
