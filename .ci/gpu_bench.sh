#!/usr/bin/env bash
# The benchmark table on a lent CUDA machine (one prepared device call, about 6 minutes):
#   bash .ci/gpu_bench.sh      (needs .whl/ with open_clip_torch, ftfy, wcwidth where open_clip is missing: docs/performance.md)
# Each line is one `clipfh bench` result; compiled runs include their warm-up in a
# separate field, and --seeds 2 times a second, fresh model's first steps (no recompilation expected).
set -u
. "$(dirname "$0")/gpu_env.sh"
nvidia-smi -L; python3 -c "import torch, open_clip; print('torch', torch.__version__, 'open_clip', open_clip.__version__)"
b() { timeout "${T:-120}" python3 -m clipfh_utils bench "$@" 2>&1 | grep -E " img/s|[Ee]rror" | tee -a "$OUT/bench.log"; }
# Stage 2 ViT-B-16 at batch 64, bf16, augmentation included (target >= 3,500 img/s)
b --stage 2 --backbone ViT-B-16 --batch 64 --compile --compile-mode reduce-overhead --steps 60 --seeds 2
b --stage 2 --backbone ViT-B-16 --batch 64 --compile --compile-mode reduce-overhead --compile-opt --steps 60
# embedding, batch 256, bf16 (targets >= 10,000 ViT-B-16, >= 20,000 RN50)
b --stage 1 --backbone ViT-B-16 --batch 256 --compile --steps 30
b --stage 1 --backbone RN50 --batch 256 --compile --channels-last --steps 30
# RN50 Stage 2 with last stride 1: CUDA graphs, NHWC
b --stage 2 --backbone RN50 --batch 64 --last-stride 1 --channels-last --compile --compile-mode reduce-overhead --steps 60
# Stage 3 PromptSG ViT-B-16, batch 64, bf16: training step and both inference modes
T=150 b --stage 3 --backbone ViT-B-16 --batch 64 --compile --compile-mode reduce-overhead --steps 40
b --stage 3 --backbone ViT-B-16 --batch 64 --steps 30
