package server

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"fastinfer/batching"
	"fastinfer/server/inferpb"
)

// fakeCUDA stands in for the driver's IPC calls: each handle it knows
// names a byte slice standing in for device memory. It counts the
// handles open, so that a test can see every region closed.
type fakeCUDA struct {
	mu      sync.Mutex
	mem     map[string][]byte
	open    int
	copyErr error // every copy's answer, when set
}

// alloc makes n bytes of "device memory" and returns its 64-byte handle.
func (f *fakeCUDA) alloc(name string, n int) (handle []byte, mem []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mem == nil {
		f.mem = map[string][]byte{}
	}
	handle = make([]byte, 64)
	copy(handle, name)
	mem = make([]byte, n)
	f.mem[string(handle)] = mem
	return handle, mem
}

func (f *fakeCUDA) OpenIPC(handle []byte, device int, size int64) (CUDARegion, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	mem, ok := f.mem[string(handle)]
	switch {
	case len(handle) != 64:
		return nil, fmt.Errorf("an IPC handle is 64 bytes, got %d", len(handle))
	case !ok || device != 0:
		return nil, errors.New("cuIpcOpenMemHandle: CUDA_ERROR_INVALID_VALUE")
	case size > int64(len(mem)):
		return nil, fmt.Errorf("the allocation holds %d bytes, not %d", len(mem), size)
	}
	f.open++
	return &fakeCUDARegion{f: f, mem: mem[:size]}, nil
}

func (f *fakeCUDA) opened() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.open
}

type fakeCUDARegion struct {
	f      *fakeCUDA
	mem    []byte
	closed bool // under f.mu
}

func (r *fakeCUDARegion) copy(b []byte, off int64, toDevice bool) error {
	r.f.mu.Lock()
	defer r.f.mu.Unlock()
	switch {
	case r.closed:
		return errors.New("copy through a closed handle")
	case r.f.copyErr != nil:
		return r.f.copyErr
	case off < 0 || int64(len(b)) > int64(len(r.mem))-off:
		return fmt.Errorf("copy of %d bytes at %d outside %d", len(b), off, len(r.mem))
	}
	if toDevice {
		copy(r.mem[off:], b)
	} else {
		copy(b, r.mem[off:])
	}
	return nil
}

func (r *fakeCUDARegion) ReadAt(dst []byte, off int64) error  { return r.copy(dst, off, false) }
func (r *fakeCUDARegion) WriteAt(src []byte, off int64) error { return r.copy(src, off, true) }
func (r *fakeCUDARegion) Close() error {
	r.f.mu.Lock()
	defer r.f.mu.Unlock()
	if r.closed {
		return errors.New("closed twice")
	}
	r.closed = true
	r.f.open--
	return nil
}

// regionParams are a tensor's parameters naming size bytes at the start of a
// region.
func regionParams(region string, size int64) map[string]*inferpb.InferParameter {
	return map[string]*inferpb.InferParameter{
		"shared_memory_region":    {ParameterChoice: &inferpb.InferParameter_StringParam{StringParam: region}},
		"shared_memory_byte_size": int64Param(size),
	}
}

// toyInferShm asks the toy model over gRPC for its [2,2] input from region
// "in" and, when out is set, its output into outSize bytes of region out.
func toyInferShm(ctx context.Context, c inferpb.GRPCInferenceServiceClient, out string, outSize int64) (*inferpb.ModelInferResponse, error) {
	in := grpcInput([]int64{2, 2}, "FP32", nil)
	in.Parameters = regionParams("in", 16)
	r := &inferpb.ModelInferRequest{ModelName: "toy", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{in}}
	if out != "" {
		r.Outputs = []*inferpb.ModelInferRequest_InferRequestedOutputTensor{{Name: "logits", Parameters: regionParams(out, outSize)}}
	}
	return c.ModelInfer(ctx, r)
}

// hasMetric checks that /metrics has the line want.
func (ts *testServer) hasMetric(t *testing.T, want string) {
	t.Helper()
	if body := ts.do(t, "GET", "/metrics", "", nil).body; !strings.Contains(body, want+"\n") {
		t.Errorf("/metrics has no %q", want)
	}
}

