//go:build cgo && linux

package cuda

// The only cgo in the package. The preamble declares, by hand, the few
// CUDA driver API and NVML signatures used, holds the function pointers
// dlsym returns in two structs, and wraps each call in a static C function,
// since Go cannot call a C function pointer directly. No NVIDIA header or
// library is needed to build; only libdl to link.

/*
#cgo LDFLAGS: -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

// ---- CUDA driver API (cuda.h), as much as is used ----
typedef int fi_CUresult;
typedef int fi_CUdevice;
typedef struct { char bytes[16]; } fi_CUuuid;
typedef struct { char reserved[64]; } fi_CUipcMemHandle; // passed by value, as cuda.h declares it
_Static_assert(sizeof(fi_CUipcMemHandle) == 64, "CUipcMemHandle is 64 bytes (IPCHandleSize)");

typedef struct {
	void *handle;
	fi_CUresult (*cuInit)(unsigned int flags);
	fi_CUresult (*cuDriverGetVersion)(int *version);
	fi_CUresult (*cuDeviceGetCount)(int *count);
	fi_CUresult (*cuDeviceGet)(fi_CUdevice *dev, int ordinal);
	fi_CUresult (*cuDeviceGetName)(char *name, int len, fi_CUdevice dev);
	fi_CUresult (*cuDeviceTotalMem_v2)(size_t *bytes, fi_CUdevice dev);
	fi_CUresult (*cuDeviceGetAttribute)(int *value, int attrib, fi_CUdevice dev);
	fi_CUresult (*cuDeviceGetUuid)(fi_CUuuid *uuid, fi_CUdevice dev); // optional (CUDA 9.2+)
	// Page-locked host memory; optional, as only HostAlloc needs them.
	fi_CUresult (*cuDevicePrimaryCtxRetain)(void **ctx, fi_CUdevice dev);
	fi_CUresult (*cuDevicePrimaryCtxRelease_v2)(fi_CUdevice dev);
	fi_CUresult (*cuCtxPushCurrent_v2)(void *ctx);
	fi_CUresult (*cuCtxPopCurrent_v2)(void **ctx);
	fi_CUresult (*cuMemHostAlloc)(void **p, size_t bytes, unsigned int flags);
	fi_CUresult (*cuMemFreeHost)(void *p);
	fi_CUresult (*cuMemHostGetFlags)(unsigned int *flags, void *p);
	// Device memory, for CUDA graphs' fixed input and output addresses.
	fi_CUresult (*cuMemAlloc_v2)(unsigned long long *dptr, size_t bytes);
	fi_CUresult (*cuMemFree_v2)(unsigned long long dptr);
	fi_CUresult (*cuMemcpyHtoD_v2)(unsigned long long dst, const void *src, size_t bytes);
	fi_CUresult (*cuMemcpyDtoH_v2)(void *dst, unsigned long long src, size_t bytes);
	// CUDA IPC, for Triton's CUDA shared memory extension.
	fi_CUresult (*cuIpcGetMemHandle)(fi_CUipcMemHandle *handle, unsigned long long dptr);
	fi_CUresult (*cuIpcOpenMemHandle_v2)(unsigned long long *dptr, fi_CUipcMemHandle handle, unsigned int flags);
	fi_CUresult (*cuIpcCloseMemHandle)(unsigned long long dptr);
	fi_CUresult (*cuMemGetAddressRange_v2)(unsigned long long *base, size_t *bytes, unsigned long long dptr);
	fi_CUresult (*cuStreamSynchronize)(void *stream);
	void *copy_stream; // the stream the copies above run on, as a special handle
} fi_cuda;

// ---- NVML (nvml.h), as much as is used ----
typedef int fi_nvmlReturn;
typedef void *fi_nvmlDevice;
typedef struct { unsigned long long total, free, used; } fi_nvmlMemory;
typedef struct { unsigned int gpu, memory; } fi_nvmlUtilization;

typedef struct {
	void *handle;
	fi_nvmlReturn (*nvmlInit_v2)(void);
	fi_nvmlReturn (*nvmlShutdown)(void);
	fi_nvmlReturn (*nvmlDeviceGetCount_v2)(unsigned int *count);
	fi_nvmlReturn (*nvmlDeviceGetHandleByIndex_v2)(unsigned int index, fi_nvmlDevice *dev);
	// The rest are optional: a call to a missing one answers
	// NVML_ERROR_FUNCTION_NOT_FOUND.
	fi_nvmlReturn (*nvmlSystemGetDriverVersion)(char *version, unsigned int len);
	fi_nvmlReturn (*nvmlDeviceGetName)(fi_nvmlDevice dev, char *name, unsigned int len);
	fi_nvmlReturn (*nvmlDeviceGetUUID)(fi_nvmlDevice dev, char *uuid, unsigned int len);
	fi_nvmlReturn (*nvmlDeviceGetMemoryInfo)(fi_nvmlDevice dev, fi_nvmlMemory *mem);
	fi_nvmlReturn (*nvmlDeviceGetUtilizationRates)(fi_nvmlDevice dev, fi_nvmlUtilization *util);
	fi_nvmlReturn (*nvmlDeviceGetPowerUsage)(fi_nvmlDevice dev, unsigned int *milliwatts);
} fi_nvml;

enum {
	FI_CUDA_ERROR_NOT_SUPPORTED = 801,
	FI_CUDA_ERROR_NOT_FOUND = 500,
	FI_CU_MEMHOSTALLOC_PORTABLE = 1,
	FI_CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS = 1,
	FI_CU_STREAM_LEGACY = 1,
	FI_CU_STREAM_PER_THREAD = 2,
	// fi_ipc_open's answer when the allocation ends before the bytes asked
	// for: not a CUresult, which are never negative.
	FI_IPC_TOO_SMALL = -1,
	FI_NVML_ERROR_FUNCTION_NOT_FOUND = 13
};

static void fi_set_err(char *err, size_t n, const char *msg) {
	if (n == 0) return;
	strncpy(err, msg ? msg : "unknown dynamic linker error", n - 1);
	err[n - 1] = 0;
}

// fi_sym resolves name into *slot. dlerror's state is per thread and a
// goroutine can change threads between two cgo calls, so every
// dlopen/dlsym/dlerror sequence happens inside one C call.
static int fi_sym(void *h, const char *name, void **slot, int required, char *err, size_t n) {
	dlerror();
	*slot = dlsym(h, name);
	const char *e = dlerror();
	if (*slot == NULL && required) {
		fi_set_err(err, n, e);
		return -1;
	}
	return 0;
}

static void *fi_open(const char *path, char *err, size_t n) {
	dlerror();
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) fi_set_err(err, n, dlerror());
	return h;
}

// fi_where writes into buf the path of the file defining sym: for a library
// opened by bare soname, the file the dynamic linker chose.
static void fi_where(void *sym, char *buf, size_t n) {
	Dl_info info;
	if (sym != NULL && dladdr(sym, &info) != 0 && info.dli_fname != NULL) {
		fi_set_err(buf, n, info.dli_fname);
	} else if (n > 0) {
		buf[0] = 0;
	}
}

#define FI_SYM(api, name, req) \
	if (fi_sym((api)->handle, #name, (void **)&(api)->name, (req), err, n) != 0) goto fail

static int fi_cuda_open(const char *path, fi_cuda *a, char *err, size_t n, char *where, size_t wn) {
	memset(a, 0, sizeof *a);
	a->handle = fi_open(path, err, n);
	if (a->handle == NULL) return -1;
	FI_SYM(a, cuInit, 1);
	FI_SYM(a, cuDriverGetVersion, 1);
	FI_SYM(a, cuDeviceGetCount, 1);
	FI_SYM(a, cuDeviceGet, 1);
	FI_SYM(a, cuDeviceGetName, 1);
	FI_SYM(a, cuDeviceTotalMem_v2, 1);
	FI_SYM(a, cuDeviceGetAttribute, 1);
	FI_SYM(a, cuDeviceGetUuid, 0);
	FI_SYM(a, cuDevicePrimaryCtxRetain, 0);
	FI_SYM(a, cuDevicePrimaryCtxRelease_v2, 0);
	FI_SYM(a, cuCtxPushCurrent_v2, 0);
	FI_SYM(a, cuCtxPopCurrent_v2, 0);
	FI_SYM(a, cuMemHostAlloc, 0);
	FI_SYM(a, cuMemFreeHost, 0);
	FI_SYM(a, cuMemHostGetFlags, 0);
	FI_SYM(a, cuMemAlloc_v2, 0);
	FI_SYM(a, cuMemFree_v2, 0);
	// The per-thread default stream's copies (_ptds) where the driver has
	// them: the legacy default stream would wait for every other blocking
	// stream in the context, that is for other instances' work.
	fi_sym(a->handle, "cuMemcpyHtoD_v2_ptds", (void **)&a->cuMemcpyHtoD_v2, 0, err, n);
	a->copy_stream = (void *)(size_t)(a->cuMemcpyHtoD_v2 ? FI_CU_STREAM_PER_THREAD : FI_CU_STREAM_LEGACY);
	if (a->cuMemcpyHtoD_v2 == NULL) FI_SYM(a, cuMemcpyHtoD_v2, 0);
	fi_sym(a->handle, "cuMemcpyDtoH_v2_ptds", (void **)&a->cuMemcpyDtoH_v2, 0, err, n);
	if (a->cuMemcpyDtoH_v2 == NULL) FI_SYM(a, cuMemcpyDtoH_v2, 0);
	FI_SYM(a, cuIpcGetMemHandle, 0);
	// cuda.h maps cuIpcOpenMemHandle to _v2 since CUDA 11; older drivers
	// export the plain name only, with the same signature.
	FI_SYM(a, cuIpcOpenMemHandle_v2, 0);
	if (a->cuIpcOpenMemHandle_v2 == NULL)
		fi_sym(a->handle, "cuIpcOpenMemHandle", (void **)&a->cuIpcOpenMemHandle_v2, 0, err, n);
	FI_SYM(a, cuIpcCloseMemHandle, 0);
	FI_SYM(a, cuMemGetAddressRange_v2, 0);
	FI_SYM(a, cuStreamSynchronize, 0);
	fi_where((void *)a->cuInit, where, wn);
	return 0;
fail:
	dlclose(a->handle);
	a->handle = NULL;
	return -1;
}

static int fi_nvml_open(const char *path, fi_nvml *a, char *err, size_t n, char *where, size_t wn) {
	memset(a, 0, sizeof *a);
	a->handle = fi_open(path, err, n);
	if (a->handle == NULL) return -1;
	FI_SYM(a, nvmlInit_v2, 1);
	FI_SYM(a, nvmlShutdown, 1);
	FI_SYM(a, nvmlDeviceGetCount_v2, 1);
	FI_SYM(a, nvmlDeviceGetHandleByIndex_v2, 1);
	FI_SYM(a, nvmlSystemGetDriverVersion, 0);
	FI_SYM(a, nvmlDeviceGetName, 0);
	FI_SYM(a, nvmlDeviceGetUUID, 0);
	FI_SYM(a, nvmlDeviceGetMemoryInfo, 0);
	FI_SYM(a, nvmlDeviceGetUtilizationRates, 0);
	FI_SYM(a, nvmlDeviceGetPowerUsage, 0);
	fi_where((void *)a->nvmlInit_v2, where, wn);
	return 0;
fail:
	dlclose(a->handle);
	a->handle = NULL;
	return -1;
}

static void fi_close(void *handle) { if (handle != NULL) dlclose(handle); }

// ---- CUDA calls ----
static fi_CUresult fi_cuInit(fi_cuda *a, unsigned int flags) { return a->cuInit(flags); }
static fi_CUresult fi_cuDriverGetVersion(fi_cuda *a, int *v) { return a->cuDriverGetVersion(v); }
static fi_CUresult fi_cuDeviceGetCount(fi_cuda *a, int *c) { return a->cuDeviceGetCount(c); }
static fi_CUresult fi_cuDeviceGet(fi_cuda *a, fi_CUdevice *d, int ordinal) { return a->cuDeviceGet(d, ordinal); }
static fi_CUresult fi_cuDeviceGetName(fi_cuda *a, char *name, int len, fi_CUdevice d) { return a->cuDeviceGetName(name, len, d); }
static fi_CUresult fi_cuDeviceTotalMem(fi_cuda *a, size_t *b, fi_CUdevice d) { return a->cuDeviceTotalMem_v2(b, d); }
static fi_CUresult fi_cuDeviceGetAttribute(fi_cuda *a, int *v, int attr, fi_CUdevice d) { return a->cuDeviceGetAttribute(v, attr, d); }
static fi_CUresult fi_cuDeviceGetUuid(fi_cuda *a, fi_CUuuid *u, fi_CUdevice d) {
	if (a->cuDeviceGetUuid == NULL) return FI_CUDA_ERROR_NOT_SUPPORTED;
	return a->cuDeviceGetUuid(u, d);
}

// ---- page-locked host memory ----
// The driver API allocates host memory in a context. Each call makes the
// device's primary context (the one the CUDA runtime, hence ONNX Runtime,
// uses) current for its own duration only, inside one C call, so that no
// goroutine is left holding a context on a thread it may leave.

static int fi_has_host(fi_cuda *a) {
	return a->cuDevicePrimaryCtxRetain && a->cuDevicePrimaryCtxRelease_v2 && a->cuCtxPushCurrent_v2 &&
		a->cuCtxPopCurrent_v2 && a->cuMemHostAlloc && a->cuMemFreeHost && a->cuMemHostGetFlags;
}

// fi_in_ctx retains dev's primary context and makes it current; fi_out_ctx
// undoes that. A successful allocation keeps its own reference to the
// context (released by fi_host_free), so the context outlives every
// pinned buffer even when ONNX Runtime lets go of it first.
static fi_CUresult fi_in_ctx(fi_cuda *a, fi_CUdevice dev) {
	if (!fi_has_host(a)) return FI_CUDA_ERROR_NOT_FOUND;
	void *ctx = NULL;
	fi_CUresult r = a->cuDevicePrimaryCtxRetain(&ctx, dev);
	if (r != 0) return r;
	r = a->cuCtxPushCurrent_v2(ctx);
	if (r != 0) a->cuDevicePrimaryCtxRelease_v2(dev);
	return r;
}

static void fi_out_ctx(fi_cuda *a) {
	void *ctx = NULL;
	a->cuCtxPopCurrent_v2(&ctx);
}

// fi_host_alloc allocates portable page-locked memory: every context can
// DMA from it, whichever is current when ONNX Runtime copies.
static fi_CUresult fi_host_alloc(fi_cuda *a, fi_CUdevice dev, size_t bytes, void **p) {
	*p = NULL;
	fi_CUresult r = fi_in_ctx(a, dev);
	if (r != 0) return r;
	r = a->cuMemHostAlloc(p, bytes, FI_CU_MEMHOSTALLOC_PORTABLE);
	fi_out_ctx(a);
	if (r != 0) a->cuDevicePrimaryCtxRelease_v2(dev); // keep no reference for a failed allocation
	return r;
}

static fi_CUresult fi_host_free(fi_cuda *a, fi_CUdevice dev, void *p) {
	fi_CUresult r = fi_in_ctx(a, dev);
	if (r != 0) return r;
	r = a->cuMemFreeHost(p);
	fi_out_ctx(a);
	a->cuDevicePrimaryCtxRelease_v2(dev); // this call's reference
	if (r == 0) a->cuDevicePrimaryCtxRelease_v2(dev); // the allocation's
	return r;
}

// fi_host_flags answers cuMemHostGetFlags: CUDA_SUCCESS only for memory
// that cuMemHostAlloc returned.
static fi_CUresult fi_host_flags(fi_cuda *a, fi_CUdevice dev, void *p, unsigned int *flags) {
	fi_CUresult r = fi_in_ctx(a, dev);
	if (r != 0) return r;
	r = a->cuMemHostGetFlags(flags, p);
	fi_out_ctx(a);
	a->cuDevicePrimaryCtxRelease_v2(dev);
	return r;
}

// ---- device memory; the same context discipline ----

static int fi_has_device(fi_cuda *a) {
	return fi_has_host(a) && a->cuMemAlloc_v2 && a->cuMemFree_v2 && a->cuMemcpyHtoD_v2 && a->cuMemcpyDtoH_v2;
}

static fi_CUresult fi_dev_alloc(fi_cuda *a, fi_CUdevice dev, size_t bytes, unsigned long long *p) {
	*p = 0;
	fi_CUresult r = fi_in_ctx(a, dev);
	if (r != 0) return r;
	r = a->cuMemAlloc_v2(p, bytes);
	fi_out_ctx(a);
	if (r != 0) a->cuDevicePrimaryCtxRelease_v2(dev);
	return r;
}

static fi_CUresult fi_dev_free(fi_cuda *a, fi_CUdevice dev, unsigned long long p) {
	fi_CUresult r = fi_in_ctx(a, dev);
	if (r != 0) return r;
	r = a->cuMemFree_v2(p);
	fi_out_ctx(a);
	a->cuDevicePrimaryCtxRelease_v2(dev);
	if (r == 0) a->cuDevicePrimaryCtxRelease_v2(dev);
	return r;
}

// fi_dev_copy copies bytes to the device (in != 0) or from it, complete
// when the call returns. A copy to the device from pageable memory may
// return once the data is staged, before the DMA lands, and nothing
// orders another stream's or process's reads after it: wait for the
// copy's stream (a driver without cuStreamSynchronize has no IPC, and its
// own later work on that stream is ordered anyway).
static fi_CUresult fi_dev_copy(fi_cuda *a, fi_CUdevice dev, int in, unsigned long long d, void *h, size_t bytes) {
	fi_CUresult r = fi_in_ctx(a, dev);
	if (r != 0) return r;
	r = in ? a->cuMemcpyHtoD_v2(d, h, bytes) : a->cuMemcpyDtoH_v2(h, d, bytes);
	if (r == 0 && in && a->cuStreamSynchronize) r = a->cuStreamSynchronize(a->copy_stream);
	fi_out_ctx(a);
	a->cuDevicePrimaryCtxRelease_v2(dev);
	return r;
}

// ---- CUDA IPC; the same context discipline ----

static int fi_has_ipc(fi_cuda *a) {
	return fi_has_device(a) && a->cuIpcGetMemHandle && a->cuIpcOpenMemHandle_v2 && a->cuIpcCloseMemHandle &&
		a->cuMemGetAddressRange_v2 && a->cuStreamSynchronize;
}

// fi_ipc_get writes the 64-byte handle of the allocation at p into out.
static fi_CUresult fi_ipc_get(fi_cuda *a, fi_CUdevice dev, unsigned long long p, void *out) {
	fi_CUipcMemHandle h;
	memset(&h, 0, sizeof h);
	fi_CUresult r = fi_in_ctx(a, dev);
	if (r != 0) return r;
	r = a->cuIpcGetMemHandle(&h, p);
	fi_out_ctx(a);
	a->cuDevicePrimaryCtxRelease_v2(dev);
	if (r == 0) memcpy(out, h.reserved, sizeof h.reserved);
	return r;
}

// fi_ipc_open opens the 64-byte handle in dev's primary context and checks
// that size bytes from the opened address lie within the allocation; *avail
// is how many do. On success the mapping keeps a context reference, given
// back by fi_ipc_close; on any failure nothing stays open or retained.
static fi_CUresult fi_ipc_open(fi_cuda *a, fi_CUdevice dev, const void *handle, size_t size,
		unsigned long long *p, size_t *avail) {
	*p = 0;
	*avail = 0;
	fi_CUipcMemHandle h;
	memcpy(h.reserved, handle, sizeof h.reserved);
	fi_CUresult r = fi_in_ctx(a, dev);
	if (r != 0) return r;
	r = a->cuIpcOpenMemHandle_v2(p, h, FI_CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS);
	if (r == 0) {
		unsigned long long base = 0;
		size_t bytes = 0;
		r = a->cuMemGetAddressRange_v2(&base, &bytes, *p);
		if (r == 0 && *p >= base && *p - base <= bytes) *avail = bytes - (size_t)(*p - base);
		if (r == 0 && *avail < size) r = FI_IPC_TOO_SMALL;
		if (r != 0) {
			a->cuIpcCloseMemHandle(*p);
			*p = 0;
		}
	}
	fi_out_ctx(a);
	if (r != 0) a->cuDevicePrimaryCtxRelease_v2(dev);
	return r;
}

static fi_CUresult fi_ipc_close(fi_cuda *a, fi_CUdevice dev, unsigned long long p) {
	fi_CUresult r = fi_in_ctx(a, dev);
	if (r != 0) return r;
	r = a->cuIpcCloseMemHandle(p);
	fi_out_ctx(a);
	a->cuDevicePrimaryCtxRelease_v2(dev);
	if (r == 0) a->cuDevicePrimaryCtxRelease_v2(dev); // the mapping's
	return r;
}

// ---- NVML calls; the per-device ones take an index ----
static fi_nvmlReturn fi_nvmlInit(fi_nvml *a) { return a->nvmlInit_v2(); }
static fi_nvmlReturn fi_nvmlShutdown(fi_nvml *a) { return a->nvmlShutdown(); }
static fi_nvmlReturn fi_nvmlDeviceGetCount(fi_nvml *a, unsigned int *c) { return a->nvmlDeviceGetCount_v2(c); }
static fi_nvmlReturn fi_nvmlSystemGetDriverVersion(fi_nvml *a, char *v, unsigned int len) {
	if (a->nvmlSystemGetDriverVersion == NULL) return FI_NVML_ERROR_FUNCTION_NOT_FOUND;
	return a->nvmlSystemGetDriverVersion(v, len);
}

#define FI_NVML_DEVICE_CALL(fn, ...) \
	if (a->fn == NULL) return FI_NVML_ERROR_FUNCTION_NOT_FOUND; \
	fi_nvmlDevice d; \
	fi_nvmlReturn r = a->nvmlDeviceGetHandleByIndex_v2(i, &d); \
	if (r != 0) return r; \
	return a->fn(d, __VA_ARGS__)

static fi_nvmlReturn fi_nvmlDeviceGetName(fi_nvml *a, unsigned int i, char *s, unsigned int len) {
	FI_NVML_DEVICE_CALL(nvmlDeviceGetName, s, len);
}
static fi_nvmlReturn fi_nvmlDeviceGetUUID(fi_nvml *a, unsigned int i, char *s, unsigned int len) {
	FI_NVML_DEVICE_CALL(nvmlDeviceGetUUID, s, len);
}
static fi_nvmlReturn fi_nvmlDeviceGetMemoryInfo(fi_nvml *a, unsigned int i, fi_nvmlMemory *m) {
	FI_NVML_DEVICE_CALL(nvmlDeviceGetMemoryInfo, m);
}
static fi_nvmlReturn fi_nvmlDeviceGetUtilizationRates(fi_nvml *a, unsigned int i, fi_nvmlUtilization *u) {
	FI_NVML_DEVICE_CALL(nvmlDeviceGetUtilizationRates, u);
}
static fi_nvmlReturn fi_nvmlDeviceGetPowerUsage(fi_nvml *a, unsigned int i, unsigned int *mw) {
	FI_NVML_DEVICE_CALL(nvmlDeviceGetPowerUsage, mw);
}
*/
import "C"

