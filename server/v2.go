package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"math"
	"strconv"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"

	"fastinfer/batching"
	"fastinfer/internal/dtype"
	"fastinfer/internal/fault"
)

// The Open Inference Protocol (KServe v2) over HTTP: model metadata and
// readiness, and inference with JSON or binary tensors (Triton's binary
// tensor and classification extensions). Errors here are the protocol's
// {"error":"message"}.

var pathV2Models = []byte("/v2/models/")

// v2Models routes /v2/models/{m}[/versions/{v}][/ready|/infer].
func (s *Server) v2Models(ctx *fasthttp.RequestCtx, rest []byte) {
	parts := bytes.Split(rest, []byte{'/'})
	name, version := string(parts[0]), ""
	if len(parts) >= 3 && string(parts[1]) == "versions" {
		version = string(parts[2])
		parts = append(parts[:1], parts[3:]...)
	}
	if name == "" || version == "" && len(parts) > 1 && string(parts[1]) == "versions" {
		writeV2Error(ctx, errorf(404, codeNotFound, "no such endpoint: "+string(ctx.Path())))
		return
	}
	switch {
	case len(parts) == 1 && name == "stats" && version == "":
		// GET /v2/models/stats is the statistics of every model, as in
		// Triton (a model named "stats" keeps its other endpoints).
		if allowV2(ctx, "GET") {
			s.v2Stats(ctx, "", "")
		}
	case len(parts) == 2 && string(parts[1]) == "config":
		if allowV2(ctx, "GET") {
			s.v2Config(ctx, name, version)
		}
	case len(parts) == 2 && string(parts[1]) == "stats":
		if allowV2(ctx, "GET") {
			s.v2Stats(ctx, name, version)
		}
	case len(parts) == 1:
		if allowV2(ctx, "GET") {
			s.v2Metadata(ctx, name, version)
		}
	case len(parts) == 2 && string(parts[1]) == "ready":
		if allowV2(ctx, "GET") {
			s.v2Ready(ctx, name, version)
		}
	case len(parts) == 2 && string(parts[1]) == "infer":
		if allowV2(ctx, "POST") {
			s.v2Infer(ctx, name, version)
		}
	default:
		writeV2Error(ctx, errorf(404, codeNotFound, "no such endpoint: "+string(ctx.Path())))
	}
}

func allowV2(ctx *fasthttp.RequestCtx, method string) bool {
	m := ctx.Method()
	if string(m) == method || (method == "GET" && string(m) == "HEAD") {
		return true
	}
	writeV2Error(ctx, errorf(405, codeMethod, "use "+method+" here, not "+string(m)))
	ctx.Response.Header.Set("Allow", method) // after writeV2Error, which resets the response
	return false
}

// writeV2Error answers with the protocol's error body.
func writeV2Error(ctx *fasthttp.RequestCtx, e *apiError) {
	ctx.Response.Reset()
	ctx.SetStatusCode(e.status)
	ctx.SetContentType("application/json")
	b := ctx.Response.Body()[:0]
	b = append(b, `{"error":`...)
	b = appendJSONString(b, e.message)
	b = append(b, "}\n"...)
	ctx.Response.SetBodyRaw(b)
	if e.status == fasthttp.StatusTooManyRequests || e.status == fasthttp.StatusServiceUnavailable {
		ctx.Response.Header.Set("Retry-After", "1")
	}
}

type v2TensorMeta struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

// v2Metadata answers GET /v2/models/{m}[/versions/{v}].
func (s *Server) v2Metadata(ctx *fasthttp.RequestCtx, name, version string) {
	m, aerr := s.models.get(name, version)
	if aerr != nil {
		writeV2Error(ctx, aerr)
		return
	}
	out := struct {
		Name     string         `json:"name"`
		Versions []string       `json:"versions"`
		Platform string         `json:"platform"`
		Inputs   []v2TensorMeta `json:"inputs"`
		Outputs  []v2TensorMeta `json:"outputs"`
	}{Name: m.Name, Platform: m.Platform}
	for _, v := range s.models.versions(m.Name) {
		out.Versions = append(out.Versions, strconv.Itoa(v))
	}
	for _, t := range m.Inputs {
		out.Inputs = append(out.Inputs, v2TensorMeta(t))
	}
	for _, t := range m.Outputs {
		out.Outputs = append(out.Outputs, v2TensorMeta(t))
	}
	writeJSON(ctx, out)
}

