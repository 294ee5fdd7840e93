#!/bin/bash
cd /work/main
export ONNXRUNTIME_LIB=$PWD/.cache/onnxruntime/1.29.0/libonnxruntime.so
for r in 1 2 3; do
  for mode in plain tls; do
    extra=(); sf="--prediction-log off"
    if [ $mode = tls ]; then extra=(--tls-ca /tmp/tls/ca.pem); sf="$sf --tls-cert /tmp/tls/server.pem --tls-key /tmp/tls/server-key.pem"; fi
    bin/fastinfer bench --models /tmp/headrepo --model head --targets grpc --concurrency 16 --warmup 2s --duration 6s \
      --serve-flags "$sf" "${extra[@]}" --description "gRPC $mode round $r" --out bench/results/2026-11-23-cpu-tls/grpc-head-$mode-$r.json > bench/results/2026-11-23-cpu-tls/grpc-head-$mode-$r.txt 2>&1
    echo "$mode $r rc=$?"
  done
done
