import functools
import importlib.abc
import importlib.util
import sys
import typing
from pathlib import Path
from typing import Any, Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_HANDINFO = REPO / "data" / "11k" / "HandInfo.csv"


@pytest.fixture(scope="session")
def real_records():
    from clipfh_utils.data.handinfo import load_handinfo
    return load_handinfo(REAL_HANDINFO)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A small synthetic hand dataset in the real schema (shared by several tests)."""
    from clipfh_utils.data.synthetic import generate_synthetic_dataset
    root = tmp_path_factory.mktemp("synth")
    csv_path = generate_synthetic_dataset(root, n_train_ids=6, n_test_ids=6, images_per_id=(4, 5),
                                          size=(96, 72), seed=3)
    return Path(csv_path), root / "Hands"


# --------------------------------------------------------------------------- the fast loop's guard
# `make test-fast` runs `pytest -m "not slow"`. A test that runs notebooks (papermill) or a profile's
# experiments (`Run.run_stage`, `Run.run_experiment`: training and evaluation end to end) must be
# marked slow; inside any other test these entry points refuse to run, naming the test and the fix.
# Calls from setup (a fixture) count for the test being set up. Not seen: pipelines in subprocesses.

class UnmarkedSlowTest(RuntimeError):
    """A test that runs notebooks or a profile's experiments without @pytest.mark.slow."""


_current: dict[str, Any] = {"item": None}


def refuse_unless_slow(what: str) -> None:
    item = _current["item"]
    if item is not None and item.get_closest_marker("slow") is None:
        raise UnmarkedSlowTest(f"{item.nodeid} {what} but is not marked slow: add @pytest.mark.slow "
                               "(`make test-fast` leaves slow tests out, `make test` runs them)")


def _guarded(fn: Callable, what: str) -> Callable:
    @functools.wraps(fn)
    def guarded(*args, **kwargs):
        refuse_unless_slow(what)
        return fn(*args, **kwargs)
    return guarded


def _guard_papermill(module) -> None:
    module.execute_notebook = _guarded(module.execute_notebook, "runs a notebook with papermill")


class _GuardOnImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports `name` as usual, then guards it: papermill is imported lazily (it costs seconds)."""

    def __init__(self, name: str, guard: Callable) -> None:
        self.name, self.guard, self.inner = name, guard, None

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None:
            self.inner, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = module.__spec__.loader = self.inner
        self.inner.exec_module(module)
        self.guard(module)


def pytest_configure(config) -> None:
    if "papermill" in sys.modules:
        _guard_papermill(sys.modules["papermill"])
    else:
        sys.meta_path.insert(0, _GuardOnImport("papermill", _guard_papermill))
    from clipfh_utils.pipeline import open_run
    run_type = typing.get_type_hints(open_run)["return"]  # the invocation context, whatever its name
    for name in ("run_stage", "run_experiment"):
        if hasattr(run_type, name):
            setattr(run_type, name, _guarded(getattr(run_type, name), f"runs a profile's experiments ({name})"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _current["item"] = item
    try:
        yield
    finally:
        _current["item"] = None
