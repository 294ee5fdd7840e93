package server

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/binary"
	"io"
	"math"
	"testing"
	"unsafe"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"fastinfer/batching"
	"fastinfer/server/inferpb"
)

// codecSeeds are requests as clients send them, and the odd shapes of the
// wire format around field 7.
func codecSeeds(t testing.TB) [][]byte {
	reqs := []*inferpb.ModelInferRequest{
		{},
		{ModelName: "toy", ModelVersion: "2", Id: "r1", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{
			{Name: "data", Datatype: "FP32", Shape: []int64{1, 2}}}, RawInputContents: [][]byte{fp32Bytes(1, 2)}},
		{ModelName: "toy", Parameters: map[string]*inferpb.InferParameter{"priority": int64Param(2)},
			Inputs:           []*inferpb.ModelInferRequest_InferInputTensor{{Name: "a", Shape: []int64{2}}, {Name: "b"}},
			Outputs:          []*inferpb.ModelInferRequest_InferRequestedOutputTensor{{Name: "logits"}},
			RawInputContents: [][]byte{{}, fp32Bytes(3, float32(math.NaN()))}},
		{ModelName: "typed", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{{Name: "data", Datatype: "FP32", Shape: []int64{1, 2},
			Contents: &inferpb.InferTensorContents{Fp32Contents: []float32{1, 2}}}}},
	}
	var out [][]byte
	for _, r := range reqs {
		b, err := proto.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	// Field 7 as a varint (a wire type proto keeps as an unknown field),
	// fields 7 and 1 interleaved, and a truncated field 7.
	out = append(out,
		protowire.AppendVarint(protowire.AppendTag(nil, 7, protowire.VarintType), 5),
		protowire.AppendString(protowire.AppendTag(protowire.AppendBytes(protowire.AppendTag(nil, 7, protowire.BytesType), []byte("ab")), 1, protowire.BytesType), "toy"),
		protowire.AppendTag(nil, 7, protowire.BytesType),
		[]byte{0x3a, 0x05, 'a'},
	)
	return out
}

// FuzzUnmarshalInferRequest holds the gRPC codec's request decoder to
// proto.Unmarshal: the same message or both an error, for any bytes.
func FuzzUnmarshalInferRequest(f *testing.F) {
	for _, b := range codecSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		want := &inferpb.ModelInferRequest{}
		werr := proto.Unmarshal(b, want)
		got := &inferpb.ModelInferRequest{}
		gerr := unmarshalInferRequest(b, got)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("proto.Unmarshal: %v; unmarshalInferRequest: %v", werr, gerr)
		}
		if werr == nil && !proto.Equal(want, got) {
			t.Fatalf("proto.Unmarshal %v\nunmarshalInferRequest %v", want, got)
		}
	})
}

// TestInferCodecAliases: the raw inputs point into the received copy (the
// reason for the codec), and each call's copy goes back to the pool.
func TestInferCodecAliases(t *testing.T) {
	b := codecSeeds(t)[1]
	r := &inferpb.ModelInferRequest{}
	if err := unmarshalInferRequest(b, r); err != nil {
		t.Fatal(err)
	}
	raw := r.RawInputContents[0]
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	if p := uintptr(unsafe.Pointer(unsafe.SliceData(raw))); p < start || p >= start+uintptr(len(b)) || cap(raw) != len(raw) {
		t.Fatalf("raw input copied (or its capacity reaches past it): %p in %p+%d, cap %d", raw, b, len(b), cap(raw))
	}

	// Through the server: calls that succeed, fail, or panic all release
	// what they held.
	panicky := fakeModel("panicky", 1)
	panicky.InferBytes = func(context.Context, []byte, int, []float32, batching.RequestOptions) (batching.Timing, error) {
		panic("bug")
	}
	ts := newTestServer(t, Options{}, fakeModel("toy", 1), panicky)
	c := ts.grpcClient(t)
	for _, model := range []string{"toy", "toy", "nope", "panicky"} {
		for _, shape := range [][]int64{{1, 2}, {1, 3}} {
			c.ModelInfer(context.Background(), &inferpb.ModelInferRequest{ModelName: model, Inputs: []*inferpb.ModelInferRequest_InferInputTensor{
				grpcInput(shape, "FP32", nil)}, RawInputContents: [][]byte{fp32Bytes(1, 2)}})
		}
	}
	held := 0
	heldBufs.Range(func(any, any) bool { held++; return true })
	if held != 0 {
		t.Errorf("%d received requests still held after their calls", held)
	}
}

