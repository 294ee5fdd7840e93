package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/proto"

	"fastinfer/batching"
	"fastinfer/models"
	"fastinfer/models/fp16"
	"fastinfer/models/onnxpb"
	"fastinfer/models/pixels"
	"fastinfer/models/resnet"
	"fastinfer/runtime"
)

func modelsCmd(args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: fastinfer models build ARCH --out DIR | fastinfer models list [--models DIR] | fastinfer models convert [--pixels] [--fp16 [--fp16-io]] IN.onnx OUT")
		return errUsage
	}
	switch args[0] {
	case "build":
		return modelsBuild(args[1:], stdout, stderr, getenv)
	case "list":
		return modelsList(args[1:], stdout, stderr, getenv)
	case "convert":
		return modelsConvert(args[1:], stdout, stderr, getenv)
	}
	fmt.Fprintf(stderr, "fastinfer models: unknown subcommand %q (want build, list or convert)\n", args[0])
	return errUsage
}

func modelsBuild(args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("models build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "model folder to write (its next version number is used)")
	seed := fs.Uint64("seed", 1, "random seed for the weights")
	classes := fs.Int("classes", 1000, "number of output classes")
	fs.Usage = usageWithEnv(fs, "fastinfer models build resnet18|resnet34|resnet50|head --out DIR")
	// The architecture may come before or after the flags.
	var arch string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		arch, args = args[0], args[1:]
	}
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	if arch == "" && fs.NArg() > 0 {
		arch = fs.Arg(0)
	}
	if arch == "" || *out == "" {
		fs.Usage()
		return errUsage
	}
	start := time.Now()
	m, err := resnet.Build(arch, *classes, *seed)
	if err != nil {
		return err
	}
	v, err := resnet.WriteModelDir(*out, m)
	if err != nil {
		return fmt.Errorf("writing %s: %w", *out, err)
	}
	fmt.Fprintf(stdout, "wrote %s (%s, %d parameters, seeded random weights) in %s\n",
		filepath.Join(*out, fmt.Sprint(v), models.ModelFile), arch, resnet.ParamCount(m), time.Since(start).Round(time.Millisecond))
	return nil
}

