// Package models reads a Triton-style model repository:
//
//	<repo>/<model>/config.yaml
//	<repo>/<model>/labels.txt        (optional, named by config.yaml)
//	<repo>/<model>/<version>/model.onnx
//
// Version folders are positive integers without leading zeros; anything
// else (and any folder holding Go source, such as this package's own
// subpackages when the repository is ./models) is not a model and is
// skipped. The highest version is the one served.
package models
