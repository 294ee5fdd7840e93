package bench

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
)

// ShmTarget is the tensor target through Triton's system shared memory
// extension, as perf_analyzer's --shared-memory system drives it: the
// tensors lie in a POSIX shared memory object this process creates, the
// server (on the same host, with --allow-client-shm) maps the regions it
// registers, and each request is a JSON header naming where its input
// lies and where its output goes. What is left of the server's cost is
// everything but moving the tensor over the socket.
type ShmTarget struct {
	c       *Client
	path    string
	bodies  [][]byte
	batch   int
	next    atomic.Uint64
	file    string // the object, removed by Close
	regions []string
	ext     string      // the extension's path: /v2/systemsharedmemory or /v2/cudasharedmemory
	bufs    []IPCBuffer // a CUDA target's device memory, freed by Close
}

// IPCBuffer is device memory this process shares by a CUDA IPC handle:
// package cuda's DeviceBuffer, which cmd/fastinfer hands in, so that
// bench needs no cgo.
type IPCBuffer interface {
	CopyIn(src []byte) error
	IPCHandle() ([]byte, error)
	Free() error
}

// shmLayout is what both shared memory targets hold: variants tensors of
// batch rows, each inSize bytes, with outSize bytes of room for each one's
// output.
func shmLayout(meta *ModelMetadata, batch, variants int, seed uint64) (shape []int64, tensors [][]byte, inSize, outSize int64, err error) {
	shape, tensors, err = noiseTensors(meta, batch, variants, seed)
	if err != nil {
		return nil, nil, 0, 0, err
	}
	if len(meta.Outputs) != 1 || len(meta.Outputs[0].Shape) != 2 || meta.Outputs[0].Shape[1] <= 0 {
		return nil, nil, 0, 0, fmt.Errorf("model %s: the shared memory targets need one [batch, classes] output, the model has %v", meta.Name, meta.Outputs)
	}
	// Room for the output as FP32, the larger of its forms here.
	return shape, tensors, int64(len(tensors[0])), 4 * int64(batch) * meta.Outputs[0].Shape[1], nil
}

// setBodies writes the n requests' JSON: input i at i*inSize in region
// in, its output at i*outSize in region out.
func (t *ShmTarget) setBodies(meta *ModelMetadata, shape []int64, n, inSize, outSize int64, inRegion, outRegion string) {
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = strconv.FormatInt(d, 10)
	}
	in, _ := json.Marshal(meta.Inputs[0].Name)
	out, _ := json.Marshal(meta.Outputs[0].Name)
	for i := range n {
		t.bodies = append(t.bodies, fmt.Appendf(nil,
			`{"inputs":[{"name":%s,"datatype":%q,"shape":[%s],"parameters":{"shared_memory_region":%q,"shared_memory_offset":%d,"shared_memory_byte_size":%d}}],`+
				`"outputs":[{"name":%s,"parameters":{"shared_memory_region":%q,"shared_memory_offset":%d,"shared_memory_byte_size":%d}}]}`,
			in, meta.Inputs[0].Datatype, strings.Join(dims, ","), inRegion, i*inSize, inSize, out, outRegion, i*outSize, outSize))
	}
}

// shmDir is where Linux keeps POSIX shared memory objects.
const shmDir = "/dev/shm"