// FuzzGRPCModelInfer decodes any bytes as a ModelInferRequest the way the
// server's codec does and hands them to ModelInfer, without the recover
// interceptor: a request either runs, with an answer whose shape and
// contents agree, or is refused with a client's code, never a panic or
// an Internal.
func FuzzGRPCModelInfer(f *testing.F) {
	for _, b := range codecSeeds(f) {
		f.Add(b)
	}
	for _, r := range []*inferpb.ModelInferRequest{
		{ModelName: "grid", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{{Name: "data", Datatype: "FP16", Shape: []int64{1, 2, 1, 2}}},
			RawInputContents: [][]byte{{0, 0x3c, 0, 0x40, 0, 0x42, 0, 0x44}}},
		{ModelName: "toy", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{{Name: "data", Datatype: "UINT8", Shape: []int64{1, 2},
			Contents: &inferpb.InferTensorContents{UintContents: []uint32{1, 255}}}},
			Outputs: []*inferpb.ModelInferRequest_InferRequestedOutputTensor{{Name: "logits", Parameters: map[string]*inferpb.InferParameter{"classification": int64Param(9)}}}},
		{ModelName: "toy", Parameters: map[string]*inferpb.InferParameter{"timeout": int64Param(1000), "priority": int64Param(1)},
			Inputs: []*inferpb.ModelInferRequest_InferInputTensor{{Name: "data", Datatype: "INT8", Shape: []int64{2, 2},
				Contents: &inferpb.InferTensorContents{IntContents: []int32{-1, 2, 3, 127}}}}},
		{ModelName: "toy", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{{Name: "data", Datatype: "FP32", Shape: []int64{2, 2},
			Parameters: map[string]*inferpb.InferParameter{"shared_memory_region": {ParameterChoice: &inferpb.InferParameter_StringParam{StringParam: "in"}},
				"shared_memory_byte_size": int64Param(16)}}},
			Outputs: []*inferpb.ModelInferRequest_InferRequestedOutputTensor{{Name: "logits", Parameters: map[string]*inferpb.InferParameter{
				"shared_memory_region": {ParameterChoice: &inferpb.InferParameter_StringParam{StringParam: "out"}}, "shared_memory_offset": int64Param(4),
				"shared_memory_byte_size": int64Param(100)}}}},
		{ModelName: "half", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{{Name: "data", Datatype: "FP32", Shape: []int64{2, 2},
			Parameters: map[string]*inferpb.InferParameter{"shared_memory_region": {ParameterChoice: &inferpb.InferParameter_StringParam{StringParam: "cin"}},
				"shared_memory_byte_size": int64Param(16)}}},
			Outputs: []*inferpb.ModelInferRequest_InferRequestedOutputTensor{{Name: "logits", Parameters: map[string]*inferpb.InferParameter{
				"shared_memory_region": {ParameterChoice: &inferpb.InferParameter_StringParam{StringParam: "cout"}}, "shared_memory_byte_size": int64Param(100)}}}},
	} {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	g := &grpcService{s: fuzzServer(4)}
	if key, _ := fuzzShm(f, g.s); key != "" {
		defer g.s.shm.unregister("", true)
		defer g.s.shm.unregister("", false)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &inferpb.ModelInferRequest{}
		if unmarshalInferRequest(b, r) != nil {
			return
		}
		resp, err := g.ModelInfer(context.Background(), r)
		if err != nil {
			switch c := status.Code(err); c {
			case codes.InvalidArgument, codes.NotFound:
			default:
				t.Fatalf("%s: %v", c, err)
			}
			return
		}
		o := resp.Outputs[0]
		rows, cols := o.Shape[0], o.Shape[1]
		switch {
		case len(resp.RawOutputContents) == 1 && o.Datatype == "FP32":
			if int64(len(resp.RawOutputContents[0])) != 4*rows*cols {
				t.Fatalf("%d raw bytes for shape %v", len(resp.RawOutputContents[0]), o.Shape)
			}
		case len(resp.RawOutputContents) == 1 && o.Datatype == "FP16": // the "half" model's own
			if int64(len(resp.RawOutputContents[0])) != 2*rows*cols {
				t.Fatalf("%d raw bytes of FP16 for shape %v", len(resp.RawOutputContents[0]), o.Shape)
			}
		case len(resp.RawOutputContents) == 1 && o.Datatype == "BYTES": // rows·cols strings, each behind its length
			raw, n := resp.RawOutputContents[0], int64(0)
			for len(raw) >= 4 {
				l := int(binary.LittleEndian.Uint32(raw))
				if 4+l > len(raw) {
					t.Fatalf("a string of %d bytes where %d are left", l, len(raw)-4)
				}
				raw, n = raw[4+l:], n+1
			}
			if n != rows*cols || len(raw) != 0 {
				t.Fatalf("%d strings for shape %v", n, o.Shape)
			}
		case o.Contents != nil && o.Datatype == "FP32":
			if int64(len(o.Contents.Fp32Contents)) != rows*cols {
				t.Fatalf("%d values for shape %v", len(o.Contents.Fp32Contents), o.Shape)
			}
		case o.Contents != nil:
			if int64(len(o.Contents.BytesContents)) != rows*cols {
				t.Fatalf("%d strings for shape %v", len(o.Contents.BytesContents), o.Shape)
			}
		case o.Parameters["shared_memory_region"] != nil: // written into a region
			if n := o.Parameters["shared_memory_byte_size"].GetInt64Param(); n <= 0 || (o.Datatype == "FP32" && n != 4*rows*cols) || len(resp.RawOutputContents) != 0 || o.Contents != nil {
				t.Fatalf("shared memory output %v", resp)
			}
		default:
			t.Fatalf("an answer without data, or of an unexpected datatype: %v", resp)
		}
	})
}

// TestDeflateCompressor: gRPC's deflate is zlib-wrapped; the bare stream
// some clients send is read too, and garbage is an error.
func TestDeflateCompressor(t *testing.T) {
	msg := bytes.Repeat([]byte("fastinfer "), 1000)
	var zw bytes.Buffer
	w, _ := deflateCompressor{}.Compress(&zw)
	w.Write(msg)
	w.Close()
	var fw bytes.Buffer
	f, _ := flate.NewWriter(&fw, flate.BestSpeed)
	f.Write(msg)
	f.Close()
	for _, tt := range []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"zlib", zw.Bytes(), true},
		{"raw deflate", fw.Bytes(), true},
		{"garbage", []byte("not compressed at all"), false},
		{"truncated", zw.Bytes()[:len(zw.Bytes())/2], false},
	} {
		r, err := deflateCompressor{}.Decompress(bytes.NewReader(tt.in))
		var got []byte
		if err == nil {
			got, err = io.ReadAll(r)
		}
		if (err == nil) != tt.ok || tt.ok && !bytes.Equal(got, msg) {
			t.Errorf("%s: %d bytes, %v", tt.name, len(got), err)
		}
	}
}
