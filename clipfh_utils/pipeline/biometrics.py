"""The profile's evaluation settings applied to one model's features: verification, open-set and
k-reciprocal re-ranking (clipfh_utils.evaluation), and what of them goes into the metrics files.

They read the features the evaluation already extracted; none of them trains. Re-ranked rank
metrics go into a metrics file of their own ("reranked": true, the model labelled), so the
comparison shows them beside the plain ones and never in their place.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ..atomic import atomic_write_json
from ..backbones.features import embed_images
from ..config import ConfigError, EvaluationCfg, display_path, to_dict
from ..data.protocol import Protocol, split_dir
from ..evaluation import FeatureBank, evaluate_protocol
from ..evaluation.biometric import BiometricResult, biometric_summary, evaluate_biometric
from ..evaluation.openset import draw_enrolled, n_enrolled, write_enrolled
from ..evaluation.reranking import k_reciprocal_distance
from ..evaluation.verification import training_thresholds
from ..runs import verification_thresholds_path

RERANK_LABEL = "k-reciprocal re-ranked"


@dataclass
class Extra:
    """What the evaluation settings add to one (seed, mode) evaluation."""
    biometric: BiometricResult | None = None
    reranked_split: pd.DataFrame | None = None    # rank metrics per split after re-ranking
    reranked_query: pd.DataFrame | None = None
    enrolled_dir: Path | None = None


def check_settings(s: EvaluationCfg, proto: Protocol) -> None:
    """Before any training: the open-set share must leave both enrolled and non-enrolled identities."""
    if s.open_set:
        try:
            n_enrolled(len({r.person_id for r in proto.test}), s.enrolled_share)
        except ValueError as e:
            raise ConfigError(str(e)) from None


def enrolled_lists(ds, proto: Protocol, share: float) -> tuple[list[list[str]], Path]:
    """The seeded open-set enrolment of `proto`, written beside its split lists (as one set)."""
    enrolled = draw_enrolled(proto, share)  # the share is checked before training (check_settings)
    folder = split_dir(ds.splits_root, proto.aspect, proto.seed)
    folder.mkdir(parents=True, exist_ok=True)
    return enrolled, write_enrolled(folder, share, enrolled)


def reranker(s: EvaluationCfg):
    """minus the re-ranked distance: a similarity for `evaluate_protocol`."""
    def sim(q: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return -torch.from_numpy(k_reciprocal_distance(q.numpy(), g.numpy(), s.k1, s.k2, s.lambda_value))
    return sim


def evaluate_extra(bank: FeatureBank, proto: Protocol, ds, s: EvaluationCfg | None) -> Extra:
    if s is None:
        return Extra()
    out = Extra()
    if s.verification or s.open_set:
        enrolled = None
        if s.open_set:
            enrolled, out.enrolled_dir = enrolled_lists(ds, proto, s.enrolled_share)
        out.biometric = evaluate_biometric(bank, proto, s.fmr_targets, s.fpir_targets, enrolled)
    if s.rerank:
        pq: list[pd.DataFrame] = []
        out.reranked_split = evaluate_protocol(bank, proto, per_query=pq, similarity=reranker(s))
        out.reranked_query = pd.concat(pq, ignore_index=True)
    return out


def settings_record(s: EvaluationCfg, reranked: bool) -> dict:
    """The "evaluation" entry of a metrics file: the settings, and whether this file is re-ranked."""
    return {**to_dict(s), "reranked": reranked}


def add_biometrics(payload: dict, rows: pd.DataFrame, queries: pd.DataFrame, extras: dict[int, Extra],
                   s: EvaluationCfg) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Verification and open-set summaries into the payload; their per-split and per-query
    columns beside the rank metrics (joined on protocol, split, seed and query)."""
    results = {seed: e.biometric for seed, e in extras.items() if e.biometric is not None}
    payload = {**payload, "evaluation": settings_record(s, False)}
    if not results:
        return payload, rows, queries
    verification, open_set, per, pq = biometric_summary(results, s.fmr_targets, s.fpir_targets, s.n_boot)
    payload["verification"] = verification if s.verification else {}
    if open_set:
        lists = next(e.enrolled_dir for e in extras.values() if e.enrolled_dir is not None)
        payload["open_set"] = {p: {**o, "enrolled_share": s.enrolled_share, "lists": display_path(lists)}
                               for p, o in open_set.items()}
    rows = rows.merge(per, on=["protocol", "split", "seed"], how="left", validate="one_to_one")
    queries = queries.merge(pq.drop(columns="person_id"), on=["protocol", "split", "seed", "query"],
                            how="left", validate="one_to_one")
    return payload, rows, queries


def reranked_payload(payload: dict, extras: dict[int, Extra], s: EvaluationCfg
                     ) -> tuple[dict, pd.DataFrame, pd.DataFrame] | None:
    """The re-ranked twin of a metrics payload (None without re-ranking): rank metrics only."""
    if not s.rerank:
        return None
    rows = pd.concat([e.reranked_split.assign(seed=seed) for seed, e in extras.items()], ignore_index=True)
    queries = pd.concat([e.reranked_query.assign(seed=seed) for seed, e in extras.items()], ignore_index=True)
    twin = {k: v for k, v in payload.items() if k not in ("verification", "open_set")}
    twin.update(model=f"{payload['model']} · {RERANK_LABEL}", evaluation=settings_record(s, True))
    return twin, rows.drop(columns=[c for c in ("cmc",) if c in rows]), queries


def write_thresholds(rdir: Path, seed: int, mode: str, embed, clip, cfg, data, device: torch.device,
                     s: EvaluationCfg, trained: bool, dataset: str) -> Path:
    """Thresholds for 1:1 decisions from the training identities' images (train + validation),
    never the test identities, saying so."""
    images = torch.cat([data.images, data.val_images]) if data.val_images is not None else data.images
    labels = torch.cat([data.labels, data.val_labels]) if data.val_labels is not None else data.labels
    feats = embed_images(embed, images, clip.mean, clip.std, device, cfg.eval_batch_size,
                         flip=cfg.flip_test, amp=cfg.amp)
    out = training_thresholds(feats.numpy(), labels.cpu().numpy(), s.fmr_targets)
    seen = "the model was trained on them" if trained else "this model was not trained (zero-shot)"
    out.update(dataset=dataset, images=len(labels), identities=len(data.class_ids),
               source=f"all pairs of the {len(labels)} images of the {len(data.class_ids)} training identities "
                      f"of {dataset} ({seen}); never the test identities")
    path = verification_thresholds_path(rdir, seed, mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, out)
    return path
