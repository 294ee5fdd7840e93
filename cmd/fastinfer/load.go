package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"fastinfer/batching"
	"fastinfer/models"
	"fastinfer/runtime"
	"fastinfer/server"
	"fastinfer/vision"
)

// loadedModel is a served model and the session to close at exit.
type loadedModel struct {
	model   *server.Model
	session io.Closer
}

// loadRepository loads the served version of every model in the
// repository. A model that fails is reported and skipped; the rest serve.
func loadRepository(env *runtime.Env, cfg *serveConfig, log *slog.Logger) ([]loadedModel, []error) {
	ms, errs, err := models.Scan(cfg.models)
	if err != nil {
		return nil, []error{err}
	}
	var out []loadedModel
	for _, m := range ms {
		start := time.Now()
		l, err := loadModel(env, m, cfg)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		sm := l.model
		log.Info("model loaded", "model", sm.Name, "version", sm.Version, "provider", sm.Provider,
			"input", fmt.Sprint(sm.Inputs[0].Name, sm.Inputs[0].Shape), "classes", sm.Classes,
			"labels", len(sm.Labels), "load_ms", time.Since(start).Milliseconds())
		out = append(out, l)
	}
	return out, errs
}

// loadModel opens m's latest version, ties its preprocessing to the model's
// input shape, and runs one warm-up inference before it may take traffic.
func loadModel(env *runtime.Env, m models.Model, cfg *serveConfig) (loadedModel, error) {
	v := m.Latest()
	fail := func(path string, err error) (loadedModel, error) {
		return loadedModel{}, &models.LoadError{Model: m.Name, Path: path, Err: err}
	}
	cfgPath := filepath.Join(m.Dir, models.ConfigFile)
	ins, _, err := env.Inspect(v.Path)
	if err != nil {
		return fail(v.Path, err)
	}
	spec, rowShape, err := inputSpec(m.Config, ins)
	if err != nil {
		return fail(cfgPath, err)
	}
	sess, err := env.NewSession(v.Path, runtime.SessionOptions{Input: m.Config.Input, Output: m.Config.Output, RowShape: rowShape})
	if err != nil {
		return fail(v.Path, err)
	}
	pre, err := vision.New(spec, vision.Options{MaxPixels: cfg.maxPixels})
	if err != nil {
		sess.Close()
		return fail(cfgPath, err)
	}
	if len(m.Labels) > 0 && len(m.Labels) != sess.OutputLen() {
		sess.Close()
		return fail(filepath.Join(m.Dir, m.Config.Labels), fmt.Errorf("%d labels for %d model outputs", len(m.Labels), sess.OutputLen()))
	}
	sched := batching.New(sess, batching.Options{Instances: cfg.instances, MaxQueue: cfg.maxQueue})
	sm := &server.Model{
		Name: m.Name, Version: v.Number, Platform: "onnxruntime_onnx",
		Provider: sess.Provider(), ProviderNote: sess.FallbackReason(),
		Inputs: tensors(sess.Inputs()), Outputs: tensors(sess.Outputs()),
		Labels: m.Labels, Classes: sess.OutputLen(), InputLen: sess.InputLen(),
		Preprocessing: models.Preprocess{Resize: spec.Resize, Crop: spec.Crop, Color: spec.Color, Scale: spec.Scale, Mean: spec.Mean, Std: spec.Std},
		Preprocess: func(img []byte, dst []float32) error {
			_, err := pre.Into(img, dst)
			return err
		},
		Infer: sched.Do,
	}
	if sm.InputLen != spec.Len() {
		sess.Close()
		return fail(cfgPath, fmt.Errorf("preprocessing makes %d floats per image, the model takes %d", spec.Len(), sm.InputLen))
	}
	// Warm-up: the first run allocates arenas and (on CUDA) picks kernels.
	in := make([]float32, sm.InputLen)
	out := make([]float32, sm.Classes)
	if _, err := sched.Do(context.Background(), in, 1, out); err != nil {
		sess.Close()
		return fail(v.Path, fmt.Errorf("warm-up inference: %w", err))
	}
	return loadedModel{model: sm, session: closerFunc(sess.Close)}, nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// inputSpec derives the preprocessing from config.yaml and the model's
// [N, C, H, W] input: the crop defaults to H, channels must match the colour
// mode, and dynamic H/W are filled from the crop.
func inputSpec(c models.Config, ins []runtime.TensorInfo) (vision.Spec, []int64, error) {
	var in *runtime.TensorInfo
	for i := range ins {
		if c.Input == "" || ins[i].Name == c.Input {
			in = &ins[i]
			break
		}
	}
	if in == nil {
		return vision.Spec{}, nil, fmt.Errorf("input %q not in the model", c.Input)
	}
	if len(in.Shape) != 4 {
		return vision.Spec{}, nil, fmt.Errorf("input %s has shape %v; an image classifier takes [N, C, H, W]", in.Name, in.Shape)
	}
	p := *c.Preprocess
	ch, h, w := in.Shape[1], in.Shape[2], in.Shape[3]
	if p.Crop == 0 {
		if h < 0 {
			return vision.Spec{}, nil, errors.New("model input height is dynamic: set preprocess.crop")
		}
		p.Crop = int(h)
	}
	if p.Resize == 0 {
		p.Resize = p.Crop
	}
	spec := vision.Spec{Resize: p.Resize, Crop: p.Crop, Color: p.Color, Scale: p.Scale, Mean: p.Mean, Std: p.Std}
	if want := int64(spec.Channels()); ch >= 0 && ch != want {
		return vision.Spec{}, nil, fmt.Errorf("preprocess.color %s gives %d channels; input %s has %d", p.Color, want, in.Name, ch)
	}
	for _, d := range []int64{h, w} {
		if d >= 0 && d != int64(p.Crop) {
			return vision.Spec{}, nil, fmt.Errorf("preprocess.crop %d does not match input %s of shape %v", p.Crop, in.Name, in.Shape)
		}
	}
	if err := spec.Validate(); err != nil {
		return vision.Spec{}, nil, err
	}
	return spec, []int64{int64(spec.Channels()), int64(p.Crop), int64(p.Crop)}, nil
}

func tensors(ts []runtime.TensorInfo) []server.Tensor {
	out := make([]server.Tensor, len(ts))
	for i, t := range ts {
		out[i] = server.Tensor{Name: t.Name, Datatype: t.DataType, Shape: t.Shape}
	}
	return out
}
