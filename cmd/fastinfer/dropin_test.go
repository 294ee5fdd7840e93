package main

// Models as users drop them in, written the way exporters write them: several
// outputs, a Softmax at the end, a fixed batch of 1.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"math"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"fastinfer/internal/testutil"
	"fastinfer/models/onnxpb"
	"fastinfer/models/pixels"
)

// Of a model with two outputs, logits and their softmax, the server serves
// the one config.yaml names (or the first), lists only that one in the
// metadata, and scores the softmax output by its values as they are (read
// from the graph at load) unless config.yaml's scores says otherwise.
func TestServeDetectsProbabilities(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	m := tinyClassifier(onnxpb.DimParam("N"))
	const pre = "preprocess: {color: gray, resize: 2, crop: 2, scale: 1, mean: [0], std: [1]}\n"
	for _, tt := range []struct {
		name, config, output, want string
	}{
		{"first output", pre, "logits", "logits"},
		{"softmax output", pre + "output: probs\n", "probs", "probabilities"},
		{"softmax output, scores overridden", pre + "output: probs\nscores: logits\n", "probs", "logits"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			base, _, stop := startServe(t, tinyRepo(t, "probs", m, tt.config))
			defer stop()
			call := caller(t, base)
			info := call("GET", "/v1/models/probs", "", "")
			if !strings.Contains(info, `"scores":"`+tt.want+`"`) {
				t.Fatalf("model info: %s; want scores %s", info, tt.want)
			}
			meta := call("GET", "/v2/models/probs", "", "")
			if want := `"outputs":[{"name":"` + tt.output + `","datatype":"FP32","shape":[-1,3]}]`; !strings.Contains(meta, want) {
				t.Errorf("metadata %s; want only the served output: %s", meta, want)
			}
			// /v2 answers the served output's values; /v1's top score is
			// the largest (probabilities) or its softmax (logits).
			v2 := call("POST", "/v2/models/probs/infer", "application/json",
				`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,1,2,2],"data":[1,1,1,1]}]}`)
			var out struct {
				Outputs []struct {
					Name string
					Data []float64
				}
			}
			if err := json.Unmarshal([]byte(v2), &out); err != nil || len(out.Outputs) != 1 || len(out.Outputs[0].Data) != 3 || out.Outputs[0].Name != tt.output {
				t.Fatalf("v2 infer: %s; want output %s", v2, tt.output)
			}
			p := out.Outputs[0].Data
			top := slices.Max(p)
			want := top
			if tt.want == "logits" {
				want = math.Exp(top) / (math.Exp(p[0]) + math.Exp(p[1]) + math.Exp(p[2]))
			}
			// The same tensor through /v1 is a 2×2 grey PNG of ones (scale 1).
			v1 := call("POST", "/v1/models/probs/classify?top_k=1", "image/png", onesPNG(t))
			var res struct {
				Results []struct{ Predictions []struct{ Score float64 } }
			}
			if err := json.Unmarshal([]byte(v1), &res); err != nil || len(res.Results) != 1 || len(res.Results[0].Predictions) != 1 {
				t.Fatalf("classify: %s", v1)
			}
			if got := res.Results[0].Predictions[0].Score; math.Abs(got-want) > 1e-5 {
				t.Errorf("top score %.6f, want %.6f (outputs %v)", got, want, p)
			}
		})
	}
}

// tinyClassifier is x [batch,1,2,2] → Flatten → MatMul w [4,3] → logits →
// Softmax → probs, with both logits and probs as graph outputs.
func tinyClassifier(batch *onnxpb.TensorShapeProto_Dimension) *onnxpb.ModelProto {
	g := &onnxpb.Graph{}
	g.FloatInit("w", []int64{4, 3}, func(i int) float32 { return float32(i%3) * 0.5 })
	g.Node("Flatten", "flat", "f", []string{"x"})
	g.Node("MatMul", "fc", "logits", []string{"f", "w"})
	g.Node("Softmax", "sm", "probs", []string{"logits"}, onnxpb.AttrInt("axis", 1))
	return &onnxpb.ModelProto{
		IrVersion:   proto.Int64(8),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(17)}},
		Graph: &onnxpb.GraphProto{
			Name: proto.String("tiny"), Node: g.Nodes, Initializer: g.Inits,
			Input: []*onnxpb.ValueInfoProto{onnxpb.FloatTensor("x", batch, onnxpb.Dim(1), onnxpb.Dim(2), onnxpb.Dim(2))},
			Output: []*onnxpb.ValueInfoProto{
				onnxpb.FloatTensor("logits", batch, onnxpb.Dim(3)),
				onnxpb.FloatTensor("probs", batch, onnxpb.Dim(3)),
			},
		},
	}
}