import (
	"errors"
	"unsafe"
)

// dlUnsupported is empty: this build can load libraries.
const dlUnsupported = ""

// errBufSize holds a dlerror message or a device name or UUID
// (NVML_DEVICE_NAME_V2_BUFFER_SIZE and NVML_DEVICE_UUID_V2_BUFFER_SIZE are
// 96; a dlerror message includes a path, which can be long).
const errBufSize = 4096

// openLib runs one of fi_cuda_open / fi_nvml_open on a C-allocated struct
// of size size. It returns the struct (to free with C.free) and the path of
// the file actually loaded.
func openLib(path string, size C.size_t, open func(cpath *C.char, api unsafe.Pointer, err *C.char, where *C.char) C.int) (unsafe.Pointer, string, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	// C memory, not Go memory: the structs hold pointers the Go collector
	// must not see, and they outlive any Go object that points to them.
	api := C.calloc(1, size)
	var errBuf, whereBuf [errBufSize]C.char
	if open(cpath, api, &errBuf[0], &whereBuf[0]) != 0 {
		C.free(api)
		return nil, "", errors.New(C.GoString(&errBuf[0]))
	}
	where := C.GoString(&whereBuf[0])
	if where == "" {
		where = path
	}
	return api, where, nil
}

// ---- libcuda ----

