package cuda

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// This file is the discovery logic, in plain Go. It talks to the driver
// libraries only through the cudaAPI and nvmlAPI interfaces, which the cgo
// file implements over dlsym'd function pointers and tests implement with
// fakes.

const (
	cudaSoname = "libcuda.so.1"
	nvmlSoname = "libnvidia-ml.so.1"

	// CUdevice_attribute values (cuda.h).
	attrComputeCapabilityMajor = 75
	attrComputeCapabilityMinor = 76

	// maxDevices bounds the device loop against a library answering
	// nonsense; the largest machines have 16 GPUs.
	maxDevices = 1024
)

// fallbackDirs are searched after the dynamic linker's own search: places
// where drivers are installed without an ld.so cache entry. The CUDA
// toolkit's stubs directory is deliberately absent: its libcuda.so only ever
// answers CUDA_ERROR_STUB_LIBRARY.
var fallbackDirs = []string{
	"/usr/lib/wsl/lib",        // WSL 2: the Windows driver's Linux libraries
	"/usr/local/nvidia/lib64", // containers with the driver mounted in
	"/usr/local/nvidia/lib",
	"/usr/lib64",
	"/usr/lib/x86_64-linux-gnu",
	"/usr/lib/aarch64-linux-gnu",
}

// cudaAPI is the part of the CUDA driver API discovery uses. Device handles
// are CUdevice values, which are plain ints.
type cudaAPI interface {
	// Path is the file the library was loaded from.
	Path() string
	// Close unloads the library. It is only called on a library in which
	// no function has been called: unloading libcuda or NVML after
	// initialisation is unsafe (they start threads and register exit
	// handlers), so an initialised library stays mapped for the life of the
	// process. Re-opening the same path later just takes another reference.
	Close()
	Init(flags uint) cuResult
	DriverGetVersion() (int, cuResult)
	DeviceGetCount() (int, cuResult)
	DeviceGet(ordinal int) (int, cuResult)
	DeviceGetName(dev int) (string, cuResult)
	DeviceTotalMem(dev int) (uint64, cuResult)
	DeviceGetAttribute(attr, dev int) (int, cuResult)
	// DeviceGetUUID answers CUDA_ERROR_NOT_SUPPORTED when the driver lacks
	// cuDeviceGetUuid.
	DeviceGetUUID(dev int) ([16]byte, cuResult)
}

// nvmlAPI is the part of NVML discovery and Samples use. NVML's device
// handles are replaced by indices: the implementation looks the handle up
// (nvmlDeviceGetHandleByIndex_v2, a table lookup) on every call.
type nvmlAPI interface {
	Path() string
	Close() // as cudaAPI.Close
	Init() nvmlReturn
	Shutdown() nvmlReturn
	SystemGetDriverVersion() (string, nvmlReturn)
	DeviceGetCount() (int, nvmlReturn)
	DeviceGetName(i int) (string, nvmlReturn)
	DeviceGetUUID(i int) (string, nvmlReturn)
	DeviceGetMemoryInfo(i int) (nvmlMemory, nvmlReturn)
	DeviceGetUtilizationRates(i int) (nvmlUtilization, nvmlReturn)
	// DeviceGetPowerUsage is in milliwatts.
	DeviceGetPowerUsage(i int) (uint32, nvmlReturn)
}

type nvmlMemory struct{ Total, Free, Used uint64 }

type nvmlUtilization struct{ GPU, Memory uint32 }

// system is what discovery needs from the outside world.
type system struct {
	// unsupported, when set, is the Reason for every discovery: this build
	// cannot load libraries at all.
	unsupported string
	loadCUDA    func(path string) (cudaAPI, error)
	loadNVML    func(path string) (nvmlAPI, error)
	// exists reports whether a file exists; explicit paths that do not are
	// skipped without calling dlopen.
	exists    func(path string) bool
	lookupEnv func(key string) (string, bool)
}

