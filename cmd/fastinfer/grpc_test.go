package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"

	"fastinfer/server/inferpb"
)

// dialGRPC connects to the gRPC API of a server startServe started.
func dialGRPC(t *testing.T, base string) inferpb.GRPCInferenceServiceClient {
	t.Helper()
	addr, ok := grpcAddrs.Load(base)
	if !ok || addr.(string) == "" {
		t.Fatalf("the server at %s has no gRPC address", base)
	}
	conn, err := grpc.NewClient(addr.(string), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return inferpb.NewGRPCInferenceServiceClient(conn)
}

// TestGRPCEndToEnd serves the default model and talks to it over gRPC the
// way perf_analyzer's and tritonclient's gRPC backends do (read from
// perf_analyzer's PerfAnalyzer, ModelParser, InferenceProfiler and its
// Triton gRPC backend): metadata, then config, the server's extensions
// (statistics must be one), statistics around the requests, and inputs as
// raw_input_contents with every output asked for by name. The scores are
// the HTTP API's for the same tensors.
func TestGRPCEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	base, _, stop := startServe(t, fashionRepo(t))
	defer stop()
	c := dialGRPC(t, base)
	ctx := context.Background()
	const name = "fashion-resnet"

	if r, err := c.ServerReady(ctx, &inferpb.ServerReadyRequest{}); err != nil || !r.Ready {
		t.Fatalf("ServerReady: %v %v", r, err)
	}
	// perf_analyzer reads the server's statistics only if it lists them.
	if sm, err := c.ServerMetadata(ctx, &inferpb.ServerMetadataRequest{}); err != nil || !slices.Contains(sm.Extensions, "statistics") {
		t.Fatalf("ServerMetadata: %v %v", sm, err)
	}
	meta, err := c.ModelMetadata(ctx, &inferpb.ModelMetadataRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	var httpMeta struct {
		Inputs []struct {
			Name     string  `json:"name"`
			Datatype string  `json:"datatype"`
			Shape    []int64 `json:"shape"`
		} `json:"inputs"`
	}
	getJSON(t, base+"/v2/models/"+name, &httpMeta)
	in := meta.Inputs[0]
	if len(meta.Inputs) != 1 || in.Name != httpMeta.Inputs[0].Name || fmt.Sprint(in.Shape) != fmt.Sprint(httpMeta.Inputs[0].Shape) {
		t.Fatalf("gRPC metadata %v, HTTP %+v", meta.Inputs, httpMeta.Inputs)
	}
	cfg, err := c.ModelConfig(ctx, &inferpb.ModelConfigRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	var httpCfg struct {
		MaxBatchSize int32 `json:"max_batch_size"`
	}
	getJSON(t, base+"/v2/models/"+name+"/config", &httpCfg)
	if c := cfg.Config; c.MaxBatchSize != httpCfg.MaxBatchSize || c.MaxBatchSize < 4 || c.GetDynamicBatching() == nil ||
		fmt.Sprint(c.Input[0].Dims) != fmt.Sprint(in.Shape[1:]) {
		t.Fatalf("config %v, HTTP max_batch_size %d", c, httpCfg.MaxBatchSize)
	}
	per := 1
	for _, d := range in.Shape[1:] {
		per *= int(d)
	}
	const rows = 3
	x := make([]float32, rows*per)
	for i := range x {
		x[i] = float32(math.Sin(float64(i))) // a fixed, finite input
	}
	raw := make([]byte, 0, 4*len(x))
	for _, v := range x {
		raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(v))
	}

	before, err := c.ModelStatistics(ctx, &inferpb.ModelStatisticsRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	req := &inferpb.ModelInferRequest{
		ModelName:        name,
		Inputs:           []*inferpb.ModelInferRequest_InferInputTensor{{Name: in.Name, Datatype: "FP32", Shape: []int64{rows, in.Shape[1], in.Shape[2], in.Shape[3]}}},
		Outputs:          []*inferpb.ModelInferRequest_InferRequestedOutputTensor{{Name: meta.Outputs[0].Name}},
		RawInputContents: [][]byte{raw},
		// perf_analyzer sends this on every request; it asks nothing of a
		// server whose models are not decoupled.
		Parameters: map[string]*inferpb.InferParameter{
			"triton_enable_empty_final_response": {ParameterChoice: &inferpb.InferParameter_BoolParam{BoolParam: true}}},
	}
	resp, err := c.ModelInfer(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	// tritonclient.grpc's compression_algorithm="gzip".
	if _, err := c.ModelInfer(ctx, req, grpc.UseCompressor(gzip.Name)); err != nil {
		t.Fatalf("gzip: %v", err)
	}
	after, err := c.ModelStatistics(ctx, &inferpb.ModelStatisticsRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	b, a := before.ModelStats[0], after.ModelStats[0]
	if a.InferenceCount-b.InferenceCount != 2*rows || a.InferenceStats.Success.Count-b.InferenceStats.Success.Count != 2 ||
		a.InferenceStats.Queue.Count-b.InferenceStats.Queue.Count != 2 {
		t.Errorf("statistics moved from %v to %v for 2 calls of %d rows", b, a, rows)
	}

	got := resp.RawOutputContents[0]
	classes := int(meta.Outputs[0].Shape[1])
	if o := resp.Outputs[0]; o.Datatype != "FP32" || fmt.Sprint(o.Shape) != fmt.Sprint([]int64{rows, int64(classes)}) || len(got) != 4*rows*classes {
		t.Fatalf("output %v with %d bytes", o, len(got))
	}
	// The same tensor over HTTP, as JSON.
	var sb strings.Builder
	fmt.Fprintf(&sb, `{"inputs":[{"name":%q,"datatype":"FP32","shape":[%d,%d,%d,%d],"data":[`, in.Name, rows, in.Shape[1], in.Shape[2], in.Shape[3])
	for i, v := range x {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(strconv.FormatFloat(float64(v), 'g', -1, 32))
	}
	sb.WriteString("]}]}")
	hr, err := http.Post(base+"/v2/models/"+name+"/infer", "application/json", strings.NewReader(sb.String()))
	if err != nil {
		t.Fatal(err)
	}
	defer hr.Body.Close()
	var h struct {
		Outputs []struct {
			Data []float32 `json:"data"`
		} `json:"outputs"`
	}
	if err := json.NewDecoder(hr.Body).Decode(&h); err != nil || hr.StatusCode != 200 {
		t.Fatalf("HTTP infer: %d %v", hr.StatusCode, err)
	}
	for i, want := range h.Outputs[0].Data {
		v := math.Float32frombits(binary.LittleEndian.Uint32(got[4*i:]))
		// Batches of other sizes may round differently in the last bits.
		if math.Abs(float64(v-want)) > 1e-4*max(1, math.Abs(float64(want))) {
			t.Fatalf("score %d: gRPC %g, HTTP %g", i, v, want)
		}
	}

	// The same request three times on one stream (tritonclient's
	// async_stream_infer): three answers, each the unary call's.
	stream, err := c.ModelStreamInfer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		req.Id = strconv.Itoa(i)
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	req.Id = ""
	stream.CloseSend()
	for range 3 {
		r, err := stream.Recv()
		if err != nil || r.ErrorMessage != "" {
			t.Fatalf("stream: %v %q", err, r.GetErrorMessage())
		}
		b := r.InferResponse.RawOutputContents[0]
		for i := 0; i+4 <= len(got); i += 4 {
			v, w := math.Float32frombits(binary.LittleEndian.Uint32(b[i:])), math.Float32frombits(binary.LittleEndian.Uint32(got[i:]))
			if math.Abs(float64(v-w)) > 1e-4*max(1, math.Abs(float64(w))) { // batched otherwise: see below
				t.Fatalf("stream answer %s, score %d: %g, the unary call's %g", r.InferResponse.Id, i/4, v, w)
			}
		}
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("after the answers: %v", err)
	}

	// Classification, as tritonclient asks for it: BYTES "score:index:label".
	req.Outputs[0].Parameters = map[string]*inferpb.InferParameter{"classification": {ParameterChoice: &inferpb.InferParameter_Int64Param{Int64Param: 1}}}
	resp, err = c.ModelInfer(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	top := resp.RawOutputContents[0]
	n := binary.LittleEndian.Uint32(top)
	parts := strings.Split(string(top[4:4+n]), ":")
	if len(parts) != 3 || parts[2] == "" {
		t.Fatalf("classification %q", top[4:4+n])
	}
	idx, _ := strconv.Atoi(parts[1])
	for j, v := range h.Outputs[0].Data[:classes] {
		if v > h.Outputs[0].Data[idx] {
			t.Fatalf("classification says class %d, HTTP's scores put %d higher", idx, j)
		}
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	r, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	if r.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, r.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

// grpcPython is a Python with grpcio and protobuf (Debian's python3-grpcio
// and python3-protobuf, which scripts/deps.sh installs), or "".
func grpcPython() string {
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(py, "-c", "import grpc, google.protobuf").Run() == nil {
			return py
		}
	}
	return ""
}

// TestGRPCPythonClient: a client on gRPC's C core (grpcio, what
// tritonclient.grpc and perf_analyzer are built on), not grpc-go, talks to
// the server: metadata, config, inference raw and compressed with gzip and
// with deflate, an unknown model, and a stream with a failing request.
func TestGRPCPythonClient(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	py := grpcPython()
	if py == "" {
		t.Skip("no python3 with grpcio and protobuf (scripts/deps.sh installs python3-grpcio and python3-protobuf)")
	}
	base, _, stop := startServe(t, fashionRepo(t), "--allow-client-shm")
	defer stop()
	addr, _ := grpcAddrs.Load(base)
	out, err := exec.Command(py, filepath.Join("testdata", "grpcpy", "client.py"), addr.(string), "fashion-resnet").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var got struct {
		Live  bool
		Input struct {
			Name, Datatype string
			Shape          []int64
		}
		MaxBatchSize int `json:"max_batch_size"`
		Infer        map[string]struct {
			ID, Datatype string
			Shape        []int64
			Top          []string
		}
		UnknownModel string `json:"unknown_model"`
		Stream       map[string]string
		Shm          struct {
			Regions    []string
			KeyOK      bool `json:"key_ok"`
			Top        []string
			RawOutputs int `json:"raw_outputs"`
			Left       int
		}
		CUDAShm struct {
			Regions           int
			Register, Details string
		} `json:"cuda_shm"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !got.Live || got.Input.Name != "data" || fmt.Sprint(got.Input.Shape) != "[-1 1 28 28]" || got.MaxBatchSize != 8 || got.UnknownModel != "NOT_FOUND" {
		t.Errorf("metadata, config or errors: %s", out)
	}
	// An all-zero image is a T-shirt to the default model (the README's
	// example), whatever the compression.
	tshirt := func(s string) bool { return strings.HasSuffix(s, ":0:T-shirt/top") }
	for _, c := range []string{"none", "gzip", "deflate"} {
		a, ok := got.Infer[c]
		if !ok || a.ID != "py-1" || a.Datatype != "BYTES" || fmt.Sprint(a.Shape) != "[2 1]" || len(a.Top) != 2 || !tshirt(a.Top[0]) || a.Top[0] != a.Top[1] {
			t.Errorf("infer, %s: %+v", c, a)
		}
	}
	if sh := got.Shm; fmt.Sprint(sh.Regions) != "[py-in py-out]" || !sh.KeyOK || len(sh.Top) != 2 || !tshirt(sh.Top[0]) || sh.Top[0] != sh.Top[1] || sh.RawOutputs != 0 || sh.Left != 0 {
		t.Errorf("shared memory: %+v", sh)
	}
	// CUDA shared memory is served on a GPU host only (an unknown method
	// would be Unimplemented too, hence the message); a handle of zeros
	// opens nowhere.
	c := got.CUDAShm
	unserved := c.Register == "UNIMPLEMENTED" && strings.Contains(c.Details, "CUDA shared memory is not served")
	if c.Regions != 0 || !unserved && c.Register != "INVALID_ARGUMENT" {
		t.Errorf("CUDA shared memory: %+v", c)
	}
	if len(got.Stream) != 4 || !tshirt(got.Stream["s0"]) || !tshirt(got.Stream["s2"]) || got.Stream["s-bad"] != `model "no-such-model" is not served` {
		t.Errorf("stream: %v", got.Stream)
	}
}
