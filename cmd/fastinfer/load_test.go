package main

import (
	"cmp"
	"io"
	"net/http"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"fastinfer/batching"
	"fastinfer/internal/dtype"
	"fastinfer/models"
	"fastinfer/runtime"
	"fastinfer/server"
)

func intp(v int) *int { return &v }

func TestPlanInstances(t *testing.T) {
	// cpu(n, threads) is n CPU instances; gpu(d...) one GPU instance on each.
	cpu := func(n, threads int) []placement {
		p := make([]placement, n)
		for i := range p {
			p[i] = placement{kind: "cpu", threads: threads}
		}
		return p
	}
	gpu := func(devs ...int) []placement {
		var p []placement
		for _, d := range devs {
			p = append(p, placement{kind: "gpu", device: d, threads: 1})
		}
		return p
	}
	one := func(in models.Instances) []models.Instances { return []models.Instances{in} }
	tests := []struct {
		name       string
		groups     []models.Instances
		flagCount  int
		threads    int
		gpus       int
		want       []placement
		wantErrSub string
	}{
		{name: "cpu default: one instance, all cores", groups: one(models.Instances{}), want: cpu(1, 8)},
		{name: "cpu count divides cores", groups: one(models.Instances{Count: intp(2)}), want: cpu(2, 4)},
		{name: "flag count", groups: one(models.Instances{}), flagCount: 3, want: cpu(3, 2)},
		{name: "threads flag wins", groups: one(models.Instances{Count: intp(2)}), threads: 1, want: cpu(2, 1)},
		{name: "gpu auto: two per device", groups: one(models.Instances{}), gpus: 2, want: gpu(0, 0, 1, 1)},
		{name: "gpu listed", gpus: 4, groups: one(models.Instances{Count: intp(1), GPUs: []int{2, 3}}), want: gpu(2, 3)},
		{name: "cpu forced on gpu machine", gpus: 2, groups: one(models.Instances{Kind: "cpu"}), want: cpu(1, 8)},
		{name: "gpu asked, none found", groups: one(models.Instances{Kind: "gpu", Count: intp(1)}), want: gpu(0)},
		{name: "missing device", gpus: 1, groups: one(models.Instances{GPUs: []int{1}}), wantErrSub: "instances.gpus lists device 1"},
		// Triton's instance_group lists.
		{name: "groups: other counts per GPU", gpus: 2, groups: []models.Instances{
			{Count: intp(3), Kind: "gpu", GPUs: []int{0}}, {Count: intp(1), Kind: "gpu", GPUs: []int{1}}}, want: gpu(0, 0, 0, 1)},
		{name: "groups: GPU and CPU side by side", gpus: 1, groups: []models.Instances{
			{Count: intp(2), Kind: "gpu"}, {Count: intp(2), Kind: "cpu"}}, want: append(gpu(0, 0), cpu(2, 4)...)},
		{name: "groups: CPU groups share the cores", groups: []models.Instances{
			{Count: intp(1), Kind: "cpu"}, {Count: intp(3), Kind: "cpu"}}, want: cpu(4, 2)},
		{name: "groups: the flag's count where a group has none", flagCount: 1, gpus: 2, groups: []models.Instances{
			{Kind: "gpu", GPUs: []int{1}}, {Kind: "cpu"}}, want: append(gpu(1), cpu(1, 8)...)},
		{name: "groups: missing device named by group", gpus: 2, groups: []models.Instances{
			{Kind: "gpu", GPUs: []int{0}}, {Kind: "gpu", GPUs: []int{5}}}, wantErrSub: "instance_groups[1].gpus lists device 5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := planInstances(tt.groups, tt.flagCount, tt.threads, tt.gpus, 8)
			if tt.wantErrSub != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErrSub) {
					t.Fatalf("plan = %+v, %v; want an error naming %q", got, err, tt.wantErrSub)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("plan = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// instanceGroups reports where instances ended up as Triton's
// instance_group does: the CPU's, and GPUs grouped by how many instances
// each runs.
func TestInstanceGroups(t *testing.T) {
	type at = where
	for _, tt := range []struct {
		name string
		in   []at
		want []server.InstanceGroup
		text string
	}{
		{"two per GPU", []at{{true, 0}, {true, 0}, {true, 1}, {true, 1}}, []server.InstanceGroup{{Kind: "gpu", Count: 2, GPUs: []int{0, 1}}}, "2 each on gpu 0,1"},
		{"three and one", []at{{true, 0}, {true, 0}, {true, 0}, {true, 1}}, []server.InstanceGroup{{Kind: "gpu", Count: 3, GPUs: []int{0}}, {Kind: "gpu", Count: 1, GPUs: []int{1}}}, "3 on gpu 0, 1 on gpu 1"},
		{"GPU and CPU", []at{{true, 0}, {false, 0}, {true, 0}, {false, 0}}, []server.InstanceGroup{{Kind: "cpu", Count: 2}, {Kind: "gpu", Count: 2, GPUs: []int{0}}}, "2 on cpu, 2 on gpu 0"},
		{"fallen back to the CPU", []at{{false, 0}, {false, 1}}, []server.InstanceGroup{{Kind: "cpu", Count: 2}}, "2 on cpu"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := instanceGroups(tt.in)
			// In a fixed order: kind, then the most instances first.
			slices.SortFunc(got, func(a, b server.InstanceGroup) int { return cmp.Or(strings.Compare(a.Kind, b.Kind), b.Count-a.Count) })
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("groups %+v, want %+v", got, tt.want)
			}
			if text := groupsText(got); text != tt.text {
				t.Errorf("logged as %q, want %q", text, tt.text)
			}
		})
	}
}

func TestBatchConfigOverridesFlags(t *testing.T) {
	cfg := &serveConfig{maxBatch: 8, maxQueueDelay: 2 * time.Millisecond, maxQueue: 256, priorityLevels: 1}
	got := batchConfig(models.Batching{}, cfg)
	want := batching.Config{MaxBatchSize: 8, MaxQueueDelay: 2 * time.Millisecond, MaxQueueRows: 256, PriorityLevels: 1}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("flags only: %+v, want %+v", got, want)
	}
	got = batchConfig(models.Batching{MaxBatchSize: intp(32), MaxQueueDelayUS: intp(500), PreferredBatchSizes: []int{16, 32},
		MaxQueueSize: intp(512), DefaultTimeoutUS: intp(100000), PriorityLevels: intp(2)}, cfg)
	want = batching.Config{MaxBatchSize: 32, MaxQueueDelay: 500 * time.Microsecond, PreferredBatchSizes: []int{16, 32},
		MaxQueueRows: 512, DefaultTimeout: 100 * time.Millisecond, PriorityLevels: 2}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("config.yaml: %+v, want %+v", got, want)
	}
}