// v2Ready answers GET /v2/models/{m}[/versions/{v}]/ready: 200 when the
// version is served and the server has finished warming up.
func (s *Server) v2Ready(ctx *fasthttp.RequestCtx, name, version string) {
	if _, aerr := s.models.get(name, version); aerr != nil {
		writeV2Error(ctx, aerr)
		return
	}
	if !s.ready.Load() {
		writeV2Error(ctx, errorf(503, codeUnavailable, "server is not ready"))
		return
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
}

// inferRequest is the JSON part of an infer request, decoded by
// parseInferRequest (v2json.go); the tags say what json.Unmarshal would
// do, which its differential fuzz test holds it to. Tensor data is kept
// raw and parsed by parseNumbers.
type inferRequest struct {
	ID         string          `json:"id"`
	Parameters inferParameters `json:"parameters"`
	Inputs     []inferInput    `json:"inputs"`
	Outputs    []inferOutput   `json:"outputs"`
}

type inferInput struct {
	Name       string          `json:"name"`
	Shape      []int64         `json:"shape"`
	Datatype   string          `json:"datatype"`
	Parameters inferParameters `json:"parameters"`
	Data       json.RawMessage `json:"data"`
}

type inferOutput struct {
	Name       string          `json:"name"`
	Parameters inferParameters `json:"parameters"`
}

// inferParameters are the parameters fastinfer reads; others are ignored,
// as the protocol allows.
type inferParameters struct {
	BinaryDataSize   *int64 `json:"binary_data_size"`
	BinaryData       bool   `json:"binary_data"`
	BinaryDataOutput bool   `json:"binary_data_output"`
	Classification   int    `json:"classification"`
	Priority         int    `json:"priority"`
	TimeoutUS        int64  `json:"timeout"` // Triton's request timeout, in µs
	// Triton's shared memory extension (shm.go).
	SharedMemoryRegion   string `json:"shared_memory_region"`
	SharedMemoryByteSize *int64 `json:"shared_memory_byte_size"`
	SharedMemoryOffset   *int64 `json:"shared_memory_offset"`
}

const headerInferLength = "Inference-Header-Content-Length"

// v2Infer answers POST /v2/models/{m}[/versions/{v}]/infer.
func (s *Server) v2Infer(ctx *fasthttp.RequestCtx, name, version string) {
	s.inference(ctx, name, version, true, s.v2InferModel)
}

func (s *Server) v2InferModel(ctx *fasthttp.RequestCtx, m *Model, start time.Time) *apiError {
	body, aerr := s.requestBody(ctx)
	if aerr != nil {
		return aerr
	}
	header, blobs := body, []byte(nil)
	if raw := ctx.Request.Header.Peek(headerInferLength); raw != nil {
		n, err := strconv.Atoi(string(raw))
		if err != nil || n < 0 || n > len(body) {
			return errorf(400, codeBadRequest, headerInferLength+" must be a byte count within the body, got "+strconv.Quote(string(raw)))
		}
		header, blobs = body[:n], body[n:]
	}
	var req inferRequest
	if err := parseInferRequest(header, &req); err != nil {
		return errorf(400, codeBadRequest, "malformed inference request: "+err.Error())
	}
	opts, aerr := parseScheduling(ctx.QueryArgs().Peek("priority"), ctx.QueryArgs().Peek("timeout_ms"))
	if aerr != nil {
		return aerr
	}
	// The body holds the input as JSON numbers or, with Triton's binary
	// extension, as bytes after the JSON header.
	data := func(in *inferInput, need int) (tensorSource, *apiError) {
		ref, aerr := in.Parameters.shmRef("input " + in.Name)
		switch {
		case aerr != nil:
			return tensorSource{}, aerr
		case ref != nil:
			if in.Parameters.BinaryDataSize != nil || len(in.Data) > 0 || len(blobs) > 0 {
				return tensorSource{}, errorf(400, codeBadRequest, "input "+in.Name+" is in shared memory: the request must not carry its data too")
			}
			return s.shmInput(m, ref, in, need)
		case in.Parameters.BinaryDataSize != nil:
			size := *in.Parameters.BinaryDataSize
			if size != int64(need) {
				return tensorSource{}, errorf(400, codeBadRequest, "input "+in.Name+": binary_data_size is "+strconv.FormatInt(size, 10)+" bytes, shape and datatype need "+strconv.Itoa(need))
			}
			if int64(len(blobs)) != size {
				return tensorSource{}, errorf(400, codeBadRequest, "input "+in.Name+": the body holds "+strconv.Itoa(len(blobs))+" bytes of tensor data, binary_data_size says "+strconv.FormatInt(size, 10))
			}
			// The handler holds the body until the inference returns, and
			// nothing writes to it: the batcher may copy from it directly.
			return tensorSource{raw: blobs, binary: true}, nil
		case len(in.Data) > 0:
			if len(blobs) > 0 {
				return tensorSource{}, errorf(400, codeBadRequest, "the body has binary data no input claims")
			}
			return tensorSource{values: func(dst []float32) (int, error) { return parseNumbers(in.Data, dst) }}, nil
		}
		return tensorSource{}, errorf(400, codeBadRequest, "input "+in.Name+" has neither data nor binary_data_size")
	}
	g := watchClient(ctx)
	opts.Gone = g.fn
	res, aerr := s.inferTensor(context.Background(), m, &req, data, opts, start, func() string { return s.requestID(ctx) })
	unwatchClient(g)
	if aerr != nil {
		return aerr
	}
	writeInferResponse(ctx, m, &req, res.outs, *res.out, res.rows)
	m.release(res.out)
	return nil
}

// tensorSource is a request's input tensor as its transport carries it:
// little-endian bytes of the request's datatype (binary), or values that
// fill writes into dst, returning how many the request held.
type tensorSource struct {
	binary bool
	raw    []byte
	values func(dst []float32) (int, error)
	// shm: raw lies in a client's shared memory region, held mapped until
	// release; reading it may fault (a truncated object), which
	// truncated then answers. release, when set, is called once the
	// inference is done with raw (a hold, or a pooled buffer).
	shm       bool
	release   func()
	truncated func() *apiError
}

// checkRaw returns the index of the first element of a tensor in the
// model's datatype mt that is not a finite number, or -1.
func checkRaw(mt string, raw []byte) int {
	switch mt {
	case "FP32":
		return checkFiniteLE(raw)
	case "FP16":
		return dtype.CheckHalf(raw)
	}
	return -1
}

// takesRaw says whether a binary tensor of datatype dt goes to the batch
// as sent: in the model's input datatype, on a little-endian host, with
// InferBytes to take bytes.
func (m *Model) takesRaw(dt string) bool {
	return dt == m.inputType() && dtype.HostLittleEndian && m.InferBytes != nil
}

// tensorResult is an inference on a tensor that ran: out (rows ×
// m.Classes, pooled: the caller releases it with m.release once written)
// and the outputs the response carries.
type tensorResult struct {
	out  *[]float32
	rows int
	outs []v2Output
}

// inferTensor is the Open Inference Protocol's inference, whichever
// transport carried it (HTTP's JSON and binary tensors, gRPC): it checks
// the request against the model, takes the input from data once its size
// is known (need bytes when binary), runs it, and records it (statistics,
// prediction log, metrics). logID names the request in the prediction log
// when it has no id of its own.
func (s *Server) inferTensor(ctx context.Context, m *Model, req *inferRequest,
	data func(in *inferInput, need int) (tensorSource, *apiError),
	opts batching.RequestOptions, start time.Time, logID func() string) (tensorResult, *apiError) {
	if len(req.Inputs) != len(m.Inputs) || len(m.Inputs) != 1 {
		return tensorResult{}, errorf(400, codeBadRequest, "model "+m.Name+" takes "+strconv.Itoa(len(m.Inputs))+" input(s), the request has "+strconv.Itoa(len(req.Inputs)))
	}
	spec, in := m.Inputs[0], &req.Inputs[0]
	if in.Name != spec.Name {
		return tensorResult{}, errorf(400, codeBadRequest, "unknown input "+strconv.Quote(in.Name)+"; model "+m.Name+" takes "+strconv.Quote(spec.Name))
	}
	rows, aerr := s.checkShape(in.Shape, spec.Shape, m.InputLen)
	if aerr != nil {
		return tensorResult{}, aerr
	}
	dt, ok := datatypes[in.Datatype]
	if !ok {
		return tensorResult{}, errorf(400, codeBadRequest, "datatype "+strconv.Quote(in.Datatype)+" is not supported for input "+in.Name+"; use FP32, FP16, FP64, UINT8, INT8, INT16, INT32 or INT64")
	}
	if p := req.Parameters.Priority; p != 0 {
		if p < 0 {
			return tensorResult{}, errorf(400, codeBadRequest, "priority must be a positive integer (1 = highest)")
		}
		opts.Priority = p
	}
	if t := req.Parameters.TimeoutUS; t != 0 {
		if t < 0 || t > 3.6e9 {
			return tensorResult{}, errorf(400, codeBadRequest, "timeout must be a positive number of microseconds up to one hour")
		}
		opts.Timeout = time.Duration(t) * time.Microsecond
	}

	n := rows * m.InputLen
	src, aerr := data(in, n*dt.size)
	if aerr != nil {
		return tensorResult{}, aerr
	}
	if src.release != nil {
		defer src.release()
	}
	var buf *[]float32
	defer func() {
		if buf != nil {
			m.release(buf)
		}
	}()
	var dst []float32
	var raw []byte // the request's tensor in the model's datatype, for m.InferBytes
	bad := -1      // the first element that is not a finite number
	mt := m.inputType()
	if src.binary {
		// A region's bytes are read under the fault guard, and the
		// batcher's copy of them too (MayFault).
		opts.MayFault = src.shm
		if m.takesRaw(in.Datatype) {
			// Checked where it lies; the batcher copies it straight into
			// the batch.
			raw = src.raw
			if !src.shm {
				bad = checkRaw(mt, raw)
			} else if fault.Guard(func() { bad = checkRaw(mt, raw) }) {
				return tensorResult{}, src.truncated()
			}
		} else {
			buf = m.buffer(n)
			dst = *buf
			if !src.shm {
				bad = dt.decode(dst, src.raw)
			} else if fault.Guard(func() { bad = dt.decode(dst, src.raw) }) {
				return tensorResult{}, src.truncated()
			}
		}
	} else {
		buf = m.buffer(n)
		dst = *buf
		got, err := src.values(dst)
		if err != nil {
			return tensorResult{}, errorf(400, codeBadRequest, "input "+in.Name+": "+err.Error())
		}
		if got != n {
			return tensorResult{}, errorf(400, codeBadRequest, "input "+in.Name+": data has "+strconv.Itoa(got)+" elements, shape needs "+strconv.Itoa(n))
		}
		bad = checkFinite(dst) // parseNumbers refuses 1e39 already; this keeps the rule in one place
	}
	if bad >= 0 {
		return tensorResult{}, errorf(400, codeBadRequest, "input "+in.Name+": element "+strconv.Itoa(bad)+" is not a finite number")
	}
	if raw == nil && mt != "FP32" {
		// Converted, so refused where the conversion would change a
		// value: a UINT8 model takes whole numbers 0..255 only.
		if i := dtype.Check(mt, dst); i >= 0 {
			return tensorResult{}, errorf(400, codeBadRequest, "input "+in.Name+": element "+strconv.Itoa(i)+" ("+
				strconv.FormatFloat(float64(dst[i]), 'g', -1, 32)+") does not fit the model's "+mt+" input")
		}
	}

	outs, aerr := requestedOutputs(m, req)
	if aerr != nil {
		return tensorResult{}, aerr
	}
	if o := outs[0]; o.shm != nil && o.classification == 0 && o.shm.size < int64(m.outputSize(rows)) {
		// Refused before it runs; the size of classification strings is
		// known only after.
		return tensorResult{}, errorf(400, codeBadRequest, "output "+m.Outputs[0].Name+": shared_memory_byte_size is "+
			strconv.FormatInt(o.shm.size, 10)+" bytes, the output takes "+strconv.Itoa(m.outputSize(rows)))
	}

	out := m.buffer(rows * m.Classes)
	var tm batching.Timing
	var err error
	if raw != nil {
		tm, err = m.InferBytes(ctx, raw, rows, *out, opts)
	} else {
		tm, err = m.inferFloats(ctx, dst, rows, *out, opts)
	}
	if err == nil {
		aerr = s.checkOutputs(m, *out, rows, true)
	} else {
		aerr = s.inferError(m, err)
	}
	if aerr == nil && outs[0].shm != nil {
		outs[0].shmWritten, aerr = s.shmOutput(m, &outs[0], *out, rows)
	}
	if aerr != nil {
		m.release(out)
		return tensorResult{}, aerr
	}
	m.stats.ran(rows, tm)
	var smBuf [8]rowSoftmax
	sm := softmaxRows(m, *out, rows, smBuf[:0])
	if s.opts.PredictionLog != nil {
		id := req.ID
		if id == "" {
			id = logID()
		}
		s.logPredictions(m, id, *out, rows, nil, nil, timings{queue: tm.Queue, infer: tm.Compute, total: time.Since(start)}, sm)
	}
	m.imagesCtr.Add(float64(rows))
	m.observePredictions(*out, rows, nil, sm) // tensors carry no image stats
	return tensorResult{out: out, rows: rows, outs: outs}, nil
}

// checkShape validates a request shape against the model's (-1 = any) and
// returns the batch rows.
func (s *Server) checkShape(shape, model []int64, inputLen int) (int, *apiError) {
	bad := func() (int, *apiError) {
		return 0, errorf(400, codeBadRequest, "shape "+shapeString(shape)+" does not match the model's "+shapeString(model))
	}
	if len(shape) != len(model) || len(shape) == 0 {
		return bad()
	}
	per := int64(1)
	for i := 1; i < len(shape); i++ {
		// Dividing keeps per·shape[i] ≤ inputLen without overflowing int64.
		if shape[i] <= 0 || (model[i] >= 0 && shape[i] != model[i]) || shape[i] > int64(inputLen)/per {
			return bad()
		}
		per *= shape[i]
	}
	if per != int64(inputLen) {
		return bad()
	}
	if shape[0] > int64(s.opts.MaxImages) { // 413 like too many images on /v1
		return 0, errorf(413, codeTooLarge, "batch dimension "+strconv.FormatInt(shape[0], 10)+" is over the limit of "+strconv.Itoa(s.opts.MaxImages)+" images per request")
	}
	if shape[0] < 1 {
		return 0, errorf(400, codeBadRequest, "batch dimension must be 1 to "+strconv.Itoa(s.opts.MaxImages)+", got "+strconv.FormatInt(shape[0], 10))
	}
	return int(shape[0]), nil
}

func shapeString(s []int64) string {
	b := []byte{'['}
	for i, d := range s {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, d, 10)
	}
	return string(append(b, ']'))
}

