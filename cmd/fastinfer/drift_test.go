package main

import (
	"bytes"
	"encoding/json"
	"image"
	"image/png"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"fastinfer/models"
	"fastinfer/monitor/drift"
	"fastinfer/train/data"
)

// fashionPNG encodes image i of a Fashion-MNIST set, its pixels scaled by
// gain (1 = as is, 0.5 = darkened).
func fashionPNG(t *testing.T, s *data.Set, i int, gain float32) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, s.W, s.H))
	for j, x := range s.X[i*s.H*s.W : (i+1)*s.H*s.W] {
		img.Pix[j] = uint8(min(255, x*gain*255+0.5))
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// The drift loop end to end: a reference profile from the trainer's
// validation split, served; in-distribution test images raise no alarm,
// darkened ones do, in the JSON report, the HTML report and the metrics.
func TestDriftAlarm(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	repo := t.TempDir()
	src := filepath.Join("..", "..", "models", "fashion-resnet")
	dst := filepath.Join(repo, "fashion-resnet")
	os.MkdirAll(filepath.Join(dst, "1"), 0o755)
	for _, f := range []string{models.ConfigFile, "labels.txt", filepath.Join("3", models.ModelFile)} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dst, strings.Replace(f, "3", "1", 1)), b, 0o644)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"monitor", "reference", "--models", repo, "--model", "fashion-resnet", "--data", "fashion-mnist", "--limit", "2000"},
		&stdout, &stderr, os.Getenv); code != 0 {
		t.Fatalf("monitor reference: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	p, err := drift.ReadFile(filepath.Join(dst, "1", drift.ReferenceFile))
	if err != nil || p.Count != 2000 || len(p.ClassFreq) != 10 {
		t.Fatalf("reference %+v, %v", p, err)
	}

	base, _, stop := startServe(t, repo)
	defer stop()
	test, err := data.FashionMNIST("", "t10k")
	if err != nil {
		t.Fatal(err)
	}
	send := func(from, n int, gain float32) {
		t.Helper()
		for i := from; i < from+n; i++ {
			resp, err := http.Post(base+"/v1/models/fashion-resnet/classify", "image/png", bytes.NewReader(fashionPNG(t, test, i, gain)))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("classify: %d", resp.StatusCode)
			}
		}
	}
	report := func() drift.Report {
		t.Helper()
		resp, err := http.Get(base + "/v1/models/fashion-resnet/drift")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r drift.Report
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != 200 {
			t.Fatalf("drift report: %d %v", resp.StatusCode, err)
		}
		return r
	}
	send(0, 400, 1)
	if r := report(); r.Drift || r.Window != 400 {
		t.Fatalf("in-distribution images alarmed (window %d): %s %+v", r.Window, r.Reason, r.Tests)
	}
	send(400, 400, 0.5)
	r := report()
	if !r.Drift {
		t.Fatalf("darkened images raised no alarm: %+v", r.Tests)
	}
	alarmed := map[string]bool{}
	for _, tt := range r.Tests {
		alarmed[tt.Name] = tt.Drift
	}
	if !alarmed["brightness_ks"] {
		t.Errorf("brightness_ks did not alarm: %+v", r.Tests)
	}
	t.Logf("alarm: %s", r.Reason)

	resp, err := http.Get(base + "/v1/models/fashion-resnet/drift?format=html")
	if err != nil {
		t.Fatal(err)
	}
	html, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(html), "<svg") || !strings.Contains(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("HTML report: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	resp, err = http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`fastinfer_drift_alarm{model="fashion-resnet",version="1"} 1`,
		`fastinfer_drift_window_observations{model="fashion-resnet",version="1"} 800`,
		`fastinfer_drift_pvalue{model="fashion-resnet",test="brightness_ks",version="1"}`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
