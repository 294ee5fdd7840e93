package server

import (
	"context"
	"encoding/binary"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"fastinfer/batching"
	"fastinfer/internal/dtype"
	"fastinfer/server/inferpb"
	"fastinfer/vision/guard"
)

// typedModel is fakeModel with its input in datatype dt: it records the
// bytes InferBytes is handed and answers from them as fakeModel does,
// reading them back as float32.
func typedModel(dt string) (*Model, func() []byte) {
	m := fakeModel("typed", 1)
	m.InputDatatype = dt
	m.Inputs[0].Datatype = dt
	var mu sync.Mutex
	var got []byte
	infer := m.Infer
	m.Infer = func(context.Context, []float32, int, []float32, batching.RequestOptions) (batching.Timing, error) {
		panic("a " + dt + " model's rows went to Infer")
	}
	m.InferBytes = func(ctx context.Context, in []byte, rows int, out []float32, o batching.RequestOptions) (batching.Timing, error) {
		mu.Lock()
		got = slices.Clone(in)
		mu.Unlock()
		f := make([]float32, len(in)/dtype.Size(dt))
		for i := range f {
			switch dt {
			case "FP16":
				f[i] = dtype.ToFloat32(binary.LittleEndian.Uint16(in[2*i:]))
			case "UINT8":
				f[i] = float32(in[i])
			}
		}
		return infer(ctx, f, rows, out, o)
	}
	return m, func() []byte { mu.Lock(); defer mu.Unlock(); return got }
}

func halves(v ...float32) []byte {
	b := make([]byte, 2*len(v))
	dtype.Encode("FP16", b, v)
	return b
}