// v2Output is one output the response carries.
type v2Output struct {
	binary         bool
	classification int
	shm            *shmRef // written into this region, not the response
	shmWritten     int64   // bytes written there
}

func requestedOutputs(m *Model, req *inferRequest) ([]v2Output, *apiError) {
	if len(m.Outputs) != 1 {
		return nil, errorf(500, codeInternal, "model "+m.Name+" must have exactly one output")
	}
	if len(req.Outputs) == 0 {
		return []v2Output{{binary: req.Parameters.BinaryDataOutput}}, nil
	}
	if len(req.Outputs) > 1 {
		return nil, errorf(400, codeBadRequest, "model "+m.Name+" has one output, "+strconv.Quote(m.Outputs[0].Name))
	}
	o := req.Outputs[0]
	if o.Name != m.Outputs[0].Name {
		return nil, errorf(400, codeBadRequest, "unknown output "+strconv.Quote(o.Name)+"; model "+m.Name+" has "+strconv.Quote(m.Outputs[0].Name))
	}
	if o.Parameters.Classification < 0 {
		return nil, errorf(400, codeBadRequest, "classification must be a positive count")
	}
	ref, aerr := o.Parameters.shmRef("output " + o.Name)
	if aerr != nil {
		return nil, aerr
	}
	return []v2Output{{
		binary:         o.Parameters.BinaryData || req.Parameters.BinaryDataOutput,
		classification: min(o.Parameters.Classification, m.Classes),
		shm:            ref,
	}}, nil
}

