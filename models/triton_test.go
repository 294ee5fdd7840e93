package models

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseText(t *testing.T) {
	tests := []struct {
		name, in string
		want     textMsg
		err      string
	}{
		{"scalars", `name: "a" count: 2 kind: KIND_GPU; ok: true, x: -1.5e-3 y: - 4`, textMsg{
			{name: "name", value: "a", quote: true, line: 1}, {name: "count", value: "2", line: 1}, {name: "kind", value: "KIND_GPU", line: 1},
			{name: "ok", value: "true", line: 1}, {name: "x", value: "-1.5e-3", line: 1}, {name: "y", value: "-4", line: 1},
		}, ""},
		{"messages and lists", "a { b: 1 }\nc: < d: [1, 2] >\ne [ { f: 'it''s' }, {} ]", textMsg{
			{name: "a", value: textMsg{{name: "b", value: "1", line: 1}}, line: 1},
			{name: "c", value: textMsg{{name: "d", value: []any{"1", "2"}, line: 2}}, line: 2},
			{name: "e", value: []any{textMsg{{name: "f", value: "its", quote: true, line: 3}}, textMsg(nil)}, line: 3},
		}, ""},
		{"comments between joined strings", "# top\nname: \"a\\\"b\\n\" # trailing\n\"c\"", textMsg{{name: "name", value: "a\"b\nc", quote: true, line: 2}}, ""},
		{"escapes", `s: "tab\there" "+more" t: 'q"uote'`, textMsg{
			{name: "s", value: "tab\there+more", quote: true, line: 1}, {name: "t", value: `q"uote`, quote: true, line: 1},
		}, ""},
		{"byte-order mark", "\ufeffa: 1", textMsg{{name: "a", value: "1", line: 1}}, ""},
		{"unterminated string", `name: "abc`, nil, "unterminated string"},
		{"newline in string", "name: \"a\nb\"", nil, "newline in a string"},
		{"missing brace", `a { b: 1`, nil, `missing '}'`},
		{"stray brace", `a: 1 }`, nil, "want a field name"},
		{"no value", `a: `, nil, "want a value"},
		{"list of nothing", `a: [1 2]`, nil, "want , or ]"},
		{"no colon", `a 1`, nil, "want : or {"},
		{"bad escape", `a: "\q"`, nil, "bad escape"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseText([]byte(tt.in))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, %v\nwant %#v", got, err, tt.want)
			}
		})
	}
}

