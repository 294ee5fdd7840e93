package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"fastinfer/models"
)

// copyVersion copies the committed default model's version src into repo
// as version dst; ready writes the READY marker.
func copyVersion(t *testing.T, repo string, src, dst int, ready bool) {
	t.Helper()
	from := filepath.Join("..", "..", "models", "fashion-resnet", fmt.Sprint(src))
	to := filepath.Join(repo, "fashion-resnet", fmt.Sprint(dst))
	if err := os.MkdirAll(to, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{models.ModelFile, models.CardFile} {
		b, err := os.ReadFile(filepath.Join(from, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if ready {
		os.WriteFile(filepath.Join(to, models.ReadyFile), nil, 0o644)
	}
}

func servedVersions(t *testing.T, base string) []string {
	t.Helper()
	resp, err := http.Get(base + "/v2/models/fashion-resnet")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var meta struct{ Versions []string }
	json.NewDecoder(resp.Body).Decode(&meta)
	return meta.Versions
}

func waitVersions(t *testing.T, base string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !slices.Equal(servedVersions(t, base), want) {
		if time.Now().After(deadline) {
			t.Fatalf("served versions %v, want %v", servedVersions(t, base), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func repoPost(t *testing.T, base, path, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", base+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Models change under load without a failed request: a new version loaded
// through the repository API, another found by polling, a broken one
// refused while the old keeps serving, and a half-written one ignored
// until its files stand still.
func TestModelChangesUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	repo := t.TempDir()
	src := filepath.Join("..", "..", "models", "fashion-resnet")
	os.MkdirAll(filepath.Join(repo, "fashion-resnet"), 0o755)
	for _, f := range []string{models.ConfigFile, "labels.txt"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(repo, "fashion-resnet", f), b, 0o644)
	}
	copyVersion(t, repo, 1, 1, true)
	base, logs, stop := startServe(t, repo, "--model-control", "poll", "--poll-interval", "200ms", "--admin-token", "adm")
	defer stop()
	waitVersions(t, base, "1")

	img, err := os.ReadFile(filepath.Join("..", "..", "testdata", "fashion", "test-0-ankle-boot.png"))
	if err != nil {
		t.Fatal(err)
	}
	var ok, failed atomic.Int64
	var firstFailure atomic.Value
	done := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}
	for range 50 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				resp, err := client.Post(base+"/v1/models/fashion-resnet/classify", "image/png", bytes.NewReader(img))
				if err != nil {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, err.Error())
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("%d %s", resp.StatusCode, b))
					continue
				}
				ok.Add(1)
			}
		})
	}
	// Explicit: version 2 (no READY marker) loaded on request; the
	// default policy (latest 1) retires version 1.
	copyVersion(t, repo, 2, 2, false)
	if code, body := repoPost(t, base, "/v2/repository/models/fashion-resnet/load", ""); code != 401 {
		t.Errorf("load without the admin token: %d %s", code, body)
	}
	if code, body := repoPost(t, base, "/v2/repository/models/fashion-resnet/load", "adm"); code != 200 {
		t.Fatalf("load: %d %s", code, body)
	}
	waitVersions(t, base, "2")

	// Poll: version 3 with its READY marker is picked up.
	copyVersion(t, repo, 1, 3, true)
	waitVersions(t, base, "3")

	// A broken version 4 is refused; version 3 keeps serving.
	v4 := filepath.Join(repo, "fashion-resnet", "4")
	os.MkdirAll(v4, 0o755)
	os.WriteFile(filepath.Join(v4, models.ModelFile), []byte("not an onnx file"), 0o644)
	os.WriteFile(filepath.Join(v4, models.ReadyFile), nil, 0o644)
	if code, body := repoPost(t, base, "/v2/repository/models/fashion-resnet/load", "adm"); code != 400 || !strings.Contains(body, "error") {
		t.Errorf("loading a broken version: %d %s", code, body)
	}
	time.Sleep(600 * time.Millisecond) // a few polls: they must not take v3 down
	if v := servedVersions(t, base); !slices.Equal(v, []string{"3"}) {
		t.Fatalf("after a broken version: serving %v", v)
	}
	os.RemoveAll(v4)

	// Half-written: version 5's model grows for a while (no READY); it is
	// not loaded until its files stop changing.
	v5 := filepath.Join(repo, "fashion-resnet", "5")
	os.MkdirAll(v5, 0o755)
	full, err := os.ReadFile(filepath.Join(src, "1", models.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 10; i++ {
		os.WriteFile(filepath.Join(v5, models.ModelFile), full[:len(full)*i/20], 0o644)
		time.Sleep(100 * time.Millisecond)
		if v := servedVersions(t, base); !slices.Equal(v, []string{"3"}) {
			t.Fatalf("a half-written version was loaded: serving %v", v)
		}
	}
	os.WriteFile(filepath.Join(v5, models.ModelFile), full, 0o644)
	waitVersions(t, base, "5")

	close(done)
	wg.Wait()

	// Unload through the API: the model stops serving.
	if code, body := repoPost(t, base, "/v2/repository/models/fashion-resnet/unload", "adm"); code != 200 {
		t.Fatalf("unload: %d %s", code, body)
	}
	// Polls must not undo it: it stays unloaded until the API loads it.
	time.Sleep(600 * time.Millisecond)
	code, body := repoPost(t, base, "/v2/repository/index", "adm")
	if code != 200 || !strings.Contains(body, `"state":"UNAVAILABLE"`) {
		t.Errorf("index after unload and three polls: %d %s", code, body)
	}
	if code, body := repoPost(t, base, "/v2/repository/models/fashion-resnet/load", "adm"); code != 200 {
		t.Fatalf("load after unload: %d %s", code, body)
	}
	waitVersions(t, base, "5")
	if f := failed.Load(); f > 0 {
		t.Errorf("%d of %d requests failed during the changes; first: %v", f, f+ok.Load(), firstFailure.Load())
	}
	if ok.Load() < 100 {
		t.Errorf("only %d requests answered", ok.Load())
	}
	t.Logf("%d requests answered while versions changed", ok.Load())
	if strings.Contains(logs.String(), "panic") {
		t.Errorf("logs mention a panic:\n%s", logs)
	}
}

// Faults in the repository while serving with polling: a corrupted
// config.yaml keeps the loaded version serving (and is reported in the
// index); a deleted model folder unloads the model; the server never
// stops answering the other model.
func TestRepositoryFaultsWhileServing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	repo := t.TempDir()
	src := filepath.Join("..", "..", "models", "fashion-resnet")
	for _, name := range []string{"fashion-resnet", "spare"} {
		os.MkdirAll(filepath.Join(repo, name), 0o755)
		for _, f := range []string{models.ConfigFile, "labels.txt"} {
			b, err := os.ReadFile(filepath.Join(src, f))
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(repo, name, f), b, 0o644)
		}
	}
	copyVersion(t, repo, 3, 1, true)
	// copyVersion writes fashion-resnet; the spare model gets the same files.
	os.MkdirAll(filepath.Join(repo, "spare", "1"), 0o755)
	for _, f := range []string{models.ModelFile, models.CardFile} {
		b, _ := os.ReadFile(filepath.Join(repo, "fashion-resnet", "1", f))
		os.WriteFile(filepath.Join(repo, "spare", "1", f), b, 0o644)
	}
	base, logs, stop := startServe(t, repo, "--model-control", "poll", "--poll-interval", "150ms")
	defer stop()
	img, err := os.ReadFile(filepath.Join("..", "..", "testdata", "fashion", "test-0-ankle-boot.png"))
	if err != nil {
		t.Fatal(err)
	}
	classify := func(model string) int {
		t.Helper()
		resp, err := http.Post(base+"/v1/models/"+model+"/classify", "image/png", bytes.NewReader(img))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if classify("fashion-resnet") != 200 || classify("spare") != 200 {
		t.Fatal("models not serving at start")
	}
	// Corrupt the config: polls report it, the loaded version serves on.
	os.WriteFile(filepath.Join(repo, "fashion-resnet", models.ConfigFile), []byte("preproces: {crop: 28\n"), 0o644)
	time.Sleep(600 * time.Millisecond)
	if s := classify("fashion-resnet"); s != 200 {
		t.Fatalf("after a corrupted config.yaml: %d", s)
	}
	if !strings.Contains(logs.String(), "still serving what was loaded") {
		t.Errorf("the corrupted config was not reported:\n%s", logs)
	}
	// Delete the whole folder: the model is unloaded, the other serves.
	os.RemoveAll(filepath.Join(repo, "fashion-resnet"))
	deadline := time.Now().Add(10 * time.Second)
	for classify("fashion-resnet") != 404 {
		if time.Now().After(deadline) {
			t.Fatal("a deleted model kept serving")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if s := classify("spare"); s != 200 {
		t.Fatalf("the other model after a deletion: %d", s)
	}
}
