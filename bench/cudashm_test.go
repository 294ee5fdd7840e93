package bench

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/valyala/fasthttp"
)

// fakeIPCBuffer is device memory as the CUDA target sees it.
type fakeIPCBuffer struct {
	handle []byte
	data   []byte
	freed  int
}

func (b *fakeIPCBuffer) CopyIn(src []byte) error {
	if len(src) > len(b.data) {
		return fmt.Errorf("%d bytes into %d", len(src), len(b.data))
	}
	copy(b.data, src)
	return nil
}
func (b *fakeIPCBuffer) IPCHandle() ([]byte, error) { return b.handle, nil }
func (b *fakeIPCBuffer) Free() error                { b.freed++; return nil }

// cudaShmServer records what a CUDA shared memory client asks of the
// extension's endpoints, and answers register with status.
type cudaShmServer struct {
	mu           sync.Mutex
	status       int
	registered   map[string]map[string]any // region → register body
	unregistered []string
	infers       []string
}

// startCUDAShmServer starts one, with a client and the toy model's metadata.
func startCUDAShmServer(t *testing.T, status int) (*cudaShmServer, *Client, *ModelMetadata) {
	t.Helper()
	f := &cudaShmServer{status: status, registered: map[string]map[string]any{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: f.handle}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	c := newTestClient(t, "http://"+ln.Addr().String())
	meta, err := c.Metadata("toy")
	if err != nil {
		t.Fatal(err)
	}
	return f, c, meta
}

func (f *cudaShmServer) handle(ctx *fasthttp.RequestCtx) {
	f.mu.Lock()
	defer f.mu.Unlock()
	path := string(ctx.Path())
	region, op, _ := strings.Cut(strings.TrimPrefix(path, "/v2/cudasharedmemory/region/"), "/")
	switch {
	case path == "/v2/models/toy":
		ctx.SetBodyString(toyMetadata)
	case path == "/v2/models/toy/infer":
		f.infers = append(f.infers, string(ctx.PostBody()))
		ctx.SetBodyString(`{"model_name":"toy","outputs":[]}`)
	case strings.HasPrefix(path, "/v2/cudasharedmemory/region/") && op == "register":
		if f.status != 200 {
			ctx.Error(`{"error":{"code":"not_implemented","message":"CUDA shared memory is not served"}}`, f.status)
			return
		}
		var body map[string]any
		if err := json.Unmarshal(ctx.PostBody(), &body); err != nil {
			ctx.Error(err.Error(), 400)
			return
		}
		f.registered[region] = body
	case strings.HasPrefix(path, "/v2/cudasharedmemory/region/") && op == "unregister":
		f.unregistered = append(f.unregistered, region)
	default:
		ctx.Error("not found: "+path, 404)
	}
}

func TestCUDAShmTarget(t *testing.T) {
	f, c, meta := startCUDAShmServer(t, 200)
	var bufs []*fakeIPCBuffer
	alloc := func(n int) (IPCBuffer, error) {
		b := &fakeIPCBuffer{handle: bytes.Repeat([]byte{byte(len(bufs) + 1)}, 64), data: make([]byte, n)}
		bufs = append(bufs, b)
		return b, nil
	}
	const batch, variants = 2, 3
	st, err := NewCUDAShmTarget(c, meta, batch, variants, 7, 1, alloc)
	if err != nil {
		t.Fatal(err)
	}
	inSize, outSize := int64(batch*3*4*4*4), int64(batch*10*4)
	if len(bufs) != 2 || int64(len(bufs[0].data)) != variants*inSize || int64(len(bufs[1].data)) != variants*outSize {
		t.Fatalf("allocations: %d, want an input of %d bytes and an output of %d", len(bufs), variants*inSize, variants*outSize)
	}
	// The device holds the same tensors the other targets send.
	_, tensors, err := noiseTensors(meta, batch, variants, 7)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bufs[0].data, bytes.Join(tensors, nil)) {
		t.Error("the input allocation does not hold the seeded tensors")
	}
	f.mu.Lock()
	if len(f.registered) != 2 {
		t.Fatalf("registered %v", f.registered)
	}
	for name, body := range f.registered {
		want := map[string]any{"raw_handle": map[string]any{"b64": base64.StdEncoding.EncodeToString(bufs[0].handle)},
			"device_id": 1.0, "byte_size": float64(variants * inSize)}
		if strings.HasSuffix(name, "-out") {
			want = map[string]any{"raw_handle": map[string]any{"b64": base64.StdEncoding.EncodeToString(bufs[1].handle)},
				"device_id": 1.0, "byte_size": float64(variants * outSize)}
		}
		if fmt.Sprint(body) != fmt.Sprint(want) {
			t.Errorf("region %s registered with %v, want %v", name, body, want)
		}
	}
	f.mu.Unlock()

	for range variants + 1 {
		if n, fail := st.Do(context.Background()); n != batch || fail != "" {
			t.Fatalf("Do = %d, %q", n, fail)
		}
	}
	f.mu.Lock()
	// Request i names the ith tensor and the ith output slot; the fourth
	// starts over.
	for i, body := range f.infers {
		k := int64(i % variants)
		for _, want := range []string{
			fmt.Sprintf(`"shared_memory_offset":%d,"shared_memory_byte_size":%d}}]`, k*inSize, inSize),
			fmt.Sprintf(`"shared_memory_offset":%d,"shared_memory_byte_size":%d}}]}`, k*outSize, outSize),
		} {
			if !strings.Contains(body, want) {
				t.Errorf("request %d: %s lacks %s", i, body, want)
			}
		}
	}
	f.mu.Unlock()

	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.unregistered) != 2 || bufs[0].freed != 1 || bufs[1].freed != 1 {
		t.Fatalf("Close: unregistered %v, freed %d and %d times", f.unregistered, bufs[0].freed, bufs[1].freed)
	}
}

// A server that does not serve the extension is named as the cause, and
// the device memory is freed; so is it when an allocation fails.
func TestCUDAShmTargetRefused(t *testing.T) {
	_, c, meta := startCUDAShmServer(t, 501)
	var bufs []*fakeIPCBuffer
	alloc := func(n int) (IPCBuffer, error) {
		b := &fakeIPCBuffer{handle: make([]byte, 64), data: make([]byte, n)}
		bufs = append(bufs, b)
		return b, nil
	}
	_, err := NewCUDAShmTarget(c, meta, 1, 1, 7, 0, alloc)
	if err == nil || !strings.Contains(err.Error(), "--allow-client-shm") || !strings.Contains(err.Error(), "not served") {
		t.Fatalf("register refused: %v", err)
	}
	if len(bufs) != 1 || bufs[0].freed != 1 {
		t.Fatalf("after the refusal: %d allocations, the first freed %d times", len(bufs), bufs[0].freed)
	}

	failing := func(int) (IPCBuffer, error) { return nil, errors.New("CUDA_ERROR_OUT_OF_MEMORY") }
	if _, err := NewCUDAShmTarget(c, meta, 1, 1, 7, 0, failing); err == nil || !strings.Contains(err.Error(), "on GPU 0: CUDA_ERROR_OUT_OF_MEMORY") {
		t.Fatalf("allocation failed: %v", err)
	}
}
