package models

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	implicit := ImageNet() // no preprocess section: sized by the model at load
	implicit.Implicit = true
	tests := []struct {
		name    string
		in      string
		want    Preprocess
		wantErr string
	}{
		{name: "empty gets ImageNet", in: "", want: implicit},
		{name: "yaml", in: "preprocess:\n  resize: 32\n  crop: 28\n  color: gray\n  mean: [0.5]\n  std: [0.5]\n",
			want: Preprocess{Resize: 32, Crop: 28, Color: "gray", Scale: 1.0 / 255, Mean: []float32{0.5}, Std: []float32{0.5}}},
		{name: "json is yaml", in: `{"preprocess": {"crop": 224, "color": "BGR", "scale": 1}}`,
			want: Preprocess{Crop: 224, Color: "bgr", Scale: 1}},
		{name: "unknown key", in: "preproces:\n  crop: 3\n", wantErr: "preproces"},
		{name: "bad color", in: "preprocess: {color: cmyk}", wantErr: "color"},
		{name: "mean length", in: "preprocess: {mean: [1, 2]}", wantErr: "mean has 2 values"},
		{name: "zero std", in: "preprocess: {std: [1, 0, 1]}", wantErr: "std must not contain 0"},
		{name: "crop over resize", in: "preprocess: {resize: 100, crop: 200}", wantErr: "larger than resize"},
		{name: "negative", in: "preprocess: {crop: -1}", wantErr: "negative"},
		{name: "labels path", in: "labels: ../../etc/passwd", wantErr: "file name"},
		{name: "labels with a newline", in: "labels: \"a\\nb\"", wantErr: "file name"},
		{name: "not yaml", in: "preprocess: [", wantErr: "yaml"},
		{name: "batching typo", in: "batching: {max_batch: 8}", wantErr: "max_batch"},
		{name: "negative batch", in: "batching: {max_batch_size: -1}", wantErr: "max_batch_size"},
		{name: "preferred over max", in: "batching: {max_batch_size: 8, preferred_batch_sizes: [4, 16]}", wantErr: "16 is outside"},
		{name: "instances kind", in: "instances: {kind: tpu}", wantErr: "instances.kind"},
		{name: "instances count", in: "instances: {count: 0}", wantErr: "instances.count"},
		{name: "instance group kind", in: "instance_groups: [{kind: gpu}, {kind: tpu}]", wantErr: "instance_groups[1].kind"},
		{name: "instance group typo", in: "instance_groups: [{count: 1, gpu: [0]}]", wantErr: "field gpu not found"},
		{name: "both forms", in: "instances: {count: 2}\ninstance_groups: [{count: 1}]", wantErr: "one or the other"},
		{name: "fp16", in: "precision: fp16", want: implicit},
		{name: "fp32", in: "precision: fp32", want: implicit},
		{name: "bad precision", in: "precision: int8", wantErr: "precision"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*c.Preprocess, tt.want) {
				t.Fatalf("preprocess = %+v, want %+v", *c.Preprocess, tt.want)
			}
		})
	}
}

func TestParseBatchingAndInstances(t *testing.T) {
	c, err := ParseConfig([]byte(`
batching:
  max_batch_size: 32
  max_queue_delay_us: 2000
  preferred_batch_sizes: [8, 16, 32]
  max_queue_size: 512
  default_timeout_us: 0
  priority_levels: 2
instances:
  count: 2
  kind: gpu
  gpus: [0, 1]
`))
	if err != nil {
		t.Fatal(err)
	}
	b := c.Batching
	if *b.MaxBatchSize != 32 || *b.MaxQueueDelayUS != 2000 || !reflect.DeepEqual(b.PreferredBatchSizes, []int{8, 16, 32}) ||
		*b.MaxQueueSize != 512 || *b.DefaultTimeoutUS != 0 || *b.PriorityLevels != 2 {
		t.Errorf("batching = %+v", b)
	}
	if in := c.Instances; *in.Count != 2 || in.Kind != "gpu" || !reflect.DeepEqual(in.GPUs, []int{0, 1}) {
		t.Errorf("instances = %+v", in)
	}
	if g := c.Groups(); len(g) != 1 || !reflect.DeepEqual(g[0], c.Instances) {
		t.Errorf("groups of an instances section = %+v", g)
	}
	// Triton's instance_group as a list: each group as written.
	c, err = ParseConfig([]byte("instance_groups:\n  - {count: 3, kind: gpu, gpus: [0]}\n  - {count: 1, kind: gpu, gpus: [1]}\n  - {kind: cpu}\n"))
	if err != nil {
		t.Fatal(err)
	}
	n := func(v int) *int { return &v }
	if g := c.Groups(); !reflect.DeepEqual(g, []Instances{{Count: n(3), Kind: "gpu", GPUs: []int{0}}, {Count: n(1), Kind: "gpu", GPUs: []int{1}}, {Kind: "cpu"}}) {
		t.Errorf("instance_groups = %+v", g)
	}
	// Omitted keys stay nil so server-wide defaults apply.
	c, err = ParseConfig([]byte("batching: {max_batch_size: 4}"))
	if err != nil || c.Batching.MaxQueueDelayUS != nil || c.Instances.Count != nil {
		t.Fatalf("defaults not left nil: %+v %v", c, err)
	}
}

