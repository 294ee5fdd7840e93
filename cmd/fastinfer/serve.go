package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	goruntime "runtime"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"fastinfer/batching"
	"fastinfer/cuda"
	"fastinfer/internal/cpusched"
	"fastinfer/internal/tlsconf"
	"fastinfer/monitor"
	"fastinfer/monitor/predlog"
	"fastinfer/runtime"
	"fastinfer/server"
)

type serveConfig struct {
	models          string
	addr            string
	grpcAddr        string
	allowClientShm  bool
	ortLib          string
	provider        string
	threads         int
	intraOpSpin     string
	optLevel        string
	instances       int
	maxBatch        int
	maxQueueDelay   time.Duration
	maxQueue        int
	defaultTimeout  time.Duration
	priorityLevels  int
	maxBody         int
	maxImages       int
	maxPixels       int64
	dataDir         string
	predictionLog   string
	logImages       int
	retention       time.Duration
	reportEvery     time.Duration
	readTimeout     time.Duration
	idleTimeout     time.Duration
	maxConnsPerIP   int
	modelControl    string
	pollInterval    time.Duration
	adminToken      string
	apiToken        string
	logLevel        string
	logFormat       string
	shutdownTimeout time.Duration
	sched           string
	goProcs         int
	cuda            runtime.CUDAOptions
	gpuBuckets      bool
	stage           string
	tensorrt        string
	tensorrtCache   string
	tls             tlsconf.Files
}

