// Package onnxpb holds the Go types for the ONNX model format, generated from
// onnx.proto. That file is an unmodified copy of /usr/include/onnx/onnx.proto
// from Debian's libonnx-dev 1.12.0 (IR version 8); onnx.pb.go is generated
// and committed so that building fastinfer needs neither protoc nor the plugin.
//
// To regenerate after replacing onnx.proto, with protoc and protoc-gen-go
// (google.golang.org/protobuf/cmd/protoc-gen-go, same version as go.mod) on
// PATH, run `go generate ./models/onnxpb` (or `make generate`).
//
// The proto has no go_package option, so the M flag maps it to this package
// instead: that keeps onnx.proto byte-identical to upstream.
package onnxpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative "--go_opt=Monnx.proto=fastinfer/models/onnxpb;onnxpb" onnx.proto
