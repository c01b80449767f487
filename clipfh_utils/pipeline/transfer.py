"""Cross-dataset and cross-aspect transfer: any finished run, tested on any dataset's test protocol.

A model trained on 11k dorsal right is tested on HD, on the other 11k aspects, ...; zero-shot runs
too (they trained on nothing). Identities the model saw in training are removed from the target's
test set (its queries and gallery, in both protocols) when the two datasets share people, i.e. the
aspects of one HandInfo.csv: the dorsal-right training ids include a few dorsal-left and
palmar-left test ids. The distractors of `gallery_all` stay: they never match, whoever they are,
so a run tested on its own dataset gets exactly its in-domain numbers.

Each (run, test set) is one metrics file in the run's folder,
`metrics/transfer__<test set>__<mode>__n<splits>.json`, that records the training and the test
dataset and what was removed; the invocation's manifest lists it under "transfers" (the
comparison notebook's train-set x test-set table reads them from there).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..config import REPO_ROOT, ConfigError
from ..data.datasets import HandDataset
from ..data.prepare import prepare_dataset
from ..data.protocol import Protocol
from ..methods import get_method
from ..runs import (find_run, metrics_path, metrics_payload, now, read_manifest, read_run, record_entry, relpath,
                    run_dir, transfer_key)
from .evaluate import evaluate_model, write_metrics
from .experiments import ExperimentResult
from .trained import TrainedModel


@dataclass
class TransferResult:
    run_name: str
    experiment: str
    mode: str
    train_dataset: str | None        # None: a model that trained on nothing (zero-shot)
    test_dataset: str
    removed_ids: list[str]           # test identities of the target the model saw in training
    per_split: pd.DataFrame          # protocol, split, rank1, rank5, rank10, mAP, seed
    per_query: pd.DataFrame
    metrics_file: Path


def remove_identities(proto: Protocol, ids: Sequence[str]) -> Protocol:
    """`proto` without the test images of `ids`: gone from the queries, the galleries and the
    gallery part of `gallery_all`; distractors (rows not in the test set) stay."""
    drop = {r.image_name for r in proto.test if r.person_id in set(ids)}

    def keep(rows):
        return [r for r in rows if r.image_name not in drop]

    return Protocol(proto.aspect, proto.seed, proto.train, proto.val, keep(proto.test),
                    [keep(q) for q in proto.queries], [keep(g) for g in proto.galleries],
                    [keep(g) for g in proto.galleries_all])


def seen_test_identities(record: dict, target: HandDataset) -> list[str]:
    """The target's test ids that the run trained on (none across identity spaces or for zero-shot)."""
    if not get_method(record["method"]).trains:
        return []
    if "train_ids" not in record:
        raise ConfigError(f"run {record['name']}: its run.json does not list its training identities "
                          "(made before transfer existed); evaluate it once with this version "
                          "(`clipfh run ...` loads it without training) and retry")
    if record.get("identity_space") != target.identity_space:
        return []
    test_ids = {r.person_id for r in target.protocol().test}
    return sorted(test_ids & set(record["train_ids"]), key=int)


def _source_folder(run, source: str | Path | ExperimentResult | TrainedModel) -> Path:
    if isinstance(source, ExperimentResult):
        return source.run_dir
    if isinstance(source, TrainedModel):
        return source.path
    return find_run(source, [run.run_dir, REPO_ROOT / "outputs"])


def _finished_seeds(record: dict, folder: Path) -> list[int]:
    if not get_method(record["method"]).trains:
        return [int(record["config"]["seeds"][0])]
    seeds = sorted(int(s) for s, v in record.get("seeds", {}).items() if v.get("finished"))
    if not seeds:
        raise FileNotFoundError(f"{folder}: no seed of this run has finished training; train it first")
    return seeds