func TestWarmupSizes(t *testing.T) {
	tests := []struct {
		provider string
		sizes    []int
		want     []int
	}{
		{runtime.ProviderCPU, []int{1}, []int{1}},
		{runtime.ProviderCPU, []int{1, 2}, []int{1, 2}},
		{runtime.ProviderCPU, []int{1, 2, 3, 4}, []int{1, 4}},
		{runtime.ProviderCUDA, []int{1}, []int{1}},
		{runtime.ProviderCUDA, []int{1, 2, 3, 4}, []int{1, 2, 3, 4}},
		{runtime.ProviderCUDA, runtime.BucketSizes(64), runtime.BucketSizes(64)},
	}
	for _, tt := range tests {
		if got := warmupSizes(tt.provider, tt.sizes); !slices.Equal(got, tt.want) {
			t.Errorf("warmupSizes(%s, %v) = %v, want %v", tt.provider, tt.sizes, got, tt.want)
		}
	}
}

// With buckets, an instance opens one session per bucket size and a
// batch of any size up to the largest gives the rows its sizes' plain
// sessions give. (The CPU stands in for CUDA here: newInstance's caller
// decides when buckets are used.)
func TestNewInstanceBuckets(t *testing.T) {
	env := cpuEnv(t)
	path := filepath.Join("..", "..", "models", "fashion-resnet", "3", "model.onnx")
	var opened []*runtime.Session
	open := func() (*runtime.Session, error) {
		s, err := env.NewSession(path, runtime.SessionOptions{Threads: 1})
		if err == nil {
			opened = append(opened, s)
		}
		return s, err
	}
	t.Cleanup(func() {
		for _, s := range opened {
			s.Close()
		}
	})
	first, err := open()
	if err != nil {
		t.Fatal(err)
	}
	plain, err := newInstance(first, open, 12, false, false)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if len(opened) != 1 || len(plain.sizes) != 12 {
		t.Fatalf("without buckets: %d sessions, sizes %v", len(opened), plain.sizes)
	}
	inst, err := newInstance(first, open, 12, true, false)
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	if want := []int{1, 2, 4, 8, 12}; !slices.Equal(inst.sizes, want) || len(opened) != 1+len(want)-1 {
		t.Fatalf("with buckets: sizes %v (want %v), %d sessions opened", inst.sizes, want, len(opened))
	}
	if plain.Slots() != 1 || inst.Slots() != 1 {
		t.Fatalf("unstaged instances have %d and %d input slots", plain.Slots(), inst.Slots())
	}
	// Staged, plain and bucketed: slot 1 runs like slot 0.
	stagedPlain, err := newInstance(first, open, 12, false, true)
	if err != nil {
		t.Fatal(err)
	}
	defer stagedPlain.Close()
	stagedBuckets, err := newInstance(first, open, 12, true, true)
	if err != nil {
		t.Fatal(err)
	}
	defer stagedBuckets.Close()
	for _, st := range []instance{stagedPlain, stagedBuckets} {
		if st.Slots() != 2 {
			t.Fatalf("a staged instance has %d input slots", st.Slots())
		}
	}
	n := first.InputLen()
	for _, rows := range []int{1, 3, 5, 12, 2} {
		for i := range rows * n {
			v := float32((i*7+rows)%255) / 255
			dtype.Float32s(inst.Input(rows))[i] = v
			dtype.Float32s(plain.Input(rows))[i] = v
		}
		if err := inst.Run(rows); err != nil {
			t.Fatal(err)
		}
		if err := plain.Run(rows); err != nil {
			t.Fatal(err)
		}
		want := plain.Output(rows)
		same := func(what string, got []float32) {
			t.Helper()
			for i := range want {
				if d := got[i] - want[i]; d > 1e-4 || d < -1e-4 || got[i] != got[i] {
					t.Fatalf("rows %d, output %d: %s %v, plain %v", rows, i, what, got[i], want[i])
				}
			}
		}
		same("bucketed", inst.Output(rows))
		for _, st := range []struct {
			name string
			inst instance
		}{{"staged", stagedPlain}, {"staged bucketed", stagedBuckets}} {
			copy(st.inst.InputSlot(1, rows), plain.Input(rows))
			clear(st.inst.InputSlot(0, rows)) // slot 0 holds other rows
			if err := st.inst.RunSlot(1, rows); err != nil {
				t.Fatal(err)
			}
			same(st.name+" slot 1", st.inst.Output(rows))
		}
	}
}

