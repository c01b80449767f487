#!/usr/bin/env bash
# Stage 2 ViT-B-16 training throughput variants (compile modes, batch sizes) on a CUDA machine.
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
if [ -d .whl ]; then
  python3 -m pip install -q --upgrade --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=$PWD:/tmp/site
fi
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
b() { timeout 170 python3 -m clipfh_utils bench "$@" 2>&1 | grep -v "^WARNING:root" | tail -1 | tee -a "$OUT/bench_variants.log"; }
b --stage 2 --backbone ViT-B-16 --batch 64 --compile --compile-mode reduce-overhead --steps 60
b --stage 2 --backbone ViT-B-16 --batch 64 --compile --steps 60
b --stage 2 --backbone ViT-B-16 --batch 64 --steps 30
