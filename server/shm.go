package server

import (
	"bytes"
	"encoding/json"
	"math"
	"sort"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"fastinfer/internal/fault"
)

// Triton's system shared memory extension: a client on the same host
// puts a tensor in a POSIX shared memory object, registers a byte range
// of it as a named region, and names the region in an input's (or an
// output's) parameters instead of sending the bytes. The server copies
// the input out of the region and writes the output into it, so a
// 602 KB ResNet input crosses no socket.
//
// Off unless --allow-client-shm (Triton's flag, off there too): registering
// makes the server open and map any shared memory object its user can,
// by a name the client picks.
//
// The CUDA shared memory extension is the same with GPU memory: the client
// registers a cudaIpcMemHandle, the server opens it (CUDAMemory) and
// copies the tensor out of the device with one synchronous copy, and the
// output into it. System and CUDA regions share one namespace, as in
// Triton.

// CUDAMemory opens device memory a client exported with
// cudaIpcGetMemHandle. Package cuda implements it (cmd/fastinfer wires it
// in), so that this package needs no cgo.
type CUDAMemory interface {
	OpenIPC(handle []byte, device int, size int64) (CUDARegion, error)
}

// CUDARegion is an opened handle: synchronous copies out of and into the
// client's device memory, safe for concurrent use.
type CUDARegion interface {
	ReadAt(dst []byte, off int64) error
	WriteAt(src []byte, off int64) error
	Close() error
}

// maxShmRegions bounds the regions registered at once (each holds a
// mapping).
const maxShmRegions = 1024

// shmRegion is one registered region, mapped (or, for CUDA, opened) for
// as long as it is registered.
type shmRegion struct {
	name, key    string
	offset, size int64
	cuda         CUDARegion // set for a CUDA region, which has no mapping
	device       int64      // a CUDA region's device ordinal
	// mu is held for reading while a request copies from or into data;
	// unregistering takes it for writing to unmap, so a request never
	// touches unmapped memory.
	mu      sync.RWMutex
	mapping []byte // what mmap returned (page-aligned)
	data    []byte // the region: size bytes of mapping
	closed  bool

	// holds counts requests whose batch reads an input straight from
	// data while they wait (hold); unregistering marks the region
	// closing, so no new hold starts, and waits for drained before it
	// takes mu. Holds are not read locks: a request that holds its input
	// region may also write its output into the same region, which a
	// read lock could not do while an unregister waits for the write lock.
	holdMu  sync.Mutex
	holds   int
	closing bool
	drained chan struct{} // closed when holds fall to 0 once closing
}

// shmRegistry holds the registered regions by name.
type shmRegistry struct {
	enabled bool
	cuda    CUDAMemory // nil: the CUDA extension is not served
	mu      sync.Mutex
	regions map[string]*shmRegion
}

// collectors are the registry's gauges: how many regions are registered
// and how many bytes they span (mapped from clients' objects: pages the
// server holds, which count towards its memory once touched).
func (r *shmRegistry) collectors() []prometheus.Collector {
	sum := func(cuda bool, f func(*shmRegion) float64) func() float64 {
		return func() float64 {
			r.mu.Lock()
			defer r.mu.Unlock()
			t := 0.0
			for _, reg := range r.regions {
				if (reg.cuda != nil) == cuda {
					t += f(reg)
				}
			}
			return t
		}
	}
	one := func(*shmRegion) float64 { return 1 }
	size := func(reg *shmRegion) float64 { return float64(reg.size) }
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fastinfer_shm_regions",
			Help: "System shared memory regions registered by clients (--allow-client-shm).",
		}, sum(false, one)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fastinfer_shm_region_bytes",
			Help: "Bytes of the registered system shared memory regions, mapped from clients' objects.",
		}, sum(false, size)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fastinfer_cuda_shm_regions",
			Help: "CUDA shared memory regions registered by clients (--allow-client-shm).",
		}, sum(true, one)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fastinfer_cuda_shm_region_bytes",
			Help: "Bytes of the registered CUDA shared memory regions, in clients' device memory.",
		}, sum(true, size)),
	}
}

