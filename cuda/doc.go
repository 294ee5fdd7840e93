// Package cuda finds NVIDIA GPUs at run time without linking against any
// NVIDIA library, and allocates page-locked host memory (AllocHost) through
// the driver it found.
//
// # Why dlopen
//
// fastinfer is shipped as one binary that must start on any Linux machine:
// laptops and CI runners with no GPU, and GPU servers whose driver version
// we cannot know at build time. Linking against libcuda or NVML (directly or
// through the CUDA toolkit's stubs) would make the binary refuse to start
// where the library is missing, and would tie it to the toolkit installed on
// the build machine. Instead, like ollama's GPU discovery, this package
// opens the driver's own libraries with dlopen(3) when Discover is first
// called and looks the few functions it needs up with dlsym(3). The function
// signatures are declared by hand in the cgo preamble; no CUDA header is
// needed to build, and the only link flag is -ldl.
//
// Two libraries are consulted, both installed by the NVIDIA driver (not by
// the CUDA toolkit):
//
//   - libcuda.so.1, the CUDA driver API: the source of truth for which
//     devices a CUDA program (ONNX Runtime's CUDA provider, for instance)
//     will see. It honours CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER.
//   - libnvidia-ml.so.1 (NVML), the management library nvidia-smi uses: free
//     memory without creating a CUDA context, the kernel driver version, and
//     the live utilisation, memory and power figures returned by Samples.
//     It is optional; without it Device.FreeMemory is 0 and Samples reports
//     ok=false.
//
// A machine with neither library, or with a library but no GPU, is normal:
// Discover then returns an Info whose Available method is false and whose
// Reason says why, and never an error.
//
// # Where the libraries are looked for
//
// For each library the candidates are, in order: the file of that name in
// each directory listed in FASTINFER_CUDA_LIB_DIR (a PATH-style list, see
// LibDirEnv), then the plain soname, which lets the dynamic linker search
// LD_LIBRARY_PATH, the ld.so cache and its default directories, then a few
// directories where drivers are installed outside the ld.so cache
// (containers, WSL). The directories of FASTINFER_CUDA_LIB_DIR come first
// because setting it is an explicit request to use that library.
//
// # Pinned memory
//
// AllocHost calls cuMemHostAlloc in the device's primary context, the
// context the CUDA runtime (hence ONNX Runtime) uses, through the libcuda
// that found the devices. Each call makes that context current only for
// its own duration, inside one C call, so no goroutine is left holding a
// context on an OS thread it may leave.
//
// Builds without cgo, and builds for systems other than Linux, compile a stub
// whose Discover always reports the reason GPU discovery is unavailable (and
// whose AllocHost fails with ErrNoDriver).
package cuda
