package guard

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// exifSegment builds an APP1 EXIF segment whose IFD0 holds the given
// entries (tag, type, count, value), in big- or little-endian TIFF.
func exifSegment(big bool, entries ...[4]uint32) []byte {
	type order interface {
		binary.ByteOrder
		binary.AppendByteOrder
	}
	var bo order = binary.LittleEndian
	tiff := []byte("II")
	if big {
		bo, tiff = binary.BigEndian, []byte("MM")
	}
	tiff = bo.AppendUint16(tiff, 42)
	tiff = bo.AppendUint32(tiff, 8)
	tiff = bo.AppendUint16(tiff, uint16(len(entries)))
	for _, e := range entries {
		tiff = bo.AppendUint16(tiff, uint16(e[0]))
		tiff = bo.AppendUint16(tiff, uint16(e[1]))
		tiff = bo.AppendUint32(tiff, e[2])
		tiff = bo.AppendUint16(tiff, uint16(e[3])) // a SHORT sits first
		tiff = append(tiff, 0, 0)
	}
	tiff = bo.AppendUint32(tiff, 0) // no IFD1
	payload := append([]byte("Exif\x00\x00"), tiff...)
	seg := []byte{0xFF, 0xE1}
	seg = binary.BigEndian.AppendUint16(seg, uint16(len(payload)+2))
	return append(seg, payload...)
}

// withSegments inserts segments after the SOI marker of jpeg.
func withSegments(jpeg []byte, segs ...[]byte) []byte {
	out := append([]byte{}, jpeg[:2]...)
	for _, s := range segs {
		out = append(out, s...)
	}
	return append(out, jpeg[2:]...)
}

func TestJPEGOrientation(t *testing.T) {
	photo, err := os.ReadFile(filepath.Join(testdata, "butterfly.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	camera, err := os.ReadFile(filepath.Join(testdata, "ela_original.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	orient := func(v uint32) [4]uint32 { return [4]uint32{0x0112, 3, 1, v} }
	other := [4]uint32{0x010F, 2, 4, 0} // Make, an ASCII tag before it
	truncated := exifSegment(true, orient(6))
	truncated = truncated[:len(truncated)-10]
	binary.BigEndian.PutUint16(truncated[2:], uint16(len(truncated)-2))
	tests := []struct {
		name   string
		data   []byte
		orient int
		ok     bool
	}{
		{"no EXIF", photo, 1, true},
		{"a camera's EXIF (orientation 1)", camera, 1, true},
		{"orientation 1", withSegments(photo, exifSegment(true, orient(1))), 1, true},
		{"orientation 6 big-endian", withSegments(photo, exifSegment(true, other, orient(6))), 6, true},
		{"orientation 8 little-endian", withSegments(photo, exifSegment(false, orient(8))), 8, true},
		{"orientation 3 after an APP0", withSegments(photo, []byte{0xFF, 0xE0, 0, 4, 'J', 'F'}, exifSegment(false, orient(3))), 3, true},
		{"EXIF without orientation", withSegments(photo, exifSegment(true, other)), 1, true},
		{"value 0", withSegments(photo, exifSegment(true, orient(0))), 0, false},
		{"value 9", withSegments(photo, exifSegment(true, orient(9))), 0, false},
		{"LONG instead of SHORT", withSegments(photo, exifSegment(true, [4]uint32{0x0112, 4, 1, 6})), 0, false},
		{"two EXIF segments", withSegments(photo, exifSegment(true, orient(1)), exifSegment(true, orient(6))), 0, false},
		{"IFD past the segment", withSegments(photo, truncated), 0, false},
		{"not a JPEG", []byte("\x89PNG\r\n\x1a\n"), 0, false},
		{"cut inside a segment", withSegments(photo, exifSegment(true, orient(6)))[:30], 0, false},
		{"RST before the scan", withSegments(photo, []byte{0xFF, 0xD0}), 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, ok := JPEGOrientation(tc.data)
			if o != tc.orient || ok != tc.ok {
				t.Errorf("JPEGOrientation = %d, %v; want %d, %v", o, ok, tc.orient, tc.ok)
			}
		})
	}
}