type cgoCUDA struct {
	api  *C.fi_cuda
	path string
}

func loadCUDALib(path string) (cudaAPI, error) {
	api, where, err := openLib(path, C.sizeof_fi_cuda, func(cpath *C.char, api unsafe.Pointer, e, w *C.char) C.int {
		return C.fi_cuda_open(cpath, (*C.fi_cuda)(api), e, errBufSize, w, errBufSize)
	})
	if err != nil {
		return nil, err
	}
	return &cgoCUDA{api: (*C.fi_cuda)(api), path: where}, nil
}

func (c *cgoCUDA) Path() string { return c.path }

func (c *cgoCUDA) Close() {
	C.fi_close(c.api.handle)
	C.free(unsafe.Pointer(c.api))
	c.api = nil
}

func (c *cgoCUDA) Init(flags uint) cuResult {
	return cuResult(C.fi_cuInit(c.api, C.uint(flags)))
}

func (c *cgoCUDA) DriverGetVersion() (int, cuResult) {
	var v C.int
	r := C.fi_cuDriverGetVersion(c.api, &v)
	return int(v), cuResult(r)
}

func (c *cgoCUDA) DeviceGetCount() (int, cuResult) {
	var n C.int
	r := C.fi_cuDeviceGetCount(c.api, &n)
	return int(n), cuResult(r)
}

