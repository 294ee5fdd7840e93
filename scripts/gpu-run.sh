#!/usr/bin/env bash
# Runs on the GPU machine, in a copy of the repository with .gpu/ from
# scripts/gpu-bundle.sh beside it: unpacks the bundle, points ONNX Runtime's
# CUDA provider at the machine's CUDA 13 and cuDNN 9 libraries (there from
# its Python wheels), runs the GPU tests and the benchmarks, and writes
# every result under $OUT.
#   scripts/gpu-run.sh first      what no GPU session has done yet, in one
#                                 call: the GPU tests, BenchmarkRawVsBatcher
#                                 on CUDA, and the NVML metrics of a loaded
#                                 server (issues 3, 7, 8)
#   scripts/gpu-run.sh tensor     the GPU tests; raw fp32/fp16 at batch
#                                 1..128; the HTTP tensor path; p50/p99 at
#                                 c=1 and at 80 % of the peak; the same
#                                 server without batch-size buckets
#   scripts/gpu-run.sh tune       the saturation ratio with 2 and 3 instances
#   scripts/gpu-run.sh pinned     pinned against pageable batch buffers:
#                                 BenchmarkCopies, then raw and the tensor
#                                 path for fp32 and fp16 with each (never
#                                 run yet)
#   scripts/gpu-run.sh staged     staged instances (--stage-batches) on
#                                 against off, 1 and 2 instances, c=256;
#                                 then p50/p99 of 1 and 2 staged instances
#                                 at one Poisson rate (never run yet)
#   scripts/gpu-run.sh graphs     CUDA graphs: their GPU test, then raw and
#                                 the tensor path with --cuda-graphs (never
#                                 run yet; compare with pinned's figures)
#   scripts/gpu-run.sh grpc       the tensor path over HTTP, over gRPC and
#                                 through system shared memory (no socket:
#                                 what the transport costs at saturation),
#                                 fp16 and fp32, c=1 and at saturation;
#                                 then CUDA shared memory (never run yet)
#   scripts/gpu-run.sh dtypes     FP16 and UINT8 inputs: raw and the tensor
#                                 path for ResNet-50 fp16 with float32,
#                                 float16 and pixel inputs (never run yet)
#   scripts/gpu-run.sh batcher    BenchmarkRawVsBatcher on CUDA (in a.tar.xz, or
#                                 .gpu/bench.tar.xz; never run yet)
#   scripts/gpu-run.sh unpack-cv  appends the .gpu/cv.tar.xz.NN parts this
#                                 call carried; with LAST=1 it then unpacks
#                                 them and measures the JPEG path (OpenCV)
#   scripts/gpu-run.sh cv         the JPEG path again, once unpacked (with
#                                 the pixel model too, after dtypes)
# Each call of the device tool carries at most 64 MiB, so the OpenCV build
# (105 MB compressed) travels in parts over consecutive calls on the same
# machine. The results behind bench/results/2026-11-22-h100-*.json were
# taken this way (see the README's GPU section).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
B=${GPU_BUNDLE_DIR:-/var/tmp/fastinfer-gpu}
OUT=${OUT:-$B/out}
mkdir -p "$B" "$OUT"
log() { printf '== %s %s\n' "$(date +%T)" "$*"; }

extract() { python3 -c 'import sys,tarfile; tarfile.open(fileobj=sys.stdin.buffer, mode="r|xz").extractall(sys.argv[1])' "$1"; }

