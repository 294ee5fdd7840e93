//go:build ignore

// gen writes the hostile fixtures of this folder (wherever it is run
// from, it works in the folder that holds gen.go):
//
//	go run vision/testdata/gen.go
//
// The photos (baboon.jpg, fruits.jpg, butterfly.jpg, starry_night.jpg,
// ela_original.jpg, Blender_Suzanne1.jpg, smarties.png) are copies of
// Debian's opencv-doc examples (/usr/share/doc/opencv-doc/examples/data/)
// and are inputs to this program. The output is deterministic.
package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
)

func main() {
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		log.Fatal("cannot locate gen.go")
	}
	if err := os.Chdir(filepath.Dir(self)); err != nil {
		log.Fatal(err)
	}
	write("bomb.png", bombPNG(40000, 40000))
	write("bomb.jpg", bombJPEG(65000, 65000))
	write("truncated.jpg", cut(read("baboon.jpg"), 0.6))
	write("truncated.png", cut(read("smarties.png"), 0.6))
	write("truncated_thumb.jpg", truncatedAfterThumbnail(read("ela_original.jpg")))
	write("garbage.bin", garbage(4096))
	write("empty.jpg", nil)
	write("text.txt", []byte("This is not an image.\nIt is plain text, and should be refused before OpenCV sees it.\n"))
}

func read(name string) []byte {
	b, err := os.ReadFile(name)
	if err != nil {
		log.Fatal(err)
	}
	return b
}

func write(name string, b []byte) {
	if err := os.WriteFile(name, b, 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%-20s %7d bytes\n", name, len(b))
}

func cut(b []byte, frac float64) []byte {
	return b[:int(float64(len(b))*frac)]
}

// bombPNG encodes a 1×1 PNG and rewrites its IHDR to claim w×h, with a
// valid CRC: a complete, well-formed file of about 70 bytes whose header
// asks a decoder for w*h*3 bytes.
func bombPNG(w, h uint32) []byte {
	img := image.NewRGBA(image.Rect(0, 0, 1, 1))
	img.Set(0, 0, color.RGBA{200, 100, 50, 255})
	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestCompression}
	if err := enc.Encode(&buf, img); err != nil {
		log.Fatal(err)
	}
	b := buf.Bytes()
	// Signature (8), then the IHDR chunk: length (4), "IHDR" (4),
	// width (4), height (4), 5 more bytes, CRC (4).
	if string(b[12:16]) != "IHDR" {
		log.Fatal("no IHDR where expected")
	}
	binary.BigEndian.PutUint32(b[16:], w)
	binary.BigEndian.PutUint32(b[20:], h)
	binary.BigEndian.PutUint32(b[29:], crc32.ChecksumIEEE(b[12:29]))
	return b
}

// bombJPEG encodes a 16×16 baseline JPEG and rewrites the dimensions in
// its SOF0 segment: complete (SOI…EOI), decodable header, absurd size.
func bombJPEG(w, h uint16) []byte {
	img := image.NewGray(image.Rect(0, 0, 16, 16))
	for i := range img.Pix {
		img.Pix[i] = uint8(i)
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 50}); err != nil {
		log.Fatal(err)
	}
	b := buf.Bytes()
	sof := bytes.Index(b, []byte{0xFF, 0xC0})
	if sof < 0 {
		log.Fatal("no SOF0")
	}
	// FF C0, length (2), precision (1), height (2), width (2).
	binary.BigEndian.PutUint16(b[sof+5:], h)
	binary.BigEndian.PutUint16(b[sof+7:], w)
	return b
}

// truncatedAfterThumbnail cuts a JPEG that carries an EXIF thumbnail a
// little after the start of its first scan, so that the thumbnail's EOI
// marker (FF D9) lies within the last 4 KiB of what is left. A guard that
// only searches the tail for FF D9 accepts this file.
func truncatedAfterThumbnail(b []byte) []byte {
	thumbEOI := bytes.Index(b, []byte{0xFF, 0xD9})
	sos := bytes.Index(b[thumbEOI:], []byte{0xFF, 0xDA})
	if thumbEOI < 0 || sos < 0 {
		log.Fatal("expected a thumbnail EOI and a later SOS")
	}
	sos += thumbEOI
	n := sos + 200
	if n-thumbEOI >= 4096 || n >= len(b)-2 {
		log.Fatalf("thumbnail EOI at %d, SOS at %d: unsuitable", thumbEOI, sos)
	}
	return b[:n]
}

// garbage returns seeded random bytes that match no image signature.
func garbage(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}
