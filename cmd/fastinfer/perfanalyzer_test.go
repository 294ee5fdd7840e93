package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// perf_analyzer is the tool Triton users measure a server with; it cannot be
// installed here, so paClient does over HTTP what its Triton backend does
// (read from perf_analyzer's ModelParser, InferenceProfiler,
// DataLoader and the Triton HTTP client's InferResultHttp):
//   - metadata, then config, then GET /v2 for the extensions;
//   - the statistics before and after each window, read with rapidjson's
//     unchecked accessors: every field must be there, as a JSON number;
//   - requests with an empty id, inputs sorted by name, each with its
//     binary_data_size, and every output asked for with binary_data: true;
//   - a response whose JSON header length is in Inference-Header-Content-Length
//     and whose outputs each say binary_data_size, slices in outputs' order.
//
// perf_analyzer treats any failed request, or any of these fields missing,
// as the end of the run; so does this test.
type paClient struct {
	t    *testing.T
	base string
	name string
	// from the metadata, the batch dimension dropped as perf_analyzer drops it
	inputs  []paTensor
	outputs []paTensor
	maxBS   int64
}

type paTensor struct {
	name     string
	datatype string
	dims     []int64
}

func (t paTensor) bytes(batch int64) int64 {
	n := batch * 4 // FP32 only: perf_analyzer sizes other types the same way
	for _, d := range t.dims {
		n *= d
	}
	return n
}

func (c *paClient) get(path string) []byte {
	c.t.Helper()
	resp, err := http.Get(c.base + path)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		c.t.Fatalf("GET %s: %d %s (perf_analyzer exits)", path, resp.StatusCode, body)
	}
	return body
}

// paInt is perf_analyzer's ModelParser::GetInt: an integer or a string of one.
func paInt(v any) (int64, error) {
	switch v := v.(type) {
	case json.Number:
		return v.Int64()
	case string:
		return strconv.ParseInt(v, 10, 64)
	}
	return 0, fmt.Errorf("%v (%T) is neither an integer nor a string", v, v)
}

func decodeNumbers(b []byte) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	return m, d.Decode(&m)
}

// setup is perf_analyzer's start: ModelParser::InitTriton over the metadata
// and the config, then the server's extensions.
func (c *paClient) setup() {
	t := c.t
	meta, err := decodeNumbers(c.get("/v2/models/" + c.name))
	if err != nil {
		t.Fatalf("metadata: %v", err)
	}
	cfg, err := decodeNumbers(c.get("/v2/models/" + c.name + "/config"))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	if v, ok := cfg["max_batch_size"]; ok {
		if c.maxBS, err = paInt(v); err != nil {
			t.Fatalf("config max_batch_size: %v", err)
		}
	}
	if p, ok := cfg["platform"]; ok {
		if _, isStr := p.(string); !isStr {
			t.Fatalf("config platform %v is not a string", p)
		}
	}
	if pol, ok := cfg["model_transaction_policy"].(map[string]any); ok && pol["decoupled"] == true {
		t.Fatal("a decoupled model: perf_analyzer refuses HTTP")
	}
	if _, ok := meta["name"].(string); !ok {
		t.Fatalf("metadata name %v is not a string", meta["name"])
	}
	tensors := func(key string) []paTensor {
		var out []paTensor
		list, _ := meta[key].([]any)
		for _, e := range list {
			m, _ := e.(map[string]any)
			name, ok1 := m["name"].(string)
			dt, ok2 := m["datatype"].(string)
			shape, ok3 := m["shape"].([]any)
			if !ok1 || !ok2 || !ok3 {
				t.Fatalf("metadata %s entry %v: want name, datatype (strings) and shape", key, m)
			}
			var dims []int64
			for _, d := range shape {
				n, err := paInt(d)
				if err != nil {
					t.Fatalf("metadata %s %s shape: %v", key, name, err)
				}
				dims = append(dims, n)
			}
			if c.maxBS > 0 {
				// perf_analyzer drops the first dimension as the batch's
				// without looking at it: it must be there, and -1.
				if len(dims) == 0 || dims[0] != -1 {
					t.Fatalf("metadata %s %s shape %v: a batching model's shape must start with -1", key, name, dims)
				}
				dims = dims[1:]
			}
			if slices.Contains(dims, -1) {
				t.Fatalf("metadata %s %s shape %v: dynamic beyond the batch; perf_analyzer wants --shape", key, name, dims)
			}
			out = append(out, paTensor{name, dt, dims})
		}
		return out
	}
	c.inputs, c.outputs = tensors("inputs"), tensors("outputs")
	// ModelTensorMap is a std::map: inputs go out sorted by name.
	slices.SortFunc(c.inputs, func(a, b paTensor) int { return strings.Compare(a.name, b.name) })
	for _, key := range []string{"input", "output"} {
		list, _ := cfg[key].([]any)
		for _, e := range list {
			m, _ := e.(map[string]any)
			name, _ := m["name"].(string)
			known := slices.ContainsFunc(append(slices.Clone(c.inputs), c.outputs...), func(x paTensor) bool { return x.name == name })
			if !known {
				t.Fatalf("config %s %q has no metadata (perf_analyzer: no metadata found for tensor)", key, name)
			}
		}
	}
	if len(c.inputs) == 0 || len(c.outputs) == 0 {
		t.Fatalf("metadata has %d inputs and %d outputs", len(c.inputs), len(c.outputs))
	}
	srv, err := decodeNumbers(c.get("/v2"))
	if err != nil {
		t.Fatalf("server metadata: %v", err)
	}
	ext, _ := srv["extensions"].([]any)
	if !slices.Contains(ext, any("statistics")) {
		t.Fatalf("GET /v2 extensions %v lack statistics: perf_analyzer would not report the server side", ext)
	}
}

