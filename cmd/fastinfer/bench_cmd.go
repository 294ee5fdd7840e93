package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	neturl "net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"fastinfer/bench"
	"fastinfer/cuda"
	"fastinfer/internal/dtype"
	"fastinfer/models"
	"fastinfer/runtime"
)

type benchConfig struct {
	url, grpcAddr, models        string
	model, images                string
	targets                      string
	compare                      bool
	concurrency, rates, arrivals string
	batch                        int
	rawBatches                   string
	warmup, window, duration     time.Duration
	stability                    float64
	maxWindows                   int
	serveFlags                   string
	ortLib, provider             string
	hostMemory                   string
	intraOpSpin                  string
	graphs                       bool
	repeat                       int
	out, svg, description        string
	seed                         uint64
	tlsCA, tlsCert, tlsKey       string
}

func benchFlags(fs *flag.FlagSet) *benchConfig {
	c := &benchConfig{}
	fs.StringVar(&c.url, "url", "", "server to load (http://host:port); empty starts `fastinfer serve` on a free loopback port for the run")
	fs.StringVar(&c.grpcAddr, "grpc-addr", "", "the gRPC API of the server at --url, for the grpc target (default: --url's host, port 8001)")
	fs.StringVar(&c.models, "models", "models", "model repository (for the started server and the raw target)")
	fs.StringVar(&c.model, "model", "", "model to load (default: the repository's only model)")
	fs.StringVar(&c.targets, "targets", "image", "comma-separated: image (HTTP image upload), tensor (HTTP binary tensor), grpc (the tensor over gRPC), shm (the tensor through system shared memory: a server on this host, with --allow-client-shm), cudashm (the same through CUDA shared memory, from device memory on GPU 0), raw (ONNX Runtime in-process, the ceiling)")
	fs.BoolVar(&c.compare, "compare", false, "run raw, tensor and image on the same model and print the ratios")
	fs.StringVar(&c.images, "images", "", "images for the image target, sent in turn: a folder of .jpg/.png files, or comma-separated files and globs")
	fs.StringVar(&c.concurrency, "concurrency", "1,4,16", "closed-loop sweep: requests kept outstanding; START:END[:STEP] ranges as perf_analyzer's --concurrency-range")
	fs.StringVar(&c.rates, "rate", "", "open-loop sweep in requests/s (replaces --concurrency)")
	fs.StringVar(&c.arrivals, "arrivals", "constant", "open-loop arrivals: constant or poisson")
	fs.IntVar(&c.batch, "batch", 1, "images per tensor request")
	fs.StringVar(&c.rawBatches, "raw-batches", "1,2,4,8,16", "batch sizes for the raw target (the best is the ceiling)")
	fs.DurationVar(&c.warmup, "warmup", 2*time.Second, "load before measuring each step")
	fs.DurationVar(&c.window, "window", 2*time.Second, "measurement window")
	fs.Float64Var(&c.stability, "stability", 0.10, "a step is stable when its last 3 windows are within ± this of their mean")
	fs.IntVar(&c.maxWindows, "max-windows", 10, "windows before giving up on stability")
	fs.DurationVar(&c.duration, "duration", 0, "measure each step exactly this long instead of until stable")
	fs.StringVar(&c.serveFlags, "serve-flags", "", "extra flags for the started server, space-separated")
	fs.StringVar(&c.ortLib, "ort-lib", "", "libonnxruntime.so for the raw target")
	fs.StringVar(&c.provider, "provider", "auto", "execution provider for the raw target: auto, cuda or cpu")
	fs.BoolVar(&c.graphs, "cuda-graphs", false, "the raw target with CUDA graphs, one session per batch size (as serve's flag)")
	fs.StringVar(&c.intraOpSpin, "intra-op-spin", runtime.DefaultSpin.String(), "how long the raw target's idle ONNX Runtime threads spin before sleeping (as serve's flag; give the started server its own in --serve-flags)")
	fs.StringVar(&c.hostMemory, "gpu-host-memory", runtime.HostPinned, "the raw target's batch buffers on a GPU: pinned or pageable (as serve's flag; give the started server its own in --serve-flags)")
	fs.StringVar(&c.out, "out", "", "write results as JSON to this file, or into this folder (ending in /) as DATE-DEVICE-MODEL.json with its .svg")
	fs.StringVar(&c.svg, "svg", "", "write a latency/throughput plot to this SVG file")
	fs.StringVar(&c.description, "description", "", "free text stored in the results")
	fs.Uint64Var(&c.seed, "seed", 1, "seed for tensor contents and Poisson arrivals")
	fs.StringVar(&c.tlsCA, "tls-ca", "", "PEM CA certificates to trust, and speak TLS: to an https:// --url and its gRPC API, or to the started server (give it its pair in --serve-flags)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM client certificate, for a server with --tls-client-ca")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.IntVar(&c.repeat, "repeat", 1, "run the whole sweep this many times, alternating targets, and report medians (for noisy machines)")
	return c
}

