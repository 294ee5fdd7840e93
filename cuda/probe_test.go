package cuda

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Tests of the pure-Go discovery logic against fake libraries. They need
// neither a GPU nor cgo.

const gib = uint64(1) << 30

const noNVML = "libnvidia-ml.so.1 not found (is the NVIDIA driver installed? FASTINFER_CUDA_LIB_DIR adds directories to search)"

func TestFormatCUDAVersion(t *testing.T) {
	for _, tc := range []struct {
		in   int
		want string
	}{
		{13000, "13.0"},
		{12040, "12.4"},
		{12090, "12.9"},
		{11080, "11.8"},
		{12010, "12.1"},
		{12035, "12.3"}, // a patch digit, which the driver does not set today, is dropped
		{9020, "9.2"},
		{0, ""},
		{-1, ""},
	} {
		if got := formatCUDAVersion(tc.in); got != tc.want {
			t.Errorf("formatCUDAVersion(%d) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestResultStrings(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{cuResult(0).String(), "0 CUDA_SUCCESS"},
		{cuResult(3).String(), "3 CUDA_ERROR_NOT_INITIALIZED"},
		{cuResult(34).String(), "34 CUDA_ERROR_STUB_LIBRARY"},
		{cuResult(35).String(), "35 CUDA_ERROR_INSUFFICIENT_DRIVER"},
		{cuResult(100).String(), "100 CUDA_ERROR_NO_DEVICE"},
		{cuResult(101).String(), "101 CUDA_ERROR_INVALID_DEVICE"},
		{cuResult(803).String(), "803 CUDA_ERROR_SYSTEM_DRIVER_MISMATCH"},
		{cuResult(999).String(), "999 CUDA_ERROR_UNKNOWN"},
		{cuResult(4242).String(), "4242 unrecognised CUresult"},
		{nvmlReturn(9).String(), "9 NVML_ERROR_DRIVER_NOT_LOADED"},
		{nvmlReturn(18).String(), "18 NVML_ERROR_LIB_RM_VERSION_MISMATCH"},
		{nvmlReturn(77).String(), "77 unrecognised nvmlReturn_t"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestFormatUUID(t *testing.T) {
	var u [16]byte
	for i := range u {
		u[i] = byte(i * 0x11)
	}
	for _, tc := range []struct {
		in   [16]byte
		want string
	}{
		{u, "GPU-00112233-4455-6677-8899-aabbccddeeff"},
		{[16]byte{}, ""},
		{[16]byte{15: 1}, "GPU-00000000-0000-0000-0000-000000000001"},
	} {
		if got := formatUUID(tc.in); got != tc.want {
			t.Errorf("formatUUID(%x) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSplitLibDirs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"/a", []string{"/a"}},
		{"/a:/b", []string{"/a", "/b"}},
		{":/a::/b:", []string{"/a", "/b"}},
	} {
		if got := splitLibDirs(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("splitLibDirs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestCandidates(t *testing.T) {
	got := candidates(cudaSoname, []string{"/opt/drv", "/opt/drv", "/usr/lib64"})
	want := []string{"/opt/drv/libcuda.so.1", "/usr/lib64/libcuda.so.1", "libcuda.so.1"}
	for _, d := range fallbackDirs {
		if p := filepath.Join(d, cudaSoname); !slices.Contains(want, p) {
			want = append(want, p)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("candidates:\n got %q\nwant %q", got, want)
	}
	for _, p := range got {
		if strings.Contains(p, "stubs") {
			t.Errorf("candidate %q is the toolkit's stub library", p)
		}
	}
}

func TestLoadReason(t *testing.T) {
	missing := loadFailure{path: "libcuda.so.1", missing: true,
		err: errors.New("libcuda.so.1: cannot open shared object file: No such file or directory")}
	garbage := loadFailure{path: "/x/libcuda.so.1", err: errors.New("/x/libcuda.so.1: invalid ELF header")}
	for _, tc := range []struct {
		name     string
		failures []loadFailure
		want     string // prefix
		contains string
	}{
		{"none at all", nil, "libcuda.so.1 not found", LibDirEnv},
		{"all missing", []loadFailure{missing, missing}, "libcuda.so.1 not found", ""},
		{"one broken", []loadFailure{garbage, missing}, "cannot load libcuda.so.1: /x/libcuda.so.1: invalid ELF header", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := loadReason(cudaSoname, tc.failures)
			if !strings.HasPrefix(got, tc.want) || !strings.Contains(got, tc.contains) {
				t.Errorf("loadReason = %q, want prefix %q containing %q", got, tc.want, tc.contains)
			}
			if strings.Contains(got, "No such file") {
				t.Errorf("loadReason = %q reports missing files in detail", got)
			}
		})
	}
}

// ---- fakes ----

type fakeDevice struct {
	name         string
	total        uint64
	major, minor int
	uuid         [16]byte
	getErr       cuResult // cuDeviceGet's answer for this device
}

type fakeCUDA struct {
	path      string
	initErr   cuResult
	version   int
	countErr  cuResult
	devices   []fakeDevice
	noUUID    bool // cuDeviceGetUuid absent
	initCalls *int
	closed    *bool
}

func (f *fakeCUDA) Path() string { return f.path }
func (f *fakeCUDA) Close() {
	if f.closed != nil {
		*f.closed = true
	}
}
func (f *fakeCUDA) Init(flags uint) cuResult {
	if f.initCalls != nil {
		*f.initCalls++
	}
	if flags != 0 {
		return 1
	}
	return f.initErr
}
func (f *fakeCUDA) DriverGetVersion() (int, cuResult) { return f.version, cuSuccess }
func (f *fakeCUDA) DeviceGetCount() (int, cuResult)   { return len(f.devices), f.countErr }
func (f *fakeCUDA) dev(d int) (*fakeDevice, cuResult) {
	if d < 0 || d >= len(f.devices) {
		return nil, 101
	}
	return &f.devices[d], cuSuccess
}
func (f *fakeCUDA) DeviceGet(ordinal int) (int, cuResult) {
	d, r := f.dev(ordinal)
	if r == cuSuccess {
		r = d.getErr
	}
	return ordinal, r
}
func (f *fakeCUDA) DeviceGetName(dev int) (string, cuResult) {
	d, r := f.dev(dev)
	if r != cuSuccess {
		return "", r
	}
	return d.name, r
}
func (f *fakeCUDA) DeviceTotalMem(dev int) (uint64, cuResult) {
	d, r := f.dev(dev)
	if r != cuSuccess {
		return 0, r
	}
	return d.total, r
}
func (f *fakeCUDA) DeviceGetAttribute(attr, dev int) (int, cuResult) {
	d, r := f.dev(dev)
	switch {
	case r != cuSuccess:
		return 0, r
	case attr == attrComputeCapabilityMajor:
		return d.major, r
	case attr == attrComputeCapabilityMinor:
		return d.minor, r
	}
	return 0, 1
}
func (f *fakeCUDA) DeviceGetUUID(dev int) ([16]byte, cuResult) {
	if f.noUUID {
		return [16]byte{}, cuErrorNotSupport
	}
	d, r := f.dev(dev)
	if r != cuSuccess {
		return [16]byte{}, r
	}
	return d.uuid, r
}

type fakeNVMLDevice struct {
	uuid        string
	mem         nvmlMemory
	memErr      nvmlReturn
	util        uint32
	milliwatts  uint32
	powerErr    nvmlReturn
	name        string
	nameMissing bool
}

type fakeNVML struct {
	path     string
	initErr  nvmlReturn
	driver   string
	countErr nvmlReturn
	devices  []fakeNVMLDevice
	shutdown *bool
}

func (f *fakeNVML) Path() string { return f.path }
func (f *fakeNVML) Close()       {}
func (f *fakeNVML) Init() nvmlReturn {
	return f.initErr
}
func (f *fakeNVML) Shutdown() nvmlReturn {
	if f.shutdown != nil {
		*f.shutdown = true
	}
	return nvmlSuccess
}
func (f *fakeNVML) SystemGetDriverVersion() (string, nvmlReturn) {
	if f.driver == "" {
		return "", nvmlErrorFuncNotFound
	}
	return f.driver, nvmlSuccess
}
func (f *fakeNVML) DeviceGetCount() (int, nvmlReturn) { return len(f.devices), f.countErr }
func (f *fakeNVML) dev(i int) (*fakeNVMLDevice, nvmlReturn) {
	if i < 0 || i >= len(f.devices) {
		return nil, 2
	}
	return &f.devices[i], nvmlSuccess
}
func (f *fakeNVML) DeviceGetName(i int) (string, nvmlReturn) {
	d, r := f.dev(i)
	if r != nvmlSuccess || d.nameMissing {
		return "", nvmlErrorNotSupported
	}
	return d.name, r
}
func (f *fakeNVML) DeviceGetUUID(i int) (string, nvmlReturn) {
	d, r := f.dev(i)
	if r != nvmlSuccess {
		return "", r
	}
	return d.uuid, r
}
func (f *fakeNVML) DeviceGetMemoryInfo(i int) (nvmlMemory, nvmlReturn) {
	d, r := f.dev(i)
	if r != nvmlSuccess {
		return nvmlMemory{}, r
	}
	return d.mem, d.memErr
}
func (f *fakeNVML) DeviceGetUtilizationRates(i int) (nvmlUtilization, nvmlReturn) {
	d, r := f.dev(i)
	if r != nvmlSuccess {
		return nvmlUtilization{}, r
	}
	return nvmlUtilization{GPU: d.util}, r
}
func (f *fakeNVML) DeviceGetPowerUsage(i int) (uint32, nvmlReturn) {
	d, r := f.dev(i)
	if r != nvmlSuccess {
		return 0, r
	}
	return d.milliwatts, d.powerErr
}

// fakeSystem serves libs by candidate path; any other path is missing, the
// way dlopen reports it.
func fakeSystem(cudaLibs map[string]*fakeCUDA, nvmlLibs map[string]*fakeNVML, env map[string]string) system {
	notFound := func(path string) error {
		return fmt.Errorf("%s: cannot open shared object file: No such file or directory", path)
	}
	return system{
		loadCUDA: func(path string) (cudaAPI, error) {
			if l, ok := cudaLibs[path]; ok {
				if l == nil {
					return nil, fmt.Errorf("%s: invalid ELF header", path)
				}
				return l, nil
			}
			return nil, notFound(path)
		},
		loadNVML: func(path string) (nvmlAPI, error) {
			if l, ok := nvmlLibs[path]; ok {
				return l, nil
			}
			return nil, notFound(path)
		},
		exists: func(path string) bool {
			_, c := cudaLibs[path]
			_, n := nvmlLibs[path]
			return c || n
		},
		lookupEnv: func(k string) (string, bool) {
			v, ok := env[k]
			return v, ok
		},
	}
}

func uuidBytes(last byte) [16]byte {
	var u [16]byte
	for i := range u {
		u[i] = byte(i * 0x11)
	}
	u[15] = last
	return u
}

func uuidString(last byte) string { return formatUUID(uuidBytes(last)) }

var (
	h100 = fakeDevice{name: "NVIDIA H100 80GB HBM3", total: 80 * gib, major: 9, minor: 0, uuid: uuidBytes(0)}
	l4   = fakeDevice{name: "NVIDIA L4", total: 23 * gib, major: 8, minor: 9, uuid: uuidBytes(1)}
)

func TestDiscoverFakes(t *testing.T) {
	sysLib := cudaSoname // the dynamic linker's pick, as a fake sees it
	for _, tc := range []struct {
		name  string
		dirs  []string
		cuda  map[string]*fakeCUDA
		nvml  map[string]*fakeNVML
		env   map[string]string
		want  Info
		check func(t *testing.T, got Info)
	}{
		{
			name: "nothing installed",
			want: Info{Reason: "libcuda.so.1 not found (is the NVIDIA driver installed? FASTINFER_CUDA_LIB_DIR adds directories to search)",
				NVMLReason: noNVML},
		},
		{
			name: "one device, CUDA only",
			cuda: map[string]*fakeCUDA{sysLib: {path: "/usr/lib/x86_64-linux-gnu/libcuda.so.1", version: 12040, devices: []fakeDevice{h100}}},
			want: Info{
				Devices:       []Device{{Index: 0, Name: h100.name, UUID: uuidString(0), TotalMemory: 80 * gib, ComputeMajor: 9}},
				DriverVersion: "12.4", CUDAVersion: "12.4",
				Library:    "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
				NVMLReason: noNVML,
			},
		},
		{
			name: "NVML fills free memory by UUID, not by index",
			cuda: map[string]*fakeCUDA{sysLib: {path: "/lib/libcuda.so.1", version: 13000, devices: []fakeDevice{h100, l4}}},
			nvml: map[string]*fakeNVML{nvmlSoname: {path: "/lib/libnvidia-ml.so.1", driver: "580.65.06", devices: []fakeNVMLDevice{
				{uuid: uuidString(1), mem: nvmlMemory{Total: 23 * gib, Free: 20 * gib}},
				{uuid: strings.ToUpper(uuidString(0)), mem: nvmlMemory{Total: 80 * gib, Free: 70 * gib}},
			}}},
			want: Info{
				Devices: []Device{
					{Index: 0, Name: h100.name, UUID: uuidString(0), TotalMemory: 80 * gib, FreeMemory: 70 * gib, ComputeMajor: 9},
					{Index: 1, Name: l4.name, UUID: uuidString(1), TotalMemory: 23 * gib, FreeMemory: 20 * gib, ComputeMajor: 8, ComputeMinor: 9},
				},
				DriverVersion: "580.65.06", CUDAVersion: "13.0",
				Library: "/lib/libcuda.so.1", NVMLLibrary: "/lib/libnvidia-ml.so.1",
			},
		},
		{
			name: "no UUID from an old driver: one device each side still matches, name from NVML",
			cuda: map[string]*fakeCUDA{sysLib: {path: "/lib/libcuda.so.1", version: 9020, noUUID: true,
				devices: []fakeDevice{{total: 16 * gib, major: 7}}}},
			nvml: map[string]*fakeNVML{nvmlSoname: {path: "/lib/libnvidia-ml.so.1", devices: []fakeNVMLDevice{
				{name: "Tesla V100", mem: nvmlMemory{Total: 16 * gib, Free: 15 * gib}},
			}}},
			want: Info{
				Devices:       []Device{{Name: "Tesla V100", TotalMemory: 16 * gib, FreeMemory: 15 * gib, ComputeMajor: 7}},
				DriverVersion: "9.2", CUDAVersion: "9.2",
				Library: "/lib/libcuda.so.1", NVMLLibrary: "/lib/libnvidia-ml.so.1",
			},
		},
		{
			name: "cuInit fails: no device",
			cuda: map[string]*fakeCUDA{sysLib: {path: "/lib/libcuda.so.1", version: 12080, initErr: cuErrorNoDevice}},
			nvml: map[string]*fakeNVML{nvmlSoname: {path: "/lib/libnvidia-ml.so.1", initErr: nvmlErrorDriverNotLoaded}},
			want: Info{
				DriverVersion: "12.8", CUDAVersion: "12.8",
				Library:    "/lib/libcuda.so.1",
				Reason:     "cuInit failed: 100 CUDA_ERROR_NO_DEVICE",
				NVMLReason: "nvmlInit_v2 failed: 9 NVML_ERROR_DRIVER_NOT_LOADED (/lib/libnvidia-ml.so.1)",
			},
		},
		{
			name: "CUDA_VISIBLE_DEVICES is named when it hides everything",
			cuda: map[string]*fakeCUDA{sysLib: {path: "/lib/libcuda.so.1", initErr: cuErrorNoDevice}},
			env:  map[string]string{"CUDA_VISIBLE_DEVICES": ""},
			want: Info{Library: "/lib/libcuda.so.1", Reason: `cuInit failed: 100 CUDA_ERROR_NO_DEVICE (CUDA_VISIBLE_DEVICES="")`},
			check: func(t *testing.T, got Info) {
				if got.NVMLReason == "" {
					t.Error("NVMLReason empty without NVML")
				}
			},
		},
		{
			name: "zero devices",
			cuda: map[string]*fakeCUDA{sysLib: {path: "/lib/libcuda.so.1", version: 12040}},
			want: Info{Library: "/lib/libcuda.so.1", CUDAVersion: "12.4", DriverVersion: "12.4",
				Reason: "no CUDA device (cuDeviceGetCount returned 0)", NVMLReason: noNVML},
		},
		{
			name: "count fails",
			cuda: map[string]*fakeCUDA{sysLib: {path: "/lib/libcuda.so.1", version: 12040, countErr: 999}},
			want: Info{Library: "/lib/libcuda.so.1", CUDAVersion: "12.4", DriverVersion: "12.4",
				Reason: "cuDeviceGetCount failed: 999 CUDA_ERROR_UNKNOWN", NVMLReason: noNVML},
		},
		{
			name: "a device that cannot be had is dropped, the others kept",
			cuda: map[string]*fakeCUDA{sysLib: {path: "/lib/libcuda.so.1", version: 12040,
				devices: []fakeDevice{{getErr: 46}, l4}}},
			want: Info{
				Devices:     []Device{{Index: 1, Name: l4.name, UUID: uuidString(1), TotalMemory: 23 * gib, ComputeMajor: 8, ComputeMinor: 9}},
				CUDAVersion: "12.4", DriverVersion: "12.4", Library: "/lib/libcuda.so.1", NVMLReason: noNVML,
			},
		},
		{
			name: "no device can be had",
			cuda: map[string]*fakeCUDA{sysLib: {path: "/lib/libcuda.so.1", version: 12040,
				devices: []fakeDevice{{getErr: 46}}}},
			want: Info{CUDAVersion: "12.4", DriverVersion: "12.4", Library: "/lib/libcuda.so.1",
				Reason:     "none of 1 CUDA devices could be queried: cuDeviceGet(0) failed: 46 CUDA_ERROR_DEVICE_UNAVAILABLE",
				NVMLReason: noNVML},
		},
		{
			name: "the lib dir is tried first and wins",
			dirs: []string{"/opt/drv"},
			cuda: map[string]*fakeCUDA{
				"/opt/drv/libcuda.so.1": {path: "/opt/drv/libcuda.so.1", version: 13000, devices: []fakeDevice{l4}},
				sysLib:                  {path: "/lib/libcuda.so.1", version: 12040, devices: []fakeDevice{h100}},
			},
			check: func(t *testing.T, got Info) {
				if got.Library != "/opt/drv/libcuda.so.1" || len(got.Devices) != 1 || got.Devices[0].Name != l4.name {
					t.Errorf("got %+v, want the /opt/drv library's L4", got)
				}
			},
		},
		{
			name: "a lib dir library that finds nothing gives way, a broken one is not reported",
			dirs: []string{"/opt/stub", "/opt/broken"},
			cuda: map[string]*fakeCUDA{
				"/opt/stub/libcuda.so.1":   {path: "/opt/stub/libcuda.so.1", initErr: 34},
				"/opt/broken/libcuda.so.1": nil,
				sysLib:                     {path: "/lib/libcuda.so.1", version: 12040, devices: []fakeDevice{h100}},
			},
			check: func(t *testing.T, got Info) {
				if !got.Available() || got.Library != "/lib/libcuda.so.1" || got.Reason != "" {
					t.Errorf("got %+v, want the system library's H100", got)
				}
			},
		},
		{
			name: "when nothing finds devices, the first library's answer is the reason",
			dirs: []string{"/opt/stub"},
			cuda: map[string]*fakeCUDA{
				"/opt/stub/libcuda.so.1": {path: "/opt/stub/libcuda.so.1", initErr: 34},
				sysLib:                   {path: "/lib/libcuda.so.1", initErr: cuErrorNoDevice},
			},
			want: Info{Library: "/opt/stub/libcuda.so.1", Reason: "cuInit failed: 34 CUDA_ERROR_STUB_LIBRARY"},
			check: func(t *testing.T, got Info) {
				if got.NVMLReason == "" {
					t.Error("NVMLReason empty without NVML")
				}
			},
		},
		{
			name: "a broken library in the lib dir is reported",
			dirs: []string{"/opt/broken"},
			cuda: map[string]*fakeCUDA{"/opt/broken/libcuda.so.1": nil},
			check: func(t *testing.T, got Info) {
				want := "cannot load libcuda.so.1: /opt/broken/libcuda.so.1: invalid ELF header"
				if got.Reason != want || got.Available() {
					t.Errorf("Reason = %q, want %q", got.Reason, want)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, nv, lib := discover(fakeSystem(tc.cuda, tc.nvml, tc.env), tc.dirs)
			if (nv != nil) != (got.NVMLLibrary != "") {
				t.Errorf("NVML session %v but NVMLLibrary %q", nv, got.NVMLLibrary)
			}
			// The library kept (for pinned memory) is the one whose
			// devices were reported, and none when none were.
			if got.Available() != (lib != nil) || (lib != nil && lib.Path() != got.Library) {
				t.Errorf("kept libcuda %v for Library %q, Available() %v", lib, got.Library, got.Available())
			}
			if got.Available() == (got.Reason != "") {
				t.Errorf("Available() = %v with Reason %q", got.Available(), got.Reason)
			}
			if tc.check != nil {
				tc.check(t, got)
				return
			}
			if !infoEqual(got, tc.want) {
				t.Errorf("discover:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func infoEqual(a, b Info) bool {
	return slices.Equal(a.Devices, b.Devices) &&
		a.DriverVersion == b.DriverVersion && a.CUDAVersion == b.CUDAVersion &&
		a.Library == b.Library && a.NVMLLibrary == b.NVMLLibrary &&
		a.NVMLReason == b.NVMLReason && a.Reason == b.Reason
}

func TestDiscoverProbesEachFileOnce(t *testing.T) {
	// The soname and a fallback directory usually resolve to the same file.
	inits := 0
	lib := &fakeCUDA{path: "/usr/lib64/libcuda.so.1", initErr: cuErrorNoDevice, initCalls: &inits}
	cudaLibs := map[string]*fakeCUDA{cudaSoname: lib, "/usr/lib64/libcuda.so.1": lib}
	got, _, _ := discover(fakeSystem(cudaLibs, nil, nil), nil)
	if inits != 1 {
		t.Errorf("cuInit called %d times on one file, want 1", inits)
	}
	if got.Reason != "cuInit failed: 100 CUDA_ERROR_NO_DEVICE" {
		t.Errorf("Reason = %q", got.Reason)
	}
}

func TestDiscoverUnsupportedBuild(t *testing.T) {
	sys := fakeSystem(nil, nil, nil)
	sys.unsupported = "GPU discovery needs cgo"
	got, nv, lib := discover(sys, nil)
	if got.Available() || got.Reason != "GPU discovery needs cgo" || nv != nil || lib != nil {
		t.Errorf("discover = %+v, %v, %v", got, nv, lib)
	}
}

func TestReadSamples(t *testing.T) {
	nv := &fakeNVML{devices: []fakeNVMLDevice{
		{uuid: "GPU-a", mem: nvmlMemory{Total: 80 * gib, Used: 3 * gib, Free: 77 * gib}, util: 97, milliwatts: 412345},
		{uuid: "GPU-lost", memErr: 15},
		{uuid: "GPU-c", memErr: nvmlErrorNotSupported, util: 5, powerErr: nvmlErrorNotSupported},
	}}
	got, ok := readSamples(nv)
	want := []Sample{
		{Index: 0, UUID: "GPU-a", UtilizationPct: 97, MemoryUsed: 3 * gib, MemoryTotal: 80 * gib, PowerWatts: 412.345},
		{Index: 2, UUID: "GPU-c", UtilizationPct: 5},
	}
	if !ok || !slices.Equal(got, want) {
		t.Errorf("readSamples = %+v, %v\nwant %+v", got, ok, want)
	}

	nv.countErr = 15
	if got, ok := readSamples(nv); ok || got != nil {
		t.Errorf("readSamples with a failing count = %+v, %v; want nil, false", got, ok)
	}
	nv.countErr, nv.devices = nvmlSuccess, nil
	if got, ok := readSamples(nv); !ok || len(got) != 0 {
		t.Errorf("readSamples with no device = %+v, %v; want empty, true", got, ok)
	}
}

func TestLibDirsFromEnvAndSetLibDirs(t *testing.T) {
	t.Cleanup(func() { SetLibDirs(nil); Shutdown() })
	dir := t.TempDir()
	garbage := []byte("this is not an ELF file\x00\x01\x02")
	if err := os.WriteFile(filepath.Join(dir, cudaSoname), garbage, 0o644); err != nil {
		t.Fatal(err)
	}
	// A directory set through SetLibDirs replaces the environment's.
	t.Setenv(LibDirEnv, "/nonexistent-fastinfer-dir")
	SetLibDirs([]string{dir})
	got := Discover()
	if !got.Available() && !strings.Contains(got.Reason, dir) && dlUnsupported == "" {
		t.Errorf("Reason %q does not mention the SetLibDirs directory %q", got.Reason, dir)
	}
	if got2 := Discover(); !infoEqual(got, got2) {
		t.Errorf("second Discover differs from the cached first:\n%+v\n%+v", got, got2)
	}
}
