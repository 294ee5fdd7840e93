package gputest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"fastinfer/cuda"
	"fastinfer/internal/dtype"
	"fastinfer/internal/testutil"
	"fastinfer/models/fp16"
	"fastinfer/models/onnxpb"
	"fastinfer/models/resnet"
	"fastinfer/runtime"
)

var (
	env     *runtime.Env
	skipWhy string
	envErr  error
)

func TestMain(m *testing.M) {
	skipWhy, envErr = open()
	code := m.Run()
	if env != nil {
		env.Close()
	}
	testutil.RemoveModels()
	os.Exit(code)
}

// open opens ONNX Runtime for CUDA, or says why the tests must skip. No
// GPU is a normal state (skip); a GPU whose provider will not load is not
// (the tests fail on it).
func open() (string, error) {
	lib := os.Getenv(runtime.LibEnv)
	if lib == "" {
		return runtime.LibEnv + " is not set", nil
	}
	gpus := cuda.Discover()
	if !gpus.Available() {
		return "no GPU: " + gpus.Reason, nil
	}
	prov := filepath.Join(filepath.Dir(lib), "libonnxruntime_providers_cuda.so")
	if _, err := os.Stat(prov); err != nil {
		return "no CUDA provider library (make gpu-deps): " + err.Error(), nil
	}
	e, err := runtime.Open(runtime.Config{Lib: lib, Provider: runtime.ProviderCUDA, IntraOpThreads: 2,
		CUDA: runtime.CUDAOptions{Graphs: graphsMode}})
	env = e
	return "", err
}

// graphsMode is set by FASTINFER_TEST_CUDA_GRAPHS=1: ORT's environment is
// one per process, so the CUDA-graph tests run in a second invocation of
// the test binary, and only they run there.
var graphsMode = os.Getenv("FASTINFER_TEST_CUDA_GRAPHS") == "1"

func gpuEnv(t *testing.T) *runtime.Env {
	t.Helper()
	if graphsMode {
		t.Skip("FASTINFER_TEST_CUDA_GRAPHS=1 runs only the CUDA-graph tests")
	}
	return anyEnv(t)
}

func anyEnv(t testing.TB) *runtime.Env {
	t.Helper()
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
	if envErr != nil {
		t.Fatal(envErr)
	}
	return env
}

func resnet18(t *testing.T) string {
	return testutil.ModelFile(t, "resnet18", func() (*onnxpb.ModelProto, error) { return resnet.Build("resnet18", 1000, 1) })
}

// session opens path on the given kind and insists it landed there.
func session(t *testing.T, e *runtime.Env, path string, o runtime.SessionOptions, want string) *runtime.Session {
	t.Helper()
	s, err := e.NewSession(path, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if s.Provider() != want {
		t.Fatalf("session on %s, want %s (fallback reason: %s)", s.Provider(), want, s.FallbackReason())
	}
	return s
}

// relErr is ‖got − want‖ / ‖want‖.
func relErr(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i] - want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	return math.Sqrt(num / den)
}

// compare runs the same random rows through both sessions at each batch
// size and checks the CUDA logits against the CPU's.
func compare(t *testing.T, gpu, cpu *runtime.Session, batches []int, tol float64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, b := range batches {
		t.Run(fmt.Sprintf("batch%d", b), func(t *testing.T) {
			in := make([]float32, b*cpu.InputLen())
			for i := range in {
				in[i] = float32(rng.NormFloat64())
			}
			want := make([]float32, b*cpu.OutputLen())
			got := make([]float32, b*gpu.OutputLen())
			for i := range got {
				got[i] = float32(math.NaN()) // every element must be written
			}
			if err := cpu.Run(in, b, want); err != nil {
				t.Fatal(err)
			}
			if err := gpu.Run(in, b, got); err != nil {
				t.Fatal(err)
			}
			n := cpu.OutputLen()
			for r := range b {
				g, w := got[r*n:(r+1)*n], want[r*n:(r+1)*n]
				if e := relErr(g, w); !(e <= tol) { // NaN fails too
					t.Errorf("row %d: relative error %.2g over %.0g", r, e, tol)
				}
				if testutil.Argmax(g) != testutil.Argmax(w) {
					t.Errorf("row %d: top-1 %d on CUDA, %d on the CPU", r, testutil.Argmax(g), testutil.Argmax(w))
				}
			}
		})
	}
}

