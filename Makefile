# Two commands do everything on a fresh machine with Python 3.11:
#   make demo   -> .venv, install, run the whole pipeline on synthetic data, print outputs/demo/index.html
#   make test   -> .venv, install, run the test suite (what CI runs)
#   make test-fast -> the unit tests only (no notebooks, no profile runs): the loop while editing
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Every package at the version the tests pass with: requirements.lock (`make lock` rewrites it from
# pyproject.toml's ranges, keeping this venv's versions and the torch pin below; an unpinned torch
# may pull a multi-GB build from the network). pyproject.toml keeps the loose ranges for library use.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
LOCK_PYTHON ?= 3.11.7
LOCK_PLATFORM ?= x86_64-manylinux_2_28
PROFILE ?= demo
# Keep freed feature-map memory in the process instead of returning it to the kernel on every
# step: on VMs with expensive page faults this makes CPU training 10-50x faster (see docs/performance.md, CPU note).
export MALLOC_MMAP_THRESHOLD_ ?= 33554432
export MALLOC_TRIM_THRESHOLD_ ?= 2000000000

.PHONY: install notebook-filter demo full test test-fast bench bench-rerun clean-outputs lab lock

# pip's and setuptools' output goes to a log (shown only if the installation fails)
export PIP_DISABLE_PIP_VERSION_CHECK ?= 1
export PIP_ROOT_USER_ACTION ?= ignore

$(VENV)/.installed: pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[clipfh] installing requirements.lock into $(VENV) (log: $(VENV)/install.log)"
	@{ $(PY) -m pip install --upgrade pip && $(PY) -m pip install -r requirements.lock \
	   && $(PY) -m pip install -e '.[dev]'; } > $(VENV)/install.log 2>&1 \
	   || { tail -n 40 $(VENV)/install.log; echo "[clipfh] installation failed: $(VENV)/install.log"; exit 1; }
	@$(PY) -c "import torch, open_clip, papermill, tensorboard, clipfh_utils" && touch $@

# After changing pyproject.toml's dependencies (and `make test` passing): the lock, from the ranges,
# preferring the versions installed in $(VENV). Locked for CPython $(LOCK_PYTHON) on x86-64 Linux.
lock: install
	@$(PY) -m pip install -q uv
	@printf '%s\n' $(TORCH_PIN) > $(VENV)/lock-pin.txt
	@$(PY) -m pip freeze --all --exclude-editable | grep -v -e '^uv==' -e ' @ ' > $(VENV)/lock-installed.txt
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev -c $(VENV)/lock-pin.txt -c $(VENV)/lock-installed.txt \
	  --python-version $(LOCK_PYTHON) --python-platform $(LOCK_PLATFORM) --no-annotate \
	  --custom-compile-command "make lock" -o requirements.lock

install: $(VENV)/.installed notebook-filter

# Notebooks are committed without outputs (.gitattributes): nbstripout strips them when a
# notebook is staged; --keep-id keeps the committed cell ids (nothing changes on a clean notebook).
notebook-filter:
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	  git config filter.nbstripout.clean "$(abspath $(PY)) -m nbstripout --keep-id" && \
	  git config filter.nbstripout.smudge cat && git config filter.nbstripout.required true && \
	  git config diff.ipynb.textconv "$(abspath $(PY)) -m nbstripout --keep-id -t"; fi

demo: install
	@$(VENV)/bin/clipfh run --profile demo

full: install
	@$(VENV)/bin/clipfh run --profile full

test: install
	$(PY) -m pytest -q

# tests marked slow (papermill, a profile's experiments end to end) are left out; see docs/running.md
test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(VENV)/bin/clipfh bench --stage 2 --backbone ViT-B-16 --batch 64 --compile --compile-mode reduce-overhead

# the unchanged demo re-run's wall time (runs the demo twice into a temporary folder; see docs/performance.md)
bench-rerun: install
	$(VENV)/bin/clipfh bench --rerun-demo

lab: install
	$(VENV)/bin/jupyter lab notebooks/

clean-outputs:
	rm -rf outputs/demo outputs/full
