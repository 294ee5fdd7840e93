package guard

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/image/bmp"
)

const testdata = "../testdata"

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testdata, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sentinel names the sentinel err wraps, or "" when none / nil.
func sentinel(err error) string {
	switch {
	case err == nil:
		return "nil"
	case errors.Is(err, ErrEmpty):
		return "ErrEmpty"
	case errors.Is(err, ErrBadImage):
		return "ErrBadImage"
	case errors.Is(err, ErrTooLarge):
		return "ErrTooLarge"
	}
	return "unwrapped: " + err.Error()
}

func TestCheckFixtures(t *testing.T) {
	tests := []struct {
		file    string
		want    string // sentinel name, "nil" for success
		format  string
		w, h    int
		errText string // substring of the error message
	}{
		{file: "baboon.jpg", want: "nil", format: "jpeg", w: 512, h: 512},
		{file: "fruits.jpg", want: "nil", format: "jpeg", w: 512, h: 480},
		{file: "butterfly.jpg", want: "nil", format: "jpeg", w: 493, h: 356},
		{file: "starry_night.jpg", want: "nil", format: "jpeg", w: 752, h: 600},
		{file: "ela_original.jpg", want: "nil", format: "jpeg", w: 902, h: 770},
		{file: "Blender_Suzanne1.jpg", want: "nil", format: "jpeg", w: 640, h: 480},
		{file: "smarties.png", want: "nil", format: "png", w: 413, h: 356},

		{file: "bomb.png", want: "ErrTooLarge", format: "png", w: 40000, h: 40000,
			errText: "image too large: 40000x40000 = 1600 MP exceeds the 40 MP limit"},
		{file: "bomb.jpg", want: "ErrTooLarge", format: "jpeg", w: 65000, h: 65000,
			errText: "65000x65000 = 4225 MP exceeds the 40 MP limit"},
		{file: "truncated.jpg", want: "ErrBadImage", format: "jpeg", w: 512, h: 512,
			errText: "truncated JPEG: no EOI marker"},
		{file: "truncated_thumb.jpg", want: "ErrBadImage", format: "jpeg", w: 902, h: 770,
			errText: "truncated JPEG: no EOI marker"},
		{file: "truncated.png", want: "ErrBadImage", format: "png", w: 413, h: 356,
			errText: "truncated PNG: no IEND chunk"},
		{file: "garbage.bin", want: "ErrBadImage", errText: "unknown format"},
		{file: "text.txt", want: "ErrBadImage", errText: "unknown format"},
		{file: "empty.jpg", want: "ErrEmpty", errText: "empty image"},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			info, err := Check(fixture(t, tc.file), 0)
			if got := sentinel(err); got != tc.want {
				t.Fatalf("Check(%s) error = %v (%s), want %s", tc.file, err, got, tc.want)
			}
			if err != nil && !strings.Contains(err.Error(), tc.errText) {
				t.Errorf("error %q does not contain %q", err, tc.errText)
			}
			want := Info{Format: tc.format, Width: tc.w, Height: tc.h}
			if info != want {
				t.Errorf("Info = %+v, want %+v", info, want)
			}
		})
	}
}

// The walker must not be fooled by the EXIF thumbnail's EOI, which lies in
// the last 4 KiB of truncated_thumb.jpg.
func TestTruncatedThumbFixtureIsTricky(t *testing.T) {
	b := fixture(t, "truncated_thumb.jpg")
	tail := b[max(0, len(b)-4096):]
	if !bytes.Contains(tail, []byte{0xFF, 0xD9}) {
		t.Fatal("fixture no longer has an FF D9 in its last 4 KiB; regenerate it")
	}
}