// The CUDA session computes what the CPU computes. cuDNN may use TF32
// for float32 convolutions (about 1e-3 relative), so the bound is 1e-2.
func TestCUDAMatchesCPU(t *testing.T) {
	e := gpuEnv(t)
	path := resnet18(t)
	gpu := session(t, e, path, runtime.SessionOptions{Kind: runtime.KindGPU}, runtime.ProviderCUDA)
	cpu := session(t, e, path, runtime.SessionOptions{Kind: runtime.KindCPU}, runtime.ProviderCPU)
	compare(t, gpu, cpu, []int{1, 3, 8, 32}, 1e-2)
}

// A float16 copy on CUDA stays close to float32 on the CPU.
func TestCUDAFloat16(t *testing.T) {
	e := gpuEnv(t)
	path := resnet18(t)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	h, _, err := fp16.Convert(&m, fp16.Options{})
	if err != nil {
		t.Fatal(err)
	}
	half, err := proto.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	gpu := session(t, e, path, runtime.SessionOptions{Kind: runtime.KindGPU, Model: half}, runtime.ProviderCUDA)
	cpu := session(t, e, path, runtime.SessionOptions{Kind: runtime.KindCPU}, runtime.ProviderCPU)
	compare(t, gpu, cpu, []int{1, 8}, 3e-2)
}

// A Binding on CUDA keeps its batch in pinned host memory, which the
// driver confirms (cuMemHostGetFlags, through the Binding having been
// given a cuda.HostBuffer), and computes what the CPU computes over it.
func TestPinnedBindingMatchesCPU(t *testing.T) {
	e := gpuEnv(t)
	path := resnet18(t)
	gpu := session(t, e, path, runtime.SessionOptions{Kind: runtime.KindGPU}, runtime.ProviderCUDA)
	cpu := session(t, e, path, runtime.SessionOptions{Kind: runtime.KindCPU}, runtime.ProviderCPU)
	if !gpu.PinnedHost() {
		t.Fatal("a CUDA session does not ask for pinned buffers")
	}
	b, err := gpu.NewBinding(32)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !b.Pinned() {
		t.Fatal("the Binding's buffers are not pinned (see the log for the driver's answer)")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, rows := range []int{1, 8, 32} {
		in := dtype.Float32s(b.Input(rows))
		for i := range in {
			in[i] = float32(rng.NormFloat64())
		}
		out := b.Output(rows)
		for i := range out {
			out[i] = float32(math.NaN())
		}
		if err := b.Run(rows); err != nil {
			t.Fatal(err)
		}
		want := make([]float32, len(out))
		if err := cpu.Run(in, rows, want); err != nil {
			t.Fatal(err)
		}
		if e := relErr(out, want); !(e <= 1e-2) {
			t.Errorf("batch %d: relative error %.2g", rows, e)
		}
	}
}

// BenchmarkCopies runs ResNet-18 at batch 64 on CUDA from pageable Go
// memory (Session.Run) and from a pinned Binding: the difference is the
// cost of copying 38 MB to the GPU through the driver's staging buffer.
// A staged Binding on CUDA: each slot's batch gives the CPU's answer
// while the other slot is being refilled during the run, as the
// scheduler's stager does.
func TestStagedBindingMatchesCPU(t *testing.T) {
	e := gpuEnv(t)
	path := resnet18(t)
	gpu := session(t, e, path, runtime.SessionOptions{Kind: runtime.KindGPU}, runtime.ProviderCUDA)
	cpu := session(t, e, path, runtime.SessionOptions{Kind: runtime.KindCPU}, runtime.ProviderCPU)
	const rows = 16
	b, err := gpu.NewStagedBinding(rows)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Slots() != 2 || !b.Pinned() {
		t.Fatalf("staged Binding: %d slots, pinned %v", b.Slots(), b.Pinned())
	}
	rng := rand.New(rand.NewPCG(5, 6))
	fillRandom := func(x []float32) {
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
	}
	fillRandom(dtype.Float32s(b.InputSlot(0, rows)))
	for round := range 4 {
		cur := round % 2
		want := make([]float32, rows*gpu.OutputLen())
		if err := cpu.Run(dtype.Float32s(b.InputSlot(cur, rows)), rows, want); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- b.RunSlot(cur, rows) }()
		fillRandom(dtype.Float32s(b.InputSlot(1-cur, rows))) // the next batch, during the run
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if e := relErr(b.Output(rows), want); !(e <= 1e-2) {
			t.Errorf("round %d (slot %d): relative error %.2g", round, cur, e)
		}
	}
}