var errShmDisabled = errorf(403, "forbidden", "client shared memory is off; start the server with --allow-client-shm to register regions")

// shmRef is where a tensor lies in a region, from its parameters.
type shmRef struct {
	region       string
	offset, size int64
}

// shmRef reads the shared_memory_* parameters: nil when there are none.
// Region and byte size go together; the offset defaults to 0.
func (p *inferParameters) shmRef(what string) (*shmRef, *apiError) {
	if p.SharedMemoryRegion == "" {
		if p.SharedMemoryByteSize != nil || p.SharedMemoryOffset != nil {
			return nil, errorf(400, codeBadRequest, what+": shared_memory_byte_size and shared_memory_offset need shared_memory_region")
		}
		return nil, nil
	}
	if p.SharedMemoryByteSize == nil {
		return nil, errorf(400, codeBadRequest, what+": shared_memory_region needs shared_memory_byte_size")
	}
	r := &shmRef{region: p.SharedMemoryRegion, size: *p.SharedMemoryByteSize}
	if p.SharedMemoryOffset != nil {
		r.offset = *p.SharedMemoryOffset
	}
	if r.offset < 0 || r.size < 0 {
		return nil, errorf(400, codeBadRequest, what+": shared_memory_offset and shared_memory_byte_size must not be negative")
	}
	return r, nil
}

func validRegionName(name string) bool {
	return name != "" && len(name) <= 256 && printable([]byte(name))
}

