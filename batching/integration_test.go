package batching_test

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"fastinfer/batching"
	"fastinfer/internal/cpusched"
	"fastinfer/internal/dtype"
	"fastinfer/internal/testutil"
	"fastinfer/models/onnxpb"
	"fastinfer/models/resnet"
	"fastinfer/runtime"
)

// The batcher on the real runtime: these tests and benchmarks need ONNX
// Runtime (make test sets ONNXRUNTIME_LIB).

var (
	envOnce sync.Once
	env     *runtime.Env
	envErr  error
)

func openEnv(t testing.TB) *runtime.Env {
	t.Helper()
	if testing.Short() {
		t.Skip("needs ONNX Runtime and a ResNet; skipped in -short")
	}
	envOnce.Do(func() {
		lib := os.Getenv(runtime.LibEnv)
		if lib == "" {
			envErr = fmt.Errorf("%s is not set: run the tests with `make test`", runtime.LibEnv)
			return
		}
		// FASTINFER_BENCH_PROVIDER=cuda measures the GPU (see
		// BenchmarkRawVsBatcher); the tests themselves run on the CPU.
		provider := cmp.Or(os.Getenv("FASTINFER_BENCH_PROVIDER"), runtime.ProviderCPU)
		env, envErr = runtime.Open(runtime.Config{Lib: lib, Provider: provider})
	})
	if envErr != nil {
		t.Fatal(envErr)
	}
	return env
}

// model writes a seeded ResNet once per test binary.
func model(t testing.TB, arch string) string {
	return testutil.ModelFile(t, arch, func() (*onnxpb.ModelProto, error) { return resnet.Build(arch, 1000, 7) })
}

func TestMain(m *testing.M) {
	// Run as `fastinfer serve` does (--sched, FASTINFER_SCHED; default
	// batch), so BenchmarkRawVsBatcher measures the server's setting.
	sched := os.Getenv("FASTINFER_SCHED")
	if sched == "" {
		sched = cpusched.Batch
	}
	if _, err := cpusched.Set(sched); err != nil {
		fmt.Fprintln(os.Stderr, "scheduling policy:", err)
	}
	code := m.Run()
	testutil.RemoveModels()
	os.Exit(code)
}

// instances opens n sessions with a binding of maxRows each (staged:
// with two input slots).
func instances(t testing.TB, e *runtime.Env, path string, n, maxRows, threads int, staged bool) (*runtime.Session, []batching.Instance) {
	t.Helper()
	var first *runtime.Session
	var insts []batching.Instance
	for range n {
		s, err := e.NewSession(path, runtime.SessionOptions{Threads: threads})
		if err != nil {
			t.Fatal(err)
		}
		newB := s.NewBinding
		if staged {
			newB = s.NewStagedBinding
		}
		b, err := newB(maxRows)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close(); s.Close() })
		if first == nil {
			first = s
		}
		insts = append(insts, b)
	}
	return first, insts
}

// Rows batched with other requests' rows (and split across executions)
// give the same outputs as each row run alone.
func TestBatchedEqualsUnbatched(t *testing.T) {
	for _, staged := range []bool{false, true} {
		t.Run(fmt.Sprintf("staged=%v", staged), func(t *testing.T) { batchedEqualsUnbatched(t, staged) })
	}
}

func batchedEqualsUnbatched(t *testing.T, staged bool) {
	e := openEnv(t)
	path := model(t, "resnet18")
	ref, insts := instances(t, e, path, 2, 4, 1, staged)
	const images = 10
	in := make([]float32, images*ref.InputLen())
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range in {
		in[i] = float32(rng.NormFloat64())
	}
	want := make([]float32, images*ref.OutputLen())
	for i := range images {
		if err := ref.Run(in[i*ref.InputLen():(i+1)*ref.InputLen()], 1, want[i*ref.OutputLen():(i+1)*ref.OutputLen()]); err != nil {
			t.Fatal(err)
		}
	}
	s, err := batching.New(batching.Config{MaxBatchSize: 4, MaxQueueDelay: 5e6, PreferredBatchSizes: []int{4}}, ref.InputBytes(), ref.OutputLen(), insts, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Requests of 1, 2, 3 and 4 rows at once: some share executions, the
	// 4-row one may be split.
	got := make([]float32, len(want))
	var wg sync.WaitGroup
	maxBatch := 0
	var mu sync.Mutex
	for _, req := range [][2]int{{0, 1}, {1, 2}, {3, 3}, {6, 4}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from, rows := req[0], req[1]
			tm, err := s.Do(context.Background(), in[from*ref.InputLen():(from+rows)*ref.InputLen()], rows,
				got[from*ref.OutputLen():(from+rows)*ref.OutputLen()], batching.RequestOptions{})
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			maxBatch = max(maxBatch, tm.BatchRows)
			mu.Unlock()
		}()
	}
	wg.Wait()
	worst := 0.0
	for i := range want {
		worst = math.Max(worst, math.Abs(float64(got[i]-want[i])))
	}
	if worst > 1e-4 {
		t.Fatalf("batched outputs differ from unbatched by up to %g", worst)
	}
	if maxBatch < 2 {
		t.Errorf("no request shared an execution (largest batch %d)", maxBatch)
	}
	t.Logf("max abs difference %g, largest batch %d", worst, maxBatch)
}

// bucketed is the batcher's instance on a GPU, as the server builds it:
// runtime.Buckets over one session per bucket size, pinned to its
// worker's thread and warmed there.
type bucketed struct{ *runtime.Buckets }

