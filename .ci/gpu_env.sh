# Sourced by gpu_bench.sh and gpu_check.sh: the environment of a lent CUDA machine. Installs
# open_clip (and ftfy, wcwidth) from .whl/ into /tmp/site when the machine lacks it, and sets OUT.
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
if [ -d .whl ] && ! python3 -c "import open_clip" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=$PWD:/tmp/site
fi
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
