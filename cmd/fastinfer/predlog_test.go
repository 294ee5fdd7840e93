package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"fastinfer/monitor/predlog"
)

// Every answered image is in the prediction log after a graceful stop:
// the default SQLite log under --data-dir is flushed at shutdown.
func TestPredictionLogSurvivesShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	data := t.TempDir()
	base, _, stop := startServe(t, fashionRepo(t), "--data-dir", data, "--log-images", "100000")
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
	if r.TopK[0].Label != "Ankle boot" || r.Width != 28 || !bytes.Equal(r.Image, img) || r.Version != 3 {
		t.Errorf("record: top %+v, %dx%d, %d image bytes, version %d", r.TopK[0], r.Width, r.Height, len(r.Image), r.Version)
	}
}
