package server

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"image"
	"image/png"
	"io"
	"log/slog"
	"math"
	"math/bits"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// Fuzz targets for the request parsers, driven through the full handler
// (routing, recover middleware, metrics) without a network: a
// fasthttp.RequestCtx is built by hand and handed to Server.Handler.
//
//	go test ./server -run '^$' -fuzz '^FuzzV2Infer$' -fuzztime 30s
//
// scripts/fuzz.sh runs every target in the repository.

// fuzzServer is a server with the fake 4-class models of server_test.go:
// "toy" takes [-1,2]; "grid" takes [-1,-1,-1,-1] (every dimension
// dynamic, 4 floats a row), so the fuzzer can try shapes whose dimensions
// multiply past int64.
const maxBody = 1 << 20 // fuzzServer's --max-body

func fuzzServer(maxImages int) *Server {
	s := New(Options{
		MaxBodyBytes: maxBody, MaxImages: maxImages, Version: "fuzz",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	s.AddModel(fakeModel("toy", 1))
	grid := fakeModel("grid", 1)
	grid.Inputs = []Tensor{{Name: "data", Datatype: "FP32", Shape: []int64{-1, -1, -1, -1}}}
	grid.InputLen = 4
	// The fake Preprocess writes two floats; grid is only used by v2.
	s.AddModel(grid)
	// Inputs of other datatypes: their rows reach InferBytes converted,
	// never Infer (which panics on them).
	half, _ := typedModel("FP16")
	half.Name = "half"
	half.Outputs[0].Datatype = "FP16" // FP16 in and out
	s.AddModel(half)
	px, _ := typedModel("UINT8")
	px.Name = "pixels"
	s.AddModel(px)
	s.SetReady(true)
	return s
}

// handle runs one request through h and returns the context holding the
// response.
func handle(h fasthttp.RequestHandler, method, uri string, header map[string]string, body []byte) *fasthttp.RequestCtx {
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI(uri)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	req.SetBody(body)
	ctx := &fasthttp.RequestCtx{}
	ctx.Init(&req, nil, nil)
	h(ctx)
	return ctx
}

// strictJSON decodes b into v, refusing unknown fields and trailing data.
func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return io.ErrUnexpectedEOF // something after the value
	}
	return nil
}

var v2Paths = []string{
	"/v2/models/toy/infer",
	"/v2/models/toy/versions/1/infer",
	"/v2/models/grid/infer",
	"/v2/models/toy/infer?priority=2&timeout_ms=50",
	"/v2/models/half/infer",
	"/v2/models/pixels/infer",
}

