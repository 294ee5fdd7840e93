package bench

import (
	"context"
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
}

// shmDir is where Linux keeps POSIX shared memory objects.
const shmDir = "/dev/shm"

// NewShmTarget writes variants tensors of batch rows for the model's input
// into a new shared memory object, with room for each one's output, and
// registers both halves with the server. Close unregisters and removes
// them.
func NewShmTarget(c *Client, meta *ModelMetadata, batch, variants int, seed uint64) (*ShmTarget, error) {
	shape, tensors, err := noiseTensors(meta, batch, variants, seed)
	if err != nil {
		return nil, err
	}
	if len(meta.Outputs) != 1 || len(meta.Outputs[0].Shape) != 2 || meta.Outputs[0].Shape[1] <= 0 {
		return nil, fmt.Errorf("model %s: the shared memory target needs one [batch, classes] output, the model has %v", meta.Name, meta.Outputs)
	}
	inSize := int64(len(tensors[0]))
	// Room for the output as FP32, the larger of its forms here.
	outSize := 4 * int64(batch) * meta.Outputs[0].Shape[1]
	n := int64(len(tensors))

	id := "fastinfer-bench-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatUint(seed, 10)
	file := filepath.Join(shmDir, id)
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("the shared memory target needs POSIX shared memory on this host: %w", err)
	}
	t := &ShmTarget{c: c, path: "/v2/models/" + url.PathEscape(meta.Name) + "/infer", batch: batch, file: file}
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

// Close unregisters the regions and removes the object.
func (t *ShmTarget) Close() error {
	var errs []error
	for _, r := range t.regions {
		errs = append(errs, t.c.postJSON("/v2/systemsharedmemory/region/"+url.PathEscape(r)+"/unregister", nil))
	}
	t.regions = nil
	if t.file != "" {
		if err := os.Remove(t.file); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		t.file = ""
	}
	return errors.Join(errs...)
}
