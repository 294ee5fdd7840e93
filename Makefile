# fastinfer — the two commands a user needs are `make run` and `make test`.
# Both install what is missing first (scripts/deps.sh is idempotent), so they
# work on a fresh Debian machine and cost little on the second run.

ORT_VERSION  := 1.29.0
ORT_DIR      := $(CURDIR)/.cache/onnxruntime/$(ORT_VERSION)
ORT_LIB      := $(ORT_DIR)/libonnxruntime.so
BIN          := bin/fastinfer
MODELS       ?= models
DEFAULT_MODEL ?= resnet50
ADDR         ?= :8080
GO           ?= go
# OpenBLAS (installed by scripts/deps.sh) for the Gorgonia trainer; without
# the tag it falls back to gonum's pure-Go BLAS.
GOTAGS       ?= openblas
GOFLAGS_TEST ?= -race -count=1 -tags $(GOTAGS)
# Tests that start ONNX Runtime read the library path from here.
export ONNXRUNTIME_LIB := $(ORT_LIB)
export CGO_ENABLED := 1

.PHONY: all deps gpu-deps build run test test-short fuzz-short soak overload vet generate default-model train bench clean

all: default-model

deps:
	@scripts/deps.sh all

gpu-deps:
	@scripts/deps.sh ort-gpu

build: deps
	$(GO) build -tags $(GOTAGS) -o $(BIN) ./cmd/fastinfer

# The default model: an ImageNet-topology ResNet-50 with seeded random
# weights, built from Go. Not committed (100 MB); rebuilt only when missing.
default-model: build
	@if [ ! -f $(MODELS)/$(DEFAULT_MODEL)/1/model.onnx ]; then \
		$(BIN) models build $(DEFAULT_MODEL) --out $(MODELS)/$(DEFAULT_MODEL); \
	fi

# Trains the default Fashion-MNIST model from scratch and registers it as
# the next version of models/fashion-resnet (see README: Training).
TRAIN_FLAGS ?=
train: build
	$(BIN) train --models $(MODELS) --name fashion-resnet $(TRAIN_FLAGS)

# The standard benchmark suite: the generated ResNet-50 on real photos and
# the default Fashion-MNIST model, each against ONNX Runtime's own
# ceiling, on the GPU when one is usable. Writes dated results and plots
# into bench/results/ (compare two with `bin/fastinfer bench diff`).
BENCH_PHOTOS ?= vision/testdata/baboon.jpg,vision/testdata/butterfly.jpg,vision/testdata/fruits.jpg,vision/testdata/starry_night.jpg,vision/testdata/Blender_Suzanne1.jpg
# The published figures were taken with the prediction log off (its cost
# is measured separately; see README, Prediction log).
BENCH_FLAGS  ?= --serve-flags "--prediction-log off"
bench: default-model
	$(BIN) bench --models $(MODELS) --model $(DEFAULT_MODEL) --compare --images $(BENCH_PHOTOS) \
		--concurrency 1,4,16 --raw-batches 1,4,8,16 --window 3s --repeat 3 --out bench/results/ $(BENCH_FLAGS)
	$(BIN) bench --models $(MODELS) --model fashion-resnet --compare --images testdata/fashion \
		--concurrency 1,4,16,64 --raw-batches 1,8,32,64 --repeat 3 --out bench/results/ $(BENCH_FLAGS)

run: default-model
	$(BIN) serve --models $(MODELS) --addr $(ADDR) --ort-lib $(ORT_LIB)

# Every fuzz target also runs briefly (CI_FUZZTIME each); long runs are
# `make fuzz-short FUZZTIME=10m`.
CI_FUZZTIME ?= 3s
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
test: deps
	$(GO) vet -tags $(GOTAGS) ./...
	# The OpenCV-free build that scripts/gpu-bundle.sh carries must keep compiling.
	$(GO) vet -tags nogocv ./cmd/... ./vision/...
	$(GO) run $(STATICCHECK) -tags $(GOTAGS) ./...
	$(GO) test $(GOFLAGS_TEST) ./...
	FUZZTIME=$(CI_FUZZTIME) GOTAGS=$(GOTAGS) GO=$(GO) scripts/fuzz.sh

test-short: deps
	$(GO) test -short $(GOFLAGS_TEST) ./...

# Every fuzz target in the tree for $(FUZZTIME) each, stopping at the
# first finding (scripts/fuzz.sh; `FUZZTIME=10m scripts/fuzz.sh` for a
# long run).
FUZZTIME ?= 5s
fuzz-short: deps
	FUZZTIME=$(FUZZTIME) GOTAGS=$(GOTAGS) GO=$(GO) scripts/fuzz.sh

# The long soak (make test runs it for 60 s): mixed traffic for SOAK_TIME,
# then memory, goroutines, open files and OpenCV Mats must not have grown.
SOAK_TIME ?= 30m
soak: deps
	FASTINFER_SOAK=$(SOAK_TIME) $(GO) test -tags $(GOTAGS) -count=1 -run '^TestSoak$$' -v -timeout 0 ./cmd/fastinfer

# The long overload run (make test runs it for 4 s).
OVERLOAD_TIME ?= 60s
overload: deps
	FASTINFER_OVERLOAD=$(OVERLOAD_TIME) $(GO) test -tags $(GOTAGS) -count=1 -run '^TestOverloadSheds$$' -v ./cmd/fastinfer

# Regenerates the protobuf types, ONNX's and the gRPC API's (committed; only
# needed after a .proto change).
generate:
	@scripts/deps.sh protoc
	PATH="$(CURDIR)/.cache/bin:$$PATH" $(GO) generate ./...

clean:
	rm -rf bin