// tinyRepo is a repository holding m as version 1 of name, with config as
// its config.yaml ("" for none).
func tinyRepo(t *testing.T, name string, m *onnxpb.ModelProto, config string) string {
	t.Helper()
	repo := t.TempDir()
	dir := filepath.Join(repo, name)
	if err := os.MkdirAll(filepath.Join(dir, "1"), 0o755); err != nil {
		t.Fatal(err)
	}
	testutil.WriteModel(t, filepath.Join(dir, "1"), "model.onnx", m)
	if config != "" {
		if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return repo
}

// caller returns a function making one request to the server at base and
// returning the body of its 200 answer.
func caller(t *testing.T, base string) func(method, path, ct, body string) string {
	return func(method, path, ct, body string) string {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", ct)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		return string(b)
	}
}

// onesPNG is a 2×2 grey PNG whose pixels are all 1.
func onesPNG(t *testing.T) string {
	img := image.NewGray(image.Rect(0, 0, 2, 2))
	for i := range img.Pix {
		img.Pix[i] = 1
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// A model exported with a fixed batch of 1 (torch.onnx.export's default)
// loads and runs one image per execution, several images of a request
// included, and says why; config.yaml asking it to batch, or a fixed
// batch above 1, fails the load with the reason.
func TestFixedBatchModel(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	const pre = "preprocess: {color: gray, resize: 2, crop: 2, scale: 1, mean: [0], std: [1]}\n"
	base, logs, stop := startServe(t, tinyRepo(t, "fixed", tinyClassifier(onnxpb.Dim(1)), pre), "--max-batch-size", "8")
	defer stop()
	call := caller(t, base)
	if cfg := call("GET", "/v2/models/fixed/config", "", ""); !strings.Contains(cfg, `"max_batch_size":1,`) {
		t.Errorf("config %s; want max_batch_size 1", cfg)
	}
	if !strings.Contains(logs.String(), "input x has a fixed batch of 1") {
		t.Errorf("the log does not say why the model does not batch: %s", logs)
	}
	img := onesPNG(t)
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for range 3 {
		w, _ := mw.CreateFormFile("image", "ones.png")
		w.Write([]byte(img))
	}
	mw.Close()
	res := call("POST", "/v1/models/fixed/classify?top_k=1", mw.FormDataContentType(), body.String())
	if n := strings.Count(res, `"predictions"`); n != 3 {
		t.Errorf("3 images: %d results in %s", n, res)
	}
	ones := strings.TrimSuffix(strings.Repeat("1,", 8), ",")
	if out := call("POST", "/v2/models/fixed/infer", "application/json",
		`{"inputs":[{"name":"x","datatype":"FP32","shape":[2,1,2,2],"data":[`+ones+`]}]}`); !strings.Contains(out, `"shape":[2,3]`) {
		t.Errorf("two rows: %s", out)
	}

	for _, tt := range []struct {
		name   string
		batch  *onnxpb.TensorShapeProto_Dimension
		config string
		want   string
	}{
		{"config batches", onnxpb.Dim(1), pre + "batching: {max_batch_size: 4}\n", "batching.max_batch_size 4, but input x has a fixed batch of 1"},
		{"fixed batch of 4", onnxpb.Dim(4), pre, "input x has a fixed batch of 4"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			base, _, stop := startServe(t, tinyRepo(t, "fixed", tinyClassifier(tt.batch), tt.config))
			defer stop()
			resp, err := http.Post(base+"/v2/repository/index", "application/json", nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.Contains(string(b), tt.want) {
				t.Errorf("repository index %s; want the reason %q", b, tt.want)
			}
		})
	}
}

// A model converted from TensorFlow: interleaved [N,H,W,C] input and a
// Softmax at the end. The server reads both from the model; an image goes
// in as the same HWC tensor a client would send to /v2, and its top score
// is the model's probability.
func TestServeNHWCModel(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	g := &onnxpb.Graph{}
	g.FloatInit("w", []int64{12, 3}, func(i int) float32 { return float32((i*7)%5) * 0.01 })
	g.Node("Flatten", "flat", "f", []string{"x"})
	g.Node("MatMul", "fc", "logits", []string{"f", "w"})
	g.Node("Softmax", "sm", "probs", []string{"logits"}, onnxpb.AttrInt("axis", 1))
	n := onnxpb.DimParam("N")
	m := &onnxpb.ModelProto{
		IrVersion:   proto.Int64(8),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(17)}},
		Graph: &onnxpb.GraphProto{
			Name: proto.String("nhwc"), Node: g.Nodes, Initializer: g.Inits,
			Input:  []*onnxpb.ValueInfoProto{onnxpb.FloatTensor("x", n, onnxpb.Dim(2), onnxpb.Dim(2), onnxpb.Dim(3))},
			Output: []*onnxpb.ValueInfoProto{onnxpb.FloatTensor("probs", n, onnxpb.Dim(3))},
		},
	}
	base, logs, stop := startServe(t, tinyRepo(t, "nhwc", m, "preprocess: {resize: 2, crop: 2, scale: 1, mean: [0], std: [1]}\n"))
	defer stop()
	call := caller(t, base)
	info := call("GET", "/v1/models/nhwc", "", "")
	if !strings.Contains(info, `"layout":"nhwc"`) || !strings.Contains(info, `"scores":"probabilities"`) {
		t.Fatalf("model info %s; want layout nhwc and probability scores (log: %s)", info, logs)
	}
	// Pixel i (row-major) is RGB (10i+1, 10i+2, 10i+3).
	img := image.NewRGBA(image.Rect(0, 0, 2, 2))
	var hwc []string
	for i := range 4 {
		for c := range 3 {
			v := 10*i + c + 1
			img.Pix[4*i+c] = byte(v)
			hwc = append(hwc, strconv.Itoa(v))
		}
		img.Pix[4*i+3] = 255
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	v2 := call("POST", "/v2/models/nhwc/infer", "application/json",
		`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2,2,3],"data":[`+strings.Join(hwc, ",")+`]}]}`)
	var out struct{ Outputs []struct{ Data []float64 } }
	if err := json.Unmarshal([]byte(v2), &out); err != nil || len(out.Outputs) != 1 || len(out.Outputs[0].Data) != 3 {
		t.Fatalf("v2 infer: %s", v2)
	}
	v1 := call("POST", "/v1/models/nhwc/classify?top_k=3", "image/png", buf.String())
	var res struct {
		Results []struct {
			Predictions []struct {
				Index int
				Score float64
			}
		}
	}
	if err := json.Unmarshal([]byte(v1), &res); err != nil || len(res.Results) != 1 || len(res.Results[0].Predictions) != 3 {
		t.Fatalf("classify: %s", v1)
	}
	for _, p := range res.Results[0].Predictions {
		if want := out.Outputs[0].Data[p.Index]; math.Abs(p.Score-want) > 1e-6 {
			t.Errorf("class %d: score %.7f from the image, %.7f from the tensor (%v)", p.Index, p.Score, want, out.Outputs[0].Data)
		}
	}
}

// models list says how serve would take each model, read from the files
// without loading them, and names the models that would not load: one
// whose asked-for preprocessing does not fit fails, one with none that
// ImageNet's does not fit takes tensors only.
func TestModelsListPlans(t *testing.T) {
	repo := t.TempDir()
	write := func(name string, m *onnxpb.ModelProto, config string) {
		from := tinyRepo(t, name, m, config)
		if err := os.Rename(filepath.Join(from, name), filepath.Join(repo, name)); err != nil {
			t.Fatal(err)
		}
	}
	const gray = "preprocess: {color: gray, resize: 2, crop: 2}\n"
	write("dynamic", tinyClassifier(onnxpb.DimParam("N")), gray)
	write("fixed-probs", tinyClassifier(onnxpb.Dim(1)), gray+"output: probs\n")
	write("no-section", tinyClassifier(onnxpb.DimParam("N")), "")                                                 // ImageNet's does not fit
	write("wrong-colour", tinyClassifier(onnxpb.DimParam("N")), "preprocess: {color: rgb, resize: 2, crop: 2}\n") // asked for, and wrong
	px, err := pixels.Embed(tinyClassifier(onnxpb.DimParam("N")), pixels.Options{Scale: 1})
	if err != nil {
		t.Fatal(err)
	}
	write("pixels", px, gray) // a datatype other than FP32 is named
	var stdout, stderr bytes.Buffer
	code := run([]string{"models", "list", "--models", repo}, &stdout, &stderr, func(string) string { return "" })
	want := `MODEL         SERVED  VERSIONS  LABELS  INPUT               PREPROCESS                 BATCH    SCORES
dynamic       1       1         0       x [-1 1 2 2]        resize 2 crop 2 gray nchw  dynamic  logits
fixed-probs   1       1         0       x [1 1 2 2]         resize 2 crop 2 gray nchw  fixed 1  probabilities
no-section    1       1         0       x [-1 1 2 2]        none (tensors only)        dynamic  logits
pixels        1       1         0       x UINT8 [-1 1 2 2]  resize 2 crop 2 gray nchw  dynamic  logits
wrong-colour  1       1         0       ?                   ?                          ?        ?
`
	if got := stdout.String(); got != want {
		t.Errorf("models list printed\n%s\nwant\n%s", got, want)
	}
	if code == 0 || !strings.Contains(stderr.String(), "wrong-colour") || !strings.Contains(stderr.String(), "set preprocess.color: gray") {
		t.Errorf("exit %d, stderr %s; want a failure naming wrong-colour and the fix", code, stderr.String())
	}
}

// A model folder from a Triton repository serves as it is: config.pbtxt's
// batching, output and instances are taken, the fields with no
// equivalent are named in the log, and as Triton's configuration has no
// image preprocessing, a model ImageNet's does not fit (this grey one)
// serves tensors and says so to an image.
func TestServeTritonFolder(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	repo := tinyRepo(t, "tiny", tinyClassifier(onnxpb.DimParam("N")), "")
	dir := filepath.Join(repo, "tiny")
	const pbtxt = `name: "tiny"
platform: "onnxruntime_onnx"
max_batch_size: 4
input [ { name: "x", data_type: TYPE_FP32, format: FORMAT_NCHW, dims: [ 1, 2, 2 ] } ]
output [ { name: "probs", data_type: TYPE_FP32, dims: [ 3 ] } ]
dynamic_batching { max_queue_delay_microseconds: 500 }
instance_group [ { count: 1, kind: KIND_CPU } ]
model_warmup [ { name: "w", batch_size: 1 } ]
`
	if err := os.WriteFile(filepath.Join(dir, "config.pbtxt"), []byte(pbtxt), 0o644); err != nil {
		t.Fatal(err)
	}
	base, logs, stop := startServe(t, repo)
	defer stop()
	call := caller(t, base)
	cfg := call("GET", "/v2/models/tiny/config", "", "")
	for _, want := range []string{`"max_batch_size":4,`, `"max_queue_delay_microseconds":500,`, `"kind":"KIND_CPU","count":1`, `"output":[{"name":"probs"`} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config %s lacks %s", cfg, want)
		}
	}
	if out := call("POST", "/v2/models/tiny/infer", "application/json",
		`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,1,2,2],"data":[1,1,1,1]}]}`); !strings.Contains(out, `"name":"probs"`) {
		t.Errorf("infer: %s", out)
	}
	if info := call("GET", "/v1/models/tiny", "", ""); !strings.Contains(info, `"scores":"probabilities"`) || !strings.Contains(info, `"images_note":"no preprocessing fits its input`) {
		t.Errorf("model info %s", info)
	}
	resp, err := http.Post(base+"/v1/models/tiny/classify", "image/png", strings.NewReader(onesPNG(t)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), "takes tensors only") || !strings.Contains(string(body), "set preprocess.color: gray") {
		t.Errorf("an image: %d %s", resp.StatusCode, body)
	}
	for _, want := range []string{"ignored (no equivalent here): model_warmup", "serves tensors only"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the log lacks %q: %s", want, logs)
		}
	}
}

