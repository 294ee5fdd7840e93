// Command fastinfer serves ONNX image classifiers over HTTP.
//
//	fastinfer serve  [flags]          serve a model repository
//	fastinfer train  [flags]          train a ResNet and register it
//	fastinfer bench  [flags]          measure latency and throughput against the raw-runtime ceiling
//	fastinfer monitor reference       profile a model version for drift detection
//	fastinfer report [flags]          write an HTML report of a period of the prediction log
//	fastinfer models build ARCH --out DIR   write a ResNet model folder
//	fastinfer models list [--models DIR]    show what a repository holds
//	fastinfer models convert --fp16 IN OUT  write a float16 copy of a model
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

func run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serveCmd(args[1:], stderr, getenv)
	case "models":
		err = modelsCmd(args[1:], stdout, stderr, getenv)
	case "train":
		err = trainCmd(args[1:], stdout, stderr, getenv)
	case "bench":
		err = benchCmd(args[1:], stdout, stderr, getenv)
	case "monitor":
		err = monitorCmd(args[1:], stdout, stderr, getenv)
	case "report":
		err = reportCmd(args[1:], stdout, stderr, getenv)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "fastinfer", version)
	case "help", "-h", "--help":
		usage(stdout)
	default:
		fmt.Fprintf(stderr, "fastinfer: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintln(stderr, "fastinfer:", err)
		return 1
	}
}

// errUsage marks errors already explained by a usage message.
var errUsage = errors.New("usage")

func usage(w io.Writer) {
	fmt.Fprint(w, `fastinfer: a native ONNX image-classification server

commands:
  serve                     serve the models of a model repository over HTTP
  train                     train a ResNet (Fashion-MNIST or an image folder) and register it
  bench                     measure latency and throughput (closed/open loop) against ONNX Runtime's own ceiling
  bench diff OLD NEW        flag throughput or p99 regressions between two result files
  monitor reference         profile a model version on in-distribution images, for drift detection
  report                    write an HTML report of a period of the prediction log (volume, latency, classes, drift)
  models build ARCH --out DIR  write an ImageNet ResNet (resnet18|resnet34|resnet50, or head: its input and output at no cost) model folder
  models list               list the models of a repository
  models convert --fp16 IN OUT  write a float16 copy of an ONNX model (float32 inputs and outputs kept)
  version                   print the version

Run "fastinfer COMMAND -h" for a command's flags.
`)
}

// newLogger builds the process logger from --log-level and --log-format.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch strings.ToLower(format) {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
