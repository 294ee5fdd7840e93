package runtime

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"fastinfer/cuda"
	"fastinfer/internal/testutil"
	"fastinfer/models/onnxpb"
	"fastinfer/models/resnet"
)

// The ORT environment is process-wide, so every test shares one, opened by
// TestMain from a copy of the real library in a folder that also holds a
// broken CUDA provider library: with a fake GPU injected, auto mode tries
// CUDA for real, ORT fails to load the provider, and we must land on CPU.
var (
	testEnv  *Env
	testLogs *testutil.Buffer
	envErr   error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fastinfer-ort-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	envErr = setupEnv(dir)
	code := m.Run()
	if testEnv != nil {
		testEnv.Close()
	}
	os.RemoveAll(dir)
	testutil.RemoveModels()
	os.Exit(code)
}

func setupEnv(dir string) error {
	lib := os.Getenv(LibEnv)
	if lib == "" {
		return fmt.Errorf("%s is not set: run the tests with `make test`", LibEnv)
	}
	for _, name := range []string{"libonnxruntime.so", "libonnxruntime_providers_shared.so"} {
		if err := copyFile(filepath.Join(filepath.Dir(lib), name), filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	// Not ELF files: the TensorRT and CUDA providers must both fail.
	for _, lib := range []string{cudaProviderLib(filepath.Join(dir, "x")), tensorRTProviderLib(filepath.Join(dir, "x"))} {
		if err := os.WriteFile(lib, []byte("not a shared library"), 0o644); err != nil {
			return err
		}
	}
	testLogs = &testutil.Buffer{}
	e, err := Open(Config{
		Lib:            filepath.Join(dir, "libonnxruntime.so"),
		IntraOpThreads: 1,
		GPUs: func() cuda.Info {
			return cuda.Info{Devices: []cuda.Device{{Index: 0, Name: "Fake GPU", TotalMemory: 80 << 30}}, DriverVersion: "13.0"}
		},
		Logger: slog.New(slog.NewTextHandler(testLogs, nil)),
	})
	testEnv = e
	return err
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func env(t *testing.T) *Env {
	t.Helper()
	if envErr != nil {
		t.Fatal(envErr)
	}
	return testEnv
}

// resnet18 is a seeded ResNet-18 written once per test binary.
func resnet18(t testing.TB) string {
	return testutil.ModelFile(t, "resnet18", func() (*onnxpb.ModelProto, error) { return resnet.Build("resnet18", 1000, 1) })
}

func TestResolveLibOrder(t *testing.T) {
	dir := t.TempDir()
	flagLib := filepath.Join(dir, "flag.so")
	envLib := filepath.Join(dir, "env.so")
	for _, p := range []string{flagLib, envLib} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cacheDir := t.TempDir()
	cacheLib := filepath.Join(cacheDir, cacheRel)
	if err := os.MkdirAll(filepath.Dir(cacheLib), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cacheLib, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, flag, env, wd, want string
		wantErr                   bool
	}{
		{name: "flag wins", flag: flagLib, env: envLib, wd: cacheDir, want: flagLib},
		{name: "env next", env: envLib, wd: cacheDir, want: envLib},
		{name: "cache last", wd: cacheDir, want: cacheLib},
		{name: "missing flag falls through", flag: filepath.Join(dir, "nope.so"), wd: cacheDir, want: cacheLib},
		{name: "none", wd: t.TempDir(), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(LibEnv, tt.env)
			t.Chdir(tt.wd)
			got, err := ResolveLib(tt.flag)
			if tt.wantErr {
				if !errors.Is(err, ErrNoLibrary) {
					t.Fatalf("err = %v, want ErrNoLibrary", err)
				}
				for _, s := range []string{"--ort-lib", LibEnv, "cache folder"} {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not name %s", err, s)
					}
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ResolveLib = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestCUDAPlan(t *testing.T) {
	gpu := cuda.Info{Devices: []cuda.Device{{Name: "H100"}}}
	none := cuda.Info{Reason: "libcuda.so.1 not found"}
	tests := []struct {
		name       string
		want       string
		gpus       cuda.Info
		libPresent bool
		try        bool
		reason     string
	}{
		{"cpu asked", ProviderCPU, gpu, true, false, ""},
		{"auto with gpu and lib", ProviderAuto, gpu, true, true, ""},
		{"auto without gpu", ProviderAuto, none, true, false, "libcuda.so.1 not found"},
		{"auto gpu no lib", ProviderAuto, gpu, false, false, "make gpu-deps"},
		{"cuda forced without gpu", ProviderCUDA, none, true, true, ""},
		{"cuda forced no lib", ProviderCUDA, gpu, false, false, "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			try, reason := cudaPlan(tt.want, tt.gpus, tt.libPresent, "/x/libonnxruntime_providers_cuda.so")
			if try != tt.try || !strings.Contains(reason, tt.reason) || (tt.reason == "" && reason != "") {
				t.Fatalf("cudaPlan = %v, %q; want %v, %q", try, reason, tt.try, tt.reason)
			}
		})
	}
}

func TestParseOptLevel(t *testing.T) {
	for _, s := range []string{"", "all", "extended", "basic", "disable"} {
		if _, err := parseOptLevel(s); err != nil {
			t.Errorf("parseOptLevel(%q): %v", s, err)
		}
	}
	if _, err := parseOptLevel("turbo"); err == nil {
		t.Error("parseOptLevel(turbo) succeeded")
	}
}

// A GPU that discovery reports but whose CUDA provider cannot load must give
// a working CPU session, and say why, once.
func TestBrokenCUDAProviderFallsBackToCPU(t *testing.T) {
	e := env(t)
	path := resnet18(t)
	for range 2 {
		s, err := e.NewSession(path, SessionOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if s.Provider() != ProviderCPU {
			t.Fatalf("provider = %s, want cpu", s.Provider())
		}
		// This library has no legacy CUDA entry point, so the plugin path
		// runs and must name the provider library it could not load.
		if r := s.FallbackReason(); !strings.Contains(r, "CUDA provider failed to initialise") || !strings.Contains(r, "libonnxruntime_providers_cuda.so") {
			t.Fatalf("fallback reason = %q", s.FallbackReason())
		}
		s.Close()
	}
	if n := strings.Count(testLogs.String(), "falling back to CPU"); n != 1 {
		t.Fatalf("fallback logged %d times, want once:\n%s", n, testLogs.String())
	}
	// TensorRT's library is there too, so it was tried first, failed, and
	// said so once.
	if n := strings.Count(testLogs.String(), "TensorRT execution provider unusable, trying CUDA"); n != 1 {
		t.Fatalf("TensorRT failure logged %d times, want once:\n%s", n, testLogs.String())
	}
}

func TestSessionIntrospectionAndRun(t *testing.T) {
	e := env(t)
	s, err := e.NewSession(resnet18(t), SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := fmt.Sprint(s.Input()); got != "{data FP32 [-1 3 224 224]}" {
		t.Errorf("input = %s", got)
	}
	if got := fmt.Sprint(s.Output()); got != "{logits FP32 [-1 1000]}" {
		t.Errorf("output = %s", got)
	}
	if s.InputLen() != 3*224*224 || s.OutputLen() != 1000 {
		t.Errorf("row lengths %d, %d", s.InputLen(), s.OutputLen())
	}
	const batch = 2
	in := make([]float32, batch*s.InputLen())
	for i := range in {
		in[i] = float32(math.Sin(float64(i)))
	}
	// Row 1 differs from row 0, so the outputs must too.
	for i := s.InputLen(); i < len(in); i++ {
		in[i] *= 0.5
	}
	out := make([]float32, batch*s.OutputLen())
	if err := s.Run(in, batch, out); err != nil {
		t.Fatal(err)
	}
	same := true
	for i := range s.OutputLen() {
		if math.IsNaN(float64(out[i])) || math.IsInf(float64(out[i]), 0) {
			t.Fatalf("output %d is %v", i, out[i])
		}
		if out[i] != out[s.OutputLen()+i] {
			same = false
		}
	}
	if same {
		t.Error("two different rows gave identical outputs")
	}
	// Batch of one gives the same row-0 answer as the batch of two.
	one := make([]float32, s.OutputLen())
	if err := s.Run(in[:s.InputLen()], 1, one); err != nil {
		t.Fatal(err)
	}
	for i := range one {
		if d := math.Abs(float64(one[i] - out[i])); d > 1e-4 {
			t.Fatalf("logit %d: batch-1 %v vs batch-2 %v", i, one[i], out[i])
		}
	}
}

func TestRunRejectsShortBuffers(t *testing.T) {
	e := env(t)
	s, err := e.NewSession(resnet18(t), SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tests := []struct {
		name    string
		in, out int
		batch   int
	}{
		{"zero batch", s.InputLen(), s.OutputLen(), 0},
		{"short input", s.InputLen() - 1, s.OutputLen(), 1},
		{"short output", s.InputLen(), s.OutputLen() - 1, 1},
		{"batch past buffers", s.InputLen(), s.OutputLen(), 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Run(make([]float32, tt.in), tt.batch, make([]float32, tt.out))
			if !errors.Is(err, ErrShape) {
				t.Fatalf("err = %v, want ErrShape", err)
			}
		})
	}
}

func TestNewSessionErrors(t *testing.T) {
	e := env(t)
	garbage := filepath.Join(t.TempDir(), "model.onnx")
	if err := os.WriteFile(garbage, []byte("definitely not protobuf"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path string
		opts       SessionOptions
		want       string
	}{
		{"missing file", filepath.Join(t.TempDir(), "none.onnx"), SessionOptions{}, "none.onnx"},
		{"garbage file", garbage, SessionOptions{}, "model.onnx"},
		{"unknown input", resnet18(t), SessionOptions{Input: "pixels"}, `no input named "pixels"`},
		{"unknown output", resnet18(t), SessionOptions{Output: "probs"}, `no output named "probs"`},
		{"row shape mismatch", resnet18(t), SessionOptions{RowShape: []int64{3, 32, 32}}, "does not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := e.NewSession(tt.path, tt.opts)
			if err == nil {
				s.Close()
				t.Fatal("NewSession succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

func TestOpenTwiceSharesAndRefusesOtherLib(t *testing.T) {
	e := env(t)
	again, err := Open(Config{Lib: e.Lib()})
	if err != nil || again != e {
		t.Fatalf("second Open = %p, %v; want the shared env %p", again, err, e)
	}
	again.Close()
	if _, err := Open(Config{Lib: "/elsewhere/libonnxruntime.so"}); err == nil {
		t.Fatal("Open with another library succeeded")
	}
}

func BenchmarkRunResNet18Batch1(b *testing.B) {
	if envErr != nil {
		b.Fatal(envErr)
	}
	s, err := testEnv.NewSession(resnet18(b), SessionOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	in := make([]float32, s.InputLen())
	out := make([]float32, s.OutputLen())
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Run(in, 1, out); err != nil {
			b.Fatal(err)
		}
	}
}