// Under --model-control poll, a changed config.pbtxt reloads the model as
// a changed config.yaml does, and its notes are logged once per change,
// not at every poll.
func TestPollTritonConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	repo := tinyRepo(t, "tiny", tinyClassifier(onnxpb.DimParam("N")), "")
	dir := filepath.Join(repo, "tiny")
	write := func(batch int) {
		cfg := fmt.Sprintf("max_batch_size: %d\nmodel_warmup [ { name: \"w\" } ]\n", batch)
		if err := os.WriteFile(filepath.Join(dir, "config.pbtxt"), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(4)
	base, logs, stop := startServe(t, repo, "--model-control", "poll", "--poll-interval", "100ms")
	defer stop()
	call := caller(t, base)
	if cfg := call("GET", "/v2/models/tiny/config", "", ""); !strings.Contains(cfg, `"max_batch_size":4,`) {
		t.Fatalf("config %s", cfg)
	}
	time.Sleep(500 * time.Millisecond) // several polls of an unchanged folder
	write(2)
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(call("GET", "/v2/models/tiny/config", "", ""), `"max_batch_size":2,`) {
		if time.Now().After(deadline) {
			t.Fatalf("config.pbtxt's change was not loaded: %s", logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	if n := strings.Count(logs.String(), "ignored (no equivalent here): model_warmup"); n != 2 {
		t.Errorf("the note was logged %d times over two loads and many polls; want 2", n)
	}
}
