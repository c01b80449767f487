"""A finished run as a model you can use outside the notebooks.

    from clipfh_utils import load_run
    m = load_run("demo_tiny_vit-1a2b3c4d5e")          # or the run folder's path
    feats = m.embed(["hand1.jpg", "hand2.jpg"])         # (2, D), L2-normalised
    scores, idx = m.search(queries, gallery, k=5)      # top-5 gallery images per query
    print(m.verify("hand1.jpg", "hand2.jpg"))         # score, decision, where the threshold is from

Images may be file paths, PIL images, or a uint8 tensor (N, 3, H, W); they are resized to the
model's input size the way the pipeline does it (the whole photo, squashed, bicubic).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..backbones.features import embed_images
from ..backbones.loading import resolve_device
from ..config import REPO_ROOT, build
from ..methods import get_method
from ..runs import find_run, read_run, seed_dir, verification_thresholds_path
from ..training.loop import is_finished
from .run_state import note_version_drift
from .seed_model import build_seed_model, seed_context

ImageInput = Sequence[str | Path | Image.Image] | torch.Tensor


def to_uint8(images: ImageInput, size_hw: tuple[int, int]) -> torch.Tensor:
    """Paths, PIL images or a uint8/float tensor -> uint8 (N, 3, H, W) at the model's size."""
    h, w = size_hw
    if isinstance(images, torch.Tensor):
        x = images if images.dtype == torch.uint8 else (images.clamp(0, 1) * 255).round().to(torch.uint8)
        if tuple(x.shape[2:]) != (h, w):
            x = F.interpolate(x.float(), size=(h, w), mode="bicubic", align_corners=False)
            x = x.round().clamp(0, 255).to(torch.uint8)
        return x
    arrays = []
    for im in images:
        img = Image.open(im) if isinstance(im, (str, Path)) else im
        arrays.append(np.asarray(img.convert("RGB").resize((w, h), Image.BICUBIC), dtype=np.uint8))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


class TrainedModel:
    """One seed of a finished run, ready to embed and search."""

    def __init__(self, path: Path, seed: int | None = None, device: str = "auto", mode: str = ""):
        self.path = path
        self.record = read_run(path)
        if self.record is None:
            raise FileNotFoundError(f"{path}: no run.json; not a run folder")
        note_version_drift(self.record, "loading")
        self.method = get_method(self.record["method"])
        self.cfg = build(self.method.config_cls, self.record["config"], f"{path}/run.json")
        seeds = [int(s) for s in self.record.get("seeds", {})] or list(self.cfg.seeds)
        self.seed = seeds[0] if seed is None else seed
        self.device = resolve_device(device)
        folder = seed_dir(path, self.seed)
        if self.method.trains and not is_finished(folder):
            raise FileNotFoundError(f"{folder}: seed {self.seed} of this run has not finished "
                                    f"training (finished seeds: {seeds})")
        ctx = seed_context(self.cfg, self.device, self.seed, method=self.method)
        self.clip = ctx.clip
        self.model = build_seed_model(self.method, self.cfg, ctx, self.record.get("n_classes", 1),
                                      weights_from=folder)
        embedders = self.method.embedders(self.cfg, self.model)
        if mode not in embedders and mode == "":
            mode = next(iter(embedders))  # the method's first inference mode
        if mode not in embedders:
            raise ValueError(f"inference mode '{mode}': this run's modes are "
                             f"{', '.join(repr(m) for m in embedders)}")
        self.mode = mode
        self.embedder = embedders[mode]

    @property
    def name(self) -> str:
        return self.record["name"]

    def embed(self, images: ImageInput, batch_size: int = 64) -> torch.Tensor:
        """L2-normalised features (N, D) on the CPU."""
        x = to_uint8(images, self.clip.image_size)
        return embed_images(self.embedder, x, self.clip.mean, self.clip.std, self.device, batch_size,
                            flip=self.cfg.flip_test, amp=self.cfg.amp)

    def verify(self, image_a, image_b, fmr: float | None = None) -> "Verdict":
        """Same person? The cosine score and the decision at a threshold from the training
        identities' images (see `verify`); printing the result says where the threshold is from."""
        return verify(self, image_a, image_b, fmr)

    def search(self, queries: ImageInput, gallery: ImageInput, k: int = 5
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine similarities (Q, k) and gallery indices (Q, k) of each query's top-k matches."""
        q, g = self.embed(queries), self.embed(gallery)
        sim = q @ g.T
        order = torch.sort(sim, dim=1, descending=True, stable=True).indices[:, :min(k, g.shape[0])]
        return sim.gather(1, order), order


@dataclass
class Verdict:
    """A 1:1 decision: the score, whether it reaches the threshold, and where the threshold is from."""
    score: float
    match: bool
    threshold: float
    operating_point: str          # "EER" or "FMR <= 0.01"
    fmr_at_threshold: float       # on the training identities' pairs
    fnmr_at_threshold: float
    source: str

    def __str__(self) -> str:
        return (f"score {self.score:.4f} {'>=' if self.match else '<'} threshold {self.threshold:.4f}: "
                f"{'same person' if self.match else 'different persons'} (threshold at the {self.operating_point} "
                f"point of {self.source}; there it had FMR {self.fmr_at_threshold:.2%}, FNMR {self.fnmr_at_threshold:.2%})")


def verify(model: "TrainedModel", image_a, image_b, fmr: float | None = None) -> Verdict:
    """Compare two images at a threshold chosen on the training identities' images: the EER point,
    or the lowest threshold whose FMR there did not exceed `fmr` (one of the profile's targets)."""
    f = verification_thresholds_path(model.path, model.seed, model.mode)
    if not f.exists():
        raise FileNotFoundError(f"{f}: this run has no verification thresholds; evaluate it once with "
                                "evaluation.verification=true (re-running its notebook re-evaluates, never retrains)")
    t = json.loads(f.read_text())
    if fmr is None:
        point, name = t["eer"], "EER"
    elif f"{fmr:g}" in t["fmr_targets"]:
        point, name = t["fmr_targets"][f"{fmr:g}"], f"FMR <= {fmr:g}"
    else:
        raise ValueError(f"fmr={fmr}: thresholds exist for FMR {', '.join(t['fmr_targets']) or '(none)'} "
                         "(evaluation.fmr_targets when the run was evaluated) or fmr=None for the EER point")
    feats = model.embed([image_a, image_b] if not isinstance(image_a, torch.Tensor)
                        else torch.cat([image_a[None] if image_a.dim() == 3 else image_a,
                                        image_b[None] if image_b.dim() == 3 else image_b]))
    score = float(feats[0] @ feats[1])
    return Verdict(score, score >= point["threshold"], point["threshold"], name, point["fmr"], point["fnmr"],
                   t["source"])


def load_run(name_or_path: str | Path, seed: int | None = None, device: str = "auto", mode: str = "",
             search: Sequence[Path] = (REPO_ROOT / "outputs",)) -> TrainedModel:
    """A finished run by name (found under outputs/*/runs/) or by folder path; `mode` picks an
    inference mode ("composed" / "fixed" for PromptSG; "" = the method's first)."""
    return TrainedModel(find_run(name_or_path, list(search)), seed, device, mode)
