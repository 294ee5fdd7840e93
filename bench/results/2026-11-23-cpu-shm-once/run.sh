#!/bin/bash
cd /work/main
export ONNXRUNTIME_LIB=$PWD/.cache/onnxruntime/1.29.0/libonnxruntime.so
for r in 1 2 3; do
  for b in old new; do
    bin=bin/fastinfer; [ $b = old ] && bin=/tmp/fastinfer-old
    $bin bench --models /tmp/headrepo --model head --targets shm --concurrency 1,16 --warmup 2s --duration 6s \
      --serve-flags "--prediction-log off" --description "$b round $r" --out bench/results/2026-11-23-cpu-shm-once/head-$b-$r.json > bench/results/2026-11-23-cpu-shm-once/head-$b-$r.txt 2>&1
    echo "$b $r rc=$?"
  done
done