func (c *cgoCUDA) DeviceGet(ordinal int) (int, cuResult) {
	var d C.fi_CUdevice
	r := C.fi_cuDeviceGet(c.api, &d, C.int(ordinal))
	return int(d), cuResult(r)
}

func (c *cgoCUDA) DeviceGetName(dev int) (string, cuResult) {
	var buf [256]C.char
	r := C.fi_cuDeviceGetName(c.api, &buf[0], C.int(len(buf)-1), C.fi_CUdevice(dev))
	return C.GoString(&buf[0]), cuResult(r)
}

func (c *cgoCUDA) DeviceTotalMem(dev int) (uint64, cuResult) {
	var b C.size_t
	r := C.fi_cuDeviceTotalMem(c.api, &b, C.fi_CUdevice(dev))
	return uint64(b), cuResult(r)
}

func (c *cgoCUDA) DeviceGetAttribute(attr, dev int) (int, cuResult) {
	var v C.int
	r := C.fi_cuDeviceGetAttribute(c.api, &v, C.int(attr), C.fi_CUdevice(dev))
	return int(v), cuResult(r)
}

func (c *cgoCUDA) DeviceGetUUID(dev int) ([16]byte, cuResult) {
	var u C.fi_CUuuid
	r := C.fi_cuDeviceGetUuid(c.api, &u, C.fi_CUdevice(dev))
	var out [16]byte
	for i := range out {
		out[i] = byte(u.bytes[i])
	}
	return out, cuResult(r)
}

