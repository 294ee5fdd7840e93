package runtime

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	goruntime "runtime"
	"strings"
	"sync"
	"time"

	ort "github.com/yalue/onnxruntime_go"

	"fastinfer/cuda"
)

// Execution providers a user can ask for.
const (
	ProviderAuto = "auto" // CUDA when a GPU and the CUDA provider library are usable, else CPU
	ProviderCPU  = "cpu"
	ProviderCUDA = "cuda" // CUDA even if discovery found no GPU; falls back to CPU on failure
)

// Config configures the process-wide ONNX Runtime environment.
type Config struct {
	Lib            string // path to libonnxruntime.so (see ResolveLib)
	Provider       string // auto | cpu | cuda; "" = auto
	IntraOpThreads int    // per-session compute threads; 0 = number of cores
	// IntraOpSpin is how long a session's idle compute threads spin
	// before they sleep: a duration ("0" = never spin), SpinORT for ONNX
	// Runtime's own, or "" for DefaultSpin.
	IntraOpSpin string
	OptLevel    string // disable | basic | extended | all; "" = all
	CUDA        CUDAOptions
	// TensorRT is auto (tried before CUDA when its provider library is
	// beside Lib) or off; "" = auto. TensorRTCache is where its engines
	// are kept between runs ("" = not kept).
	TensorRT      string
	TensorRTCache string
	// GPUs reports the machine's GPUs; nil means cuda.Discover. Tests inject
	// a fake to exercise the CUDA attempt on a machine without a GPU.
	GPUs   func() cuda.Info
	Logger *slog.Logger
}

// Env is the ONNX Runtime environment. ORT allows one per process, so Open
// hands out the same Env to every caller that names the same library.
type Env struct {
	cfg     Config
	opt     ort.GraphOptimizationLevel
	spin    time.Duration // < 0: ONNX Runtime's own
	logger  *slog.Logger
	gpus    cuda.Info
	reasons sync.Map // fallback reasons already logged, so each is said once
	refs    int

	cudaOnce sync.Once
	cudaEP   *pluginEP
	cudaErr  error
}

var (
	envMu  sync.Mutex
	shared *Env
)

// Open initialises ONNX Runtime from cfg.Lib, or returns the environment
// already open on the same library.
func Open(cfg Config) (*Env, error) {
	spin, err := ParseSpin(cfg.IntraOpSpin)
	if err != nil {
		return nil, err
	}
	envMu.Lock()
	defer envMu.Unlock()
	if shared != nil {
		if shared.cfg.Lib != cfg.Lib {
			return nil, fmt.Errorf("ONNX Runtime already initialised from %s, cannot also load %s", shared.cfg.Lib, cfg.Lib)
		}
		shared.refs++
		return shared, nil
	}
	if cfg.Lib == "" {
		return nil, fmt.Errorf("%w: no library path given", ErrNoLibrary)
	}
	if _, err := os.Stat(cfg.Lib); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoLibrary, err)
	}
	switch cfg.Provider {
	case "":
		cfg.Provider = ProviderAuto
	case ProviderAuto, ProviderCPU, ProviderCUDA:
	default:
		return nil, fmt.Errorf("unknown execution provider %q (want auto, cpu or cuda)", cfg.Provider)
	}
	opt, err := parseOptLevel(cfg.OptLevel)
	if err != nil {
		return nil, err
	}
	if err := cfg.CUDA.Validate(); err != nil {
		return nil, err
	}
	switch cfg.TensorRT {
	case "":
		cfg.TensorRT = TensorRTAuto
	case TensorRTAuto, TensorRTOff:
	default:
		return nil, fmt.Errorf("unknown TensorRT mode %q (want auto or off)", cfg.TensorRT)
	}
	if cfg.IntraOpThreads <= 0 {
		cfg.IntraOpThreads = goruntime.NumCPU()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.GPUs == nil {
		cfg.GPUs = cuda.Discover
	}
	ort.SetSharedLibraryPath(cfg.Lib)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		return nil, fmt.Errorf("initialising ONNX Runtime from %s: %w", cfg.Lib, err)
	}
	e := &Env{cfg: cfg, opt: opt, spin: spin, logger: cfg.Logger, refs: 1}
	if cfg.Provider != ProviderCPU {
		e.gpus = cfg.GPUs()
	}
	shared = e
	return e, nil
}

// Close releases this reference; the last one destroys the ORT environment.
func (e *Env) Close() error {
	envMu.Lock()
	defer envMu.Unlock()
	e.refs--
	if e.refs > 0 {
		return nil
	}
	shared = nil
	e.cudaEP.close()
	return ort.DestroyEnvironment()
}

// Version is the ONNX Runtime library's own version string.
func (e *Env) Version() string { return ort.GetVersion() }

// Lib is the library path in use.
func (e *Env) Lib() string { return e.cfg.Lib }

// GPUs is what GPU discovery found when the environment opened (empty when
// the CPU provider was asked for).
func (e *Env) GPUs() cuda.Info { return e.gpus }

// cudaPlan says whether a session should try the CUDA provider and, if not,
// why. It is pure so the decision table can be tested without a GPU.
func cudaPlan(want string, gpus cuda.Info, providerLibPresent bool, providerLib string) (try bool, reason string) {
	switch want {
	case ProviderCPU:
		return false, ""
	case ProviderCUDA:
		if !providerLibPresent {
			return false, fmt.Sprintf("CUDA provider library %s not found (run `make gpu-deps`)", providerLib)
		}
		return true, ""
	}
	if !gpus.Available() {
		reason := gpus.Reason
		if reason == "" {
			reason = "no GPU found"
		}
		return false, reason
	}
	if !providerLibPresent {
		return false, fmt.Sprintf("GPU found but CUDA provider library %s is missing (run `make gpu-deps`)", providerLib)
	}
	return true, ""
}

// noteFallback logs a reason for running on the CPU once per process. A
// missing GPU is normal (info); a GPU we could not use is a warning.
func (e *Env) noteFallback(model, reason string, gpuWanted bool) {
	e.noteOnce(reason, func() {
		if gpuWanted {
			e.logger.Warn("CUDA execution provider unusable, falling back to CPU", "model", model, "reason", reason)
			return
		}
		e.logger.Info("running on CPU", "reason", reason)
	})
}

// noteOnce runs say the first time key is noted in this process.
func (e *Env) noteOnce(key string, say func()) {
	if _, seen := e.reasons.LoadOrStore(key, true); !seen {
		say()
	}
}

func parseOptLevel(s string) (ort.GraphOptimizationLevel, error) {
	switch strings.ToLower(s) {
	case "", "all":
		return ort.GraphOptimizationLevelEnableAll, nil
	case "extended":
		return ort.GraphOptimizationLevelEnableExtended, nil
	case "basic":
		return ort.GraphOptimizationLevelEnableBasic, nil
	case "disable", "none", "off":
		return ort.GraphOptimizationLevelDisableAll, nil
	}
	return 0, errors.New("unknown graph optimisation level " + s + " (want disable, basic, extended or all)")
}
