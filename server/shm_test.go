//go:build linux

package server

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"fastinfer/batching"
	"fastinfer/server/inferpb"
)

// shmObject creates a POSIX shared memory object of size bytes, as
// shm_open and ftruncate would, and returns its key ("/name") and path.
func shmObject(t testing.TB, size int64) (key, path string) {
	t.Helper()
	// Named after the test, not the process, so golden answers that show
	// the key stay the same.
	return shmObjectNamed(t, "fastinfer-test-"+strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()), size)
}

func shmObjectNamed(t testing.TB, name string, size int64) (key, path string) {
	t.Helper()
	path = filepath.Join(shmDir, name)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Skipf("no POSIX shared memory here: %v", err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
	return "/" + name, path
}

func writeAt(t testing.TB, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func readAt(t testing.TB, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func floatsLE(b []byte) []float32 {
	f := make([]float32, len(b)/4)
	for i := range f {
		f[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return f
}

func (ts *testServer) register(t testing.TB, name, key string, offset, size int64) response {
	t.Helper()
	return ts.do(t, "POST", "/v2/systemsharedmemory/region/"+name+"/register", "application/json",
		fmt.Appendf(nil, `{"key":%q,"offset":%d,"byte_size":%d}`, key, offset, size))
}

// The toy model's answer to [300,200],[50,7] (see fakeModel).
var toyIn = fp32Bytes(300, 200, 50, 7)
var toyOut = []float32{3, 2, -1, 3, 0.5, 0.07, -1, 0}

func TestShmHTTP(t *testing.T) {
	ts := newTestServer(t, Options{AllowClientShm: true}, fakeModel("toy", 1))
	key, path := shmObject(t, 8192)
	writeAt(t, path, 4096+16, toyIn)
	if r := ts.register(t, "in", key, 4096, 1024); r.status != 200 {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	if r := ts.register(t, "out", key, 100, 1000); r.status != 200 { // an offset inside a page
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	ts.hasMetric(t, "fastinfer_shm_regions 2")
	ts.hasMetric(t, "fastinfer_shm_region_bytes 2024")
	golden(t, "shm_status", ts.do(t, "GET", "/v2/systemsharedmemory/status", "", nil))
	golden(t, "shm_status_one", ts.do(t, "GET", "/v2/systemsharedmemory/region/out/status", "", nil))
	golden(t, "v2_server_metadata_shm", ts.do(t, "GET", "/v2", "", nil))

	in := `{"name":"data","datatype":"FP32","shape":[2,2],"parameters":{"shared_memory_region":"in","shared_memory_offset":16,"shared_memory_byte_size":16}}`
	// The input from the region, the output in the response: the same
	// answer as the same tensor in JSON.
	plain := ts.do(t, "POST", "/v2/models/toy/infer", "application/json", []byte(`{"id":"a","inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"data":[300,200,50,7]}]}`))
	r := ts.do(t, "POST", "/v2/models/toy/infer", "application/json", []byte(`{"id":"a","inputs":[`+in+`]}`))
	if r.status != 200 || r.body != plain.body {
		t.Fatalf("input from shared memory: %d %s\nwant %s", r.status, r.body, plain.body)
	}

	// The output into the region.
	r = ts.do(t, "POST", "/v2/models/toy/infer", "application/json", []byte(`{"inputs":[`+in+`],"outputs":[{"name":"logits","parameters":{"shared_memory_region":"out","shared_memory_offset":12,"shared_memory_byte_size":64}}]}`))
	golden(t, "shm_infer_output", r)
	if got := floatsLE(readAt(t, path, 100+12, 32)); fmt.Sprint(got) != fmt.Sprint(toyOut) {
		t.Fatalf("the region holds %v, want %v", got, toyOut)
	}

	// Classification strings, each behind its length.
	r = ts.do(t, "POST", "/v2/models/toy/infer", "application/json", []byte(`{"inputs":[`+in+`],"outputs":[{"name":"logits","parameters":{"classification":1,"shared_memory_region":"out","shared_memory_byte_size":1000}}]}`))
	golden(t, "shm_infer_classification", r)
	want := "\x07\x00\x00\x003:0:cat\x09\x00\x00\x000.5:0:cat"
	if got := string(readAt(t, path, 100, len(want))); got != want {
		t.Fatalf("the region holds %q, want %q", got, want)
	}

	// Unregistered, a region is gone; unregistering again is no error.
	for range 2 {
		if r := ts.do(t, "POST", "/v2/systemsharedmemory/region/in/unregister", "", nil); r.status != 200 {
			t.Fatalf("unregister: %d %s", r.status, r.body)
		}
	}
	r = ts.do(t, "POST", "/v2/models/toy/infer", "application/json", []byte(`{"inputs":[`+in+`]}`))
	if r.status != 400 || !strings.Contains(r.body, `no shared memory region \"in\" is registered`) {
		t.Fatalf("after unregister: %d %s", r.status, r.body)
	}
	if r := ts.do(t, "POST", "/v2/systemsharedmemory/unregister", "", nil); r.status != 200 {
		t.Fatalf("unregister all: %d %s", r.status, r.body)
	}
	if r := ts.do(t, "GET", "/v2/systemsharedmemory/status", "", nil); r.body != "[]\n" {
		t.Fatalf("status after unregistering all: %s", r.body)
	}
	ts.hasMetric(t, "fastinfer_shm_regions 0")
	ts.hasMetric(t, "fastinfer_shm_region_bytes 0")
}

func TestShmErrors(t *testing.T) {
	ran := atomic.Int64{}
	m := fakeModel("toy", 1)
	infer := m.Infer
	m.Infer = func(ctx context.Context, in []float32, rows int, out []float32, o batching.RequestOptions) (batching.Timing, error) {
		ran.Add(1)
		return infer(ctx, in, rows, out, o)
	}
	ts := newTestServer(t, Options{AllowClientShm: true}, m)
	key, path := shmObject(t, 4096)
	writeAt(t, path, 0, toyIn)
	if r := ts.register(t, "r", key, 0, 64); r.status != 200 {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	if err := os.Symlink(path, path+"-link"); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(path + "-link")
	notShm := filepath.Join(shmDir, filepath.Base(path)+"-dir")
	if err := os.Mkdir(notShm, 0o700); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(notShm)

	input := func(params string) string {
		return `{"inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"parameters":{` + params + `}}]}`
	}
	tests := []struct {
		name, method, path, body string
		status                   int
		msg                      string
	}{
		{"register twice", "POST", "/v2/systemsharedmemory/region/r/register", `{"key":"` + key + `","byte_size":8}`, 400, "registered already"},
		{"no such object", "POST", "/v2/systemsharedmemory/region/x/register", `{"key":"/fastinfer-no-such-object","byte_size":8}`, 400, "no such file"},
		{"key with a path", "POST", "/v2/systemsharedmemory/region/x/register", `{"key":"/../../etc/passwd","byte_size":8}`, 400, "not a shared memory object name"},
		{"key is a symlink", "POST", "/v2/systemsharedmemory/region/x/register", `{"key":"` + key + `-link","byte_size":8}`, 400, "too many levels of symbolic links"},
		{"key is a folder", "POST", "/v2/systemsharedmemory/region/x/register", `{"key":"/` + filepath.Base(notShm) + `","byte_size":8}`, 400, "is a directory"},
		{"region past the object", "POST", "/v2/systemsharedmemory/region/x/register", `{"key":"` + key + `","offset":4000,"byte_size":100}`, 400, "holds 4096 bytes; the region needs 4100"},
		{"zero bytes", "POST", "/v2/systemsharedmemory/region/x/register", `{"key":"` + key + `","byte_size":0}`, 400, "byte_size > 0"},
		{"negative offset", "POST", "/v2/systemsharedmemory/region/x/register", `{"key":"` + key + `","offset":-1,"byte_size":8}`, 400, "offset must be"},
		{"offset overflows", "POST", "/v2/systemsharedmemory/region/x/register", `{"key":"` + key + `","offset":9223372036854775807,"byte_size":8}`, 400, "offset must be"},
		{"no key", "POST", "/v2/systemsharedmemory/region/x/register", `{"byte_size":8}`, 400, "the body must be"},
		{"not JSON", "POST", "/v2/systemsharedmemory/region/x/register", `key=x`, 400, "the body must be"},
		{"register without a name", "POST", "/v2/systemsharedmemory/register", `{}`, 404, "no such endpoint"},
		{"register by GET", "GET", "/v2/systemsharedmemory/region/x/register", ``, 405, "use POST"},
		{"status of none", "GET", "/v2/systemsharedmemory/region/nope/status", ``, 404, `no system shared memory region named \"nope\"`},
		{"unknown operation", "POST", "/v2/systemsharedmemory/region/r/delete", ``, 404, "no such endpoint"},
		{"CUDA shared memory", "POST", "/v2/cudasharedmemory/region/r/register", `{}`, 501, "CUDA shared memory is not served"},

		{"unknown region", "POST", "/v2/models/toy/infer", input(`"shared_memory_region":"nope","shared_memory_byte_size":16`), 400, `no shared memory region \"nope\"`},
		{"size mismatch", "POST", "/v2/models/toy/infer", input(`"shared_memory_region":"r","shared_memory_byte_size":12`), 400, "shared_memory_byte_size is 12 bytes, shape and datatype need 16"},
		{"past the region", "POST", "/v2/models/toy/infer", input(`"shared_memory_region":"r","shared_memory_offset":60,"shared_memory_byte_size":16`), 400, `bytes 60 to 76 are outside region \"r\", which holds 64`},
		{"negative offset in a tensor", "POST", "/v2/models/toy/infer", input(`"shared_memory_region":"r","shared_memory_offset":-4,"shared_memory_byte_size":16`), 400, "must not be negative"},
		{"region without size", "POST", "/v2/models/toy/infer", input(`"shared_memory_region":"r"`), 400, "needs shared_memory_byte_size"},
		{"size without region", "POST", "/v2/models/toy/infer", input(`"shared_memory_byte_size":16`), 400, "need shared_memory_region"},
		{"data as well", "POST", "/v2/models/toy/infer", `{"inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"data":[1,2,3,4],"parameters":{"shared_memory_region":"r","shared_memory_byte_size":16}}]}`, 400, "must not carry its data too"},
		{"output region too small", "POST", "/v2/models/toy/infer", `{"inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"data":[1,2,3,4]}],"outputs":[{"name":"logits","parameters":{"shared_memory_region":"r","shared_memory_byte_size":31}}]}`, 400, "shared_memory_byte_size is 31 bytes, the output takes 32"},
		{"output to an unknown region", "POST", "/v2/models/toy/infer", `{"inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"data":[1,2,3,4]}],"outputs":[{"name":"logits","parameters":{"shared_memory_region":"nope","shared_memory_byte_size":32}}]}`, 400, `output logits: no shared memory region \"nope\"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := ran.Load()
			r := ts.do(t, tt.method, tt.path, "application/json", []byte(tt.body))
			if r.status != tt.status || !strings.Contains(r.body, tt.msg) {
				t.Fatalf("%d %s, want %d and %q", r.status, r.body, tt.status, tt.msg)
			}
			if !strings.HasPrefix(r.body, `{"error":`) {
				t.Fatalf("not the protocol's error body: %s", r.body)
			}
			// Only the unknown output region is found out after the run.
			if ran.Load() != before && tt.name != "output to an unknown region" {
				t.Fatal("the model ran for a request refused")
			}
		})
	}
	if r := ts.do(t, "GET", "/v2/systemsharedmemory/status", "", nil); !strings.Contains(r.body, `"name":"r"`) || strings.Contains(r.body, `"name":"x"`) {
		t.Fatalf("status after the refusals: %s", r.body)
	}
}

func TestShmDisabledAndAuth(t *testing.T) {
	key, _ := shmObject(t, 4096)
	off := newTestServer(t, Options{}, fakeModel("toy", 1))
	for _, p := range []string{"/v2/systemsharedmemory/status", "/v2/systemsharedmemory/region/r/status"} {
		if r := off.do(t, "GET", p, "", nil); r.status != 403 || !strings.Contains(r.body, "--allow-client-shm") {
			t.Fatalf("GET %s without --allow-client-shm: %d %s", p, r.status, r.body)
		}
	}
	if r := off.register(t, "r", key, 0, 8); r.status != 403 {
		t.Fatalf("register without --allow-client-shm: %d %s", r.status, r.body)
	}
	if r := off.do(t, "GET", "/v2", "", nil); strings.Contains(r.body, "shared_memory") {
		t.Fatalf("server metadata names shared memory while it is off: %s", r.body)
	}
	if _, err := off.grpcClient(t).SystemSharedMemoryRegister(context.Background(), &inferpb.SystemSharedMemoryRegisterRequest{Name: "r", Key: key, ByteSize: 8}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("gRPC register without --allow-client-shm: %v", err)
	}

	locked := newTestServer(t, Options{AllowClientShm: true, APIToken: "s3cret"}, fakeModel("toy", 1))
	if r := locked.register(t, "r", key, 0, 8); r.status != 401 {
		t.Fatalf("register without the token: %d %s", r.status, r.body)
	}
	r := locked.doHeaders(t, "POST", "/v2/systemsharedmemory/region/r/register", map[string]string{"Authorization": "Bearer s3cret"},
		fmt.Appendf(nil, `{"key":%q,"byte_size":8}`, key)...)
	if r.status != 200 {
		t.Fatalf("register with the token: %d %s", r.status, r.body)
	}
	if _, err := locked.grpcClient(t).SystemSharedMemoryStatus(context.Background(), &inferpb.SystemSharedMemoryStatusRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("gRPC status without the token: %v", err)
	}
}

// A client that shrinks its object under a registered region makes the
// pages past the new end fault (SIGBUS): the request fails, the server
// goes on.
func TestShmTruncatedObject(t *testing.T) {
	ts := newTestServer(t, Options{AllowClientShm: true}, fakeModel("toy", 1))
	key, path := shmObject(t, 3*4096)
	writeAt(t, path, 8192, toyIn)
	if r := ts.register(t, "r", key, 8192, 4096); r.status != 200 {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	if err := os.Truncate(path, 4096); err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{
		`{"inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"parameters":{"shared_memory_region":"r","shared_memory_byte_size":16}}]}`,
		`{"inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"data":[1,2,3,4]}],"outputs":[{"name":"logits","parameters":{"shared_memory_region":"r","shared_memory_byte_size":32}}]}`,
	} {
		r := ts.do(t, "POST", "/v2/models/toy/infer", "application/json", []byte(body))
		if r.status != 400 || !strings.Contains(r.body, "no longer holds it") {
			t.Fatalf("truncated object: %d %s", r.status, r.body)
		}
	}
	if err := os.Truncate(path, 3*4096); err != nil {
		t.Fatal(err)
	}
	writeAt(t, path, 8192, toyIn)
	r := ts.do(t, "POST", "/v2/models/toy/infer", "application/json", []byte(`{"inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"parameters":{"shared_memory_region":"r","shared_memory_byte_size":16}}]}`))
	if r.status != 200 || !strings.Contains(r.body, `"data":[3,2,-1,3,0.5,0.07,-1,0]`) {
		t.Fatalf("after the object grew back: %d %s", r.status, r.body)
	}
}

// Requests copying from a region while it is unregistered and registered
// again answer 200 or a clear 400, never touch unmapped memory (the race
// detector and the fault guard would say), and leave nothing mapped.
func TestShmUnregisterDuringRequests(t *testing.T) {
	ts := newTestServer(t, Options{AllowClientShm: true}, fakeModel("toy", 1))
	key, path := shmObject(t, 4096)
	writeAt(t, path, 0, toyIn)
	if r := ts.register(t, "r", key, 0, 4096); r.status != 200 {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	body := []byte(`{"inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"parameters":{"shared_memory_region":"r","shared_memory_byte_size":16}}]}`)
	var wg sync.WaitGroup
	var ok, gone atomic.Int64
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r := ts.do(t, "POST", "/v2/models/toy/infer", "application/json", body)
				switch {
				case r.status == 200 && strings.Contains(r.body, `"data":[3,2,-1,3,0.5,0.07,-1,0]`):
					ok.Add(1)
				case r.status == 400 && (strings.Contains(r.body, `no shared memory region \"r\" is registered`) || strings.Contains(r.body, `region \"r\" was unregistered`)):
					gone.Add(1)
				default:
					t.Errorf("%d %s", r.status, r.body)
					return
				}
			}
		})
	}
	for range 200 {
		ts.do(t, "POST", "/v2/systemsharedmemory/region/r/unregister", "", nil)
		ts.register(t, "r", key, 0, 4096)
	}
	close(stop)
	wg.Wait()
	if ok.Load() == 0 {
		t.Fatal("no request was answered from the region")
	}
	t.Logf("%d answered, %d found the region gone", ok.Load(), gone.Load())
	ts.srv.Shutdown(context.Background())
	if st, _ := ts.srv.shm.status(""); len(st) != 0 {
		t.Fatalf("regions left mapped after Shutdown: %v", st)
	}
}

func TestShmGRPC(t *testing.T) {
	ts := newTestServer(t, Options{AllowClientShm: true}, fakeModel("toy", 1))
	c := ts.grpcClient(t)
	ctx := context.Background()
	key, path := shmObject(t, 4096)
	writeAt(t, path, 0, toyIn)
	if _, err := c.SystemSharedMemoryRegister(ctx, &inferpb.SystemSharedMemoryRegisterRequest{Name: "in", Key: key, ByteSize: 16}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SystemSharedMemoryRegister(ctx, &inferpb.SystemSharedMemoryRegisterRequest{Name: "out", Key: key, Offset: 2048, ByteSize: 2048}); err != nil {
		t.Fatal(err)
	}
	st, err := c.SystemSharedMemoryStatus(ctx, &inferpb.SystemSharedMemoryStatusRequest{})
	grpcGolden(t, "grpc_shm_status", st, err)
	_, err = c.SystemSharedMemoryRegister(ctx, &inferpb.SystemSharedMemoryRegisterRequest{Name: "in", Key: key, ByteSize: 16})
	grpcGolden(t, "grpc_shm_register_twice", nil, err)

	// The input from the region: the answer comes raw, as Triton's.
	resp, err := toyInferShm(ctx, c, "", 0)
	wantToyAnswer(t, resp, err)
	// And the output into the region.
	resp, err = toyInferShm(ctx, c, "out", 2048)
	grpcGolden(t, "grpc_shm_infer_output", resp, err)
	if got := floatsLE(readAt(t, path, 2048, 32)); fmt.Sprint(got) != fmt.Sprint(toyOut) {
		t.Fatalf("the region holds %v, want %v", got, toyOut)
	}

	for _, tt := range []struct {
		name   string
		mutate func(*inferpb.ModelInferRequest)
		msg    string
	}{
		{"raw contents as well", func(r *inferpb.ModelInferRequest) { r.RawInputContents = [][]byte{toyIn} }, "must not carry its contents too"},
		{"typed contents as well", func(r *inferpb.ModelInferRequest) {
			r.Inputs[0].Contents = &inferpb.InferTensorContents{Fp32Contents: []float32{1, 2, 3, 4}}
		}, "must not carry its contents too"},
		{"region as an int", func(r *inferpb.ModelInferRequest) { r.Inputs[0].Parameters["shared_memory_region"] = int64Param(3) }, "must be a string_param"},
		{"negative size", func(r *inferpb.ModelInferRequest) {
			r.Inputs[0].Parameters["shared_memory_byte_size"] = int64Param(-16)
		}, "must not be negative"},
		{"past the region", func(r *inferpb.ModelInferRequest) { r.Inputs[0].Parameters["shared_memory_offset"] = int64Param(4) }, `outside region "in"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := grpcInput([]int64{2, 2}, "FP32", nil)
			in.Parameters = regionParams("in", 16)
			r := &inferpb.ModelInferRequest{ModelName: "toy", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{in}}
			tt.mutate(r)
			_, err := c.ModelInfer(ctx, r)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tt.msg) {
				t.Fatalf("%v, want InvalidArgument and %q", err, tt.msg)
			}
		})
	}

	if _, err := c.SystemSharedMemoryUnregister(ctx, &inferpb.SystemSharedMemoryUnregisterRequest{Name: "in"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.SystemSharedMemoryStatus(ctx, &inferpb.SystemSharedMemoryStatusRequest{Name: "in"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("status of an unregistered region: %v", err)
	}
	if _, err := c.SystemSharedMemoryUnregister(ctx, &inferpb.SystemSharedMemoryUnregisterRequest{}); err != nil {
		t.Fatal(err)
	}
	if st, err := c.SystemSharedMemoryStatus(ctx, &inferpb.SystemSharedMemoryStatusRequest{}); err != nil || len(st.Regions) != 0 {
		t.Fatalf("after unregistering all: %v %v", st, err)
	}
}

// fuzzShm registers regions "in" (the toy input) and "out" on s for the
// fuzz targets; an empty key means this host has no shared memory.
func fuzzShm(f *testing.F, s *Server) (key, path string) {
	if _, err := os.Stat(shmDir); err != nil {
		return "", ""
	}
	// One object per process: the fuzzing engine runs this in each worker.
	key, path = shmObjectNamed(f, fmt.Sprintf("fastinfer-fuzz-%s-%d", f.Name(), os.Getpid()), 4096)
	writeAt(f, path, 0, toyIn)
	s.shm.enabled = true
	if aerr := s.shm.register("in", key, 0, 2048); aerr != nil {
		f.Fatal(aerr)
	}
	if aerr := s.shm.register("out", key, 2048, 2048); aerr != nil {
		f.Fatal(aerr)
	}
	// And CUDA regions "cin" and "cout" of the fake driver.
	cu := &fakeCUDA{}
	s.shm.cuda = cu
	hin, mem := cu.alloc("cin", 2048)
	copy(mem, toyIn)
	hout, _ := cu.alloc("cout", 2048)
	for _, r := range []struct {
		name string
		h    []byte
	}{{"cin", hin}, {"cout", hout}} {
		if aerr := s.shm.registerCUDA(r.name, r.h, 0, 2048); aerr != nil {
			f.Fatal(aerr)
		}
	}
	return key, path
}

// An input region in the model's own datatype goes to the batch as it
// lies: InferBytes is handed the region's bytes (one copy, the batch's),
// with MayFault set so that copy survives a truncated object. In another
// datatype it is decoded into a buffer first.
func TestShmInputCopiedOnce(t *testing.T) {
	m := fakeModel("toy", 1)
	var aliased, mayFault bool
	inferBytes := m.InferBytes
	ts := newTestServer(t, Options{AllowClientShm: true}, m)
	key, path := shmObject(t, 4096)
	writeAt(t, path, 0, toyIn)
	writeAt(t, path, 64, halves(300, 200, 50, 7))
	if r := ts.register(t, "in", key, 0, 4096); r.status != 200 {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	region := ts.srv.shm.regions["in"].data
	m.InferBytes = func(ctx context.Context, in []byte, rows int, out []float32, o batching.RequestOptions) (batching.Timing, error) {
		aliased, mayFault = &in[0] == &region[0], o.MayFault
		return inferBytes(ctx, in, rows, out, o)
	}
	for _, tc := range []struct {
		name, dt string
		offset   int
		size     int
		aliased  bool
	}{
		{"FP32 into an FP32 model", "FP32", 0, 16, true},
		{"FP16 into an FP32 model", "FP16", 64, 8, false},
	} {
		aliased, mayFault = false, false
		body := fmt.Sprintf(`{"inputs":[{"name":"data","datatype":%q,"shape":[2,2],"parameters":{"shared_memory_region":"in","shared_memory_offset":%d,"shared_memory_byte_size":%d}}]}`, tc.dt, tc.offset, tc.size)
		r := ts.do(t, "POST", "/v2/models/toy/infer", "application/json", []byte(body))
		if r.status != 200 || !strings.Contains(r.body, `"data":[3,2,-1,3,0.5,0.07,-1,0]`) {
			t.Fatalf("%s: %d %s", tc.name, r.status, r.body)
		}
		if tc.aliased && (!aliased || !mayFault) {
			t.Errorf("%s: the batch got a copy (aliased %v, MayFault %v), want the region's bytes with MayFault", tc.name, aliased, mayFault)
		}
	}
}

// A request that holds its input region and writes its output into the
// same region finishes while that region is being unregistered: the
// unregister waits for the request's batch to be done with the input,
// and neither waits for the other for ever. The output finds the region's
// name gone (a 400), as any request after the unregister began would.
func TestShmUnregisterWhileHeld(t *testing.T) {
	m := fakeModel("toy", 1)
	entered, release := make(chan struct{}), make(chan struct{})
	inferBytes := m.InferBytes
	m.InferBytes = func(ctx context.Context, in []byte, rows int, out []float32, o batching.RequestOptions) (batching.Timing, error) {
		close(entered)
		<-release
		return inferBytes(ctx, in, rows, out, o)
	}
	ts := newTestServer(t, Options{AllowClientShm: true}, m)
	key, path := shmObject(t, 4096)
	writeAt(t, path, 0, toyIn)
	if r := ts.register(t, "r", key, 0, 4096); r.status != 200 {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	answered := make(chan response, 1)
	go func() {
		answered <- ts.do(t, "POST", "/v2/models/toy/infer", "application/json", []byte(`{"inputs":[{"name":"data","datatype":"FP32","shape":[2,2],`+
			`"parameters":{"shared_memory_region":"r","shared_memory_byte_size":16}}],"outputs":[{"name":"logits","parameters":{"shared_memory_region":"r","shared_memory_offset":1024,"shared_memory_byte_size":32}}]}`))
	}()
	<-entered
	unregistered := make(chan response, 1)
	go func() { unregistered <- ts.do(t, "POST", "/v2/systemsharedmemory/region/r/unregister", "", nil) }()
	select {
	case r := <-unregistered:
		close(release)
		t.Fatalf("unregister returned (%d) while a request held the region", r.status)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	for i, ch := range []chan response{answered, unregistered} {
		select {
		case r := <-ch:
			if i == 0 && (r.status != 400 || !strings.Contains(r.body, `output logits: no shared memory region \"r\" is registered`)) || i == 1 && r.status != 200 {
				t.Fatalf("%d %s", r.status, r.body)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the request and the unregister wait on each other")
		}
	}
}

// The batcher's report that the input faulted while it was copied is
// the client's doing: a 400 that says so.
func TestShmInputFaultAnswer(t *testing.T) {
	m := fakeModel("toy", 1)
	m.InferBytes = func(context.Context, []byte, int, []float32, batching.RequestOptions) (batching.Timing, error) {
		return batching.Timing{}, fmt.Errorf("copying its rows into the batch: %w", batching.ErrInputFault)
	}
	ts := newTestServer(t, Options{AllowClientShm: true}, m)
	key, path := shmObject(t, 4096)
	writeAt(t, path, 0, toyIn)
	if r := ts.register(t, "r", key, 0, 4096); r.status != 200 {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	r := ts.do(t, "POST", "/v2/models/toy/infer", "application/json", []byte(`{"inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"parameters":{"shared_memory_region":"r","shared_memory_byte_size":16}}]}`))
	if r.status != 400 || !strings.Contains(r.body, "no longer holds it") {
		t.Fatalf("%d %s", r.status, r.body)
	}
}
