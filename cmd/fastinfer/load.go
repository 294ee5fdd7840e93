package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"fastinfer/batching"
	"fastinfer/models"
	"fastinfer/models/fp16"
	"fastinfer/models/onnxpb"
	"fastinfer/monitor/drift"
	"fastinfer/runtime"
	"fastinfer/server"
	"fastinfer/vision"
)

// loadedModel is a served model and what to close at exit.
type loadedModel struct {
	model  *server.Model
	closer io.Closer
	note   string // what the server changed about how it serves the model, and why
}

// placement is where one instance runs.
type placement struct {
	kind    string // runtime.KindCPU or runtime.KindGPU
	device  int    // the CUDA ordinal (GPU) or 0
	threads int    // intra-op threads
}

// planInstances applies config.yaml's instance groups (instances, or
// instance_groups) over the flags: each group on CPU places count
// instances (default 1), on GPU count (default 2) on each listed device
// (default all). The CPU instances of every group split the cores.
func planInstances(groups []models.Instances, flagCount int, flagThreads int, gpus int, cores int) ([]placement, error) {
	var plan []placement
	cpus := 0
	for i, in := range groups {
		what := "instances"
		if len(groups) > 1 {
			what = fmt.Sprintf("instance_groups[%d]", i)
		}
		count := flagCount
		if in.Count != nil {
			count = *in.Count
		}
		kind := in.Kind
		if kind == "" || kind == "auto" {
			kind = runtime.KindCPU
			if gpus > 0 {
				kind = runtime.KindGPU
			}
		}
		if kind == runtime.KindCPU {
			if count <= 0 {
				count = 1
			}
			for range count {
				plan = append(plan, placement{kind: kind})
			}
			cpus += count
			continue
		}
		if count <= 0 {
			count = 2
		}
		devs := in.GPUs
		if len(devs) == 0 {
			for d := range max(gpus, 1) { // kind gpu without a GPU found: device 0, which will fall back
				devs = append(devs, d)
			}
		}
		for _, d := range devs {
			if gpus > 0 && d >= gpus {
				return nil, fmt.Errorf("%s.gpus lists device %d; %d found", what, d, gpus)
			}
			for range count {
				plan = append(plan, placement{kind: kind, device: d, threads: max(flagThreads, 1)})
			}
		}
	}
	threads := flagThreads
	if threads <= 0 {
		threads = max(1, cores/max(cpus, 1))
	}
	for i := range plan {
		if plan[i].kind == runtime.KindCPU {
			plan[i].threads = threads
		}
	}
	return plan, nil
}

// where is an instance as it ended up: on a GPU (device), or on the
// CPU (a GPU instance whose provider fell back counts as the CPU's).
type where struct {
	gpu    bool
	device int
}

// instanceGroups reports where instances run as Triton's instance_group
// does: one group for the CPU's, and the GPUs grouped by how many
// instances each runs.
func instanceGroups(at []where) []server.InstanceGroup {
	cpu, perGPU := 0, map[int]int{}
	var devs []int
	for _, a := range at {
		if !a.gpu {
			cpu++
			continue
		}
		if perGPU[a.device] == 0 {
			devs = append(devs, a.device)
		}
		perGPU[a.device]++
	}
	var groups []server.InstanceGroup
	if cpu > 0 {
		groups = append(groups, server.InstanceGroup{Kind: runtime.KindCPU, Count: cpu})
	}
	slices.Sort(devs)
	for _, d := range devs {
		i := slices.IndexFunc(groups, func(g server.InstanceGroup) bool { return g.Kind == runtime.KindGPU && g.Count == perGPU[d] })
		if i < 0 {
			groups = append(groups, server.InstanceGroup{Kind: runtime.KindGPU, Count: perGPU[d]})
			i = len(groups) - 1
		}
		groups[i].GPUs = append(groups[i].GPUs, d)
	}
	return groups
}

// groupsText says where instances run, for the log: "3 on cpu", "2 each
// on gpu 0,1".
func groupsText(groups []server.InstanceGroup) string {
	var parts []string
	for _, g := range groups {
		if g.Kind != runtime.KindGPU {
			parts = append(parts, fmt.Sprintf("%d on cpu", g.Count))
			continue
		}
		devs := strings.Trim(strings.Join(strings.Fields(fmt.Sprint(g.GPUs)), ","), "[]")
		if len(g.GPUs) == 1 {
			parts = append(parts, fmt.Sprintf("%d on gpu %s", g.Count, devs))
		} else {
			parts = append(parts, fmt.Sprintf("%d each on gpu %s", g.Count, devs))
		}
	}
	return strings.Join(parts, ", ")
}