// paDur is one count/ns pair as TritonClientBackend::ParseStatistics reads it.
type paDur struct{ count, ns uint64 }

type paStats struct {
	version                                 string
	inferences, executions                  uint64
	success, queue, cin, cinfer, cout, hits paDur
}

// stats reads the model's statistics the way ParseStatistics does: with
// GetString and GetUint64 and no check, so a field missing or a count sent
// as a string (protobuf's JSON rule for uint64) is garbage or an abort
// there, and a failure here.
func (c *paClient) stats() paStats {
	t := c.t
	t.Helper()
	doc, err := decodeNumbers(c.get("/v2/models/" + c.name + "/stats"))
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	list, _ := doc["model_stats"].([]any)
	if len(list) != 1 {
		t.Fatalf("stats of %d versions, want the one served", len(list))
	}
	m, _ := list[0].(map[string]any)
	str := func(k string) string {
		s, ok := m[k].(string)
		if !ok {
			t.Fatalf("stats %s = %v (%T), want a string", k, m[k], m[k])
		}
		return s
	}
	u64 := func(where string, v any) uint64 {
		n, ok := v.(json.Number)
		if !ok {
			t.Fatalf("stats %s = %v (%T), want a JSON number", where, v, v)
		}
		u, err := strconv.ParseUint(string(n), 10, 64)
		if err != nil {
			t.Fatalf("stats %s = %s: not an unsigned integer", where, n)
		}
		return u
	}
	is, _ := m["inference_stats"].(map[string]any)
	dur := func(k string) paDur {
		d, _ := is[k].(map[string]any)
		return paDur{u64(k+".count", d["count"]), u64(k+".ns", d["ns"])}
	}
	if name := str("name"); name != c.name {
		t.Fatalf("stats name %q, want %q", name, c.name)
	}
	s := paStats{
		version:    str("version"),
		inferences: u64("inference_count", m["inference_count"]),
		executions: u64("execution_count", m["execution_count"]),
		success:    dur("success"), queue: dur("queue"),
		cin: dur("compute_input"), cinfer: dur("compute_infer"), cout: dur("compute_output"),
	}
	// Read though perf_analyzer only reports them, and must be numbers all the same.
	s.hits = dur("cache_hit")
	dur("cache_miss")
	return s
}

