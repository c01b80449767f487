"""The fast loop's guard (tests/conftest.py): notebooks and a profile's experiments refuse to run
in a test that is not marked slow, so `make test-fast` (`-m "not slow"`) never runs them."""
import sys
import typing

import pytest


def guard():
    """The conftest module pytest loaded (the one whose hooks track the running test)."""
    return next(m for name, m in sys.modules.items() if name.endswith("conftest") and hasattr(m, "refuse_unless_slow"))


def test_papermill_refuses_to_run_a_notebook_in_a_test_not_marked_slow(tmp_path):
    import papermill
    with pytest.raises(RuntimeError, match=r"test_markers\.py::test_papermill_refuses\S* runs a notebook with "
                                           r"papermill but is not marked slow: add @pytest\.mark\.slow"):
        papermill.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"))
    assert list(tmp_path.iterdir()) == []


def test_a_profile_run_refuses_in_a_test_not_marked_slow():
    from clipfh_utils.pipeline import open_run
    run_type = typing.get_type_hints(open_run)["return"]
    for name in ("run_stage", "run_experiment"):
        with pytest.raises(RuntimeError, match=rf"runs a profile's experiments \({name}\) but is not marked slow"):
            getattr(run_type, name)(None, "stage1")  # refused before the (missing) run is touched


def test_a_slow_test_passes_the_guard(monkeypatch):
    class Item:
        nodeid = "tests/x.py::t"

        def __init__(self, slow):
            self.slow = slow

        def get_closest_marker(self, name):
            return object() if name == "slow" and self.slow else None

    conftest = guard()
    monkeypatch.setitem(conftest._current, "item", Item(slow=True))
    conftest.refuse_unless_slow("runs a notebook")  # no error
    monkeypatch.setitem(conftest._current, "item", Item(slow=False))
    with pytest.raises(conftest.UnmarkedSlowTest, match=r"^tests/x\.py::t runs a notebook but is not marked slow"):
        conftest.refuse_unless_slow("runs a notebook")
    monkeypatch.setitem(conftest._current, "item", None)  # outside a test (collection): no error
    conftest.refuse_unless_slow("runs a notebook")
