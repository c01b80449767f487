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


def test_metrics_payload_records_the_protocol_evaluated_not_the_datasets_settings():
    """n_splits and the split seed come from the Protocol that was scored (a transfer's protocol
    with identities removed, an experiment's own), whatever the dataset or profile says."""
    from types import SimpleNamespace as NS
    from clipfh_utils.data.protocol import Protocol
    from clipfh_utils.runs import metrics_payload
    proto = Protocol("dorsal right", 7, [], [], [], queries=[[], [], []])
    ds = NS(key="synthetic/dorsal_right", description="d", is_real=False, aspect="dorsal right",
            split_seed=0, n_splits=10)
    record = {"name": "x-1", "experiment": "x", "method": "m", "stage": "stage2", "identity": {}, "created": "t"}
    clip = NS(name="tiny-vit", weights=None, pretrained=False, weights_sha256=None)
    p = metrics_payload(record, "", clip, NS(flip_test=False), proto, ds, method_title="M", trains=True,
                        device="cpu", profile="demo", invocation="i", seeds=[0], train={"0": 1})
    assert (p["n_splits"], p["split_seed"]) == (3, 7)
    assert p["weights"] == "fine-tuned from None" and p["model"] == "x" and p["train"] == {"0": 1}


def test_metrics_files_are_written_and_read_through_one_rule(tmp_path):
    """The writer's per-query file is the one the reader finds (runs.per_query_path), named as
    the layout says."""
    import pandas as pd
    from clipfh_utils.pipeline.evaluate import write_metrics
    from clipfh_utils.report.results import per_query
    from clipfh_utils.runs import metrics_path, per_query_path
    path = metrics_path(tmp_path, "synthetic/dorsal_right", "", 10, False)
    assert path == tmp_path / "metrics" / "synthetic-dorsal_right__default__n10.json"
    assert per_query_path(path).name == "synthetic-dorsal_right__default__n10.per_query.csv.gz"
    assert metrics_path(tmp_path, "hd/x", "fixed", 2, True, transfer=True).name == "transfer__hd-x__fixed__n2_flip.json"
    rows = pd.DataFrame([{"protocol": "clipfh", "split": s, "rank1": 50.0 + s, "rank5": 60.0, "rank10": 70.0,
                          "mAP": 40.0 + s} for s in range(2)])
    queries = pd.DataFrame([{"protocol": "clipfh", "split": 0, "query": "q1", "person_id": "0012", "rank": 1, "ap": 1.0}])
    write_metrics(path, {"run": "x"}, rows, queries)
    back = per_query({"metrics_file": str(path)})
    assert back.to_dict("records") == queries.to_dict("records")  # person_id stays a string


def test_one_slug_for_file_names():
    from clipfh_utils.runs import slug
    assert slug("synthetic/dorsal right.v2") == "synthetic_dorsal_right.v2"
    assert slug("CMC (clipfh) - Rank-1", compact=True) == "cmc_clipfh_rank_1"
    assert slug("***", compact=True) == "figure" and len(slug("a" * 200, compact=True)) == 80


def test_excludes_zero_one_definition_for_floats_and_arrays():
    import numpy as np
    from clipfh_utils.evaluation.spread import Interval, excludes_zero
    lo = np.array([-1.0, 0.5, -2.0, 0.0, np.nan])
    hi = np.array([1.0, 2.0, -0.1, 3.0, 1.0])
    by_hand = [not (a <= 0 <= b) and not (np.isnan(a) or np.isnan(b)) for a, b in zip(lo, hi)]
    assert list(excludes_zero(lo, hi)) == by_hand == [False, True, True, False, False]
    assert [Interval(0, a, b, 1, 1, 0).excludes_zero() for a, b in zip(lo, hi)] == by_hand


def test_the_invocation_contexts_old_name_still_works_with_a_warning():
    import clipfh_utils.pipeline as pipeline
    with pytest.warns(DeprecationWarning, match="now Invocation"):
        assert pipeline.Run is pipeline.Invocation
    with pytest.raises(AttributeError):
        pipeline.NoSuchName  # noqa: B018


def test_a_setting_added_later_keeps_old_names_at_its_default_and_makes_a_new_run_otherwise(tmp_path):
    """backbone.normalize came after runs existed: at "clip" the pinned name holds; "half" is a new run."""
    from clipfh_utils.pipeline.experiments import experiment_run_name
    names = {}
    for value in ("clip", "half"):
        run = open_run("demo", tmp_path / value, ["experiments=[stage1]",
                                                  f"backbones=[{{name: tiny-vit, weights: null, normalize: {value}}}]"])
        (exp,) = run.experiments()
        names[value] = experiment_run_name(run, exp, run.dataset)[0]
    assert names["clip"] == PINNED["zero_shot_tiny-vit"]
    assert names["half"] != names["clip"] and names["half"].startswith("zero_shot_tiny-vit-")
