"""MODEL_CARD.md of a run: what the model is, what it was trained and evaluated on, how well it
does, and where it must not be used, in the sections of Mitchell et al. 2019 ("Model Cards for
Model Reporting"), written with huggingface_hub's ModelCard (YAML metadata + markdown body).

The card is built from the run's own files only (run.json, metrics/*.json, seed*/weights.pt), so
rewriting it is cheap and idempotent: the pipeline rewrites it after every evaluation of the run
(its own, a re-evaluation with other settings, a transfer), and it lists every evaluation there is.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from ..atomic import atomic_write_text
from ..evaluation import METRICS, seed_split_sd
from ..provenance import file_sha256
from ..runs import all_metrics_files, read_run, seed_dir
from ..training.loop import Trainer
from .results import PROTOCOL_LABELS

CARD = "MODEL_CARD.md"
WEIGHTS = Trainer.WEIGHTS
SECTIONS = ("Model details", "Intended use", "Factors", "Training data", "Evaluation data and protocols",
            "Metrics", "Known limitations", "How to load")
METRIC_LABELS = {"rank1": "Rank-1", "rank5": "Rank-5", "rank10": "Rank-10", "mAP": "mAP"}
# sections a metrics file carries beside the rank metrics (evaluation/biometric.py): per protocol,
# each figure's mean with its sds (or why it is n/a) and, for the EER, its identity bootstrap interval
BIOMETRIC = {"verification": "Verification (1:1, % of pairs)", "open_set": "Open-set identification (1:N, % of searches)"}
GROUP_KEYS = ("groups", "factors")  # per-group figures (gender, skin colour, age band): rows as given
NOT_COLUMNS = {"protocol", "split", "seed", "cmc"}


def evaluations(run_dir: Path) -> list[tuple[str, dict]]:
    """(file name, payload) of every metrics file of the run, by name."""
    out = []
    for f in all_metrics_files(run_dir):
        try:
            out.append((f.name, json.loads(f.read_text())))
        except json.JSONDecodeError as e:
            raise ValueError(f"{f}: not a readable metrics file ({e}); re-evaluate the run to rewrite it") from None
    return out


def seed_weights(run_dir: Path, record: dict) -> list[tuple[str, str, str]]:
    """(seed, sha256, dtype) of each finished seed's final weights."""
    out = []
    for seed, info in sorted(record.get("seeds", {}).items(), key=lambda kv: int(kv[0])):
        f = seed_dir(run_dir, int(seed)) / WEIGHTS
        if f.exists():
            out.append((seed, file_sha256(f), info.get("weights_dtype", "float32")))
    return out


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _num(x: float) -> str:
    return "n/a" if x != x else f"{x:.2f}"  # NaN: one seed or one split


def spread_table(rows: list[dict], metrics: Sequence[str] | None = None) -> str:
    """Per protocol and metric: mean, sd between splits, sd between seeds (evaluation/spread.py)."""
    df = pd.DataFrame(rows)
    metrics = metrics or [c for c in df.columns if c not in NOT_COLUMNS and pd.api.types.is_numeric_dtype(df[c])]
    out = []
    for proto, part in df.groupby("protocol", sort=False):
        sd = seed_split_sd(part, metrics)
        for m in sd.index:
            r = sd.loc[m]
            out.append((PROTOCOL_LABELS.get(proto, proto), METRIC_LABELS.get(m, m), _num(r["mean"]),
                        _num(r["split_sd"]), _num(r["seed_sd"]), int(r["n_splits"]), int(r["n_seeds"])))
    return md_table(("protocol", "metric", "mean", "sd (splits)", "sd (seeds)", "splits", "seeds"), out)


def _kind(real: bool) -> str:
    return "real" if real else "SYNTHETIC (tests the code path; not a hand-identification result)"


# --------------------------------------------------------------------------- sections

