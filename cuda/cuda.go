package cuda

import (
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// LibDirEnv names the environment variable holding extra directories, in
// PATH syntax (colon-separated on Linux), searched for libcuda.so.1 and
// libnvidia-ml.so.1 before the dynamic linker's own search.
const LibDirEnv = "FASTINFER_CUDA_LIB_DIR"

// Device is one CUDA device as the driver API numbers it.
type Device struct {
	// Index is the CUDA device ordinal, after CUDA_VISIBLE_DEVICES and
	// CUDA_DEVICE_ORDER have been applied: the number a CUDA program (ONNX
	// Runtime's device_id, for instance) uses. It can differ from the NVML
	// index reported in Sample.Index; match the two by UUID.
	Index int
	// Name is the marketing name, e.g. "NVIDIA H100 80GB HBM3".
	Name string
	// UUID is the GPU's UUID in nvidia-smi's form, "GPU-xxxxxxxx-xxxx-...",
	// or empty when the driver is too old to report it (cuDeviceGetUuid
	// appeared in CUDA 9.2).
	UUID string
	// TotalMemory is the device memory in bytes (cuDeviceTotalMem).
	TotalMemory uint64
	// FreeMemory is the device memory not in use, in bytes, as NVML reports
	// it. It is 0 when NVML is absent or does not know the device: the
	// driver API's cuMemGetInfo would need a CUDA context on the device,
	// which costs hundreds of MB of device memory and seconds of start-up,
	// so discovery does not create one.
	FreeMemory uint64
	// ComputeMajor and ComputeMinor are the compute capability, e.g. 9 and
	// 0 for an H100.
	ComputeMajor, ComputeMinor int
}

// Info is the result of GPU discovery.
type Info struct {
	// Devices are the CUDA devices found, in CUDA ordinal order. Empty when
	// Reason is set.
	Devices []Device
	// DriverVersion is the NVIDIA kernel driver version as NVML reports it
	// (e.g. "580.65.06") when NVML is present, otherwise the CUDA version
	// the driver supports, as in CUDAVersion.
	DriverVersion string
	// CUDAVersion is the highest CUDA version the installed driver supports
	// (cuDriverGetVersion), e.g. "13.0"; empty when libcuda was not loaded.
	CUDAVersion string
	// Library is the path of the libcuda.so.1 whose answer this is (the
	// file the dynamic linker actually opened); empty when none loaded.
	Library string
	// NVMLLibrary is the path of the libnvidia-ml.so.1 in use; empty when
	// NVML is unavailable, in which case NVMLReason says why.
	NVMLLibrary string
	NVMLReason  string
	// Reason says, for a human, why no device is available, e.g.
	// "libcuda.so.1 not found" or "cuInit failed: 100 CUDA_ERROR_NO_DEVICE".
	// Empty when Devices is not.
	Reason string
}

// Available reports whether at least one CUDA device was found.
func (i Info) Available() bool { return len(i.Devices) > 0 }

// Sample is one NVML reading of a GPU, for monitoring.
type Sample struct {
	// Index is NVML's device index, which follows PCI bus order and ignores
	// CUDA_VISIBLE_DEVICES; it need not equal Device.Index. UUID (when NVML
	// reports it) matches Device.UUID.
	Index int
	UUID  string
	// UtilizationPct is the percentage of the last sample period (1/6 s to
	// 1 s depending on the product) during which a kernel was running.
	UtilizationPct float64
	// MemoryUsed and MemoryTotal are device memory in bytes.
	MemoryUsed, MemoryTotal uint64
	// PowerWatts is the board's power draw; 0 where the product does not
	// report it.
	PowerWatts float64
}

// The process-wide discovery result and the NVML session Samples reads
// through. A mutex rather than a sync.Once, so that Rediscover and Shutdown
// can replace them.
var state struct {
	mu      sync.Mutex
	done    bool
	info    Info
	nvml    nvmlAPI // initialised; nil when NVML is unavailable
	cuda    cudaAPI // the initialised libcuda that found info.Devices; nil when none did
	dirs    []string
	dirsSet bool // dirs came from SetLibDirs, not from LibDirEnv
}

// Discover returns the GPUs of this machine. The first call probes the
// driver libraries (tens to hundreds of milliseconds with a real driver);
// later calls return the cached result. A machine without driver or GPU is
// not an error: the Info then has Available() false and a Reason.
func Discover() Info {
	state.mu.Lock()
	defer state.mu.Unlock()
	if !state.done {
		refreshLocked()
	}
	return state.info.clone()
}

// Rediscover probes again, replacing the cached result (and the NVML session
// Samples uses). It re-reads FASTINFER_CUDA_LIB_DIR unless SetLibDirs was
// called. Meant for tests and for an operator-triggered rescan.
func Rediscover() Info {
	state.mu.Lock()
	defer state.mu.Unlock()
	refreshLocked()
	return state.info.clone()
}

// SetLibDirs replaces FASTINFER_CUDA_LIB_DIR as the list of directories
// searched first (for a command-line flag, say). A nil dirs goes back to the
// environment variable. It forgets the cached result, so the next Discover
// probes with the new directories.
func SetLibDirs(dirs []string) {
	state.mu.Lock()
	defer state.mu.Unlock()
	state.dirs = slices.Clone(dirs)
	state.dirsSet = dirs != nil
	state.done = false
}

// Shutdown ends the NVML session (nvmlShutdown) and forgets the cached
// result; a later Discover or Samples probes again. Calling it at exit is
// optional.
func Shutdown() {
	state.mu.Lock()
	defer state.mu.Unlock()
	closeNVMLLocked()
	state.done = false
	state.info, state.cuda = Info{}, nil
}

// Samples reads live utilisation, memory and power of every GPU NVML sees.
// ok is false when NVML is unavailable (no driver, or a build without cgo),
// or when NVML stopped answering; it is true with an empty slice on a
// machine where NVML works but has no GPU. Discover runs first if it has
// not yet.
func Samples() ([]Sample, bool) {
	state.mu.Lock()
	defer state.mu.Unlock()
	if !state.done {
		refreshLocked()
	}
	if state.nvml == nil {
		return nil, false
	}
	return readSamples(state.nvml)
}

func refreshLocked() {
	closeNVMLLocked()
	dirs := state.dirs
	if !state.dirsSet {
		dirs = splitLibDirs(os.Getenv(LibDirEnv))
	}
	state.info, state.nvml, state.cuda = discover(hostSystem(), dirs)
	state.done = true
}

func closeNVMLLocked() {
	if state.nvml != nil {
		// The library stays mapped: see the comment on cudaAPI.Close.
		state.nvml.Shutdown()
		state.nvml = nil
	}
}

// splitLibDirs splits a PATH-style list, dropping empty entries.
func splitLibDirs(list string) []string {
	var dirs []string
	for _, d := range filepath.SplitList(list) {
		if d != "" {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

func (i Info) clone() Info {
	i.Devices = slices.Clone(i.Devices)
	return i
}
