package models

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// TritonConfigFile is Triton's model configuration, read when a model
// folder has no config.yaml: a Triton repository serves as it is.
const TritonConfigFile = "config.pbtxt"

// ParseTritonConfig maps the parts of Triton's config.pbtxt (ModelConfig
// in protobuf's text format) that mean something here onto a Config, and
// names every field it leaves unused in the notes, so that nothing in it is
// dropped without a word. Triton has no image preprocessing in its
// configuration, so the preprocessing is ImageNet's, sized to the model;
// an input's format (FORMAT_NHWC or FORMAT_NCHW) gives the layout.
func ParseTritonConfig(b []byte, folder string) (Config, []string, error) {
	msg, err := parseText(b)
	if err != nil {
		return Config{}, nil, err
	}
	c, err := ParseConfig(nil)
	if err != nil {
		return Config{}, nil, err
	}
	t := &tritonMapper{}
	var errs []error
	for _, f := range msg {
		if err := t.top(&c, f, folder); err != nil {
			errs = append(errs, fmt.Errorf("line %d: %s: %w", f.line, f.name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, nil, err
	}
	// One group is config.yaml's instances section; several, its
	// instance_groups.
	switch len(t.groups) {
	case 0:
	case 1:
		c.Instances = t.groups[0]
	default:
		c.InstanceGroups = t.groups
	}
	if err := c.validate(); err != nil {
		return Config{}, nil, err
	}
	return c, t.notes(), nil
}

type tritonMapper struct {
	ignored []string    // fields not used, as dotted paths
	other   []string    // other notes
	groups  []Instances // instance_group entries, in order
}

func (t *tritonMapper) notes() []string {
	var n []string
	if len(t.ignored) > 0 {
		slices.Sort(t.ignored)
		n = append(n, "ignored (no equivalent here): "+strings.Join(slices.Compact(t.ignored), ", "))
	}
	return append(n, t.other...)
}

func (t *tritonMapper) top(c *Config, f textField, folder string) error {
	switch f.name {
	case "name":
		if s, _ := f.value.(string); s != folder {
			t.other = append(t.other, fmt.Sprintf("name %q differs from the folder's; the model is served as %q", s, folder))
		}
	case "platform", "backend":
		s, _ := f.value.(string)
		if s != "onnxruntime_onnx" && s != "onnxruntime" {
			return fmt.Errorf("%q: fastinfer serves ONNX models through ONNX Runtime (platform onnxruntime_onnx, backend onnxruntime)", s)
		}
	case "max_batch_size":
		n, err := textInt(f)
		if err != nil {
			return err
		}
		c.Batching.MaxBatchSize = &n
	case "input", "output":
		ms, err := elems(f)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if err := t.tensor(c, m, f.name == "input", f.line); err != nil {
				return err
			}
		}
	case "dynamic_batching":
		return t.each(f, func(g textField) error { return t.batching(c, g) })
	case "instance_group":
		ms, err := elems(f)
		if err != nil {
			return err
		}
		for _, m := range ms {
			var g Instances
			if err := t.each(textField{value: m}, func(h textField) error { return t.instances(&g, h) }); err != nil {
				return err
			}
			t.groups = append(t.groups, g)
		}
	case "version_policy":
		return t.each(f, func(g textField) error { return t.versions(c, g) })
	case "default_model_filename":
		if s, _ := f.value.(string); s != ModelFile {
			return fmt.Errorf("%q: fastinfer loads each version's %s", s, ModelFile)
		}
	default:
		t.ignored = append(t.ignored, f.name)
	}
	return nil
}

// elems is f's message, or each message of its list form.
func elems(f textField) ([]textMsg, error) {
	switch v := f.value.(type) {
	case textMsg:
		return []textMsg{v}, nil
	case []any:
		var msgs []textMsg
		for _, x := range v {
			m, ok := x.(textMsg)
			if !ok {
				return nil, errors.New("want a message")
			}
			msgs = append(msgs, m)
		}
		return msgs, nil
	}
	return nil, errors.New("want a message")
}

// each calls fn on every field of f's message value(s).
func (t *tritonMapper) each(f textField, fn func(textField) error) error {
	msgs, err := elems(f)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		for _, g := range m {
			if err := fn(g); err != nil {
				return fmt.Errorf("%s: %w", g.name, err)
			}
		}
	}
	return nil
}

// tensor reads an input or output entry. Triton lists the tensors it
// serves; fastinfer serves one input and one output.
func (t *tritonMapper) tensor(c *Config, m textMsg, input bool, line int) error {
	which := "output"
	if input {
		which = "input"
	}
	var name, format, labels string
	err := t.each(textField{value: m}, func(g textField) error {
		switch g.name {
		case "name":
			name, _ = g.value.(string)
		case "data_type":
			// As runtime.Session serves them; the model's own type is
			// what it runs with, and a mismatch fails at load.
			s, _ := g.value.(string)
			if ok := s == "TYPE_FP32" || s == "TYPE_FP16" || input && s == "TYPE_UINT8"; !ok {
				if input {
					return fmt.Errorf("%s: fastinfer serves FP32, FP16 or UINT8 inputs", s)
				}
				return fmt.Errorf("%s: fastinfer serves FP32 or FP16 outputs", s)
			}
		case "format":
			format, _ = g.value.(string)
		case "label_filename":
			labels, _ = g.value.(string)
		case "dims", "reshape":
			// The model's own shape is used; a mismatch fails at load.
		default:
			t.ignored = append(t.ignored, which+"."+g.name)
		}
		return nil
	})
	if err != nil {
		return err
	}
	field := &c.Output
	if input {
		field = &c.Input
	}
	if *field != "" {
		t.other = append(t.other, fmt.Sprintf("line %d: %s %q is not served: fastinfer serves one %s (%q)", line, which, name, which, *field))
		return nil
	}
	*field = name
	switch format {
	case "", "FORMAT_NONE":
	case "FORMAT_NCHW":
		c.Preprocess.Layout = "nchw"
	case "FORMAT_NHWC":
		c.Preprocess.Layout = "nhwc"
	default:
		return fmt.Errorf("format %s: want FORMAT_NCHW or FORMAT_NHWC", format)
	}
	if labels != "" {
		c.Labels = labels
	}
	return nil
}

func (t *tritonMapper) batching(c *Config, g textField) error {
	b := &c.Batching
	switch g.name {
	case "preferred_batch_size":
		var err error
		b.PreferredBatchSizes, err = textInts(g)
		return err
	case "max_queue_delay_microseconds":
		return setInt(&b.MaxQueueDelayUS, g)
	case "priority_levels":
		return setInt(&b.PriorityLevels, g)
	case "default_queue_policy":
		return t.each(g, func(q textField) error {
			switch q.name {
			case "max_queue_size":
				return setInt(&b.MaxQueueSize, q)
			case "default_timeout_microseconds":
				return setInt(&b.DefaultTimeoutUS, q)
			case "timeout_action":
				if s, _ := q.value.(string); s != "REJECT" {
					t.ignored = append(t.ignored, "dynamic_batching.default_queue_policy.timeout_action "+s+" (requests past their timeout are refused)")
				}
			default:
				t.ignored = append(t.ignored, "dynamic_batching.default_queue_policy."+q.name)
			}
			return nil
		})
	default:
		t.ignored = append(t.ignored, "dynamic_batching."+g.name)
	}
	return nil
}

func (t *tritonMapper) instances(in *Instances, g textField) error {
	switch g.name {
	case "count":
		return setInt(&in.Count, g)
	case "kind":
		switch s, _ := g.value.(string); s {
		case "KIND_GPU":
			in.Kind = "gpu"
		case "KIND_CPU":
			in.Kind = "cpu"
		case "KIND_AUTO":
			in.Kind = "auto"
		default:
			return fmt.Errorf("%s: want KIND_GPU, KIND_CPU or KIND_AUTO", s)
		}
	case "gpus":
		var err error
		in.GPUs, err = textInts(g)
		return err
	default:
		t.ignored = append(t.ignored, "instance_group."+g.name)
	}
	return nil
}

func (t *tritonMapper) versions(c *Config, g textField) error {
	switch g.name {
	case "all":
		c.VersionPolicy = VersionPolicy{All: true}
	case "latest":
		n := 1
		err := t.each(g, func(h textField) error {
			if h.name != "num_versions" {
				return errors.New("want num_versions")
			}
			var err error
			n, err = textInt(h)
			return err
		})
		if err != nil {
			return err
		}
		c.VersionPolicy = VersionPolicy{Latest: n}
	case "specific":
		var vs []int
		err := t.each(g, func(h textField) error {
			if h.name != "versions" {
				return errors.New("want versions")
			}
			var err error
			vs, err = textInts(h)
			return err
		})
		if err != nil {
			return err
		}
		c.VersionPolicy = VersionPolicy{Specific: vs}
	default:
		return errors.New("want latest, all or specific")
	}
	return nil
}

func textInt(f textField) (int, error) {
	s, ok := f.value.(string)
	if !ok {
		return 0, errors.New("want a number")
	}
	n, err := strconv.ParseInt(s, 0, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not an integer", s)
	}
	return int(n), nil
}

// textInts is a repeated integer field: a list, or a single value.
func textInts(f textField) ([]int, error) {
	list, ok := f.value.([]any)
	if !ok {
		list = []any{f.value}
	}
	var out []int
	for _, v := range list {
		n, err := textInt(textField{value: v})
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

func setInt(dst **int, f textField) error {
	n, err := textInt(f)
	if err != nil {
		return err
	}
	*dst = &n
	return nil
}