// batchConfig applies config.yaml's batching section over the flags.
func batchConfig(b models.Batching, cfg *serveConfig) batching.Config {
	pick := func(v *int, def int) int {
		if v != nil {
			return *v
		}
		return def
	}
	us := func(v *int, def time.Duration) time.Duration {
		if v != nil {
			return time.Duration(*v) * time.Microsecond
		}
		return def
	}
	return batching.Config{
		MaxBatchSize:        pick(b.MaxBatchSize, cfg.maxBatch),
		MaxQueueDelay:       us(b.MaxQueueDelayUS, cfg.maxQueueDelay),
		PreferredBatchSizes: b.PreferredBatchSizes,
		MaxQueueRows:        pick(b.MaxQueueSize, cfg.maxQueue),
		DefaultTimeout:      us(b.DefaultTimeoutUS, cfg.defaultTimeout),
		PriorityLevels:      pick(b.PriorityLevels, cfg.priorityLevels),
	}
}

// loadModel opens version v of m on its instances, ties its
// preprocessing to the model's input shape, warms every instance up at
// batch 1 and at the largest batch, and starts its scheduler.
func loadModel(env *runtime.Env, m models.Model, v models.Version, cfg *serveConfig, metrics *batching.Metrics) (lm loadedModel, err error) {
	fail := func(path string, err error) (loadedModel, error) {
		return loadedModel{}, &models.LoadError{Model: m.Name, Path: path, Err: err}
	}
	card, err := v.ReadCard()
	if err != nil {
		return fail(filepath.Join(v.Dir, models.CardFile), err)
	}
	mon, err := driftMonitor(m.Name, v)
	if err != nil {
		return fail(filepath.Join(v.Dir, drift.ReferenceFile), err)
	}
	cfgPath := cmp.Or(m.ConfigPath, filepath.Join(m.Dir, models.ConfigFile))
	ins, _, err := env.Inspect(v.Path)
	if err != nil {
		return fail(v.Path, err)
	}
	var pre *vision.Preprocessor
	spec, rowShape, tensorsOnly, err := imageSpec(m.Config, ins)
	if err != nil {
		return fail(cfgPath, err)
	}
	if tensorsOnly == "" {
		if pre, err = vision.New(spec, vision.Options{MaxPixels: cfg.maxPixels}); err != nil {
			return fail(cfgPath, err)
		}
	}
	plan, err := planInstances(m.Config.Groups(), cfg.instances, cfg.threads, len(env.GPUs().Devices), goruntime.NumCPU())
	if err != nil {
		return fail(cfgPath, err)
	}
	bc := batchConfig(m.Config.Batching, cfg)
	note, err := fixedBatch(ins, m.Config, &bc)
	if err != nil {
		return fail(cfgPath, err)
	}
	maxRows := max(bc.MaxBatchSize, 1)

	var cleanup []func() error
	defer func() {
		if err != nil {
			for i := len(cleanup) - 1; i >= 0; i-- {
				cleanup[i]()
			}
		}
	}()
	var model []byte // nil: the file as it is
	if m.Config.Precision == models.PrecisionFP16 {
		if model, err = float16Copy(v.Path); err != nil {
			return fail(v.Path, err)
		}
	}
	var first *runtime.Session
	var instances []batching.Instance
	stagedAll := true // every instance has two input slots
	var placedAt []where
	for _, pl := range plan {
		open := func() (*runtime.Session, error) {
			sess, err := env.NewSession(v.Path, runtime.SessionOptions{
				Input: m.Config.Input, Output: m.Config.Output, RowShape: rowShape,
				Kind: pl.kind, Device: pl.device, Threads: pl.threads, Model: model,
			})
			if err == nil {
				cleanup = append(cleanup, sess.Close)
			}
			return sess, err
		}
		sess, err := open()
		if err != nil {
			return fail(v.Path, err)
		}
		if first == nil {
			first = sess
		}
		// CUDA graphs always take buckets: serve refuses them without.
		onGPU := runtime.OnGPU(sess.Provider())
		placedAt = append(placedAt, where{onGPU, pl.device})
		inst, err := newInstance(sess, open, maxRows, (cfg.gpuBuckets || sess.Graphs()) && onGPU, staged(cfg.stage, onGPU))
		if err != nil {
			return fail(v.Path, err)
		}
		cleanup = append(cleanup, inst.Close)
		stagedAll = stagedAll && inst.Slots() >= 2
		// Warm-up: the first run of a batch size allocates arenas and, on
		// CUDA, picks kernels; with CUDA graphs the second captures the
		// graph. No request should pay for either.
		passes := 1
		if sess.Graphs() {
			passes = 2
		}
		warm := func() error {
			for _, rows := range warmupSizes(sess.Provider(), inst.sizes) {
				for range passes {
					clear(inst.Input(rows))
					if err := inst.Run(rows); err != nil {
						return fmt.Errorf("warm-up at batch %d: %w", rows, err)
					}
				}
				// The second slot's tensors are made on its first run.
				for slot := 1; slot < inst.Slots(); slot++ {
					clear(inst.InputSlot(slot, rows))
					if err := inst.RunSlot(slot, rows); err != nil {
						return fmt.Errorf("warm-up at batch %d (input slot %d): %w", rows, slot, err)
					}
				}
			}
			return nil
		}
		if runtime.OnGPU(sess.Provider()) {
			// Warmed by its worker, on the one thread it will run on.
			instances = append(instances, pinnedInstance{inst, warm})
			continue
		}
		if err := warm(); err != nil {
			return fail(v.Path, err)
		}
		instances = append(instances, inst)
	}
	if pre != nil && first.InputLen() != spec.Len() {
		return fail(cfgPath, fmt.Errorf("preprocessing makes %d floats per image, the model takes %d", spec.Len(), first.InputLen()))
	}
	if len(m.Labels) > 0 && len(m.Labels) != first.OutputLen() {
		return fail(filepath.Join(m.Dir, m.Config.Labels), fmt.Errorf("%d labels for %d model outputs", len(m.Labels), first.OutputLen()))
	}
	scores, err := modelScores(m.Config, v.Path, first.Output().Name)
	if err != nil {
		return fail(v.Path, err)
	}
	obs := metrics.For(m.Name, fmt.Sprint(v.Number))
	sched, err := batching.New(bc, first.InputBytes(), first.OutputLen(), instances, obs)
	if err != nil {
		return fail(cfgPath, err)
	}
	sc := sched.Config()
	sm := &server.Model{
		Name: m.Name, Version: v.Number, Platform: "onnxruntime_onnx",
		Provider: first.Provider(), ProviderNote: first.FallbackReason(), Precision: cmp.Or(m.Config.Precision, models.PrecisionFP32),
		Scores: scores,
		// Only the tensors served: of a model with several outputs, the one
		// config.yaml names (or the first). Clients such as perf_analyzer
		// ask for every output the metadata lists.
		Inputs: tensors(first.Input()), Outputs: tensors(first.Output()),
		Labels: m.Labels, Classes: first.OutputLen(), InputLen: first.InputLen(), InputDatatype: first.Input().DataType, Card: card,
		Preprocessing: models.Preprocess{Resize: spec.Resize, Crop: spec.Crop, Color: spec.Color, Scale: spec.Scale, Mean: spec.Mean, Std: spec.Std, Layout: spec.Layout},
		Batching: server.BatchingInfo{
			MaxBatchSize: sc.MaxBatchSize, MaxQueueDelayUS: sc.MaxQueueDelay.Microseconds(),
			PreferredBatchSizes: sc.PreferredBatchSizes, MaxQueueSize: sc.MaxQueueRows,
			DefaultTimeoutUS: sc.DefaultTimeout.Microseconds(), PriorityLevels: sc.PriorityLevels,
			Instances: len(instances), ThreadsPerInstance: plan[0].threads, StagedBatches: stagedAll,
		},
		InstanceGroups: instanceGroups(placedAt),
		Infer:          sched.Do, InferBytes: sched.DoBytes, ExecutionStats: obs.Stats,
		Drift: mon,
	}
	if pre != nil {
		sm.Preprocess = func(img []byte, dst []float32, stats bool) (server.ImageStats, error) {
			info, err := pre.Into(img, dst)
			if err != nil || !stats {
				return server.ImageStats{}, err
			}
			st := server.ImageStats{Width: info.Width, Height: info.Height}
			st.Brightness, st.Contrast = spec.Stats(dst)
			return st, nil
		}
		if dt := first.Input().DataType; dt != "FP32" {
			sm.PreprocessBytes = func(img []byte, dst []byte, stats bool) (server.ImageStats, error) {
				info, err := pre.IntoBytes(img, dt, dst)
				if err != nil || !stats {
					return server.ImageStats{}, err
				}
				st := server.ImageStats{Width: info.Width, Height: info.Height}
				st.Brightness, st.Contrast = spec.StatsBytes(dt, dst)
				return st, nil
			}
		}
	} else {
		sm.Preprocessing, sm.ImagesNote = nil, "no preprocessing fits its input ("+tensorsOnly+")"
		note = strings.TrimPrefix(note+"; serves tensors only: "+sm.ImagesNote, "; ")
	}
	closeAll := func() error {
		sched.Close()
		var errs []error
		for i := len(cleanup) - 1; i >= 0; i-- {
			errs = append(errs, cleanup[i]())
		}
		return errors.Join(errs...)
	}
	return loadedModel{model: sm, closer: closerFunc(closeAll), note: note}, nil
}