// writeInferResponse writes the response by hand (no reflection on the hot
// path): the JSON header, then any binary outputs after it.
func writeInferResponse(ctx *fasthttp.RequestCtx, m *Model, req *inferRequest, outs []v2Output, logits []float32, rows int) {
	o := outs[0]
	var blob []byte
	b := ctx.Response.Body()[:0]
	b = append(b, `{"model_name":`...)
	b = appendJSONString(b, m.Name)
	b = append(b, `,"model_version":"`...)
	b = strconv.AppendInt(b, int64(m.Version), 10)
	b = append(b, '"')
	if req.ID != "" {
		b = append(b, `,"id":`...)
		b = appendJSONString(b, req.ID)
	}
	b = append(b, `,"outputs":[{"name":`...)
	b = appendJSONString(b, m.Outputs[0].Name)
	cols := m.Classes
	if o.classification > 0 {
		cols = o.classification
		b = append(b, `,"datatype":"BYTES"`...)
	} else {
		b = append(b, `,"datatype":"`...)
		b = append(b, m.outputType()...)
		b = append(b, '"')
	}
	b = append(b, `,"shape":[`...)
	b = strconv.AppendInt(b, int64(rows), 10)
	b = append(b, ',')
	b = strconv.AppendInt(b, int64(cols), 10)
	b = append(b, ']')
	if o.shm != nil {
		b = append(b, `,"parameters":{"shared_memory_region":`...)
		b = appendJSONString(b, o.shm.region)
		b = append(b, `,"shared_memory_byte_size":`...)
		b = strconv.AppendInt(b, o.shmWritten, 10)
		if o.shm.offset != 0 {
			b = append(b, `,"shared_memory_offset":`...)
			b = strconv.AppendInt(b, o.shm.offset, 10)
		}
		b = append(b, "}}]}\n"...)
		ctx.SetContentType("application/json")
	} else if o.binary {
		// The values' size is known up front, so their bytes go straight
		// after the header, with no buffer of their own; the strings' is
		// not.
		size := m.outputSize(rows)
		if o.classification > 0 {
			blob = appendClassStrings(nil, m, logits, rows, o.classification, true)
			size = len(blob)
		}
		b = append(b, `,"parameters":{"binary_data_size":`...)
		b = strconv.AppendInt(b, int64(size), 10)
		b = append(b, "}}]}"...)
		ctx.Response.Header.Set(headerInferLength, strconv.Itoa(len(b)))
		ctx.SetContentType("application/octet-stream")
		if blob != nil {
			b = append(b, blob...)
		} else {
			b = m.appendOutput(b, logits[:rows*m.Classes])
		}
	} else {
		b = append(b, `,"data":[`...)
		if o.classification > 0 {
			b = appendClassStrings(b, m, logits, rows, o.classification, false)
		} else {
			for i, v := range logits[:rows*m.Classes] {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendFloat(b, float64(v), 32)
			}
		}
		b = append(b, "]}]}\n"...)
		ctx.SetContentType("application/json")
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.Response.SetBodyRaw(b)
}

// appendFP32 appends v as little-endian FP32, the raw form of an output.
func appendFP32(b []byte, v []float32) []byte {
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

// appendClassStrings appends Triton's classification strings
// "score:index[:label]" for each row's top k, as JSON strings or, in
// binary, each behind its 4-byte little-endian length. The score is the
// output value itself, as Triton reports it.
func appendClassStrings(b []byte, m *Model, logits []float32, rows, k int, bin bool) []byte {
	var idxBuf [16]int
	var s []byte
	first := true
	for r := range rows {
		row := logits[r*m.Classes : (r+1)*m.Classes]
		for _, idx := range topIndices(row, k, idxBuf[:0]) {
			s = appendFloat(s[:0], float64(row[idx]), 32)
			s = append(s, ':')
			s = strconv.AppendInt(s, int64(idx), 10)
			if idx < len(m.Labels) && m.Labels[idx] != "" {
				s = append(s, ':')
				s = append(s, m.Labels[idx]...)
			}
			if bin {
				b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
				b = append(b, s...)
				continue
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			b = appendJSONString(b, string(s))
		}
	}
	return b
}

// firstNonFinite returns the index of the first NaN or ±Inf, or -1. It
// reads the bits: a float32 is NaN or ±Inf exactly when its exponent is
// all ones, and an integer mask and compare runs at one element a cycle,
// three times the rate of a float subtraction (v-v != 0).
func firstNonFinite(x []float32) int {
	for i, u := range unsafe.Slice((*uint32)(unsafe.Pointer(unsafe.SliceData(x))), len(x)) {
		if u&0x7f800000 == 0x7f800000 {
			return i
		}
	}
	return -1
}

// Exponent masks for two float32s in a little-endian word: for each half,
// (bits & exp) + step carries into the half's top bit only when the
// exponent was all ones (NaN or ±Inf), so OR-ing those over many words
// flags a run holding one, which is then searched element by element.
const (
	exp2  = 0x7f8000007f800000
	step2 = 0x0080000000800000
	tops2 = 0x8000000080000000
)

// checkFinite is firstNonFinite at the rate of a read, for a tensor
// parsed from JSON.
func checkFinite(x []float32) int {
	if !dtype.HostLittleEndian {
		return firstNonFinite(x)
	}
	return checkFiniteLE(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x))), 4*len(x)))
}

