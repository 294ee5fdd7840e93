package server

import (
	"compress/zlib"
	"fmt"
	"io"
	"sync"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"fastinfer/server/inferpb"
)

// inferCodec is grpc-go's protobuf codec, but for a ModelInferRequest's
// raw_input_contents: those are left where they lie in a pooled copy of
// the received message, instead of being copied out of it into memory of
// their own. grpc-go's own codec copies the message into one buffer and
// proto.Unmarshal copies each bytes field again into a new allocation,
// which Go zeroes first: for a ResNet input (602 KB) that was two
// allocations, two zeroings and two copies before the batcher copied it
// once more; this leaves one copy (BenchmarkTransport). Every other
// message, and every other field, is decoded by proto as before.
type inferCodec struct{ encoding.CodecV2 }

var (
	// requestBufs are *[]byte copies of received ModelInferRequests,
	// reused once their call has been answered.
	requestBufs sync.Pool
	// heldBufs maps a decoded request to the copy its raw inputs alias,
	// until releaseRequest: the generated request type has no field of
	// ours to keep it in.
	heldBufs sync.Map
)

func (c inferCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*inferpb.ModelInferRequest)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	// grpc-go reuses data's buffers once this returns: the aliases need a
	// copy of their own.
	n := data.Len()
	bp, _ := requestBufs.Get().(*[]byte)
	if bp == nil || cap(*bp) < n {
		b := make([]byte, n)
		bp = &b
	}
	*bp = (*bp)[:n]
	data.CopyTo(*bp)
	if err := unmarshalInferRequest(*bp, r); err != nil {
		requestBufs.Put(bp)
		return err
	}
	heldBufs.Store(r, bp)
	return nil
}

// releaseRequest returns the memory a request's raw inputs alias to the
// pool. The handler calls it once nothing reads them: the batcher has
// copied them into a batch by the time its call returns, and the answer
// holds none of them.
func releaseRequest(r *inferpb.ModelInferRequest) {
	if bp, ok := heldBufs.LoadAndDelete(r); ok {
		r.RawInputContents = nil
		requestBufs.Put(bp)
	}
}

// unmarshalInferRequest is proto.Unmarshal for a ModelInferRequest, with
// raw_input_contents (field 7) aliasing b.
func unmarshalInferRequest(b []byte, r *inferpb.ModelInferRequest) error {
	var rest []byte // every other field, in order: small
	var raws [][]byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("grpc: parsing ModelInferRequest: %w", protowire.ParseError(n))
		}
		if num == 7 && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b[n:])
			if m < 0 {
				return fmt.Errorf("grpc: parsing raw_input_contents: %w", protowire.ParseError(m))
			}
			raws = append(raws, v[:len(v):len(v)]) // capped: an append cannot write past it
			b = b[n+m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return fmt.Errorf("grpc: parsing ModelInferRequest: %w", protowire.ParseError(m))
		}
		rest = append(rest, b[:n+m]...)
		b = b[n+m:]
	}
	if err := proto.Unmarshal(rest, r); err != nil {
		return err
	}
	r.RawInputContents = raws
	return nil
}

// deflateCompressor is gRPC's "deflate" message encoding, which grpc-go
// does not ship and perf_analyzer's --grpc-compression-algorithm deflate
// and tritonclient's compression_algorithm="deflate" send; it is read as
// HTTP bodies' deflate is (inflate). grpc-go holds what it inflates to
// MaxRecvMsgSize.
type deflateCompressor struct{}

func init() { encoding.RegisterCompressor(deflateCompressor{}) }

func (deflateCompressor) Name() string { return "deflate" }

func (deflateCompressor) Compress(w io.Writer) (io.WriteCloser, error) { return zlib.NewWriter(w), nil }

func (deflateCompressor) Decompress(r io.Reader) (io.Reader, error) { return inflate(r) }