func hostSystem() system {
	return system{
		unsupported: dlUnsupported,
		loadCUDA:    loadCUDALib,
		loadNVML:    loadNVMLLib,
		exists: func(path string) bool {
			_, err := os.Stat(path)
			return err == nil
		},
		lookupEnv: os.LookupEnv,
	}
}

// candidates lists what to pass to dlopen for soname, in order: the file in
// each of dirs, the bare soname (the dynamic linker's search), then the file
// in each fallback directory.
func candidates(soname string, dirs []string) []string {
	out := make([]string, 0, len(dirs)+1+len(fallbackDirs))
	seen := map[string]bool{}
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, d := range dirs {
		add(filepath.Join(d, soname))
	}
	add(soname)
	for _, d := range fallbackDirs {
		add(filepath.Join(d, soname))
	}
	return out
}

// loadFailure is one candidate that did not load.
type loadFailure struct {
	path    string
	err     error
	missing bool // no such file: not worth reporting in detail
}

// isMissing tells a "no such file" dlopen error from the others (a corrupt
// file, a wrong architecture, an unresolved dependency), which deserve to be
// shown. dlerror has no error code, only text.
func isMissing(err error) bool {
	return err != nil && strings.Contains(err.Error(), "No such file or directory")
}

// loadReason summarises why no candidate for soname loaded.
func loadReason(soname string, failures []loadFailure) string {
	var shown []string
	for _, f := range failures {
		if !f.missing {
			shown = append(shown, f.err.Error())
		}
	}
	if len(shown) == 0 {
		return soname + " not found (is the NVIDIA driver installed? " + LibDirEnv + " adds directories to search)"
	}
	return "cannot load " + soname + ": " + strings.Join(shown, "; ")
}

// eachCandidate calls try with each library of soname that loads, in
// candidate order, until try returns true. It skips a candidate that
// resolves to a file already tried (the soname and a fallback directory
// often name the same file). It returns the failures of the candidates that
// did not load.
func eachCandidate[L interface {
	Path() string
	Close()
}](sys system, soname string, dirs []string, load func(string) (L, error), try func(L) bool) []loadFailure {
	var failures []loadFailure
	tried := map[string]bool{}
	for _, path := range candidates(soname, dirs) {
		if filepath.IsAbs(path) && !sys.exists(path) {
			failures = append(failures, loadFailure{path: path, missing: true,
				err: fmt.Errorf("%s: %w", path, os.ErrNotExist)})
			continue
		}
		lib, err := load(path)
		if err != nil {
			failures = append(failures, loadFailure{path: path, err: err, missing: isMissing(err)})
			continue
		}
		if tried[lib.Path()] {
			// dlopen handed out another reference to a library already
			// tried; dropping that reference leaves the library loaded.
			lib.Close()
			continue
		}
		tried[lib.Path()] = true
		if try(lib) {
			break
		}
	}
	return failures
}

// discover runs the whole discovery: NVML first (it is optional and only
// adds to what CUDA finds), then libcuda. It returns the initialised NVML
// session, or nil, and the libcuda that found the devices, or nil.
func discover(sys system, dirs []string) (Info, nvmlAPI, cudaAPI) {
	if sys.unsupported != "" {
		return Info{Reason: sys.unsupported, NVMLReason: sys.unsupported}, nil, nil
	}
	var info Info

	nv, nvReason := openNVML(sys, dirs)
	var nvDriver string
	if nv != nil {
		info.NVMLLibrary = nv.Path()
		if v, r := nv.SystemGetDriverVersion(); r == nvmlSuccess {
			nvDriver = v
		}
	} else {
		info.NVMLReason = nvReason
	}

	// The first library that loads and finds devices wins. When none
	// finds any, the answer of the first one that loaded is reported: it is
	// the most preferred, and for the usual single driver the only one.
	var first *cudaResult
	var winner cudaAPI
	failures := eachCandidate(sys, cudaSoname, dirs, sys.loadCUDA, func(lib cudaAPI) bool {
		res := probeCUDA(lib, sys.lookupEnv)
		if len(res.devices) > 0 {
			first, winner = &res, lib
			return true
		}
		if first == nil {
			first = &res
		}
		return false
	})

	if first == nil {
		info.Reason = loadReason(cudaSoname, failures)
	} else {
		info.Library = first.path
		info.CUDAVersion = formatCUDAVersion(first.version)
		if winner != nil {
			info.Devices = first.devices
		} else {
			info.Reason = first.reason
		}
	}
	info.DriverVersion = info.CUDAVersion
	if nvDriver != "" {
		info.DriverVersion = nvDriver
	}
	if nv != nil && len(info.Devices) > 0 {
		mergeNVML(info.Devices, nv)
	}
	return info, nv, winner
}