func (b bucketed) Warmup() error {
	for _, n := range b.Sizes() {
		for slot := range b.Slots() {
			if err := b.RunSlot(slot, n); err != nil {
				return err
			}
		}
	}
	return nil
}

func bucketedInstance(t testing.TB, e *runtime.Env, path string, maxRows int, staged bool) batching.Instance {
	sizes := runtime.BucketSizes(maxRows)
	var sessions []*runtime.Session
	for range sizes {
		s, err := e.NewSession(path, runtime.SessionOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		sessions = append(sessions, s)
	}
	newB := runtime.NewBuckets
	if staged {
		newB = runtime.NewStagedBuckets
	}
	bk, err := newB(sessions, sizes)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bk.Close() })
	return bucketed{bk}
}

// benchBatches are BenchmarkRawVsBatcher's batch sizes:
// FASTINFER_BENCH_BATCHES (e.g. 1,8,32,64 on a GPU), else 1 and 8.
func benchBatches(t testing.TB) []int {
	v := os.Getenv("FASTINFER_BENCH_BATCHES")
	if v == "" {
		return []int{1, 8}
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			t.Fatalf("FASTINFER_BENCH_BATCHES: bad size %q", f)
		}
		out = append(out, n)
	}
	return out
}

// BenchmarkRawVsBatcher compares images/s of the raw binding at batch B
// with the batcher fed by B concurrent single-image requests, on one
// instance with all cores, and by 2B requests on a plain and on a staged
// instance. On a GPU (FASTINFER_BENCH_PROVIDER=cuda), or with
// FASTINFER_BENCH_BUCKETS=1, the batcher's instances are bucketed as the
// server's are there.
func BenchmarkRawVsBatcher(b *testing.B) {
	for _, arch := range []string{"resnet18", "resnet50"} {
		for _, batch := range benchBatches(b) {
			e := openEnv(b)
			path := model(b, arch)
			ref, insts := instances(b, e, path, 1, batch, 0, false)
			bind := insts[0].(*runtime.Binding)
			// The staged batcher's instance: one more session, since a
			// staged instance is not shared with the plain one.
			_, stagedInsts := instances(b, e, path, 1, batch, 0, true)
			if runtime.OnGPU(ref.Provider()) || os.Getenv("FASTINFER_BENCH_BUCKETS") == "1" {
				insts = []batching.Instance{bucketedInstance(b, e, path, batch, false)}
				stagedInsts = []batching.Instance{bucketedInstance(b, e, path, batch, true)}
			}
			b.Run(fmt.Sprintf("%s/batch%d/raw", arch, batch), func(b *testing.B) {
				for b.Loop() {
					if err := bind.Run(batch); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "images/s")
			})
			// raw with the batcher's copies: each run first copies batch
			// separate request buffers in and the outputs out, as the
			// batcher must; it tells the copies' cost from the hand-off's.
			b.Run(fmt.Sprintf("%s/batch%d/rawcopy", arch, batch), func(b *testing.B) {
				srcs := make([][]float32, batch)
				for i := range srcs {
					srcs[i] = make([]float32, ref.InputLen())
				}
				dst := make([]float32, batch*ref.OutputLen())
				for b.Loop() {
					in := dtype.Float32s(bind.Input(batch))
					for i, src := range srcs {
						copy(in[i*ref.InputLen():], src)
					}
					if err := bind.Run(batch); err != nil {
						b.Fatal(err)
					}
					copy(dst, bind.Output(batch))
				}
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "images/s")
			})
			// batch clients fill one batch; twice as many keep a second
			// batch queued, which a staged instance copies in during the
			// run (and which a saturated server always has).
			for _, v := range []struct {
				name    string
				insts   []batching.Instance
				clients int
			}{{"batcher", insts, batch}, {"batcher-2x", insts, 2 * batch}, {"staged-2x", stagedInsts, 2 * batch}} {
				b.Run(fmt.Sprintf("%s/batch%d/%s", arch, batch, v.name), func(b *testing.B) { benchBatcher(b, ref, v.insts, batch, v.clients) })
			}
		}
	}
}

// benchBatcher is BenchmarkRawVsBatcher's batcher side: at least clients
// concurrent single-row clients on one instance.
func benchBatcher(b *testing.B, ref *runtime.Session, insts []batching.Instance, batch, clients int) {
	s, err := batching.New(batching.Config{MaxBatchSize: batch, MaxQueueDelay: 5e6, PreferredBatchSizes: []int{batch}},
		ref.InputBytes(), ref.OutputLen(), insts, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	// clients (at least), whatever GOMAXPROCS is
	b.SetParallelism(max((clients+goruntime.GOMAXPROCS(0)-1)/goruntime.GOMAXPROCS(0), 1))
	var computeNS atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		in := make([]float32, ref.InputLen())
		out := make([]float32, ref.OutputLen())
		for pb.Next() {
			tm, err := s.Do(context.Background(), in, 1, out, batching.RequestOptions{})
			if err != nil {
				b.Error(err)
				return
			}
			computeNS.Add(int64(tm.Compute) / int64(max(tm.BatchRows, 1)))
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "images/s")
	// Execution time per image inside the batcher: compared with
	// the raw ns/op ÷ batch it separates slower executions
	// (interference) from gaps between them (hand-off).
	b.ReportMetric(float64(computeNS.Load())/float64(b.N)/1e6, "exec-ms/image")
}