func TestStagedChoice(t *testing.T) {
	for _, tc := range []struct {
		mode  string
		onGPU bool
		want  bool
	}{
		{stageAuto, true, true}, {stageAuto, false, false},
		{stageOn, false, true}, {stageOn, true, true},
		{stageOff, true, false}, {stageOff, false, false},
	} {
		if got := staged(tc.mode, tc.onGPU); got != tc.want {
			t.Errorf("staged(%q, GPU %v) = %v, want %v", tc.mode, tc.onGPU, got, tc.want)
		}
	}
}

// inputSpec reads the layout from the input shape unless config.yaml
// gives it, and the row shape the session runs follows it.
func TestInputSpec(t *testing.T) {
	imagenet := func(mod func(p *models.Preprocess)) models.Config {
		p := models.ImageNet()
		if mod != nil {
			mod(&p)
		}
		return models.Config{Preprocess: &p}
	}
	gray := func(p *models.Preprocess) {
		p.Color, p.Resize, p.Crop, p.Mean, p.Std = "gray", 28, 28, []float32{0.5}, []float32{0.5}
	}
	tests := []struct {
		name    string
		cfg     models.Config
		shape   []int64
		layout  string
		row     []int64
		wantErr string
	}{
		{"nchw", imagenet(nil), []int64{-1, 3, 224, 224}, "nchw", []int64{3, 224, 224}, ""},
		{"nhwc", imagenet(nil), []int64{-1, 224, 224, 3}, "nhwc", []int64{224, 224, 3}, ""},
		{"nhwc, dynamic size", imagenet(nil), []int64{-1, -1, -1, 3}, "nhwc", []int64{224, 224, 3}, ""},
		{"nchw, dynamic size", imagenet(nil), []int64{-1, 3, -1, -1}, "nchw", []int64{3, 224, 224}, ""},
		{"gray nchw", imagenet(gray), []int64{-1, 1, 28, 28}, "nchw", []int64{1, 28, 28}, ""},
		{"gray nhwc", imagenet(gray), []int64{-1, 28, 28, 1}, "nhwc", []int64{28, 28, 1}, ""},
		{"layout given", imagenet(func(p *models.Preprocess) { p.Layout = "nhwc" }), []int64{-1, 3, 224, 224}, "", nil,
			"preprocess.color rgb gives 3 channels; input x of shape [-1 3 224 224] has 224 as NHWC: set preprocess.layout"},
		{"colour mismatch", imagenet(gray), []int64{-1, 3, 28, 28}, "", nil, "gives 1 channels; input x of shape [-1 3 28 28] has 3 as NCHW: set preprocess.color: rgb or bgr"},
		{"a grey model, ImageNet's colour", imagenet(nil), []int64{-1, 1, 28, 28}, "", nil, "has 1 as NCHW: set preprocess.color: gray"},
		{"crop mismatch", imagenet(nil), []int64{-1, 256, 256, 3}, "", nil, "preprocess.crop 224 does not match"},
		{"not an image", imagenet(nil), []int64{-1, 150528}, "", nil, "takes [N, C, H, W] or [N, H, W, C]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, row, err := inputSpec(tt.cfg, []runtime.TensorInfo{{Name: "x", DataType: "FP32", Shape: tt.shape}})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || spec.Layout != tt.layout || !slices.Equal(row, tt.row) {
				t.Errorf("layout %q, row %v, %v; want %q, %v", spec.Layout, row, err, tt.layout, tt.row)
			}
		})
	}
}