func encodePNG(t *testing.T, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestCheckCrafted(t *testing.T) {
	photo := fixture(t, "butterfly.jpg") // 493x356
	smallPNG := encodePNG(t, image.NewGray(image.Rect(0, 0, 10, 20)))

	var gifBuf bytes.Buffer
	pal := image.NewPaletted(image.Rect(0, 0, 4, 4), color.Palette{color.Black, color.White})
	if err := gif.Encode(&gifBuf, pal, nil); err != nil {
		t.Fatal(err)
	}
	zeroGIF := bytes.Clone(gifBuf.Bytes())
	binary.LittleEndian.PutUint16(zeroGIF[6:], 0) // logical screen width

	var bmpBuf bytes.Buffer
	if err := bmp.Encode(&bmpBuf, image.NewRGBA(image.Rect(0, 0, 7, 3))); err != nil {
		t.Fatal(err)
	}

	// A PNG whose IEND is missing but whose other chunks are whole.
	noIEND := smallPNG[:len(smallPNG)-12]
	// A PNG with no IDAT: signature, IHDR, IEND.
	noIDAT := append(bytes.Clone(smallPNG[:33]), smallPNG[len(smallPNG)-12:]...)
	// IHDR claiming 0 width, CRC fixed so that only the value is wrong.
	zeroPNG := bytes.Clone(smallPNG)
	binary.BigEndian.PutUint32(zeroPNG[16:], 0)
	binary.BigEndian.PutUint32(zeroPNG[29:], crc32.ChecksumIEEE(zeroPNG[12:29]))

	tests := []struct {
		name      string
		data      []byte
		maxPixels int64
		want      string
		w, h      int
	}{
		{"jpeg with junk after EOI", append(bytes.Clone(photo), "trailing junk \xff\xd8\xff"...), 0, "nil", 493, 356},
		{"jpeg without last byte", photo[:len(photo)-1], 0, "ErrBadImage", 493, 356},
		{"jpeg without EOI", photo[:len(photo)-2], 0, "ErrBadImage", 493, 356},
		{"jpeg header only", photo[:700], 0, "ErrBadImage", 493, 356},
		{"jpeg SOI only", photo[:2], 0, "ErrBadImage", 0, 0},
		{"png with junk after IEND", append(bytes.Clone(smallPNG), 1, 2, 3), 0, "nil", 10, 20},
		{"png without IEND", noIEND, 0, "ErrBadImage", 10, 20},
		{"png without IDAT", noIDAT, 0, "ErrBadImage", 10, 20},
		{"png zero width", zeroPNG, 0, "ErrBadImage", 0, 0},
		{"png signature only", smallPNG[:8], 0, "ErrBadImage", 0, 0},
		{"gif", gifBuf.Bytes(), 0, "nil", 4, 4},
		{"gif zero width", zeroGIF, 0, "ErrBadImage", 0, 4},
		{"bmp", bmpBuf.Bytes(), 0, "nil", 7, 3},
		{"limit exactly met", photo, 493 * 356, "nil", 493, 356},
		{"limit exceeded by one pixel", photo, 493*356 - 1, "ErrTooLarge", 493, 356},
		{"negative limit means default", photo, -5, "nil", 493, 356},
		{"single byte", []byte{0xFF}, 0, "ErrBadImage", 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			info, err := Check(tc.data, tc.maxPixels)
			if got := sentinel(err); got != tc.want {
				t.Fatalf("error = %v (%s), want %s", err, got, tc.want)
			}
			if info.Width != tc.w || info.Height != tc.h {
				t.Errorf("dims = %dx%d, want %dx%d", info.Width, info.Height, tc.w, tc.h)
			}
		})
	}
}

