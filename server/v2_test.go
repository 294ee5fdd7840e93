package server

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/valyala/fasthttp"

	"fastinfer/batching"
)

// binaryBody builds a binary-extension request: JSON header then tensors.
func binaryBody(header string, blobs ...[]byte) (string, []byte) {
	b := []byte(header)
	for _, x := range blobs {
		b = append(b, x...)
	}
	return strconv.Itoa(len(header)), b
}

func fp32Bytes(v ...float32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

func (ts *testServer) doInfer(t testing.TB, path, headerLen string, body []byte) response {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://fastinfer" + path)
	req.Header.SetMethod("POST")
	if headerLen != "" {
		req.Header.SetContentType("application/octet-stream")
		req.Header.Set(headerInferLength, headerLen)
	} else {
		req.Header.SetContentType("application/json")
	}
	req.SetBody(body)
	if err := ts.client.Do(req, resp); err != nil {
		t.Fatal(err)
	}
	h := map[string]string{}
	for k, v := range resp.Header.All() {
		h[string(k)] = string(v)
	}
	return response{status: resp.StatusCode(), body: string(resp.Body()), header: h}
}

// The fake model takes [-1,2] and answers w/100, h/100, -1, (w·h)%7.
func TestV2Golden(t *testing.T) {
	ts := newTestServer(t, Options{MaxImages: 3}, fakeModel("toy", 1), fakeModel("toy", 2))
	const in = `{"name":"data","datatype":"FP32","shape":[2,2],"data":[[300,200],[50,7]]}`
	tests := []struct {
		name, method, path, body string
	}{
		{"v2_model_metadata", "GET", "/v2/models/toy", ""},
		{"v2_model_version_metadata", "GET", "/v2/models/toy/versions/1", ""},
		{"v2_model_ready", "GET", "/v2/models/toy/ready", ""},
		{"v2_model_version_ready", "GET", "/v2/models/toy/versions/2/ready", ""},
		{"v2_infer_nested", "POST", "/v2/models/toy/infer", `{"id":"r1","inputs":[` + in + `]}`},
		{"v2_infer_flat_version", "POST", "/v2/models/toy/versions/1/infer", `{"inputs":[{"name":"data","datatype":"FP32","shape":[1,2],"data":[100,100]}]}`},
		{"v2_infer_uint8", "POST", "/v2/models/toy/infer", `{"inputs":[{"name":"data","datatype":"UINT8","shape":[1,2],"data":[255,3]}]}`},
		{"v2_infer_classification", "POST", "/v2/models/toy/infer", `{"inputs":[` + in + `],"outputs":[{"name":"logits","parameters":{"classification":2}}]}`},
		{"v2_err_not_found", "POST", "/v2/models/nope/infer", `{}`},
		{"v2_err_version_not_found", "GET", "/v2/models/toy/versions/9", ""},
		{"v2_err_route", "GET", "/v2/models/toy/explain", ""},
		{"v2_err_method", "GET", "/v2/models/toy/infer", ""},
		{"v2_err_malformed", "POST", "/v2/models/toy/infer", `{"inputs":[`},
		{"v2_err_input_name", "POST", "/v2/models/toy/infer", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2]}]}`},
		{"v2_err_shape", "POST", "/v2/models/toy/infer", `{"inputs":[{"name":"data","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}`},
		{"v2_err_batch_too_large", "POST", "/v2/models/toy/infer", `{"inputs":[{"name":"data","datatype":"FP32","shape":[4,2],"data":[1,2,3,4,5,6,7,8]}]}`},
		{"v2_err_count", "POST", "/v2/models/toy/infer", `{"inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"data":[1,2,3]}]}`},
		{"v2_err_datatype", "POST", "/v2/models/toy/infer", `{"inputs":[{"name":"data","datatype":"BYTES","shape":[1,2],"data":["a","b"]}]}`},
		{"v2_err_strings", "POST", "/v2/models/toy/infer", `{"inputs":[{"name":"data","datatype":"FP32","shape":[1,2],"data":["1","2"]}]}`},
		{"v2_err_no_data", "POST", "/v2/models/toy/infer", `{"inputs":[{"name":"data","datatype":"FP32","shape":[1,2]}]}`},
		{"v2_err_output_name", "POST", "/v2/models/toy/infer", `{"inputs":[` + in + `],"outputs":[{"name":"probs"}]}`},
		{"v2_err_two_inputs", "POST", "/v2/models/toy/infer", `{"inputs":[` + in + `,` + in + `]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r response
			if tt.method == "POST" {
				r = ts.doInfer(t, tt.path, "", []byte(tt.body))
			} else {
				r = ts.do(t, tt.method, tt.path, "", nil)
			}
			if r.status == 405 && r.header["Allow"] != "POST" {
				t.Errorf("405 with Allow %q", r.header["Allow"])
			}
			golden(t, tt.name+".golden", r)
		})
	}
}

func TestV2InferBinary(t *testing.T) {
	// toy takes FP32 tensors as body bytes (InferBytes, as served);
	// plain has only Infer, so they are decoded into a buffer first.
	toy, plain := fakeModel("toy", 1), fakeModel("plain", 1)
	plain.InferBytes = nil
	var asBytes atomic.Int64
	inferBytes := toy.InferBytes
	toy.InferBytes = func(ctx context.Context, in []byte, rows int, out []float32, o batching.RequestOptions) (batching.Timing, error) {
		asBytes.Add(1)
		return inferBytes(ctx, in, rows, out, o)
	}
	ts := newTestServer(t, Options{}, toy, plain)
	want := []float32{3, 2, -1, 3, 0.5, 0.07, -1, 0} // (300·200)%7=3, (50·7)%7=0
	tests := []struct {
		name     string
		datatype string
		blob     []byte
	}{
		{"fp32", "FP32", fp32Bytes(300, 200, 50, 7)},
		{"fp16", "FP16", []byte{0xb0, 0x5c, 0x40, 0x5a, 0x40, 0x52, 0x00, 0x47}}, // 300, 200, 50, 7
		{"int64", "INT64", binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, 300), 200), 50), 7)},
	}
	// Trailing spaces put the tensor at every offset from an aligned body:
	// FP32 is read in place at any of them.
	for pad := range 4 {
		tests = append(tests, struct {
			name     string
			datatype string
			blob     []byte
		}{"fp32_pad" + strconv.Itoa(pad), "FP32", fp32Bytes(300, 200, 50, 7)})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := `{"inputs":[{"name":"data","datatype":"` + tt.datatype + `","shape":[2,2],"parameters":{"binary_data_size":` + strconv.Itoa(len(tt.blob)) + `}}],` +
				`"outputs":[{"name":"logits","parameters":{"binary_data":true}}]}`
			if p, ok := strings.CutPrefix(tt.name, "fp32_pad"); ok {
				pad, _ := strconv.Atoi(p)
				h += strings.Repeat(" ", (4-len(h)%4)%4+pad)
			}
			for _, model := range []string{"toy", "plain"} {
				before := asBytes.Load()
				hl, body := binaryBody(h, tt.blob)
				r := ts.doInfer(t, "/v2/models/"+model+"/infer", hl, body)
				checkBinaryAnswer(t, r, want)
				viaBytes := asBytes.Load() > before
				if wantBytes := model == "toy" && tt.datatype == "FP32"; viaBytes != wantBytes {
					t.Errorf("%s: tensor handed over as body bytes: %v, want %v", model, viaBytes, wantBytes)
				}
			}
		})
	}
}

// checkBinaryAnswer checks a binary-extension answer's header and its
// FP32 output against want.
func checkBinaryAnswer(t *testing.T, r response, want []float32) {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	n, err := strconv.Atoi(r.header[headerInferLength])
	if err != nil || n > len(r.body) {
		t.Fatalf("%s = %q", headerInferLength, r.header[headerInferLength])
	}
	var head struct {
		Outputs []struct {
			Name       string
			Shape      []int
			Datatype   string
			Parameters struct {
				BinaryDataSize int `json:"binary_data_size"`
			}
		}
	}
	if err := json.Unmarshal([]byte(r.body[:n]), &head); err != nil {
		t.Fatalf("header %q: %v", r.body[:n], err)
	}
	blob := []byte(r.body[n:])
	if o := head.Outputs[0]; o.Datatype != "FP32" || len(o.Shape) != 2 || o.Shape[0] != 2 || o.Shape[1] != 4 || o.Parameters.BinaryDataSize != len(blob) {
		t.Fatalf("output header %+v, %d bytes", o, len(blob))
	}
	for i, w := range want {
		if got := math.Float32frombits(binary.LittleEndian.Uint32(blob[4*i:])); math.Abs(float64(got-w)) > 1e-6 {
			t.Errorf("out[%d] = %v, want %v", i, got, w)
		}
	}
}

func TestV2BinaryErrors(t *testing.T) {
	ts := newTestServer(t, Options{}, fakeModel("toy", 1))
	hdr := func(size int) string {
		return `{"inputs":[{"name":"data","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":` + strconv.Itoa(size) + `}}]}`
	}
	tests := []struct {
		name, headerLen string
		body            []byte
		want            int
	}{
		{"size_disagrees_with_shape", "", nil, 400},
		{"body_shorter_than_size", "", nil, 400},
		{"header_length_past_body", "9999", []byte(hdr(8)), 400},
		{"header_length_text", "ten", []byte(hdr(8)), 400},
		{"nan", "", nil, 400},
		{"inf", "", nil, 400},
	}
	tests[0].headerLen, tests[0].body = binaryBody(hdr(12), fp32Bytes(1, 2, 3))
	tests[1].headerLen, tests[1].body = binaryBody(hdr(8), fp32Bytes(1))
	tests[4].headerLen, tests[4].body = binaryBody(hdr(8), fp32Bytes(1, float32(math.NaN())))
	tests[5].headerLen, tests[5].body = binaryBody(hdr(8), fp32Bytes(float32(math.Inf(-1)), 1))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ts.doInfer(t, "/v2/models/toy/infer", tt.headerLen, tt.body)
			var e struct{ Error string }
			if err := json.Unmarshal([]byte(r.body), &e); r.status != tt.want || err != nil || e.Error == "" {
				t.Fatalf("status %d body %q, want %d with {\"error\":…}", r.status, r.body, tt.want)
			}
		})
	}
	// Values finite in their own type but not as float32 are refused too,
	// with the element named.
	for _, tt := range []struct {
		name, datatype string
		blob           []byte
	}{
		{"fp64_overflow", "FP64", binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, math.Float64bits(1)), math.Float64bits(1e300))},
		{"fp16_inf", "FP16", binary.LittleEndian.AppendUint16(binary.LittleEndian.AppendUint16(nil, 0x3c00), 0x7c00)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := `{"inputs":[{"name":"data","datatype":"` + tt.datatype + `","shape":[1,2],"parameters":{"binary_data_size":` + strconv.Itoa(len(tt.blob)) + `}}]}`
			hl, body := binaryBody(h, tt.blob)
			r := ts.doInfer(t, "/v2/models/toy/infer", hl, body)
			if r.status != 400 || !strings.Contains(r.body, "element 1 is not a finite number") {
				t.Fatalf("status %d body %q, want 400 naming element 1", r.status, r.body)
			}
		})
	}
	t.Run("json_overflow", func(t *testing.T) {
		r := ts.doInfer(t, "/v2/models/toy/infer", "", []byte(`{"inputs":[{"name":"data","datatype":"FP32","shape":[1,2],"data":[1e39,1]}]}`))
		if r.status != 400 || !strings.Contains(r.body, "1e39") {
			t.Fatalf("status %d body %q, want 400 naming 1e39", r.status, r.body)
		}
	})
	// The server still answers a good request.
	hl, body := binaryBody(hdr(8), fp32Bytes(1, 2))
	if r := ts.doInfer(t, "/v2/models/toy/infer", hl, body); r.status != 200 {
		t.Fatalf("good request after bad ones: %d %s", r.status, r.body)
	}
}

func TestParseNumbers(t *testing.T) {
	tests := []struct {
		in   string
		want []float32
		err  bool
	}{
		{"[1,2,3]", []float32{1, 2, 3}, false},
		{"[[1, 2],\n [3,4]]", []float32{1, 2, 3, 4}, false},
		{"[-1.5e2, 0.25, 1E-1]", []float32{-150, 0.25, 0.1}, false},
		{"[]", nil, false},
		{"[1,[2]", nil, true},
		{"[1]]", nil, true},
		{"5", nil, true},
		{`["1"]`, nil, true},
		{"[true]", nil, true},
		{"[1-2]", nil, true},
		{"[NaN]", nil, true},
	}
	for _, tt := range tests {
		dst := make([]float32, 8)
		n, err := parseNumbers([]byte(tt.in), dst)
		if (err != nil) != tt.err {
			t.Errorf("%q: err = %v, want error %v", tt.in, err, tt.err)
			continue
		}
		if tt.err {
			continue
		}
		if n != len(tt.want) {
			t.Errorf("%q: %d numbers, want %d", tt.in, n, len(tt.want))
			continue
		}
		for i, w := range tt.want {
			if dst[i] != w {
				t.Errorf("%q[%d] = %v, want %v", tt.in, i, dst[i], w)
			}
		}
	}
	// More numbers than room are counted, not written past the end.
	dst := make([]float32, 2)
	if n, err := parseNumbers([]byte("[1,2,3,4]"), dst); err != nil || n != 4 {
		t.Errorf("overflow: n=%d err=%v", n, err)
	}
}

// decodeFP32 is bit-exact whatever the alignment of source and
// destination (signed zero, subnormals, the largest finite value,
// infinities, NaN payloads), and finds the first non-finite value wherever
// it is, in the 4-word body, the word tail or the odd last element.
func TestDecodeFP32(t *testing.T) {
	bits := []uint32{0, 0x80000000, 1, 0x007fffff, 0x7f7fffff, 0xff7fffff, 0x3f800000,
		0x7f800000, 0xff800000, 0x7fc00001, 0xffbfffff, 0x12345678}
	for off := range 4 {
		src := make([]byte, off+4*len(bits))
		for i, b := range bits {
			binary.LittleEndian.PutUint32(src[off+4*i:], b)
		}
		for _, shift := range []int{0, 1} { // an 8-aligned destination, and one that is not
			buf := make([]float32, len(bits)+1)
			dst := buf[shift : shift+len(bits)]
			if bad := decodeFP32(dst, src[off:]); bad != 7 {
				t.Errorf("offset %d, shift %d: first non-finite %d, want 7", off, shift, bad)
			}
			for i, want := range bits {
				if got := math.Float32bits(dst[i]); got != want {
					t.Errorf("offset %d, shift %d, element %d: %#08x, want %#08x", off, shift, i, got, want)
				}
			}
		}
	}
	for _, n := range []int{0, 1, 2, 7, 8, 9, 16, 17, 1001} {
		for bad := -1; bad < n; bad++ {
			src := make([]byte, 4*n)
			for i := range n {
				v := float32(i) - 3.5
				if i == bad {
					v = float32(math.NaN())
				}
				binary.LittleEndian.PutUint32(src[4*i:], math.Float32bits(v))
			}
			dst := make([]float32, n)
			if got := decodeFP32(dst, src); got != bad {
				t.Errorf("%d floats, NaN at %d: decodeFP32 = %d", n, bad, got)
			}
		}
	}
}

// checkFinite agrees with firstNonFinite for every length, position and
// kind of non-finite value, from 8-aligned and 4-aligned starts; and
// checkFiniteLE on the same values as little-endian bytes, from every
// byte offset (a binary tensor starts wherever its header ends).
func TestCheckFinite(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 7, 8, 9, 16, 17, 1001} {
		for bad := -1; bad < n; bad++ {
			for _, v := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
				vals := make([]float32, n)
				for i := range vals {
					vals[i] = float32(i) - 3.5
				}
				if bad >= 0 {
					vals[bad] = v
				}
				for shift := range 2 {
					buf := make([]float32, n+1)
					x := buf[shift : shift+n]
					copy(x, vals)
					if got := checkFinite(x); got != bad {
						t.Fatalf("%d floats, shift %d, %v at %d: checkFinite = %d", n, shift, v, bad, got)
					}
				}
				for off := range 8 {
					buf := make([]byte, off+4*n+3) // ragged bytes past the last float are ignored
					for i, f := range vals {
						binary.LittleEndian.PutUint32(buf[off+4*i:], math.Float32bits(f))
					}
					if got := checkFiniteLE(buf[off : off+4*n+off%4]); got != bad {
						t.Fatalf("%d floats at byte %d, %v at %d: checkFiniteLE = %d", n, off, v, bad, got)
					}
				}
			}
		}
	}
}

func TestFirstNonFinite(t *testing.T) {
	f := func(b uint32) float32 { return math.Float32frombits(b) }
	tests := []struct {
		x    []float32
		want int
	}{
		{nil, -1},
		{[]float32{0, f(0x80000000), 1, math.MaxFloat32, -math.MaxFloat32, f(1), f(0x807fffff)}, -1},
		{[]float32{1, float32(math.Inf(1))}, 1},
		{[]float32{float32(math.Inf(-1)), 1}, 0},
		{[]float32{1, 2, f(0x7fc00000)}, 2},
		{[]float32{1, f(0xff800001), float32(math.NaN())}, 1}, // a negative NaN with a payload
	}
	for _, tt := range tests {
		if got := firstNonFinite(tt.x); got != tt.want {
			t.Errorf("firstNonFinite(%v) = %d, want %d", tt.x, got, tt.want)
		}
	}
}

// BenchmarkDecodeFP32 is the tensor path's per-request conversion and
// check of one ResNet input (3×224×224 FP32, 602 KB) from a source at an
// odd offset, as it sits after the JSON header.
func BenchmarkDecodeFP32(b *testing.B) {
	const n = 3 * 224 * 224
	src := make([]byte, 4*n+1)
	for i := range n {
		binary.LittleEndian.PutUint32(src[1+4*i:], math.Float32bits(float32(i%255)/255))
	}
	dst := make([]float32, n)
	b.SetBytes(4 * n)
	for b.Loop() {
		if decodeFP32(dst, src[1:]) >= 0 {
			b.Fatal("non-finite")
		}
	}
}

// BenchmarkCheckFinite is the check of a tensor read in place: the same
// 602 KB input as BenchmarkDecodeFP32, at the body offsets a header
// leaves.
func BenchmarkCheckFinite(b *testing.B) {
	const n = 3 * 224 * 224
	for _, off := range []int{0, 1, 4} {
		src := make([]byte, 4*n+off)
		for i := range n {
			binary.LittleEndian.PutUint32(src[off+4*i:], math.Float32bits(float32(i%255)/255))
		}
		b.Run("offset"+strconv.Itoa(off), func(b *testing.B) {
			b.SetBytes(4 * n)
			for b.Loop() {
				if checkFiniteLE(src[off:]) >= 0 {
					b.Fatal("non-finite")
				}
			}
		})
	}
}

// A model whose output overflows answers an error, not NaN: JSON cannot
// carry it, and a client's argmax over a NaN row would pick a class
// silently. Tensors blame the input (422); images, whose values
// preprocessing bounds, blame the model (500, logged). Nothing of a failed
// request reaches the prediction log.
func TestNonFiniteOutputFails(t *testing.T) {
	m := fakeModel("toy", 1)
	m.Infer = func(_ context.Context, in []float32, rows int, out []float32, _ batching.RequestOptions) (batching.Timing, error) {
		for r := range rows {
			x := in[r*2]
			o := out[r*4 : r*4+4]
			// 1e30·x overflows to +Inf from x ≈ 3.4e8, and Inf-Inf is NaN.
			o[0], o[1], o[2], o[3] = 1e30*x, 0, 1, 0
			o[3] = o[0] - o[0]
		}
		return batching.Timing{}, nil
	}
	log := &fakeLog{}
	ts := newTestServer(t, Options{PredictionLog: log}, m)
	const big = `[[1,2],[4e8,1]]`
	tests := []struct {
		name, body string
		header     string // the binary body's JSON length; "" for JSON
		status     int
		want       string
	}{
		{"finite", `{"inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"data":[[1,2],[2,4]]}]}`, "", 200, `"data":[1e+30,0,1,0,2e+30,0,1,0]`},
		{"json", `{"inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"data":` + big + `}]}`, "", 422,
			`{"error":"model toy gave +Inf for row 1 (output element 0 of 4): the input is outside the range the model computes in"}`},
		{"binary output", `{"inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"data":` + big + `}],"outputs":[{"name":"logits","parameters":{"binary_data":true}}]}`, "", 422, `+Inf for row 1`},
		{"classification", `{"inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"data":` + big + `}],"outputs":[{"name":"logits","parameters":{"classification":2}}]}`, "", 422, `+Inf for row 1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ts.doInfer(t, "/v2/models/toy/infer", tt.header, []byte(tt.body))
			if r.status != tt.status || !strings.Contains(r.body, tt.want) {
				t.Errorf("got %d %s, want %d with %s", r.status, r.body, tt.status, tt.want)
			}
			recs := log.take()
			if tt.status == 200 && len(recs) != 2 || tt.status != 200 && len(recs) != 0 {
				t.Errorf("%d prediction log records", len(recs))
			}
		})
	}
	// The binary input path, with NaN from Inf-Inf in the first row.
	hdr, body := binaryBody(`{"inputs":[{"name":"data","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":8}}]}`, fp32Bytes(3e38, 1))
	if r := ts.doInfer(t, "/v2/models/toy/infer", hdr, body); r.status != 422 || !strings.Contains(r.body, "gave +Inf for row 0") {
		t.Errorf("binary input: %d %s", r.status, r.body)
	}

	// An image: the fake's preprocessing writes the width, 512 for the baboon.
	m.Infer = func(_ context.Context, in []float32, rows int, out []float32, _ batching.RequestOptions) (batching.Timing, error) {
		for i := range out[:rows*4] {
			out[i] = float32(math.NaN())
		}
		return batching.Timing{}, nil
	}
	r := ts.do(t, "POST", "/v1/models/toy/classify", "image/jpeg", fixture(t, "baboon.jpg"))
	if r.status != 500 || !strings.Contains(r.body, `"code":"non_finite_output"`) || !strings.Contains(r.body, "gave NaN for row 0 (output element 0 of 4)") {
		t.Errorf("image: %d %s", r.status, r.body)
	}
	if !strings.Contains(ts.logs.String(), "model output is not finite") {
		t.Errorf("a broken model's output was not logged: %s", ts.logs.String())
	}
	if recs := log.take(); len(recs) != 0 {
		t.Errorf("%d prediction log records for a failed image", len(recs))
	}
}
