package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
)

// top1 posts an image and returns the index of its top prediction.
func top1(client *http.Client, base string, img []byte) (int, error) {
	resp, err := client.Post(base+"/v1/models/fashion-resnet/classify?top_k=1", "image/png", bytes.NewReader(img))
	if err != nil {
		return 0, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var got classifyResponse
	if resp.StatusCode != 200 || json.Unmarshal(body, &got) != nil || len(got.Results) != 1 || len(got.Results[0].Predictions) != 1 {
		return 0, fmt.Errorf("%d %s", resp.StatusCode, body)
	}
	return got.Results[0].Predictions[0].Index, nil
}

// The server with staged instances on the CPU (--stage-batches on): many
// concurrent clients, so batches are copied ahead while others run, each
// get the prediction their own image gets alone, and the copy into the
// batch is measured.
func TestStagedServe(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	base, logs, stop := startServe(t, fashionRepo(t), "--stage-batches", "on", "--max-batch-size", "4", "--max-queue-size", "1024", "--prediction-log", "off")
	defer stop()
	paths, err := filepath.Glob(filepath.Join("..", "..", "testdata", "fashion", "test-*.png"))
	if err != nil || len(paths) < 2 {
		t.Fatalf("test images: %v %v", paths, err)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var meta struct {
		Batching struct {
			Staged bool `json:"staged_batches"`
		} `json:"batching"`
	}
	resp, err := client.Get(base + "/v1/models/fashion-resnet")
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&meta)
	resp.Body.Close()
	if err != nil || !meta.Batching.Staged {
		t.Fatalf("the model's metadata does not say its batches are staged (%v)", err)
	}
	imgs := make([][]byte, len(paths))
	want := make([]int, len(paths))
	for i, p := range paths {
		if imgs[i], err = os.ReadFile(p); err != nil {
			t.Fatal(err)
		}
		if want[i], err = top1(client, base, imgs[i]); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for g := range 24 {
		wg.Go(func() {
			for k := range 15 {
				i := (g + k) % len(imgs)
				got, err := top1(client, base, imgs[i])
				if err != nil {
					t.Error(err)
					return
				}
				if got != want[i] {
					t.Errorf("%s under load: class %d, alone %d", filepath.Base(paths[i]), got, want[i])
				}
			}
		})
	}
	wg.Wait()
	resp, err = client.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`(?m)^fastinfer_compute_input_duration_seconds_count\{model="fashion-resnet"[^}]*\} (\d+)`).FindSubmatch(metrics)
	if m == nil {
		t.Fatalf("no copy-in histogram in /metrics:\n%s", metrics)
	}
	if n, _ := strconv.Atoi(string(m[1])); n == 0 {
		t.Error("no execution timed its copy into the batch")
	}
	// A connection the transport dialled but never used holds fasthttp's
	// graceful shutdown until the read timeout (it is not idle to it).
	client.CloseIdleConnections()
	if bytes.Contains([]byte(logs.String()), []byte("panic")) {
		t.Errorf("logs mention a panic:\n%s", logs)
	}
}
