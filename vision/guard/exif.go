package guard

import (
	"bytes"
	"encoding/binary"
)

// JPEGOrientation returns the EXIF orientation (1-8) of a JPEG stream: 1
// when it has no EXIF segment or the segment has no orientation tag. ok is
// false when it cannot tell for sure (a malformed or truncated EXIF
// block, two EXIF segments, a tag of the wrong type or a value outside
// 1-8); a caller should then leave the image to a decoder that applies
// the orientation itself. Only the segments before the first scan are
// read, and nothing is allocated.
func JPEGOrientation(d []byte) (orient int, ok bool) {
	if len(d) < 4 || d[0] != 0xFF || d[1] != 0xD8 {
		return 0, false
	}
	orient, seen := 1, false
	for i := 2; ; {
		for i < len(d) && d[i] == 0xFF { // fill bytes, then the marker
			i++
		}
		if i+3 > len(d) || d[i-1] != 0xFF {
			return 0, false
		}
		m := d[i]
		switch {
		case m == 0xDA || m == 0xD9: // SOS or EOI: no more header segments
			return orient, true
		case m == 0x00 || m == 0x01 || m >= 0xD0 && m <= 0xD8:
			return 0, false // no length follows; not a normal header
		}
		n := int(binary.BigEndian.Uint16(d[i+1:]))
		if n < 2 || i+1+n > len(d) {
			return 0, false
		}
		seg := d[i+3 : i+1+n]
		i += 1 + n
		if m != 0xE1 || !bytes.HasPrefix(seg, []byte("Exif\x00\x00")) {
			continue
		}
		if seen {
			return 0, false
		}
		seen = true
		var good bool
		if orient, good = tiffOrientation(seg[6:]); !good {
			return 0, false
		}
	}
}

// tiffOrientation reads tag 0x0112 from IFD0 of a TIFF header.
func tiffOrientation(t []byte) (int, bool) {
	if len(t) < 8 {
		return 0, false
	}
	var bo binary.ByteOrder
	switch string(t[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return 0, false
	}
	if bo.Uint16(t[2:]) != 42 {
		return 0, false
	}
	ifd := int64(bo.Uint32(t[4:]))
	if ifd+2 > int64(len(t)) {
		return 0, false
	}
	n := int64(bo.Uint16(t[ifd:]))
	if ifd+2+12*n > int64(len(t)) {
		return 0, false
	}
	for e := range n {
		ent := t[ifd+2+12*e:]
		if bo.Uint16(ent) != 0x0112 {
			continue
		}
		// SHORT, count 1: the value sits in the first two bytes of the
		// value field in the file's byte order.
		if bo.Uint16(ent[2:]) != 3 || bo.Uint32(ent[4:]) != 1 {
			return 0, false
		}
		v := int(bo.Uint16(ent[8:]))
		if v < 1 || v > 8 {
			return 0, false
		}
		return v, true
	}
	return 1, true
}
