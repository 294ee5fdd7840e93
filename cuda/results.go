package cuda

import "strconv"

// cuResult is a CUDA driver API status (CUresult in cuda.h).
type cuResult int

const (
	cuSuccess         cuResult = 0
	cuErrorNoDevice   cuResult = 100
	cuErrorNotSupport cuResult = 801
)

// cuResultNames names the CUresult values discovery can plausibly meet,
// plus the common ones a user may search for. Values are from cuda.h.
var cuResultNames = map[cuResult]string{
	0:   "CUDA_SUCCESS",
	1:   "CUDA_ERROR_INVALID_VALUE",
	2:   "CUDA_ERROR_OUT_OF_MEMORY",
	3:   "CUDA_ERROR_NOT_INITIALIZED",
	4:   "CUDA_ERROR_DEINITIALIZED",
	34:  "CUDA_ERROR_STUB_LIBRARY",
	35:  "CUDA_ERROR_INSUFFICIENT_DRIVER",
	36:  "CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER",
	46:  "CUDA_ERROR_DEVICE_UNAVAILABLE",
	100: "CUDA_ERROR_NO_DEVICE",
	101: "CUDA_ERROR_INVALID_DEVICE",
	102: "CUDA_ERROR_DEVICE_NOT_LICENSED",
	200: "CUDA_ERROR_INVALID_IMAGE",
	201: "CUDA_ERROR_INVALID_CONTEXT",
	209: "CUDA_ERROR_NO_BINARY_FOR_GPU",
	214: "CUDA_ERROR_ECC_UNCORRECTABLE",
	222: "CUDA_ERROR_UNSUPPORTED_PTX_VERSION",
	301: "CUDA_ERROR_FILE_NOT_FOUND",
	303: "CUDA_ERROR_SHARED_OBJECT_INIT_FAILED",
	304: "CUDA_ERROR_OPERATING_SYSTEM",
	400: "CUDA_ERROR_INVALID_HANDLE",
	500: "CUDA_ERROR_NOT_FOUND",
	600: "CUDA_ERROR_NOT_READY",
	700: "CUDA_ERROR_ILLEGAL_ADDRESS",
	719: "CUDA_ERROR_LAUNCH_FAILED",
	800: "CUDA_ERROR_NOT_PERMITTED",
	801: "CUDA_ERROR_NOT_SUPPORTED",
	802: "CUDA_ERROR_SYSTEM_NOT_READY",
	803: "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
	804: "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE",
	999: "CUDA_ERROR_UNKNOWN",
}

// Name is the cuda.h name of r, or "unrecognised CUresult".
func (r cuResult) Name() string {
	if n, ok := cuResultNames[r]; ok {
		return n
	}
	return "unrecognised CUresult"
}

// String is the number and the name, e.g. "100 CUDA_ERROR_NO_DEVICE": the
// number is what forums and NVIDIA's documentation are searched by.
func (r cuResult) String() string { return strconv.Itoa(int(r)) + " " + r.Name() }

// nvmlReturn is an NVML status (nvmlReturn_t in nvml.h).
type nvmlReturn int

const (
	nvmlSuccess              nvmlReturn = 0
	nvmlErrorNotSupported    nvmlReturn = 3
	nvmlErrorDriverNotLoaded nvmlReturn = 9
	nvmlErrorFuncNotFound    nvmlReturn = 13
)

var nvmlReturnNames = map[nvmlReturn]string{
	0:   "NVML_SUCCESS",
	1:   "NVML_ERROR_UNINITIALIZED",
	2:   "NVML_ERROR_INVALID_ARGUMENT",
	3:   "NVML_ERROR_NOT_SUPPORTED",
	4:   "NVML_ERROR_NO_PERMISSION",
	5:   "NVML_ERROR_ALREADY_INITIALIZED",
	6:   "NVML_ERROR_NOT_FOUND",
	7:   "NVML_ERROR_INSUFFICIENT_SIZE",
	8:   "NVML_ERROR_INSUFFICIENT_POWER",
	9:   "NVML_ERROR_DRIVER_NOT_LOADED",
	10:  "NVML_ERROR_TIMEOUT",
	11:  "NVML_ERROR_IRQ_ISSUE",
	12:  "NVML_ERROR_LIBRARY_NOT_FOUND",
	13:  "NVML_ERROR_FUNCTION_NOT_FOUND",
	14:  "NVML_ERROR_CORRUPTED_INFOROM",
	15:  "NVML_ERROR_GPU_IS_LOST",
	16:  "NVML_ERROR_RESET_REQUIRED",
	17:  "NVML_ERROR_OPERATING_SYSTEM",
	18:  "NVML_ERROR_LIB_RM_VERSION_MISMATCH",
	19:  "NVML_ERROR_IN_USE",
	20:  "NVML_ERROR_MEMORY",
	21:  "NVML_ERROR_NO_DATA",
	999: "NVML_ERROR_UNKNOWN",
}

// Name is the nvml.h name of r, or "unrecognised nvmlReturn_t".
func (r nvmlReturn) Name() string {
	if n, ok := nvmlReturnNames[r]; ok {
		return n
	}
	return "unrecognised nvmlReturn_t"
}

// String is the number and the name, e.g. "9 NVML_ERROR_DRIVER_NOT_LOADED".
func (r nvmlReturn) String() string { return strconv.Itoa(int(r)) + " " + r.Name() }
