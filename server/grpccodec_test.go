package server

import (
	"context"
	"math"
	"testing"
	"unsafe"

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
