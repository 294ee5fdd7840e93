package data

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// MaxIDXElements bounds the number of elements ReadIDX accepts (the
// product of the dimensions). Fashion-MNIST's training images are
// 47,040,000 bytes; the limit is checked before anything is allocated.
const MaxIDXElements = 1 << 28

// maxIDXDims bounds the number of dimensions; the format stores it in a
// byte, but no real file has more than a handful.
const maxIDXDims = 16

// ErrIDX is wrapped by every error ReadIDX returns. Errors that come from
// reading (io.ErrUnexpectedEOF for a truncated file, gzip.ErrChecksum, the
// reader's own) are wrapped too, for errors.Is.
var ErrIDX = errors.New("bad IDX file")

// ReadIDX reads an IDX file of unsigned bytes, the format of the MNIST
// and Fashion-MNIST files, and returns its dimensions and its data in
// row-major order. A gzip-compressed file (magic 1f 8b) is decompressed
// on the fly.
//
// The header is the magic 0x00 0x00 0x08 ndims, then ndims big-endian
// uint32 sizes. Other element types (0x09 and up) are refused, as are
// zero or more than 16 dimensions, a product of sizes over
// MaxIDXElements (before allocating), fewer data bytes than the sizes
// promise, and bytes left over after them.
func ReadIDX(r io.Reader) (dims []int, data []byte, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	if m, _ := br.Peek(2); len(m) == 2 && m[0] == 0x1f && m[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("data: %w: gzip header: %w", ErrIDX, err)
		}
		defer zr.Close()
		return readIDX(bufio.NewReaderSize(zr, 64<<10))
	}
	return readIDX(br)
}

func readIDX(r *bufio.Reader) ([]int, []byte, error) {
	var magic [4]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil {
		return nil, nil, fmt.Errorf("data: %w: magic: %w", ErrIDX, short(err))
	}
	if magic[0] != 0 || magic[1] != 0 {
		return nil, nil, fmt.Errorf("data: %w: magic % x does not start with 00 00", ErrIDX, magic)
	}
	if magic[2] != 0x08 {
		return nil, nil, fmt.Errorf("data: %w: element type 0x%02x; only 0x08 (unsigned byte) is supported", ErrIDX, magic[2])
	}
	nd := int(magic[3])
	if nd == 0 || nd > maxIDXDims {
		return nil, nil, fmt.Errorf("data: %w: %d dimensions; want 1 to %d", ErrIDX, nd, maxIDXDims)
	}
	var hdr [4 * maxIDXDims]byte
	if _, err := io.ReadFull(r, hdr[:4*nd]); err != nil {
		return nil, nil, fmt.Errorf("data: %w: %d dimension sizes: %w", ErrIDX, nd, short(err))
	}
	dims := make([]int, nd)
	total := uint64(1)
	for i := range dims {
		d := binary.BigEndian.Uint32(hdr[4*i:])
		dims[i] = int(d)
		// total stays ≤ MaxIDXElements (2^28) and d < 2^32, so the
		// product fits in 64 bits; a zero size ends the check with 0.
		total *= uint64(d)
		if total > MaxIDXElements {
			return nil, nil, fmt.Errorf("data: %w: dimensions %v hold over %d elements", ErrIDX, dims[:i+1], MaxIDXElements)
		}
	}
	data, err := readData(r, total)
	if err != nil {
		return nil, nil, fmt.Errorf("data: %w: dimensions %v need %d data bytes, got %d: %w", ErrIDX, dims, total, len(data), short(err))
	}
	// The data must end here. Reaching the end also makes gzip check the
	// stream's CRC and length, which it does only when it hits the end.
	switch _, err := r.ReadByte(); err {
	case io.EOF:
		return dims, data, nil
	case nil:
		return nil, nil, fmt.Errorf("data: %w: dimensions %v need %d data bytes, but more follow", ErrIDX, dims, total)
	default:
		return nil, nil, fmt.Errorf("data: %w: after %d data bytes: %w", ErrIDX, total, err)
	}
}

// readData reads exactly n bytes. The buffer starts at 1 MiB at most and
// doubles as bytes arrive, so a 12-byte file whose header promises 2^28
// elements costs 1 MiB, not 256 MiB, before it is refused as truncated.
func readData(r io.Reader, n uint64) ([]byte, error) {
	const first = 1 << 20
	data := make([]byte, 0, min(n, first))
	for uint64(len(data)) < n {
		if len(data) == cap(data) {
			grown := make([]byte, len(data), min(n, 2*uint64(cap(data))))
			copy(grown, data)
			data = grown
		}
		m, err := io.ReadFull(r, data[len(data):cap(data)])
		data = data[:len(data)+m]
		if err != nil {
			return data, err
		}
	}
	return data, nil
}

// short turns io.EOF, which io.ReadFull returns when nothing at all was
// read, into io.ErrUnexpectedEOF: inside a header, any end is too early.
func short(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
