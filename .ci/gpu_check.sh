#!/usr/bin/env bash
# One prepared device run: GPU checks, then the benchmarks. Usage on the lent machine:
#   bash .ci/gpu_check.sh   (uses .whl/*.whl (open_clip_torch, ftfy, wcwidth) when the machine lacks open_clip; see README, Performance)
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=$PWD:/tmp/site
fi
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi -L; python3 -c "import torch, open_clip; print('torch', torch.__version__, 'open_clip', open_clip.__version__)"
python3 .ci/gpu_check.py 2>&1 | grep -v "^WARNING:root" | tee "$OUT/gpu_check.log"
b() { timeout 150 python3 -m clipfh_utils bench "$@" 2>&1 | grep -E " img/s on |[Ee]rror" | tee -a "$OUT/bench.log"; }  # stage 3: 3 lines
b --stage 2 --backbone ViT-B-16 --batch 64 --compile --steps 40
b --stage 2 --backbone ViT-B-16 --batch 64 --steps 30
b --stage 2 --backbone ViT-B-16 --batch 64 --no-amp --steps 10
b --stage 2 --backbone RN50 --batch 64 --steps 30
b --stage 2 --backbone RN50 --batch 64 --compile --steps 40
b --stage 3 --backbone ViT-B-16 --batch 64 --steps 30 --warmup 5
b --stage 3 --backbone ViT-B-16 --batch 64 --compile --steps 40
b --stage 3 --backbone RN50 --batch 64 --last-stride 1 --steps 30
b --stage 1 --backbone ViT-B-16 --batch 256 --steps 20
b --stage 1 --backbone RN50 --batch 256 --steps 20
