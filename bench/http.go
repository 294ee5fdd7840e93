package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"fastinfer/internal/dtype"
)

// Client is a connection pool to one fastinfer server.
type Client struct {
	base string // scheme://host:port
	hc   *fasthttp.HostClient
	// Timeout bounds one request (default 60 s).
	Timeout time.Duration
}

// NewClient connects to a server at rawURL (http://host:port).
func NewClient(rawURL string) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("server URL must be http://host:port, got %q", rawURL)
	}
	return &Client{
		base: u.Scheme + "://" + u.Host,
		hc: &fasthttp.HostClient{
			Addr: u.Host, IsTLS: u.Scheme == "https",
			MaxConns:            4096,
			MaxIdleConnDuration: time.Minute,
			ReadBufferSize:      64 << 10,
		},
		Timeout: 60 * time.Second,
	}, nil
}

// SetTLS sets the TLS configuration of an https:// client: the CAs it
// trusts, and a client certificate for a server that requires one. Call it
// before the first request.
func (c *Client) SetTLS(cfg *tls.Config) { c.hc.TLSConfig = cfg }

// post sends one request and classifies its outcome.
func (c *Client) post(path, contentType string, body []byte, header [2]string) string {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(c.base + path)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType(contentType)
	if header[0] != "" {
		req.Header.Set(header[0], header[1])
	}
	req.SetBodyRaw(body)
	if err := c.hc.DoTimeout(req, resp, c.Timeout); err != nil {
		return "transport"
	}
	if s := resp.StatusCode(); s != fasthttp.StatusOK {
		return strconv.Itoa(s)
	}
	return ""
}

// postJSON sends a JSON body and returns nil for a 200 answer, else an
// error holding the answer.
func (c *Client) postJSON(path string, body []byte) error {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(c.base + path)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.SetBodyRaw(body)
	if err := c.hc.DoTimeout(req, resp, c.Timeout); err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	if s := resp.StatusCode(); s != fasthttp.StatusOK {
		return fmt.Errorf("POST %s: %d %s", path, s, bytes.TrimSpace(resp.Body()))
	}
	return nil
}

