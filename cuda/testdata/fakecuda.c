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
