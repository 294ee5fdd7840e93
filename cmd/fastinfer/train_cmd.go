package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"fastinfer/models/export"
	"fastinfer/runtime"
	"fastinfer/train"
	"fastinfer/train/data"
)

type trainConfig struct {
	data, color, models, name, ortLib, checkpoint, blocks, logLevel string
	size, epochs, batch, width, stemPool, subset, replicas          int
	lr, warmup, weightDecay, val                                    float64
	augment, resume                                                 bool
	seed                                                            uint64
	sweep                                                           multiFlag
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func trainFlags(fs *flag.FlagSet) *trainConfig {
	c := &trainConfig{}
	fs.StringVar(&c.data, "data", "fashion-mnist", "fashion-mnist, or a folder of DIR/<class>/*.jpg|png")
	fs.IntVar(&c.size, "size", 28, "image size for a folder dataset")
	fs.StringVar(&c.color, "color", "gray", "gray or rgb, for a folder dataset")
	fs.StringVar(&c.models, "models", "models", "model repository to register the trained model in")
	fs.StringVar(&c.name, "name", "fashion-resnet", "model name (its folder in the repository)")
	fs.IntVar(&c.epochs, "epochs", 15, "training epochs")
	fs.IntVar(&c.batch, "batch", 64, "batch size")
	fs.Float64Var(&c.lr, "lr", 3e-3, "peak learning rate (Adam)")
	fs.Float64Var(&c.warmup, "warmup", 0.3, "warm-up epochs before the cosine decay")
	fs.Float64Var(&c.weightDecay, "weight-decay", 0, "L2 weight decay")
	fs.BoolVar(&c.augment, "augment", true, "random crop and horizontal flip")
	fs.IntVar(&c.width, "width", 32, "channels of the first stage")
	fs.StringVar(&c.blocks, "blocks", "1,1,1", "residual blocks per stage")
	fs.IntVar(&c.stemPool, "stem-pool", 2, "max-pool after the stem (0 = none)")
	fs.Float64Var(&c.val, "val", 0.1, "fraction of the training images held out for validation")
	fs.IntVar(&c.replicas, "replicas", 0, "concurrent graphs sharing each batch (0 = one per core, at most 4)")
	fs.IntVar(&c.subset, "subset", 0, "train on this many images only (0 = all)")
	fs.Uint64Var(&c.seed, "seed", 1, "random seed")
	fs.StringVar(&c.checkpoint, "checkpoint", "", "checkpoint file (default .cache/train/NAME.ckpt)")
	fs.BoolVar(&c.resume, "resume", false, "continue from the checkpoint")
	fs.StringVar(&c.ortLib, "ort-lib", "", "libonnxruntime.so for the export parity check")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.Var(&c.sweep, "sweep", "key=v1,v2: train every combination, register the best by validation accuracy (repeatable; keys: "+strings.Join(train.SweepKeys, ", ")+")")
	return c
}

func trainCmd(args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := trainFlags(fs)
	fs.Usage = usageWithEnv(fs, "fastinfer train [--data fashion-mnist|DIR] [--epochs N] [--sweep key=v1,v2]… [flags]")
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	log, err := newLogger(stderr, c.logLevel, "text")
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return runTrain(ctx, c, stdout, log)
}

// runTrain loads the data, trains every sweep combination, and registers
// the best by validation accuracy as the next version of the model.
func runTrain(ctx context.Context, c *trainConfig, stdout io.Writer, log *slog.Logger) error {
	combos, err := train.ParseSweep(c.sweep)
	if err != nil {
		return err
	}
	if c.resume && len(combos) > 1 {
		return errors.New("--resume continues one run; it cannot be combined with --sweep")
	}
	stages, err := train.ParseBlocks(c.blocks)
	if err != nil {
		return fmt.Errorf("--blocks: %w", err)
	}
	lib, err := runtime.ResolveLib(c.ortLib)
	if err != nil {
		return err
	}
	env, err := runtime.Open(runtime.Config{Lib: lib, Provider: runtime.ProviderCPU, Logger: log})
	if err != nil {
		return err
	}
	defer env.Close()

	trainSet, valid, test, datasetName, err := loadTrainData(c, log)
	if err != nil {
		return err
	}
	mean, std := train.MeanStd(trainSet)
	for _, s := range []*data.Set{trainSet, valid, test} {
		train.Normalize(s, mean, std)
	}
	log.Info("data", "dataset", datasetName, "train", trainSet.Len(), "validation", valid.Len(), "test", test.Len(),
		"mean", mean, "std", std, "blas", train.BLAS)

	base := train.Options{
		Arch: train.Arch{InC: trainSet.C, InH: trainSet.H, InW: trainSet.W, Classes: len(trainSet.Classes),
			Width: c.width, Stages: stages, StemPool: c.stemPool},
		Epochs: c.epochs, Batch: c.batch, LR: c.lr, WarmupEpochs: c.warmup, WeightDecay: c.weightDecay,
		Augment: c.augment, Seed: c.seed, Replicas: c.replicas, Logger: log,
	}
	ckpt := c.checkpoint
	if ckpt == "" {
		ckpt = filepath.Join(".cache", "train", c.name+".ckpt")
	}

	type run struct {
		combo map[string]string
		opts  train.Options
		res   *train.Result
	}
	var best *run
	runLog := filepath.Join(c.models, "runs.jsonl")
	for i, combo := range combos {
		o, err := train.Apply(base, combo)
		if err != nil {
			return err
		}
		var start *train.Params
		var done []train.EpochStats
		if c.resume {
			saved, p, d, err := train.LoadCheckpoint(ckpt)
			if err != nil {
				return fmt.Errorf("--resume: %w", err)
			}
			o, start, done = saved, p, d
			o.Logger = log
			log.Info("resuming", "checkpoint", ckpt, "epochs_done", len(done), "of", o.Epochs)
		}
		log.Info("run", "run", fmt.Sprintf("%d/%d", i+1, len(combos)), "sweep", combo, "arch", o.Arch, "epochs", o.Epochs,
			"batch", o.Batch, "lr", o.LR)
		res, err := train.Fit(ctx, o, trainSet, valid, start, done)
		if err != nil {
			return err
		}
		if res.Interrupted {
			if err := train.SaveCheckpoint(ckpt, o, res.Params, completed(res.Epochs)); err != nil {
				return fmt.Errorf("interrupted, and saving the checkpoint failed: %w", err)
			}
			return fmt.Errorf("interrupted: checkpoint saved to %s; continue with --resume", ckpt)
		}
		if err := train.SaveCheckpoint(ckpt, o, res.Params, res.Epochs); err != nil {
			log.Warn("saving checkpoint", "err", err)
		}
		r := &run{combo: combo, opts: o, res: res}
		last := res.Epochs[len(res.Epochs)-1]
		if err := appendRunLog(runLog, c.name, combo, o, res); err != nil {
			log.Warn("run log", "file", runLog, "err", err)
		}
		if best == nil || last.ValAccuracy > best.res.Epochs[len(best.res.Epochs)-1].ValAccuracy {
			best = r
		}
	}

	p := best.res.Params
	evalBatch := 250
	testEval, err := train.Evaluate(p, test, evalBatch)
	if err != nil {
		return err
	}
	trainEval, err := train.Evaluate(p, data.Subset(trainSet, min(trainSet.Len(), 10000), 9), evalBatch)
	if err != nil {
		return err
	}
	last := best.res.Epochs[len(best.res.Epochs)-1]
	card := export.Card{
		Model:   c.name,
		Dataset: export.CardDataset{Name: datasetName, Source: trainSet.Source, SHA256: trainSet.SHA256, Train: trainSet.Len(), Validation: valid.Len(), Test: test.Len()},
		Hyperparameters: map[string]any{
			"arch": fmt.Sprintf("resnet width %d blocks %v stem-pool %d", best.opts.Arch.Width, best.opts.Arch.Stages, best.opts.Arch.StemPool),
			"lr":   best.opts.LR, "batch": best.opts.Batch, "warmup_epochs": best.opts.WarmupEpochs, "weight_decay": best.opts.WeightDecay,
			"augment": best.opts.Augment, "seed": best.opts.Seed, "optimizer": "adam, cosine schedule", "blas": train.BLAS,
			"replicas": best.res.Replicas,
			"sweep":    best.combo,
		},
		Epochs: len(best.res.Epochs), WallTimeSeconds: wall(best.res.Epochs), ImagesPerSecond: last.ImagesPerSec,
		Accuracy:         export.CardAccuracy{Train: trainEval.Accuracy, Validation: last.ValAccuracy, Test: testEval.Accuracy},
		PerClassAccuracy: map[string]float64{}, ConfusionMatrix: testEval.Confusion, Classes: trainSet.Classes,
		GitCommit: gitCommit(),
	}
	for i, name := range trainSet.Classes {
		card.PerClassAccuracy[name] = testEval.PerClass[i]
	}
	for _, e := range best.res.Epochs {
		card.LossCurve = append(card.LossCurve, e.Loss)
		card.ValidationCurve = append(card.ValidationCurve, e.ValAccuracy)
	}
	cfg := export.ConfigYAML(trainSet.H, colorOf(trainSet.C), []float32{mean}, []float32{std})
	if trainSet.C == 3 {
		cfg = export.ConfigYAML(trainSet.H, "rgb", []float32{mean}, []float32{std})
	}
	dir := filepath.Join(c.models, c.name)
	v, err := train.Register(env, dir, p, test, cfg, card)
	if err != nil {
		return err
	}
	// The drift reference: the validation split, as the served model sees
	// it. A failure here loses nothing trained, so it is only reported.
	if path, err := writeReference(env, c.models, c.name, v, tensorSource{valid, "validation split of " + datasetName}); err != nil {
		log.Warn("drift reference profile not written; create it with `fastinfer monitor reference`", "err", err)
	} else {
		log.Info("drift reference profile written", "path", path)
	}
	fmt.Fprintf(stdout, "registered %s version %d: test accuracy %.4f, validation %.4f, %d epochs in %s (%s)\n",
		c.name, v, testEval.Accuracy, last.ValAccuracy, len(best.res.Epochs), time.Duration(card.WallTimeSeconds*float64(time.Second)).Round(time.Second),
		filepath.Join(dir, fmt.Sprint(v)))
	return nil
}

// loadTrainData returns training, validation and test sets: Fashion-MNIST's
// own test split, or for a folder dataset the validation split doubles as
// the test set.
func loadTrainData(c *trainConfig, log *slog.Logger) (trainSet, valid, test *data.Set, name string, err error) {
	var all *data.Set
	if c.data == "fashion-mnist" {
		if all, err = data.FashionMNIST("", "train"); err != nil {
			return nil, nil, nil, "", fmt.Errorf("%w (make deps installs dataset-fashion-mnist)", err)
		}
		if test, err = data.FashionMNIST("", "t10k"); err != nil {
			return nil, nil, nil, "", err
		}
		name = "Fashion-MNIST"
	} else {
		var skipped int
		if all, skipped, err = data.ImageFolder(c.data, c.size, c.color); err != nil {
			return nil, nil, nil, "", err
		}
		if skipped > 0 {
			log.Warn("images skipped: not decodable", "count", skipped)
		}
		name = filepath.Base(filepath.Clean(c.data))
	}
	if c.subset > 0 {
		all = data.Subset(all, c.subset, c.seed)
	}
	trainSet, valid = data.Split(all, c.val, c.seed)
	if test == nil {
		test = valid
	}
	return trainSet, valid, test, name, nil
}

func completed(es []train.EpochStats) []train.EpochStats {
	var out []train.EpochStats
	for _, e := range es {
		if !e.Interrupted {
			out = append(out, e)
		}
	}
	return out
}

func wall(es []train.EpochStats) float64 {
	s := 0.0
	for _, e := range es {
		s += e.Elapsed.Seconds()
	}
	return s
}

func colorOf(c int) string {
	if c == 1 {
		return "gray"
	}
	return "rgb"
}

// appendRunLog adds one JSON line per run to the repository's run log.
func appendRunLog(path, name string, combo map[string]string, o train.Options, res *train.Result) error {
	last := res.Epochs[len(res.Epochs)-1]
	line, err := json.Marshal(map[string]any{
		"time": time.Now().UTC().Format(time.RFC3339), "model": name, "sweep": combo,
		"arch": o.Arch, "epochs": len(res.Epochs), "batch": o.Batch, "lr": o.LR,
		"val_accuracy": last.ValAccuracy, "train_accuracy": last.TrainAccuracy, "loss": last.Loss,
		"wall_seconds": wall(res.Epochs), "commit": gitCommit(),
	})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// gitCommit is the working tree's commit, for the model card ("" outside
// a checkout).
func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
