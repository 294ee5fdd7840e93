#!/usr/bin/env bash
# Packs what scripts/gpu-run.sh needs on a GPU machine that has the NVIDIA
# driver and CUDA 13 libraries but no Go, no OpenCV and no network:
#   .gpu/a.tar.xz  fastinfer, the GPU test binary and the batching test
#                  binary (BenchmarkRawVsBatcher), built with -tags nogocv
#                  (libc only) and stripped, and ONNX Runtime with its CUDA
#                  provider trimmed to sm_90 code (scripts/trimfatbin),
#                  which brings 229 MB down to 36 MB compressed. With the
#                  repository it fits one 64 MiB call of the device tool.
#   .gpu/cv.tar.xz.NN  (cv) the OpenCV build of fastinfer and every
#                  shared library it needs beyond glibc, split into parts
#                  of at most PART_MB, for measuring the JPEG path.
#   .gpu/bench.tar.xz  (bench) the batching test binary alone, for a
#                  machine already holding an older a.tar.xz.
# Usage: ORT_GPU=1 scripts/deps.sh && scripts/gpu-bundle.sh [a|cv|bench]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
ORT_DIR=.cache/onnxruntime/1.29.0
ARCH=${ARCH:-90}
PART_MB=${PART_MB:-55}
OUTDIR=.gpu
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$OUTDIR"
WHAT=${1:-a}

if [ "$WHAT" = a ]; then
	[ -f "$ORT_DIR/libonnxruntime_providers_cuda.so" ] || { echo "run ORT_GPU=1 scripts/deps.sh first" >&2; exit 1; }
	mkdir -p "$STAGE/a/ort"
	CGO_ENABLED=1 go build -tags nogocv -trimpath -ldflags='-s -w' -o "$STAGE/a/fastinfer" ./cmd/fastinfer
	CGO_ENABLED=1 go test -c -tags nogocv -trimpath -ldflags='-s -w' -o "$STAGE/a/gputest.test" ./runtime/gputest
	mkdir -p "$STAGE/a/bench"
	CGO_ENABLED=1 go test -c -tags nogocv -trimpath -ldflags='-s -w' -o "$STAGE/a/bench/batching.test" ./batching
	cp "$ORT_DIR/libonnxruntime.so" "$ORT_DIR/libonnxruntime_providers_shared.so" "$STAGE/a/ort/"
	go run ./scripts/trimfatbin -arch "$ARCH" "$ORT_DIR/libonnxruntime_providers_cuda.so" "$STAGE/a/ort/libonnxruntime_providers_cuda.so"
	tar -C "$STAGE/a" -cf - . | xz -T2 -9 > "$OUTDIR/a.tar.xz"
fi

if [ "$WHAT" = bench ]; then
	# The in-process batcher benchmark, for a call after one that carried a.
	mkdir -p "$STAGE/bench"
	CGO_ENABLED=1 go test -c -tags nogocv -trimpath -ldflags='-s -w' -o "$STAGE/bench/batching.test" ./batching
	tar -C "$STAGE/bench" -cf - . | xz -T2 -9 > "$OUTDIR/bench.tar.xz"
fi

if [ "$WHAT" = cv ]; then
	rm -f "$OUTDIR"/cv.tar.xz.*
	mkdir -p "$STAGE/cv/lib"
	CGO_ENABLED=1 go build -trimpath -ldflags='-s -w' -o "$STAGE/cv/fastinfer-cv" ./cmd/fastinfer
	# glibc and the C++ runtime come from the GPU machine itself.
	ldd "$STAGE/cv/fastinfer-cv" | awk '$3 ~ /^\// {print $3}' |
		grep -vE '/(libc|libm|libstdc\+\+|libgcc_s|libdl|libpthread|librt|ld-linux-x86-64)\.so' |
		xargs -I{} cp -L {} "$STAGE/cv/lib/"
	tar -C "$STAGE/cv" -cf - . | xz -T2 -9 | split -b "${PART_MB}M" -d - "$OUTDIR/cv.tar.xz."
fi
ls -la "$OUTDIR"