func FuzzV2Infer(f *testing.F) {
	const in = `{"name":"data","datatype":"FP32","shape":[2,2],"data":[[300,200],[50,7]]}`
	for _, body := range []string{
		`{"id":"r1","inputs":[` + in + `]}`,
		`{"inputs":[{"name":"data","datatype":"FP32","shape":[1,2],"data":[100,100]}]}`,
		`{"inputs":[{"name":"data","datatype":"UINT8","shape":[1,2],"data":[255,3]}]}`,
		`{"inputs":[` + in + `],"outputs":[{"name":"logits","parameters":{"classification":2}}]}`,
		`{"inputs":[` + in + `],"outputs":[{"name":"logits","parameters":{"classification":9,"binary_data":true}}]}`,
		`{"inputs":[` + in + `],"parameters":{"binary_data_output":true,"priority":1,"timeout":1000}}`,
		`{"inputs":[{"name":"data","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}`,
		`{"inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"data":[1,2,3]}]}`,
		`{"inputs":[{"name":"data","datatype":"FP32","shape":[1,1,2,2],"data":[1,2,3,4]}]}`,
		`{"inputs":[{"name":"data","datatype":"INT8","shape":[1,2,1,2],"data":[[[1,-2]],[[3,4]]]}]}`,
		`{"inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"parameters":{"shared_memory_region":"in","shared_memory_byte_size":16}}]}`,
		`{"inputs":[` + in + `],"outputs":[{"name":"logits","parameters":{"shared_memory_region":"out","shared_memory_offset":8,"shared_memory_byte_size":64}}]}`,
		`{"inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"parameters":{"shared_memory_region":"cin","shared_memory_byte_size":16}}],"outputs":[{"name":"logits","parameters":{"shared_memory_region":"cout","shared_memory_offset":8,"shared_memory_byte_size":64}}]}`,
		`{"inputs":[`,
		`{}`,
		``,
	} {
		f.Add([]byte(body), "", false, uint8(0))
	}
	hdr := func(dt string, shape string, size int, extra string) string {
		return `{"inputs":[{"name":"data","datatype":"` + dt + `","shape":` + shape + `,"parameters":{"binary_data_size":` + strconv.Itoa(size) + `}}]` + extra + `}`
	}
	bin := func(h string, blob []byte, path uint8) {
		f.Add(append([]byte(h), blob...), strconv.Itoa(len(h)), true, path)
	}
	bin(hdr("FP32", "[2,2]", 16, `,"outputs":[{"name":"logits","parameters":{"binary_data":true}}]`), fp32Bytes(300, 200, 50, 7), 0)
	bin(hdr("FP16", "[2,2]", 8, ``), []byte{0xb0, 0x5c, 0x40, 0x5a, 0x40, 0x52, 0x00, 0x47}, 1)
	bin(hdr("INT64", "[1,2]", 16, ``), binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, 300), 200), 0)
	bin(hdr("FP64", "[1,2]", 16, ``), binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, math.Float64bits(1e300)), 0), 0)
	bin(hdr("FP32", "[1,2]", 8, ``), fp32Bytes(1, float32(math.NaN())), 0)
	bin(hdr("FP32", "[1,2,2,1]", 16, ``), fp32Bytes(1, 2, 3, 4), 2)
	bin(hdr("UINT8", "[1,2]", 2, `,"parameters":{"binary_data_output":true}`), []byte{1, 2}, 0)
	bin(hdr("FP32", "[1,2]", 12, ``), fp32Bytes(1, 2, 3), 0)
	bin(hdr("FP16", "[1,2]", 4, ``), []byte{0x00, 0x3c, 0x00, 0x7c}, 4)
	// The FP16 model answering FP16: binary, JSON, in a region.
	bin(hdr("FP16", "[2,2]", 8, `,"parameters":{"binary_data_output":true}`), []byte{0xb0, 0x5c, 0x40, 0x5a, 0x40, 0x52, 0x00, 0x47}, 4)
	bin(hdr("FP16", "[1,2]", 4, ``), []byte{0x00, 0x3c, 0x00, 0x40}, 4)
	bin(hdr("FP16", "[1,2]", 4, `,"outputs":[{"name":"logits","parameters":{"shared_memory_region":"out","shared_memory_byte_size":8}}]`), []byte{0x00, 0x3c, 0x00, 0x40}, 4)
	bin(hdr("FP32", "[1,2]", 8, ``), fp32Bytes(1, 70000), 4)
	bin(hdr("UINT8", "[2,2]", 4, ``), []byte{1, 2, 3, 255}, 5)
	bin(hdr("FP32", "[1,2]", 8, ``), fp32Bytes(1.5, 2), 5)
	f.Add([]byte(hdr("FP32", "[1,2]", 8, ``)), "9999", true, uint8(0))
	f.Add([]byte(hdr("FP32", "[1,2]", 8, ``)), "-1", true, uint8(0))
	f.Add([]byte(hdr("FP32", "[1,2]", 8, ``)), " 12", true, uint8(0))

	s := fuzzServer(4)
	// Regions "in" and "out" of one object, for the shared memory seeds.
	if key, _ := fuzzShm(f, s); key != "" {
		defer s.shm.unregister("", true)
		defer s.shm.unregister("", false)
	}
	h := s.Handler()
	f.Fuzz(func(t *testing.T, body []byte, headerLen string, binaryHeader bool, path uint8) {
		uri := v2Paths[int(path)%len(v2Paths)]
		header := map[string]string{"Content-Type": "application/json"}
		if binaryHeader {
			header["Content-Type"] = "application/octet-stream"
			header[headerInferLength] = headerLen
		}
		ctx := handle(h, "POST", "http://fastinfer"+uri, header, body)
		status, resp := ctx.Response.StatusCode(), ctx.Response.Body()
		ct := string(ctx.Response.Header.ContentType())
		switch {
		case status == 200:
			checkInferResponse(t, ctx, body)
		case status == 400 || status == 404 || status == 413 && bytes.Contains(resp, []byte("images per request")):
			// 413: a batch dimension over --max-images.
			var e struct {
				Error *string `json:"error"`
			}
			if ct != "application/json" || strictJSON(resp, &e) != nil || e.Error == nil || *e.Error == "" {
				t.Fatalf("%d answered with %s %q; want {\"error\":\"…\"}", status, ct, resp)
			}
		default:
			t.Fatalf("status %d (%s) for %s %q (header %q): %s", status, ct, uri, body, headerLen, resp)
		}
	})
}