def evaluate_transfer(run, source: str | Path | ExperimentResult | TrainedModel, target: HandDataset,
                      modes: Sequence[str] | None = None) -> list[TransferResult]:
    """Test a finished run (every finished seed; every inference mode unless `modes`) on `target`'s
    test protocol, minus the identities it saw in training; write and record the metrics."""
    folder = _source_folder(run, source)
    record = read_run(folder)
    if record is None:
        raise FileNotFoundError(f"{folder}: no run.json; not a run folder")
    trains = get_method(record["method"]).trains
    removed = seen_test_identities(record, target)
    proto = remove_identities(target.protocol(), removed) if removed else target.protocol()
    if not proto.test:
        raise ValueError(f"run {record['name']} trained on every test identity of {target.key}; "
                         "nothing is left to test it on")
    per_split: dict[str, list[pd.DataFrame]] = {}
    per_query: dict[str, list[pd.DataFrame]] = {}
    seeds = _finished_seeds(record, folder)
    for seed in seeds:
        tm = TrainedModel(folder, seed, device=str(run.device))
        embedders = tm.method.embedders(tm.cfg, tm.model)
        for mode in modes if modes is not None else embedders:
            ev = evaluate_model(embedders[mode], tm.clip, tm.cfg, target, run.images, run.device,
                                f"{record['experiment']} -> {target.key}", proto)
            per_split.setdefault(mode, []).append(ev.per_split.drop(columns="cmc", errors="ignore").assign(seed=seed))
            per_query.setdefault(mode, []).append(ev.per_query.assign(seed=seed))
    results = []
    for mode in per_split:
        rows, queries = pd.concat(per_split[mode], ignore_index=True), pd.concat(per_query[mode], ignore_index=True)
        path = metrics_path(folder, target.key, mode, proto.n_splits, tm.cfg.flip_test, transfer=True)
        train_key = record["dataset"] if trains else None
        test_ids = {r.person_id for r in proto.test}
        payload = metrics_payload(
            record, mode, tm.clip, tm.cfg, proto, target, method_title=tm.method.title, trains=trains,
            device=str(run.device), profile=run.profile.name, invocation=run.invocation, seeds=seeds,
            train_dataset=train_key, train_data=record["data"] if trains else None, test_dataset=target.key,
            real_data=target.is_real and (record.get("real_data", False) or not trains),
            transfer={"removed_ids": removed, "n_removed_ids": len(removed), "test_ids": len(test_ids),
                      "test_images": len(proto.test),
                      "same_identity_space": trains and record.get("identity_space") == target.identity_space})
        write_metrics(path, payload, rows, queries)
        record_entry(run.run_dir, run.invocation,
                     transfer_key(record["experiment"], mode, train_key, target.key),
                     {"run": record["name"], "experiment": record["experiment"], "mode": mode,
                      "stage": record["stage"], "train_dataset": train_key, "test_dataset": target.key,
                      "metrics": relpath(path, run.run_dir), "recorded": now()}, section="transfers")
        results.append(TransferResult(record["name"], record["experiment"], mode, train_key, target.key,
                                      removed, rows, queries, path))
    return results


def transfer_targets(run) -> list[HandDataset]:
    """The profile's datasets and its `transfer.targets` (test-only), each once."""
    extra = [prepare_dataset(run.profile.data, ref, run.profile.protocol) for ref in run.profile.transfer.targets]
    return list({ds.key: ds for ds in [*run.datasets, *extra]}.values())


def run_transfers(run, experiments: Sequence[str] | None = None) -> list[TransferResult]:
    """Every run of this invocation (or of `experiments`) on every transfer target; a zero-shot
    experiment once (it trained on nothing: one model, whichever dataset its run was recorded for)."""
    wanted = set(experiments or run.profile.transfer.experiments)
    entries = read_manifest(run.run_dir, run.invocation).get("entries", {}).values()
    sources: dict[tuple, str] = {}
    for e in entries:
        if wanted and e["experiment"] not in wanted:
            continue
        trains = get_method(e["method"]).trains
        sources.setdefault((e["experiment"], e["run"] if trains else "", e["mode"]), e["run"])
    if not sources:
        raise ConfigError(f"invocation {run.invocation} has no results to transfer"
                          + (f" of {sorted(wanted)}" if wanted else "") + "; run the stage notebooks first")
    targets = transfer_targets(run)
    out = []
    for (_, _, mode), name in sorted(sources.items()):
        for target in targets:
            out.extend(evaluate_transfer(run, run_dir(run.run_dir, name), target, modes=[mode]))
    return out