// A model whose input is FP16 or UINT8 gets its rows in that datatype
// from every path: a binary tensor of its own datatype as sent, others
// and JSON converted, images preprocessed then converted. What the
// conversion would change is refused with a 400 naming the element.
func TestInputDatatypes(t *testing.T) {
	fp16m, fp16Got := typedModel("FP16")
	u8m, u8Got := typedModel("UINT8")
	u8m.Name = "pixels"
	ts := newTestServer(t, Options{}, fp16m, u8m)
	tests := []struct {
		name     string
		model    string
		header   string // JSON request header; a binary blob follows when blob is set
		blob     []byte
		status   int
		want     []byte // bytes the model was handed
		errorHas string
	}{
		{"fp16 binary as sent", "typed", `{"inputs":[{"name":"data","datatype":"FP16","shape":[2,2],"parameters":{"binary_data_size":8}}]}`,
			halves(300, 200, 50, 7), 200, halves(300, 200, 50, 7), ""},
		{"fp16 from JSON FP32", "typed", `{"inputs":[{"name":"data","datatype":"FP32","shape":[1,2],"data":[0.1,-2.5]}]}`,
			nil, 200, halves(0.1, -2.5), ""},
		{"fp16 from binary FP32", "typed", `{"inputs":[{"name":"data","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":8}}]}`,
			fp32Bytes(1.5, 65504), 200, halves(1.5, 65504), ""},
		{"fp16 too large", "typed", `{"inputs":[{"name":"data","datatype":"FP32","shape":[1,2],"data":[1,70000]}]}`,
			nil, 400, nil, "element 1 (70000) does not fit the model's FP16 input"},
		{"fp16 binary infinity", "typed", `{"inputs":[{"name":"data","datatype":"FP16","shape":[1,2],"parameters":{"binary_data_size":4}}]}`,
			[]byte{0x00, 0x3c, 0x00, 0x7c}, 400, nil, "element 1 is not a finite number"},
		{"uint8 binary as sent", "pixels", `{"inputs":[{"name":"data","datatype":"UINT8","shape":[2,2],"parameters":{"binary_data_size":4}}]}`,
			[]byte{200, 100, 0, 255}, 200, []byte{200, 100, 0, 255}, ""},
		{"uint8 from JSON", "pixels", `{"inputs":[{"name":"data","datatype":"UINT8","shape":[1,2],"data":[0,255]}]}`,
			nil, 200, []byte{0, 255}, ""},
		{"uint8 from INT64", "pixels", `{"inputs":[{"name":"data","datatype":"INT64","shape":[1,2],"data":[7,8]}]}`,
			nil, 200, []byte{7, 8}, ""},
		{"uint8 fraction", "pixels", `{"inputs":[{"name":"data","datatype":"FP32","shape":[1,2],"data":[1,2.5]}]}`,
			nil, 400, nil, "element 1 (2.5) does not fit the model's UINT8 input"},
		{"uint8 too large", "pixels", `{"inputs":[{"name":"data","datatype":"UINT8","shape":[1,2],"data":[256,0]}]}`,
			nil, 400, nil, "element 0 (256) does not fit the model's UINT8 input"},
		{"uint8 negative", "pixels", `{"inputs":[{"name":"data","datatype":"INT16","shape":[1,2],"data":[0,-1]}]}`,
			nil, 400, nil, "element 1 (-1) does not fit the model's UINT8 input"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r response
			if tt.blob != nil {
				hl, body := binaryBody(tt.header, tt.blob)
				r = ts.doInfer(t, "/v2/models/"+tt.model+"/infer", hl, body)
			} else {
				r = ts.doInfer(t, "/v2/models/"+tt.model+"/infer", "", []byte(tt.header))
			}
			if r.status != tt.status || !strings.Contains(r.body, tt.errorHas) {
				t.Fatalf("status %d body %s; want %d with %q", r.status, r.body, tt.status, tt.errorHas)
			}
			got := fp16Got()
			if tt.model == "pixels" {
				got = u8Got()
			}
			if tt.status == 200 && !slices.Equal(got, tt.want) {
				t.Errorf("model was handed % x, want % x", got, tt.want)
			}
		})
	}

	// Images: preprocessing writes float32s (here width and height), which
	// reach a UINT8 model rounded and clamped, a FP16 one rounded.
	img := fixture(t, "smarties.png")
	info, err := guard.Check(img, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []struct {
		name string
		got  func() []byte
	}{{"typed", fp16Got}, {"pixels", u8Got}} {
		r := ts.do(t, "POST", "/v1/models/"+m.name+"/classify", "image/png", img)
		if r.status != 200 {
			t.Fatalf("%s: classify %d %s", m.name, r.status, r.body)
		}
		want := []byte{255, 255} // the fixture is larger than 255 px both ways
		if m.name == "typed" {
			want = halves(float32(info.Width), float32(info.Height))
		}
		if got := m.got(); !slices.Equal(got, want) {
			t.Errorf("%s: image reached the model as % x, want % x", m.name, got, want)
		}
	}
}

// A model whose input is not FP32 but that has no InferBytes is a wiring
// mistake: a 500, not a crash or a float32 row in a FP16 batch.
func TestInputDatatypeWithoutInferBytes(t *testing.T) {
	m, _ := typedModel("FP16")
	m.InferBytes = nil
	ts := newTestServer(t, Options{}, m)
	r := ts.doInfer(t, "/v2/models/typed/infer", "", []byte(`{"inputs":[{"name":"data","datatype":"FP32","shape":[1,2],"data":[1,2]}]}`))
	if r.status != 500 {
		t.Errorf("status %d %s; want 500", r.status, r.body)
	}
}

