package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"fastinfer/models"
	"fastinfer/monitor/drift"
	"fastinfer/runtime"
	"fastinfer/train/data"
)

// A small sweep end to end: every run is logged, the best by validation
// accuracy is registered with its card, and the repository serves it.
func TestTrainSweepRegistersBest(t *testing.T) {
	if testing.Short() {
		t.Skip("trains networks; skipped in -short")
	}
	if _, err := os.Stat(data.FashionMNISTDir); err != nil {
		t.Skipf("Fashion-MNIST not installed (%v): `make deps` installs it", err)
	}
	if os.Getenv(runtime.LibEnv) == "" {
		t.Fatalf("%s is not set: run the tests with `make test`", runtime.LibEnv)
	}
	repo := t.TempDir()
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	c := trainFlags(fs)
	if err := fs.Parse([]string{"--models", repo, "--subset", "800", "--epochs", "1", "--batch", "16", "--width", "4",
		"--blocks", "1", "--stem-pool", "2", "--checkpoint", filepath.Join(repo, "ck"),
		"--sweep", "lr=1e-4,5e-3"}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := runTrain(context.Background(), c, &out, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "registered fashion-resnet version 1") {
		t.Fatalf("output: %s", out.String())
	}
	// The run log has both runs; the registered card is the better one.
	f, err := os.Open(filepath.Join(repo, "runs.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type line struct {
		Sweep map[string]string `json:"sweep"`
		Val   float64           `json:"val_accuracy"`
	}
	var runs []line
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatal(err)
		}
		runs = append(runs, l)
	}
	if len(runs) != 2 {
		t.Fatalf("run log has %d runs, want 2", len(runs))
	}
	best := runs[0]
	if runs[1].Val > best.Val {
		best = runs[1]
	}
	m, ok, err := models.Read(filepath.Join(repo, "fashion-resnet"))
	if err != nil || !ok {
		t.Fatalf("registered model: %v %v", ok, err)
	}
	var card struct {
		Hyper    map[string]any         `json:"hyperparameters"`
		Accuracy struct{ Test float64 } `json:"accuracy"`
		Classes  []string               `json:"classes"`
	}
	if err := json.Unmarshal(m.Card, &card); err != nil {
		t.Fatal(err)
	}
	sweep, _ := card.Hyper["sweep"].(map[string]any)
	if sweep["lr"] != best.Sweep["lr"] {
		t.Fatalf("registered run has sweep %v; the best by validation is %v (runs %+v)", sweep, best.Sweep, runs)
	}
	if len(card.Classes) != 10 || !reflect.DeepEqual(m.Labels, card.Classes) {
		t.Fatalf("labels %v, card classes %v", m.Labels, card.Classes)
	}
	if p := m.Config.Preprocess; p.Color != "gray" || p.Crop != 28 {
		t.Fatalf("preprocess %+v", p)
	}
	// The drift reference comes from the validation split, and its
	// brightness is that of the raw images (Fashion-MNIST's mean pixel is
	// about 0.29), not of the normalised tensors.
	ref, err := drift.ReadFile(filepath.Join(repo, "fashion-resnet", "1", drift.ReferenceFile))
	if err != nil {
		t.Fatal(err)
	}
	b := ref.Features[drift.FeatureBrightness]
	if ref.Count == 0 || len(b) == 0 || b[len(b)/2] < 0.15 || b[len(b)/2] > 0.45 {
		t.Fatalf("reference: %d images, median brightness %v", ref.Count, b[len(b)/2])
	}
}

// Ctrl-C (an ended context) saves a checkpoint and says how to go on;
// --resume continues from it and registers the model.
func TestTrainInterruptThenResume(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a network; skipped in -short")
	}
	if _, err := os.Stat(data.FashionMNISTDir); err != nil {
		t.Skipf("Fashion-MNIST not installed (%v): `make deps` installs it", err)
	}
	if os.Getenv(runtime.LibEnv) == "" {
		t.Fatalf("%s is not set: run the tests with `make test`", runtime.LibEnv)
	}
	repo := t.TempDir()
	ckpt := filepath.Join(repo, "run.ckpt")
	args := []string{"--models", repo, "--subset", "400", "--epochs", "1", "--batch", "16", "--width", "4",
		"--blocks", "1", "--checkpoint", ckpt}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	parse := func(extra ...string) *trainConfig {
		fs := flag.NewFlagSet("train", flag.ContinueOnError)
		c := trainFlags(fs)
		if err := fs.Parse(append(append([]string{}, args...), extra...)); err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := runTrain(ctx, parse(), io.Discard, quiet)
	if err == nil || !strings.Contains(err.Error(), "--resume") {
		t.Fatalf("interrupted run: %v", err)
	}
	if _, err := os.Stat(ckpt); err != nil {
		t.Fatalf("no checkpoint after the interruption: %v", err)
	}
	if _, err := os.Stat(filepath.Join(repo, "fashion-resnet")); err == nil {
		t.Fatal("an interrupted run registered a model")
	}
	var out bytes.Buffer
	if err := runTrain(context.Background(), parse("--resume"), &out, quiet); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "registered fashion-resnet version 1") {
		t.Fatalf("resumed run: %s", out.String())
	}
}