// fixedBatch fits bc to a served input whose batch dimension is fixed.
// torch.onnx.export writes a batch of 1 unless given a dynamic axis, and
// such a model cannot run two rows at once, so it runs one image per
// execution, and the returned note says so. A config.yaml asking for
// more is an error; the flags' server-wide default is not.
func fixedBatch(ins []runtime.TensorInfo, c models.Config, bc *batching.Config) (string, error) {
	in, err := servedInput(c, ins)
	if err != nil || len(in.Shape) == 0 || in.Shape[0] < 0 {
		return "", err
	}
	const reexport = "re-export it with a dynamic batch axis (torch.onnx.export's dynamic_axes) to batch"
	switch b := in.Shape[0]; {
	case b != 1:
		return "", fmt.Errorf("input %s has a fixed batch of %d (shape %v); fastinfer serves a dynamic batch dimension or a batch of 1: %s", in.Name, b, in.Shape, reexport)
	case c.Batching.MaxBatchSize != nil && *c.Batching.MaxBatchSize > 1:
		return "", fmt.Errorf("batching.max_batch_size %d, but input %s has a fixed batch of 1 (shape %v): %s", *c.Batching.MaxBatchSize, in.Name, in.Shape, reexport)
	case bc.MaxBatchSize > 1:
		bc.MaxBatchSize = 1
		bc.PreferredBatchSizes = nil
		return fmt.Sprintf("input %s has a fixed batch of 1 (shape %v): one image per execution; %s", in.Name, in.Shape, reexport), nil
	}
	return "", nil
}

