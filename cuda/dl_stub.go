//go:build !cgo || !linux

package cuda

import (
	"errors"
	"runtime"
)

// dlUnsupported is the Reason every discovery gives in this build: loading
// the driver libraries needs dlopen, hence cgo, and they exist on Linux
// only (Windows' nvcuda.dll would need LoadLibrary; not done).
var dlUnsupported = func() string {
	if runtime.GOOS != "linux" {
		return "GPU discovery is not implemented on " + runtime.GOOS
	}
	return "GPU discovery needs cgo; this binary was built with CGO_ENABLED=0"
}()

func loadCUDALib(string) (cudaAPI, error) { return nil, errors.New(dlUnsupported) }

func loadNVMLLib(string) (nvmlAPI, error) { return nil, errors.New(dlUnsupported) }