// checkFiniteLE returns the index of the first little-endian float32 in b
// that is not finite, or -1: a binary tensor checked where it lies in the
// body, at whatever offset the JSON header left it. It tests eight bytes
// (two exponents) at a time with the carry test below and looks for the
// element only if one fails: 27 µs for a 602 KB ResNet input
// (BenchmarkCheckFinite), where converting it costs 38 (decodeFP32).
func checkFiniteLE(b []byte) int {
	n := 4 * (len(b) / 4)
	var acc uint64
	i := 0
	for ; i+32 <= n; i += 32 {
		s := b[i : i+32]
		w0, w1 := binary.LittleEndian.Uint64(s), binary.LittleEndian.Uint64(s[8:])
		w2, w3 := binary.LittleEndian.Uint64(s[16:]), binary.LittleEndian.Uint64(s[24:])
		acc |= (w0&exp2 + step2) | (w1&exp2 + step2) | (w2&exp2 + step2) | (w3&exp2 + step2)
	}
	for ; i+4 <= n; i += 4 {
		acc |= uint64(binary.LittleEndian.Uint32(b[i:])&0x7f800000 + 0x00800000)
	}
	if acc&tops2 == 0 {
		return -1
	}
	for j := 0; j < n; j += 4 {
		if binary.LittleEndian.Uint32(b[j:])&0x7f800000 == 0x7f800000 {
			return j / 4
		}
	}
	return -1
}

