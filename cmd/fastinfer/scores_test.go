package main

import (
	"bytes"
	"encoding/json"
	"image"
	"image/png"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"fastinfer/internal/testutil"
	"fastinfer/models/onnxpb"
)

// Of a model with two outputs, logits and their softmax, the server serves
// the one config.yaml names (or the first), lists only that one in the
// metadata, and scores the softmax output by its values as they are (read
// from the graph at load) unless config.yaml's scores says otherwise.
func TestServeDetectsProbabilities(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	// x [N,1,2,2] → Flatten → MatMul w [4,3] → logits → Softmax → probs
	g := &onnxpb.Graph{}
	g.FloatInit("w", []int64{4, 3}, func(i int) float32 { return float32(i%3) * 0.5 })
	g.Node("Flatten", "flat", "f", []string{"x"})
	g.Node("MatMul", "fc", "logits", []string{"f", "w"})
	g.Node("Softmax", "sm", "probs", []string{"logits"}, onnxpb.AttrInt("axis", 1))
	m := &onnxpb.ModelProto{
		IrVersion:   proto.Int64(8),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(17)}},
		Graph: &onnxpb.GraphProto{
			Name: proto.String("probs"), Node: g.Nodes, Initializer: g.Inits,
			Input: []*onnxpb.ValueInfoProto{onnxpb.FloatTensor("x", onnxpb.DimParam("N"), onnxpb.Dim(1), onnxpb.Dim(2), onnxpb.Dim(2))},
			Output: []*onnxpb.ValueInfoProto{
				onnxpb.FloatTensor("logits", onnxpb.DimParam("N"), onnxpb.Dim(3)),
				onnxpb.FloatTensor("probs", onnxpb.DimParam("N"), onnxpb.Dim(3)),
			},
		},
	}
	const pre = "preprocess: {color: gray, resize: 2, crop: 2, scale: 1, mean: [0], std: [1]}\n"
	for _, tt := range []struct {
		name, config, output, want string
	}{
		{"first output", pre, "logits", "logits"},
		{"softmax output", pre + "output: probs\n", "probs", "probabilities"},
		{"softmax output, scores overridden", pre + "output: probs\nscores: logits\n", "probs", "logits"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			repo := t.TempDir()
			dir := filepath.Join(repo, "probs")
			if err := os.MkdirAll(filepath.Join(dir, "1"), 0o755); err != nil {
				t.Fatal(err)
			}
			testutil.WriteModel(t, filepath.Join(dir, "1"), "model.onnx", m)
			if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(tt.config), 0o644); err != nil {
				t.Fatal(err)
			}
			base, _, stop := startServe(t, repo)
			defer stop()
			call := func(method, path, ct, body string) string {
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
			img := image.NewGray(image.Rect(0, 0, 2, 2))
			for i := range img.Pix {
				img.Pix[i] = 1
			}
			var buf bytes.Buffer
			if err := png.Encode(&buf, img); err != nil {
				t.Fatal(err)
			}
			v1 := call("POST", "/v1/models/probs/classify?top_k=1", "image/png", buf.String())
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