func serveFlags(fs *flag.FlagSet) *serveConfig {
	c := &serveConfig{}
	fs.StringVar(&c.models, "models", "models", "model repository folder")
	fs.StringVar(&c.addr, "addr", ":8080", "HTTP listen address (HOST:PORT)")
	fs.StringVar(&c.grpcAddr, "grpc-addr", ":8001", "gRPC listen address for the Open Inference Protocol (Triton's port 8001); empty: no gRPC")
	fs.StringVar(&c.ortLib, "ort-lib", "", "path to libonnxruntime.so (else $ONNXRUNTIME_LIB, else .cache/onnxruntime/"+runtime.ORTVersion+"/)")
	fs.StringVar(&c.provider, "provider", "auto", "execution provider: auto (CUDA if usable, else CPU), cuda or cpu")
	fs.IntVar(&c.threads, "threads", 0, "ONNX Runtime intra-op threads per session (0 = number of cores)")
	fs.StringVar(&c.intraOpSpin, "intra-op-spin", runtime.DefaultSpin.String(), "how long idle ONNX Runtime compute threads spin before sleeping: a duration (0 = never), or ort for ONNX Runtime's own (tens of ms)")
	fs.StringVar(&c.optLevel, "opt-level", "all", "graph optimisation level: disable, basic, extended or all")
	fs.IntVar(&c.instances, "instances", 0, "execution instances per model (per GPU on GPU); 0 = 1 on CPU, 2 per GPU")
	fs.IntVar(&c.maxBatch, "max-batch-size", 8, "default rows per execution (config.yaml batching.max_batch_size wins); 1 disables batching")
	fs.DurationVar(&c.maxQueueDelay, "max-queue-delay", 2*time.Millisecond, "default longest wait of the oldest request for company")
	fs.IntVar(&c.maxQueue, "max-queue-size", 256, "default rows that may wait per model before 429")
	fs.DurationVar(&c.defaultTimeout, "default-timeout", 0, "default per-request timeout (0 = none): past it a queued request gets 504, and one predicted to miss it gets 503")
	fs.IntVar(&c.priorityLevels, "priority-levels", 1, "default number of request priority levels (?priority=1 is highest)")
	fs.IntVar(&c.maxBody, "max-body", 32<<20, "request body limit in bytes")
	fs.IntVar(&c.maxImages, "max-images", 64, "images per request")
	fs.Int64Var(&c.maxPixels, "max-pixels", 40_000_000, "largest image accepted, in pixels (checked from the header)")
	fs.StringVar(&c.dataDir, "data-dir", "data", "folder for the prediction log (and reports)")
	fs.StringVar(&c.predictionLog, "prediction-log", "sqlite", "where every prediction is logged: sqlite (DATA-DIR/predictions.db), sqlite:PATH, postgres://…, or off")
	fs.IntVar(&c.logImages, "log-images", 0, "also log uploaded images up to this many bytes each (0 = never)")
	fs.DurationVar(&c.retention, "prediction-retention", 30*24*time.Hour, "delete logged predictions older than this (0 = keep all)")
	fs.DurationVar(&c.reportEvery, "report-every", 0, "write a report of each period this long (e.g. 3h) to DATA-DIR/reports/, served at /reports/ (0 = never)")
	fs.DurationVar(&c.readTimeout, "read-timeout", 30*time.Second, "longest a client may take to send a whole request (slow clients are cut off)")
	fs.DurationVar(&c.idleTimeout, "idle-timeout", 2*time.Minute, "how long an idle keep-alive connection stays open")
	fs.IntVar(&c.maxConnsPerIP, "max-conns-per-ip", 0, "concurrent connections allowed from one client address (0 = no cap)")
	fs.StringVar(&c.modelControl, "model-control", "explicit", "none (load at start only), explicit (also /v2/repository load/unload) or poll (also apply repository changes every --poll-interval)")
	fs.DurationVar(&c.pollInterval, "poll-interval", 10*time.Second, "how often --model-control=poll scans the repository")
	fs.StringVar(&c.adminToken, "admin-token", "", "bearer token required by the /v2/repository endpoints (empty: none)")
	fs.StringVar(&c.apiToken, "api-token", "", "bearer token required by the inference endpoints (empty: none)")
	fs.StringVar(&c.tls.Cert, "tls-cert", "", "PEM certificate (its chain may follow) for TLS on both the HTTP and the gRPC listener; read again when the file changes, so a rotated secret needs no restart")
	fs.StringVar(&c.tls.Key, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&c.tls.ClientCA, "tls-client-ca", "", "PEM CA certificates: every endpoint but the health checks then requires a client certificate they signed (mutual TLS)")
	fs.BoolVar(&c.allowClientShm, "allow-client-shm", false, "serve Triton's shared memory extensions: clients on this host register POSIX shared memory objects (/dev/shm) for the server to map, or on a GPU host CUDA IPC handles of their device memory, and pass tensors through them instead of the socket")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long SIGTERM waits for in-flight requests")
	fs.StringVar(&c.cuda.ConvAlgoSearch, "cuda-conv-search", runtime.ConvSearchHeuristic, "cuDNN convolution algorithm search: heuristic (fast start), exhaustive (benchmarks each shape once, during the load's warm-up over every batch size; often faster kernels) or default")
	fs.Int64Var(&c.cuda.MemLimit, "gpu-mem-limit", 0, "bytes of GPU memory each session's arena may hold (0 = no cap)")
	fs.StringVar(&c.tensorrt, "tensorrt", runtime.TensorRTAuto, "auto: try ONNX Runtime's TensorRT provider before CUDA when libonnxruntime_providers_tensorrt.so is beside the ONNX Runtime library (falling back to CUDA, with the reason logged); off: never")
	fs.StringVar(&c.tensorrtCache, "tensorrt-cache", "", "folder for TensorRT's engines and timing cache, so a restart does not rebuild them (default DATA-DIR/tensorrt)")
	fs.BoolVar(&c.gpuBuckets, "gpu-buckets", true, "on CUDA, run each batch-size bucket (1, 2, 4, 8, 12, 16, 24, …, max) on its own session and pad batches up to one: ONNX Runtime's CUDA convolutions set themselves up again whenever the batch size changes (100 ms for ResNet-50)")
	fs.StringVar(&c.stage, "stage-batches", stageAuto, "give each instance a second input buffer and copy the next batch into it while one runs, so the copy leaves the instance's critical path: auto (on GPU instances), on or off")
	fs.StringVar(&c.cuda.HostMemory, "gpu-host-memory", runtime.HostPinned, "where a GPU instance keeps its batch buffers: pinned (page-locked; each batch goes to the GPU by one DMA) or pageable (ordinary memory, which the driver copies through a staging buffer first)")
	fs.BoolVar(&c.cuda.Graphs, "cuda-graphs", false, "capture each CUDA bucket session's kernels into a CUDA graph during warm-up and replay it for every batch (one launch instead of one per kernel); batches then go through device buffers at fixed addresses")
	fs.StringVar(&c.cuda.ArenaExtend, "cuda-arena", runtime.ArenaPowerOfTwo, "how the GPU arena grows: power-of-two or requested (tighter, for several models per GPU)")
	fs.StringVar(&c.sched, "sched", cpusched.Batch, "Linux scheduling policy of the server's threads: batch (Go's runtime threads no longer preempt ONNX Runtime's compute threads when they wake) or normal")
	fs.IntVar(&c.goProcs, "gomaxprocs", 0, "Go's processors (GOMAXPROCS); 0 = one more than the cores Go sees, unless the GOMAXPROCS variable is set: a worker coming back from ONNX Runtime then finds a free one instead of waiting for Go code (handlers, the prediction log) to yield")
	return c
}

