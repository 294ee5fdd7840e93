#!/usr/bin/env bash
# Installs everything fastinfer needs to build, test and run, and nothing twice.
# Usage: scripts/deps.sh [apt|ort|ort-gpu|protoc|all]   (default: all; the
# 229 MB CUDA provider only with ORT_GPU=1 or the ort-gpu step)
# Idempotent: each step checks what is already there first, so a second run
# costs a few dpkg queries and file tests.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ORT_VERSION=1.29.0
ORT_CACHE="${ORT_CACHE:-$ROOT/.cache/onnxruntime/$ORT_VERSION}"

# npm packages that carry the ONNX Runtime 1.29.0 shared libraries for linux-x64.
# The integrity strings are pinned here so a changed tarball is refused even if
# the registry's own metadata agrees with it.
ORT_CPU_PKG=com.github.asus4.onnxruntime@0.4.9
ORT_CPU_SRI=sha512-BkzxduSZ9IkeDP6Q8lz2TFU2ie7hSSvS7ZIfzMooExoq0CNzJnuuGaUJ7IsojBgqO4ouD1jXah8OYyJbCN29Fg==
ORT_GPU_PKG=com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9
ORT_GPU_SRI=sha512-FopIhNE/Ng+v2X65wVc9clPCBCvhvA53Hxo2U0Kf5fGdVsC7iCA+mZ0KLWggcQAj7TIZ6pNidR4AC10g74Xo6w==

# chromium runs the web page's browser test (cmd/fastinfer/web_test.go);
# prometheus (with promtool) checks and runs the monitoring stack in
# deploy/ (deploy/deploy_test.go).
# libjpeg-dev: vision decodes most JPEGs with libjpeg(-turbo) directly
# (vision/jpeg_gocv.go); libopencv-dev brings it in today, but through
# another package's dependency.
# postgresql: its server binaries (/usr/lib/postgresql/*/bin) let the
# prediction-log tests start a throw-away server of their own
# (monitor/predlog); they never use the cluster Debian may start on 5432.
# curl and python3: the README's API examples run as written
# (cmd/fastinfer/readme_test.go), and a minimal Debian has neither.
# python3-grpcio and python3-protobuf: a client on gRPC's C core, the one
# tritonclient and perf_analyzer are built on, talks to the gRPC API
# (cmd/fastinfer/grpc_test.go).
APT_PACKAGES=(libopencv-dev libjpeg-dev pkg-config dataset-fashion-mnist libopenblas-dev chromium prometheus postgresql curl python3
	python3-grpcio python3-protobuf)

log() { printf 'deps: %s\n' "$*" >&2; }

as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
		log "need root to run: $*"; return 1
	fi
}

apt_step() {
	local missing=()
	for p in "${APT_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	log "installing Debian packages: ${missing[*]}"
	as_root apt-get update -qq
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# sri FILE prints the file's subresource-integrity string (sha512, base64).
sri() { printf 'sha512-%s' "$(openssl dgst -sha512 -binary "$1" | base64 -w0)"; }

# fetch_pkg NAME@VER SRI DEST FILE...: npm pack, verify, extract the named
# files from package/Plugins/Linux/x64 into DEST.
fetch_pkg() {
	local pkg=$1 want=$2 dest=$3; shift 3
	local tmp; tmp=$(mktemp -d)
	command -v npm >/dev/null || { log "npm is needed to fetch ONNX Runtime"; apt_install_npm; }
	log "fetching $pkg"
	(cd "$tmp" && npm pack --silent "$pkg" >/dev/null 2>"$tmp/npm.err") || { cat "$tmp/npm.err" >&2; rm -rf "$tmp"; return 1; }
	local tgz; tgz=$(ls "$tmp"/*.tgz)
	local got; got=$(sri "$tgz")
	if [ "$got" != "$want" ]; then
		log "integrity mismatch for $pkg: got $got, want $want"; rm -rf "$tmp"; return 1
	fi
	mkdir -p "$dest"
	local members=()
	for f in "$@"; do members+=("package/Plugins/Linux/x64/$f"); done
	tar -xzf "$tgz" -C "$tmp" "${members[@]}"
	for f in "$@"; do mv "$tmp/package/Plugins/Linux/x64/$f" "$dest/$f"; done
	rm -rf "$tmp"
}

apt_install_npm() {
	as_root apt-get update -qq
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm
}

ort_step() {
	[ -f "$ORT_CACHE/.cpu-ok" ] && return 0
	fetch_pkg "$ORT_CPU_PKG" "$ORT_CPU_SRI" "$ORT_CACHE" libonnxruntime.so libonnxruntime_providers_shared.so
	touch "$ORT_CACHE/.cpu-ok"
	log "ONNX Runtime $ORT_VERSION (CPU) in $ORT_CACHE"
}

ort_gpu_step() {
	ort_step
	[ -f "$ORT_CACHE/.gpu-ok" ] && return 0
	fetch_pkg "$ORT_GPU_PKG" "$ORT_GPU_SRI" "$ORT_CACHE" libonnxruntime_providers_cuda.so
	touch "$ORT_CACHE/.gpu-ok"
	log "ONNX Runtime $ORT_VERSION CUDA provider in $ORT_CACHE"
}

# protoc_step installs what `make generate` needs to regenerate the ONNX
# protobuf types and the gRPC API: protoc and onnx.proto from Debian,
# protoc-gen-go pinned to the google.golang.org/protobuf version in go.mod,
# and protoc-gen-go-grpc pinned here.
PROTOC_GEN_GO_GRPC=v1.6.2
protoc_step() {
	local APT_PACKAGES=(protobuf-compiler libonnx-dev)
	apt_step
	local bin="$ROOT/.cache/bin"
	if [ ! -x "$bin/protoc-gen-go" ]; then
		local ver; ver=$(cd "$ROOT" && go list -m -f '{{.Version}}' google.golang.org/protobuf)
		log "installing protoc-gen-go $ver"
		GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$ver"
	fi
	if [ ! -x "$bin/protoc-gen-go-grpc" ]; then
		log "installing protoc-gen-go-grpc $PROTOC_GEN_GO_GRPC"
		GOBIN="$bin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC"
	fi
}

case "${1:-all}" in
apt) apt_step ;;
ort) ort_step ;;
ort-gpu) ort_gpu_step ;;
protoc) protoc_step ;;
all)
	apt_step
	ort_step
	if [ "${ORT_GPU:-0}" = 1 ]; then ort_gpu_step; fi
	;;
*) log "unknown step $1"; exit 2 ;;
esac