func modelsList(args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("models list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("models", "models", "model repository folder")
	ortLib := fs.String("ort-lib", "", "libonnxruntime.so (default: $ONNXRUNTIME_LIB, then the usual places); without one, only config.yaml is shown")
	fs.Usage = usageWithEnv(fs, "fastinfer models list [--models DIR]\n\n"+
		"How serve would take each model's highest version: its input, the\n"+
		"preprocessing sized to it, its batch dimension and whether its outputs\n"+
		"are logits or probabilities, read from the ONNX file without loading it.")
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	ms, errs, err := models.Scan(*dir)
	if err != nil {
		return err
	}
	var env *runtime.Env
	if lib, err := runtime.ResolveLib(*ortLib); err != nil {
		fmt.Fprintf(stderr, "note: %v; showing config.yaml only\n", err)
	} else if env, err = runtime.Open(runtime.Config{Lib: lib, Provider: runtime.ProviderCPU, Logger: slog.New(slog.DiscardHandler)}); err != nil {
		return err
	} else {
		defer env.Close()
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tSERVED\tVERSIONS\tLABELS\tINPUT\tPREPROCESS\tBATCH\tSCORES")
	for _, m := range ms {
		var vs []string
		for _, v := range m.Versions {
			vs = append(vs, fmt.Sprint(v.Number))
		}
		for _, n := range m.Notes {
			fmt.Fprintf(stderr, "note: model %s (%s): %s\n", m.Name, filepath.Base(m.ConfigPath), n)
		}
		plan, err := servingPlan(env, m)
		if err != nil {
			errs = append(errs, &models.LoadError{Model: m.Name, Path: m.Latest().Path, Err: err})
			plan = listPlan{input: "?", preprocess: "?", batch: "?", scores: "?"}
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%s\t%s\t%s\n", m.Name, m.Latest().Number, strings.Join(vs, ","), len(m.Labels),
			plan.input, plan.preprocess, plan.batch, plan.scores)
	}
	tw.Flush()
	for _, e := range errs {
		fmt.Fprintln(stderr, "error:", e)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%d model(s) could not be read or would not load", len(errs))
	}
	return nil
}

// listPlan is a row of models list: how serve would take a model.
type listPlan struct{ input, preprocess, batch, scores string }

// servingPlan works out, as loadModel does but without a session, how
// serve would take m's highest version; with no env, config.yaml alone.
func servingPlan(env *runtime.Env, m models.Model) (listPlan, error) {
	p := m.Config.Preprocess
	plan := listPlan{input: "?", batch: "?", scores: cmp.Or(m.Config.Scores, "?"),
		preprocess: fmt.Sprintf("resize %d crop %d %s", p.Resize, p.Crop, p.Color)}
	if p.Implicit {
		plan.preprocess = "ImageNet's, sized to the input"
	}
	if env == nil {
		return plan, nil
	}
	v := m.Latest()
	ins, outs, err := env.Inspect(v.Path)
	if err != nil {
		return plan, err
	}
	in, err := servedInput(m.Config, ins)
	if err != nil {
		return plan, err
	}
	plan.input = fmt.Sprintf("%s %v", in.Name, in.Shape)
	if in.DataType != "FP32" {
		plan.input = fmt.Sprintf("%s %s %v", in.Name, in.DataType, in.Shape)
	}
	spec, _, tensorsOnly, err := imageSpec(m.Config, ins)
	switch {
	case err != nil:
		return plan, err
	case tensorsOnly != "":
		plan.preprocess = "none (tensors only)"
	default:
		plan.preprocess = fmt.Sprintf("resize %d crop %d %s %s", spec.Resize, spec.Crop, spec.Color, spec.Layout)
	}
	plan.batch = "dynamic"
	bc := batching.Config{MaxBatchSize: 2}
	if note, err := fixedBatch(ins, m.Config, &bc); err != nil {
		return plan, err
	} else if note != "" {
		plan.batch = "fixed 1"
	}
	out := m.Config.Output
	if out == "" {
		if len(outs) == 0 {
			return plan, errors.New("the model has no outputs")
		}
		out = outs[0].Name
	}
	plan.scores, err = modelScores(m.Config, v.Path, out)
	return plan, err
}

func modelsConvert(args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("models convert", flag.ContinueOnError)
	fs.SetOutput(stderr)
	half := fs.Bool("fp16", false, "convert float32 weights and activations to float16")
	halfIO := fs.Bool("fp16-io", false, "with --fp16: make the graph's inputs and outputs float16 too, instead of keeping them float32 behind Cast nodes: batches move half the bytes to the GPU, and the server converts float32 requests")
	pix := fs.Bool("pixels", false, "move the input's normalisation (preprocess scale, mean, std) into the graph, which then takes UINT8 pixels: a quarter of float32's bytes at every copy")
	cfgPath := fs.String("config", "", "with --pixels: the config.yaml whose preprocess section to embed (default: IN's model folder's, as IN is MODEL/N/model.onnx in a repository, else ImageNet's)")
	fs.Usage = usageWithEnv(fs, "fastinfer models convert [--pixels [--config FILE]] [--fp16 [--fp16-io]] IN.onnx OUT\n\n"+
		"OUT is the file to write when it ends in .onnx; otherwise it is a folder (created\n"+
		"if needed) that gets "+models.ModelFile+". IN is never overwritten.")
	// Flags may come before, between or after the two paths.
	var paths []string
	for rest := args; ; {
		if err := parseFlags(fs, rest, getenv); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		paths, rest = append(paths, fs.Arg(0)), fs.Args()[1:]
	}
	if len(paths) != 2 || !*half && !*pix {
		if len(paths) == 2 {
			fmt.Fprintln(stderr, "fastinfer models convert: nothing to do without --fp16 or --pixels")
		}
		fs.Usage()
		return errUsage
	}
	in, out := paths[0], paths[1]
	if st, err := os.Stat(out); (err == nil && st.IsDir()) || filepath.Ext(out) != ".onnx" {
		out = filepath.Join(out, models.ModelFile)
	}
	if sameFile(in, out) {
		return fmt.Errorf("refusing to overwrite the input %s: give another OUT", in)
	}

	start := time.Now()
	data, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	b := data
	var notes []string
	if *pix {
		var note string
		if b, note, err = pixelModel(b, in, *cfgPath); err != nil {
			return fmt.Errorf("converting %s: %w", in, err)
		}
		notes = append(notes, note)
	}
	if *half {
		var r fp16.Report
		if b, r, err = float16Model(b, fp16.Options{Float16IO: *halfIO}); err != nil {
			return fmt.Errorf("converting %s: %w", in, err)
		}
		edge := "float32"
		if *halfIO {
			edge = "float16"
		}
		notes = append(notes, fmt.Sprintf("float16, %s inputs and outputs: %v", edge, r))
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	if err := models.WriteFileAtomic(filepath.Dir(out), filepath.Base(out), b); err != nil {
		return fmt.Errorf("writing %s: %w", out, err)
	}
	fmt.Fprintf(stdout, "wrote %s (%d → %d bytes) in %s:\n  %s\n",
		out, len(data), len(b), time.Since(start).Round(time.Millisecond), strings.Join(notes, "\n  "))
	return nil
}

// pixelModel embeds a preprocess section's normalisation in the encoded
// model (models/pixels), from cfgPath, or the config.yaml of the model
// folder holding in, or ImageNet's; the note says which, and what the
// served model's config.yaml must then leave out.
func pixelModel(data []byte, in, cfgPath string) ([]byte, string, error) {
	from := "ImageNet's normalisation"
	p := models.ImageNet()
	if cfgPath == "" {
		guess := filepath.Join(filepath.Dir(filepath.Dir(in)), models.ConfigFile)
		if _, err := os.Stat(guess); err == nil {
			cfgPath = guess
		}
	}
	var input string
	if cfgPath != "" {
		raw, err := os.ReadFile(cfgPath)
		if err != nil {
			return nil, "", err
		}
		c, err := models.ParseConfig(raw)
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", cfgPath, err)
		}
		p, input, from = *c.Preprocess, c.Input, cfgPath+"'s normalisation"
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(data, &m); err != nil {
		return nil, "", fmt.Errorf("not an ONNX model: %w", err)
	}
	px, err := pixels.Embed(&m, pixels.Options{Input: input, Layout: p.Layout, Scale: p.Scale, Mean: p.Mean, Std: p.Std})
	if err != nil {
		return nil, "", err
	}
	b, err := proto.Marshal(px)
	note := fmt.Sprintf("UINT8 pixel input, %s in the graph (scale %g, mean %v, std %v): serve it with a preprocess section without scale, mean and std", from, p.Scale, p.Mean, p.Std)
	return b, note, err
}

// sameFile says whether paths a and b name the same file: the same inode
// when both exist (so a symlink or a hard link to IN counts), else the same
// absolute path.
func sameFile(a, b string) bool {
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	if errA == nil && errB == nil {
		return os.SameFile(sa, sb)
	}
	absA, errA := filepath.Abs(a)
	absB, errB := filepath.Abs(b)
	return errA == nil && errB == nil && absA == absB
}