// openNVML loads and initialises the first NVML that will. It returns nil
// and the reason when none does.
func openNVML(sys system, dirs []string) (nvmlAPI, string) {
	var found nvmlAPI
	var initErr string
	failures := eachCandidate(sys, nvmlSoname, dirs, sys.loadNVML, func(lib nvmlAPI) bool {
		if r := lib.Init(); r != nvmlSuccess {
			if initErr == "" {
				initErr = fmt.Sprintf("nvmlInit_v2 failed: %v (%s)", r, lib.Path())
			}
			return false
		}
		found = lib
		return true
	})
	if found != nil {
		return found, ""
	}
	if initErr != "" {
		return nil, initErr
	}
	return nil, loadReason(nvmlSoname, failures)
}

// cudaResult is what one libcuda answered.
type cudaResult struct {
	path    string
	version int // cuDriverGetVersion; 0 if unknown
	devices []Device
	reason  string // why devices is empty
}

// probeCUDA initialises the driver API and lists its devices.
func probeCUDA(lib cudaAPI, lookupEnv func(string) (string, bool)) cudaResult {
	res := cudaResult{path: lib.Path()}
	// cuDriverGetVersion works before cuInit, and is worth reporting
	// when cuInit then fails.
	if v, r := lib.DriverGetVersion(); r == cuSuccess {
		res.version = v
	}
	if r := lib.Init(0); r != cuSuccess {
		res.reason = "cuInit failed: " + r.String() + visibleDevicesHint(lookupEnv)
		return res
	}
	n, r := lib.DeviceGetCount()
	if r != cuSuccess {
		res.reason = "cuDeviceGetCount failed: " + r.String()
		return res
	}
	if n <= 0 {
		res.reason = "no CUDA device (cuDeviceGetCount returned 0)" + visibleDevicesHint(lookupEnv)
		return res
	}
	var errs []error
	for ordinal := range min(n, maxDevices) {
		d, err := probeDevice(lib, ordinal)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		res.devices = append(res.devices, d)
	}
	if len(res.devices) == 0 {
		res.reason = fmt.Sprintf("none of %d CUDA devices could be queried: %v", n, errors.Join(errs...))
	}
	return res
}

// probeDevice reads one device. Only cuDeviceGet failing drops the device;
// a property that cannot be read is left zero.
func probeDevice(lib cudaAPI, ordinal int) (Device, error) {
	dev, r := lib.DeviceGet(ordinal)
	if r != cuSuccess {
		return Device{}, fmt.Errorf("cuDeviceGet(%d) failed: %v", ordinal, r)
	}
	d := Device{Index: ordinal}
	if name, r := lib.DeviceGetName(dev); r == cuSuccess {
		d.Name = name
	}
	if total, r := lib.DeviceTotalMem(dev); r == cuSuccess {
		d.TotalMemory = total
	}
	if v, r := lib.DeviceGetAttribute(attrComputeCapabilityMajor, dev); r == cuSuccess {
		d.ComputeMajor = v
	}
	if v, r := lib.DeviceGetAttribute(attrComputeCapabilityMinor, dev); r == cuSuccess {
		d.ComputeMinor = v
	}
	if u, r := lib.DeviceGetUUID(dev); r == cuSuccess {
		d.UUID = formatUUID(u)
	}
	return d, nil
}