setup() {
	if [ ! -x "$B/fastinfer" ]; then
		log "unpacking the bundle"
		extract "$B" < "$ROOT/.gpu/a.tar.xz" || return 1
	fi
	# ORT's CUDA provider needs libcudart/cublas/cublasLt/curand (.so.13) and
	# dlopens libcudnn.so and libnvrtc.so by their unversioned names.
	local cl="$B/cudalib"
	if [ ! -d "$cl" ]; then
		mkdir -p "$cl"
		python3 -c 'import site; print("\n".join(site.getsitepackages()))' | while read -r d; do
			[ -d "$d/nvidia" ] && find "$d/nvidia" -name 'lib*.so*' -type f
		done | while read -r f; do ln -sf "$f" "$cl/$(basename "$f")"; done
		(cd "$cl" && for f in lib*.so.[0-9]*; do base=${f%%.so.*}.so; [ -e "$base" ] || ln -s "$f" "$base"; done)
	fi
	export LD_LIBRARY_PATH="$cl:${LD_LIBRARY_PATH:-}"
	export ONNXRUNTIME_LIB="$B/ort/libonnxruntime.so"
	FI="$B/fastinfer"
	M="$B/models"
	if [ ! -f "$M/resnet50/1/model.onnx" ]; then
		log "building ResNet-50 (seeded weights)"
		"$FI" models build resnet50 --out "$M/resnet50" >/dev/null || return 1
		cat >> "$M/resnet50/config.yaml" <<'YAML'
batching:
  max_batch_size: 64
  max_queue_delay_us: 2000
  max_queue_size: 2048
YAML
		mkdir -p "$M/resnet50-fp16"
		sed 's/^# .*//' "$M/resnet50/config.yaml" > "$M/resnet50-fp16/config.yaml"
		echo 'precision: fp16' >> "$M/resnet50-fp16/config.yaml"
		ln -s ../resnet50/1 "$M/resnet50-fp16/1"
	fi
}

facts() {
	log "machine"
	nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
	nproc; grep -m1 'model name' /proc/cpuinfo
	ls "$B/cudalib" | tr '\n' ' '; echo
	LD_LIBRARY_PATH="$B/ort:$LD_LIBRARY_PATH" ldd "$B/ort/libonnxruntime_providers_cuda.so" | grep -E 'not found|cudnn|cublas|cudart'
}

# bench NAME ARGS...: one fastinfer bench run, its JSON in $OUT/NAME.json.
bench() {
	local name=$1; shift
	log "bench $name"
	timeout 240 "$FI" bench --models "$M" --ort-lib "$ONNXRUNTIME_LIB" --warmup "${WARMUP:-2s}" --duration "${DUR:-3s}" \
		--out "$OUT/$name.json" "$@" 2>&1 | grep -vE '^time=.* level=(DEBUG|INFO) msg="(request|step)' | tail -25
}

# peak FILE TARGET: the best images/s of TARGET in a results file.
peak() {
	python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(max(s["images_per_sec"] for s in r["steps"] if s["target"]==sys.argv[2]))' "$@"
}

SERVE="--prediction-log off --provider cuda --max-queue-size 2048"

gpu_tests() {
	log "GPU tests"
	(cd "$ROOT/runtime/gputest" && timeout 180 "$B/gputest.test" -test.v -test.count=1 2>&1 | grep -E '^(---|PASS|FAIL|ok)|gpu_test' | tail -30)
}

tensor_stage() {
	gpu_tests
	for p in fp32 fp16; do
		local m=resnet50; [ $p = fp16 ] && m=resnet50-fp16
		bench raw-$p --model $m --targets raw --provider cuda --raw-batches "${RAW_BATCHES:-1,8,32,64,128}"
		bench tensor-$p --model $m --targets tensor --concurrency "${CONC:-1,16,64,256}" --serve-flags "$SERVE"
		local pk; pk=$(peak "$OUT/tensor-$p.json" http-tensor) || continue
		local rate; rate=$(python3 -c "print(int(0.8*$pk))")
		bench rate80-$p --model $m --targets tensor --rate "$rate" --arrivals poisson --serve-flags "$SERVE"
	done
	bench tensor8-fp16 --model resnet50-fp16 --targets tensor --batch 8 --concurrency "${CONC8:-64}" --serve-flags "$SERVE"
	# The same server with one session per instance, for the comparison.
	bench nobuckets-fp16 --model resnet50-fp16 --targets tensor --concurrency "${CONCNB:-16,64}" --serve-flags "$SERVE --gpu-buckets=false"
}