func (c *cgoCUDA) HostSupported() bool { return C.fi_has_host(c.api) != 0 }

func (c *cgoCUDA) HostAlloc(dev, bytes int) (unsafe.Pointer, cuResult) {
	var p unsafe.Pointer
	r := C.fi_host_alloc(c.api, C.fi_CUdevice(dev), C.size_t(bytes), &p)
	return p, cuResult(r)
}

func (c *cgoCUDA) HostFree(dev int, p unsafe.Pointer) cuResult {
	return cuResult(C.fi_host_free(c.api, C.fi_CUdevice(dev), p))
}

func (c *cgoCUDA) HostPinned(dev int, p unsafe.Pointer) (bool, cuResult) {
	var flags C.uint
	r := cuResult(C.fi_host_flags(c.api, C.fi_CUdevice(dev), p, &flags))
	return r == cuSuccess, r
}

func (c *cgoCUDA) DeviceSupported() bool { return C.fi_has_device(c.api) != 0 }

func (c *cgoCUDA) DeviceAlloc(dev, bytes int) (uint64, cuResult) {
	var p C.ulonglong
	r := C.fi_dev_alloc(c.api, C.fi_CUdevice(dev), C.size_t(bytes), &p)
	return uint64(p), cuResult(r)
}

func (c *cgoCUDA) DeviceFree(dev int, p uint64) cuResult {
	return cuResult(C.fi_dev_free(c.api, C.fi_CUdevice(dev), C.ulonglong(p)))
}