// window is one measurement: conc clients, each sending n requests of
// batch rows back to back, then the statistics perf_analyzer derives.
func (c *paClient) window(conc, n int, batch int64, async bool, data []byte) {
	t := c.t
	before := c.stats()
	var wg sync.WaitGroup
	for w := range conc {
		wg.Go(func() {
			for i := range n {
				id := ""
				if async {
					// InferContext::SendRequest: (thread << 48) | request, in decimal
					id = strconv.FormatUint(uint64(w)<<48|uint64(i), 10)
				}
				if err := c.infer(id, batch, data); err != nil {
					t.Errorf("client %d request %d: %v (perf_analyzer: failed to maintain the requested load)", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	after := c.stats()
	if t.Failed() {
		return
	}
	// DetermineStatsModelVersion: the version whose queue count grew, parsed with stoll.
	if _, err := strconv.ParseInt(after.version, 10, 64); err != nil || after.version != before.version {
		t.Errorf("stats version %q (before %q): perf_analyzer wants the same decimal string", after.version, before.version)
	}
	reqs := uint64(conc * n)
	if got := after.queue.count - before.queue.count; got != reqs {
		t.Errorf("queue.count grew by %d over %d requests", got, reqs)
	}
	if got := after.success.count - before.success.count; got != reqs {
		t.Errorf("success.count grew by %d over %d requests", got, reqs)
	}
	// ReportServerSideStats throws unless the three compute counts moved together.
	din, dinf, dout := after.cin.count-before.cin.count, after.cinfer.count-before.cinfer.count, after.cout.count-before.cout.count
	if din != dinf || dinf != dout || din != reqs {
		t.Errorf("compute counts grew by %d/%d/%d over %d requests: perf_analyzer throws unless equal", din, dinf, dout, reqs)
	}
	if got := after.inferences - before.inferences; got != reqs*uint64(batch) {
		t.Errorf("inference_count grew by %d, want %d rows", got, reqs*uint64(batch))
	}
	if after.executions <= before.executions || after.success.ns <= before.success.ns || after.cinfer.ns <= before.cinfer.ns {
		t.Errorf("executions or durations did not grow: before %+v, after %+v", before, after)
	}
}

// infer sends one request as the Triton HTTP client builds it and parses
// the response as InferResultHttp does.
func (c *paClient) infer(id string, batch int64, data []byte) error {
	var hdr bytes.Buffer
	fmt.Fprintf(&hdr, `{"id":%q,"inputs":[`, id)
	var tail []byte
	for i, in := range c.inputs {
		shape := []string{strconv.FormatInt(batch, 10)}
		for _, d := range in.dims {
			shape = append(shape, strconv.FormatInt(d, 10))
		}
		size := in.bytes(batch)
		if i > 0 {
			hdr.WriteByte(',')
		}
		fmt.Fprintf(&hdr, `{"name":%q,"shape":[%s],"datatype":%q,"parameters":{"binary_data_size":%d}}`,
			in.name, strings.Join(shape, ","), in.datatype, size)
		// DataLoader: one buffer, repeated for every row of the batch
		for range batch {
			tail = append(tail, data[:in.bytes(1)]...)
		}
	}
	hdr.WriteString(`],"outputs":[`)
	for i, out := range c.outputs {
		if i > 0 {
			hdr.WriteByte(',')
		}
		fmt.Fprintf(&hdr, `{"name":%q,"parameters":{"binary_data":true}}`, out.name)
	}
	hdr.WriteString(`]}`)
	hlen := hdr.Len()
	req, err := http.NewRequest("POST", c.base+"/v2/models/"+c.name+"/infer", io.MultiReader(&hdr, bytes.NewReader(tail)))
	if err != nil {
		return err
	}
	req.ContentLength = int64(hlen + len(tail))
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Inference-Header-Content-Length", strconv.Itoa(hlen))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			return fmt.Errorf("status %d with no {\"error\": string}: %s", resp.StatusCode, body)
		}
		return fmt.Errorf("status %d: %s", resp.StatusCode, e.Error)
	}
	jl := len(body)
	if h := resp.Header.Get("Inference-Header-Content-Length"); h != "" {
		if jl, err = strconv.Atoi(h); err != nil || jl > len(body) {
			return fmt.Errorf("Inference-Header-Content-Length %q for a body of %d bytes", h, len(body))
		}
	}
	doc, err := decodeNumbers(body[:jl])
	if err != nil {
		return fmt.Errorf("response header is not JSON (%v): %.200q", err, body[:jl])
	}
	if id != "" { // read only with --async
		if got, ok := doc["id"].(string); !ok || got != id {
			return fmt.Errorf("response id %v, want %q echoed", doc["id"], id)
		}
	}
	outs, _ := doc["outputs"].([]any)
	rest := body[jl:]
	got := map[string][]byte{}
	for _, e := range outs {
		o, _ := e.(map[string]any)
		name, ok := o["name"].(string)
		if !ok {
			return fmt.Errorf("output without a name: %v", o)
		}
		p, ok := o["parameters"].(map[string]any)
		if !ok {
			continue // kept as JSON
		}
		n, ok := p["binary_data_size"].(json.Number)
		size, err := strconv.ParseUint(string(n), 10, 64)
		if !ok || err != nil || size > uint64(len(rest)) {
			return fmt.Errorf("output %s binary_data_size %v with %d bytes left", name, p["binary_data_size"], len(rest))
		}
		got[name], rest = rest[:size], rest[size:]
	}
	if len(rest) != 0 {
		return fmt.Errorf("%d bytes after the outputs", len(rest))
	}
	for _, out := range c.outputs {
		raw, ok := got[out.name]
		if !ok || int64(len(raw)) != out.bytes(batch) {
			return fmt.Errorf("output %s: %d bytes, want %d", out.name, len(raw), out.bytes(batch))
		}
		for i := 0; i+4 <= len(raw); i += 4 {
			if v := math.Float32frombits(binary.LittleEndian.Uint32(raw[i:])); math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("output %s element %d is %v", out.name, i/4, v)
			}
		}
	}
	return nil
}

// TestPerfAnalyzerProtocol runs perf_analyzer's HTTP conversation against
// the real server: `perf_analyzer -m fashion-resnet -i http
// --input-data zero --concurrency-range 1:4:3`, then `-b 4`, then
// `--async`. Its default --input-data random fills FP32 tensors with
// random bytes, which the server refuses (below), so the README says to
// pass zero or real data.
func TestPerfAnalyzerProtocol(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	base, _, stop := startServe(t, fashionRepo(t))
	defer stop()
	c := &paClient{t: t, base: base, name: "fashion-resnet"}
	c.setup()
	if c.maxBS < 4 {
		t.Fatalf("max_batch_size %d: the test wants a batching model", c.maxBS)
	}
	zero := make([]byte, c.inputs[0].bytes(1))
	for _, w := range []struct {
		conc, n int
		batch   int64
		async   bool
	}{{1, 5, 1, false}, {4, 5, 1, false}, {2, 4, 4, false}, {4, 5, 1, true}} {
		c.window(w.conc, w.n, w.batch, w.async, zero)
		if t.Failed() {
			t.Fatalf("window %+v failed", w)
		}
	}

	// --input-data random fills the tensor with rand() bytes: about one
	// float in 256 is NaN or Inf (400), and the rest reach ±3e38, which
	// overflow the network (422). Either ends a perf_analyzer run.
	nan := make([]byte, len(zero))
	binary.LittleEndian.PutUint32(nan[40:], 0x7fc00000)
	huge := make([]byte, len(zero))
	for i := 0; i < len(huge); i += 4 {
		binary.LittleEndian.PutUint32(huge[i:], 0x7f000000|uint32(i*2654435761)>>9) // 1.7e38..3.4e38
	}
	for _, tt := range []struct {
		name string
		data []byte
		want string
	}{
		{"NaN", nan, "status 400: input data: element 10 is not a finite number"},
		{"huge", huge, "status 422: model fashion-resnet gave"},
	} {
		if err := c.infer("", 1, tt.data); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("random bytes (%s): %v; want %q", tt.name, err, tt.want)
		}
	}
}
