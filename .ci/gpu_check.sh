#!/usr/bin/env bash
# GPU checks, then the whole study timed in process, on a lent CUDA machine (one device call):
#   bash .ci/gpu_check.sh [--quick] [gpu_study.py options, e.g. -p '*.seeds=[0]']    (.whl/ as for gpu_bench.sh)
set -u -o pipefail  # a failed check fails the script (not the last command of its pipe)
. "$(dirname "$0")/gpu_env.sh"
quick=""; if [ "${1:-}" = "--quick" ]; then quick="--quick"; shift; fi
nvidia-smi -L
timeout 200 python3 .ci/gpu_check.py $quick 2>&1 | grep -v "^WARNING:root" | tee "$OUT/gpu_check.log"
checks=$?
timeout "${STUDY_TIMEOUT:-420}" python3 .ci/gpu_study.py --deadline "${DEADLINE:-330}" "$@" 2>&1 \
  | grep -v "^WARNING:root" | tee "$OUT/study.log"
study=$?
exit $(( checks || study ))