func (r *shmRegistry) register(name, key string, offset, size int64) *apiError {
	if aerr := r.checkNew(name, offset, size); aerr != nil {
		return aerr
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if aerr := r.roomLocked(name); aerr != nil {
		return aerr
	}
	mapping, data, err := mapShm(key, offset, size)
	if err != nil {
		return errorf(400, codeBadRequest, "region "+strconv.Quote(name)+": "+err.Error())
	}
	r.regions[name] = &shmRegion{name: name, key: key, offset: offset, size: size, mapping: mapping, data: data}
	return nil
}

// registerCUDA opens a client's cudaIpcMemHandle on device as the region
// name, of size bytes from the handle's start.
func (r *shmRegistry) registerCUDA(name string, handle []byte, device, size int64) *apiError {
	if aerr := r.checkNew(name, 0, size); aerr != nil {
		return aerr
	}
	if r.cuda == nil {
		return errCUDAShmUnserved
	}
	if device < 0 || device > math.MaxInt32 {
		return errorf(400, codeBadRequest, "region "+strconv.Quote(name)+": device_id "+strconv.FormatInt(device, 10)+" is not a CUDA device ordinal")
	}
	r.mu.Lock()
	aerr := r.roomLocked(name)
	r.mu.Unlock()
	if aerr != nil {
		return aerr
	}
	// Opened outside the lock: a driver call, which other requests'
	// lookups need not wait for.
	cr, err := r.cuda.OpenIPC(handle, int(device), size)
	if err != nil {
		return errorf(400, codeBadRequest, "region "+strconv.Quote(name)+": opening its CUDA IPC handle on device "+strconv.FormatInt(device, 10)+": "+err.Error())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if aerr := r.roomLocked(name); aerr != nil {
		cr.Close() // another register of the name won meanwhile
		return aerr
	}
	r.regions[name] = &shmRegion{name: name, size: size, cuda: cr, device: device}
	return nil
}

var errCUDAShmUnserved = errorf(501, "not_implemented", "CUDA shared memory is not served by this server; use system shared memory (/v2/systemsharedmemory)")

// checkNew checks what a register call names, before any lookup.
func (r *shmRegistry) checkNew(name string, offset, size int64) *apiError {
	if !r.enabled {
		return errShmDisabled
	}
	if !validRegionName(name) {
		return errorf(400, codeBadRequest, "a region name must be 1 to 256 printable characters")
	}
	if offset < 0 || size <= 0 || offset > math.MaxInt64-size {
		return errorf(400, codeBadRequest, "region "+strconv.Quote(name)+": offset must be ≥ 0 and byte_size > 0, got "+strconv.FormatInt(offset, 10)+" and "+strconv.FormatInt(size, 10))
	}
	return nil
}

// roomLocked refuses a name in use and a full registry; r.mu is held.
func (r *shmRegistry) roomLocked(name string) *apiError {
	if _, dup := r.regions[name]; dup {
		return errorf(400, codeBadRequest, "a region named "+strconv.Quote(name)+" is registered already; unregister it first")
	}
	if len(r.regions) >= maxShmRegions {
		return errorf(400, codeBadRequest, "the server holds "+strconv.Itoa(maxShmRegions)+" regions, its limit; unregister some first")
	}
	if r.regions == nil {
		r.regions = map[string]*shmRegion{}
	}
	return nil
}

// kindName names a region kind in messages and paths.
func kindName(cuda bool) (what, path string) {
	if cuda {
		return "CUDA", "/v2/cudasharedmemory"
	}
	return "system", "/v2/systemsharedmemory"
}

// unregister removes a region of the kind (CUDA or system), or every
// region of it when name is empty, once the requests copying from or into
// it are done. A name not registered is not an error: unregistering twice
// leaves the same state.
func (r *shmRegistry) unregister(name string, cuda bool) *apiError {
	if !r.enabled {
		return errShmDisabled
	}
	r.mu.Lock()
	if reg := r.regions[name]; reg != nil && (reg.cuda != nil) != cuda {
		r.mu.Unlock()
		what, path := kindName(!cuda)
		return errorf(400, codeBadRequest, "region "+strconv.Quote(name)+" is a "+what+" shared memory region; unregister it at "+path)
	}
	var gone []*shmRegion
	for n, reg := range r.regions {
		if (name == "" || n == name) && (reg.cuda != nil) == cuda {
			gone = append(gone, reg)
			delete(r.regions, n)
		}
	}
	r.mu.Unlock()
	var first error
	for _, reg := range gone {
		reg.holdMu.Lock()
		reg.closing = true
		var wait chan struct{}
		if reg.holds > 0 {
			reg.drained = make(chan struct{})
			wait = reg.drained
		}
		reg.holdMu.Unlock()
		if wait != nil {
			<-wait
		}
		reg.mu.Lock()
		reg.closed = true
		var err error
		if reg.cuda != nil {
			err = reg.cuda.Close()
		} else {
			err = unmapShm(reg.mapping)
		}
		if err != nil && first == nil {
			first = err
		}
		reg.mapping, reg.data = nil, nil
		reg.mu.Unlock()
	}
	if first != nil {
		return errorf(500, codeInternal, "releasing a region: "+first.Error())
	}
	return nil
}

// shmStatus is one region as the status calls report it.
type shmStatus struct {
	Name     string `json:"name"`
	Key      string `json:"key"`
	Offset   int64  `json:"offset"`
	ByteSize int64  `json:"byte_size"`
}

// cudaShmStatus is one CUDA region as the status calls report it.
type cudaShmStatus struct {
	Name     string `json:"name"`
	DeviceID int64  `json:"device_id"`
	ByteSize int64  `json:"byte_size"`
}

// status lists the system regions by name, or the one named.
func (r *shmRegistry) status(name string) ([]shmStatus, *apiError) {
	regs, aerr := r.list(name, false)
	out := make([]shmStatus, len(regs))
	for i, reg := range regs {
		out[i] = shmStatus{reg.name, reg.key, reg.offset, reg.size}
	}
	return out, aerr
}

// cudaStatus lists the CUDA regions by name, or the one named.
func (r *shmRegistry) cudaStatus(name string) ([]cudaShmStatus, *apiError) {
	regs, aerr := r.list(name, true)
	out := make([]cudaShmStatus, len(regs))
	for i, reg := range regs {
		out[i] = cudaShmStatus{reg.name, reg.device, reg.size}
	}
	return out, aerr
}

// list is the regions of a kind, by name, or the one named (the fields
// status reports never change after register).
func (r *shmRegistry) list(name string, cuda bool) ([]*shmRegion, *apiError) {
	if !r.enabled {
		return nil, errShmDisabled
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*shmRegion
	for n, reg := range r.regions {
		if (name == "" || n == name) && (reg.cuda != nil) == cuda {
			out = append(out, reg)
		}
	}
	if name != "" && len(out) == 0 {
		what, _ := kindName(cuda)
		return nil, errorf(404, codeNotFound, "no "+what+" shared memory region named "+strconv.Quote(name)+" is registered")
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

// access runs fn on the bytes ref names in a system region, with the
// region held mapped. A fault while fn runs (the client shrank the object
// under its mapping: the pages past its new end raise SIGBUS) fails the
// request instead of the process.
func (reg *shmRegion) access(ref *shmRef, what string, fn func([]byte)) *apiError {
	reg.mu.RLock()
	defer reg.mu.RUnlock()
	if reg.closed {
		return errUnregistered(what, ref.region)
	}
	if fault.Guard(func() { fn(reg.data[ref.offset : ref.offset+ref.size]) }) {
		return errTruncated(what, ref.region, reg.key)
	}
	return nil
}

// find is the region ref names, once ref is checked to lie within it (a
// region's size never changes).
func (r *shmRegistry) find(ref *shmRef, what string) (*shmRegion, *apiError) {
	r.mu.Lock()
	reg := r.regions[ref.region]
	r.mu.Unlock()
	if reg == nil {
		return nil, errorf(400, codeBadRequest, what+": no shared memory region "+strconv.Quote(ref.region)+" is registered")
	}
	if ref.offset > reg.size || ref.size > reg.size-ref.offset {
		return nil, errorf(400, codeBadRequest, what+": bytes "+strconv.FormatInt(ref.offset, 10)+" to "+strconv.FormatInt(ref.offset+ref.size, 10)+
			" are outside region "+strconv.Quote(ref.region)+", which holds "+strconv.FormatInt(reg.size, 10))
	}
	return reg, nil
}

func errUnregistered(what, region string) *apiError {
	return errorf(400, codeBadRequest, what+": region "+strconv.Quote(region)+" was unregistered")
}

// copyCUDA copies the bytes ref names in a CUDA region into b, or b into
// them (toDevice), with the region held open.
func (reg *shmRegion) copyCUDA(ref *shmRef, what string, b []byte, toDevice bool) *apiError {
	reg.mu.RLock()
	defer reg.mu.RUnlock()
	if reg.closed {
		return errUnregistered(what, ref.region)
	}
	var err error
	if toDevice {
		err = reg.cuda.WriteAt(b, ref.offset)
	} else {
		err = reg.cuda.ReadAt(b, ref.offset)
	}
	if err != nil {
		return errorf(500, codeInternal, what+": copying through CUDA region "+strconv.Quote(ref.region)+": "+err.Error())
	}
	return nil
}

// hold keeps the bytes ref names in a system region mapped until release
// is called, for a batch to copy straight from
// (batching.RequestOptions.MayFault guards that copy against a truncated
// object).
func (reg *shmRegion) hold(ref *shmRef, what string) (data []byte, key string, release func(), aerr *apiError) {
	reg.holdMu.Lock()
	defer reg.holdMu.Unlock()
	if reg.closing {
		return nil, "", nil, errUnregistered(what, ref.region)
	}
	reg.holds++
	release = func() {
		reg.holdMu.Lock()
		defer reg.holdMu.Unlock()
		if reg.holds--; reg.holds == 0 && reg.drained != nil {
			close(reg.drained)
		}
	}
	return reg.data[ref.offset : ref.offset+ref.size], reg.key, release, nil
}

// errTruncated is a region whose object no longer holds it.
func errTruncated(what, region, key string) *apiError {
	return errorf(400, codeBadRequest, what+": region "+strconv.Quote(region)+" could not be accessed: its shared memory object "+
		strconv.Quote(key)+" no longer holds it (truncated?)")
}

// shmInput is an input tensor's source when it lies in a region. In the
// model's own datatype (m.takesRaw) a system region is held mapped and
// the batch copies from it directly, as from an HTTP body: one copy,
// guarded against the client truncating its object meanwhile. Otherwise
// its bytes are decoded from the region into the request's buffer. A CUDA
// region's bytes are copied to a pooled host buffer first.
func (s *Server) shmInput(m *Model, ref *shmRef, in *inferInput, need int) (tensorSource, *apiError) {
	what := "input " + in.Name
	if ref.size != int64(need) {
		return tensorSource{}, errorf(400, codeBadRequest, what+": shared_memory_byte_size is "+strconv.FormatInt(ref.size, 10)+" bytes, shape and datatype need "+strconv.Itoa(need))
	}
	reg, aerr := s.shm.find(ref, what)
	if aerr != nil {
		return tensorSource{}, aerr
	}
	if reg.cuda != nil {
		// Copied to the host at once, as a binary body would bring it,
		// into a pooled buffer (602 KB a ResNet request): the batch is
		// assembled in host memory.
		b := m.byteBuffer(need)
		if aerr := reg.copyCUDA(ref, what, *b, false); aerr != nil {
			m.bpool.Put(b)
			return tensorSource{}, aerr
		}
		return tensorSource{raw: *b, binary: true, release: func() { m.bpool.Put(b) }}, nil
	}
	if m.takesRaw(in.Datatype) {
		b, key, release, aerr := reg.hold(ref, what)
		if aerr != nil {
			return tensorSource{}, aerr
		}
		return tensorSource{raw: b, binary: true, shm: true, release: release,
			truncated: func() *apiError { return errTruncated(what, ref.region, key) }}, nil
	}
	dt := datatypes[in.Datatype] // inferTensor has checked it
	return tensorSource{values: func(dst []float32) (int, error) {
		if aerr := reg.access(ref, what, func(b []byte) { dt.decode(dst, b) }); aerr != nil {
			return 0, errData(aerr.message)
		}
		return len(dst), nil
	}}, nil
}

// shmOutput writes the output into its region: FP32 little-endian, or the
// classification strings each behind its length as in binary tensors.
// It returns the bytes written.
func (s *Server) shmOutput(m *Model, o *v2Output, logits []float32, rows int) (int64, *apiError) {
	what := "output " + m.Outputs[0].Name
	var blob []byte
	need := int64(m.outputSize(rows))
	if o.classification > 0 {
		blob = appendClassStrings(nil, m, logits, rows, o.classification, true)
		need = int64(len(blob))
	}
	if need > o.shm.size {
		return 0, errorf(400, codeBadRequest, what+": shared_memory_byte_size is "+strconv.FormatInt(o.shm.size, 10)+" bytes, the output takes "+strconv.FormatInt(need, 10))
	}
	ref := *o.shm
	ref.size = need
	reg, aerr := s.shm.find(&ref, what)
	if aerr != nil {
		return 0, aerr
	}
	if reg.cuda != nil {
		if blob == nil {
			p := m.byteBuffer(int(need))
			defer m.bpool.Put(p)
			blob = m.appendOutput((*p)[:0], logits[:rows*m.Classes])
		}
		return need, reg.copyCUDA(&ref, what, blob, true)
	}
	aerr = reg.access(&ref, what, func(b []byte) {
		if blob != nil {
			copy(b, blob)
			return
		}
		// b's capacity holds the output: appending writes into the region.
		m.appendOutput(b[:0], logits[:rows*m.Classes])
	})
	return need, aerr
}

// ---------------------------------------------------------------------------
// HTTP: /v2/systemsharedmemory[/region/{name}]/status|register|unregister,
// and the same under /v2/cudasharedmemory.

var (
	pathSystemShm = []byte("/v2/systemsharedmemory")
	pathCUDAShm   = []byte("/v2/cudasharedmemory")
)

func (s *Server) sharedMemory(ctx *fasthttp.RequestCtx, rest []byte, cuda bool) {
	if !s.authorized(ctx, s.apiToken, true) {
		return
	}
	name, op, ok := shmPath(rest)
	if !ok {
		writeV2Error(ctx, errorf(404, codeNotFound, "no such endpoint: "+string(ctx.Path())))
		return
	}
	switch op {
	case "status":
		if !allowV2(ctx, "GET") {
			return
		}
		var st any
		var aerr *apiError
		if cuda {
			st, aerr = s.shm.cudaStatus(name)
		} else {
			st, aerr = s.shm.status(name)
		}
		if aerr != nil {
			writeV2Error(ctx, aerr)
			return
		}
		writeJSON(ctx, st)
	case "register":
		if !allowV2(ctx, "POST") {
			return
		}
		if name == "" {
			_, path := kindName(cuda)
			writeV2Error(ctx, errorf(404, codeNotFound, "register a region at "+path+"/region/{name}/register"))
			return
		}
		if cuda {
			if aerr := s.registerCUDAHTTP(name, ctx.PostBody()); aerr != nil {
				writeV2Error(ctx, aerr)
				return
			}
			ctx.SetStatusCode(fasthttp.StatusOK)
			return
		}
		var req struct {
			Key      *string `json:"key"`
			Offset   int64   `json:"offset"`
			ByteSize *int64  `json:"byte_size"`
		}
		if err := json.Unmarshal(ctx.PostBody(), &req); err != nil || req.Key == nil || req.ByteSize == nil {
			writeV2Error(ctx, errorf(400, codeBadRequest, `the body must be {"key": string, "offset": number, "byte_size": number}`))
			return
		}
		if aerr := s.shm.register(name, *req.Key, req.Offset, *req.ByteSize); aerr != nil {
			writeV2Error(ctx, aerr)
			return
		}
		ctx.SetStatusCode(fasthttp.StatusOK)
	case "unregister":
		if !allowV2(ctx, "POST") {
			return
		}
		if aerr := s.shm.unregister(name, cuda); aerr != nil {
			writeV2Error(ctx, aerr)
			return
		}
		ctx.SetStatusCode(fasthttp.StatusOK)
	}
}

// registerCUDAHTTP reads Triton's CUDA register body, whose handle is the
// cudaIpcMemHandle_t's bytes in base64: {"raw_handle": {"b64": string},
// "device_id": number, "byte_size": number}.
func (s *Server) registerCUDAHTTP(name string, body []byte) *apiError {
	if !s.shm.enabled {
		return errShmDisabled
	}
	if s.shm.cuda == nil {
		return errCUDAShmUnserved
	}
	var req struct {
		RawHandle *struct {
			B64 []byte `json:"b64"` // encoding/json decodes base64 into []byte
		} `json:"raw_handle"`
		DeviceID *int64 `json:"device_id"`
		ByteSize *int64 `json:"byte_size"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.RawHandle == nil || req.DeviceID == nil || req.ByteSize == nil {
		return errorf(400, codeBadRequest, `the body must be {"raw_handle": {"b64": base64 string}, "device_id": number, "byte_size": number}`)
	}
	return s.shm.registerCUDA(name, req.RawHandle.B64, *req.DeviceID, *req.ByteSize)
}

// shmPath splits what follows /v2/{system,cuda}sharedmemory: "/status",
// "/unregister", or "/region/{name}/" and one of those or "register".
func shmPath(rest []byte) (name, op string, ok bool) {
	parts := bytes.Split(rest, []byte{'/'})
	switch {
	case len(parts) == 2 && len(parts[0]) == 0 && (string(parts[1]) == "status" || string(parts[1]) == "unregister"):
		return "", string(parts[1]), true
	case len(parts) == 4 && len(parts[0]) == 0 && string(parts[1]) == "region" && len(parts[2]) > 0:
		switch op := string(parts[3]); op {
		case "status", "register", "unregister":
			return string(parts[2]), op, true
		}
	}
	return "", "", false
}