def _details(record: dict, weights: list[tuple[str, str, str]], evals: list[tuple[str, dict]]) -> str:
    env, bb = record.get("environment", {}), record.get("backbone", {})
    title = next((p.get("method_title") for _, p in evals if p.get("method_title")), record["method"])
    commit = (env.get("git_commit") or "unknown") + (" (with uncommitted changes)" if env.get("git_dirty") else "")
    lines = [f"- Run: `{record['name']}` (experiment `{record['experiment']}`, created {record.get('created')})",
             f"- Method: {title} (`{record['method']}`, {record.get('stage')})",
             f"- Backbone: {bb.get('arch') or bb.get('backbone')} (`{bb.get('backbone')}`), "
             f"image size {bb.get('image_size')}",
             f"- Backbone weights: {bb.get('weights')}; sha256 {bb.get('weights_sha256') or 'none (not a file)'}",
             f"- Config: `{record.get('config_source')}`"
             + (f", overrides {', '.join(f'`{o}`' for o in record['overrides'])}" if record.get("overrides") else "")]
    if weights:
        lines.append("- Trained weights: " + "; ".join(f"`seed{s}/weights.pt` ({dt}) sha256 {h}" for s, h, dt in weights))
    elif record.get("train_ids"):
        lines.append("- Trained weights: none finished yet")
    else:
        lines.append("- Trained weights: none (not trained: the backbone as loaded)")
    lines.append(f"- Code: commit {commit}; Python {env.get('python')}, torch {env.get('torch')}, "
                 f"open_clip {env.get('open_clip')} (the full `pip freeze` is in run.json)")
    lines.append("- Card format: Mitchell et al. 2019, \"Model Cards for Model Reporting\" (FAT* '19)")
    return "\n".join(lines)


def _intended_use(record: dict) -> str:
    text = ("- Primary use: research on hand-based identification (retrieving the images of one person's "
            "hand among others, and studying how CLIP adapts to it).\n"
            "- Primary users: researchers reproducing or extending this study.\n"
            "- Out of scope: any decision about people (access control, forensic or police identification, "
            "surveillance, screening) without their informed consent and a lawful basis; use on people or "
            "capture conditions unlike the training data (see Known limitations) without evaluating there first.")
    if not record.get("real_data", False):
        text += ("\n- This run was trained or evaluated on SYNTHETIC hands: it exercises the code path and "
                 "says nothing about identifying real hands.")
    return text


def _factors(evals: list[tuple[str, dict]]) -> str:
    parts = []
    for name, p in evals:
        for key in GROUP_KEYS:
            rows = p.get(key)
            if isinstance(rows, list) and rows and isinstance(rows[0], dict):
                cols = list(rows[0])
                parts.append(f"`{name}` ({p.get('dataset')}, {_kind(p.get('real_data', False))}):\n\n"
                             + md_table(cols, ([r.get(c, "") for c in cols] for r in rows)))
    if parts:
        return "Per-group figures of the evaluations (gender, skin colour, age band of the test identities):\n\n" \
            + "\n\n".join(parts)
    return ("Relevant factors: gender, skin colour and age of the hand's owner (11k Hands records them in "
            "HandInfo.csv), hand aspect (dorsal/palmar, left/right), accessories, nail polish, capture "
            "conditions. None of this run's evaluations reports per-group figures.")


def _training(record: dict) -> str:
    ident = record.get("identity", {}).get("data", {})
    if not record.get("train_ids"):
        return (f"Not trained on hands: the backbone's own pretraining data only ({record['backbone'].get('weights')}). "
                f"Its evaluation data: {record.get('dataset')}.")
    images = record.get("train_images")
    return "\n".join([
        f"- Dataset: `{record['dataset']}`, aspect {ident.get('aspect')}: {_kind(record.get('real_data', False))}",
        f"- Description: {record.get('data')}",
        f"- Training identities: {len(record['train_ids'])}"
        + (f", training images: {images}" if images is not None else ""),
        f"- Split seed: {ident.get('split_seed')} (identities split by id threshold; one image per training "
        "identity held out for validation)",
        f"- HandInfo.csv sha256 {ident.get('handinfo_sha256')}; training images sha256 {ident.get('train_images_sha256')}"])


def _evaluation_data(evals: list[tuple[str, dict]]) -> str:
    if not evals:
        return "Not evaluated yet."
    rows = [(f"`{name}`", p.get("dataset"), _kind(p.get("real_data", False)), p.get("mode") or "default",
             ", ".join(sorted({r["protocol"] for r in p.get("per_split", [])})), p.get("n_splits"),
             "yes" if p.get("flip_test") else "no", p.get("seeds"), p.get("evaluated"))
            for name, p in evals]
    table = md_table(("metrics file", "dataset", "data", "mode", "protocols", "n_splits", "flip test",
                      "seeds", "evaluated"), rows)
    defs = "\n".join(f"- {label}" for label in PROTOCOL_LABELS.values())
    return (f"{table}\n\nProtocols (closed-set retrieval; per split one gallery image per test identity, "
            f"the other test images are queries):\n{defs}")


