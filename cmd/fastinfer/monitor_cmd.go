package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"path/filepath"
	"strconv"

	"fastinfer/models"
	"fastinfer/monitor/drift"
	"fastinfer/runtime"
	"fastinfer/train/data"
	"fastinfer/vision"
)

func monitorCmd(args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 || args[0] != "reference" {
		fmt.Fprintln(stderr, "usage: fastinfer monitor reference --model M (--images DIR | --data fashion-mnist) [flags]")
		return errUsage
	}
	fs := flag.NewFlagSet("monitor reference", flag.ContinueOnError)
	fs.SetOutput(stderr)
	repo := fs.String("models", "models", "model repository")
	name := fs.String("model", "", "model to profile")
	version := fs.Int("version", 0, "version to profile (0 = the latest)")
	images := fs.String("images", "", "in-distribution images: a folder of .jpg/.png, or comma-separated files and globs")
	dataset := fs.String("data", "", "fashion-mnist: use the trainer's validation split instead of --images")
	val := fs.Float64("val", 0.1, "validation fraction of the trainer's split (with --data)")
	seed := fs.Uint64("seed", 1, "seed of the trainer's split (with --data)")
	limit := fs.Int("limit", 0, "profile at most this many images (0 = all)")
	ortLib := fs.String("ort-lib", "", "libonnxruntime.so")
	fs.Usage = usageWithEnv(fs, "fastinfer monitor reference --model M (--images DIR | --data fashion-mnist) [flags]")
	if err := parseFlags(fs, args[1:], getenv); err != nil {
		return err
	}
	if *name == "" || (*images == "") == (*dataset == "") {
		fs.Usage()
		return errUsage
	}
	m, err := findModel(*repo, *name)
	if err != nil {
		return err
	}
	v := m.Latest()
	if *version != 0 {
		found := false
		for _, x := range m.Versions {
			if x.Number == *version {
				v, found = x, true
			}
		}
		if !found {
			return fmt.Errorf("model %s has no version %d", m.Name, *version)
		}
	}
	lib, err := runtime.ResolveLib(*ortLib)
	if err != nil {
		return err
	}
	env, err := runtime.Open(runtime.Config{Lib: lib, Provider: "cpu", Logger: slog.New(slog.NewTextHandler(stderr, nil))})
	if err != nil {
		return err
	}
	defer env.Close()
	var src sampleSource
	if *dataset != "" {
		if *dataset != "fashion-mnist" {
			return fmt.Errorf("--data %q: only fashion-mnist is built in; use --images for anything else", *dataset)
		}
		all, err := data.FashionMNIST("", "train")
		if err != nil {
			return fmt.Errorf("%w (make deps installs dataset-fashion-mnist)", err)
		}
		_, valid := data.Split(all, *val, *seed)
		src = setSource{valid, "Fashion-MNIST validation split (val " + strconv.FormatFloat(*val, 'g', -1, 64) + ", seed " + strconv.FormatUint(*seed, 10) + ")"}
	} else {
		imgs, err := loadBenchImages(*images)
		if err != nil {
			return err
		}
		src = imageSource{imgs, *images}
	}
	p, err := buildReference(env, *m, v, src, *limit)
	if err != nil {
		return err
	}
	path := filepath.Join(v.Dir, drift.ReferenceFile)
	if err := p.WriteFile(path); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: %d images from %s\n", path, p.Count, p.Source)
	return nil
}

// sampleSource yields preprocessed images: fill writes image i into dst
// (the model's input row) and returns its stats.
type sampleSource interface {
	Len() int
	Fill(i int, pre *vision.Preprocessor, dst []float32) (width, height int, err error)
	Describe() string
}

type imageSource struct {
	imgs [][]byte
	desc string
}

func (s imageSource) Len() int         { return len(s.imgs) }
func (s imageSource) Describe() string { return s.desc }
func (s imageSource) Fill(i int, pre *vision.Preprocessor, dst []float32) (int, int, error) {
	info, err := pre.Into(s.imgs[i], dst)
	return info.Width, info.Height, err
}

// setSource normalises a dataset's 0..1 pixels as the model's
// preprocessing would an image of that size.
type setSource struct {
	set  *data.Set
	desc string
}

