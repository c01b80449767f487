export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl; export PYTHONPATH=$PWD:/tmp/site
b() { timeout 170 python3 -m clipfh_utils bench "$@" 2>&1 | grep -v "^WARNING:root" | tail -1 | tee -a "$OUT/bench2.log"; }
b --stage 2 --backbone ViT-B-16 --batch 64 --compile --compile-mode reduce-overhead --steps 40
b --stage 2 --backbone ViT-B-16 --batch 128 --compile --steps 30
b --stage 2 --backbone ViT-B-16 --batch 64 --compile --compile-mode max-autotune-no-cudagraphs --steps 40
