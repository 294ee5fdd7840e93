package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"fastinfer/batching"
	"fastinfer/internal/dtype"
	"fastinfer/server/inferpb"
)

// grpcConn serves ts's server over gRPC on an in-memory listener and
// returns a client connection to it.
func (ts *testServer) grpcConn(t testing.TB) *grpc.ClientConn {
	t.Helper()
	ln := bufconn.Listen(1 << 20)
	go ts.srv.ServeGRPC(ln)
	conn, err := grpc.NewClient("passthrough:///fastinfer",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func (ts *testServer) grpcClient(t testing.TB) inferpb.GRPCInferenceServiceClient {
	return inferpb.NewGRPCInferenceServiceClient(ts.grpcConn(t))
}

// grpcGolden compares a gRPC answer with testdata/golden/name: the
// response as protojson (whitespace normalised: protojson varies it on
// purpose), or the status code and message.
func grpcGolden(t *testing.T, name string, resp proto.Message, err error) {
	t.Helper()
	var got string
	if err != nil {
		st := status.Convert(err)
		got = fmt.Sprintf("code: %s\n%s\n", st.Code(), st.Message())
	} else {
		b, merr := protojson.Marshal(resp)
		if merr != nil {
			t.Fatal(merr)
		}
		var out bytes.Buffer
		if err := json.Indent(&out, compactJSON(t, b), "", "  "); err != nil {
			t.Fatal(err)
		}
		got = "code: OK\n" + out.String() + "\n" + rawOutputs(resp)
	}
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, rerr := os.ReadFile(path)
	if rerr != nil {
		t.Fatalf("%v (run go test ./server -update to create it)", rerr)
	}
	if got != string(want) {
		t.Fatalf("%s mismatch:\n got: %s\nwant: %s", name, got, want)
	}
}

// rawOutputs spells out an infer response's raw_output_contents, which
// protojson shows in base64.
func rawOutputs(resp proto.Message) string {
	r, ok := resp.(*inferpb.ModelInferResponse)
	if !ok {
		return ""
	}
	var b strings.Builder
	for i, raw := range r.RawOutputContents {
		fmt.Fprintf(&b, "raw_output_contents[%d] as %s:", i, r.Outputs[i].Datatype)
		for len(raw) >= 4 {
			if r.Outputs[i].Datatype == "BYTES" {
				n := binary.LittleEndian.Uint32(raw)
				fmt.Fprintf(&b, " %q", raw[4:4+n])
				raw = raw[4+n:]
				continue
			}
			fmt.Fprintf(&b, " %g", math.Float32frombits(binary.LittleEndian.Uint32(raw)))
			raw = raw[4:]
		}
		b.WriteString("\n")
	}
	return b.String()
}

func compactJSON(t *testing.T, b []byte) []byte {
	var c bytes.Buffer
	if err := json.Compact(&c, b); err != nil {
		t.Fatal(err)
	}
	return c.Bytes()
}

func int64Param(v int64) *inferpb.InferParameter {
	return &inferpb.InferParameter{ParameterChoice: &inferpb.InferParameter_Int64Param{Int64Param: v}}
}

// grpcInput is the toy model's input with the given shape, datatype and
// contents (nil: raw).
func grpcInput(shape []int64, datatype string, c *inferpb.InferTensorContents) *inferpb.ModelInferRequest_InferInputTensor {
	return &inferpb.ModelInferRequest_InferInputTensor{Name: "data", Datatype: datatype, Shape: shape, Contents: c}
}

func TestGRPCGolden(t *testing.T) {
	ts := newTestServer(t, Options{MaxImages: 3}, fakeModel("toy", 1), fakeModel("toy", 2))
	c := ts.grpcClient(t)
	ctx := context.Background()
	two := grpcInput([]int64{2, 2}, "FP32", nil)
	raw := [][]byte{fp32Bytes(300, 200, 50, 7)}
	typed := grpcInput([]int64{2, 2}, "FP32", &inferpb.InferTensorContents{Fp32Contents: []float32{300, 200, 50, 7}})
	infer := func(r *inferpb.ModelInferRequest) func() (proto.Message, error) {
		return func() (proto.Message, error) { return c.ModelInfer(ctx, r) }
	}
	classify := []*inferpb.ModelInferRequest_InferRequestedOutputTensor{{Name: "logits", Parameters: map[string]*inferpb.InferParameter{"classification": int64Param(2)}}}
	tests := []struct {
		name string
		call func() (proto.Message, error)
	}{
		{"grpc_server_metadata", func() (proto.Message, error) { return c.ServerMetadata(ctx, &inferpb.ServerMetadataRequest{}) }},
		{"grpc_model_metadata", func() (proto.Message, error) {
			return c.ModelMetadata(ctx, &inferpb.ModelMetadataRequest{Name: "toy"})
		}},
		{"grpc_model_config", func() (proto.Message, error) {
			return c.ModelConfig(ctx, &inferpb.ModelConfigRequest{Name: "toy", Version: "1"})
		}},
		{"grpc_infer_raw", infer(&inferpb.ModelInferRequest{ModelName: "toy", Id: "r1", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{two}, RawInputContents: raw})},
		{"grpc_infer_typed_version", infer(&inferpb.ModelInferRequest{ModelName: "toy", ModelVersion: "1", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{typed}})},
		{"grpc_infer_int64", infer(&inferpb.ModelInferRequest{ModelName: "toy", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{
			grpcInput([]int64{1, 2}, "INT64", &inferpb.InferTensorContents{Int64Contents: []int64{100, 100}})}})},
		{"grpc_infer_classification_raw", infer(&inferpb.ModelInferRequest{ModelName: "toy", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{two}, RawInputContents: raw, Outputs: classify})},
		{"grpc_infer_classification_typed", infer(&inferpb.ModelInferRequest{ModelName: "toy", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{typed}, Outputs: classify})},
		{"grpc_err_not_found", infer(&inferpb.ModelInferRequest{ModelName: "nope"})},
		{"grpc_err_version_not_found", func() (proto.Message, error) {
			return c.ModelMetadata(ctx, &inferpb.ModelMetadataRequest{Name: "toy", Version: "9"})
		}},
		{"grpc_err_shape", infer(&inferpb.ModelInferRequest{ModelName: "toy", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{
			grpcInput([]int64{1, 3}, "FP32", &inferpb.InferTensorContents{Fp32Contents: []float32{1, 2, 3}})}})},
		{"grpc_err_raw_size", infer(&inferpb.ModelInferRequest{ModelName: "toy", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{two}, RawInputContents: [][]byte{fp32Bytes(1, 2, 3)}})},
		{"grpc_err_batch_too_large", infer(&inferpb.ModelInferRequest{ModelName: "toy", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{
			grpcInput([]int64{4, 2}, "FP32", nil)}, RawInputContents: [][]byte{fp32Bytes(1, 2, 3, 4, 5, 6, 7, 8)}})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := tt.call()
			grpcGolden(t, tt.name+".golden", resp, err)
		})
	}
}

// TestGRPCMatchesHTTP: the same tensor gets the same scores over both
// transports, in every form each offers.
func TestGRPCMatchesHTTP(t *testing.T) {
	ts := newTestServer(t, Options{}, fakeModel("toy", 1))
	c := ts.grpcClient(t)
	in := []float32{300, 200, 50, 7, 12.5, 3}
	r := ts.doInfer(t, "/v2/models/toy/infer", "", []byte(`{"inputs":[{"name":"data","datatype":"FP32","shape":[3,2],"data":[300,200,50,7,12.5,3]}]}`))
	var h struct {
		Outputs []struct {
			Shape []int64   `json:"shape"`
			Data  []float32 `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal([]byte(r.body), &h); err != nil || r.status != 200 {
		t.Fatalf("HTTP: %d %s %v", r.status, r.body, err)
	}
	want := h.Outputs[0].Data

	half := make([]byte, 0, 2*len(in))
	for _, v := range in {
		half = binary.LittleEndian.AppendUint16(half, floatToHalf(v))
	}
	fp64 := make([]float64, len(in))
	for i, v := range in {
		fp64[i] = float64(v)
	}
	tests := []struct {
		name     string
		datatype string
		contents *inferpb.InferTensorContents
		raw      []byte
	}{
		{"raw fp32", "FP32", nil, fp32Bytes(in...)},
		{"raw fp16", "FP16", nil, half},
		{"fp32_contents", "FP32", &inferpb.InferTensorContents{Fp32Contents: in}, nil},
		{"fp64_contents", "FP64", &inferpb.InferTensorContents{Fp64Contents: fp64}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &inferpb.ModelInferRequest{ModelName: "toy", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{grpcInput([]int64{3, 2}, tt.datatype, tt.contents)}}
			if tt.raw != nil {
				req.RawInputContents = [][]byte{tt.raw}
			}
			resp, err := c.ModelInfer(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			o := resp.Outputs[0]
			if o.Name != "logits" || o.Datatype != "FP32" || fmt.Sprint(o.Shape) != fmt.Sprint(h.Outputs[0].Shape) {
				t.Fatalf("output %s %s %v, HTTP's shape %v", o.Name, o.Datatype, o.Shape, h.Outputs[0].Shape)
			}
			var got []float32
			if tt.raw != nil {
				if o.Contents != nil || len(resp.RawOutputContents) != 1 {
					t.Fatalf("a raw request answered with contents %v and %d raw", o.Contents, len(resp.RawOutputContents))
				}
				b := resp.RawOutputContents[0]
				for i := 0; i+4 <= len(b); i += 4 {
					got = append(got, math.Float32frombits(binary.LittleEndian.Uint32(b[i:])))
				}
			} else {
				if len(resp.RawOutputContents) != 0 {
					t.Fatal("a typed request answered raw")
				}
				got = o.Contents.Fp32Contents
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("gRPC %v, HTTP %v", got, want)
			}
		})
	}
}

// floatToHalf converts a float32 that fits a half exactly.
func floatToHalf(f float32) uint16 {
	for h := range uint32(1 << 16) {
		if dtype.ToFloat32(uint16(h)) == f {
			return uint16(h)
		}
	}
	panic(fmt.Sprint(f, " has no exact half"))
}

func TestGRPCInferErrors(t *testing.T) {
	ts := newTestServer(t, Options{MaxImages: 4}, fakeModel("toy", 1))
	c := ts.grpcClient(t)
	inputs := func(ins ...*inferpb.ModelInferRequest_InferInputTensor) []*inferpb.ModelInferRequest_InferInputTensor {
		return ins
	}
	fp32 := func(v ...float32) *inferpb.InferTensorContents { return &inferpb.InferTensorContents{Fp32Contents: v} }
	ok := grpcInput([]int64{1, 2}, "FP32", fp32(1, 2))
	tests := []struct {
		name string
		req  *inferpb.ModelInferRequest
		code codes.Code
		want string
	}{
		{"two inputs", &inferpb.ModelInferRequest{Inputs: inputs(ok, ok)}, codes.InvalidArgument, "takes 1 input(s), the request has 2"},
		{"input name", &inferpb.ModelInferRequest{Inputs: inputs(&inferpb.ModelInferRequest_InferInputTensor{Name: "x", Datatype: "FP32", Shape: []int64{1, 2}, Contents: fp32(1, 2)})},
			codes.InvalidArgument, `unknown input "x"`},
		{"datatype", &inferpb.ModelInferRequest{Inputs: inputs(grpcInput([]int64{1, 2}, "BYTES", &inferpb.InferTensorContents{BytesContents: [][]byte{{1}, {2}}}))},
			codes.InvalidArgument, `datatype "BYTES" is not supported`},
		{"neither", &inferpb.ModelInferRequest{Inputs: inputs(grpcInput([]int64{1, 2}, "FP32", nil))}, codes.InvalidArgument, "neither contents nor raw_input_contents"},
		{"both", &inferpb.ModelInferRequest{Inputs: inputs(ok), RawInputContents: [][]byte{fp32Bytes(1, 2)}}, codes.InvalidArgument, "send one or the other"},
		{"raw count", &inferpb.ModelInferRequest{Inputs: inputs(grpcInput([]int64{1, 2}, "FP32", nil)), RawInputContents: [][]byte{fp32Bytes(1, 2), fp32Bytes(1, 2)}},
			codes.InvalidArgument, "raw_input_contents has 2 entries for 1 inputs"},
		{"wrong field", &inferpb.ModelInferRequest{Inputs: inputs(grpcInput([]int64{1, 2}, "FP32", &inferpb.InferTensorContents{IntContents: []int32{1, 2}}))},
			codes.InvalidArgument, "FP32 values go in contents.fp32_contents"},
		{"count", &inferpb.ModelInferRequest{Inputs: inputs(grpcInput([]int64{2, 2}, "FP32", fp32(1, 2, 3)))}, codes.InvalidArgument, "data has 3 elements, shape needs 4"},
		{"uint8 range", &inferpb.ModelInferRequest{Inputs: inputs(grpcInput([]int64{1, 2}, "UINT8", &inferpb.InferTensorContents{UintContents: []uint32{3, 300}}))},
			codes.InvalidArgument, "element 1 (300) is out of range for UINT8"},
		{"int8 range", &inferpb.ModelInferRequest{Inputs: inputs(grpcInput([]int64{1, 2}, "INT8", &inferpb.InferTensorContents{IntContents: []int32{-129, 0}}))},
			codes.InvalidArgument, "element 0 (-129) is out of range for INT8"},
		{"fp16 typed", &inferpb.ModelInferRequest{Inputs: inputs(grpcInput([]int64{1, 2}, "FP16", fp32(1, 2)))}, codes.InvalidArgument, "send it in raw_input_contents"},
		{"nan raw", &inferpb.ModelInferRequest{Inputs: inputs(grpcInput([]int64{1, 2}, "FP32", nil)), RawInputContents: [][]byte{fp32Bytes(1, float32(math.NaN()))}},
			codes.InvalidArgument, "element 1 is not a finite number"},
		{"inf typed", &inferpb.ModelInferRequest{Inputs: inputs(grpcInput([]int64{1, 2}, "FP32", fp32(float32(math.Inf(-1)), 2)))},
			codes.InvalidArgument, "element 0 is not a finite number"},
		{"output name", &inferpb.ModelInferRequest{Inputs: inputs(ok), Outputs: []*inferpb.ModelInferRequest_InferRequestedOutputTensor{{Name: "probs"}}},
			codes.InvalidArgument, `unknown output "probs"`},
		{"priority type", &inferpb.ModelInferRequest{Inputs: inputs(ok), Parameters: map[string]*inferpb.InferParameter{
			"priority": {ParameterChoice: &inferpb.InferParameter_StringParam{StringParam: "1"}}}}, codes.InvalidArgument, "priority must be an int64_param or uint64_param"},
		{"timeout negative", &inferpb.ModelInferRequest{Inputs: inputs(ok), Parameters: map[string]*inferpb.InferParameter{"timeout": int64Param(-5)}},
			codes.InvalidArgument, "timeout must not be negative"},
		{"timeout too long", &inferpb.ModelInferRequest{Inputs: inputs(ok), Parameters: map[string]*inferpb.InferParameter{"timeout": int64Param(4e9)}},
			codes.InvalidArgument, "up to one hour"},
		{"classification negative", &inferpb.ModelInferRequest{Inputs: inputs(ok), Outputs: []*inferpb.ModelInferRequest_InferRequestedOutputTensor{
			{Name: "logits", Parameters: map[string]*inferpb.InferParameter{"classification": int64Param(-1)}}}}, codes.InvalidArgument, "classification must not be negative"},
		{"batch zero", &inferpb.ModelInferRequest{Inputs: inputs(grpcInput([]int64{0, 2}, "FP32", nil)), RawInputContents: [][]byte{{}}},
			codes.InvalidArgument, "batch dimension must be 1 to 4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.ModelName = "toy"
			_, err := c.ModelInfer(context.Background(), tt.req)
			st := status.Convert(err)
			if st.Code() != tt.code || !strings.Contains(st.Message(), tt.want) {
				t.Errorf("got %s %q, want %s with %q", st.Code(), st.Message(), tt.code, tt.want)
			}
		})
	}
	// None of them reached the model or the statistics as a success.
	if n := ts.srv.models.list()[0].stats.success.count.Load(); n != 0 {
		t.Errorf("%d successes counted", n)
	}
}

func TestGRPCHealth(t *testing.T) {
	ts := newTestServer(t, Options{}, fakeModel("toy", 1))
	conn := ts.grpcConn(t)
	c := inferpb.NewGRPCInferenceServiceClient(conn)
	hc := healthpb.NewHealthClient(conn)
	ctx := context.Background()
	check := func(ready bool) {
		t.Helper()
		live, err := c.ServerLive(ctx, &inferpb.ServerLiveRequest{})
		if err != nil || !live.Live {
			t.Fatalf("ServerLive %v %v", live, err)
		}
		r, err := c.ServerReady(ctx, &inferpb.ServerReadyRequest{})
		if err != nil || r.Ready != ready {
			t.Errorf("ServerReady %v %v, want %v", r, err, ready)
		}
		mr, err := c.ModelReady(ctx, &inferpb.ModelReadyRequest{Name: "toy"})
		if err != nil || mr.Ready != ready {
			t.Errorf("ModelReady %v %v, want %v", mr, err, ready)
		}
		want := healthpb.HealthCheckResponse_NOT_SERVING
		if ready {
			want = healthpb.HealthCheckResponse_SERVING
		}
		h, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || h.Status != want {
			t.Errorf("health %v %v, want %v", h, err, want)
		}
	}
	check(true)
	ts.srv.SetReady(false)
	check(false)
	ts.srv.SetReady(true)
	check(true)
	for _, r := range []*inferpb.ModelReadyRequest{{Name: "nope"}, {Name: "toy", Version: "2"}} {
		if got, err := c.ModelReady(ctx, r); err != nil || got.Ready {
			t.Errorf("ModelReady of %v, not served: %v %v", r, got, err)
		}
	}
}

// TestGRPCFailures: overload, broken models, panics, tokens and limits
// answer with their codes, and the server goes on.
func TestGRPCFailures(t *testing.T) {
	full := fakeModel("full", 1)
	full.Infer = func(context.Context, []float32, int, []float32, batching.RequestOptions) (batching.Timing, error) {
		return batching.Timing{}, fmt.Errorf("queue of 8: %w", batching.ErrQueueFull)
	}
	full.InferBytes = nil
	panicky := fakeModel("panicky", 1)
	panicky.Infer = func(context.Context, []float32, int, []float32, batching.RequestOptions) (batching.Timing, error) {
		panic("kernel bug")
	}
	nan := fakeModel("nan", 1)
	nan.Infer = func(_ context.Context, _ []float32, rows int, out []float32, _ batching.RequestOptions) (batching.Timing, error) {
		out[1] = float32(math.Inf(1))
		return batching.Timing{}, nil
	}
	ts := newTestServer(t, Options{APIToken: "tok", MaxBodyBytes: 1 << 10}, full, panicky, nan, fakeModel("toy", 1))
	c := ts.grpcClient(t)
	authed := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer tok")
	req := func(model string, n int) *inferpb.ModelInferRequest {
		return &inferpb.ModelInferRequest{ModelName: model, Inputs: []*inferpb.ModelInferRequest_InferInputTensor{
			grpcInput([]int64{int64(n), 2}, "FP32", &inferpb.InferTensorContents{Fp32Contents: make([]float32, 2*n)})}}
	}
	tests := []struct {
		name string
		ctx  context.Context
		req  *inferpb.ModelInferRequest
		code codes.Code
		want string
	}{
		{"no token", context.Background(), req("toy", 1), codes.Unauthenticated, "bearer token"},
		{"wrong token", metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer nope"), req("toy", 1), codes.Unauthenticated, "bearer token"},
		{"queue full", authed, req("full", 1), codes.ResourceExhausted, "model full is overloaded"},
		{"panic", authed, req("panicky", 1), codes.Internal, "internal server error"},
		{"non-finite", authed, req("nan", 1), codes.InvalidArgument, "model nan gave +Inf for row 0"},
		{"over the body limit", authed, req("toy", 200), codes.ResourceExhausted, "larger than max"},
		{"fine", authed, req("toy", 1), codes.OK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.ModelInfer(tt.ctx, tt.req)
			st := status.Convert(err)
			if st.Code() != tt.code || !strings.Contains(st.Message(), tt.want) {
				t.Errorf("got %s %q, want %s with %q", st.Code(), st.Message(), tt.code, tt.want)
			}
		})
	}
	if !strings.Contains(ts.logs.String(), "kernel bug") {
		t.Error("the panic was not logged")
	}
	// gzip and deflate, as tritonclient's compression_algorithm and
	// perf_analyzer's --grpc-compression-algorithm send them.
	for _, enc := range []string{gzip.Name, "deflate"} {
		if _, err := c.ModelInfer(authed, req("toy", 2), grpc.UseCompressor(enc)); err != nil {
			t.Errorf("%s request: %v", enc, err)
		}
		// 1.6 KB of zeros that compress to a few bytes: held to the limit
		// once inflated.
		if _, err := c.ModelInfer(authed, req("toy", 200), grpc.UseCompressor(enc)); status.Code(err) != codes.ResourceExhausted {
			t.Errorf("%s request inflating past --max-body: %v", enc, err)
		}
	}
	// The request metrics count gRPC calls by the HTTP status they map from
	// (a panic, as on HTTP, only as a panic); grpc_server_handled_total by
	// code every call that reached a handler (not the one over the size
	// limit, which grpc-go refuses as it reads it).
	r := ts.do(t, "GET", "/metrics", "", nil)
	for _, want := range []string{`code="429",model="full"`, `code="401",model="_unknown"`, `code="200",model="toy"`, "fastinfer_handler_panics_total 1",
		`grpc_server_handled_total{grpc_code="ResourceExhausted",grpc_method="ModelInfer",grpc_service="inference.GRPCInferenceService",grpc_type="unary"} 1`,
		`grpc_server_handled_total{grpc_code="Internal",grpc_method="ModelInfer",grpc_service="inference.GRPCInferenceService",grpc_type="unary"} 1`,
		`grpc_server_handled_total{grpc_code="OK",grpc_method="ModelInfer",grpc_service="inference.GRPCInferenceService",grpc_type="unary"} 3`} {
		if !strings.Contains(r.body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestGRPCCancelReachesBatcher: a call whose client gives up ends its wait
// in the batcher, which sees the call's context end.
func TestGRPCCancelReachesBatcher(t *testing.T) {
	m := fakeModel("slow", 1)
	var sawEnd atomic.Bool
	var goneAsked atomic.Bool
	entered := make(chan struct{}, 1)
	m.Infer = func(ctx context.Context, _ []float32, _ int, _ []float32, o batching.RequestOptions) (batching.Timing, error) {
		entered <- struct{}{}
		select {
		case <-ctx.Done():
		case <-time.After(3 * time.Second): // the call's context never ended
			return batching.Timing{}, errors.New("not cancelled")
		}
		sawEnd.Store(true)
		goneAsked.Store(o.Gone != nil && o.Gone())
		return batching.Timing{}, fmt.Errorf("waiting in the queue: %w", ctx.Err())
	}
	m.InferBytes = nil
	ts := newTestServer(t, Options{}, m)
	c := ts.grpcClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.ModelInfer(ctx, &inferpb.ModelInferRequest{ModelName: "slow", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{
		grpcInput([]int64{1, 2}, "FP32", &inferpb.InferTensorContents{Fp32Contents: []float32{1, 2}})}})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("got %v", err)
	}
	<-entered
	// The handler records the failure after the batcher returns, which may
	// be after the client has its answer.
	deadline := time.Now().Add(5 * time.Second)
	for (!sawEnd.Load() || m.stats.fail.count.Load() == 0) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !sawEnd.Load() || !goneAsked.Load() {
		t.Errorf("the batcher saw the call end: %v; Gone said so: %v", sawEnd.Load(), goneAsked.Load())
	}
	if n := m.stats.fail.count.Load(); n != 1 {
		t.Errorf("%d failures counted", n)
	}
}

// TestGRPCStatistics: ModelStatistics reports what GET .../stats does.
func TestGRPCStatistics(t *testing.T) {
	ts := newTestServer(t, Options{}, fakeModel("toy", 1), fakeModel("toy", 2), fakeModel("other", 1))
	c := ts.grpcClient(t)
	ctx := context.Background()
	for range 3 {
		if _, err := c.ModelInfer(ctx, &inferpb.ModelInferRequest{ModelName: "toy", ModelVersion: "2", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{
			grpcInput([]int64{2, 2}, "FP32", &inferpb.InferTensorContents{Fp32Contents: []float32{1, 2, 3, 4}})}}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name, version string
		http          string
		models        int
	}{
		{"toy", "2", "/v2/models/toy/versions/2/stats", 1},
		{"toy", "", "/v2/models/toy/stats", 2},
		{"", "", "/v2/models/stats", 3},
	}
	for _, tt := range tests {
		got, err := c.ModelStatistics(ctx, &inferpb.ModelStatisticsRequest{Name: tt.name, Version: tt.version})
		if err != nil {
			t.Fatal(err)
		}
		r := ts.do(t, "GET", tt.http, "", nil)
		var want struct {
			ModelStats []modelStat `json:"model_stats"`
		}
		if err := json.Unmarshal([]byte(r.body), &want); err != nil {
			t.Fatal(err)
		}
		if len(got.ModelStats) != tt.models || len(want.ModelStats) != tt.models {
			t.Fatalf("%s: gRPC %d models, HTTP %d, want %d", tt.http, len(got.ModelStats), len(want.ModelStats), tt.models)
		}
		for i, w := range want.ModelStats {
			g := got.ModelStats[i]
			is := g.InferenceStats
			gotS := fmt.Sprint(g.Name, g.Version, g.LastInference, g.InferenceCount, g.ExecutionCount,
				is.Success.Count, is.Success.Ns, is.Queue.Count, is.Queue.Ns, is.ComputeInfer.Count, is.ComputeInfer.Ns, is.Fail.Count)
			ws := w.InferenceStats
			wantS := fmt.Sprint(w.Name, w.Version, w.LastInference, w.InferenceCount, w.ExecutionCount,
				ws.Success.Count, ws.Success.Ns, ws.Queue.Count, ws.Queue.Ns, ws.ComputeInfer.Count, ws.ComputeInfer.Ns, ws.Fail.Count)
			if gotS != wantS {
				t.Errorf("%s model %d: gRPC %s, HTTP %s", tt.http, i, gotS, wantS)
			}
		}
	}
	st, _ := c.ModelStatistics(ctx, &inferpb.ModelStatisticsRequest{Name: "toy", Version: "2"})
	if s := st.ModelStats[0]; s.InferenceCount != 6 || s.InferenceStats.Success.Count != 3 || s.InferenceStats.Queue.Ns != uint64(3*time.Millisecond) {
		t.Errorf("after 3 calls of 2 rows: %v", s)
	}
	if _, err := c.ModelStatistics(ctx, &inferpb.ModelStatisticsRequest{Name: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("unknown model: %v", err)
	}
}

func TestGRPCRepository(t *testing.T) {
	repo := &fakeRepo{held: map[string]bool{"toy": true, "other": true, "broken": true}}
	ts := newTestServer(t, Options{Repository: repo, AdminToken: "s3cret"}, fakeModel("toy", 1))
	repo.srv = ts.srv
	c := ts.grpcClient(t)
	admin := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer s3cret")
	if _, err := c.RepositoryIndex(context.Background(), &inferpb.RepositoryIndexRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("index without the token: %v", err)
	}
	index := func(ready bool) string {
		t.Helper()
		r, err := c.RepositoryIndex(admin, &inferpb.RepositoryIndexRequest{Ready: ready})
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, m := range r.Models {
			s = append(s, m.Name+":"+m.Version+":"+m.State)
		}
		return strings.Join(s, " ")
	}
	if got := index(false); got != "broken::UNAVAILABLE other::UNAVAILABLE toy:1:READY" {
		t.Errorf("index %s", got)
	}
	if got := index(true); got != "toy:1:READY" {
		t.Errorf("ready index %s", got)
	}
	steps := []struct {
		load bool
		name string
		code codes.Code
	}{
		{true, "other", codes.OK},
		{true, "missing", codes.NotFound},
		{true, "broken", codes.InvalidArgument},
		{false, "toy", codes.OK},
	}
	for _, s := range steps {
		var err error
		if s.load {
			_, err = c.RepositoryModelLoad(admin, &inferpb.RepositoryModelLoadRequest{ModelName: s.name})
		} else {
			_, err = c.RepositoryModelUnload(admin, &inferpb.RepositoryModelUnloadRequest{ModelName: s.name})
		}
		if status.Code(err) != s.code {
			t.Errorf("load=%v %s: %v, want %s", s.load, s.name, err, s.code)
		}
	}
	if got := index(true); got != "other:1:READY" {
		t.Errorf("after load and unload: %s", got)
	}
	_, err := c.RepositoryModelLoad(admin, &inferpb.RepositoryModelLoadRequest{ModelName: "toy", Parameters: map[string]*inferpb.ModelRepositoryParameter{
		"config": {ParameterChoice: &inferpb.ModelRepositoryParameter_StringParam{StringParam: "{}"}}}})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("load with a config override: %v", err)
	}

	// Without model control.
	plain := newTestServer(t, Options{}, fakeModel("toy", 1)).grpcClient(t)
	if _, err := plain.RepositoryIndex(context.Background(), &inferpb.RepositoryIndexRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("index without model control: %v", err)
	}
}

// TestGRPCShutdownFinishesInFlight: Shutdown lets a gRPC call in flight
// finish, and refuses new ones.
func TestGRPCShutdownFinishesInFlight(t *testing.T) {
	m := fakeModel("toy", 1)
	release := make(chan struct{})
	entered := make(chan struct{})
	infer := m.Infer
	m.Infer = func(ctx context.Context, in []float32, rows int, out []float32, o batching.RequestOptions) (batching.Timing, error) {
		close(entered)
		<-release
		return infer(ctx, in, rows, out, o)
	}
	m.InferBytes = nil
	ts := newTestServer(t, Options{}, m)
	c := ts.grpcClient(t)
	done := make(chan error, 1)
	go func() {
		_, err := c.ModelInfer(context.Background(), &inferpb.ModelInferRequest{ModelName: "toy", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{
			grpcInput([]int64{1, 2}, "FP32", &inferpb.InferTensorContents{Fp32Contents: []float32{1, 2}})}})
		done <- err
	}()
	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- ts.srv.Shutdown(context.Background()) }()
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned before the call finished: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Errorf("the call in flight: %v", err)
	}
	if err := <-stopped; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestGRPCStream: every request on a ModelStreamInfer stream is answered on
// it, by id, with the unary call's answer or its error message; a panic
// answers Internal and the stream goes on.
func TestGRPCStream(t *testing.T) {
	panicky := fakeModel("panicky", 1)
	panicky.Infer = func(context.Context, []float32, int, []float32, batching.RequestOptions) (batching.Timing, error) {
		panic("kernel bug")
	}
	panicky.InferBytes = nil
	ts := newTestServer(t, Options{}, fakeModel("toy", 1), panicky)
	c := ts.grpcClient(t)
	stream, err := c.ModelStreamInfer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	const n = 40
	want := map[string]string{} // id → the answer's first score, or its error
	for i := range n {
		id := strconv.Itoa(i)
		req := &inferpb.ModelInferRequest{ModelName: "toy", Id: id, Inputs: []*inferpb.ModelInferRequest_InferInputTensor{
			grpcInput([]int64{1, 2}, "FP32", nil)}, RawInputContents: [][]byte{fp32Bytes(float32(100*i), 1)}}
		want[id] = fmt.Sprint(float32(i)) // the fake's first output is w/100
		switch i % 10 {
		case 3:
			req.ModelName, want[id] = "nope", `error: model "nope" is not served`
		case 7:
			req.Inputs[0].Shape, want[id] = []int64{1, 3}, "error: shape [1,3] does not match the model's [-1,2]"
		case 9:
			req.ModelName, want[id] = "panicky", "error: internal server error"
			req.Inputs[0].Contents, req.RawInputContents = &inferpb.InferTensorContents{Fp32Contents: []float32{1, 2}}, nil
		}
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("after %d answers: %v", len(got), err)
		}
		ir := r.InferResponse
		if r.ErrorMessage != "" {
			got[ir.Id] = "error: " + r.ErrorMessage
			continue
		}
		got[ir.Id] = fmt.Sprint(math.Float32frombits(binary.LittleEndian.Uint32(ir.RawOutputContents[0])))
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("answers by id:\n got %v\nwant %v", got, want)
	}
	if !strings.Contains(ts.logs.String(), "kernel bug") {
		t.Error("the panic was not logged")
	}
	r := ts.do(t, "GET", "/metrics", "", nil)
	for _, want := range []string{`fastinfer_requests_total{code="200",model="toy",version="1"} 28`, `fastinfer_requests_total{code="400",model="toy",version="1"} 4`,
		`grpc_server_handled_total{grpc_code="OK",grpc_method="ModelStreamInfer",grpc_service="inference.GRPCInferenceService",grpc_type="bidi_stream"} 1`} {
		if !strings.Contains(r.body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	held := 0
	heldBufs.Range(func(any, any) bool { held++; return true })
	if held != 0 {
		t.Errorf("%d received requests still held after the stream", held)
	}
}

// TestGRPCShutdownEndsHealthWatch: a client watching the health service
// (a stream that never ends by itself) sees NOT_SERVING and its stream
// end when the server shuts down, rather than holding Shutdown until its
// deadline.
func TestGRPCShutdownEndsHealthWatch(t *testing.T) {
	ts := newTestServer(t, Options{}, fakeModel("toy", 1))
	w, err := healthpb.NewHealthClient(ts.grpcConn(t)).Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := w.Recv(); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first status %v %v", r, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v after %s", err, time.Since(start))
	}
	for {
		r, err := w.Recv()
		if err != nil {
			break
		}
		if r.Status != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("status %v during shutdown", r.Status)
		}
	}
}

// TestGRPCShutdownEndsIdleStream: an inference stream a client keeps open
// (tritonclient's start_stream) ends with Unavailable when the server
// shuts down, its answered requests answered, instead of holding Shutdown
// until its deadline.
func TestGRPCShutdownEndsIdleStream(t *testing.T) {
	ts := newTestServer(t, Options{}, fakeModel("toy", 1))
	stream, err := ts.grpcClient(t).ModelStreamInfer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	req := &inferpb.ModelInferRequest{ModelName: "toy", Id: "a", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{
		grpcInput([]int64{1, 2}, "FP32", &inferpb.InferTensorContents{Fp32Contents: []float32{1, 2}})}}
	if err := stream.Send(req); err != nil {
		t.Fatal(err)
	}
	if r, err := stream.Recv(); err != nil || r.InferResponse.GetId() != "a" || r.ErrorMessage != "" {
		t.Fatalf("answer %v %v", r, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v after %s", err, time.Since(start))
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("the idle stream after shutdown: %v", err)
	}
}

// TestGRPCStreamClientCancels: a stream whose client cancels it ends on
// the server too, whatever it was waiting for (a handler left waiting
// would hold shutdown forever).
func TestGRPCStreamClientCancels(t *testing.T) {
	ts := newTestServer(t, Options{}, fakeModel("toy", 1))
	c := ts.grpcClient(t)
	for range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		stream, err := c.ModelStreamInfer(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&inferpb.ModelInferRequest{ModelName: "toy", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{
			grpcInput([]int64{1, 2}, "FP32", &inferpb.InferTensorContents{Fp32Contents: []float32{1, 2}})}}); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	// Each handler has returned once its stream is counted.
	const want = `grpc_server_handled_total{grpc_code="Canceled",grpc_method="ModelStreamInfer",grpc_service="inference.GRPCInferenceService",grpc_type="bidi_stream"} 20`
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		r := ts.do(t, "GET", "/metrics", "", nil)
		if strings.Contains(r.body, want) {
			break
		}
		if time.Now().After(deadline) {
			i := strings.Index(r.body, `grpc_method="ModelStreamInfer"`)
			t.Fatalf("handlers of cancelled streams still running: want %s, metrics say %.200s", want, r.body[max(i-60, 0):])
		}
	}
}

// TestGRPCStreamLimit: one connection carries at most 1024 calls at once;
// the rest wait on the client's side, and all are answered.
func TestGRPCStreamLimit(t *testing.T) {
	m := fakeModel("toy", 1)
	var inside, most atomic.Int64
	release := make(chan struct{})
	infer := m.Infer
	m.Infer = func(ctx context.Context, in []float32, rows int, out []float32, o batching.RequestOptions) (batching.Timing, error) {
		n := inside.Add(1)
		for p := most.Load(); n > p && !most.CompareAndSwap(p, n); p = most.Load() {
		}
		<-release
		inside.Add(-1)
		return infer(ctx, in, rows, out, o)
	}
	ts := newTestServer(t, Options{}, m)
	c := ts.grpcClient(t) // one connection
	const calls = 1100
	errs := make(chan error, calls)
	for range calls {
		go func() {
			_, err := c.ModelInfer(context.Background(), &inferpb.ModelInferRequest{ModelName: "toy", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{
				grpcInput([]int64{1, 2}, "FP32", &inferpb.InferTensorContents{Fp32Contents: []float32{1, 2}})}})
			errs <- err
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); inside.Load() < 1024 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // room for a 1025th to get in, were it let
	got := most.Load()
	close(release)
	for range calls {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got != 1024 {
		t.Errorf("%d calls ran at once on one connection, want the limit, 1024", got)
	}
}
