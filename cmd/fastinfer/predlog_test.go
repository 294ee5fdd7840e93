package main

import (
	"bytes"
	"context"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"fastinfer/monitor/predlog"
)

// Every answered image is in the prediction log after a graceful stop:
// the default SQLite log under --data-dir is flushed at shutdown. Records
// carry the image's statistics whether or not drift is watched (a version
// without reference.json has no drift monitor).
func TestPredictionLogSurvivesShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	for _, tt := range []struct {
		name string
		repo func(*testing.T) string
	}{
		{"drift on", fashionRepo},
		{"no reference profile", fashionRepoWithoutProfile},
	} {
		t.Run(tt.name, func(t *testing.T) { testPredictionLogSurvivesShutdown(t, tt.repo(t)) })
	}
}

// fashionRepoWithoutProfile is the default model's repository with its
// version 3 lacking reference.json.
func fashionRepoWithoutProfile(t *testing.T) string {
	t.Helper()
	src, err := filepath.Abs(filepath.Join("..", "..", "models", "fashion-resnet"))
	if err != nil {
		t.Fatal(err)
	}
	repo := t.TempDir()
	dst := filepath.Join(repo, "fashion-resnet")
	if err := os.MkdirAll(filepath.Join(dst, "3"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"config.yaml", "labels.txt"} {
		if err := os.Symlink(filepath.Join(src, f), filepath.Join(dst, f)); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(filepath.Join(src, "3"))
	if err != nil {
		t.Fatalf("the default model is missing (%v): run `make train`", err)
	}
	for _, e := range entries {
		if e.Name() == "reference.json" {
			continue
		}
		if err := os.Symlink(filepath.Join(src, "3", e.Name()), filepath.Join(dst, "3", e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	return repo
}

func testPredictionLogSurvivesShutdown(t *testing.T, repo string) {
	data := t.TempDir()
	base, _, stop := startServe(t, repo, "--data-dir", data, "--log-images", "100000")
	img, err := os.ReadFile(filepath.Join("..", "..", "testdata", "fashion", "test-0-ankle-boot.png"))
	if err != nil {
		t.Fatal(err)
	}
	const n = 25
	for range n {
		resp, err := http.Post(base+"/v1/models/fashion-resnet/classify", "image/png", bytes.NewReader(img))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("classify: %d", resp.StatusCode)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	l, err := predlog.Open(context.Background(), "sqlite:"+filepath.Join(data, "predictions.db"), predlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(context.Background())
	recs, err := l.Query(context.Background(), predlog.Query{Model: "fashion-resnet"})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != n {
		t.Fatalf("%d records logged for %d answered images", len(recs), n)
	}
	r := recs[0]
	if r.TopK[0].Label != "Ankle boot" || r.Width != 28 || !bytes.Equal(r.Image, img) || r.Version != 3 ||
		math.IsNaN(r.Brightness) || math.IsNaN(r.Contrast) {
		t.Errorf("record: top %+v, %dx%d, brightness %v contrast %v, %d image bytes, version %d",
			r.TopK[0], r.Width, r.Height, r.Brightness, r.Contrast, len(r.Image), r.Version)
	}
}