// decodeFP32 converts little-endian float32 bytes and returns the index of
// the first non-finite value, or -1. On a little-endian host it moves
// eight bytes at a time and checks the exponents as it goes, in one pass:
// 40 µs for a 602 KB ResNet input here, against 213 µs for the
// per-element convert loop and float check before, and 62 µs for a
// memmove and a second pass (BenchmarkDecodeFP32). That loop was a fifth
// of the server's CPU on the tensor path.
func decodeFP32(dst []float32, src []byte) int {
	if !dtype.HostLittleEndian {
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
		return firstNonFinite(dst)
	}
	// checkFinite's exponent test, on the words as they are copied.
	// The destination is float32-aligned, so viewing it as words is too
	// when its start is 8-aligned, as Go's allocations of 8 bytes and more
	// are; the source is read a byte slice at a time, at any offset.
	words := len(dst) / 2
	if uintptr(unsafe.Pointer(unsafe.SliceData(dst)))%8 != 0 {
		words = 0
	}
	d := unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(dst))), words)
	var acc uint64
	i := 0
	for ; i+4 <= len(d); i += 4 {
		s := src[8*i : 8*i+32]
		a, b := binary.LittleEndian.Uint64(s), binary.LittleEndian.Uint64(s[8:])
		c, e := binary.LittleEndian.Uint64(s[16:]), binary.LittleEndian.Uint64(s[24:])
		d[i], d[i+1], d[i+2], d[i+3] = a, b, c, e
		acc |= (a&exp2 + step2) | (b&exp2 + step2) | (c&exp2 + step2) | (e&exp2 + step2)
	}
	for ; i < len(d); i++ {
		a := binary.LittleEndian.Uint64(src[8*i:])
		d[i] = a
		acc |= a&exp2 + step2
	}
	for j := 2 * len(d); j < len(dst); j++ {
		u := binary.LittleEndian.Uint32(src[4*j:])
		dst[j] = math.Float32frombits(u)
		acc |= uint64(u&0x7f800000 + 0x00800000)
	}
	if acc&tops2 == 0 {
		return -1
	}
	return firstNonFinite(dst)
}