// goProcs is the GOMAXPROCS serve sets, or 0 to leave Go's own: set (the
// flag) when positive; else one more than Go's default (def), unless the
// GOMAXPROCS variable chose. Each execution returns from ONNX Runtime
// (cgo) needing a P; with exactly one per core they are all often busy
// with Go code, and the instance idles until one yields. Measured on
// fashion-resnet at saturation (README, Prediction log): +0.5 and +1 %
// images/s with the log off, and a smaller cost of the log.
func goProcs(set int, envSet bool, def int) int {
	switch {
	case set > 0:
		return set
	case envSet:
		return 0
	}
	return def + 1
}

func serveCmd(args []string, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := serveFlags(fs)
	fs.Usage = usageWithEnv(fs, "fastinfer serve [--models DIR] [--addr HOST:PORT] [flags]")
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	log, err := newLogger(stderr, cfg.logLevel, cfg.logFormat)
	if err != nil {
		return err
	}
	// Process-wide, so here and not in serve (tests run serve in-process).
	if cfg.sched != cpusched.Batch && cfg.sched != cpusched.Normal {
		return fmt.Errorf("--sched must be %s or %s, got %q", cpusched.Batch, cpusched.Normal, cfg.sched)
	}
	if cfg.goProcs < 0 {
		return fmt.Errorf("--gomaxprocs must be 0 (automatic) or more, got %d", cfg.goProcs)
	}
	if n := goProcs(cfg.goProcs, getenv("GOMAXPROCS") != "", goruntime.GOMAXPROCS(0)); n > 0 {
		goruntime.GOMAXPROCS(n)
		log.Info("GOMAXPROCS set", "procs", n)
	}
	if n, err := cpusched.Set(cfg.sched); err != nil {
		log.Warn("scheduling policy not changed", "sched", cfg.sched, "err", err)
	} else if n > 0 {
		log.Info("scheduling policy set", "sched", cfg.sched, "threads", n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return serve(ctx, cfg, log, nil)
}

// loopback says whether a listener is reachable from this host only.
func loopback(a net.Addr) bool {
	t, ok := a.(*net.TCPAddr)
	return ok && t.IP.IsLoopback()
}

// listening are the addresses serve listens on; grpc is empty without
// gRPC.
type listening struct{ http, grpc string }

// serve runs the server until ctx ends, then shuts down gracefully. If
// started is non-nil it receives the listening addresses once the
// listeners are open (tests use it).
func serve(ctx context.Context, cfg *serveConfig, log *slog.Logger, started chan<- listening) error {
	if st, err := os.Stat(cfg.models); err != nil || !st.IsDir() {
		return fmt.Errorf("model repository %q is not a folder (set --models or FASTINFER_MODELS): %v", cfg.models, err)
	}
	if cfg.tensorrt != runtime.TensorRTAuto && cfg.tensorrt != runtime.TensorRTOff {
		return fmt.Errorf("--tensorrt must be %s or %s, got %q", runtime.TensorRTAuto, runtime.TensorRTOff, cfg.tensorrt)
	}
	if cfg.tensorrtCache == "" {
		cfg.tensorrtCache = filepath.Join(cfg.dataDir, "tensorrt")
	}
	if err := cfg.cuda.Validate(); err != nil {
		return err
	}
	switch cfg.stage {
	case stageAuto, stageOn, stageOff:
	default:
		return fmt.Errorf("--stage-batches must be %s, %s or %s, got %q", stageAuto, stageOn, stageOff, cfg.stage)
	}
	if cfg.cuda.Graphs && !cfg.gpuBuckets {
		// A captured graph replays one batch shape; buckets give each
		// shape its own session.
		return fmt.Errorf("--cuda-graphs needs --gpu-buckets (one session per batch size)")
	}
	var tlsFiles *tlsconf.Reloader
	if cfg.tls.Enabled() {
		// Before the runtime loads: a wrong file fails in a moment.
		var err error
		if tlsFiles, err = tlsconf.New(cfg.tls, log); err != nil {
			return err
		}
	}
	lib, err := runtime.ResolveLib(cfg.ortLib)
	if err != nil {
		return err
	}
	env, err := runtime.Open(runtime.Config{
		Lib: lib, Provider: cfg.provider, IntraOpThreads: cfg.threads, IntraOpSpin: cfg.intraOpSpin, OptLevel: cfg.optLevel, Logger: log,
		CUDA: cfg.cuda, TensorRT: cfg.tensorrt, TensorRTCache: cfg.tensorrtCache,
	})
	if err != nil {
		return err
	}
	defer env.Close()
	gpus := env.GPUs()
	log.Info("ONNX Runtime ready", "version", env.Version(), "lib", lib, "provider", cfg.provider,
		"gpus", len(gpus.Devices), "cores", goruntime.NumCPU())
	for _, d := range gpus.Devices {
		log.Info("GPU", "index", d.Index, "name", d.Name, "memory_gib", float64(d.TotalMemory)/(1<<30), "driver", gpus.DriverVersion,
			"host_memory", cmp.Or(cfg.cuda.HostMemory, runtime.HostPinned), "cuda_graphs", cfg.cuda.Graphs)
	}

	switch cfg.modelControl {
	case "none", "explicit", "poll":
	default:
		return fmt.Errorf("--model-control must be none, explicit or poll, got %q", cfg.modelControl)
	}
	if cfg.modelControl == "poll" && cfg.pollInterval < 100*time.Millisecond {
		return fmt.Errorf("--poll-interval %s is too short", cfg.pollInterval)
	}
	if cfg.reportEvery != 0 && (cfg.reportEvery < time.Second || cfg.predictionLog == "off" || cfg.predictionLog == "none" || cfg.predictionLog == "") {
		return fmt.Errorf("--report-every %s: needs the prediction log and a period of at least 1s", cfg.reportEvery)
	}
	reg := prometheus.NewRegistry()
	plog, err := openPredictionLog(ctx, cfg, log)
	if err != nil {
		return err
	}
	if plog != nil {
		reg.MustRegister(plog.Collector())
		defer func() {
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := plog.Close(cctx); err != nil {
				log.Error("closing the prediction log", "err", err)
			}
			st := plog.Stats()
			log.Info("prediction log closed", "written", st.Written, "dropped", st.Dropped)
		}()
	}
	opts := server.Options{
		MaxBodyBytes: cfg.maxBody, MaxImages: cfg.maxImages, Logger: log, Registry: reg,
		Version: version, Runtime: "onnxruntime " + env.Version(),
		AdminToken: cfg.adminToken, APIToken: cfg.apiToken, LogImageBytes: cfg.logImages,
		ReadTimeout: cfg.readTimeout, IdleTimeout: cfg.idleTimeout, MaxConnsPerIP: cfg.maxConnsPerIP,
		ReportsDir: filepath.Join(cfg.dataDir, "reports"), AllowClientShm: cfg.allowClientShm,
	}
	if cfg.allowClientShm && gpus.Available() {
		// Only where a GPU is: elsewhere the extension answers 501 and
		// is not listed, as clients check before they allocate.
		opts.CUDAShm = cudaIPC{}
	}
	tlsMode := "off"
	if tlsFiles != nil {
		opts.TLS, opts.ClientCertRequired = tlsFiles.Config(), tlsFiles.ClientCertRequired()
		tlsMode = "on"
		if opts.ClientCertRequired {
			tlsMode = "mutual"
		}
	}
	if plog != nil {
		opts.PredictionLog = plog
	}
	srv := server.New(opts)
	mgr := newRepoManager(env, cfg, batching.NewMetrics(reg), srv, log)
	reg.MustRegister(monitor.NewDriftCollector(mgr.Monitors), monitor.NewGPUCollector(cuda.Samples, gpus))
	if cfg.modelControl != "none" {
		srv.SetRepository(mgr)
		if cfg.adminToken == "" {
			log.Warn("the repository endpoints (/v2/repository/...) are open: set --admin-token to require a token", "model_control", cfg.modelControl)
		}
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.addr, err)
	}
	if tlsFiles == nil && (cfg.apiToken != "" || cfg.adminToken != "") && !loopback(ln.Addr()) {
		// Fine behind a TLS proxy or mesh; said once, since a bearer token
		// in the clear is anyone's who can see the traffic.
		log.Warn("bearer tokens cross the network in the clear: set --tls-cert and --tls-key, or terminate TLS in front of the server", "addr", ln.Addr().String())
	}
	addrs := listening{http: ln.Addr().String()}
	var gln net.Listener
	if cfg.grpcAddr != "" {
		if gln, err = net.Listen("tcp", cfg.grpcAddr); err != nil {
			ln.Close()
			return fmt.Errorf("listening on %s for gRPC (--grpc-addr; empty turns gRPC off): %w", cfg.grpcAddr, err)
		}
		addrs.grpc = gln.Addr().String()
	}
	served, running := make(chan error, 2), 1
	go func() { served <- srv.Serve(ln) }()
	if gln != nil {
		running++
		go func() { served <- srv.ServeGRPC(gln) }()
	}
	log.Info("listening", "addr", addrs.http, "grpc_addr", addrs.grpc, "tls", tlsMode, "models", cfg.models)
	if started != nil {
		started <- addrs
	}

	// Liveness answers while models load; readiness waits for them.
	loaded, errs := mgr.LoadAll()
	for _, e := range errs {
		log.Error("model not loaded", "err", e)
	}
	if loaded == 0 {
		log.Warn("no model is being served", "models", cfg.models)
	}
	srv.SetReady(true)
	log.Info("ready", "models", loaded, "failed", len(errs), "model_control", cfg.modelControl)
	pollCtx, stopPoll := context.WithCancel(ctx)
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		if cfg.modelControl == "poll" {
			mgr.Poll(pollCtx, cfg.pollInterval)
		}
	}()
	defer func() {
		stopPoll()
		<-polled
	}()
	// Periodic reports, read from the log beside the server.
	reportCtx, stopReports := context.WithCancel(ctx)
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		if cfg.reportEvery > 0 && plog != nil {
			reportLoop(reportCtx, cfg.reportEvery, opts.ReportsDir, cfg.models, plog, log)
		}
	}()
	defer func() {
		stopReports()
		<-reported
	}()

	select {
	case err := <-served:
		// One listener failed: stop the other before returning.
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		srv.Shutdown(sctx)
		cancel()
		return fmt.Errorf("server stopped: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing in-flight requests", "timeout", cfg.shutdownTimeout)
	srv.SetReady(false)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	err = srv.Shutdown(sctx)
	for range running {
		if serr := <-served; serr != nil && err == nil {
			err = serr
		}
	}
	// In-flight requests are done; the schedulers drain (nothing is left)
	// and their instances close.
	stopPoll()
	<-polled
	mgr.Close()
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutdown: in-flight requests still running after %s", cfg.shutdownTimeout)
	}
	log.Info("stopped")
	return err
}