// Get fetches path and returns the body of a 200 answer.
func (c *Client) Get(path string) ([]byte, error) {
	status, body, err := c.hc.GetTimeout(nil, c.base+path, c.Timeout)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	if status != fasthttp.StatusOK {
		return nil, fmt.Errorf("GET %s: status %d: %s", path, status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// WaitReady polls /v2/health/ready until it answers 200 or ctx ends.
func (c *Client) WaitReady(ctx context.Context) error {
	for {
		status, _, err := c.hc.GetTimeout(nil, c.base+"/v2/health/ready", time.Second)
		if err == nil && status == fasthttp.StatusOK {
			return nil
		}
		// A certificate refused either way will not come right by waiting.
		var verr *tls.CertificateVerificationError
		var alert tls.AlertError
		if errors.As(err, &verr) || errors.As(err, &alert) {
			return fmt.Errorf("server at %s: %w", c.base, err)
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("status %d", status)
			}
			return fmt.Errorf("server at %s not ready: %w (last: %v)", c.base, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ImageTarget posts encoded images, one per request, cycling through them.
type ImageTarget struct {
	c      *Client
	path   string
	images [][]byte
	next   atomic.Uint64
}

// NewImageTarget classifies images with model through c.
func NewImageTarget(c *Client, model string, images [][]byte) (*ImageTarget, error) {
	if len(images) == 0 {
		return nil, errors.New("no images to send")
	}
	return &ImageTarget{c: c, path: "/v1/models/" + url.PathEscape(model) + "/classify", images: images}, nil
}

func (t *ImageTarget) BatchSize() int { return 1 }

func (t *ImageTarget) Do(context.Context) (int, string) {
	img := t.images[(t.next.Add(1)-1)%uint64(len(t.images))]
	if f := t.c.post(t.path, "application/octet-stream", img, [2]string{}); f != "" {
		return 0, f
	}
	return 1, ""
}

// LoadImages reads every .jpg, .jpeg and .png file in dir, sorted by name.
func LoadImages(dir string) ([][]byte, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for _, e := range entries {
		switch strings.ToLower(filepath.Ext(e.Name())) {
		case ".jpg", ".jpeg", ".png":
		default:
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no .jpg or .png images in %s", dir)
	}
	return out, nil
}

// ModelMetadata is the part of GET /v2/models/{m} the tensor target needs.
type ModelMetadata struct {
	Name     string           `json:"name"`
	Versions []string         `json:"versions"`
	Platform string           `json:"platform"`
	Inputs   []TensorMetadata `json:"inputs"`
	Outputs  []TensorMetadata `json:"outputs"`
}

// TensorMetadata is one input or output of ModelMetadata.
type TensorMetadata struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

// Metadata fetches a model's Open Inference Protocol metadata.
func (c *Client) Metadata(model string) (*ModelMetadata, error) {
	b, err := c.Get("/v2/models/" + url.PathEscape(model))
	if err != nil {
		return nil, err
	}
	var m ModelMetadata
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("model metadata: %w", err)
	}
	if len(m.Inputs) != 1 {
		return nil, fmt.Errorf("model %s has %d inputs; the tensor target drives one", model, len(m.Inputs))
	}
	return &m, nil
}

// ModelBatching is what fastinfer's own metadata (GET /v1/models/{m})
// says of a model's batching: zeros when the server does not say.
type ModelBatching struct {
	Instances    int `json:"instances"`
	MaxBatchSize int `json:"max_batch_size"`
}

// Batching fetches a model's ModelBatching.
func (c *Client) Batching(model string) ModelBatching {
	b, err := c.Get("/v1/models/" + url.PathEscape(model))
	if err != nil {
		return ModelBatching{}
	}
	var m struct {
		Batching ModelBatching `json:"batching"`
	}
	if json.Unmarshal(b, &m) != nil {
		return ModelBatching{}
	}
	return m.Batching
}

// TensorTarget posts pre-made tensors in the input's datatype (FP32, FP16
// or UINT8, as perf_analyzer sends what the metadata says) with the
// binary tensor extension, so no image is decoded: the server's cost
// without preprocessing. The values are seeded normal noise (uniform
// pixels for UINT8); a convolutional network's cost does not depend on
// them.
type TensorTarget struct {
	c      *Client
	path   string
	bodies [][]byte
	hlen   string
	batch  int
	next   atomic.Uint64
}

// NewTensorTarget builds variants different bodies of batch rows each for
// model's input.
func NewTensorTarget(c *Client, meta *ModelMetadata, batch, variants int, seed uint64) (*TensorTarget, error) {
	shape, tensors, err := noiseTensors(meta, batch, variants, seed)
	if err != nil {
		return nil, err
	}
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = strconv.FormatInt(d, 10)
	}
	// Asking for every output in binary keeps the answer small without
	// naming the output.
	name, _ := json.Marshal(meta.Inputs[0].Name)
	header := fmt.Sprintf(`{"inputs":[{"name":%s,"datatype":%q,"shape":[%s],"parameters":{"binary_data_size":%d}}],"parameters":{"binary_data_output":true}}`,
		name, meta.Inputs[0].Datatype, strings.Join(dims, ","), len(tensors[0]))
	// Spaces after the JSON put the tensor at a multiple of 8 bytes into
	// the body. fastinfer reads a tensor in place at any offset, but an
	// aligned one costs it 3 % less CPU.
	header += strings.Repeat(" ", (8-len(header)%8)%8)
	t := &TensorTarget{c: c, path: "/v2/models/" + url.PathEscape(meta.Name) + "/infer", hlen: strconv.Itoa(len(header)), batch: batch}
	for _, x := range tensors {
		t.bodies = append(t.bodies, append([]byte(header), x...))
	}
	return t, nil
}

// noiseTensors makes variants different tensors of batch rows for the
// model's one input, in its datatype as little-endian bytes, and their
// shape.
func noiseTensors(meta *ModelMetadata, batch, variants int, seed uint64) ([]int64, [][]byte, error) {
	if batch < 1 {
		return nil, nil, fmt.Errorf("batch size must be at least 1, got %d", batch)
	}
	if len(meta.Inputs) != 1 {
		return nil, nil, fmt.Errorf("model %s has %d inputs; the tensor targets drive one", meta.Name, len(meta.Inputs))
	}
	in := meta.Inputs[0]
	size := dtype.Size(in.Datatype)
	if size == 0 {
		return nil, nil, fmt.Errorf("input %s is %s; the tensor targets send FP32, FP16 or UINT8", in.Name, in.Datatype)
	}
	shape := slices.Clone(in.Shape)
	if len(shape) == 0 {
		return nil, nil, fmt.Errorf("input %s has no shape", in.Name)
	}
	shape[0] = int64(batch)
	n := int64(1)
	for i, d := range shape[1:] {
		if d <= 0 {
			return nil, nil, fmt.Errorf("input %s dimension %d is dynamic (%d); give it a size", in.Name, i+1, d)
		}
		n *= d
	}
	n *= int64(batch)
	rng := rand.New(rand.NewPCG(seed, 0x7e45))
	var out [][]byte
	vals := make([]float32, n)
	for range max(variants, 1) {
		for i := range vals {
			vals[i] = float32(rng.NormFloat64())
			if in.Datatype == "UINT8" {
				vals[i] = float32(rng.IntN(256))
			}
		}
		b := make([]byte, int(n)*size)
		dtype.Encode(in.Datatype, b, vals)
		out = append(out, b)
	}
	return shape, out, nil
}

func (t *TensorTarget) BatchSize() int { return t.batch }

func (t *TensorTarget) Do(context.Context) (int, string) {
	body := t.bodies[(t.next.Add(1)-1)%uint64(len(t.bodies))]
	if f := t.c.post(t.path, "application/octet-stream", body, [2]string{"Inference-Header-Content-Length", t.hlen}); f != "" {
		return 0, f
	}
	return t.batch, ""
}
