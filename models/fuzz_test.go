package models

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"gopkg.in/yaml.v3"

	"fastinfer/models/onnxpb"
)

// FuzzParseConfig: ParseConfig never panics; what it accepts is valid
// (validate holds, defaults are filled in), and writing the result back
// as YAML and parsing that again gives the same configuration.
//
//	go test ./models -run '^$' -fuzz '^FuzzParseConfig$' -fuzztime 30s
func FuzzParseConfig(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("*", "config.yaml"))
	more, _ := filepath.Glob(filepath.Join("testdata", "repo", "*", "config.yaml"))
	for _, p := range append(files, more...) {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		"",
		"preprocess:\n  resize: 32\n  crop: 28\n  color: gray\n  mean: [0.5]\n  std: [0.5]\n",
		`{"preprocess": {"crop": 224, "color": "BGR", "scale": 1}}`,
		"preprocess: {scale: .nan, mean: [.inf, -.inf, 0]}",
		"preprocess: {resize: 8192, crop: 8192}",
		"preprocess: {std: [1, 0, 1]}",
		"preprocess: null",
		"batching: {max_batch_size: 32, max_queue_delay_us: 2000, preferred_batch_sizes: [8, 16, 32], max_queue_size: 512, default_timeout_us: 0, priority_levels: 2}",
		"batching: {max_batch_size: 1, preferred_batch_sizes: [64]}",
		"instances: {count: 2, kind: gpu, gpus: [0, 1]}",
		"instance_groups: [{count: 2, kind: gpu, gpus: [0]}, {kind: cpu}]",
		"version_policy: all",
		"version_policy: {latest: 2}",
		"version_policy: {specific: [1, 3]}",
		"version_policy: {all: false}",
		"version_policy: {latest: 1, all: true}",
		"labels: ../../etc/passwd",
		"labels: \"a\\u0000b\"",
		"input: &a x\noutput: *a\n",
		"preprocess: &p {crop: 3}\nbatching: *p\n",
		"input: x\n---\noutput: [",
		"a: &a [*a]",
		"preprocess:\n  <<: {crop: 5}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		p := c.Preprocess
		if p == nil || p.Scale == 0 || p.Color == "" {
			t.Fatalf("accepted without defaults: %+v", p)
		}
		if err := c.validate(); err != nil {
			t.Fatalf("ParseConfig accepted a config validate refuses: %v", err)
		}
		y1, err := configYAML(c)
		if err != nil {
			t.Fatalf("marshalling %+v: %v", c, err)
		}
		c2, err := ParseConfig(y1)
		if err != nil {
			t.Fatalf("re-parsing the accepted config fails: %v\n%s", err, y1)
		}
		y2, err := configYAML(c2)
		if err != nil {
			t.Fatal(err)
		}
		// Compared as YAML, so NaN scales and means compare equal.
		if !bytes.Equal(y1, y2) {
			t.Fatalf("round trip changed the config:\n%s\nbecame\n%s", y1, y2)
		}
	})
}

// configYAML writes c in config.yaml's own syntax (VersionPolicy has its
// own forms there).
func configYAML(c Config) ([]byte, error) {
	var vp any
	switch p := c.VersionPolicy; {
	case p.All:
		vp = "all"
	case p.Specific != nil:
		vp = map[string][]int{"specific": p.Specific}
	case p.Latest != 0:
		vp = map[string]int{"latest": p.Latest}
	}
	return yaml.Marshal(struct {
		Input          string      `yaml:"input"`
		Output         string      `yaml:"output"`
		Labels         string      `yaml:"labels"`
		Preprocess     *Preprocess `yaml:"preprocess"`
		Batching       Batching    `yaml:"batching"`
		Instances      Instances   `yaml:"instances"`
		InstanceGroups []Instances `yaml:"instance_groups,omitempty"`
		VersionPolicy  any         `yaml:"version_policy,omitempty"`
	}{c.Input, c.Output, c.Labels, c.Preprocess, c.Batching, c.Instances, c.InstanceGroups, vp})
}

// FuzzDetectScores: the graph walk over a model file never panics or
// loops, whatever the bytes, and answers one of the two kinds whenever it
// does not fail.
//
//	go test ./models -run '^$' -fuzz '^FuzzDetectScores$' -fuzztime 30s
func FuzzDetectScores(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("fashion-resnet", "3", "model.onnx")); err == nil {
		f.Add(b[:min(len(b), 4096)], "") // the header and the first nodes
	}
	for _, tail := range []func(g *onnxpb.Graph){
		func(g *onnxpb.Graph) { g.Node("Softmax", "sm", "probs", []string{"logits"}) },
		func(g *onnxpb.Graph) {
			g.Node("Identity", "a", "p", []string{"q"})
			g.Node("Identity", "b", "q", []string{"p"})
		},
	} {
		f.Add(scoresGraph(f, tail, "probs", "p"), "")
		f.Add(scoresGraph(f, tail, "probs", "p"), "p")
	}
	f.Fuzz(func(t *testing.T, model []byte, output string) {
		got, err := detectScores(bytes.NewReader(model), int64(len(model)), output)
		if err == nil && got != ScoresLogits && got != ScoresProbabilities {
			t.Fatalf("answered %q", got)
		}
	})
}

// FuzzParseTritonConfig: config.pbtxt parsing never panics or hangs, and
// what it accepts is a valid configuration.
//
//	go test ./models -run '^$' -fuzz '^FuzzParseTritonConfig$' -fuzztime 30s
func FuzzParseTritonConfig(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("testdata", "triton", "config.pbtxt")); err == nil {
		f.Add(b)
	}
	for _, s := range []string{
		`name: "a" max_batch_size: 8 input [{ name: "x" format: FORMAT_NHWC }]`,
		`version_policy: { specific: { versions: [1, 3] } }`,
		`instance_group [{ count: 2 kind: KIND_CPU }, {}]`,
		`a < b: 'c' > d: [ -1, +2, 0x10, 1e-5 ]`,
		"s: \"\\x41\\u00e9\" # comment",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, _, err := ParseTritonConfig(data, "m")
		if err != nil {
			return
		}
		if err := c.validate(); err != nil {
			t.Fatalf("accepted a config validate refuses: %v", err)
		}
	})
}
