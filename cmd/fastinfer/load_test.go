package main

import (
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
)

func intp(v int) *int { return &v }

func TestPlanInstances(t *testing.T) {
	tests := []struct {
		name       string
		in         models.Instances
		flagCount  int
		threads    int
		gpus       int
		want       instancePlan
		wantErrSub string
	}{
		{name: "cpu default: one instance, all cores", want: instancePlan{kind: "cpu", devices: []int{0}, threads: 8}},
		{name: "cpu count divides cores", in: models.Instances{Count: intp(2)}, want: instancePlan{kind: "cpu", devices: []int{0, 0}, threads: 4}},
		{name: "flag count", flagCount: 3, want: instancePlan{kind: "cpu", devices: []int{0, 0, 0}, threads: 2}},
		{name: "threads flag wins", in: models.Instances{Count: intp(2)}, threads: 1, want: instancePlan{kind: "cpu", devices: []int{0, 0}, threads: 1}},
		{name: "gpu auto: two per device", gpus: 2, want: instancePlan{kind: "gpu", devices: []int{0, 0, 1, 1}, threads: 1}},
		{name: "gpu listed", gpus: 4, in: models.Instances{Count: intp(1), GPUs: []int{2, 3}}, want: instancePlan{kind: "gpu", devices: []int{2, 3}, threads: 1}},
		{name: "cpu forced on gpu machine", gpus: 2, in: models.Instances{Kind: "cpu"}, want: instancePlan{kind: "cpu", devices: []int{0}, threads: 8}},
		{name: "gpu asked, none found", in: models.Instances{Kind: "gpu", Count: intp(1)}, want: instancePlan{kind: "gpu", devices: []int{0}, threads: 1}},
		{name: "missing device", gpus: 1, in: models.Instances{GPUs: []int{1}}, wantErrSub: "device 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := planInstances(tt.in, tt.flagCount, tt.threads, tt.gpus, 8)
			if tt.wantErrSub != "" {
				if err == nil {
					t.Fatalf("plan = %+v, want error", got)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("plan = %+v, %v; want %+v", got, err, tt.want)
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