# tune: the saturation ratio again, with 2 and 3 instances per GPU.
tune_stage() {
	bench tune-raw-fp16 --model resnet50-fp16 --targets raw --provider cuda --raw-batches 64,128
	for i in 2 3; do
		bench tune-i$i-fp16 --model resnet50-fp16 --targets tensor --concurrency 1,64,256 --serve-flags "$SERVE --instances $i"
	done
	bench tune-i2-fp32 --model resnet50 --targets tensor --concurrency 256 --serve-flags "$SERVE"
	local pk; pk=$(peak "$OUT/tune-i2-fp16.json" http-tensor) || return
	bench tune-rate80-fp16 --model resnet50-fp16 --targets tensor --rate "$(python3 -c "print(int(0.8*$pk))")" --arrivals poisson --serve-flags "$SERVE"
}

# pinned: the batch buffers in pinned host memory (the default) against
# pageable memory, for raw ONNX Runtime and for the server (3 instances).
pinned_stage() {
	log "BenchmarkCopies: ResNet-18 at batch 64 from pageable memory and from a pinned Binding"
	(cd "$ROOT/runtime/gputest" && timeout 200 "$B/gputest.test" -test.v -test.run XXX -test.bench Copies -test.count "${COUNT:-3}" 2>&1 |
		grep -E '^(Benchmark|ok|FAIL|panic|--- SKIP)|gpu_test' | tee "$OUT/copies.txt")
	for p in fp16 fp32; do
		local m=resnet50; [ $p = fp16 ] && m=resnet50-fp16
		for h in pageable pinned; do
			bench pin-raw-$p-$h --model $m --targets raw --provider cuda --gpu-host-memory $h --raw-batches "${RAW_BATCHES:-1,8,64,128}"
			bench pin-tensor-$p-$h --model $m --targets tensor --concurrency "${CONC:-1,256}" --serve-flags "$SERVE --instances 3 --gpu-host-memory $h --stage-batches off"
		done
	done
}

# staged: each instance copying the next batch into a second input
# buffer while one runs (--stage-batches, on by default on GPUs) against
# not, with 1 and 2 instances, at saturation; the split's in ms and busy
# say how much of the device the copy left idle.
staged_stage() {
	for p in fp16 fp32; do
		local m=resnet50; [ $p = fp16 ] && m=resnet50-fp16
		for i in 1 2; do
			for st in off on; do
				bench staged-$p-i$i-$st --model $m --targets tensor --concurrency "${CONC:-256}" --serve-flags "$SERVE --instances $i --stage-batches $st"
			done
		done
	done
	# Latency at equal load: one staged instance against two (the GPU
	# default), Poisson at 80 % of the lower of their fp16 peaks. On the
	# simulated device (BenchmarkSimulatedDeviceOpenLoop) a second
	# instance on the same device adds a batch's wait to every request at
	# no gain in rate once copies are staged.
	local p1 p2 rate
	p1=$(peak "$OUT/staged-fp16-i1-on.json" http-tensor) && p2=$(peak "$OUT/staged-fp16-i2-on.json" http-tensor) || return
	rate=$(python3 -c "print(int(0.8*min($p1, $p2)))")
	for i in 1 2; do
		bench staged-rate80-fp16-i$i --model resnet50-fp16 --targets tensor --rate "$rate" --arrivals poisson --serve-flags "$SERVE --instances $i --stage-batches on"
	done
}

# grpc: HTTP's binary tensors against gRPC's raw_input_contents and against
# system shared memory on the same server, where ResNet-50's 602 KB inputs
# arrive thousands of times a second: shm / raw at saturation is the
# server's ratio without the socket.
grpc_stage() {
	for p in fp16 fp32; do
		local m=resnet50; [ $p = fp16 ] && m=resnet50-fp16
		bench grpc-$p --model $m --targets tensor,grpc,shm --concurrency "${CONC:-1,64,256}" --serve-flags "$SERVE"
	done
	# CUDA shared memory (never run on a GPU yet): the inputs in device
	# memory the load generator allocates, opened by the server by IPC
	# handle. Its own run, so that a failure leaves the figures above.
	bench cudashm-fp16 --model resnet50-fp16 --targets shm,cudashm --concurrency "${CONC:-1,64,256}" --serve-flags "$SERVE"
}