// wantToyAnswer checks a raw gRPC answer of the toy model to toyIn.
func wantToyAnswer(t *testing.T, resp *inferpb.ModelInferResponse, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if got := floatsLE(resp.RawOutputContents[0]); fmt.Sprint(got) != fmt.Sprint(toyOut) {
		t.Fatalf("answer %v, want %v", got, toyOut)
	}
}

func (ts *testServer) registerCUDA(t testing.TB, name string, handle []byte, device, size int64) response {
	t.Helper()
	return ts.do(t, "POST", "/v2/cudasharedmemory/region/"+name+"/register", "application/json",
		fmt.Appendf(nil, `{"raw_handle":{"b64":%q},"device_id":%d,"byte_size":%d}`, base64.StdEncoding.EncodeToString(handle), device, size))
}

func TestCUDAShmHTTP(t *testing.T) {
	cu := &fakeCUDA{}
	ts := newTestServer(t, Options{AllowClientShm: true, CUDAShm: cu}, fakeModel("toy", 1))
	hIn, memIn := cu.alloc("in", 1024)
	hOut, memOut := cu.alloc("out", 4096)
	copy(memIn[16:], toyIn)
	if r := ts.registerCUDA(t, "in", hIn, 0, 1024); r.status != 200 {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	if r := ts.registerCUDA(t, "out", hOut, 0, 1000); r.status != 200 {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	if cu.opened() != 2 {
		t.Fatalf("%d handles open, want 2", cu.opened())
	}
	ts.hasMetric(t, "fastinfer_cuda_shm_regions 2")
	ts.hasMetric(t, "fastinfer_cuda_shm_region_bytes 2024")
	ts.hasMetric(t, "fastinfer_shm_regions 0")
	golden(t, "cuda_shm_status", ts.do(t, "GET", "/v2/cudasharedmemory/status", "", nil))
	golden(t, "cuda_shm_status_one", ts.do(t, "GET", "/v2/cudasharedmemory/region/out/status", "", nil))
	golden(t, "v2_server_metadata_cuda_shm", ts.do(t, "GET", "/v2", "", nil))
	// The system extension's calls see only system regions.
	if r := ts.do(t, "GET", "/v2/systemsharedmemory/status", "", nil); r.body != "[]\n" {
		t.Errorf("system status lists CUDA regions: %s", r.body)
	}

	in := `{"name":"data","datatype":"FP32","shape":[2,2],"parameters":{"shared_memory_region":"in","shared_memory_offset":16,"shared_memory_byte_size":16}}`
	plain := ts.do(t, "POST", "/v2/models/toy/infer", "application/json", []byte(`{"id":"a","inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"data":[300,200,50,7]}]}`))
	r := ts.do(t, "POST", "/v2/models/toy/infer", "application/json", []byte(`{"id":"a","inputs":[`+in+`]}`))
	if r.status != 200 || r.body != plain.body {
		t.Fatalf("input from device memory: %d %s\nwant %s", r.status, r.body, plain.body)
	}
	// A datatype the model does not take is converted from the copy.
	in16 := `{"name":"data","datatype":"FP16","shape":[2,2],"parameters":{"shared_memory_region":"in","shared_memory_offset":100,"shared_memory_byte_size":8}}`
	copy(memIn[100:], []byte{0xb0, 0x5c, 0x40, 0x5a, 0x40, 0x52, 0x00, 0x47}) // 300, 200, 50, 7 as halves
	if r := ts.do(t, "POST", "/v2/models/toy/infer", "application/json", []byte(`{"id":"a","inputs":[`+in16+`]}`)); r.status != 200 || r.body != plain.body {
		t.Fatalf("FP16 input from device memory: %d %s\nwant %s", r.status, r.body, plain.body)
	}

	r = ts.do(t, "POST", "/v2/models/toy/infer", "application/json", []byte(`{"inputs":[`+in+`],"outputs":[{"name":"logits","parameters":{"shared_memory_region":"out","shared_memory_offset":12,"shared_memory_byte_size":64}}]}`))
	golden(t, "cuda_shm_infer_output", r)
	if got := floatsLE(memOut[12 : 12+32]); fmt.Sprint(got) != fmt.Sprint(toyOut) {
		t.Fatalf("the region holds %v, want %v", got, toyOut)
	}
	r = ts.do(t, "POST", "/v2/models/toy/infer", "application/json", []byte(`{"inputs":[`+in+`],"outputs":[{"name":"logits","parameters":{"classification":1,"shared_memory_region":"out","shared_memory_byte_size":1000}}]}`))
	if r.status != 200 {
		t.Fatalf("classification into device memory: %d %s", r.status, r.body)
	}
	if want := "\x07\x00\x00\x003:0:cat\x09\x00\x00\x000.5:0:cat"; string(memOut[:len(want)]) != want {
		t.Fatalf("the region holds %q, want %q", memOut[:len(want)], want)
	}

	// A CUDA region is unregistered where it was registered.
	if r := ts.do(t, "POST", "/v2/systemsharedmemory/region/in/unregister", "", nil); r.status != 400 || !strings.Contains(r.body, `region \"in\" is a CUDA shared memory region; unregister it at /v2/cudasharedmemory`) {
		t.Fatalf("system unregister of a CUDA region: %d %s", r.status, r.body)
	}
	for range 2 {
		if r := ts.do(t, "POST", "/v2/cudasharedmemory/region/in/unregister", "", nil); r.status != 200 {
			t.Fatalf("unregister: %d %s", r.status, r.body)
		}
	}
	if cu.opened() != 1 {
		t.Fatalf("%d handles open after unregistering one of 2", cu.opened())
	}
	r = ts.do(t, "POST", "/v2/models/toy/infer", "application/json", []byte(`{"inputs":[`+in+`]}`))
	if r.status != 400 || !strings.Contains(r.body, `no shared memory region \"in\" is registered`) {
		t.Fatalf("after unregister: %d %s", r.status, r.body)
	}
	if r := ts.do(t, "POST", "/v2/cudasharedmemory/unregister", "", nil); r.status != 200 {
		t.Fatalf("unregister all: %d %s", r.status, r.body)
	}
	if r := ts.do(t, "GET", "/v2/cudasharedmemory/status", "", nil); r.body != "[]\n" || cu.opened() != 0 {
		t.Fatalf("after unregistering all: %s, %d open", r.body, cu.opened())
	}
	ts.hasMetric(t, "fastinfer_cuda_shm_regions 0")
}

func TestCUDAShmErrors(t *testing.T) {
	cu := &fakeCUDA{}
	ts := newTestServer(t, Options{AllowClientShm: true, CUDAShm: cu}, fakeModel("toy", 1))
	h, mem := cu.alloc("r", 64)
	copy(mem, toyIn)
	if r := ts.registerCUDA(t, "r", h, 0, 64); r.status != 200 {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	key, _ := shmObject(t, 4096)
	if r := ts.register(t, "sys", key, 0, 64); r.status != 200 {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	other, _ := cu.alloc("other", 64)
	b64 := base64.StdEncoding.EncodeToString
	body := func(handle []byte, device, size int64) string {
		return fmt.Sprintf(`{"raw_handle":{"b64":%q},"device_id":%d,"byte_size":%d}`, b64(handle), device, size)
	}
	reg := "/v2/cudasharedmemory/region/x/register"
	tests := []struct {
		name, method, path, body string
		status                   int
		msg                      string
	}{
		{"not JSON", "POST", reg, `handle=x`, 400, "the body must be"},
		{"no handle", "POST", reg, `{"device_id":0,"byte_size":8}`, 400, "the body must be"},
		{"handle not base64", "POST", reg, `{"raw_handle":{"b64":"@@@"},"device_id":0,"byte_size":8}`, 400, "the body must be"},
		{"no device", "POST", reg, `{"raw_handle":{"b64":""},"byte_size":8}`, 400, "the body must be"},
		{"unknown handle", "POST", reg, body(make([]byte, 64), 0, 8), 400, "opening its CUDA IPC handle on device 0: cuIpcOpenMemHandle: CUDA_ERROR_INVALID_VALUE"},
		{"short handle", "POST", reg, body(other[:10], 0, 8), 400, "an IPC handle is 64 bytes, got 10"},
		{"larger than the allocation", "POST", reg, body(other, 0, 65), 400, "the allocation holds 64 bytes, not 65"},
		{"negative device", "POST", reg, body(other, -1, 8), 400, "device_id -1 is not a CUDA device ordinal"},
		{"zero bytes", "POST", reg, body(other, 0, 0), 400, "byte_size > 0"},
		{"name of a system region", "POST", "/v2/cudasharedmemory/region/sys/register", body(other, 0, 8), 400, `a region named \"sys\" is registered already`},
		{"name of a CUDA region", "POST", "/v2/cudasharedmemory/region/r/register", body(other, 0, 8), 400, `a region named \"r\" is registered already`},
		{"register without a name", "POST", "/v2/cudasharedmemory/register", `{}`, 404, "no such endpoint"},
		{"register by GET", "GET", reg, ``, 405, "use POST"},
		{"status of none", "GET", "/v2/cudasharedmemory/region/nope/status", ``, 404, `no CUDA shared memory region named \"nope\"`},
		{"status of a system region", "GET", "/v2/cudasharedmemory/region/sys/status", ``, 404, `no CUDA shared memory region named \"sys\"`},
		{"system unregister of it", "POST", "/v2/systemsharedmemory/region/r/unregister", ``, 400, "is a CUDA shared memory region"},
		{"CUDA unregister of a system region", "POST", "/v2/cudasharedmemory/region/sys/unregister", ``, 400, `region \"sys\" is a system shared memory region; unregister it at /v2/systemsharedmemory`},
		{"past the region", "POST", "/v2/models/toy/infer", `{"inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"parameters":{"shared_memory_region":"r","shared_memory_offset":60,"shared_memory_byte_size":16}}]}`, 400, `bytes 60 to 76 are outside region \"r\", which holds 64`},
		{"output region too small", "POST", "/v2/models/toy/infer", `{"inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"data":[1,2,3,4]}],"outputs":[{"name":"logits","parameters":{"shared_memory_region":"r","shared_memory_byte_size":31}}]}`, 400, "shared_memory_byte_size is 31 bytes, the output takes 32"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ts.do(t, tt.method, tt.path, "application/json", []byte(tt.body))
			if r.status != tt.status || !strings.Contains(r.body, tt.msg) {
				t.Fatalf("%d %s, want %d and %q", r.status, r.body, tt.status, tt.msg)
			}
			if !strings.HasPrefix(r.body, `{"error":`) {
				t.Fatalf("not the protocol's error body: %s", r.body)
			}
		})
	}
	if cu.opened() != 1 {
		t.Fatalf("%d handles open after the refusals, want 1", cu.opened())
	}

	// A copy the driver fails is the server's error, not the client's.
	cu.mu.Lock()
	cu.copyErr = errors.New("CUDA_ERROR_ILLEGAL_ADDRESS")
	cu.mu.Unlock()
	r := ts.do(t, "POST", "/v2/models/toy/infer", "application/json", []byte(`{"inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"parameters":{"shared_memory_region":"r","shared_memory_byte_size":16}}]}`))
	if r.status != 500 || !strings.Contains(r.body, `input data: copying through CUDA region \"r\": CUDA_ERROR_ILLEGAL_ADDRESS`) {
		t.Fatalf("failed copy in: %d %s", r.status, r.body)
	}
	r = ts.do(t, "POST", "/v2/models/toy/infer", "application/json", []byte(`{"inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"data":[1,2,3,4]}],"outputs":[{"name":"logits","parameters":{"shared_memory_region":"r","shared_memory_byte_size":64}}]}`))
	if r.status != 500 || !strings.Contains(r.body, `output logits: copying through CUDA region \"r\"`) {
		t.Fatalf("failed copy out: %d %s", r.status, r.body)
	}
}

// Without a CUDA implementation the extension answers 501 and is not
// listed; with client shared memory off, 403 as the system one.
func TestCUDAShmUnserved(t *testing.T) {
	h := make([]byte, 64)
	for _, tc := range []struct {
		name   string
		o      Options
		status int
		msg    string
		code   codes.Code
	}{
		{"no CUDA", Options{AllowClientShm: true}, 501, "CUDA shared memory is not served by this server", codes.Unimplemented},
		{"shared memory off", Options{CUDAShm: &fakeCUDA{}}, 403, "client shared memory is off", codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, tc.o, fakeModel("toy", 1))
			r := ts.registerCUDA(t, "x", h, 0, 8)
			if r.status != tc.status || !strings.Contains(r.body, tc.msg) {
				t.Fatalf("register: %d %s, want %d and %q", r.status, r.body, tc.status, tc.msg)
			}
			if r := ts.do(t, "GET", "/v2", "", nil); strings.Contains(r.body, "cuda_shared_memory") {
				t.Fatalf("/v2 lists the extension: %s", r.body)
			}
			_, err := ts.grpcClient(t).CudaSharedMemoryRegister(context.Background(), &inferpb.CudaSharedMemoryRegisterRequest{Name: "x", RawHandle: h, ByteSize: 8})
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
				t.Fatalf("gRPC register: %v, want %v and %q", err, tc.code, tc.msg)
			}
		})
	}
}