// Without a preprocess section, the crop is the model's input size and the
// resize keeps ImageNet's 224-of-256 ratio; a section's own crop and
// resize are kept as written.
func TestImplicitPreprocess(t *testing.T) {
	implicit, err := models.ParseConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	explicit, err := models.ParseConfig([]byte("preprocess: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name         string
		cfg          models.Config
		shape        []int64
		resize, crop int
	}{
		{"224", implicit, []int64{-1, 3, 224, 224}, 256, 224},
		{"inception 299", implicit, []int64{-1, 3, 299, 299}, 342, 299},
		{"384, NHWC", implicit, []int64{1, 384, 384, 3}, 439, 384},
		{"dynamic size", implicit, []int64{-1, 3, -1, -1}, 256, 224},
		{"a section without sizes", explicit, []int64{-1, 3, 299, 299}, 299, 299},
	} {
		t.Run(tt.name, func(t *testing.T) {
			spec, _, err := inputSpec(tt.cfg, []runtime.TensorInfo{{Name: "x", DataType: "FP32", Shape: tt.shape}})
			if err != nil || spec.Resize != tt.resize || spec.Crop != tt.crop {
				t.Errorf("resize %d, crop %d, %v; want %d, %d", spec.Resize, spec.Crop, err, tt.resize, tt.crop)
			}
		})
	}
}

// A UINT8 input takes pixel values: without a preprocess section, or with
// one that leaves scale, mean and std alone (or says scale: 1), the
// preprocessing passes 0..255 through; a normalisation asked for is
// refused, since the input cannot hold its results.
func TestInputSpecUINT8(t *testing.T) {
	for _, tt := range []struct {
		name, yaml string
		wantErr    string
	}{
		{"no section", "", ""},
		{"sizes only", "preprocess: {resize: 256, crop: 224}\n", ""},
		{"scale 1", "preprocess: {scale: 1}\n", ""},
		{"mean", "preprocess: {mean: [0.5, 0.5, 0.5]}\n", "input x is UINT8, pixel values 0..255: remove preprocess.scale, mean and std"},
		{"std", "preprocess: {std: [2]}\n", "input x is UINT8"},
		{"scale", "preprocess: {scale: 0.5}\n", "input x is UINT8"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := models.ParseConfig([]byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			spec, _, err := inputSpec(cfg, []runtime.TensorInfo{{Name: "x", DataType: "UINT8", Shape: []int64{-1, 224, 224, 3}}})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || spec.Scale != 1 || spec.Mean != nil || spec.Std != nil || spec.Crop != 224 {
				t.Errorf("spec %+v, %v; want scale 1, no mean or std, crop 224", spec, err)
			}
		})
	}
}

// instance_groups end to end: a GPU group and a CPU group on a machine
// without a GPU give three instances, all on the CPU (the GPU one says
// why), behind one queue, and /config reports where they run.
func TestServeInstanceGroups(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	repo := fashionRepoWith(t, "instance_groups:\n  - {kind: gpu, count: 1}\n  - {kind: cpu, count: 2}\n")
	base, logs, stop := startServe(t, repo)
	defer stop()
	if !strings.Contains(logs.String(), `instances="3 on cpu"`) {
		t.Errorf("the load's log does not say where the instances run:\n%s", logs)
	}
	get := func(path string) string {
		r, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return string(b)
	}
	if info := get("/v1/models/fashion-resnet"); !strings.Contains(info, `"instances":3`) {
		t.Errorf("model info: %s", info)
	}
	if cfg := get("/v2/models/fashion-resnet/config"); !strings.Contains(cfg, `"instance_group":[{"name":"fashion-resnet","kind":"KIND_CPU","count":3}]`) {
		t.Errorf("config: %s", cfg)
	}
}