// inferResponse is the JSON part of a 200 infer answer.
type inferResponse struct {
	ModelName    string `json:"model_name"`
	ModelVersion string `json:"model_version"`
	ID           string `json:"id"`
	Outputs      []struct {
		Name       string  `json:"name"`
		Datatype   string  `json:"datatype"`
		Shape      []int64 `json:"shape"`
		Data       []any   `json:"data"`
		Parameters *struct {
			BinaryDataSize       int    `json:"binary_data_size"`
			SharedMemoryRegion   string `json:"shared_memory_region"`
			SharedMemoryByteSize int    `json:"shared_memory_byte_size"`
			SharedMemoryOffset   int    `json:"shared_memory_offset"`
		} `json:"parameters"`
	} `json:"outputs"`
}

// checkInferResponse checks a 200 answer: valid JSON (or a binary answer
// whose header length and binary_data_size add up), one output of the
// documented shape, and a request that really had one row per batch entry.
func checkInferResponse(t *testing.T, ctx *fasthttp.RequestCtx, reqBody []byte) {
	t.Helper()
	body := ctx.Response.Body()
	ct := string(ctx.Response.Header.ContentType())
	head, blob := body, []byte(nil)
	binaryOut := false
	if raw := ctx.Response.Header.Peek(headerInferLength); raw != nil {
		n, err := strconv.Atoi(string(raw))
		if err != nil || n <= 0 || n > len(body) {
			t.Fatalf("%s = %q for a %d-byte body", headerInferLength, raw, len(body))
		}
		if ct != "application/octet-stream" {
			t.Fatalf("binary answer with Content-Type %q", ct)
		}
		head, blob, binaryOut = body[:n], body[n:], true
	} else if ct != "application/json" {
		t.Fatalf("JSON answer with Content-Type %q", ct)
	}
	var r inferResponse
	if err := strictJSON(head, &r); err != nil {
		t.Fatalf("200 header is not the documented JSON (%v): %q", err, head)
	}
	if len(r.Outputs) != 1 || r.Outputs[0].Name != "logits" || !slices.Contains([]string{"toy", "grid", "half", "pixels"}, r.ModelName) || r.ModelVersion != "1" {
		t.Fatalf("200 with unexpected answer %q", head)
	}
	o := r.Outputs[0]
	if len(o.Shape) != 2 || o.Shape[0] < 1 || o.Shape[0] > 4 || o.Shape[1] < 1 || o.Shape[1] > 4 {
		t.Fatalf("output shape %v", o.Shape)
	}
	rows, cols := int(o.Shape[0]), int(o.Shape[1])
	// The values' datatype: the model's own (FP16 for "half" alone).
	size := map[string]int{"FP32": 4, "FP16": 2}[o.Datatype]
	if want := map[bool]string{true: "FP16", false: "FP32"}[r.ModelName == "half"]; size > 0 && o.Datatype != want {
		t.Fatalf("%s answered %s values, want %s", r.ModelName, o.Datatype, want)
	}
	if size > 0 && cols != 4 {
		t.Fatalf("%s output with %d columns, want all 4 classes", o.Datatype, cols)
	}
	if p := o.Parameters; p != nil && p.SharedMemoryRegion != "" {
		// Written into a region (fuzzShm's "in", "out", "cin" or "cout"),
		// not the answer.
		if binaryOut || o.Data != nil || p.BinaryDataSize != 0 || !slices.Contains([]string{"in", "out", "cin", "cout"}, p.SharedMemoryRegion) ||
			(size > 0 && p.SharedMemoryByteSize != size*rows*cols) || p.SharedMemoryByteSize <= 0 || p.SharedMemoryOffset < 0 {
			t.Fatalf("shared memory output %q", head)
		}
	} else if binaryOut {
		if o.Parameters == nil || o.Parameters.BinaryDataSize != len(blob) || o.Data != nil {
			t.Fatalf("binary output parameters %+v for %d trailing bytes", o.Parameters, len(blob))
		}
		switch o.Datatype {
		case "FP32", "FP16":
			if len(blob) != size*rows*cols {
				t.Fatalf("%d bytes of %s for shape %v", len(blob), o.Datatype, o.Shape)
			}
		case "BYTES":
			n := 0
			for b := blob; len(b) > 0; n++ {
				if len(b) < 4 || int(binary.LittleEndian.Uint32(b)) > len(b)-4 {
					t.Fatalf("malformed BYTES blob %q", blob)
				}
				b = b[4+binary.LittleEndian.Uint32(b):]
			}
			if n != rows*cols {
				t.Fatalf("%d strings for shape %v", n, o.Shape)
			}
		default:
			t.Fatalf("datatype %q", o.Datatype)
		}
	} else {
		if len(blob) != 0 || o.Parameters != nil || len(o.Data) != rows*cols {
			t.Fatalf("JSON output with %d values for shape %v: %q", len(o.Data), o.Shape, head)
		}
		for _, v := range o.Data {
			_, isNum := v.(float64)
			_, isStr := v.(string)
			if (size > 0 && !isNum) || (o.Datatype == "BYTES" && !isStr) || (size == 0 && o.Datatype != "BYTES") {
				t.Fatalf("%s output holds %T", o.Datatype, v)
			}
		}
	}
	// The request that got a 200 must have had a shape whose elements,
	// counted without overflow, fill exactly rows model rows.
	var req struct {
		Inputs []struct {
			Shape []int64 `json:"shape"`
		} `json:"inputs"`
	}
	n := len(reqBody)
	if raw := ctx.Request.Header.Peek(headerInferLength); raw != nil {
		n, _ = strconv.Atoi(string(raw))
	}
	if err := json.Unmarshal(reqBody[:n], &req); err != nil || len(req.Inputs) != 1 {
		t.Fatalf("200 for a request header that does not parse: %v", err)
	}
	perRow := map[string]uint64{"toy": 2, "grid": 4, "half": 2, "pixels": 2}[r.ModelName]
	shape := req.Inputs[0].Shape
	if len(shape) == 0 || shape[0] != int64(rows) {
		t.Fatalf("request shape %v answered with %d rows", shape, rows)
	}
	prod := uint64(1)
	for _, d := range shape[1:] {
		hi, lo := bits.Mul64(prod, uint64(d))
		if d <= 0 || hi != 0 {
			t.Fatalf("request shape %v accepted: its dimensions overflow", shape)
		}
		prod = lo
	}
	if prod != perRow {
		t.Fatalf("request shape %v accepted for %d floats a row", shape, perRow)
	}
}

