package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"fastinfer/internal/dtype"
	"fastinfer/internal/testutil"
	"fastinfer/models"
	"fastinfer/train/data"
)

// The default model served three ways from one repository: as trained
// (FP32), converted by `models convert --fp16 --fp16-io` (FP16 inputs and
// outputs) and by `models convert --pixels` (its normalisation in the
// graph, UINT8 pixels in). Their
// metadata name the datatypes; their own binary tensors go in as sent;
// the same Fashion-MNIST photos get the same top-1 through /v1 from all
// three (the pixel model's logits within float rounding of FP32's).
func TestServeInputDatatypes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	src := filepath.Join("..", "..", "models", "fashion-resnet")
	cfgText, err := os.ReadFile(filepath.Join(src, models.ConfigFile))
	if err != nil {
		t.Fatalf("the default model is missing (%v): run `make train`", err)
	}
	cfg, err := models.ParseConfig(cfgText)
	if err != nil {
		t.Fatal(err)
	}
	model32 := filepath.Join(src, "3", models.ModelFile)
	repo := t.TempDir()
	for _, name := range []string{"f32", "f16", "u8"} {
		if err := os.MkdirAll(filepath.Join(repo, name, "1"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	raw32, err := os.ReadFile(model32)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(repo, "f32", "1", models.ModelFile), raw32, 0o644)
	var stdout, stderr bytes.Buffer
	if code := run([]string{"models", "convert", "--fp16", "--fp16-io", model32, filepath.Join(repo, "f16", "1")}, &stdout, &stderr, func(string) string { return "" }); code != 0 {
		t.Fatalf("models convert: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	stdout.Reset()
	if code := run([]string{"models", "convert", "--pixels", model32, filepath.Join(repo, "u8", "1")}, &stdout, &stderr, func(string) string { return "" }); code != 0 {
		t.Fatalf("models convert --pixels: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	if want := "fashion-resnet/config.yaml's normalisation in the graph"; !strings.Contains(stdout.String(), want) {
		t.Errorf("convert said %q; want %q", stdout.String(), want)
	}
	noLabels := strings.ReplaceAll(string(cfgText), "labels: labels.txt\n", "")
	for name, c := range map[string]string{
		"f32": noLabels, "f16": noLabels,
		// No normalisation: the graph does it.
		"u8": "input: data\noutput: logits\npreprocess: {resize: 28, crop: 28, color: gray}\n",
	} {
		if err := os.WriteFile(filepath.Join(repo, name, models.ConfigFile), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	base, _, stop := startServe(t, repo)
	defer stop()
	call := caller(t, base)
	for _, tt := range []struct{ model, want string }{
		{"f16", `"inputs":[{"name":"data","datatype":"FP16","shape":[-1,1,28,28]}],"outputs":[{"name":"logits","datatype":"FP16","shape":[-1,10]}]`},
		{"u8", `"inputs":[{"name":"data","datatype":"UINT8","shape":[-1,1,28,28]}]`},
	} {
		if meta := call("GET", "/v2/models/"+tt.model, "", ""); !strings.Contains(meta, tt.want) {
			t.Errorf("%s metadata %s; want %s", tt.model, meta, tt.want)
		}
	}

	test, err := data.FashionMNIST("", "t10k")
	if err != nil {
		t.Fatal(err)
	}
	top := func(model string, img []byte) int {
		t.Helper()
		var r classifyResponse
		if err := json.Unmarshal([]byte(call("POST", "/v1/models/"+model+"/classify?top_k=1", "image/png", string(img))), &r); err != nil {
			t.Fatal(err)
		}
		return r.Results[0].Predictions[0].Index
	}
	const images = 40
	differ16 := 0
	for i := range images {
		img := fashionPNG(t, test, i, 1)
		t32, t16, t8 := top("f32", img), top("f16", img), top("u8", img)
		if t8 != t32 {
			t.Errorf("image %d: pixel model says %d, FP32 %d", i, t8, t32)
		}
		if t16 != t32 {
			differ16++
		}
	}
	// 99.5 % agreement over the 10,000 (TestFP16FashionAgreement); one
	// in 40 is allowed here.
	if differ16 > 1 {
		t.Errorf("FP16 I/O model disagrees with FP32 on %d of %d images", differ16, images)
	}

	// Binary tensors in each model's own datatype, one image: FP32 of the
	// normalised pixels, FP16 of the same, UINT8 of the pixels.
	px := make([]byte, 28*28)
	norm := make([]float32, 28*28)
	p := cfg.Preprocess
	for j, x := range test.X[:28*28] {
		px[j] = uint8(min(255, x*255+0.5))
		norm[j] = (float32(px[j])*p.Scale - p.Mean[0]) / p.Std[0]
	}
	half := make([]byte, 2*len(norm))
	dtype.Encode("FP16", half, norm)
	logits := func(model, input, dt, shape string, blob []byte) []float32 {
		t.Helper()
		hdr := fmt.Sprintf(`{"inputs":[{"name":%q,"datatype":%q,"shape":%s,"parameters":{"binary_data_size":%d}}],"parameters":{"binary_data_output":true}}`,
			input, dt, shape, len(blob))
		req, _ := http.NewRequest("POST", base+"/v2/models/"+model+"/infer", bytes.NewReader(append([]byte(hdr), blob...)))
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("Inference-Header-Content-Length", strconv.Itoa(len(hdr)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		r, _ := io.ReadAll(resp.Body)
		// The FP16 output model answers FP16, as Triton would.
		size := 4
		if model == "f16" {
			size = 2
		}
		if resp.StatusCode != 200 || len(r) < 10*size {
			t.Fatalf("%s: %d, %q", model, resp.StatusCode, r)
		}
		out := make([]float32, 10)
		tail := r[len(r)-10*size:]
		for k := range out {
			if size == 2 {
				out[k] = dtype.ToFloat32(binary.LittleEndian.Uint16(tail[2*k:]))
			} else {
				out[k] = math.Float32frombits(binary.LittleEndian.Uint32(tail[4*k:]))
			}
		}
		return out
	}
	l32 := logits("f32", "data", "FP32", "[1,1,28,28]", dtype.Bytes(norm))
	l16 := logits("f16", "data", "FP16", "[1,1,28,28]", half)
	l8 := logits("u8", "data", "UINT8", "[1,1,28,28]", px)
	a32 := testutil.Argmax(l32)
	for k := range l32 {
		if d := math.Abs(float64(l8[k] - l32[k])); d > 1e-3 {
			t.Errorf("logit %d: pixel model %v, FP32 %v", k, l8[k], l32[k])
		}
	}
	if testutil.Argmax(l16) != a32 || testutil.Argmax(l8) != a32 {
		t.Errorf("top-1 FP32 %d, FP16 %d, UINT8 %d", a32, testutil.Argmax(l16), testutil.Argmax(l8))
	}
}
