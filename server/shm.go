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

// maxShmRegions bounds the regions registered at once (each holds a
// mapping).
const maxShmRegions = 1024

// shmRegion is one registered region, mapped for as long as it is
// registered.
type shmRegion struct {
	name, key    string
	offset, size int64
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
	mu      sync.Mutex
	regions map[string]*shmRegion
}

// collectors are the registry's gauges: how many regions are registered
// and how many bytes they span (mapped from clients' objects: pages the
// server holds, which count towards its memory once touched).
func (r *shmRegistry) collectors() []prometheus.Collector {
	sum := func(f func(*shmRegion) float64) func() float64 {
		return func() float64 {
			r.mu.Lock()
			defer r.mu.Unlock()
			t := 0.0
			for _, reg := range r.regions {
				t += f(reg)
			}
			return t
		}
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fastinfer_shm_regions",
			Help: "System shared memory regions registered by clients (--allow-client-shm).",
		}, sum(func(*shmRegion) float64 { return 1 })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fastinfer_shm_region_bytes",
			Help: "Bytes of the registered system shared memory regions, mapped from clients' objects.",
		}, sum(func(reg *shmRegion) float64 { return float64(reg.size) })),
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
	if !r.enabled {
		return errShmDisabled
	}
	if !validRegionName(name) {
		return errorf(400, codeBadRequest, "a region name must be 1 to 256 printable characters")
	}
	if offset < 0 || size <= 0 || offset > math.MaxInt64-size {
		return errorf(400, codeBadRequest, "region "+strconv.Quote(name)+": offset must be ≥ 0 and byte_size > 0, got "+strconv.FormatInt(offset, 10)+" and "+strconv.FormatInt(size, 10))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.regions[name]; dup {
		return errorf(400, codeBadRequest, "a region named "+strconv.Quote(name)+" is registered already; unregister it first")
	}
	if len(r.regions) >= maxShmRegions {
		return errorf(400, codeBadRequest, "the server holds "+strconv.Itoa(maxShmRegions)+" regions, its limit; unregister some first")
	}
	mapping, data, err := mapShm(key, offset, size)
	if err != nil {
		return errorf(400, codeBadRequest, "region "+strconv.Quote(name)+": "+err.Error())
	}
	if r.regions == nil {
		r.regions = map[string]*shmRegion{}
	}
	r.regions[name] = &shmRegion{name: name, key: key, offset: offset, size: size, mapping: mapping, data: data}
	return nil
}

// unregister removes a region, or every region when name is empty, once
// the requests copying from or into it are done. A name not registered
// is not an error: unregistering twice leaves the same state.
func (r *shmRegistry) unregister(name string) *apiError {
	if !r.enabled {
		return errShmDisabled
	}
	r.mu.Lock()
	var gone []*shmRegion
	for n, reg := range r.regions {
		if name == "" || n == name {
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
		if err := unmapShm(reg.mapping); err != nil && first == nil {
			first = err
		}
		reg.mapping, reg.data = nil, nil
		reg.mu.Unlock()
	}
	if first != nil {
		return errorf(500, codeInternal, "unmapping a region: "+first.Error())
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

// status lists the regions by name, or the one named.
func (r *shmRegistry) status(name string) ([]shmStatus, *apiError) {
	if !r.enabled {
		return nil, errShmDisabled
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []shmStatus{}
	for n, reg := range r.regions {
		if name == "" || n == name {
			out = append(out, shmStatus{reg.name, reg.key, reg.offset, reg.size})
		}
	}
	if name != "" && len(out) == 0 {
		return nil, errorf(404, codeNotFound, "no region named "+strconv.Quote(name)+" is registered")
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// access runs fn on the bytes ref names, with the region held mapped. A
// fault while fn runs (the client shrank the object under its mapping:
// the pages past its new end raise SIGBUS) fails the request instead of
// the process.
func (r *shmRegistry) access(ref *shmRef, what string, fn func([]byte)) *apiError {
	reg, aerr := r.find(ref, what)
	if aerr != nil {
		return aerr
	}
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

// hold keeps the bytes ref names mapped until release is called, for a
// batch to copy straight from (batching.RequestOptions.MayFault guards
// that copy against a truncated object).
func (r *shmRegistry) hold(ref *shmRef, what string) (data []byte, key string, release func(), aerr *apiError) {
	reg, aerr := r.find(ref, what)
	if aerr != nil {
		return nil, "", nil, aerr
	}
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
// model's own datatype (raw is true) the region is held mapped and the
// batch copies from it directly, as from an HTTP body: one copy, guarded
// against the client truncating its object meanwhile. Otherwise its bytes
// are decoded from the region into the request's buffer.
func (s *Server) shmInput(ref *shmRef, in *inferInput, need int, raw bool) (tensorSource, *apiError) {
	what := "input " + in.Name
	if ref.size != int64(need) {
		return tensorSource{}, errorf(400, codeBadRequest, what+": shared_memory_byte_size is "+strconv.FormatInt(ref.size, 10)+" bytes, shape and datatype need "+strconv.Itoa(need))
	}
	if raw {
		b, key, release, aerr := s.shm.hold(ref, what)
		if aerr != nil {
			return tensorSource{}, aerr
		}
		return tensorSource{raw: b, binary: true, shm: true, release: release,
			truncated: func() *apiError { return errTruncated(what, ref.region, key) }}, nil
	}
	dt := datatypes[in.Datatype] // inferTensor has checked it
	return tensorSource{values: func(dst []float32) (int, error) {
		if aerr := s.shm.access(ref, what, func(b []byte) { dt.decode(dst, b) }); aerr != nil {
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
	aerr := s.shm.access(&ref, what, func(b []byte) {
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
// and /v2/cudasharedmemory/..., which is not served.

var (
	pathSystemShm = []byte("/v2/systemsharedmemory")
	pathCUDAShm   = []byte("/v2/cudasharedmemory")
)

func (s *Server) systemShm(ctx *fasthttp.RequestCtx, rest []byte) {
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
		st, aerr := s.shm.status(name)
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
			writeV2Error(ctx, errorf(404, codeNotFound, "register a region at /v2/systemsharedmemory/region/{name}/register"))
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
		if aerr := s.shm.unregister(name); aerr != nil {
			writeV2Error(ctx, aerr)
			return
		}
		ctx.SetStatusCode(fasthttp.StatusOK)
	}
}

// shmPath splits what follows /v2/systemsharedmemory: "/status",
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

func (s *Server) cudaShm(ctx *fasthttp.RequestCtx) {
	writeV2Error(ctx, errorf(501, "not_implemented", "CUDA shared memory is not served; use system shared memory (/v2/systemsharedmemory) with --allow-client-shm"))
}