func FuzzClassifyMultipart(f *testing.F) {
	small := tinyPNG(f, 3, 2)
	// multipartBody picks a random boundary each time.
	mp := func(field string, files ...[]byte) (string, []byte) {
		ct, b := multipartBody(f, field, files...)
		return strings.TrimPrefix(ct, "multipart/form-data; boundary="), b
	}
	add := func(field string, files ...[]byte) {
		b, body := mp(field, files...)
		f.Add(b, body, false)
	}
	boundary, body := mp("image", small)
	f.Add(boundary, body, false)
	add("image", small, tinyPNG(f, 5, 7))
	add("image", small, small, small, small)
	add("photo", small)
	add("image", small[:len(small)-5])
	add("image", nil)
	f.Add(`"`+boundary+`"`, body, false)
	f.Add("xyz", []byte("--xyz\r\nbroken"), false)
	f.Add("xyz", []byte("--xyz\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nnofilename\r\n--xyz--\r\n"), false)
	f.Add("xyz", []byte("--xyz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a\"\r\n\r\n"+string(small)+"\r\n--xyz--\r\n"), false)
	f.Add("", body, false)
	f.Add("a;b", body, false)
	// Content-Encoding: gzip bodies are inflated (requestBody), then
	// parsed; fasthttp's parser, which inflates them itself, is the oracle.
	// testdata/fuzz/FuzzClassifyMultipart/gzip-bomb-4MiB is 16 KiB that
	// inflate to 4 MiB: before the parser was given the body limit it
	// cost 40 MB of allocations (and a 32 MiB one, tens of gigabytes).
	f.Add(boundary, gzipOf(body), true)

	const maxImages = 3
	s := fuzzServer(maxImages)
	if s.opts.MaxBodyBytes != maxBody {
		f.Fatal("fuzzServer's body limit changed")
	}
	h := s.Handler()
	f.Fuzz(func(t *testing.T, boundary string, body []byte, gzipped bool) {
		ct := "multipart/form-data; boundary=" + boundary
		header := map[string]string{"Content-Type": ct}
		if gzipped {
			header["Content-Encoding"] = "gzip"
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		ctx := handle(h, "POST", "http://fastinfer/v1/models/toy/classify", header, body)
		runtime.ReadMemStats(&after)
		defer ctx.Request.RemoveMultipartFormFiles()
		// The body limit holds for what gzip inflates to: the request
		// costs a few times the limit at most, never the inflated size.
		if got := after.TotalAlloc - before.TotalAlloc; got > 8*maxBody+uint64(16*len(body)) {
			t.Fatalf("one request allocated %d bytes (body %d bytes, limit %d)", got, len(body), maxBody)
		}
		status, resp := ctx.Response.StatusCode(), ctx.Response.Body()
		if got := string(ctx.Response.Header.ContentType()); got != "application/json" {
			t.Fatalf("%d answered with Content-Type %q", status, got)
		}
		// What fasthttp itself makes of the body: the images the server
		// must have classified, or a parse error it must have refused.
		var oracle fasthttp.Request
		oracle.Header.SetContentType(ct)
		if gzipped {
			oracle.Header.Set("Content-Encoding", "gzip")
		}
		oracle.SetBody(body)
		form, formErr := oracle.MultipartFormWithLimit(maxBody)
		defer oracle.RemoveMultipartFormFiles()
		if status != 200 {
			var e struct {
				Error *struct {
					Code    string `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
			}
			if err := strictJSON(resp, &e); err != nil || e.Error == nil || e.Error.Message == "" {
				t.Fatalf("%d answered %q; want {\"error\":{\"code\",\"message\"}}", status, resp)
			}
			want := map[string]int{"bad_image": 400, "bad_request": 400, "too_large": 413}[e.Error.Code]
			if want == 0 || want != status {
				t.Fatalf("status %d with code %q: %s", status, e.Error.Code, resp)
			}
			if formErr == nil && e.Error.Code == "bad_request" && len(form.File["image"]) > 0 {
				t.Fatalf("bad_request for a form with %d image parts: %s", len(form.File["image"]), resp)
			}
			if formErr == nil && e.Error.Code == "too_large" && len(form.File["image"]) <= maxImages {
				t.Fatalf("too_large for %d images: %s", len(form.File["image"]), resp)
			}
			return
		}
		if formErr != nil {
			t.Fatalf("200 for a body fasthttp cannot parse (%v)", formErr)
		}
		var r struct {
			Model   string `json:"model"`
			Version string `json:"version"`
			Results []struct {
				Predictions []struct {
					Index int     `json:"index"`
					Label *string `json:"label"`
					Score float64 `json:"score"`
				} `json:"predictions"`
			} `json:"results"`
			Timing map[string]float64 `json:"timing_ms"`
		}
		if err := strictJSON(resp, &r); err != nil || r.Model != "toy" || r.Version != "1" || len(r.Timing) != 4 {
			t.Fatalf("200 body is not the documented JSON (%v): %s", err, resp)
		}
		if n := len(form.File["image"]); len(r.Results) != n || n < 1 || n > maxImages {
			t.Fatalf("%d results for %d image parts", len(r.Results), n)
		}
		for _, res := range r.Results {
			if len(res.Predictions) != 4 { // default top_k 5, capped at the 4 classes
				t.Fatalf("%d predictions: %s", len(res.Predictions), resp)
			}
			seen, sum := map[int]bool{}, 0.0
			for i, p := range res.Predictions {
				if p.Index < 0 || p.Index > 3 || seen[p.Index] || !(p.Score >= 0 && p.Score <= 1) ||
					(i > 0 && p.Score > res.Predictions[i-1].Score) {
					t.Fatalf("bad predictions: %s", resp)
				}
				seen[p.Index] = true
				sum += p.Score
			}
			if math.Abs(sum-1) > 1e-4 {
				t.Fatalf("scores sum to %v: %s", sum, resp)
			}
		}
	})
}

func gzipOf(b []byte) []byte {
	var out bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&out, gzip.BestCompression)
	zw.Write(b)
	zw.Close()
	return out.Bytes()
}

// tinyPNG encodes a w×h gradient.
func tinyPNG(t testing.TB, w, h int) []byte {
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = uint8(i * 37)
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func FuzzParseNumbers(f *testing.F) {
	for _, s := range []string{
		"[1,2,3]", "[[1, 2],\n [3,4]]", "[-1.5e2, 0.25, 1E-1]", "[]", "[1,[2]", "[1]]", "5",
		`["1"]`, "[true]", "[1-2]", "[NaN]", "[1e39]", "[-0]", "[1 2]", "[1][2]", "[[[[[[[[1]]]]]]]]",
		"[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0]", "[1e-46]", "[--1]", "[.5]", "[1.]", "[01]", "[+1]",
	} {
		f.Add([]byte(s), uint8(4))
	}
	const canary = 0x7fc0dead // a NaN no parse produces
	f.Fuzz(func(t *testing.T, raw []byte, room uint8) {
		// dst is a window of a larger array; the tail beyond it must be
		// left alone.
		backing := make([]float32, int(room)+8)
		for i := range backing {
			backing[i] = math.Float32frombits(canary)
		}
		dst := backing[:room:room]
		n, err := parseNumbers(raw, dst)
		for i := int(room); i < len(backing); i++ {
			if math.Float32bits(backing[i]) != canary {
				t.Fatalf("wrote past dst (len %d) at %d", room, i)
			}
		}
		if err != nil {
			if n != 0 {
				t.Fatalf("error %v with count %d", err, n)
			}
		} else {
			if n < 0 {
				t.Fatalf("count %d", n)
			}
			// Nothing is written beyond the count.
			for i := n; i < len(dst); i++ {
				if math.Float32bits(dst[i]) != canary {
					t.Fatalf("%d numbers counted but dst[%d] written", n, i)
				}
			}
			for i := range min(n, len(dst)) {
				if v := dst[i]; v != v || math.IsInf(float64(v), 0) {
					t.Fatalf("dst[%d] = %v from %q", i, v, raw)
				}
			}
		}
		// Where raw is valid JSON (all the server ever passes, as it comes
		// from encoding/json), parseNumbers agrees with encoding/json.
		if !json.Valid(raw) {
			return
		}
		want, ok := jsonNumbers(raw)
		if ok != (err == nil) {
			t.Fatalf("parseNumbers(%q) = %d, %v; encoding/json says numeric array: %v", raw, n, err, ok)
		}
		if !ok {
			return
		}
		if n != len(want) {
			t.Fatalf("parseNumbers(%q) counted %d, want %d", raw, n, len(want))
		}
		for i := range min(n, len(dst)) {
			if dst[i] != want[i] && !(dst[i] == 0 && want[i] == 0) {
				t.Fatalf("parseNumbers(%q)[%d] = %v, want %v", raw, i, dst[i], want[i])
			}
		}
	})
}

// jsonNumbers flattens a JSON array nested to any depth whose leaves are
// all numbers that fit a float32; ok is false for anything else.
func jsonNumbers(raw []byte) (out []float32, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return nil, false
	}
	if _, isArr := v.([]any); !isArr {
		return nil, false
	}
	var walk func(any) bool
	walk = func(v any) bool {
		switch x := v.(type) {
		case []any:
			return !slices.ContainsFunc(x, func(e any) bool { return !walk(e) })
		case json.Number:
			f, err := strconv.ParseFloat(string(x), 32)
			if err != nil {
				return false
			}
			out = append(out, float32(f))
			return true
		}
		return false
	}
	return out, walk(v)
}