# graphs: the same with CUDA graphs captured per bucket session.
graphs_stage() {
	log "GPU tests with CUDA graphs"
	(cd "$ROOT/runtime/gputest" && FASTINFER_TEST_CUDA_GRAPHS=1 timeout 180 "$B/gputest.test" -test.v -test.count=1 2>&1 |
		grep -E '^(---|PASS|FAIL|ok)|gpu_test' | tail -20)
	for p in fp16 fp32; do
		local m=resnet50; [ $p = fp16 ] && m=resnet50-fp16
		bench graphs-raw-$p --model $m --targets raw --provider cuda --cuda-graphs --raw-batches "${RAW_BATCHES:-1,8,64,128}"
		bench graphs-tensor-$p --model $m --targets tensor --concurrency "${CONC:-1,256}" --serve-flags "$SERVE --instances 3 --cuda-graphs"
	done
}

# dtypes: the batch in the input's own datatype. resnet50-fp16io takes
# FP16 tensors (`models convert --fp16 --fp16-io`: half the bytes of
# resnet50-fp16's float32 I/O at every copy, body to GPU), resnet50-px16
# UINT8 pixels with the normalisation in the graph and the rest float16
# (`--pixels --fp16`: a quarter). Raw and the tensor path for each, in a
# repository of their own so other stages' servers do not load them.
dtypes_stage() {
	local D="$B/models-dt"
	mkdir -p "$D"
	[ -e "$D/resnet50-fp16" ] || ln -s "$M/resnet50-fp16" "$D/resnet50-fp16"
	for v in fp16io px16; do
		[ -f "$D/resnet50-$v/1/model.onnx" ] && continue
		local flags="--fp16 --fp16-io"
		[ $v = px16 ] && flags="--pixels --fp16"
		log "converting resnet50 ($flags)"
		"$FI" models convert $flags "$M/resnet50/1/model.onnx" "$D/resnet50-$v/1" || return 1
		# A UINT8 input takes pixels: its config.yaml keeps the sizes only.
		if [ $v = px16 ]; then
			grep -vE '^[[:space:]]*(scale|mean|std):' "$M/resnet50/config.yaml"
		else
			cat "$M/resnet50/config.yaml"
		fi > "$D/resnet50-$v/config.yaml"
	done
	for m in resnet50-fp16 resnet50-fp16io resnet50-px16; do
		M="$D" bench dt-raw-$m --model $m --targets raw --provider cuda --raw-batches "${RAW_BATCHES:-1,64,128}"
		M="$D" bench dt-tensor-$m --model $m --targets tensor --concurrency "${CONC:-1,256}" --serve-flags "$SERVE --instances 3"
	done
}

# batcher: BenchmarkRawVsBatcher on CUDA at batch 1, 8, 32 and 64 (the
# batcher's instance bucketed and pinned, as in the server).
batcher_stage() {
	[ -x "$B/bench/batching.test" ] || { mkdir -p "$B/bench" && extract "$B/bench" < "$ROOT/.gpu/bench.tar.xz"; } || return 1
	# The batcher alone against a simulated device: how much of a GPU this
	# host's cores leave idle while copying rows into batches.
	log "BenchmarkSimulatedDevice (this host's CPU, no GPU)"
	(cd "$ROOT/batching" && timeout 200 "$B/bench/batching.test" -test.run XXX -test.bench SimulatedDevice -test.benchtime 16000x -test.count 1 2>&1 |
		grep -E '^(Benchmark|ok|FAIL|panic)' | tee "$OUT/simdevice.txt")
	# The benchmark builds its ResNets itself (seeded weights).
	log "BenchmarkRawVsBatcher on CUDA"
	(cd "$ROOT/batching" && FASTINFER_BENCH_PROVIDER=cuda FASTINFER_BENCH_BATCHES="${BATCHES:-1,8,64}" timeout 420 \
		"$B/bench/batching.test" -test.run XXX -test.bench 'RawVsBatcher/resnet50/batch[0-9]+/(raw|batcher|batcher-2x|staged-2x)$' -test.count "${COUNT:-2}" 2>&1 |
		grep -E '^(Benchmark|ok|FAIL|panic)' | tee "$OUT/batcher.txt")
}