// DeviceCopy's host pointer is pinned C memory or a Go buffer without
// pointers, which cgo lets C read and write during the call.
func (c *cgoCUDA) DeviceCopy(dev int, toDevice bool, d uint64, h unsafe.Pointer, bytes int) cuResult {
	in := C.int(0)
	if toDevice {
		in = 1
	}
	return cuResult(C.fi_dev_copy(c.api, C.fi_CUdevice(dev), in, C.ulonglong(d), h, C.size_t(bytes)))
}

func (c *cgoCUDA) IPCSupported() bool { return C.fi_has_ipc(c.api) != 0 }

func (c *cgoCUDA) IPCGetHandle(dev int, p uint64) ([IPCHandleSize]byte, cuResult) {
	var h [IPCHandleSize]byte
	r := C.fi_ipc_get(c.api, C.fi_CUdevice(dev), C.ulonglong(p), unsafe.Pointer(&h[0]))
	return h, cuResult(r)
}

func (c *cgoCUDA) IPCOpen(dev int, handle *[IPCHandleSize]byte, size int64) (p uint64, avail int64, r cuResult) {
	var cp C.ulonglong
	var ca C.size_t
	cr := C.fi_ipc_open(c.api, C.fi_CUdevice(dev), unsafe.Pointer(&handle[0]), C.size_t(size), &cp, &ca)
	r = cuResult(cr)
	if cr == C.FI_IPC_TOO_SMALL {
		r = ipcTooSmall
	}
	return uint64(cp), int64(ca), r
}