func (s setSource) Len() int         { return len(s.set.Y) }
func (s setSource) Describe() string { return s.desc }
func (s setSource) Fill(i int, pre *vision.Preprocessor, dst []float32) (int, int, error) {
	spec := pre.Spec()
	n := s.set.C * s.set.H * s.set.W
	if n != len(dst) || spec.Crop != s.set.H || spec.Crop != s.set.W {
		return 0, 0, fmt.Errorf("the dataset's %d×%d×%d images do not fit the model's %d-value input", s.set.C, s.set.H, s.set.W, len(dst))
	}
	plane := s.set.H * s.set.W
	for j, x := range s.set.X[i*n : (i+1)*n] {
		mean, std := spec.MeanStd(j / plane)
		dst[j] = float32((float64(x)*255*float64(spec.Scale) - mean) / std)
	}
	return s.set.W, s.set.H, nil
}

// tensorSource feeds rows that are already the model's input (the
// trainer's normalised validation set, which is exactly what the exported
// preprocessing produces).
type tensorSource struct {
	set  *data.Set
	desc string
}

func (s tensorSource) Len() int         { return len(s.set.Y) }
func (s tensorSource) Describe() string { return s.desc }
func (s tensorSource) Fill(i int, _ *vision.Preprocessor, dst []float32) (int, int, error) {
	n := s.set.C * s.set.H * s.set.W
	if n != len(dst) {
		return 0, 0, fmt.Errorf("the set's %d-value rows do not fit the model's %d-value input", n, len(dst))
	}
	copy(dst, s.set.X[i*n:(i+1)*n])
	return s.set.W, s.set.H, nil
}

// writeReference profiles version number of the repository's model on src
// into its version folder.
func writeReference(env *runtime.Env, repo, name string, number int, src sampleSource) (string, error) {
	m, err := findModel(repo, name)
	if err != nil {
		return "", err
	}
	for _, v := range m.Versions {
		if v.Number != number {
			continue
		}
		p, err := buildReference(env, *m, v, src, 0)
		if err != nil {
			return "", err
		}
		path := filepath.Join(v.Dir, drift.ReferenceFile)
		return path, p.WriteFile(path)
	}
	return "", fmt.Errorf("model %s has no version %d", name, number)
}

// buildReference runs the version over src and builds its drift profile.
func buildReference(env *runtime.Env, m models.Model, v models.Version, src sampleSource, limit int) (*drift.Profile, error) {
	ins, _, err := env.Inspect(v.Path)
	if err != nil {
		return nil, err
	}
	spec, rowShape, err := inputSpec(m.Config, ins)
	if err != nil {
		return nil, err
	}
	pre, err := vision.New(spec, vision.Options{})
	if err != nil {
		return nil, err
	}
	sess, err := env.NewSession(v.Path, runtime.SessionOptions{Input: m.Config.Input, Output: m.Config.Output, RowShape: rowShape, Kind: runtime.KindCPU})
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	n := src.Len()
	if limit > 0 {
		n = min(n, limit)
	}
	if n == 0 {
		return nil, errors.New("no images to profile")
	}
	scores, err := modelScores(m.Config, v.Path, sess.Output().Name)
	if err != nil {
		return nil, err
	}
	b := drift.NewBuilder(m.Name, v.Number, src.Describe(), m.Labels)
	in := make([]float32, sess.InputLen())
	out := make([]float32, sess.OutputLen())
	probs := make([]float32, sess.OutputLen())
	for i := range n {
		w, h, err := src.Fill(i, pre, in)
		if err != nil {
			return nil, fmt.Errorf("image %d: %w", i, err)
		}
		if err := sess.Run(in, 1, out); err != nil {
			return nil, err
		}
		best, maxv := 0, math.Inf(-1)
		for j, x := range out {
			if float64(x) > maxv {
				best, maxv = j, float64(x)
			}
		}
		// As the server scores (server.rowSoftmax): the softmax of logits,
		// or a probability output as it is.
		conf := maxv
		if scores == models.ScoresProbabilities {
			copy(probs, out)
		} else {
			var sum float64
			for j, x := range out {
				e := math.Exp(float64(x) - maxv)
				probs[j] = float32(e)
				sum += e
			}
			for j := range probs {
				probs[j] = float32(float64(probs[j]) / sum)
			}
			conf = 1 / sum
		}
		bright, contrast := spec.Stats(in)
		b.AddSoftmax(drift.Observation{Class: best, Confidence: conf, Brightness: bright, Contrast: contrast,
			Width: float64(w), Height: float64(h), Aspect: float64(w) / float64(h)}, probs)
	}
	return b.Profile(), nil
}
