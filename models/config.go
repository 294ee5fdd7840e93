package models

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"

	"gopkg.in/yaml.v3"
)

// Preprocess says how an uploaded image becomes the model's input tensor.
type Preprocess struct {
	Resize int       `yaml:"resize" json:"resize"` // shorter side before the crop; 0 = the crop size
	Crop   int       `yaml:"crop" json:"crop"`     // centre square crop; 0 = the model's input height
	Color  string    `yaml:"color" json:"color"`   // rgb | bgr | gray
	Scale  float32   `yaml:"scale" json:"scale"`   // multiplies 0..255 first
	Mean   []float32 `yaml:"mean" json:"mean"`
	Std    []float32 `yaml:"std" json:"std"`
	// Layout is nchw (channel planes) or nhwc (interleaved, as models
	// converted from TensorFlow take); "" reads it from the input shape.
	Layout string `yaml:"layout" json:"layout,omitempty"`
	// Implicit is set when config.yaml has no preprocess section: then
	// the crop follows the model's input size and the resize keeps
	// ImageNet's 224-of-256 ratio, so a 299 or 384 model needs no config.
	Implicit bool `yaml:"-" json:"-"`
}

// ImageNetCropRatio is the crop's share of the resize in ImageNet's
// evaluation (224 of 256; torchvision's Inception v3, 299 of 342).
const ImageNetCropRatio = 0.875

// Batching is a model's dynamic batching policy. Nil fields take the
// server-wide defaults (flags).
type Batching struct {
	MaxBatchSize        *int  `yaml:"max_batch_size" json:"max_batch_size,omitempty"`
	MaxQueueDelayUS     *int  `yaml:"max_queue_delay_us" json:"max_queue_delay_us,omitempty"`
	PreferredBatchSizes []int `yaml:"preferred_batch_sizes" json:"preferred_batch_sizes,omitempty"`
	MaxQueueSize        *int  `yaml:"max_queue_size" json:"max_queue_size,omitempty"`
	DefaultTimeoutUS    *int  `yaml:"default_timeout_us" json:"default_timeout_us,omitempty"`
	PriorityLevels      *int  `yaml:"priority_levels" json:"priority_levels,omitempty"`
}

// Instances says how many execution instances a model gets, and where.
type Instances struct {
	Count *int   `yaml:"count" json:"count,omitempty"` // per GPU on GPU, in all on CPU
	Kind  string `yaml:"kind" json:"kind,omitempty"`   // auto | gpu | cpu
	GPUs  []int  `yaml:"gpus" json:"gpus,omitempty"`   // empty = all
}

// Config is a model's config.yaml. JSON is valid YAML, so a JSON file parses
// too.
type Config struct {
	Input      string      `yaml:"input" json:"input,omitempty"`
	Output     string      `yaml:"output" json:"output,omitempty"`
	Labels     string      `yaml:"labels" json:"labels,omitempty"`
	Preprocess *Preprocess `yaml:"preprocess" json:"preprocess,omitempty"`
	Batching   Batching    `yaml:"batching" json:"batching,omitempty"`
	Instances  Instances   `yaml:"instances" json:"instances,omitempty"`
	// InstanceGroups, instead of Instances, places instances as Triton's
	// instance_group list does: each group its own count, kind and GPUs
	// (3 instances on one GPU and 1 on another, or GPU and CPU instances
	// side by side), all behind the model's one queue.
	InstanceGroups []Instances `yaml:"instance_groups" json:"instance_groups,omitempty"`
	// Precision is fp32 (the model as it is; "" means the same) or fp16:
	// the server loads a float16 copy (models/fp16; float32 inputs and
	// outputs kept). Meant for GPUs, where float16 halves memory traffic;
	// on the CPU, ONNX Runtime runs it through float32 casts, slower.
	Precision string `yaml:"precision" json:"precision,omitempty"`
	// Scores is logits (the server applies softmax) or probabilities (the
	// output values are the scores); "" detects it from the graph
	// (DetectScores).
	Scores string `yaml:"scores" json:"scores,omitempty"`
	// VersionPolicy chooses the versions served; the zero value serves
	// the latest.
	VersionPolicy VersionPolicy `yaml:"version_policy" json:"version_policy,omitzero"`
}

// Precisions (Config.Precision).
const (
	PrecisionFP32 = "fp32"
	PrecisionFP16 = "fp16"
)

// ImageNet is the preprocessing used when config.yaml has none: what
// torchvision's ImageNet classifiers (and most ONNX model zoo ResNets) want.
func ImageNet() Preprocess {
	return Preprocess{
		Resize: 256, Crop: 224, Color: "rgb", Scale: 1.0 / 255,
		Mean: []float32{0.485, 0.456, 0.406},
		Std:  []float32{0.229, 0.224, 0.225},
	}
}

// ParseConfig parses config.yaml strictly: unknown keys are errors, so a
// typo ("preproces") is reported instead of silently ignored.
func ParseConfig(data []byte) (Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, err
	}
	if c.Preprocess == nil {
		p := ImageNet()
		p.Implicit = true
		c.Preprocess = &p
	}
	p := c.Preprocess
	if p.Color == "" {
		p.Color = "rgb"
	}
	p.Color = strings.ToLower(p.Color)
	if p.Scale == 0 {
		p.Scale = 1.0 / 255
	}
	return c, c.validate()
}

