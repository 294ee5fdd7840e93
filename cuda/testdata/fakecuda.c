/*
 * A stand-in libcuda.so.1 for the package's tests: it exports the driver
 * API functions discovery resolves, with the same C signatures, and
 * describes FAKE_CUDA_DEVICE_COUNT (default 1) devices called "Fake GPU",
 * 80 GiB, compute capability 9.0. cuInit answers FAKE_CUDA_INIT_RESULT
 * (default 0, CUDA_SUCCESS). Built by the tests with `cc -shared -fPIC`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>

typedef struct { char bytes[16]; } CUuuid;

static int env_int(const char *key, int def) {
	const char *v = getenv(key);
	return (v != NULL && *v != '\0') ? atoi(v) : def;
}

static int initialised = 0;

static int device_count(void) { return env_int("FAKE_CUDA_DEVICE_COUNT", 1); }

static int check(int dev) {
	if (!initialised) return 3;                      /* CUDA_ERROR_NOT_INITIALIZED */
	if (dev < 0 || dev >= device_count()) return 101; /* CUDA_ERROR_INVALID_DEVICE */
	return 0;
}

int cuInit(unsigned int flags) {
	if (flags != 0) return 1; /* CUDA_ERROR_INVALID_VALUE */
	int r = env_int("FAKE_CUDA_INIT_RESULT", 0);
	initialised = (r == 0);
	return r;
}

int cuDriverGetVersion(int *version) {
	if (version == NULL) return 1;
	*version = 13000;
	return 0;
}

int cuDeviceGetCount(int *count) {
	if (!initialised) return 3;
	*count = device_count();
	return 0;
}

int cuDeviceGet(int *dev, int ordinal) {
	int r = check(ordinal);
	if (r == 0) *dev = ordinal;
	return r;
}

int cuDeviceGetName(char *name, int len, int dev) {
	int r = check(dev);
	if (r == 0) snprintf(name, (size_t)len, "Fake GPU");
	return r;
}

int cuDeviceTotalMem_v2(size_t *bytes, int dev) {
	int r = check(dev);
	if (r == 0) *bytes = (size_t)80 << 30;
	return r;
}

int cuDeviceGetAttribute(int *value, int attrib, int dev) {
	int r = check(dev);
	if (r != 0) return r;
	switch (attrib) {
	case 75: *value = 9; return 0; /* COMPUTE_CAPABILITY_MAJOR */
	case 76: *value = 0; return 0; /* COMPUTE_CAPABILITY_MINOR */
	default: return 1;
	}
}

/* UUID bytes 00 11 22 ... ee, with the last byte replaced by the ordinal. */
int cuDeviceGetUuid(CUuuid *uuid, int dev) {
	int r = check(dev);
	if (r != 0) return r;
	for (int i = 0; i < 16; i++) uuid->bytes[i] = (char)(i * 0x11);
	uuid->bytes[15] = (char)dev;
	return 0;
}

/*
 * Page-locked host memory. Primary contexts are counted per device and a
 * context is current on a thread between push and pop; cuMemHostAlloc,
 * cuMemFreeHost and cuMemHostGetFlags need one current, as the real driver
 * does. cuMemHostAlloc answers FAKE_CUDA_HOSTALLOC_RESULT when set. Every
 * call is appended to the file FAKE_CUDA_HOST_LOG, when set, for the test
 * to check that references and allocations balance.
 */

static int primary_refs[64]; /* atomic: copies retain and release from many threads */
static __thread void *current_ctx = NULL;
static void *live[1024];
static size_t live_size[1024];

static void host_log(const char *what, long v) {
	const char *path = getenv("FAKE_CUDA_HOST_LOG");
	if (path == NULL || *path == '\0') return;
	FILE *f = fopen(path, "a");
	if (f == NULL) return;
	fprintf(f, "%s %ld\n", what, v);
	fclose(f);
}

int cuDevicePrimaryCtxRetain(void **ctx, int dev) {
	int r = check(dev);
	if (r != 0) return r;
	__atomic_add_fetch(&primary_refs[dev], 1, __ATOMIC_SEQ_CST);
	*ctx = &primary_refs[dev]; /* any stable, distinct pointer */
	host_log("retain", dev);
	return 0;
}

int cuDevicePrimaryCtxRelease_v2(int dev) {
	int r = check(dev);
	if (r != 0) return r;
	if (__atomic_sub_fetch(&primary_refs[dev], 1, __ATOMIC_SEQ_CST) < 0) {
		__atomic_add_fetch(&primary_refs[dev], 1, __ATOMIC_SEQ_CST);
		return 201; /* CUDA_ERROR_INVALID_CONTEXT */
	}
	host_log("release", dev);
	return 0;
}

int cuCtxPushCurrent_v2(void *ctx) {
	if (current_ctx != NULL) return 1; /* this fake keeps a stack of one */
	current_ctx = ctx;
	return 0;
}

int cuCtxPopCurrent_v2(void **ctx) {
	if (current_ctx == NULL) return 201;
	if (ctx != NULL) *ctx = current_ctx;
	current_ctx = NULL;
	return 0;
}

int cuMemHostAlloc(void **p, size_t bytes, unsigned int flags) {
	if (current_ctx == NULL) return 201;
	if (flags != 1) return 1; /* fastinfer asks for CU_MEMHOSTALLOC_PORTABLE only */
	int r = env_int("FAKE_CUDA_HOSTALLOC_RESULT", 0);
	if (r != 0) return r;
	for (int i = 0; i < 1024; i++) {
		if (live[i] == NULL) {
			live[i] = malloc(bytes);
			if (live[i] == NULL) return 2; /* CUDA_ERROR_OUT_OF_MEMORY */
			live_size[i] = bytes;
			*p = live[i];
			host_log("alloc", (long)bytes);
			return 0;
		}
	}
	return 2;
}