// datatype converts one protocol datatype's little-endian bytes to float32
// and returns the index of the first value that is not a finite float32
// (as float32: a large FP64 or INT64 overflows), or -1.
type datatype struct {
	size   int
	decode func(dst []float32, src []byte) int
}

var datatypes = map[string]datatype{
	"FP32": {4, decodeFP32},
	"FP64": {8, func(dst []float32, src []byte) int {
		for i := range dst {
			dst[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(src[8*i:])))
		}
		return firstNonFinite(dst)
	}},
	"FP16": {2, func(dst []float32, src []byte) int {
		dtype.Widen(dst, src)
		return firstNonFinite(dst)
	}},
	"UINT8": {1, func(dst []float32, src []byte) int {
		for i := range dst {
			dst[i] = float32(src[i])
		}
		return -1
	}},
	"INT8": {1, func(dst []float32, src []byte) int {
		for i := range dst {
			dst[i] = float32(int8(src[i]))
		}
		return -1
	}},
	"INT16": {2, func(dst []float32, src []byte) int {
		for i := range dst {
			dst[i] = float32(int16(binary.LittleEndian.Uint16(src[2*i:])))
		}
		return -1
	}},
	"INT32": {4, func(dst []float32, src []byte) int {
		for i := range dst {
			dst[i] = float32(int32(binary.LittleEndian.Uint32(src[4*i:])))
		}
		return -1
	}},
	"INT64": {8, func(dst []float32, src []byte) int {
		for i := range dst {
			dst[i] = float32(int64(binary.LittleEndian.Uint64(src[8*i:])))
		}
		return -1 // |int64| < 2^63 is finite as a float32 (max 3.4e38)
	}},
}

