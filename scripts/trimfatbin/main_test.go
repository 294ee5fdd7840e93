package main

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// fatbin builds one fat binary with an entry per arch, each payload filled
// with the arch's number.
func fatbin(archs ...uint32) []byte {
	le := binary.LittleEndian
	var entries []byte
	for _, a := range archs {
		e := make([]byte, 64+16)
		le.PutUint16(e[0:], 2) // kind: ELF
		le.PutUint32(e[4:], 64)
		le.PutUint64(e[8:], 16)
		le.PutUint32(e[28:], a)
		for i := 64; i < len(e); i++ {
			e[i] = byte(a)
		}
		entries = append(entries, e...)
	}
	h := make([]byte, 16)
	le.PutUint32(h[0:], fatbinMagic)
	le.PutUint16(h[4:], 1)
	le.PutUint16(h[6:], 16)
	le.PutUint64(h[8:], uint64(len(entries)))
	return append(h, entries...)
}

func TestTrimKeepsOneArch(t *testing.T) {
	// Two fat binaries with 8 bytes of padding between them.
	sec := append(append(fatbin(80, 90, 120), make([]byte, 8)...), fatbin(90, 75)...)
	orig := bytes.Clone(sec)
	kept, zeroed, err := trim(sec, 90)
	if err != nil {
		t.Fatal(err)
	}
	if kept != 32 || zeroed != 48 {
		t.Errorf("kept %d, zeroed %d bytes; want 32 and 48", kept, zeroed)
	}
	// Each other arch had one 16-byte payload of its own number; exactly
	// those bytes must be gone (its number also stands in headers, and 80
	// is a byte of the magic). sm_90's bytes must all remain.
	count := func(b []byte, v byte) int { return bytes.Count(b, []byte{v}) }
	for _, a := range []byte{80, 120, 75} {
		if gone := count(orig, a) - count(sec, a); gone != 16 {
			t.Errorf("arch %d: %d of its bytes zeroed, want 16", a, gone)
		}
	}
	if n, want := count(sec, 90), count(orig, 90); n != want {
		t.Errorf("sm_90: %d bytes, want %d", n, want)
	}
	if len(sec) != len(orig) || !bytes.Equal(sec[:16], orig[:16]) {
		t.Error("headers or length changed")
	}
}

func TestTrimRefusesATruncatedFatbin(t *testing.T) {
	sec := fatbin(90)
	if _, _, err := trim(sec[:len(sec)-4], 90); err == nil {
		t.Error("a fat binary running past the section was accepted")
	}
}
