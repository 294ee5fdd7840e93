package data

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// FuzzReadIDX: ReadIDX never panics, refuses with ErrIDX (and nothing
// else returned) whatever it cannot read, refuses every truncation of a
// file it accepts, returns exactly the file's contents, and allocates in
// proportion to the bytes it was given, never to what the header claims.
//
//	go test -tags openblas ./train/data -run '^$' -fuzz '^FuzzReadIDX$' -fuzztime 30s
func FuzzReadIDX(f *testing.F) {
	entries, err := os.ReadDir("testdata")
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() || strings.HasSuffix(e.Name(), ".go") {
			continue
		}
		b, err := os.ReadFile(filepath.Join("testdata", e.Name()))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// Headers that promise far more than follows: 2^28 elements (the
	// limit), 2^28 in three dimensions, 0 elements.
	f.Add(idxHeader(1<<14, 1<<14))
	f.Add(append(idxHeader(1<<10, 1<<10, 1<<8), 1, 2, 3))
	f.Add(idxHeader(0, 1<<20, 1<<20))
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(idxHeader(1<<14, 1<<14))
	zw.Close()
	f.Add(gz.Bytes())

	f.Fuzz(func(t *testing.T, in []byte) {
		// What the reader is justified in allocating: the bytes it can
		// actually read (the decompressed stream for gzip, up to a bound
		// past which the limit refuses anyway), a doubling buffer, and a
		// fixed overhead for the bufio and gzip readers.
		plain, gzipped := in, len(in) >= 2 && in[0] == 0x1f && in[1] == 0x8b
		if gzipped {
			plain = gunzipUpTo(in, MaxIDXElements+1<<20)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		dims, data, err := ReadIDX(bytes.NewReader(in))
		runtime.ReadMemStats(&after)
		if got, limit := after.TotalAlloc-before.TotalAlloc, uint64(4*len(plain)+4<<20); got > limit {
			t.Fatalf("ReadIDX allocated %d bytes for %d input bytes (%d decompressed); limit %d", got, len(in), len(plain), limit)
		}
		if err != nil {
			if !errors.Is(err, ErrIDX) {
				t.Fatalf("error %q does not wrap ErrIDX", err)
			}
			if dims != nil || data != nil {
				t.Fatalf("error %v returned with %v and %d bytes", err, dims, len(data))
			}
			return
		}
		if len(dims) < 1 || len(dims) > maxIDXDims {
			t.Fatalf("%d dimensions accepted", len(dims))
		}
		total := 1
		for _, d := range dims {
			if d < 0 {
				t.Fatalf("dimension %d in %v", d, dims)
			}
			total *= d
		}
		if total != len(data) || total > MaxIDXElements {
			t.Fatalf("dimensions %v with %d data bytes", dims, len(data))
		}
		// The accepted file is exactly header + data.
		u := make([]uint32, len(dims))
		for i, d := range dims {
			u[i] = uint32(d)
		}
		if enc := append(idxHeader(u...), data...); !bytes.Equal(enc, plain) {
			t.Fatalf("ReadIDX = %v, %d bytes; re-encoded that is not the input", dims, len(data))
		}
		if gzipped {
			return // a cut gzip stream is checked by its own tests
		}
		// Every truncation is refused, as a short read.
		for _, n := range []int{len(in) - 1, len(in) / 2, 4 + 4*len(dims)} {
			if n < 0 || n >= len(in) {
				continue
			}
			d, b, err := ReadIDX(bytes.NewReader(in[:n]))
			if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) || d != nil || b != nil {
				t.Fatalf("the first %d of %d bytes: %v, %d bytes, %v; want io.ErrUnexpectedEOF", n, len(in), d, len(b), err)
			}
		}
	})
}

// idxHeader is the IDX header of unsigned bytes with the given sizes.
func idxHeader(dims ...uint32) []byte {
	b := []byte{0, 0, 0x08, byte(len(dims))}
	for _, d := range dims {
		b = binary.BigEndian.AppendUint32(b, d)
	}
	return b
}

// gunzipUpTo decompresses as much of b as it can, at most limit bytes.
func gunzipUpTo(b []byte, limit int64) []byte {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil
	}
	out, _ := io.ReadAll(io.LimitReader(zr, limit))
	return out
}