func BenchmarkCopies(b *testing.B) {
	anyEnv(b)
	if graphsMode {
		b.Skip("a CUDA-graph session runs through Bindings only")
	}
	path := testutil.ModelFile(b, "resnet18", func() (*onnxpb.ModelProto, error) { return resnet.Build("resnet18", 1000, 1) })
	s, err := env.NewSession(path, runtime.SessionOptions{Kind: runtime.KindGPU})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const rows = 64
	bind, err := s.NewBinding(rows)
	if err != nil {
		b.Fatal(err)
	}
	defer bind.Close()
	in := make([]float32, rows*s.InputLen())
	out := make([]float32, rows*s.OutputLen())
	b.Run("pageable", func(b *testing.B) {
		for b.Loop() {
			if err := s.Run(in, rows, out); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "images/s")
	})
	b.Run("pinned", func(b *testing.B) {
		if !bind.Pinned() {
			b.Skip("pinning failed")
		}
		for b.Loop() {
			if err := bind.Run(rows); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "images/s")
	})
}

// With CUDA graphs, each bucket session captures its graph on its second
// run and replays it after; every replay must read the batch copied in
// for it, not the one it was captured with. Run with
// FASTINFER_TEST_CUDA_GRAPHS=1 (scripts/gpu-run.sh graphs does).
func TestCUDAGraphsMatchCPU(t *testing.T) {
	if !graphsMode {
		t.Skip("set FASTINFER_TEST_CUDA_GRAPHS=1 to run the CUDA-graph tests")
	}
	e := anyEnv(t)
	path := resnet18(t)
	sizes := []int{1, 8, 32}
	var sessions []*runtime.Session
	for range sizes {
		s := session(t, e, path, runtime.SessionOptions{Kind: runtime.KindGPU}, runtime.ProviderCUDA)
		if !s.Graphs() {
			t.Fatal("a CUDA session without CUDA graphs in graphs mode")
		}
		sessions = append(sessions, s)
	}
	cpu := session(t, e, path, runtime.SessionOptions{Kind: runtime.KindCPU}, runtime.ProviderCPU)
	b, err := runtime.NewBuckets(sessions, sizes)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	rng := rand.New(rand.NewPCG(5, 6))
	for pass := range 4 { // run 1 plain, 2 captures, 3 and 4 replay
		for _, rows := range []int{1, 5, 8, 32} {
			in := dtype.Float32s(b.Input(rows))
			for i := range in {
				in[i] = float32(rng.NormFloat64())
			}
			if err := b.Run(rows); err != nil {
				t.Fatalf("pass %d, %d rows: %v", pass, rows, err)
			}
			want := make([]float32, rows*cpu.OutputLen())
			if err := cpu.Run(in, rows, want); err != nil {
				t.Fatal(err)
			}
			if e := relErr(b.Output(rows), want); !(e <= 1e-2) {
				t.Errorf("pass %d, %d rows: relative error %.2g", pass, rows, e)
			}
		}
	}
}