func (c *cgoCUDA) IPCClose(dev int, p uint64) cuResult {
	return cuResult(C.fi_ipc_close(c.api, C.fi_CUdevice(dev), C.ulonglong(p)))
}

// ---- NVML ----

type cgoNVML struct {
	api  *C.fi_nvml
	path string
}

func loadNVMLLib(path string) (nvmlAPI, error) {
	api, where, err := openLib(path, C.sizeof_fi_nvml, func(cpath *C.char, api unsafe.Pointer, e, w *C.char) C.int {
		return C.fi_nvml_open(cpath, (*C.fi_nvml)(api), e, errBufSize, w, errBufSize)
	})
	if err != nil {
		return nil, err
	}
	return &cgoNVML{api: (*C.fi_nvml)(api), path: where}, nil
}

func (n *cgoNVML) Path() string { return n.path }

func (n *cgoNVML) Close() {
	C.fi_close(n.api.handle)
	C.free(unsafe.Pointer(n.api))
	n.api = nil
}

func (n *cgoNVML) Init() nvmlReturn     { return nvmlReturn(C.fi_nvmlInit(n.api)) }
func (n *cgoNVML) Shutdown() nvmlReturn { return nvmlReturn(C.fi_nvmlShutdown(n.api)) }

func (n *cgoNVML) SystemGetDriverVersion() (string, nvmlReturn) {
	var buf [256]C.char
	r := C.fi_nvmlSystemGetDriverVersion(n.api, &buf[0], C.uint(len(buf)-1))
	return C.GoString(&buf[0]), nvmlReturn(r)
}

