# Two commands do everything on a fresh machine with Python 3.11:
#   make demo   -> .venv, install, run the whole pipeline on synthetic data, print outputs/demo/index.html
#   make test   -> .venv, install, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first and pinned: an unpinned `pip install torch` may pull a multi-GB build from the network.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
PROFILE ?= demo
# Keep freed feature-map memory in the process instead of returning it to the kernel on every
# step: on VMs with expensive page faults this makes CPU training 10-50x faster (see docs/performance.md, CPU note).
export MALLOC_MMAP_THRESHOLD_ ?= 33554432
export MALLOC_TRIM_THRESHOLD_ ?= 2000000000

.PHONY: install demo full test bench bench-rerun clean-outputs lab

# pip's and setuptools' output goes to a log (shown only if the installation fails)
export PIP_DISABLE_PIP_VERSION_CHECK ?= 1
export PIP_ROOT_USER_ACTION ?= ignore

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[clipfh] installing into $(VENV) (log: $(VENV)/install.log)"
	@{ $(PY) -m pip install --upgrade pip && $(PY) -m pip install $(TORCH_PIN) \
	   && $(PY) -m pip install -e '.[dev]'; } > $(VENV)/install.log 2>&1 \
	   || { tail -n 40 $(VENV)/install.log; echo "[clipfh] installation failed: $(VENV)/install.log"; exit 1; }
	@$(PY) -c "import torch, open_clip, papermill, clipfh_utils" && touch $@

install: $(VENV)/.installed

demo: install
	@$(PY) -m clipfh_utils run --profile demo

full: install
	@$(PY) -m clipfh_utils run --profile full

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) -m clipfh_utils bench --stage 2 --backbone ViT-B-16 --batch 64 --compile --compile-mode reduce-overhead

# the unchanged demo re-run's wall time (runs the demo twice into a temporary folder; see docs/performance.md)
bench-rerun: install
	$(PY) -m clipfh_utils bench --rerun-demo

lab: install
	$(VENV)/bin/jupyter lab notebooks/

clean-outputs:
	rm -rf outputs/demo outputs/full
