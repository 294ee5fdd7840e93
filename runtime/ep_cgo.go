package runtime

// The ONNX Runtime 1.29 CPU library that scripts/deps.sh installs is built
// without the legacy CUDA entry points (SessionOptionsAppendExecutionProvider
// _CUDA_V2 answers "not enabled in this build"); it reaches CUDA only through
// the plugin execution-provider API added in ORT 1.22:
// RegisterExecutionProviderLibrary, GetEpDevices and
// SessionOptionsAppendExecutionProvider_V2. onnxruntime_go wraps only the
// first, so this file calls the other two through the OrtApi function table.
// It also holds the calls CUDA graphs need and onnxruntime_go lacks:
// tensors over device memory (CreateTensorWithDataAsOrtValue with a
// device's OrtMemoryInfo) bound into an I/O binding.
//
// OrtApi is a struct of function pointers that ORT only ever appends to (its
// ABI promise), so an entry's index never changes. The indices below were
// read from onnxruntime_c_api.h (ORT_API_VERSION 24) with offsetof; a test
// checks them against the header shipped in the onnxruntime_go module.

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

enum {
	FI_GET_ERROR_MESSAGE = 2,
	FI_CREATE_ENV = 3,
	FI_CREATE_TENSOR_WITH_DATA = 49,
	FI_CREATE_MEMORY_INFO = 68,
	FI_CREATE_CPU_MEMORY_INFO = 69,
	FI_RELEASE_MEMORY_INFO = 94,
	FI_RELEASE_VALUE = 96,
	FI_BIND_INPUT = 136,
	FI_BIND_OUTPUT = 137,
	FI_RELEASE_ENV = 92,
	FI_RELEASE_STATUS = 93,
	FI_GET_EP_DEVICES = 303,
	FI_APPEND_EP_V2 = 304,
	FI_HARDWARE_DEVICE_TYPE = 307,
	FI_EP_DEVICE_EP_NAME = 312,
	FI_EP_DEVICE_DEVICE = 316,
	FI_EP_DEVICE_MEMORY_INFO = 374,
	FI_API_VERSION = 24,
	FI_HW_GPU = 1,
	FI_LOG_ERROR = 3,
	FI_DEVICE_ALLOCATOR = 0,
	FI_MEM_TYPE_DEFAULT = 0,
	FI_ARENA_ALLOCATOR = 1,
	FI_DEVICE_MEMORY_TYPE_DEFAULT = 0
};

typedef struct {
	const void *(*GetApi)(uint32_t version);
	const char *(*GetVersionString)(void);
} fi_api_base;

static void *const *fi_api;

// fi_init finds the OrtApi table of the already loaded library.
static const char *fi_init(const char *lib) {
	if (fi_api) return NULL;
	void *h = dlopen(lib, RTLD_NOW | RTLD_NOLOAD);
	if (!h) h = dlopen(lib, RTLD_NOW);
	if (!h) return "cannot dlopen the ONNX Runtime library";
	void *sym = dlsym(h, "OrtGetApiBase");
	if (!sym) return "OrtGetApiBase not found";
	const fi_api_base *base = ((const fi_api_base *(*)(void))sym)();
	fi_api = (void *const *)base->GetApi(FI_API_VERSION);
	if (!fi_api) return "ONNX Runtime library older than API version 24";
	return NULL;
}

// fi_status turns an OrtStatus into a malloc'd message (NULL for success)
// and releases it.
static char *fi_status(void *st) {
	if (!st) return NULL;
	const char *m = ((const char *(*)(const void *))fi_api[FI_GET_ERROR_MESSAGE])(st);
	char *c = strdup(m ? m : "unknown ONNX Runtime error");
	((void (*)(void *))fi_api[FI_RELEASE_STATUS])(st);
	return c;
}

// ORT keeps one environment per process: CreateEnv hands back the existing
// one (with a reference) rather than making another.
static char *fi_create_env(void **env) {
	return fi_status(((void *(*)(int, const char *, void **))fi_api[FI_CREATE_ENV])(FI_LOG_ERROR, "fastinfer", env));
}

static void fi_release_env(void *env) {
	((void (*)(void *))fi_api[FI_RELEASE_ENV])(env);
}