func (n *cgoNVML) DeviceGetCount() (int, nvmlReturn) {
	var c C.uint
	r := C.fi_nvmlDeviceGetCount(n.api, &c)
	return int(c), nvmlReturn(r)
}

func (n *cgoNVML) DeviceGetName(i int) (string, nvmlReturn) {
	var buf [256]C.char
	r := C.fi_nvmlDeviceGetName(n.api, C.uint(i), &buf[0], C.uint(len(buf)-1))
	return C.GoString(&buf[0]), nvmlReturn(r)
}

func (n *cgoNVML) DeviceGetUUID(i int) (string, nvmlReturn) {
	var buf [256]C.char
	r := C.fi_nvmlDeviceGetUUID(n.api, C.uint(i), &buf[0], C.uint(len(buf)-1))
	return C.GoString(&buf[0]), nvmlReturn(r)
}

func (n *cgoNVML) DeviceGetMemoryInfo(i int) (nvmlMemory, nvmlReturn) {
	var m C.fi_nvmlMemory
	r := C.fi_nvmlDeviceGetMemoryInfo(n.api, C.uint(i), &m)
	return nvmlMemory{Total: uint64(m.total), Free: uint64(m.free), Used: uint64(m.used)}, nvmlReturn(r)
}

func (n *cgoNVML) DeviceGetUtilizationRates(i int) (nvmlUtilization, nvmlReturn) {
	var u C.fi_nvmlUtilization
	r := C.fi_nvmlDeviceGetUtilizationRates(n.api, C.uint(i), &u)
	return nvmlUtilization{GPU: uint32(u.gpu), Memory: uint32(u.memory)}, nvmlReturn(r)
}

func (n *cgoNVML) DeviceGetPowerUsage(i int) (uint32, nvmlReturn) {
	var mw C.uint
	r := C.fi_nvmlDeviceGetPowerUsage(n.api, C.uint(i), &mw)
	return uint32(mw), nvmlReturn(r)
}