// gRPC takes the same paths: raw_input_contents in the model's datatype
// as sent, typed contents converted and checked.
func TestInputDatatypesGRPC(t *testing.T) {
	fp16m, fp16Got := typedModel("FP16")
	u8m, u8Got := typedModel("UINT8")
	u8m.Name = "pixels"
	ts := newTestServer(t, Options{}, fp16m, u8m)
	c := ts.grpcClient(t)
	in := func(dt string) []*inferpb.ModelInferRequest_InferInputTensor {
		return []*inferpb.ModelInferRequest_InferInputTensor{{Name: "data", Datatype: dt, Shape: []int64{1, 2}}}
	}
	for _, tt := range []struct {
		name string
		req  *inferpb.ModelInferRequest
		got  func() []byte
		want []byte
		code codes.Code
	}{
		{"fp16 raw as sent", &inferpb.ModelInferRequest{ModelName: "typed", Inputs: in("FP16"), RawInputContents: [][]byte{halves(3, -0.5)}}, fp16Got, halves(3, -0.5), codes.OK},
		{"fp16 from fp32 contents", &inferpb.ModelInferRequest{ModelName: "typed", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{{Name: "data", Datatype: "FP32", Shape: []int64{1, 2},
			Contents: &inferpb.InferTensorContents{Fp32Contents: []float32{0.25, 7}}}}}, fp16Got, halves(0.25, 7), codes.OK},
		{"uint8 raw as sent", &inferpb.ModelInferRequest{ModelName: "pixels", Inputs: in("UINT8"), RawInputContents: [][]byte{{9, 250}}}, u8Got, []byte{9, 250}, codes.OK},
		{"uint8 from uint contents", &inferpb.ModelInferRequest{ModelName: "pixels", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{{Name: "data", Datatype: "UINT8", Shape: []int64{1, 2},
			Contents: &inferpb.InferTensorContents{UintContents: []uint32{4, 5}}}}}, u8Got, []byte{4, 5}, codes.OK},
		{"uint8 refuses a fraction", &inferpb.ModelInferRequest{ModelName: "pixels", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{{Name: "data", Datatype: "FP32", Shape: []int64{1, 2},
			Contents: &inferpb.InferTensorContents{Fp32Contents: []float32{4, 5.5}}}}}, u8Got, nil, codes.InvalidArgument},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.ModelInfer(context.Background(), tt.req)
			if status.Code(err) != tt.code {
				t.Fatalf("%v; want %v", err, tt.code)
			}
			if tt.code == codes.OK && !slices.Equal(tt.got(), tt.want) {
				t.Errorf("model was handed % x, want % x", tt.got(), tt.want)
			}
		})
	}
}

// A model with PreprocessBytes gets each image's row as PreprocessBytes
// wrote it, in the request's order, and never goes through Preprocess.
func TestPreprocessBytes(t *testing.T) {
	imgs := [][]byte{fixture(t, "smarties.png"), fixture(t, "baboon.jpg")}
	for _, dt := range []string{"FP16", "UINT8"} {
		t.Run(dt, func(t *testing.T) {
			m, got := typedModel(dt)
			m.Preprocess = func([]byte, []float32, bool) (ImageStats, error) {
				panic("a " + dt + " model with PreprocessBytes went through Preprocess")
			}
			var want []byte
			row := func(w, h int) []byte {
				if dt == "FP16" {
					return halves(float32(w), float32(h))
				}
				return []byte{byte(w), byte(h)}
			}
			for _, img := range imgs {
				info, err := guard.Check(img, 0)
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, row(info.Width, info.Height)...)
			}
			m.PreprocessBytes = func(img []byte, dst []byte, stats bool) (ImageStats, error) {
				info, err := guard.Check(img, 0)
				if err != nil {
					return ImageStats{}, err
				}
				if len(dst) != 2*dtype.Size(dt) {
					t.Errorf("row of %d bytes, want %d", len(dst), 2*dtype.Size(dt))
				}
				copy(dst, row(info.Width, info.Height))
				return ImageStats{Width: info.Width, Height: info.Height}, nil
			}
			ts := newTestServer(t, Options{MaxImages: 4}, m)
			ct, body := multipartBody(t, "image", imgs...)
			if r := ts.do(t, "POST", "/v1/models/typed/classify", ct, body); r.status != 200 {
				t.Fatalf("classify %d %s", r.status, r.body)
			}
			if g := got(); !slices.Equal(g, want) {
				t.Errorf("rows reached the model as % x, want % x", g, want)
			}
		})
	}
}