func (c Config) validate() error {
	p := c.Preprocess
	var errs []error
	switch p.Color {
	case "rgb", "bgr", "gray":
	default:
		errs = append(errs, fmt.Errorf("preprocess.color %q: want rgb, bgr or gray", p.Color))
	}
	switch p.Layout {
	case "", "nchw", "nhwc":
	default:
		errs = append(errs, fmt.Errorf("preprocess.layout %q: want nchw or nhwc", p.Layout))
	}
	if p.Resize < 0 || p.Crop < 0 {
		errs = append(errs, fmt.Errorf("preprocess.resize %d and crop %d must not be negative", p.Resize, p.Crop))
	}
	if p.Resize > 0 && p.Crop > p.Resize {
		errs = append(errs, fmt.Errorf("preprocess.crop %d is larger than resize %d", p.Crop, p.Resize))
	}
	if p.Resize > 8192 || p.Crop > 8192 {
		errs = append(errs, fmt.Errorf("preprocess sizes over 8192 are not supported"))
	}
	channels := 3
	if p.Color == "gray" {
		channels = 1
	}
	for _, v := range []struct {
		name string
		vals []float32
	}{{"mean", p.Mean}, {"std", p.Std}} {
		if n := len(v.vals); n != 0 && n != 1 && n != channels {
			errs = append(errs, fmt.Errorf("preprocess.%s has %d values; want 1 or %d", v.name, n, channels))
		}
	}
	for _, s := range p.Std {
		if s == 0 {
			errs = append(errs, errors.New("preprocess.std must not contain 0"))
			break
		}
	}
	errs = append(errs, c.Batching.validate(), c.Instances.validate("instances"))
	if len(c.InstanceGroups) > 0 && (c.Instances.Count != nil || c.Instances.Kind != "" || len(c.Instances.GPUs) > 0) {
		errs = append(errs, errors.New("instances and instance_groups: give one or the other"))
	}
	for i, g := range c.InstanceGroups {
		errs = append(errs, g.validate(fmt.Sprintf("instance_groups[%d]", i)))
	}
	switch c.Precision {
	case "", PrecisionFP32, PrecisionFP16:
	default:
		errs = append(errs, fmt.Errorf("precision %q: want fp32 or fp16", c.Precision))
	}
	switch c.Scores {
	case "", ScoresLogits, ScoresProbabilities:
	default:
		errs = append(errs, fmt.Errorf("scores %q: want logits or probabilities", c.Scores))
	}
	// A control character (a newline, NUL) names no sensible file, and
	// YAML cannot write a name that is only a newline back (found by
	// FuzzParseConfig).
	if strings.ContainsAny(c.Labels, `/\`) || c.Labels == ".." || strings.ContainsFunc(c.Labels, unicode.IsControl) {
		errs = append(errs, fmt.Errorf("labels %q must be a file name in the model folder", c.Labels))
	}
	return errors.Join(errs...)
}

func (b Batching) validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    *int
		max  int
	}{
		{"max_batch_size", b.MaxBatchSize, 4096},
		{"max_queue_delay_us", b.MaxQueueDelayUS, 10_000_000},
		{"max_queue_size", b.MaxQueueSize, 1 << 24},
		{"default_timeout_us", b.DefaultTimeoutUS, 3_600_000_000},
		{"priority_levels", b.PriorityLevels, 16},
	} {
		if f.v != nil && (*f.v < 0 || *f.v > f.max) {
			errs = append(errs, fmt.Errorf("batching.%s %d: want 0..%d", f.name, *f.v, f.max))
		}
	}
	for _, p := range b.PreferredBatchSizes {
		if p < 1 || (b.MaxBatchSize != nil && *b.MaxBatchSize > 1 && p > *b.MaxBatchSize) {
			errs = append(errs, fmt.Errorf("batching.preferred_batch_sizes: %d is outside 1..max_batch_size", p))
		}
	}
	return errors.Join(errs...)
}

func (in Instances) validate(what string) error {
	var errs []error
	if in.Count != nil && (*in.Count < 1 || *in.Count > 64) {
		errs = append(errs, fmt.Errorf("%s.count %d: want 1..64", what, *in.Count))
	}
	switch in.Kind {
	case "", "auto", "gpu", "cpu":
	default:
		errs = append(errs, fmt.Errorf("%s.kind %q: want auto, gpu or cpu", what, in.Kind))
	}
	for _, g := range in.GPUs {
		if g < 0 {
			errs = append(errs, fmt.Errorf("%s.gpus: %d is not a device index", what, g))
		}
	}
	return errors.Join(errs...)
}

// Groups are the model's instance groups: InstanceGroups, or Instances as
// the one group.
func (c Config) Groups() []Instances {
	if len(c.InstanceGroups) > 0 {
		return c.InstanceGroups
	}
	return []Instances{c.Instances}
}

// ReadLabels reads one label per line; line i names class i. Trailing blank
// lines are dropped, inner ones kept (a class may have no name).
func ReadLabels(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	// Windows editors may start the file with a UTF-8 byte-order mark.
	text := strings.TrimPrefix(string(b), "\ufeff")
	lines := strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n")
	for len(lines) > 0 && strings.TrimSpace(lines[len(lines)-1]) == "" {
		lines = lines[:len(lines)-1]
	}
	for i, l := range lines {
		lines[i] = strings.TrimSpace(l)
	}
	return lines, nil
}