static int find_live(void *p) {
	for (int i = 0; p != NULL && i < 1024; i++)
		if (live[i] == p) return i;
	return -1;
}

int cuMemFreeHost(void *p) {
	if (current_ctx == NULL) return 201;
	int i = find_live(p);
	if (i < 0) return 1;
	free(live[i]);
	live[i] = NULL;
	live_size[i] = 0;
	host_log("free", 0);
	return 0;
}

int cuMemHostGetFlags(unsigned int *flags, void *p) {
	if (current_ctx == NULL) return 201;
	if (find_live(p) < 0) return 1;
	*flags = 1;
	return 0;
}

/*
 * Device memory: host memory behind the same allocation table, with
 * CUdeviceptr values that are its addresses. Copies are memcpy and, like
 * the rest, need a current context; they may start anywhere inside a live
 * allocation but must end inside it too (else CUDA_ERROR_INVALID_VALUE).
 */
#include <string.h>

/* find_within is the allocation holding [p, p+bytes), or -1. */
static int find_within(unsigned long long p, size_t bytes) {
	for (int i = 0; i < 1024; i++) {
		unsigned long long base = (unsigned long long)(size_t)live[i];
		if (live[i] != NULL && p >= base && p - base < live_size[i] && bytes <= live_size[i] - (p - base))
			return i;
	}
	return -1;
}

int cuMemAlloc_v2(unsigned long long *dptr, size_t bytes) {
	void *p = NULL;
	int r = cuMemHostAlloc(&p, bytes, 1);
	if (r == 0) *dptr = (unsigned long long)(size_t)p;
	return r;
}

int cuMemFree_v2(unsigned long long dptr) { return cuMemFreeHost((void *)(size_t)dptr); }

int cuMemcpyHtoD_v2(unsigned long long dst, const void *src, size_t bytes) {
	if (current_ctx == NULL) return 201;
	if (find_within(dst, bytes) < 0) return 1;
	memcpy((void *)(size_t)dst, src, bytes);
	host_log("htod", (long)bytes);
	return 0;
}

int cuMemcpyDtoH_v2(void *dst, unsigned long long src, size_t bytes) {
	if (current_ctx == NULL) return 201;
	if (find_within(src, bytes) < 0) return 1;
	memcpy(dst, (void *)(size_t)src, bytes);
	host_log("dtoh", (long)bytes);
	return 0;
}

/* The per-thread default stream's copies, which the loader prefers. */
int cuMemcpyHtoD_v2_ptds(unsigned long long dst, const void *src, size_t bytes) {
	host_log("ptds", 0);
	return cuMemcpyHtoD_v2(dst, src, bytes);
}

int cuMemcpyDtoH_v2_ptds(void *dst, unsigned long long src, size_t bytes) {
	host_log("ptds", 0);
	return cuMemcpyDtoH_v2(dst, src, bytes);
}

/*
 * CUDA IPC. A handle is a magic and the device pointer; opening it checks
 * both and returns the pointer itself (this fake has one address space).
 * Each call is logged so tests can check opens and closes balance.
 */
typedef struct { char reserved[64]; } CUipcMemHandle;

static const char ipc_magic[8] = "fakeIPC";

int cuIpcGetMemHandle(CUipcMemHandle *handle, unsigned long long dptr) {
	if (current_ctx == NULL) return 201;
	int i = find_within(dptr, 1);
	if (i < 0) return 1;
	memset(handle, 0, sizeof *handle);
	memcpy(handle->reserved, ipc_magic, sizeof ipc_magic);
	memcpy(handle->reserved + 8, &dptr, sizeof dptr);
	host_log("ipcget", (long)live_size[i]);
	return 0;
}

int cuIpcOpenMemHandle_v2(unsigned long long *dptr, CUipcMemHandle handle, unsigned int flags) {
	if (current_ctx == NULL) return 201;
	if (flags != 1) return 1; /* fastinfer asks for CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS */
	unsigned long long p;
	memcpy(&p, handle.reserved + 8, sizeof p);
	if (memcmp(handle.reserved, ipc_magic, sizeof ipc_magic) != 0 || find_within(p, 1) < 0)
		return 400; /* CUDA_ERROR_INVALID_HANDLE */
	*dptr = p;
	host_log("ipcopen", (long)live_size[find_within(p, 1)]);
	return 0;
}

int cuIpcCloseMemHandle(unsigned long long dptr) {
	if (current_ctx == NULL) return 201;
	if (find_within(dptr, 1) < 0) return 400;
	host_log("ipcclose", 0);
	return 0;
}

/* Only the special handles CU_STREAM_LEGACY (1) and CU_STREAM_PER_THREAD (2). */
int cuStreamSynchronize(void *stream) {
	if (current_ctx == NULL) return 201;
	if (stream != (void *)1 && stream != (void *)2) return 400;
	host_log("sync", (long)(size_t)stream);
	return 0;
}

/* Answers FAKE_CUDA_RANGE_RESULT when set. */
int cuMemGetAddressRange_v2(unsigned long long *base, size_t *bytes, unsigned long long dptr) {
	if (current_ctx == NULL) return 201;
	int r = env_int("FAKE_CUDA_RANGE_RESULT", 0);
	if (r != 0) return r;
	int i = find_within(dptr, 1);
	if (i < 0) return 400;
	*base = (unsigned long long)(size_t)live[i];
	*bytes = live_size[i];
	return 0;
}