func TestParseTritonConfig(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "triton", "config.pbtxt"))
	if err != nil {
		t.Fatal(err)
	}
	c, notes, err := ParseTritonConfig(b, "resnet50")
	if err != nil {
		t.Fatal(err)
	}
	n := func(v int) *int { return &v }
	want := Batching{MaxBatchSize: n(32), MaxQueueDelayUS: n(100), PreferredBatchSizes: []int{8, 16}, MaxQueueSize: n(512), DefaultTimeoutUS: n(0), PriorityLevels: n(2)}
	if !reflect.DeepEqual(c.Batching, want) {
		t.Errorf("batching %+v, want %+v", c.Batching, want)
	}
	if c.Input != "data" || c.Output != "logits" || c.Labels != "labels.txt" || c.Preprocess.Layout != "nchw" || !c.Preprocess.Implicit {
		t.Errorf("tensors: input %q output %q labels %q preprocess %+v", c.Input, c.Output, c.Labels, c.Preprocess)
	}
	if !reflect.DeepEqual(c.InstanceGroups, []Instances{{Count: n(2), Kind: "gpu", GPUs: []int{0}}, {Count: n(1), Kind: "cpu"}}) || !reflect.DeepEqual(c.Instances, Instances{}) {
		t.Errorf("instances %+v, groups %+v", c.Instances, c.InstanceGroups)
	}
	if !reflect.DeepEqual(c.VersionPolicy, VersionPolicy{Latest: 2}) {
		t.Errorf("version policy %+v", c.VersionPolicy)
	}
	joined := strings.Join(notes, "\n")
	for _, w := range []string{"ignored (no equivalent here): model_warmup, optimization"} {
		if !strings.Contains(joined, w) {
			t.Errorf("notes %q lack %q", notes, w)
		}
	}

	for _, tt := range []struct {
		name, in, want string
	}{
		{"tensorrt", `platform: "tensorrt_plan"`, "fastinfer serves ONNX models"},
		{"python", `backend: "python"`, "fastinfer serves ONNX models"},
		{"int64 input", `input [{ name: "x" data_type: TYPE_INT64 dims: [3] }]`, "TYPE_INT64: fastinfer serves FP32, FP16 or UINT8 inputs"},
		{"uint8 output", `output [{ name: "y" data_type: TYPE_UINT8 dims: [3] }]`, "TYPE_UINT8: fastinfer serves FP32 or FP16 outputs"},
		{"bad format", `input { name: "x" format: FORMAT_CHW }`, "format FORMAT_CHW"},
		{"other file name", `default_model_filename: "resnet.onnx"`, "loads each version's model.onnx"},
		{"batch not a number", `max_batch_size: lots`, `"lots" is not an integer`},
		{"bad kind", `instance_group [{ kind: KIND_TPU }]`, "KIND_TPU"},
		{"bad policy", `version_policy { newest {} }`, "want latest, all or specific"},
		{"out of range", `max_batch_size: 100000`, "batching.max_batch_size 100000"},
		{"syntax", `max_batch_size: {`, "line 1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := ParseTritonConfig([]byte(tt.in), "m"); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err %v, want %q", err, tt.want)
			}
		})
	}
	// The datatypes runtime.Session serves map.
	for _, in := range []string{
		`input [{ name: "x" data_type: TYPE_UINT8 dims: [3] }] output [{ name: "y" data_type: TYPE_FP16 dims: [2] }]`,
		`input [{ name: "x" data_type: TYPE_FP16 dims: [3] }]`,
	} {
		if _, _, err := ParseTritonConfig([]byte(in), "m"); err != nil {
			t.Errorf("%s: %v", in, err)
		}
	}
	// Instance groups: one is config.yaml's instances; several, its
	// instance_groups, each as written, whether in one list or repeated.
	for _, tt := range []struct {
		name, in string
		one      Instances
		groups   []Instances
	}{
		{"one group", `instance_group [{ count: 3, kind: KIND_GPU, gpus: [1, 0] }]`, Instances{Count: n(3), Kind: "gpu", GPUs: []int{1, 0}}, nil},
		{"one group per GPU", `instance_group [{ count: 2, kind: KIND_GPU, gpus: [0] }, { count: 2, kind: KIND_GPU, gpus: [2, 0] }, { kind: KIND_GPU, count: 2, gpus: 1 }]`,
			Instances{}, []Instances{{Count: n(2), Kind: "gpu", GPUs: []int{0}}, {Count: n(2), Kind: "gpu", GPUs: []int{2, 0}}, {Count: n(2), Kind: "gpu", GPUs: []int{1}}}},
		{"other counts", `instance_group [{ count: 2, kind: KIND_GPU, gpus: [0] }, { count: 1, kind: KIND_GPU, gpus: [1] }]`,
			Instances{}, []Instances{{Count: n(2), Kind: "gpu", GPUs: []int{0}}, {Count: n(1), Kind: "gpu", GPUs: []int{1}}}},
		{"repeated field", "instance_group { count: 2, kind: KIND_GPU }\ninstance_group { count: 1, kind: KIND_CPU }",
			Instances{}, []Instances{{Count: n(2), Kind: "gpu"}, {Count: n(1), Kind: "cpu"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, notes, err := ParseTritonConfig([]byte(tt.in), "m")
			if err != nil || !reflect.DeepEqual(c.Instances, tt.one) || !reflect.DeepEqual(c.InstanceGroups, tt.groups) {
				t.Fatalf("instances %+v, groups %+v, %v; want %+v, %+v", c.Instances, c.InstanceGroups, err, tt.one, tt.groups)
			}
			if len(notes) != 0 {
				t.Errorf("notes %q", notes)
			}
		})
	}

	// Minor forms: a second output is named, not dropped; name differs.
	_, notes, err = ParseTritonConfig([]byte(`name: "other" output { name: "a" } output { name: "b" } version_policy: { all { } }`), "m")
	if err != nil || len(notes) != 2 || !strings.Contains(notes[0], `served as "m"`) || !strings.Contains(notes[1], `output "b" is not served`) {
		t.Errorf("notes %q, %v", notes, err)
	}
}

// A Triton repository's model folder, config.pbtxt and all, reads as a
// model; config.yaml beside it wins, and the notes say so.
func TestReadTritonFolder(t *testing.T) {
	pbtxt, err := os.ReadFile(filepath.Join("testdata", "triton", "config.pbtxt"))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "resnet50")
	for _, f := range []struct{ path, data string }{
		{"config.pbtxt", string(pbtxt)},
		{"labels.txt", strings.Repeat("class\n", 1000)},
		{"1/model.onnx", "not read here"},
	} {
		p := filepath.Join(dir, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f.data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m, ok, err := Read(dir)
	if err != nil || !ok {
		t.Fatalf("Read: %v, %v", ok, err)
	}
	if m.ConfigPath != filepath.Join(dir, "config.pbtxt") || *m.Config.Batching.MaxBatchSize != 32 || len(m.Labels) != 1000 || len(m.Notes) == 0 {
		t.Errorf("model %+v", m)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte("batching: {max_batch_size: 4}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, _, err = Read(dir)
	if err != nil || m.ConfigPath != filepath.Join(dir, "config.yaml") || *m.Config.Batching.MaxBatchSize != 4 ||
		len(m.Notes) != 1 || !strings.Contains(m.Notes[0], "config.pbtxt is not read") {
		t.Errorf("with config.yaml: %+v, %v", m, err)
	}
}