// A model whose output is FP16 is answered in FP16, as Triton does: in
// the metadata and the configuration, in binary outputs and shared memory
// (2 bytes a value), over gRPC raw (FP16 has no typed contents), and as
// JSON numbers of the same values.
func TestFP16Output(t *testing.T) {
	m := fakeModel("half", 1)
	m.Outputs[0].Datatype = "FP16"
	ts := newTestServer(t, Options{AllowClientShm: true}, m)
	// fakeModel's answer to [300,200],[50,7], as halves.
	want := halves(3, 2, -1, 3, 0.5, 0.07, -1, 0)
	in := `{"name":"data","datatype":"FP32","shape":[2,2],"data":[300,200,50,7]}`

	if r := ts.do(t, "GET", "/v2/models/half", "", nil); !strings.Contains(r.body, `"outputs":[{"name":"logits","datatype":"FP16"`) {
		t.Errorf("metadata: %s", r.body)
	}
	if r := ts.do(t, "GET", "/v2/models/half/config", "", nil); !strings.Contains(r.body, `"data_type":"TYPE_FP16"`) {
		t.Errorf("config: %s", r.body)
	}
	r := ts.do(t, "POST", "/v2/models/half/infer", "application/json", []byte(`{"inputs":[`+in+`]}`))
	if r.status != 200 || !strings.Contains(r.body, `"datatype":"FP16","shape":[2,4],"data":[3,2,-1,3,0.5,0.07,-1,0]`) {
		t.Errorf("JSON: %d %s", r.status, r.body)
	}

	r = ts.do(t, "POST", "/v2/models/half/infer", "application/json", []byte(`{"inputs":[`+in+`],"outputs":[{"name":"logits","parameters":{"binary_data":true}}]}`))
	n, err := strconv.Atoi(r.header[headerInferLength])
	if r.status != 200 || err != nil {
		t.Fatalf("binary: %d %s", r.status, r.body)
	}
	if head, blob := r.body[:n], []byte(r.body[n:]); !strings.Contains(head, `"datatype":"FP16","shape":[2,4],"parameters":{"binary_data_size":16}`) || !slices.Equal(blob, want) {
		t.Errorf("binary: %s then % x, want % x", head, blob, want)
	}

	key, path := shmObject(t, 4096)
	if r := ts.register(t, "out", key, 0, 64); r.status != 200 {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	r = ts.do(t, "POST", "/v2/models/half/infer", "application/json", []byte(`{"inputs":[`+in+`],"outputs":[{"name":"logits","parameters":{"shared_memory_region":"out","shared_memory_byte_size":16}}]}`))
	if r.status != 200 || !strings.Contains(r.body, `"shared_memory_byte_size":16`) {
		t.Fatalf("shared memory: %d %s", r.status, r.body)
	}
	if got := readAt(t, path, 0, 16); !slices.Equal(got, want) {
		t.Errorf("the region holds % x, want % x", got, want)
	}
	r = ts.do(t, "POST", "/v2/models/half/infer", "application/json", []byte(`{"inputs":[`+in+`],"outputs":[{"name":"logits","parameters":{"shared_memory_region":"out","shared_memory_byte_size":15}}]}`))
	if r.status != 400 || !strings.Contains(r.body, "the output takes 16") {
		t.Errorf("a region one byte short: %d %s", r.status, r.body)
	}

	c := ts.grpcClient(t)
	for _, typed := range []bool{false, true} {
		req := &inferpb.ModelInferRequest{ModelName: "half", Inputs: []*inferpb.ModelInferRequest_InferInputTensor{{Name: "data", Datatype: "FP32", Shape: []int64{2, 2}}}}
		if typed {
			req.Inputs[0].Contents = &inferpb.InferTensorContents{Fp32Contents: []float32{300, 200, 50, 7}}
		} else {
			req.RawInputContents = [][]byte{fp32Bytes(300, 200, 50, 7)}
		}
		resp, err := c.ModelInfer(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if o := resp.Outputs[0]; o.Datatype != "FP16" || len(resp.RawOutputContents) != 1 || !slices.Equal(resp.RawOutputContents[0], want) || o.Contents != nil {
			t.Errorf("gRPC (typed request %v): %v, raw % x", typed, o, resp.RawOutputContents)
		}
	}
}
