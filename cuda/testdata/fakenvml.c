/*
 * A stand-in libnvidia-ml.so.1 for the package's tests, matching
 * fakecuda.c: FAKE_CUDA_DEVICE_COUNT devices, listed in the reverse of the
 * CUDA order (as NVML's PCI order can differ from CUDA's), so that only a
 * match by UUID pairs them correctly. NVML device i is CUDA device n-1-i;
 * CUDA device k has k+1 GiB in use.
 */
#include <stdio.h>
#include <stdlib.h>

typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct fake_device { int cuda_ordinal; } *nvmlDevice_t;

static struct fake_device devices[64];
static int initialised = 0;

static int device_count(void) {
	const char *v = getenv("FAKE_CUDA_DEVICE_COUNT");
	int n = (v != NULL && *v != '\0') ? atoi(v) : 1;
	return n > 64 ? 64 : n;
}

int nvmlInit_v2(void) {
	initialised = 1;
	return 0;
}

int nvmlShutdown(void) {
	if (!initialised) return 1; /* NVML_ERROR_UNINITIALIZED */
	initialised = 0;
	return 0;
}

int nvmlSystemGetDriverVersion(char *version, unsigned int len) {
	if (!initialised) return 1;
	snprintf(version, len, "580.00.01");
	return 0;
}

int nvmlDeviceGetCount_v2(unsigned int *count) {
	if (!initialised) return 1;
	*count = (unsigned int)device_count();
	return 0;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *dev) {
	if (!initialised) return 1;
	int n = device_count();
	if ((int)index >= n) return 2; /* NVML_ERROR_INVALID_ARGUMENT */
	devices[index].cuda_ordinal = n - 1 - (int)index;
	*dev = &devices[index];
	return 0;
}

int nvmlDeviceGetName(nvmlDevice_t dev, char *name, unsigned int len) {
	(void)dev;
	snprintf(name, len, "Fake GPU");
	return 0;
}

int nvmlDeviceGetUUID(nvmlDevice_t dev, char *uuid, unsigned int len) {
	snprintf(uuid, len, "GPU-00112233-4455-6677-8899-aabbccddee%02x", dev->cuda_ordinal);
	return 0;
}

int nvmlDeviceGetMemoryInfo(nvmlDevice_t dev, nvmlMemory_t *mem) {
	mem->total = 80ULL << 30;
	mem->used = (unsigned long long)(dev->cuda_ordinal + 1) << 30;
	mem->free = mem->total - mem->used;
	return 0;
}

int nvmlDeviceGetUtilizationRates(nvmlDevice_t dev, nvmlUtilization_t *util) {
	util->gpu = 42 + (unsigned int)dev->cuda_ordinal;
	util->memory = 7;
	return 0;
}

int nvmlDeviceGetPowerUsage(nvmlDevice_t dev, unsigned int *milliwatts) {
	(void)dev;
	*milliwatts = 123456;
	return 0;
}