// fi_gpu_devices writes up to cap GPU devices of the named EP into out.
static char *fi_gpu_devices(void *env, const char *ep, const void **out, size_t cap, size_t *n) {
	const void *const *devs = NULL;
	size_t total = 0;
	char *err = fi_status(((void *(*)(const void *, const void *const **, size_t *))fi_api[FI_GET_EP_DEVICES])(env, &devs, &total));
	*n = 0;
	if (err) return err;
	for (size_t i = 0; i < total && *n < cap; i++) {
		const char *name = ((const char *(*)(const void *))fi_api[FI_EP_DEVICE_EP_NAME])(devs[i]);
		const void *hw = ((const void *(*)(const void *))fi_api[FI_EP_DEVICE_DEVICE])(devs[i]);
		int type = ((int (*)(const void *))fi_api[FI_HARDWARE_DEVICE_TYPE])(hw);
		if (name && strcmp(name, ep) == 0 && type == FI_HW_GPU) out[(*n)++] = devs[i];
	}
	return NULL;
}

// ---- tensors over memory ORT does not own, for I/O binding on a device ----

// fi_cuda_mem_info is the OrtMemoryInfo of CUDA device memory for ORT GPU
// builds' own (legacy) CUDA provider; the caller releases it.
static char *fi_cuda_mem_info(int device, void **out) {
	return fi_status(((void *(*)(const char *, int, int, int, void **))fi_api[FI_CREATE_MEMORY_INFO])(
		"Cuda", FI_DEVICE_ALLOCATOR, device, FI_MEM_TYPE_DEFAULT, out));
}

// fi_cpu_mem_info is CPU memory's, for running the same code on the CPU.
static char *fi_cpu_mem_info(void **out) {
	return fi_status(((void *(*)(int, int, void **))fi_api[FI_CREATE_CPU_MEMORY_INFO])(
		FI_ARENA_ALLOCATOR, FI_MEM_TYPE_DEFAULT, out));
}

static void fi_release_mem_info(void *info) {
	((void (*)(void *))fi_api[FI_RELEASE_MEMORY_INFO])(info);
}

// fi_ep_mem_info is a plugin EP device's own memory info (ORT keeps it).
static const void *fi_ep_mem_info(const void *ep_device) {
	return ((const void *(*)(const void *, int))fi_api[FI_EP_DEVICE_MEMORY_INFO])(ep_device, FI_DEVICE_MEMORY_TYPE_DEFAULT);
}

// fi_tensor wraps bytes at p, which stay the caller's, as a tensor of
// ONNX element type elem and the given shape in the memory info describes.
// p is an address (uintptr_t): device memory, which Go must not take for
// a pointer.
static char *fi_tensor(const void *info, uintptr_t p, size_t bytes, const int64_t *shape, size_t ndim, int elem, void **out) {
	return fi_status(((void *(*)(const void *, void *, size_t, const int64_t *, size_t, int, void **))
		fi_api[FI_CREATE_TENSOR_WITH_DATA])(info, (void *)p, bytes, shape, ndim, elem, out));
}

static void fi_release_value(void *v) {
	((void (*)(void *))fi_api[FI_RELEASE_VALUE])(v);
}

static char *fi_bind(void *binding, int input, const char *name, const void *value) {
	return fi_status(((void *(*)(void *, const char *, const void *))fi_api[input ? FI_BIND_INPUT : FI_BIND_OUTPUT])(
		binding, name, value));
}

static char *fi_append(void *opts, void *env, const void *dev, const char *const *keys, const char *const *vals, size_t nopt) {
	const void *devs[1] = {dev};
	return fi_status(((void *(*)(void *, void *, const void *const *, size_t, const char *const *, const char *const *, size_t))
		fi_api[FI_APPEND_EP_V2])(opts, env, devs, 1, keys, vals, nopt));
}
*/
import "C"

import (
	"errors"
	"fmt"
	"sort"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"
)

const cudaEPName = "CUDAExecutionProvider"

// pluginEP is the CUDA plugin provider, registered once per environment.
type pluginEP struct {
	env     unsafe.Pointer   // our reference to ORT's OrtEnv
	devices []unsafe.Pointer // CUDA OrtEpDevices, in ORT's order
}

func cError(p *C.char) error {
	if p == nil {
		return nil
	}
	defer C.free(unsafe.Pointer(p))
	return errors.New(C.GoString(p))
}