func benchCmd(args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) > 0 && args[0] == "diff" {
		return benchDiff(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := benchFlags(fs)
	fs.Usage = usageWithEnv(fs, "fastinfer bench [--url URL | --models DIR] --model M [--compare] [flags]\n       fastinfer bench diff OLD.json NEW.json")
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	res, err := runBench(ctx, c, stderr)
	if res != nil && len(res.Steps) > 0 {
		fmt.Fprintln(stdout)
		bench.WriteTable(stdout, res.Steps)
		if len(res.Comparisons) > 0 {
			fmt.Fprintln(stdout)
			bench.WriteComparisons(stdout, res.Comparisons)
		}
		if werr := writeBenchFiles(c, res); werr != nil && err == nil {
			err = werr
		}
	}
	return err
}

func writeBenchFiles(c *benchConfig, res *bench.Results) error {
	if st, err := os.Stat(c.out); c.out != "" && (strings.HasSuffix(c.out, "/") || err == nil && st.IsDir()) {
		// A folder: a dated file per run, named for the device and model,
		// with its plot beside it (bench/results/ keeps the history).
		if err := os.MkdirAll(c.out, 0o755); err != nil {
			return err
		}
		model := "all"
		if len(res.Steps) > 0 {
			model = res.Steps[0].Model
		}
		base := filepath.Join(c.out, fmt.Sprintf("%s-%s-%s", res.Meta.Time.Format("2006-01-02"), slug(res.Meta.Device), model))
		c.out, c.svg = base+".json", base+".svg"
	}
	if c.out != "" {
		if err := res.WriteFile(c.out); err != nil {
			return err
		}
	}
	if c.svg != "" {
		f, err := os.Create(c.svg)
		if err != nil {
			return err
		}
		if err := bench.WriteSVG(f, res); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	return nil
}

// runBench measures every target at every load level. What was measured
// before an error or an interrupt is returned with it.
func runBench(ctx context.Context, c *benchConfig, progress io.Writer) (*bench.Results, error) {
	targets := splitList(c.targets)
	if c.compare {
		targets = []string{"raw", "tensor", "image"}
	}
	for _, t := range targets {
		if t != "raw" && t != "tensor" && t != "grpc" && t != "shm" && t != "cudashm" && t != "image" {
			return nil, fmt.Errorf("unknown target %q (image, tensor, grpc, shm, cudashm or raw)", t)
		}
	}
	loads, err := benchLoads(c)
	if err != nil {
		return nil, err
	}
	rawBatches, err := parseInts(c.rawBatches)
	if err != nil {
		return nil, fmt.Errorf("--raw-batches: %w", err)
	}
	var images [][]byte
	if contains(targets, "image") {
		if c.images == "" {
			return nil, errors.New("the image target needs --images DIR")
		}
		if images, err = loadBenchImages(c.images); err != nil {
			return nil, err
		}
	}
	modelName := c.model
	var repoModel *models.Model
	if c.url == "" || contains(targets, "raw") {
		m, err := findModel(c.models, c.model)
		if err != nil {
			return nil, err
		}
		repoModel, modelName = m, m.Name
	}
	if modelName == "" {
		return nil, errors.New("give --model")
	}

	tlsCfg, err := c.clientTLS()
	if err != nil {
		return nil, err
	}
	res := &bench.Results{Schema: bench.SchemaVersion, Meta: benchMeta(c)}
	var client *bench.Client
	var tensorT, grpcT, shmT, cudaShmT, imageT bench.Target
	anyShm := contains(targets, "shm") || contains(targets, "cudashm")
	if contains(targets, "tensor") || contains(targets, "grpc") || anyShm || contains(targets, "image") {
		// The server starts first, so every round (raw included) runs
		// beside the same idle-or-busy server process.
		url, grpcAddr := c.url, c.grpcAddr
		if url == "" {
			u, g, stopServer, err := startServer(ctx, c, tlsCfg, contains(targets, "grpc"), anyShm, progress)
			if err != nil {
				return res, err
			}
			defer stopServer()
			url, grpcAddr = u, g
		} else if grpcAddr == "" {
			grpcAddr = defaultGRPCAddr(url)
		}
		if client, err = bench.NewClient(url); err != nil {
			return res, err
		}
		if tlsCfg != nil {
			if !strings.HasPrefix(url, "https://") {
				return res, fmt.Errorf("--tls-ca is given, but --url %s is not https://", url)
			}
			client.SetTLS(tlsCfg)
		}
		if err := client.WaitReady(ctx); err != nil {
			return res, err
		}
		res.Meta.Provider = serverProvider(client, modelName, res.Meta.Provider)
		if contains(targets, "tensor") || contains(targets, "grpc") || anyShm {
			meta, err := client.Metadata(modelName)
			if err != nil {
				return res, err
			}
			if contains(targets, "tensor") {
				if tensorT, err = bench.NewTensorTarget(client, meta, c.batch, 8, c.seed); err != nil {
					return res, err
				}
			}
			if contains(targets, "grpc") {
				g, err := bench.NewGRPCTensorTarget(grpcAddr, tlsCfg, meta, c.batch, 8, c.seed)
				if err != nil {
					return res, err
				}
				defer g.Close()
				grpcT = g
			}
			if contains(targets, "shm") {
				st, err := bench.NewShmTarget(client, meta, c.batch, 8, c.seed)
				if err != nil {
					return res, err
				}
				defer func() {
					if err := st.Close(); err != nil {
						fmt.Fprintf(progress, "releasing shared memory: %v\n", err)
					}
				}()
				shmT = st
			}
			if contains(targets, "cudashm") {
				alloc := func(n int) (bench.IPCBuffer, error) { return cuda.AllocDevice(0, n) }
				st, err := bench.NewCUDAShmTarget(client, meta, c.batch, 8, c.seed, 0, alloc)
				if err != nil {
					return res, err
				}
				defer func() {
					if err := st.Close(); err != nil {
						fmt.Fprintf(progress, "releasing CUDA shared memory: %v\n", err)
					}
				}()
				cudaShmT = st
			}
		}
		if contains(targets, "image") {
			if imageT, err = bench.NewImageTarget(client, modelName, images); err != nil {
				return res, err
			}
		}
	}

	// A server on this machine shares its cores with the load generator:
	// then the two together say whether the CPU bounds a step.
	localCores := 0
	if c.url == "" || isLoopbackURL(c.url) {
		localCores = goruntime.NumCPU()
	}

	// Rounds alternate the targets, so a noisy minute on a shared machine
	// lands in one round, not on one target; medians are reported.
	var rounds [][]bench.Step
	var comps [][]bench.Comparison
	finish := func() {
		if len(rounds) > 0 {
			res.Steps = bench.MergeRounds(rounds)
			res.Comparisons = bench.MergeComparisons(comps)
		}
	}
	for round := range max(c.repeat, 1) {
		if c.repeat > 1 {
			fmt.Fprintf(progress, "round %d of %d\n", round+1, c.repeat)
		}
		var steps []bench.Step
		emit := func(st bench.Step) { steps = append(steps, st) }
		err := func() error {
			if contains(targets, "raw") {
				if err := benchRaw(ctx, c, repoModel, rawBatches, loads[0], res, emit, progress); err != nil {
					return err
				}
			}
			if tensorT != nil {
				if err := sweep(ctx, client, tensorT, bench.TargetHTTPTensor, modelName, loads, localCores, emit, progress); err != nil {
					return err
				}
			}
			if grpcT != nil {
				if err := sweep(ctx, client, grpcT, bench.TargetGRPCTensor, modelName, loads, localCores, emit, progress); err != nil {
					return err
				}
			}
			if shmT != nil {
				if err := sweep(ctx, client, shmT, bench.TargetShmTensor, modelName, loads, localCores, emit, progress); err != nil {
					return err
				}
			}
			if cudaShmT != nil {
				if err := sweep(ctx, client, cudaShmT, bench.TargetCUDAShmTensor, modelName, loads, localCores, emit, progress); err != nil {
					return err
				}
			}
			if imageT != nil {
				if err := sweep(ctx, client, imageT, bench.TargetHTTPImage, modelName, loads, localCores, emit, progress); err != nil {
					return err
				}
			}
			return nil
		}()
		if err != nil {
			if len(rounds) == 0 { // report the partial round rather than nothing
				rounds, comps = append(rounds, steps), append(comps, compareSteps(steps))
			}
			finish()
			return res, err
		}
		rounds, comps = append(rounds, steps), append(comps, compareSteps(steps))
	}
	finish()
	return res, nil
}

func benchLoads(c *benchConfig) ([]bench.Load, error) {
	base := bench.Load{Warmup: c.warmup, Window: c.window, Stability: c.stability, MaxWindows: c.maxWindows, Duration: c.duration, Seed: c.seed}
	var loads []bench.Load
	if c.rates != "" {
		if c.arrivals != "constant" && c.arrivals != "poisson" {
			return nil, fmt.Errorf("--arrivals must be constant or poisson, got %q", c.arrivals)
		}
		for _, s := range splitList(c.rates) {
			r, err := strconv.ParseFloat(s, 64)
			if err != nil || !(r > 0) {
				return nil, fmt.Errorf("--rate: %q is not a positive number", s)
			}
			l := base
			l.Mode, l.Rate, l.Poisson = bench.ModeRate, r, c.arrivals == "poisson"
			loads = append(loads, l)
		}
	} else {
		cs, err := parseInts(c.concurrency)
		if err != nil {
			return nil, fmt.Errorf("--concurrency: %w", err)
		}
		for _, n := range cs {
			l := base
			l.Mode, l.Concurrency = bench.ModeConcurrency, n
			loads = append(loads, l)
		}
	}
	if len(loads) == 0 {
		return nil, bench.ErrNoSteps
	}
	return loads, nil
}

// sweep runs every load level against one HTTP target, reading the
// server's split from /metrics around each step.
// localCores is this machine's core count when the server runs on it,
// else 0.
func sweep(ctx context.Context, client *bench.Client, t bench.Target, kind, model string, loads []bench.Load, localCores int, emit func(bench.Step), progress io.Writer) error {
	mb := client.Batching(model)
	for _, l := range loads {
		before, err := client.Scrape(model)
		if err != nil {
			return err
		}
		st, err := bench.Run(ctx, t, l, progressLine(progress, kind, model, l))
		fmt.Fprintln(progress)
		if err != nil {
			return err
		}
		after, err := client.Scrape(model)
		if err != nil {
			return err
		}
		st.Target, st.Model = kind, model
		// The scrape spans the warm-up too; the means are still the
		// step's, as warm-up runs the same load.
		st.Server = bench.Split(before, after)
		st.Server.SetInstances(mb.Instances)
		if st.ClientCPU > 0.25 {
			st.Warnings = append(st.Warnings, fmt.Sprintf("the load generator used %.0f%% of the machine: it may be the bottleneck", st.ClientCPU*100))
		}
		noteCPUShare(&st, localCores)
		noteIdleInstances(&st, mb.MaxBatchSize)
		emit(st)
	}
	return nil
}

func progressLine(w io.Writer, kind, model string, l bench.Load) func(bench.Progress) {
	load := fmt.Sprintf("c=%d", l.Concurrency)
	if l.Mode == bench.ModeRate {
		load = fmt.Sprintf("r=%g/s", l.Rate)
	}
	return func(p bench.Progress) {
		if p.Warmup {
			fmt.Fprintf(w, "\r%-12s %-16s %-8s warmed up (%.0fs)            ", kind, model, load, p.Elapsed.Seconds())
			return
		}
		fmt.Fprintf(w, "\r%-12s %-16s %-8s window %2d: %8.1f img/s (%.0fs)   ", kind, model, load, p.Window, p.Throughput, p.Elapsed.Seconds())
	}
}

// benchRaw measures ONNX Runtime in-process: one session (one per batch
// size with CUDA graphs), its input bound once, runs back to back at each
// batch size.
func benchRaw(ctx context.Context, c *benchConfig, m *models.Model, batches []int, l bench.Load, res *bench.Results, emit func(bench.Step), progress io.Writer) error {
	lib, err := runtime.ResolveLib(c.ortLib)
	if err != nil {
		return err
	}
	env, err := runtime.Open(runtime.Config{Lib: lib, Provider: c.provider, IntraOpSpin: c.intraOpSpin, CUDA: runtime.CUDAOptions{HostMemory: c.hostMemory, Graphs: c.graphs}})
	if err != nil {
		return err
	}
	defer env.Close()
	res.Meta.ORTVersion = env.Version()
	v := m.Latest()
	var model []byte // the model the server would load: precision: fp16 converts it
	if m.Config.Precision == models.PrecisionFP16 {
		if model, err = float16Copy(v.Path); err != nil {
			return err
		}
	}
	sess, err := env.NewSession(v.Path, runtime.SessionOptions{Model: model})
	if err != nil {
		return err
	}
	defer sess.Close()
	res.Meta.Provider = sess.Provider()
	maxB := 0
	for _, b := range batches {
		maxB = max(maxB, b)
	}
	shared, err := sess.NewBinding(maxB)
	if err != nil {
		return err
	}
	defer shared.Close()
	rng := rand.New(rand.NewPCG(c.seed, 0x7a3))
	vals := make([]float32, maxB*sess.InputLen())
	for i := range vals {
		vals[i] = float32(rng.NormFloat64())
		if sess.Input().DataType == "UINT8" { // pixels
			vals[i] = float32(rng.IntN(256))
		}
	}
	dtype.Encode(sess.Input().DataType, shared.Input(maxB), vals)
	// bindingFor is the binding batch b runs on. A CUDA-graph session
	// replays one batch shape, so there each size gets a session of its
	// own, as the server's buckets do; done closes it.
	bindingFor := func(b int) (bind *runtime.Binding, done func(), err error) {
		if !sess.Graphs() {
			return shared, func() {}, nil
		}
		s, err := env.NewSession(v.Path, runtime.SessionOptions{Model: model})
		if err != nil {
			return nil, nil, err
		}
		if bind, err = s.NewBinding(b); err != nil {
			s.Close()
			return nil, nil, err
		}
		copy(bind.Input(b), shared.Input(b))
		return bind, func() { bind.Close(); s.Close() }, nil
	}
	for _, b := range batches {
		bind, done, err := bindingFor(b)
		if err != nil {
			return err
		}
		failed := false
		t := bench.TargetFunc{Batch: b, F: func(context.Context) (int, string) {
			if err := bind.Run(b); err != nil {
				failed = true
				return 0, "runtime"
			}
			return b, ""
		}}
		rl := l
		rl.Mode, rl.Concurrency, rl.Rate = bench.ModeConcurrency, 1, 0
		st, err := bench.Run(ctx, t, rl, progressLine(progress, bench.TargetRaw+" b="+strconv.Itoa(b), m.Name, rl))
		done()
		fmt.Fprintln(progress)
		if err != nil {
			return err
		}
		if failed {
			return fmt.Errorf("raw session.Run failed at batch %d", b)
		}
		st.Target, st.Model = bench.TargetRaw, m.Name
		st.ClientCPU = 0 // the "client" is ONNX Runtime itself
		emit(st)
	}
	return nil
}

// noteCPUShare sets the share of this machine's localCores cores the
// server used over a step, and warns when server and load generator
// together left the CPU no room. localCores is 0 for a server elsewhere.
func noteCPUShare(st *bench.Step, localCores int) {
	if localCores <= 0 || st.Server == nil || st.Server.CPUMsPerRequest <= 0 {
		return
	}
	// CPU per successful request times successful requests/s is the
	// CPU-seconds per second the server burnt.
	st.Server.CPUShare = st.Server.CPUMsPerRequest / 1000 * st.Throughput / float64(localCores)
	if total := st.Server.CPUShare + st.ClientCPU; total > 0.9 {
		st.Warnings = append(st.Warnings, fmt.Sprintf("the server (%.0f%% of this machine's cores) and the load generator (%.0f%%) used %.0f%% of the CPU: the CPU bounds this step",
			st.Server.CPUShare*100, st.ClientCPU*100, total*100))
	}
}

// noteIdleInstances warns when batches left full but the instances ran
// under 85 % of the time: then neither the load nor the model bounds the
// step, but the work between runs (the copy into the batch, the hand-off
// of results) does.
func noteIdleInstances(st *bench.Step, maxBatch int) {
	sv := st.Server
	if sv == nil || sv.InstanceBusy <= 0 || sv.InstanceBusy >= 0.85 || maxBatch <= 1 || sv.MeanBatchSize < 0.9*float64(maxBatch) {
		return
	}
	st.Warnings = append(st.Warnings, fmt.Sprintf("batches were full (%.1f of %d rows) but the instances ran only %.0f%% of the time: the work between runs bounds this step (copying into the batch took %.2f ms a batch), not the model; --stage-batches=on or more --instances may help",
		sv.MeanBatchSize, maxBatch, 100*sv.InstanceBusy, sv.InputMs))
}

// isLoopbackURL reports whether a server URL names this machine.
func isLoopbackURL(raw string) bool {
	u, err := neturl.Parse(raw)
	if err != nil {
		return false
	}
	h := u.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// compareSteps relates the server's best images/s to the raw ceiling, and
// the tensor path's p50 at concurrency 1 to raw batch 1.
func compareSteps(steps []bench.Step) []bench.Comparison {
	var out []bench.Comparison
	byModel := map[string]bool{}
	for _, s := range steps {
		byModel[s.Model] = true
	}
	for model := range byModel {
		best := func(target string) (bench.Step, bool) {
			var b bench.Step
			ok := false
			for _, s := range steps {
				if s.Model == model && s.Target == target && (!ok || s.ImagesPerSec > b.ImagesPerSec) {
					b, ok = s, true
				}
			}
			return b, ok
		}
		raw, ok := best(bench.TargetRaw)
		if !ok || raw.ImagesPerSec == 0 {
			continue
		}
		if t, ok := best(bench.TargetHTTPTensor); ok {
			out = append(out, bench.Comparison{Name: model + ": server tensor / raw (images/s)", Of: t.Key(), Over: raw.Key(), Value: t.ImagesPerSec / raw.ImagesPerSec, Goal: 0.97})
		}
		if t, ok := best(bench.TargetGRPCTensor); ok {
			out = append(out, bench.Comparison{Name: model + ": server gRPC tensor / raw (images/s)", Of: t.Key(), Over: raw.Key(), Value: t.ImagesPerSec / raw.ImagesPerSec, Goal: 0.97})
		}
		if t, ok := best(bench.TargetShmTensor); ok {
			out = append(out, bench.Comparison{Name: model + ": server shared memory tensor / raw (images/s)", Of: t.Key(), Over: raw.Key(), Value: t.ImagesPerSec / raw.ImagesPerSec, Goal: 0.97})
		}
		if t, ok := best(bench.TargetCUDAShmTensor); ok {
			out = append(out, bench.Comparison{Name: model + ": server CUDA shared memory tensor / raw (images/s)", Of: t.Key(), Over: raw.Key(), Value: t.ImagesPerSec / raw.ImagesPerSec, Goal: 0.97})
		}
		if t, ok := best(bench.TargetHTTPImage); ok {
			out = append(out, bench.Comparison{Name: model + ": server image / raw (images/s)", Of: t.Key(), Over: raw.Key(), Value: t.ImagesPerSec / raw.ImagesPerSec, Goal: 0.90})
		}
		var raw1, ten1 *bench.Step
		for i := range steps {
			s := &steps[i]
			if s.Model != model || s.BatchSize != 1 || s.Mode != bench.ModeConcurrency || s.Concurrency != 1 {
				continue
			}
			switch s.Target {
			case bench.TargetRaw:
				raw1 = s
			case bench.TargetHTTPTensor:
				ten1 = s
			}
		}
		if raw1 != nil && ten1 != nil {
			out = append(out, bench.Comparison{Name: model + ": tensor p50 added over raw at c=1", Of: ten1.Key(), Over: raw1.Key(),
				Value: ten1.Latency.P50 - raw1.Latency.P50, Unit: "ms", Goal: 0.5, AtMost: true})
		}
	}
	return out
}

// startServer runs `fastinfer serve` on a free loopback port, and its
// gRPC API on another when withGRPC (with client shared memory when
// withShm), until the returned stop is called.
func startServer(ctx context.Context, c *benchConfig, tlsCfg *tls.Config, withGRPC, withShm bool, log io.Writer) (string, string, func(), error) {
	scheme := "http://"
	if tlsCfg != nil {
		scheme = "https://"
	}
	addr, err := freePort()
	if err != nil {
		return "", "", nil, err
	}
	grpcAddr := ""
	if withGRPC {
		if grpcAddr, err = freePort(); err != nil {
			return "", "", nil, err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return "", "", nil, err
	}
	args := []string{"serve", "--models", c.models, "--addr", addr, "--grpc-addr", grpcAddr, "--log-level", "warn"}
	if c.ortLib != "" {
		args = append(args, "--ort-lib", c.ortLib)
	}
	if withShm {
		args = append(args, "--allow-client-shm")
	}
	args = append(args, strings.Fields(c.serveFlags)...)
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return "", "", nil, fmt.Errorf("starting the server: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	// Fail fast if the server dies while loading.
	readyCtx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	go func() {
		select {
		case err := <-exited:
			exited <- err
			cancel()
		case <-readyCtx.Done():
		}
	}()
	client, err := bench.NewClient(scheme + addr)
	if err == nil {
		if tlsCfg != nil {
			client.SetTLS(tlsCfg)
		}
		err = client.WaitReady(readyCtx)
	}
	cancel()
	if err != nil {
		stop()
		return "", "", nil, fmt.Errorf("server %s %s: %w", self, strings.Join(args, " "), err)
	}
	return scheme + addr, grpcAddr, stop, nil
}

// clientTLS is the load generator's TLS configuration, or nil without
// --tls-ca: the CAs to trust, and the client pair when given.
func (c *benchConfig) clientTLS() (*tls.Config, error) {
	if c.tlsCA == "" {
		if c.tlsCert != "" || c.tlsKey != "" {
			return nil, errors.New("--tls-cert and --tls-key need --tls-ca (the CA that signed the server's certificate)")
		}
		return nil, nil
	}
	pem, err := os.ReadFile(c.tlsCA)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-ca %s holds no PEM certificate", c.tlsCA)
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if c.tlsCert != "" || c.tlsKey != "" {
		pair, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert, --tls-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// freePort is a loopback address with a port free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// defaultGRPCAddr is the gRPC address of the server at an HTTP URL that
// keeps serve's default gRPC port.
func defaultGRPCAddr(rawURL string) string {
	host := rawURL
	if u, err := neturl.Parse(rawURL); err == nil && u.Host != "" {
		host = u.Host
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return net.JoinHostPort(host, "8001")
}

func serverProvider(c *bench.Client, model, fallback string) string {
	b, err := c.Get("/v2")
	if err != nil {
		return fallback
	}
	var meta struct {
		Models []struct{ Name, Provider string }
	}
	if json.Unmarshal(b, &meta) != nil {
		return fallback
	}
	for _, m := range meta.Models {
		if m.Name == model {
			return m.Provider
		}
	}
	return fallback
}

func findModel(repo, name string) (*models.Model, error) {
	ms, errs, err := models.Scan(repo)
	if err != nil {
		return nil, err
	}
	if name == "" {
		if len(ms) != 1 {
			return nil, fmt.Errorf("repository %s has %d models; choose one with --model", repo, len(ms))
		}
		return &ms[0], nil
	}
	for i := range ms {
		if ms[i].Name == name {
			return &ms[i], nil
		}
	}
	return nil, fmt.Errorf("model %q not in %s (load errors: %v)", name, repo, errors.Join(errs...))
}

func benchMeta(c *benchConfig) bench.Meta {
	m := bench.Meta{
		Time: time.Now().UTC().Truncate(time.Second), Fastinfer: version, GoVersion: goruntime.Version(),
		OS: goruntime.GOOS + "/" + goruntime.GOARCH, CPUModel: cpuModel(), Cores: goruntime.NumCPU(),
		Device: "cpu", GitCommit: buildCommit(), Command: strings.Join(os.Args, " "), Description: c.description,
	}
	m.Host, _ = os.Hostname()
	if info := cuda.Discover(); len(info.Devices) > 0 {
		m.Device = info.Devices[0].Name
		if n := len(info.Devices); n > 1 {
			m.Device += " ×" + strconv.Itoa(n)
		}
	}
	return m
}

// buildCommit is the VCS revision stamped into the binary, else git's.
func buildCommit() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if len(rev) >= 12 {
			if dirty {
				return rev[:12] + "-dirty"
			}
			return rev[:12]
		}
	}
	return gitCommit()
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return goruntime.GOARCH
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return goruntime.GOARCH
}

func benchDiff(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench diff", flag.ContinueOnError)
	fs.SetOutput(stderr)
	drop := fs.Float64("throughput-drop", 0.10, "flag a step whose images/s fell by more than this fraction")
	rise := fs.Float64("p99-rise", 0.20, "flag a step whose p99 rose by more than this fraction")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		fmt.Fprintln(stderr, "usage: fastinfer bench diff [--throughput-drop F] [--p99-rise F] OLD.json NEW.json")
		return errUsage
	}
	old, err := bench.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	cur, err := bench.ReadFile(fs.Arg(1))
	if err != nil {
		return err
	}
	regressed, err := bench.WriteDiff(stdout, old, cur, bench.DiffOptions{ThroughputDrop: *drop, P99Rise: *rise})
	if err != nil {
		return err
	}
	if regressed {
		return errors.New("performance regressed")
	}
	return nil
}

// slug makes a device name usable in a file name: "NVIDIA H100 80GB HBM3"
// becomes "nvidia-h100-80gb-hbm3".
func slug(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.TrimSuffix(b.String(), "-")
}

// loadBenchImages reads a folder's images, or a comma-separated list of
// files and glob patterns.
func loadBenchImages(spec string) ([][]byte, error) {
	if st, err := os.Stat(spec); err == nil && st.IsDir() {
		return bench.LoadImages(spec)
	}
	var out [][]byte
	for _, pat := range splitList(spec) {
		paths, err := filepath.Glob(pat)
		if err != nil {
			return nil, err
		}
		if len(paths) == 0 {
			return nil, fmt.Errorf("--images: nothing matches %q", pat)
		}
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, err
			}
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("--images names no files")
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// maxSweepSteps bounds a sweep, so that a range like 1:100000 is a
// mistake reported, not a day of benchmarking.
const maxSweepSteps = 64

// parseInts reads a sweep: comma-separated positive integers, each of which
// may be perf_analyzer's START:END[:STEP] range (1:16:4 is 1,5,9,13).
func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		parts := strings.Split(f, ":")
		if len(parts) > 3 {
			return nil, fmt.Errorf("%q: a range is START:END[:STEP]", f)
		}
		var v [3]int
		v[2] = 1
		for i, p := range parts {
			n, err := strconv.Atoi(p)
			if err != nil || n < 1 {
				return nil, fmt.Errorf("%q is not a positive integer", p)
			}
			v[i] = n
		}
		if len(parts) == 1 {
			v[1] = v[0]
		}
		if v[1] < v[0] {
			return nil, fmt.Errorf("%q: the range ends before it starts", f)
		}
		for n := v[0]; n <= v[1]; n += v[2] {
			if len(out) == maxSweepSteps {
				return nil, fmt.Errorf("%q: more than %d steps", s, maxSweepSteps)
			}
			out = append(out, n)
		}
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
