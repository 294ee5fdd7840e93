//go:build ignore

// gen writes the IDX fixtures of this folder (wherever it is run from, it
// works in the folder that holds gen.go):
//
//	go run train/data/testdata/gen.go
//
// The output is deterministic (gzip streams carry no name or time).
//
//	images-idx3-ubyte[.gz]   3 images of 2×2 unsigned bytes
//	labels-idx1-ubyte[.gz]   their 3 labels
//	bad-magic.idx            first byte 01 instead of 00
//	bad-type.idx             element type 0x0D (float32)
//	zero-dims.idx            0 dimensions
//	truncated-header.idx     ends inside the second dimension size
//	truncated-data.idx       one data byte short of 3×2×2
//	trailing-data.idx        one data byte more than 3×2×2
//	absurd-dims.idx          65536×65536 (2^32 elements), 4 data bytes
//	overflow-dims.idx        four sizes of 2^32-1 (product overflows 64 bits)
//	truncated.idx.gz         the gzip stream of images cut in half
//	bad-crc.idx.gz           the gzip stream of images with its CRC altered
package main

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"log"
	"os"
	"path/filepath"
	"runtime"
)

// The fixture's content; the tests hold the same values.
var (
	pixels = []byte{
		0, 1, 2, 3,
		100, 150, 200, 255,
		255, 254, 128, 64,
	}
	labels = []byte{0, 9, 4}
)

func main() {
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		log.Fatal("cannot locate gen.go")
	}
	if err := os.Chdir(filepath.Dir(self)); err != nil {
		log.Fatal(err)
	}
	images := idx(0x08, []uint32{3, 2, 2}, pixels)
	lbls := idx(0x08, []uint32{3}, labels)
	write("images-idx3-ubyte", images)
	write("images-idx3-ubyte.gz", gz(images))
	write("labels-idx1-ubyte", lbls)
	write("labels-idx1-ubyte.gz", gz(lbls))

	bad := bytes.Clone(images)
	bad[0] = 0x01
	write("bad-magic.idx", bad)
	write("bad-type.idx", idx(0x0D, []uint32{3, 2, 2}, pixels))
	write("zero-dims.idx", []byte{0, 0, 0x08, 0})
	write("truncated-header.idx", images[:4+4+2])
	write("truncated-data.idx", images[:len(images)-1])
	write("trailing-data.idx", append(bytes.Clone(images), 7))
	write("absurd-dims.idx", idx(0x08, []uint32{65536, 65536}, []byte{1, 2, 3, 4}))
	write("overflow-dims.idx", idx(0x08, []uint32{1<<32 - 1, 1<<32 - 1, 1<<32 - 1, 1<<32 - 1}, nil))

	z := gz(images)
	write("truncated.idx.gz", z[:len(z)/2])
	crc := bytes.Clone(z)
	crc[len(crc)-8] ^= 0xFF // the trailer is CRC-32 then length, little-endian
	write("bad-crc.idx.gz", crc)
}

// idx encodes an IDX file: 00 00 typ ndims, big-endian sizes, data.
func idx(typ byte, dims []uint32, data []byte) []byte {
	b := []byte{0, 0, typ, byte(len(dims))}
	for _, d := range dims {
		b = binary.BigEndian.AppendUint32(b, d)
	}
	return append(b, data...)
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := w.Write(b); err != nil {
		log.Fatal(err)
	}
	if err := w.Close(); err != nil {
		log.Fatal(err)
	}
	return buf.Bytes()
}

func write(name string, b []byte) {
	if err := os.WriteFile(name, b, 0o644); err != nil {
		log.Fatal(err)
	}
}