// registerCUDAPlugin loads the CUDA provider library as a plugin EP and
// lists the GPUs it offers.
func registerCUDAPlugin(ortLib, providerLib string) (*pluginEP, error) {
	cl := C.CString(ortLib)
	defer C.free(unsafe.Pointer(cl))
	if msg := C.fi_init(cl); msg != nil {
		return nil, errors.New(C.GoString(msg))
	}
	p := &pluginEP{}
	var env unsafe.Pointer
	if err := cError(C.fi_create_env(&env)); err != nil {
		return nil, fmt.Errorf("getting the ORT environment: %w", err)
	}
	p.env = env
	if err := ort.RegisterExecutionProviderLibrary(cudaEPName, providerLib); err != nil {
		p.close()
		return nil, fmt.Errorf("loading %s: %w", providerLib, err)
	}
	ep := C.CString(cudaEPName)
	defer C.free(unsafe.Pointer(ep))
	var devs [64]unsafe.Pointer
	var n C.size_t
	if err := cError(C.fi_gpu_devices(env, ep, &devs[0], C.size_t(len(devs)), &n)); err != nil {
		p.close()
		return nil, fmt.Errorf("listing CUDA devices: %w", err)
	}
	if n == 0 {
		p.close()
		return nil, errors.New("the CUDA provider loaded but offers no GPU")
	}
	p.devices = append(p.devices, devs[:n]...)
	return p, nil
}

