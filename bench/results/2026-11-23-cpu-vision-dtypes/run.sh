#!/bin/bash
cd /work/main
export ONNXRUNTIME_LIB=$PWD/.cache/onnxruntime/1.29.0/libonnxruntime.so
P=vision/testdata/baboon.jpg,vision/testdata/butterfly.jpg,vision/testdata/fruits.jpg,vision/testdata/starry_night.jpg,vision/testdata/Blender_Suzanne1.jpg
for r in 1 2 3; do
  for m in headpx head16; do
    for b in old new; do
      bin=bin/fastinfer; [ $b = old ] && bin=/tmp/fastinfer-old
      $bin bench --models /tmp/dtrepo --model $m --targets image --images $P --concurrency 8 --warmup 2s --duration 6s \
        --serve-flags "--prediction-log off" --description "$b round $r" --out bench/results/2026-11-23-cpu-vision-dtypes/$m-$b-$r.json > bench/results/2026-11-23-cpu-vision-dtypes/$m-$b-$r.txt 2>&1
      echo "$m $b $r rc=$?"
    done
  done
done