// NewShmTarget writes variants tensors of batch rows for the model's input
// into a new shared memory object, with room for each one's output, and
// registers both halves with the server. Close unregisters and removes
// them.
func NewShmTarget(c *Client, meta *ModelMetadata, batch, variants int, seed uint64) (*ShmTarget, error) {
	shape, tensors, inSize, outSize, err := shmLayout(meta, batch, variants, seed)
	if err != nil {
		return nil, err
	}
	n := int64(len(tensors))

	id := "fastinfer-bench-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatUint(seed, 10)
	file := filepath.Join(shmDir, id)
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("the shared memory target needs POSIX shared memory on this host: %w", err)
	}
	t := &ShmTarget{c: c, path: "/v2/models/" + url.PathEscape(meta.Name) + "/infer", batch: batch, file: file, ext: "/v2/systemsharedmemory"}
	err = func() error {
		defer f.Close()
		if err := f.Truncate(n * (inSize + outSize)); err != nil {
			return err
		}
		for i, x := range tensors {
			if _, err := f.WriteAt(x, int64(i)*inSize); err != nil {
				return err
			}
		}
		return nil
	}()
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("writing the tensors into %s: %w", file, err)
	}
	inRegion, outRegion := id+"-in", id+"-out"
	for _, r := range []struct {
		name         string
		offset, size int64
	}{{inRegion, 0, n * inSize}, {outRegion, n * inSize, n * outSize}} {
		body := fmt.Appendf(nil, `{"key":"/%s","offset":%d,"byte_size":%d}`, id, r.offset, r.size)
		if err := c.postJSON("/v2/systemsharedmemory/region/"+url.PathEscape(r.name)+"/register", body); err != nil {
			t.Close()
			return nil, fmt.Errorf("registering shared memory (is the server on this host, started with --allow-client-shm?): %w", err)
		}
		t.regions = append(t.regions, r.name)
	}
	t.setBodies(meta, shape, n, inSize, outSize, inRegion, outRegion)
	return t, nil
}

// NewCUDAShmTarget is the same through Triton's CUDA shared memory
// extension, as perf_analyzer's --shared-memory cuda drives it: the
// tensors lie in device memory on GPU device, from alloc, which the server
// (on the same host) opens by the allocations' IPC handles. Inputs and
// outputs get one allocation each, since a process opens a handle once.
func NewCUDAShmTarget(c *Client, meta *ModelMetadata, batch, variants int, seed uint64, device int, alloc func(bytes int) (IPCBuffer, error)) (*ShmTarget, error) {
	shape, tensors, inSize, outSize, err := shmLayout(meta, batch, variants, seed)
	if err != nil {
		return nil, err
	}
	n := int64(len(tensors))
	t := &ShmTarget{c: c, path: "/v2/models/" + url.PathEscape(meta.Name) + "/infer", batch: batch, ext: "/v2/cudasharedmemory"}
	id := "fastinfer-bench-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatUint(seed, 10)
	inRegion, outRegion := id+"-in", id+"-out"
	for _, r := range []struct {
		name string
		size int64
	}{{inRegion, n * inSize}, {outRegion, n * outSize}} {
		buf, err := alloc(int(r.size))
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("the CUDA shared memory target: allocating %d bytes on GPU %d: %w", r.size, device, err)
		}
		t.bufs = append(t.bufs, buf)
		if r.name == inRegion {
			if err := buf.CopyIn(bytes.Join(tensors, nil)); err != nil {
				t.Close()
				return nil, fmt.Errorf("copying the tensors to GPU %d: %w", device, err)
			}
		}
		h, err := buf.IPCHandle()
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("exporting device memory: %w", err)
		}
		body := fmt.Appendf(nil, `{"raw_handle":{"b64":%q},"device_id":%d,"byte_size":%d}`, base64.StdEncoding.EncodeToString(h), device, r.size)
		if err := c.postJSON(t.ext+"/region/"+url.PathEscape(r.name)+"/register", body); err != nil {
			t.Close()
			return nil, fmt.Errorf("registering CUDA shared memory (is the server on this host, on a GPU, started with --allow-client-shm?): %w", err)
		}
		t.regions = append(t.regions, r.name)
	}
	t.setBodies(meta, shape, n, inSize, outSize, inRegion, outRegion)
	return t, nil
}

func (t *ShmTarget) BatchSize() int { return t.batch }

func (t *ShmTarget) Do(context.Context) (int, string) {
	body := t.bodies[(t.next.Add(1)-1)%uint64(len(t.bodies))]
	if f := t.c.post(t.path, "application/json", body, [2]string{}); f != "" {
		return 0, f
	}
	return t.batch, ""
}

// Close unregisters the regions, then removes the object or frees the
// device memory.
func (t *ShmTarget) Close() error {
	var errs []error
	for _, r := range t.regions {
		errs = append(errs, t.c.postJSON(t.ext+"/region/"+url.PathEscape(r)+"/unregister", nil))
	}
	t.regions = nil
	for _, b := range t.bufs {
		errs = append(errs, b.Free())
	}
	t.bufs = nil
	if t.file != "" {
		if err := os.Remove(t.file); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		t.file = ""
	}
	return errors.Join(errs...)
}