// jpegComplete on hand-built marker streams.
func TestJPEGComplete(t *testing.T) {
	soi := "\xff\xd8"
	app := "\xff\xe1\x00\x08ab\xff\xd9cd" // payload hides an EOI
	sos := "\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00"
	tests := []struct {
		name, stream string
		ok           bool
	}{
		{"minimal", soi + "\xff\xd9", true},
		{"eoi inside segment payload is skipped", soi + app, false},
		{"segment then eoi", soi + app + "\xff\xd9", true},
		{"fill bytes before marker", soi + app + "\xff\xff\xff\xd9", true},
		{"scan data with stuffing and restarts", soi + sos + "\x12\xff\x00\x34\xff\xd0\x56\xff\xd7" + "\xff\xd9", true},
		{"scan data with fill bytes before eoi", soi + sos + "\x12\xff\xff\xd9", true},
		{"scan data cut after ff", soi + sos + "\x12\xff", false},
		{"scan data cut after stuffing", soi + sos + "\x12\xff\x00", false},
		{"scan data without eoi", soi + sos + "\x12\x34", false},
		{"progressive: second scan after DHT", soi + sos + "\x01\xff\xc4\x00\x03\x00" + sos + "\x02\xff\xd9", true},
		{"segment length past end", soi + "\xff\xdb\x00\x40\x00", false},
		{"segment length too small", soi + "\xff\xdb\x00\x01" + "\xff\xd9", false},
		{"cut inside length", soi + "\xff\xdb\x00", false},
		{"cut after ff", soi + "\xff", false},
		{"garbage between segments tolerated", soi + app + "xyz\xff\xd9", true},
		{"not SOI", "\xff\xd9", false},
		{"64 scans", soi + strings.Repeat(sos+"\x01", MaxJPEGScans) + "\xff\xd9", true},
		{"65 scans: a decoding bomb", soi + strings.Repeat(sos+"\x01", MaxJPEGScans+1) + "\xff\xd9", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := jpegComplete([]byte(tc.stream))
			if (err == nil) != tc.ok {
				t.Errorf("jpegComplete = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// A real progressive photo with an empty refinement scan repeated: the
// shape of a progressive-decoding bomb (see MaxJPEGScans). Check refuses
// it once it is over the scan limit; the photo itself (10 scans) passes.
func TestProgressiveScanBomb(t *testing.T) {
	photo, err := os.ReadFile(filepath.Join(testdata, "Blender_Suzanne1.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	// An AC refinement scan of one component that carries no data.
	refine := "\xff\xda\x00\x08\x01\x02\x01\x01\x3f\x10\x16\x07"
	eoi := bytes.LastIndex(photo, []byte{0xFF, 0xD9})
	for _, extra := range []int{0, MaxJPEGScans - 10, MaxJPEGScans - 9, 10000} {
		bomb := append(bytes.Clone(photo[:eoi]), strings.Repeat(refine, extra)+"\xff\xd9"...)
		_, err := Check(bomb, 0)
		if wantOK := 10+extra <= MaxJPEGScans; (err == nil) != wantOK {
			t.Errorf("%d scans: Check = %v, want ok=%v", 10+extra, err, wantOK)
		} else if err != nil && !errors.Is(err, ErrBadImage) {
			t.Errorf("%d scans: %v does not wrap ErrBadImage", 10+extra, err)
		}
	}
}

func TestMegapixels(t *testing.T) {
	tests := []struct {
		v    float64
		want string
	}{
		{1600, "1600"}, {40, "40"}, {4225, "4225"}, {12.4, "12"}, {0.25, "0.25"}, {0.0001, "0.0001"}, {1.005, "1"},
	}
	for _, tc := range tests {
		if got := megapixels(tc.v); got != tc.want {
			t.Errorf("megapixels(%v) = %q, want %q", tc.v, got, tc.want)
		}
	}
}

// FuzzCheck: Check and JPEGOrientation must not panic on any input, and
// their results must be consistent: success means positive dimensions
// within the limit (an orientation of 1-8), failure wraps exactly one
// sentinel.
func FuzzCheck(f *testing.F) {
	entries, err := os.ReadDir(testdata)
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() || strings.HasSuffix(e.Name(), ".go") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(testdata, e.Name()))
		if err != nil {
			f.Fatal(err)
		}
		// Large seeds make mutation slow; the head carries the headers.
		if len(b) > 16<<10 {
			f.Add(b[:16<<10])
			f.Add(append(b[:2048:2048], b[len(b)-2048:]...))
		} else {
			f.Add(b)
		}
	}
	const limit = 1 << 20
	f.Fuzz(func(t *testing.T, data []byte) {
		if o, ok := JPEGOrientation(data); ok && (o < 1 || o > 8) {
			t.Fatalf("JPEGOrientation = %d, true", o)
		}
		info, err := Check(data, limit)
		if err == nil {
			if info.Format == "" || info.Width <= 0 || info.Height <= 0 ||
				int64(info.Width)*int64(info.Height) > limit {
				t.Fatalf("accepted with bad info %+v", info)
			}
			return
		}
		n := 0
		for _, s := range []error{ErrEmpty, ErrBadImage, ErrTooLarge} {
			if errors.Is(err, s) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("error %v wraps %d sentinels", err, n)
		}
	})
}

func BenchmarkCheck(b *testing.B) {
	for _, name := range []string{"baboon.jpg", "smarties.png", "bomb.png"} {
		b.Run(name, func(b *testing.B) {
			data := fixture(b, name)
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				Check(data, 0)
			}
		})
	}
}