// openPredictionLog opens --prediction-log (nil for off).
func openPredictionLog(ctx context.Context, cfg *serveConfig, log *slog.Logger) (*predlog.Log, error) {
	dsn := cfg.predictionLog
	switch {
	case dsn == "off" || dsn == "none" || dsn == "":
		return nil, nil
	case dsn == "sqlite":
		if err := os.MkdirAll(cfg.dataDir, 0o755); err != nil {
			return nil, fmt.Errorf("--data-dir: %w", err)
		}
		dsn = "sqlite:" + filepath.Join(cfg.dataDir, "predictions.db")
	}
	l, err := predlog.Open(ctx, dsn, predlog.Options{Retention: cfg.retention, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("--prediction-log: %w", err)
	}
	where := dsn
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		u.User = url.User(u.User.Username()) // never log a password
		where = u.String()
	}
	log.Info("prediction log", "dsn", where, "images_up_to_bytes", cfg.logImages, "retention", cfg.retention)
	return l, nil
}

// cudaIPC serves Triton's CUDA shared memory extension with package
// cuda's IPC calls.
type cudaIPC struct{}

func (cudaIPC) OpenIPC(handle []byte, device int, size int64) (server.CUDARegion, error) {
	m, err := cuda.OpenIPC(handle, device, size)
	if err != nil {
		return nil, err
	}
	return m, nil
}
