package data

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// The content of the fixtures written by testdata/gen.go.
var (
	fixturePixels = []byte{
		0, 1, 2, 3,
		100, 150, 200, 255,
		255, 254, 128, 64,
	}
	fixtureLabels = []byte{0, 9, 4}
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("%v (go run testdata/gen.go writes the fixtures)", err)
	}
	return b
}

func TestReadIDX(t *testing.T) {
	tests := []struct {
		file     string
		wantDims []int
		wantData []byte
		wantErr  string // substring of the error; "" = success
		wantIs   error  // also errors.Is, when set
	}{
		{file: "images-idx3-ubyte", wantDims: []int{3, 2, 2}, wantData: fixturePixels},
		{file: "images-idx3-ubyte.gz", wantDims: []int{3, 2, 2}, wantData: fixturePixels},
		{file: "labels-idx1-ubyte", wantDims: []int{3}, wantData: fixtureLabels},
		{file: "labels-idx1-ubyte.gz", wantDims: []int{3}, wantData: fixtureLabels},
		{file: "bad-magic.idx", wantErr: "does not start with 00 00"},
		{file: "bad-type.idx", wantErr: "element type 0x0d"},
		{file: "zero-dims.idx", wantErr: "0 dimensions"},
		{file: "truncated-header.idx", wantErr: "dimension sizes", wantIs: io.ErrUnexpectedEOF},
		{file: "truncated-data.idx", wantErr: "need 12 data bytes, got 11", wantIs: io.ErrUnexpectedEOF},
		{file: "trailing-data.idx", wantErr: "but more follow"},
		{file: "absurd-dims.idx", wantErr: "hold over 268435456 elements"},
		{file: "overflow-dims.idx", wantErr: "hold over 268435456 elements"},
		{file: "truncated.idx.gz", wantIs: io.ErrUnexpectedEOF},
		{file: "bad-crc.idx.gz", wantIs: gzip.ErrChecksum},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			dims, data, err := ReadIDX(bytes.NewReader(readFixture(t, tt.file)))
			if tt.wantErr == "" && tt.wantIs == nil {
				if err != nil {
					t.Fatalf("ReadIDX: %v", err)
				}
				if !slices.Equal(dims, tt.wantDims) || !bytes.Equal(data, tt.wantData) {
					t.Fatalf("ReadIDX = %v, %v; want %v, %v", dims, data, tt.wantDims, tt.wantData)
				}
				return
			}
			if err == nil {
				t.Fatalf("ReadIDX = %v, %d bytes; want an error", dims, len(data))
			}
			if !errors.Is(err, ErrIDX) {
				t.Errorf("error %q does not wrap ErrIDX", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %q does not wrap %v", err, tt.wantIs)
			}
			if dims != nil || data != nil {
				t.Errorf("ReadIDX returned %v and %d bytes with its error", dims, len(data))
			}
		})
	}
}

// TestReadIDXEdges covers inputs built in memory: limits and reader errors.
func TestReadIDXEdges(t *testing.T) {
	header := func(dims ...uint32) []byte {
		b := []byte{0, 0, 0x08, byte(len(dims))}
		for _, d := range dims {
			b = append(b, byte(d>>24), byte(d>>16), byte(d>>8), byte(d))
		}
		return b
	}
	boom := errors.New("disk on fire")
	tests := []struct {
		name     string
		r        io.Reader
		wantDims []int
		wantErr  string
		wantIs   error
	}{
		{name: "empty", r: bytes.NewReader(nil), wantErr: "magic", wantIs: io.ErrUnexpectedEOF},
		{name: "one byte over the limit", r: bytes.NewReader(header(1<<14, 1<<14+1)), wantErr: "hold over"},
		{name: "zero-size dimension", r: bytes.NewReader(header(0, 28, 28)), wantDims: []int{0, 28, 28}},
		{name: "17 dimensions", r: bytes.NewReader([]byte{0, 0, 0x08, 17}), wantErr: "17 dimensions"},
		{name: "reader error", r: io.MultiReader(bytes.NewReader(header(3, 2, 2)), iotest.ErrReader(boom)), wantIs: boom},
		{name: "bad gzip header", r: bytes.NewReader([]byte{0x1f, 0x8b, 0xff}), wantErr: "gzip header"},
		{name: "one byte at a time", r: iotest.OneByteReader(bytes.NewReader(readFixture(t, "images-idx3-ubyte.gz"))), wantDims: []int{3, 2, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dims, _, err := ReadIDX(tt.r)
			if tt.wantErr == "" && tt.wantIs == nil {
				if err != nil || !slices.Equal(dims, tt.wantDims) {
					t.Fatalf("ReadIDX = %v, %v; want %v, nil", dims, err, tt.wantDims)
				}
				return
			}
			if err == nil {
				t.Fatalf("ReadIDX = %v; want an error", dims)
			}
			if !errors.Is(err, ErrIDX) || !strings.Contains(err.Error(), tt.wantErr) || (tt.wantIs != nil && !errors.Is(err, tt.wantIs)) {
				t.Fatalf("error %q; want one wrapping ErrIDX, containing %q, wrapping %v", err, tt.wantErr, tt.wantIs)
			}
		})
	}
}

// TestReadIDXAbsurdDimsAllocateNothing checks that the size check comes
// before the allocation: absurd-dims.idx promises 4 GiB.
func TestReadIDXAbsurdDimsAllocateNothing(t *testing.T) {
	b := readFixture(t, "absurd-dims.idx")
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, _, err := ReadIDX(bytes.NewReader(b)); err == nil {
		t.Fatal("ReadIDX accepted 65536×65536")
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Fatalf("ReadIDX allocated %d bytes for a file it refused", got)
	}
}