func TestCUDAShmGRPC(t *testing.T) {
	cu := &fakeCUDA{}
	ts := newTestServer(t, Options{AllowClientShm: true, CUDAShm: cu}, fakeModel("toy", 1))
	c := ts.grpcClient(t)
	ctx := context.Background()
	hIn, memIn := cu.alloc("in", 16)
	hOut, memOut := cu.alloc("out", 2048)
	copy(memIn, toyIn)
	// gRPC carries the handle's bytes as they are.
	if _, err := c.CudaSharedMemoryRegister(ctx, &inferpb.CudaSharedMemoryRegisterRequest{Name: "in", RawHandle: hIn, ByteSize: 16}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CudaSharedMemoryRegister(ctx, &inferpb.CudaSharedMemoryRegisterRequest{Name: "out", RawHandle: hOut, ByteSize: 2048}); err != nil {
		t.Fatal(err)
	}
	st, err := c.CudaSharedMemoryStatus(ctx, &inferpb.CudaSharedMemoryStatusRequest{})
	grpcGolden(t, "grpc_cuda_shm_status", st, err)
	_, err = c.CudaSharedMemoryRegister(ctx, &inferpb.CudaSharedMemoryRegisterRequest{Name: "x", RawHandle: hIn[:8], ByteSize: 16})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "64 bytes") {
		t.Fatalf("a short handle: %v", err)
	}

	resp, err := toyInferShm(ctx, c, "", 0)
	wantToyAnswer(t, resp, err)
	resp, err = toyInferShm(ctx, c, "out", 2048)
	if err != nil || len(resp.RawOutputContents) != 0 {
		t.Fatalf("output into device memory: %v %v", resp, err)
	}
	if got := floatsLE(memOut[:32]); fmt.Sprint(got) != fmt.Sprint(toyOut) {
		t.Fatalf("the region holds %v, want %v", got, toyOut)
	}

	if _, err := c.CudaSharedMemoryUnregister(ctx, &inferpb.CudaSharedMemoryUnregisterRequest{Name: "in"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CudaSharedMemoryStatus(ctx, &inferpb.CudaSharedMemoryStatusRequest{Name: "in"}); status.Code(err) != codes.NotFound {
		t.Fatalf("status of an unregistered region: %v", err)
	}
	if _, err := c.CudaSharedMemoryUnregister(ctx, &inferpb.CudaSharedMemoryUnregisterRequest{}); err != nil {
		t.Fatal(err)
	}
	if st, err := c.CudaSharedMemoryStatus(ctx, &inferpb.CudaSharedMemoryStatusRequest{}); err != nil || len(st.Regions) != 0 || cu.opened() != 0 {
		t.Fatalf("after unregistering all: %v %v, %d open", st, err, cu.opened())
	}
}

// Shutting down closes the handles still registered.
func TestCUDAShmClosedAtShutdown(t *testing.T) {
	cu := &fakeCUDA{}
	ts := newTestServer(t, Options{AllowClientShm: true, CUDAShm: cu}, fakeModel("toy", 1))
	h, _ := cu.alloc("r", 64)
	if r := ts.registerCUDA(t, "r", h, 0, 64); r.status != 200 {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	if err := ts.srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-ts.done; err != nil {
		t.Fatal(err)
	}
	ts.done <- nil // for the cleanup's receive
	if cu.opened() != 0 {
		t.Fatalf("%d handles open after shutdown", cu.opened())
	}
}

// BenchmarkCUDAShmInput is a ResNet-sized (602 KB) FP32 input read from a
// CUDA region (the fake driver: a memcpy stands in for the device copy),
// through the HTTP handler to a model that does nothing: what the server
// spends per request around the copy, allocations included.
func BenchmarkCUDAShmInput(b *testing.B) {
	const per = 3 * 224 * 224
	cu := &fakeCUDA{}
	m := &Model{
		Name: "bench", Version: 1, Platform: "onnxruntime_onnx", Provider: "cpu",
		Inputs:  []Tensor{{Name: "data", Datatype: "FP32", Shape: []int64{-1, 3, 224, 224}}},
		Outputs: []Tensor{{Name: "logits", Datatype: "FP32", Shape: []int64{-1, 1000}}},
		Classes: 1000, InputLen: per,
	}
	m.InferBytes = func(context.Context, []byte, int, []float32, batching.RequestOptions) (batching.Timing, error) {
		return batching.Timing{}, nil
	}
	s := New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), AllowClientShm: true, CUDAShm: cu})
	s.AddModel(m)
	s.SetReady(true)
	h, _ := cu.alloc("in", 4*per)
	if aerr := s.shm.registerCUDA("in", h, 0, 4*per); aerr != nil {
		b.Fatal(aerr.message)
	}
	body := fmt.Appendf(nil, `{"inputs":[{"name":"data","datatype":"FP32","shape":[1,3,224,224],"parameters":{"shared_memory_region":"in","shared_memory_byte_size":%d}}],"outputs":[{"name":"logits","parameters":{"binary_data":true}}]}`, 4*per)
	handler := s.Handler()
	header := map[string]string{"Content-Type": "application/json"}
	b.ReportAllocs()
	b.SetBytes(4 * per)
	for b.Loop() {
		if ctx := handle(handler, "POST", "http://fastinfer/v2/models/bench/infer", header, body); ctx.Response.StatusCode() != 200 {
			b.Fatalf("%d %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
}

// A CUDA input's host copy comes from the model's pool and goes back only
// once the inference is done with it: a buffer taken from the pool while
// the model runs is never the one it reads.
func TestCUDAShmInputPooled(t *testing.T) {
	cu := &fakeCUDA{}
	m := fakeModel("toy", 1)
	infer := m.InferBytes
	aliased := 0
	m.InferBytes = func(ctx context.Context, in []byte, rows int, out []float32, o batching.RequestOptions) (batching.Timing, error) {
		p := m.byteBuffer(len(in))
		if &(*p)[0] == &in[0] {
			aliased++
		}
		return infer(ctx, in, rows, out, o)
	}
	ts := newTestServer(t, Options{AllowClientShm: true, CUDAShm: cu}, m)
	h, mem := cu.alloc("in", 16)
	copy(mem, toyIn)
	if r := ts.registerCUDA(t, "in", h, 0, 16); r.status != 200 {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	for range 20 {
		r := ts.do(t, "POST", "/v2/models/toy/infer", "application/json", []byte(`{"inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"parameters":{"shared_memory_region":"in","shared_memory_byte_size":16}}]}`))
		if r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
	}
	if aliased > 0 {
		t.Fatalf("%d of 20 inferences read a buffer already back in the pool", aliased)
	}
}
