package resnet

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"

	"fastinfer/models/onnxpb"
)

func TestBuildMatchesTorchvision(t *testing.T) {
	tests := []struct {
		arch   string
		params int64 // sum(p.numel() for p in torchvision.models.<arch>().parameters())
		ops    map[string]int
	}{
		{"resnet18", 11_689_512, map[string]int{"Conv": 20, "BatchNormalization": 20, "Relu": 17, "Add": 8,
			"MaxPool": 1, "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1}},
		{"resnet34", 21_797_672, map[string]int{"Conv": 36, "BatchNormalization": 36, "Relu": 33, "Add": 16,
			"MaxPool": 1, "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1}},
		{"resnet50", 25_557_032, map[string]int{"Conv": 53, "BatchNormalization": 53, "Relu": 49, "Add": 16,
			"MaxPool": 1, "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1}},
		{"head", 3*1000 + 1000, map[string]int{"GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1}},
	}
	for _, tc := range tests {
		t.Run(tc.arch, func(t *testing.T) {
			m, err := Build(tc.arch, 1000, 1)
			if err != nil {
				t.Fatal(err)
			}
			if got := ParamCount(m); got != tc.params {
				t.Errorf("ParamCount = %d, want %d", got, tc.params)
			}
			ops := map[string]int{}
			for _, n := range m.GetGraph().GetNode() {
				ops[n.GetOpType()]++
			}
			for op, want := range tc.ops {
				if ops[op] != want {
					t.Errorf("%s nodes = %d, want %d", op, ops[op], want)
				}
			}
			if len(ops) != len(tc.ops) {
				t.Errorf("op types = %v, want exactly %v", ops, tc.ops)
			}
			checkHeader(t, m, 1000)
		})
	}
}

// checkHeader checks the facts a server relies on: versions, I/O names,
// dtypes and shapes with a dynamic batch.
func checkHeader(t *testing.T, m *onnxpb.ModelProto, classes int64) {
	t.Helper()
	if m.GetIrVersion() != 8 {
		t.Errorf("ir_version = %d, want 8", m.GetIrVersion())
	}
	if ops := m.GetOpsetImport(); len(ops) != 1 || ops[0].GetDomain() != "" || ops[0].GetVersion() != 17 {
		t.Errorf("opset_import = %v, want default domain version 17", ops)
	}
	g := m.GetGraph()
	check := func(what string, vis []*onnxpb.ValueInfoProto, name string, dims ...any) {
		if len(vis) != 1 || vis[0].GetName() != name {
			t.Errorf("%s = %v, want one named %q", what, vis, name)
			return
		}
		tt := vis[0].GetType().GetTensorType()
		if tt.GetElemType() != int32(onnxpb.TensorProto_FLOAT) {
			t.Errorf("%s elem_type = %d, want FLOAT", what, tt.GetElemType())
		}
		got := tt.GetShape().GetDim()
		if len(got) != len(dims) {
			t.Fatalf("%s rank = %d, want %d", what, len(got), len(dims))
		}
		for i, want := range dims {
			switch want := want.(type) {
			case string:
				if got[i].GetDimParam() != want {
					t.Errorf("%s dim %d = %v, want dim_param %q", what, i, got[i], want)
				}
			case int64:
				if got[i].GetDimValue() != want {
					t.Errorf("%s dim %d = %v, want %d", what, i, got[i], want)
				}
			}
		}
	}
	check("input", g.GetInput(), "data", "N", int64(3), int64(224), int64(224))
	check("output", g.GetOutput(), "logits", "N", classes)
	for _, init := range g.GetInitializer() {
		if len(init.GetRawData()) == 0 || len(init.GetFloatData()) != 0 {
			t.Fatalf("initializer %s not stored as raw_data", init.GetName())
		}
	}
}

func TestBuildOptions(t *testing.T) {
	tests := []struct {
		name    string
		arch    string
		classes int
		wantErr bool
	}{
		{"unknown arch", "resnet101", 1000, true},
		{"empty arch", "", 1000, true},
		{"zero classes", "resnet18", 0, true},
		{"ten classes", "resnet18", 10, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Build(tc.arch, tc.classes, 1)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Build(%q, %d) error = %v, wantErr %v", tc.arch, tc.classes, err, tc.wantErr)
			}
			if err == nil {
				checkHeader(t, m, int64(tc.classes))
				// Only the fc layer depends on the class count.
				if got, want := ParamCount(m), int64(11_689_512-1000*513+tc.classes*513); got != want {
					t.Errorf("ParamCount = %d, want %d", got, want)
				}
			}
		})
	}
}

func TestBuildIsDeterministic(t *testing.T) {
	marshal := func(seed uint64) []byte {
		m, err := Build("resnet18", 1000, seed)
		if err != nil {
			t.Fatal(err)
		}
		data, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	a, b, c := marshal(7), marshal(7), marshal(8)
	if !bytes.Equal(a, b) {
		t.Error("same seed gave different models")
	}
	if bytes.Equal(a, c) {
		t.Error("different seeds gave the same model")
	}
}

func TestWriteModelDir(t *testing.T) {
	// A tiny stand-in model: WriteModelDir does not care what is inside.
	m := &onnxpb.ModelProto{IrVersion: proto.Int64(8), ProducerName: proto.String("test")}

	tests := []struct {
		name     string
		existing []string // entries to create first; a trailing "/" makes a directory
		want     []int    // versions returned by successive writes
	}{
		{"fresh dir", nil, []int{1, 2, 3}},
		{"after existing versions", []string{"1/", "7/"}, []int{8, 9}},
		{"ignores non-numeric names", []string{"old/", "README", "-3/", "007/", "+9/", "config.yaml"}, []int{1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "resnet")
			for _, e := range tc.existing {
				p := filepath.Join(dir, e)
				if strings.HasSuffix(e, "/") {
					if err := os.MkdirAll(p, 0o755); err != nil {
						t.Fatal(err)
					}
					continue
				}
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			for _, want := range tc.want {
				v, err := WriteModelDir(dir, m)
				if err != nil {
					t.Fatal(err)
				}
				if v != want {
					t.Fatalf("version = %d, want %d", v, want)
				}
				data, err := os.ReadFile(filepath.Join(dir, strconv.Itoa(v), "model.onnx"))
				if err != nil {
					t.Fatal(err)
				}
				var got onnxpb.ModelProto
				if err := proto.Unmarshal(data, &got); err != nil {
					t.Fatal(err)
				}
				if !proto.Equal(&got, m) {
					t.Errorf("model.onnx round trip: got %v, want %v", &got, m)
				}
			}
			checkConfig(t, dir)
			leftovers, _ := filepath.Glob(filepath.Join(dir, "*", ".*"))
			top, _ := filepath.Glob(filepath.Join(dir, ".*"))
			if len(leftovers)+len(top) != 0 {
				t.Errorf("temporary files left behind: %v %v", leftovers, top)
			}
		})
	}
}

func checkConfig(t *testing.T, dir string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, []byte("# ")) || !bytes.Contains(data, []byte("random weights")) {
		t.Errorf("config.yaml should start with a comment about random weights:\n%s", data)
	}
	var cfg struct {
		Input      string         `yaml:"input"`
		Output     string         `yaml:"output"`
		Labels     any            `yaml:"labels"`
		Preprocess map[string]any `yaml:"preprocess"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true) // input, output, preprocess and nothing else at the top
	if err := dec.Decode(&cfg); err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	if cfg.Input != "data" || cfg.Output != "logits" || cfg.Labels != nil {
		t.Errorf("config.yaml input/output/labels = %q/%q/%v", cfg.Input, cfg.Output, cfg.Labels)
	}
	want := map[string]any{
		"resize": 256, "crop": 224, "color": "rgb", "scale": 0.00392156862745098,
		"mean": []any{0.485, 0.456, 0.406}, "std": []any{0.229, 0.224, 0.225},
	}
	if len(cfg.Preprocess) != len(want) {
		t.Errorf("preprocess keys = %v, want %v", cfg.Preprocess, want)
	}
	for k, w := range want {
		if got := cfg.Preprocess[k]; !equalYAML(got, w) {
			t.Errorf("preprocess.%s = %v, want %v", k, got, w)
		}
	}
}

func equalYAML(a, b any) bool {
	as, aok := a.([]any)
	bs, bok := b.([]any)
	if aok != bok {
		return false
	}
	if !aok {
		return a == b
	}
	if len(as) != len(bs) {
		return false
	}
	for i := range as {
		if as[i] != bs[i] {
			return false
		}
	}
	return true
}

// BenchmarkBuild times building and writing resnet50, which `make run`
// does on first start.
func BenchmarkBuild(b *testing.B) {
	dir := b.TempDir()
	for b.Loop() {
		m, err := Build("resnet50", 1000, 1)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := WriteModelDir(dir, m); err != nil {
			b.Fatal(err)
		}
	}
}
