package models

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

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
}

// Config is a model's config.yaml. JSON is valid YAML, so a JSON file parses
// too.
type Config struct {
	Input      string      `yaml:"input" json:"input,omitempty"`
	Output     string      `yaml:"output" json:"output,omitempty"`
	Labels     string      `yaml:"labels" json:"labels,omitempty"`
	Preprocess *Preprocess `yaml:"preprocess" json:"preprocess,omitempty"`
}

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
	if strings.ContainsAny(c.Labels, `/\`) || c.Labels == ".." {
		errs = append(errs, fmt.Errorf("labels %q must be a file name in the model folder", c.Labels))
	}
	return errors.Join(errs...)
}

// ReadLabels reads one label per line; line i names class i. Trailing blank
// lines are dropped, inner ones kept (a class may have no name).
func ReadLabels(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n")
	for len(lines) > 0 && strings.TrimSpace(lines[len(lines)-1]) == "" {
		lines = lines[:len(lines)-1]
	}
	for i, l := range lines {
		lines[i] = strings.TrimSpace(l)
	}
	return lines, nil
}