// modelScores is config.yaml's scores, or what the graph says
// (models.DetectScores) when it is not set.
func modelScores(c models.Config, path, output string) (string, error) {
	if c.Scores != "" {
		return c.Scores, nil
	}
	s, err := models.DetectScores(path, output)
	if err != nil {
		return "", fmt.Errorf("reading whether the outputs are logits or probabilities (set scores in config.yaml): %w", err)
	}
	return s, nil
}

// inputLayout reads an image input's layout from its shape: channels of 1
// or 3 second is NCHW (PyTorch's), otherwise channels of 1 or 3 last is
// NHWC (TensorFlow's, which converted models keep). A shape that says
// neither is taken as NCHW, and the channel check then says why it fails.
func inputLayout(shape []int64) string {
	isCh := func(d int64) bool { return d == 1 || d == 3 }
	if !isCh(shape[1]) && isCh(shape[3]) {
		return vision.LayoutNHWC
	}
	return vision.LayoutNCHW
}

// servedInput is the input config.yaml names, or the model's first.
func servedInput(c models.Config, ins []runtime.TensorInfo) (*runtime.TensorInfo, error) {
	for i := range ins {
		if c.Input == "" || ins[i].Name == c.Input {
			return &ins[i], nil
		}
	}
	return nil, fmt.Errorf("input %q not in the model", c.Input)
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// imageSpec is inputSpec, or why the model takes tensors only. Images
// need preprocessing that fits the input. Without a preprocess section
// (config.yaml has none, or the model came with Triton's config.pbtxt,
// which has no such thing) a model that ImageNet's does not fit, such as
// one with a grey or non-image input, serves tensors only, and says why;
// with one, a misfit is an error.
func imageSpec(c models.Config, ins []runtime.TensorInfo) (spec vision.Spec, row []int64, tensorsOnly string, err error) {
	spec, row, err = inputSpec(c, ins)
	if err != nil && c.Preprocess.Implicit {
		return vision.Spec{}, nil, err.Error(), nil
	}
	return spec, row, "", err
}

// inputSpec derives the preprocessing from config.yaml and the model's
// [N, C, H, W] or [N, H, W, C] input (the layout read from the shape
// unless given): the crop defaults to H (and without a preprocess section
// the resize keeps ImageNet's ratio to it), channels must match the colour
// mode, and dynamic H/W are filled from the crop.
func inputSpec(c models.Config, ins []runtime.TensorInfo) (vision.Spec, []int64, error) {
	in, err := servedInput(c, ins)
	if err != nil {
		return vision.Spec{}, nil, err
	}
	if len(in.Shape) != 4 {
		return vision.Spec{}, nil, fmt.Errorf("input %s has shape %v; an image classifier takes [N, C, H, W] or [N, H, W, C]", in.Name, in.Shape)
	}
	p := *c.Preprocess
	if p.Layout == "" {
		p.Layout = inputLayout(in.Shape)
	}
	ch, h, w := in.Shape[1], in.Shape[2], in.Shape[3]
	if p.Layout == vision.LayoutNHWC {
		h, w, ch = in.Shape[1], in.Shape[2], in.Shape[3]
	}
	if p.Implicit && h > 0 && h == w {
		// No preprocess section: ImageNet's evaluation at the model's size.
		p.Crop = int(h)
		p.Resize = int(math.Round(float64(h) / models.ImageNetCropRatio))
	}
	if p.Crop == 0 {
		if h < 0 {
			return vision.Spec{}, nil, errors.New("model input height is dynamic: set preprocess.crop")
		}
		p.Crop = int(h)
	}
	if p.Resize == 0 {
		p.Resize = p.Crop
	}
	if in.DataType == "UINT8" {
		// Raw pixels: whatever normalisation such a model wants is in its
		// graph. The default scale (1/255, set when none is written) gives
		// way; a normalisation asked for cannot be honoured.
		if !p.Implicit && (len(p.Mean) > 0 || len(p.Std) > 0 || p.Scale != 1 && p.Scale != 1.0/255) {
			return vision.Spec{}, nil, fmt.Errorf("input %s is UINT8, pixel values 0..255: remove preprocess.scale, mean and std (or set scale: 1)", in.Name)
		}
		p.Scale, p.Mean, p.Std = 1, nil, nil
	}
	spec := vision.Spec{Resize: p.Resize, Crop: p.Crop, Color: p.Color, Scale: p.Scale, Mean: p.Mean, Std: p.Std, Layout: p.Layout}
	if want := int64(spec.Channels()); ch >= 0 && ch != want {
		hint := "set preprocess.layout if that is not its layout"
		switch ch {
		case 1:
			hint = "set preprocess.color: gray"
		case 3:
			hint = "set preprocess.color: rgb or bgr"
		}
		return vision.Spec{}, nil, fmt.Errorf("preprocess.color %s gives %d channels; input %s of shape %v has %d as %s: %s",
			p.Color, want, in.Name, in.Shape, ch, strings.ToUpper(p.Layout), hint)
	}
	for _, d := range []int64{h, w} {
		if d >= 0 && d != int64(p.Crop) {
			return vision.Spec{}, nil, fmt.Errorf("preprocess.crop %d does not match input %s of shape %v", p.Crop, in.Name, in.Shape)
		}
	}
	if err := spec.Validate(); err != nil {
		return vision.Spec{}, nil, err
	}
	if p.Layout == vision.LayoutNHWC {
		return spec, []int64{int64(p.Crop), int64(p.Crop), int64(spec.Channels())}, nil
	}
	return spec, []int64{int64(spec.Channels()), int64(p.Crop), int64(p.Crop)}, nil
}

func tensors(ts ...runtime.TensorInfo) []server.Tensor {
	out := make([]server.Tensor, len(ts))
	for i, t := range ts {
		out[i] = server.Tensor{Name: t.Name, Datatype: t.DataType, Shape: t.Shape}
	}
	return out
}

// driftMonitor watches a version against its reference profile, when its
// folder has one (nil, nil otherwise). The profile is taken as this
// folder's, whatever model and version it was made for.
func driftMonitor(name string, v models.Version) (*drift.Monitor, error) {
	p, err := drift.ReadFile(filepath.Join(v.Dir, drift.ReferenceFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	p.Model, p.Version = name, v.Number
	return drift.New(p, drift.Options{})
}

// float16Copy is the model at path converted to float16 in memory, with
// float32 inputs and outputs kept (precision: fp16).
func float16Copy(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b, _, err := float16Model(raw, fp16.Options{})
	if err != nil {
		return nil, fmt.Errorf("precision fp16: %w", err)
	}
	return b, nil
}

// float16Model converts an encoded ONNX model to float16 (models/fp16).
func float16Model(data []byte, o fp16.Options) ([]byte, fp16.Report, error) {
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(data, &m); err != nil {
		return nil, fp16.Report{}, fmt.Errorf("not an ONNX model: %w", err)
	}
	h, r, err := fp16.Convert(&m, o)
	if err != nil {
		return nil, r, err
	}
	b, err := proto.Marshal(h)
	return b, r, err
}

// instance is one worker's executor: a Binding over one session, or on
// CUDA (unless --gpu-buckets=false) Buckets over one session per batch
// size bucket (see runtime.Buckets for why).
type instance struct {
	batching.Instance // a *runtime.Binding or *runtime.Buckets: both batching.Staged
	Close             func() error
	sizes             []int // the batch sizes it runs: every size up to the largest, or the buckets
}

// instance is a batching.Staged, passing on its executor's slots; with
// one slot the scheduler runs it as a plain Instance.
func (i instance) Slots() int { return i.Instance.(batching.Staged).Slots() }
func (i instance) InputSlot(slot, rows int) []byte {
	return i.Instance.(batching.Staged).InputSlot(slot, rows)
}
func (i instance) RunSlot(slot, rows int) error {
	return i.Instance.(batching.Staged).RunSlot(slot, rows)
}

// Values of --stage-batches.
const (
	stageAuto = "auto"
	stageOn   = "on"
	stageOff  = "off"
)

// staged decides --stage-batches for an instance. auto stages GPU
// instances only: there the copy into the batch is time the device idles,
// while on the CPU it competes with the run for the same cores.
func staged(mode string, onGPU bool) bool {
	return mode == stageOn || (mode == stageAuto && onGPU)
}

// pinnedInstance is a CUDA instance: its scheduler worker locks an OS
// thread, runs warm there and then every batch (see batching.Pinned).
type pinnedInstance struct {
	instance
	warm func() error
}

func (p pinnedInstance) Warmup() error { return p.warm() }

// newInstance builds the executor over sess; open makes the further
// sessions buckets need.
func newInstance(sess *runtime.Session, open func() (*runtime.Session, error), maxRows int, buckets, staged bool) (instance, error) {
	if !buckets || maxRows == 1 {
		newB := sess.NewBinding
		if staged {
			newB = sess.NewStagedBinding
		}
		b, err := newB(maxRows)
		if err != nil {
			return instance{}, err
		}
		sizes := make([]int, maxRows)
		for i := range sizes {
			sizes[i] = i + 1
		}
		return instance{Instance: b, Close: b.Close, sizes: sizes}, nil
	}
	sizes := runtime.BucketSizes(maxRows)
	sessions := []*runtime.Session{sess}
	for len(sessions) < len(sizes) {
		s, err := open()
		if err != nil {
			return instance{}, err
		}
		if s.Provider() != sess.Provider() { // the GPU ran out of memory, say
			return instance{}, fmt.Errorf("the session for batch-size bucket %d landed on %s (%s); serve with --gpu-buckets=false to use one session", sizes[len(sessions)], s.Provider(), s.FallbackReason())
		}
		sessions = append(sessions, s)
	}
	newB := runtime.NewBuckets
	if staged {
		newB = runtime.NewStagedBuckets
	}
	b, err := newB(sessions, sizes)
	if err != nil {
		return instance{}, err
	}
	return instance{Instance: b, Close: b.Close, sizes: sizes}, nil
}

// warmupSizes are the batch sizes an instance runs before it takes
// traffic. On CUDA every size it runs: cuDNN picks its algorithms per
// input shape (seconds each with --cuda-conv-search exhaustive), so an
// unwarmed size would stall its first request. On the CPU, where a size
// costs no set-up beyond the arena, 1 and the largest, which sizes the
// arena (warming every size of ResNet-50 up to 32 rows would take 15 s
// here).
func warmupSizes(provider string, sizes []int) []int {
	if runtime.OnGPU(provider) || len(sizes) <= 2 {
		return sizes
	}
	return []int{sizes[0], sizes[len(sizes)-1]}
}
