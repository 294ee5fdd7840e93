package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The loop closed: the committed default model, trained by fastinfer
// train, served by fastinfer serve, names Fashion-MNIST test images.
// The default model names the test images, in float32 and in its
// float16 copy (config.yaml precision: fp16).
func TestDefaultModelClassifiesFashionImages(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	for _, precision := range []string{"fp32", "fp16"} {
		t.Run(precision, func(t *testing.T) {
			repo := fashionRepo(t)
			if precision != "fp32" {
				repo = fashionRepoWith(t, "precision: "+precision+"\n")
			}
			classifyFashion(t, repo, precision)
		})
	}
}

func classifyFashion(t *testing.T, repo, precision string) {
	base, _, stop := startServe(t, repo)
	defer stop()
	imgs, err := filepath.Glob(filepath.Join("..", "..", "testdata", "fashion", "test-*.png"))
	if err != nil || len(imgs) == 0 {
		t.Fatalf("no test images: %v", err)
	}
	right := 0
	for _, path := range imgs {
		img, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Post(base+"/v1/models/fashion-resnet/classify?top_k=1", "image/png", bytes.NewReader(img))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var got classifyResponse
		if resp.StatusCode != 200 || json.Unmarshal(body, &got) != nil || len(got.Results) != 1 || len(got.Results[0].Predictions) != 1 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
		}
		p := got.Results[0].Predictions[0]
		label := ""
		if p.Label != nil {
			label = *p.Label
		}
		// test-0-ankle-boot.png → "ankle-boot"
		want := strings.SplitN(strings.TrimSuffix(filepath.Base(path), ".png"), "-", 3)[2]
		norm := strings.NewReplacer("/", "-", " ", "-").Replace(strings.ToLower(label))
		t.Logf("%s: %s (%.3f)", filepath.Base(path), label, p.Score)
		if norm == want {
			right++
		}
	}
	if right < len(imgs)-1 {
		t.Fatalf("%d of %d test images named correctly", right, len(imgs))
	}
	// The card is served with the model.
	resp, err := http.Get(base + "/v1/models/fashion-resnet")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var info struct {
		Precision string
		Card      struct {
			Accuracy struct{ Test float64 } `json:"accuracy"`
		} `json:"card"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil || info.Card.Accuracy.Test < 0.9 {
		t.Fatalf("card test accuracy %v, %v", info.Card.Accuracy.Test, err)
	}
	if info.Precision != precision {
		t.Errorf("served precision %q, want %q", info.Precision, precision)
	}
}

// fashionRepoWith is a repository with the default model's latest version
// and config.yaml plus extra lines.
func fashionRepoWith(t *testing.T, extra string) string {
	t.Helper()
	src, err := filepath.Abs(filepath.Join("..", "..", "models", "fashion-resnet"))
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "fashion-resnet")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(src, "config.yaml"))
	if err != nil {
		t.Fatalf("the default model is missing (%v): run `make train`", err)
	}
	labels, err := os.ReadFile(filepath.Join(src, "labels.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dst, "config.yaml"), append(cfg, extra...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dst, "labels.txt"), labels, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(src, "3"), filepath.Join(dst, "3")); err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(dst)
}

// fashionRepo is a repository holding only the committed default model.
func fashionRepo(t *testing.T) string {
	t.Helper()
	src := filepath.Join("..", "..", "models", "fashion-resnet")
	if _, err := os.Stat(filepath.Join(src, "config.yaml")); err != nil {
		t.Fatalf("the default model is missing (%v): run `make train`", err)
	}
	repo := t.TempDir()
	abs, err := filepath.Abs(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(abs, filepath.Join(repo, "fashion-resnet")); err != nil {
		t.Fatal(err)
	}
	return repo
}