def _metrics(evals: list[tuple[str, dict]]) -> str:
    if not evals:
        return "Not evaluated yet."
    parts = ["CMC Rank-k and mAP in percent: the mean over splits and seeds, the sd between the Monte Carlo "
             "query/gallery splits and the sd between training seeds (n/a with one)."]
    for name, p in evals:
        parts.append(f"### `{name}`\n\n{p.get('dataset')}: {p.get('data')}\n\n"
                     + spread_table(p.get("per_split", []), METRICS))
        for key, title in BIOMETRIC.items():
            if p.get(key):
                parts.append(f"{title}:\n\n" + biometric_table(p[key]))
    return "\n\n".join(parts)


def biometric_table(section: dict) -> str:
    """Per protocol: each verification / open-set figure as the metrics file states it."""
    rows = []
    for proto, figures in section.items():
        for name, stat in figures.items():
            if not isinstance(stat, dict) or not ({"mean", "na"} & set(stat)):
                continue  # curves, histograms, counts
            if "na" in stat:
                rows.append((PROTOCOL_LABELS.get(proto, proto), name, stat["na"], "", "", ""))
                continue
            ci = f"[{stat['lo']:.2f}, {stat['hi']:.2f}]" if "lo" in stat else ""
            sds = [float("nan") if stat.get(k) is None else stat[k] for k in ("split_sd", "seed_sd")]
            rows.append((PROTOCOL_LABELS.get(proto, proto), name, _num(stat["mean"]), *map(_num, sds), ci))
    return md_table(("protocol", "figure", "mean", "sd (splits)", "sd (seeds)", "95 % interval (identities)"), rows)


LIMITATIONS = (
    "- One dataset: 11k Hands, about 190 people aged 18 to 75, mostly young adults; "
    "other ages, populations and skin colours are few or absent.\n"
    "- The identity split is a threshold on the id (ids up to T train, the rest test), as the published "
    "works do: not random, and the test identities are fixed across splits (the sd over splits says "
    "nothing about other people).\n"
    "- One capture set: the same lighting, white background, camera and distance for every image; "
    "other backgrounds, lighting, cameras or contactless captures are untested.\n"
    "- Closed-set retrieval figures do not give an operating threshold: they are no verification error rates.")


def _how_to_load(record: dict, weights: list[tuple[str, str, str]]) -> str:
    seed = weights[0][0] if weights else "0"
    return ("```python\nfrom clipfh_utils.pipeline import load_run\n\n"
            f"model = load_run(\"{record['name']}\", seed={seed})  # found under outputs/*/runs/, or give the folder\n"
            "features = model.embed([\"hand1.jpg\", \"hand2.jpg\"])   # L2-normalised, (N, D)\n"
            "scores, index = model.search(queries, gallery, k=5)\n```")


# --------------------------------------------------------------------------- the card

def model_card(run_dir: Path):
    """The run's ModelCard (huggingface_hub), from its files."""
    from huggingface_hub import ModelCard, ModelCardData
    run_dir = Path(run_dir)
    record = read_run(run_dir)
    if record is None:
        raise FileNotFoundError(f"{run_dir}: no readable run.json; not a run folder")
    evals, weights = evaluations(run_dir), seed_weights(run_dir, record)
    real = record.get("real_data", False)
    data = ModelCardData(model_name=record["name"], library_name="open_clip",
                         tags=["clip", "hand-identification", "biometrics", record["method"]]
                         + ([] if real else ["synthetic-data"]),
                         datasets=sorted({p.get("dataset") for _, p in evals} | {record.get("dataset")}),
                         metrics=["cmc-rank1", "mean-average-precision"])
    body = {"Model details": _details(record, weights, evals), "Intended use": _intended_use(record),
            "Factors": _factors(evals), "Training data": _training(record),
            "Evaluation data and protocols": _evaluation_data(evals), "Metrics": _metrics(evals),
            "Known limitations": LIMITATIONS, "How to load": _how_to_load(record, weights)}
    text = f"---\n{data.to_yaml()}\n---\n\n# Model card: {record['name']}\n\n" \
        + "\n\n".join(f"## {s}\n\n{body[s]}" for s in SECTIONS) + "\n"
    return ModelCard(text)


def write_model_card(run_dir: Path) -> Path:
    """Write (or refresh) runs/<run>/MODEL_CARD.md atomically."""
    path = Path(run_dir) / CARD
    atomic_write_text(path, str(model_card(run_dir)))
    return path
