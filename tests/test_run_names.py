"""Run names pinned across refactors: the same config on the same data keeps its hash, so a
re-run finds (and loads) the runs trained before a change to the code that names them.

The literals below were computed with the code on main before the pipeline split (issue 18);
a change to what the hash covers must be deliberate and update them here."""
import pytest

from clipfh_utils.pipeline import open_run
from clipfh_utils.runs import run_name

PINNED = {
    "zero_shot_tiny-vit": "zero_shot_tiny-vit-1c5cc5c17e",
    "demo_tiny_resnet": "demo_tiny_resnet-9567f1edf2",
}


@pytest.fixture(scope="module")
def demo_names(tmp_path_factory):
    """The demo profile's synthetic dataset, with the CNN baseline's demo config beside stage1."""
    out = tmp_path_factory.mktemp("names")
    run = open_run("demo", out, ["experiments=[stage1, cnn_baseline/demo_tiny_resnet]",
                                 "backbones=[{name: tiny-vit, weights: null}]"])
    from clipfh_utils.pipeline.experiments import experiment_run_name
    return {e.name: experiment_run_name(run, e, run.dataset) for e in run.experiments()}


@pytest.mark.parametrize("experiment", sorted(PINNED))
def test_run_names_are_unchanged(demo_names, experiment):
    name, identity = demo_names[experiment]
    assert name == PINNED[experiment]
    assert name == run_name(experiment, identity)  # the name is the identity's, nothing else
