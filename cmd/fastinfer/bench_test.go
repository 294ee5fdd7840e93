package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"fastinfer/runtime"
)

// BenchmarkHTTPClassify measures images/s through the whole server (HTTP,
// decode and preprocessing, the batcher, ONNX Runtime) under 16 concurrent
// clients, next to ONNX Runtime alone on the same model at batch 1 and 8.
//
//	make deps && ONNXRUNTIME_LIB=$PWD/.cache/onnxruntime/1.29.0/libonnxruntime.so \
//	  go test -run XXX -bench HTTPClassify -benchtime 20s ./cmd/fastinfer
func BenchmarkHTTPClassify(b *testing.B) {
	repo := testRepo(b)
	model := filepath.Join(repo, "resnet50", "1", "model.onnx")
	for _, batch := range []int{1, 8} {
		b.Run(fmt.Sprintf("raw-batch%d", batch), func(b *testing.B) {
			s, err := cpuEnv(b).NewSession(model, runtime.SessionOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			bind, err := s.NewBinding(batch)
			if err != nil {
				b.Fatal(err)
			}
			defer bind.Close()
			bind.Run(batch)
			b.ResetTimer()
			for b.Loop() {
				if err := bind.Run(batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "images/s")
		})
	}
	for _, img := range []string{"fruits.jpg", "smarties.png"} {
		b.Run("http-16-clients-"+img, func(b *testing.B) {
			data, err := os.ReadFile(filepath.Join("..", "..", "vision", "testdata", img))
			if err != nil {
				b.Fatal(err)
			}
			base, _, stop := startServe(b, repo)
			defer stop()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
			b.SetParallelism(8) // 16 clients at GOMAXPROCS 2
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := client.Post(base+"/v1/models/resnet50/classify", "application/octet-stream", bytes.NewReader(data))
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "images/s")
		})
	}
}
