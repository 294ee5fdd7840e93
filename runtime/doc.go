// Package runtime wraps ONNX Runtime (through github.com/yalue/onnxruntime_go)
// behind plain Go types: an Env that owns the process-wide ORT environment,
// and Sessions that run float32 tensors on the CUDA or CPU execution
// provider. The provider a session actually got is recorded on it, with the
// reason when CUDA was wanted and could not be had, so the server can say so.
//
// The package name shadows the standard library's runtime; files that need
// both import the latter as goruntime.
package runtime