// visibleDevicesHint names CUDA_VISIBLE_DEVICES when it is set, the usual
// reason a machine with GPUs shows none (an empty value hides them all).
func visibleDevicesHint(lookupEnv func(string) (string, bool)) string {
	if lookupEnv == nil {
		return ""
	}
	if v, set := lookupEnv("CUDA_VISIBLE_DEVICES"); set {
		return fmt.Sprintf(" (CUDA_VISIBLE_DEVICES=%q)", v)
	}
	return ""
}

// mergeNVML fills FreeMemory from NVML, matching devices by UUID: CUDA and
// NVML number devices differently (CUDA_VISIBLE_DEVICES, and CUDA's default
// fastest-first order against NVML's PCI order). Without UUIDs the only safe
// match is one device on each side.
func mergeNVML(devs []Device, nv nvmlAPI) {
	n, r := nv.DeviceGetCount()
	if r != nvmlSuccess || n <= 0 {
		return
	}
	byUUID := map[string]int{}
	for i := range min(n, maxDevices) {
		if u, r := nv.DeviceGetUUID(i); r == nvmlSuccess && u != "" {
			byUUID[strings.ToLower(u)] = i
		}
	}
	for k := range devs {
		idx, ok := byUUID[strings.ToLower(devs[k].UUID)]
		if devs[k].UUID == "" {
			idx, ok = 0, len(devs) == 1 && n == 1
		}
		if !ok {
			continue
		}
		if m, r := nv.DeviceGetMemoryInfo(idx); r == nvmlSuccess {
			devs[k].FreeMemory = m.Free
		}
		if devs[k].Name == "" {
			if name, r := nv.DeviceGetName(idx); r == nvmlSuccess {
				devs[k].Name = name
			}
		}
	}
}

// readSamples reads every NVML device. A device whose memory cannot be
// read for any reason but "not supported" is left out: memory information
// exists on every product, so that failure means the device cannot be
// talked to (fallen off the bus, no permission). Other metrics a product
// does not report are left zero.
func readSamples(nv nvmlAPI) ([]Sample, bool) {
	n, r := nv.DeviceGetCount()
	if r != nvmlSuccess {
		return nil, false
	}
	n = max(0, min(n, maxDevices))
	samples := make([]Sample, 0, n)
	for i := range n {
		s := Sample{Index: i}
		m, r := nv.DeviceGetMemoryInfo(i)
		switch r {
		case nvmlSuccess:
			s.MemoryUsed, s.MemoryTotal = m.Used, m.Total
		case nvmlErrorNotSupported:
		default:
			continue
		}
		if u, r := nv.DeviceGetUUID(i); r == nvmlSuccess {
			s.UUID = u
		}
		if u, r := nv.DeviceGetUtilizationRates(i); r == nvmlSuccess {
			s.UtilizationPct = float64(u.GPU)
		}
		if mw, r := nv.DeviceGetPowerUsage(i); r == nvmlSuccess {
			s.PowerWatts = float64(mw) / 1000
		}
		samples = append(samples, s)
	}
	return samples, true
}

// formatCUDAVersion turns cuDriverGetVersion's 1000*major + 10*minor into
// "major.minor": 13000 is "13.0", 12040 is "12.4". Non-positive is "".
func formatCUDAVersion(v int) string {
	if v <= 0 {
		return ""
	}
	return fmt.Sprintf("%d.%d", v/1000, (v%1000)/10)
}

// formatUUID writes a CUuuid as nvidia-smi and NVML do. All zeroes (a
// driver filling nothing in) is "".
func formatUUID(u [16]byte) string {
	if u == [16]byte{} {
		return ""
	}
	return fmt.Sprintf("GPU-%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}
