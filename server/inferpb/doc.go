// Package inferpb holds the Go types and service stubs of the Open
// Inference Protocol's gRPC API (KServe v2, with Triton's extensions),
// generated from grpc_service.proto. The generated files are committed so
// that building fastinfer needs neither protoc nor its plugins.
//
// To regenerate after editing grpc_service.proto, with protoc,
// protoc-gen-go and protoc-gen-go-grpc on PATH (`scripts/deps.sh protoc`
// installs them, pinned), run `make generate`. It also writes the Python
// types the gRPC interoperability test's client uses
// (cmd/fastinfer/testdata/grpcpy).
package inferpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative grpc_service.proto
//go:generate protoc --python_out=../../cmd/fastinfer/testdata/grpcpy grpc_service.proto
