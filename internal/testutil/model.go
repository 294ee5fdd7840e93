package testutil

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"fastinfer/models/onnxpb"
)

var (
	modelsMu  sync.Mutex
	modelDir  string
	modelPath = map[string]string{}
)

// ModelFile writes the model build returns to a temporary file once per
// test binary and key, and returns its path. Call RemoveModels from
// TestMain to delete the files.
func ModelFile(t testing.TB, key string, build func() (*onnxpb.ModelProto, error)) string {
	t.Helper()
	modelsMu.Lock()
	defer modelsMu.Unlock()
	if p, ok := modelPath[key]; ok {
		return p
	}
	m, err := build()
	if err != nil {
		t.Fatal(err)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if modelDir == "" {
		if modelDir, err = os.MkdirTemp("", "fastinfer-test-models-"); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(modelDir, key+".onnx")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	modelPath[key] = p
	return p
}

// RemoveModels deletes the files ModelFile wrote.
func RemoveModels() {
	modelsMu.Lock()
	defer modelsMu.Unlock()
	if modelDir != "" {
		os.RemoveAll(modelDir)
		modelDir = ""
		clear(modelPath)
	}
}

// WriteModel marshals m into dir/name and returns the path.
func WriteModel(t testing.TB, dir, name string, m *onnxpb.ModelProto) string {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