// appendTo adds the CUDA provider for GPU ordinal device to opts.
func (p *pluginEP) appendTo(opts *ort.SessionOptions, device int, options map[string]string) error {
	if device < 0 || device >= len(p.devices) {
		return fmt.Errorf("CUDA device %d requested, the provider offers %d", device, len(p.devices))
	}
	keys := make([]string, 0, len(options))
	for k := range options {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	ck := make([]*C.char, len(keys)+1)
	cv := make([]*C.char, len(keys)+1)
	for i, k := range keys {
		ck[i], cv[i] = C.CString(k), C.CString(options[k])
		defer C.free(unsafe.Pointer(ck[i]))
		defer C.free(unsafe.Pointer(cv[i]))
	}
	return cError(C.fi_append(sessionOptionsHandle(opts), p.env, p.devices[device],
		(**C.char)(unsafe.Pointer(&ck[0])), (**C.char)(unsafe.Pointer(&cv[0])), C.size_t(len(keys))))
}

func (p *pluginEP) close() {
	if p != nil && p.env != nil {
		C.fi_release_env(p.env)
		p.env = nil
	}
}

// sessionOptionsHandle is the OrtSessionOptions pointer inside
// onnxruntime_go's SessionOptions, whose only field it is (a test pins that
// layout, so an upgrade that changes it fails loudly).
func sessionOptionsHandle(o *ort.SessionOptions) unsafe.Pointer {
	return *(*unsafe.Pointer)(unsafe.Pointer(o))
}

// apiIndices exposes the OrtApi indices this file uses, for the test that
// checks them against onnxruntime_c_api.h.
func apiIndices() map[string]int {
	return map[string]int{
		"GetErrorMessage": C.FI_GET_ERROR_MESSAGE,
		"CreateEnv":       C.FI_CREATE_ENV,
		"ReleaseEnv":      C.FI_RELEASE_ENV,
		"ReleaseStatus":   C.FI_RELEASE_STATUS,
		"GetEpDevices":    C.FI_GET_EP_DEVICES,
		"SessionOptionsAppendExecutionProvider_V2": C.FI_APPEND_EP_V2,
		"HardwareDevice_Type":                      C.FI_HARDWARE_DEVICE_TYPE,
		"EpDevice_EpName":                          C.FI_EP_DEVICE_EP_NAME,
		"EpDevice_Device":                          C.FI_EP_DEVICE_DEVICE,
		"EpDevice_MemoryInfo":                      C.FI_EP_DEVICE_MEMORY_INFO,
		"CreateTensorWithDataAsOrtValue":           C.FI_CREATE_TENSOR_WITH_DATA,
		"CreateMemoryInfo":                         C.FI_CREATE_MEMORY_INFO,
		"CreateCpuMemoryInfo":                      C.FI_CREATE_CPU_MEMORY_INFO,
		"ReleaseMemoryInfo":                        C.FI_RELEASE_MEMORY_INFO,
		"ReleaseValue":                             C.FI_RELEASE_VALUE,
		"BindInput":                                C.FI_BIND_INPUT,
		"BindOutput":                               C.FI_BIND_OUTPUT,
	}
}

// apiConstants exposes the C enum values this file assumes, for the same
// test.
func apiConstants() map[string]int {
	return map[string]int{
		"DeviceAllocator":         C.FI_DEVICE_ALLOCATOR,
		"ArenaAllocator":          C.FI_ARENA_ALLOCATOR,
		"MemTypeDefault":          C.FI_MEM_TYPE_DEFAULT,
		"DeviceMemoryTypeDefault": C.FI_DEVICE_MEMORY_TYPE_DEFAULT,
		// deviceTensor passes onnxruntime_go's element types to C.
		"Float":   int(elemFP32.ort),
		"Float16": int(elemFP16.ort),
		"Uint8":   int(elemUINT8.ort),
	}
}

// ortAPI finds the OrtApi table of the library lib (already loaded by
// onnxruntime_go) for the calls below.
func ortAPI(lib string) error {
	cl := C.CString(lib)
	defer C.free(unsafe.Pointer(cl))
	if msg := C.fi_init(cl); msg != nil {
		return errors.New(C.GoString(msg))
	}
	return nil
}

// memInfo is an OrtMemoryInfo, released by release (nil when ORT owns it).
type memInfo struct {
	p     unsafe.Pointer
	owned bool
}

func (m memInfo) release() {
	if m.owned && m.p != nil {
		C.fi_release_mem_info(m.p)
	}
}

// cudaMemInfo describes device memory on CUDA ordinal device: the plugin
// provider's own description when sessions use it, else ORT's "Cuda".
func (e *Env) cudaMemInfo(device int) (memInfo, error) {
	if err := ortAPI(e.cfg.Lib); err != nil {
		return memInfo{}, err
	}
	if e.cudaEP != nil {
		if device < 0 || device >= len(e.cudaEP.devices) {
			return memInfo{}, fmt.Errorf("CUDA device %d requested, the provider offers %d", device, len(e.cudaEP.devices))
		}
		p := C.fi_ep_mem_info(e.cudaEP.devices[device])
		if p == nil {
			return memInfo{}, errors.New("the CUDA provider describes no device memory")
		}
		return memInfo{p: unsafe.Pointer(p)}, nil
	}
	var p unsafe.Pointer
	if err := cError(C.fi_cuda_mem_info(C.int(device), &p)); err != nil {
		return memInfo{}, err
	}
	return memInfo{p: p, owned: true}, nil
}

// cpuMemInfo describes CPU memory.
func (e *Env) cpuMemInfo() (memInfo, error) {
	if err := ortAPI(e.cfg.Lib); err != nil {
		return memInfo{}, err
	}
	var p unsafe.Pointer
	if err := cError(C.fi_cpu_mem_info(&p)); err != nil {
		return memInfo{}, err
	}
	return memInfo{p: p, owned: true}, nil
}

// deviceTensor is an OrtValue of elements of type t over bytes at address
// p in the memory info describes; the memory stays the caller's and must
// outlive the value.
func deviceTensor(info memInfo, p uintptr, shape []int64, t elemType) (unsafe.Pointer, error) {
	n := t.size
	for _, d := range shape {
		n *= int(d)
	}
	var v unsafe.Pointer
	err := cError(C.fi_tensor(info.p, C.uintptr_t(p), C.size_t(n),
		(*C.int64_t)(unsafe.Pointer(&shape[0])), C.size_t(len(shape)), C.int(t.ort), &v))
	return v, err
}

func releaseValue(v unsafe.Pointer) {
	if v != nil {
		C.fi_release_value(v)
	}
}

// bindValue binds v to the named input (or output) of an onnxruntime_go
// IoBinding, whose only field is its OrtIoBinding pointer (the layout test
// pins that, as for SessionOptions).
func bindValue(b *ort.IoBinding, input bool, name string, v unsafe.Pointer) error {
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	in := C.int(0)
	if input {
		in = 1
	}
	return cError(C.fi_bind(*(*unsafe.Pointer)(unsafe.Pointer(b)), in, cn, v))
}