func TestScan(t *testing.T) {
	ms, errs, err := Scan(filepath.Join("testdata", "repo"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Model{}
	for _, m := range ms {
		got[m.Name] = m
	}
	if len(got) != 3 {
		t.Fatalf("models = %v, want good, jsoncfg, noconfig", keys(got))
	}
	good := got["good"]
	var nums []int
	for _, v := range good.Versions {
		nums = append(nums, v.Number)
	}
	// 03 and "latest" are not version names; 10 holds no model.onnx yet.
	if !reflect.DeepEqual(nums, []int{1, 2}) || good.Latest().Number != 2 {
		t.Errorf("good versions = %v", nums)
	}
	if want := []string{"tabby", "tiger cat", "", "siamese"}; !reflect.DeepEqual(good.Labels, want) {
		t.Errorf("labels = %q, want %q", good.Labels, want)
	}
	// The served version's card, compacted; a model without one has nil.
	if want := `{"model":"good","version":2,"created":"2026-11-22T10:00:00Z","dataset":{"name":"fixture","train":4,"validation":0,"test":4},"accuracy":{"train":1,"validation":0,"test":0.75},"classes":["tabby","tiger cat","","siamese"]}`; string(good.Card) != want {
		t.Errorf("good card = %s, want %s", good.Card, want)
	}
	if c := got["jsoncfg"].Card; c != nil {
		t.Errorf("jsoncfg card = %s, want none", c)
	}
	if p := good.Config.Preprocess; p.Color != "gray" || p.Crop != 28 || p.Resize != 32 {
		t.Errorf("good preprocess = %+v", p)
	}
	if got["jsoncfg"].Config.Output != "probs" || got["jsoncfg"].Config.Preprocess.Color != "bgr" {
		t.Errorf("jsoncfg config = %+v", got["jsoncfg"].Config)
	}
	if p := got["noconfig"].Config.Preprocess; !p.Implicit || !reflect.DeepEqual(p.Mean, ImageNet().Mean) {
		t.Errorf("noconfig preprocess = %+v", p)
	}
	wantErrs := map[string]string{"badcfg": "config.yaml", "noversion": "no version folder"}
	if len(errs) != len(wantErrs) {
		t.Fatalf("errors = %v", errs)
	}
	for _, e := range errs {
		var le *LoadError
		if !errors.As(e, &le) {
			t.Fatalf("%v is not a LoadError", e)
		}
		if w, ok := wantErrs[le.Model]; !ok || !strings.Contains(e.Error(), w) {
			t.Errorf("error for %s = %v, want mention of %q", le.Model, e, w)
		}
	}
}

// Only the served version's card counts, and a broken one fails the model
// with the file named.
func TestReadCard(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string // relative to the model folder
		want    string
		wantErr string
	}{
		{name: "latest only", files: map[string]string{"1/card.json": `{"version": 1}`, "2/model.onnx": ""}, want: ""},
		{name: "latest", files: map[string]string{"1/card.json": `{"version": 1}`, "2/card.json": "{\n  \"version\": 2\n}\n", "2/model.onnx": ""}, want: `{"version":2}`},
		{name: "card in unfinished version", files: map[string]string{"3/card.json": `{"version": 3}`}, want: ""},
		{name: "invalid", files: map[string]string{"1/card.json": `{"version": 1,}`}, wantErr: filepath.Join("1", "card.json") + ": invalid model card"},
		{name: "array", files: map[string]string{"1/card.json": `[1]`}, wantErr: "invalid model card"},
		{name: "null", files: map[string]string{"1/card.json": `null`}, wantErr: "want a JSON object"},
		{name: "empty", files: map[string]string{"1/card.json": ``}, wantErr: "invalid model card"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "m")
			tt.files["1/model.onnx"] = ""
			for name, body := range tt.files {
				p := filepath.Join(dir, filepath.FromSlash(name))
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			m, ok, err := Read(dir)
			if tt.wantErr != "" {
				var le *LoadError
				if !errors.As(err, &le) || le.Model != "m" || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want a LoadError mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !ok {
				t.Fatalf("Read = %v, %v", ok, err)
			}
			if string(m.Card) != tt.want {
				t.Errorf("card = %q, want %q", m.Card, tt.want)
			}
		})
	}
}

func TestScanFollowsSymlinkedModels(t *testing.T) {
	repo := t.TempDir()
	good, err := filepath.Abs(filepath.Join("testdata", "repo", "good"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(good, filepath.Join(repo, "linked")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(repo, "nowhere"), filepath.Join(repo, "dangling")); err != nil {
		t.Fatal(err)
	}
	ms, errs, err := Scan(repo)
	if err != nil || len(errs) != 0 || len(ms) != 1 || ms[0].Name != "linked" {
		t.Fatalf("Scan = %+v, %v, %v; want the linked model only", ms, errs, err)
	}
}

func TestScanFollowsSymlinkedVersions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	good, err := filepath.Abs(filepath.Join("testdata", "repo", "good", "1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(good, filepath.Join(dir, "7")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "8"), []byte("a file, not a version"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, ok, err := Read(dir)
	if err != nil || !ok || len(m.Versions) != 1 || m.Versions[0].Number != 7 {
		t.Fatalf("Read = %+v, %v, %v; want version 7 through its symlink", m, ok, err)
	}
}

func TestScanMissingRoot(t *testing.T) {
	if _, _, err := Scan(filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Fatal("Scan of a missing folder succeeded")
	}
}

func TestValidName(t *testing.T) {
	for s, want := range map[string]bool{
		"resnet50": true, "fashion-mnist_v2.1": true, "": false, "..": false, ".hidden": false,
		"a/b": false, "a..b": false, "%2e%2e": false, strings.Repeat("a", 129): false,
	} {
		if ValidName(s) != want {
			t.Errorf("ValidName(%q) = %v, want %v", s, !want, want)
		}
	}
}

// Labels files as Windows editors save them: CRLF line ends, and a UTF-8
// byte-order mark that would otherwise become part of the first label.
func TestReadLabelsCRLF(t *testing.T) {
	for _, in := range []string{"a\r\nb\r\n", "\ufeffa\r\nb\r\n", "\ufeffa\nb"} {
		p := filepath.Join(t.TempDir(), "labels.txt")
		if err := os.WriteFile(p, []byte(in), 0o644); err != nil {
			t.Fatal(err)
		}
		l, err := ReadLabels(p)
		if err != nil || !reflect.DeepEqual(l, []string{"a", "b"}) {
			t.Errorf("ReadLabels(%q) = %q, %v", in, l, err)
		}
	}
}

func keys(m map[string]Model) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	return k
}

func TestClaimVersionAndWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"1", "3", "07", "latest", "0"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// 07, latest and 0 are not versions; the next after 3 is 4, then 5.
	for _, want := range []int{4, 5} {
		v, vdir, err := ClaimVersion(dir)
		if err != nil || v != want || vdir != filepath.Join(dir, strconv.Itoa(want)) {
			t.Fatalf("ClaimVersion = %d, %q, %v; want %d", v, vdir, err, want)
		}
	}
	if err := WriteFileAtomic(dir, ModelFile, []byte("onnx")); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, ModelFile)); err != nil || string(b) != "onnx" {
		t.Fatalf("read back %q, %v", b, err)
	}
	if st, _ := os.Stat(filepath.Join(dir, ModelFile)); st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	if _, _, err := ClaimVersion(filepath.Join(dir, "missing")); err == nil {
		t.Error("ClaimVersion in a missing folder succeeded")
	}
}