# nvml: the GPU metrics (monitor/gpu.go, through cuda/'s NVML) of a server
# under load, scraped into $OUT/gpu-metrics.txt; they must be there and
# show memory in use.
nvml_stage() {
	log "NVML metrics under load"
	local port=18790
	"$FI" serve --models "$M" --addr 127.0.0.1:$port $SERVE > "$OUT/nvml-serve.log" 2>&1 &
	local pid=$!
	for _ in $(seq 1 120); do curl -sf "127.0.0.1:$port/v2/health/ready" >/dev/null && break; sleep 0.5; done
	timeout 60 "$FI" bench --url "http://127.0.0.1:$port" --model resnet50-fp16 --targets tensor --concurrency 64 --warmup 1s --duration 5s >/dev/null 2>&1 &
	local load=$!
	sleep 4
	curl -s "127.0.0.1:$port/metrics" | grep -E '^fastinfer_gpu' | tee "$OUT/gpu-metrics.txt"
	wait $load
	kill $pid; wait $pid 2>/dev/null
	grep -q '^fastinfer_gpu_memory_used_bytes' "$OUT/gpu-metrics.txt" && echo "NVML metrics: present" || echo "NVML metrics: MISSING"
}

cv_stage() {
	local cv="$B/cv"
	[ -x "$cv/fastinfer-cv" ] || { echo "OpenCV bundle not unpacked" >&2; return 1; }
	export LD_LIBRARY_PATH="$cv/lib:$LD_LIBRARY_PATH"
	FI="$cv/fastinfer-cv"
	local photos="$ROOT/vision/testdata/baboon.jpg,$ROOT/vision/testdata/butterfly.jpg,$ROOT/vision/testdata/fruits.jpg,$ROOT/vision/testdata/starry_night.jpg,$ROOT/vision/testdata/Blender_Suzanne1.jpg"
	for p in fp16 fp32; do
		local m=resnet50; [ $p = fp16 ] && m=resnet50-fp16
		bench image-$p --model $m --targets image --images "$photos" --concurrency 16,64,256 --serve-flags "$SERVE"
	done
	# UINT8 pixels (the dtypes stage's model): vision writes bytes, not
	# float32 (11 % less CPU a photo on the development machine), and each
	# row moves a quarter of the bytes.
	if [ -f "$B/models-dt/resnet50-px16/1/model.onnx" ]; then
		M="$B/models-dt" bench image-px16 --model resnet50-px16 --targets image --images "$photos" --concurrency 64,256 --serve-flags "$SERVE"
	fi
}

case "${1:-tensor}" in
first) setup && facts && gpu_tests && batcher_stage && nvml_stage ;;
tensor) setup && facts && tensor_stage ;;
tune) setup && facts && tune_stage ;;
pinned) setup && facts && pinned_stage ;;
graphs) setup && facts && graphs_stage ;;
staged) setup && facts && staged_stage ;;
grpc) setup && facts && grpc_stage ;;
dtypes) setup && facts && dtypes_stage ;;
batcher) setup && batcher_stage ;;
unpack-cv)
	mkdir -p "$B/cv"
	# Each call carries one part; parts left from an earlier call are skipped.
	for part in "$ROOT"/.gpu/cv.tar.xz.*; do
		grep -qx "$(basename "$part")" "$B/cv.parts.done" 2>/dev/null && continue
		cat "$part" >> "$B/cv.tar.xz.parts" && basename "$part" >> "$B/cv.parts.done"
	done
	ls -la "$B/cv.tar.xz.parts"; cat "$B/cv.parts.done"
	if [ -n "${LAST:-}" ]; then extract "$B/cv" < "$B/cv.tar.xz.parts" && setup && facts && cv_stage; fi
	;;
cv) setup && cv_stage ;;
nvml) setup && nvml_stage ;;
*) echo "unknown stage $1" >&2; exit 2 ;;
esac
log done
