// Package gputest holds the tests that need a real NVIDIA GPU and ONNX
// Runtime's CUDA provider. They live apart from package runtime's tests
// because ONNX Runtime allows one environment per process and those tests
// open theirs over a deliberately broken CUDA provider. Without a GPU, or
// without libonnxruntime_providers_cuda.so beside $ONNXRUNTIME_LIB (`make
// gpu-deps`), every test here skips and says why.
package gputest