// parseNumbers reads a JSON array of numbers, flat or nested to any depth,
// into dst, and returns how many it held (counting past len(dst), so a
// wrong size is reported, not overrun). Anything but numbers and arrays
// is an error.
func parseNumbers(raw []byte, dst []float32) (int, error) {
	n, depth := 0, 0
	for i := 0; i < len(raw); {
		c := raw[i]
		switch {
		case c == '[':
			depth++
			i++
		case c == ']':
			depth--
			if depth < 0 {
				return 0, errData("unbalanced ]")
			}
			i++
		case c == ',' || c == ' ' || c == '\n' || c == '\t' || c == '\r':
			i++
		case c == '-' || (c >= '0' && c <= '9'):
			if depth == 0 {
				return 0, errData("data must be an array")
			}
			j := i + 1
			for j < len(raw) && isNumberByte(raw[j]) {
				j++
			}
			v, err := strconv.ParseFloat(bytesToString(raw[i:j]), 32)
			if err != nil {
				return 0, errData("bad number " + strconv.Quote(string(raw[i:j])))
			}
			if n < len(dst) {
				dst[n] = float32(v)
			}
			n++
			i = j
		default:
			return 0, errData("data must hold only numbers, found " + strconv.Quote(string(c)))
		}
	}
	if depth != 0 {
		return 0, errData("unbalanced [")
	}
	return n, nil
}

func isNumberByte(c byte) bool {
	return c >= '0' && c <= '9' || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-'
}

// bytesToString views b as a string without copying, for parsing calls
// that do not keep it.
func bytesToString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

type errData string

func (e errData) Error() string { return string(e) }

// versions lists a model's served versions, ascending.
func (r *registry) versions(name string) []int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var vs []int
	for v := range r.models[name] {
		vs = append(vs, v)
	}
	for i := 1; i < len(vs); i++ {
		for j := i; j > 0 && vs[j] < vs[j-1]; j-- {
			vs[j], vs[j-1] = vs[j-1], vs[j]
		}
	}
	return vs
}
