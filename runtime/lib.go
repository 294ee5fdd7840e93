package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ORTVersion is the ONNX Runtime release scripts/deps.sh installs.
const ORTVersion = "1.29.0"

// LibEnv is the environment variable consulted after the --ort-lib flag.
const LibEnv = "ONNXRUNTIME_LIB"

// cacheRel is where scripts/deps.sh unpacks the library, relative to the
// repository root.
var cacheRel = filepath.Join(".cache", "onnxruntime", ORTVersion, "libonnxruntime.so")

// ErrNoLibrary is returned (wrapped) when no candidate library exists.
var ErrNoLibrary = errors.New("ONNX Runtime library not found")

// ResolveLib finds libonnxruntime.so in the documented order: the flag value,
// the ONNXRUNTIME_LIB environment variable, then the cache folder (looked up
// from the working directory and from the executable's parent folder, so
// bin/fastinfer finds ../.cache). The error names every place it tried.
func ResolveLib(flag string) (string, error) {
	type cand struct{ from, path string }
	var cands []cand
	if flag != "" {
		cands = append(cands, cand{"--ort-lib", flag})
	}
	if env := os.Getenv(LibEnv); env != "" {
		cands = append(cands, cand{LibEnv, env})
	}
	if wd, err := os.Getwd(); err == nil {
		cands = append(cands, cand{"cache folder", filepath.Join(wd, cacheRel)})
	}
	if exe, err := os.Executable(); err == nil {
		root := filepath.Dir(filepath.Dir(exe))
		cands = append(cands, cand{"cache folder", filepath.Join(root, cacheRel)})
	}
	var tried []string
	for _, c := range cands {
		st, err := os.Stat(c.path)
		if err == nil && !st.IsDir() {
			return c.path, nil
		}
		tried = append(tried, fmt.Sprintf("%s %s", c.from, c.path))
	}
	if flag == "" {
		tried = append([]string{"--ort-lib (not set)"}, tried...)
	}
	if os.Getenv(LibEnv) == "" {
		tried = append(tried, LibEnv+" (not set)")
	}
	return "", fmt.Errorf("%w: tried %s; run `make deps` (or scripts/deps.sh) to install it into %s, or point --ort-lib / %s at libonnxruntime.so",
		ErrNoLibrary, strings.Join(tried, ", "), filepath.Dir(cacheRel), LibEnv)
}

// cudaProviderLib is the CUDA execution provider library ORT loads from the
// folder of libonnxruntime.so.
func cudaProviderLib(ortLib string) string {
	return filepath.Join(filepath.Dir(ortLib), "libonnxruntime_providers_cuda.so")
}
