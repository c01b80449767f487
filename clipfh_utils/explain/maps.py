"""The maps of every model of an invocation for the same query images, computed on demand.

A `ModelEntry` is what a map needs from a trained (or zero-shot) model: the model with its
`embed`, its image tower, its input normalisation and its evaluation features (the Grad-CAM
target is the query's true gallery match, as the model itself embedded it). Which maps a model
has follows from what it is, so a new stage shows up without changes here:
- "attention rollout" (ViT towers), per block: rollout of the blocks up to it;
- "Grad-CAM" (every tower), per block (ViT) or layer3/layer4 (ResNet);
- "cross-attention" for models with `attention_maps(x) -> (B, h, w)` (PromptSG, Stage 3).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..backbones.adapters import VisionAdapter
from ..backbones.features import normalize
from ..data.protocol import SplitRow
from ..evaluation import FeatureBank
from .attention import rollout_maps
from .gradcam import gradcam_layers, similarity_gradcam

ROLLOUT, GRADCAM, CROSS = "attention rollout", "Grad-CAM", "cross-attention"


@dataclass
class ModelEntry:
    label: str                     # what a reader calls it, e.g. "CLIP-ReID · tiny-vit"
    stage: str                     # "stage1" | "stage2" | "stage3" | ...
    model: nn.Module               # eval mode, with embed(x)
    visual: nn.Module              # its open_clip image tower
    mean: tuple[float, ...]
    std: tuple[float, ...]
    bank: FeatureBank              # its evaluation features (L2-normalised)
    images: torch.Tensor           # uint8 evaluation images in bank order (N, 3, H, W)
    backbone: str = ""             # the backbone's name, e.g. "ViT-B-16"
    pretrained: bool = True
    embed: Callable[[torch.Tensor], torch.Tensor] | None = None  # the inference mode's; default model.embed
    experiment: str = ""           # the internal name (tables' CSV), e.g. "demo_tiny_vit"; default the label

    def __post_init__(self) -> None:
        if self.embed is None:
            self.embed = self.model.embed
        self.experiment = self.experiment or self.label

    @property
    def is_vit(self) -> bool:
        return hasattr(self.visual, "transformer")

    def methods(self) -> list[str]:
        out = ([ROLLOUT] if self.is_vit else []) + [GRADCAM]
        return out + ([CROSS] if callable(getattr(self.model, "attention_maps", None)) else [])

    def layers(self, method: str) -> list[str]:
        """The layers a method can be shown at; the last is the default (the deepest)."""
        if method == ROLLOUT:
            return [f"block {i + 1}" for i in range(len(self.visual.transformer.resblocks))]
        if method == GRADCAM:
            return list(gradcam_layers(self.visual))
        if method == CROSS:
            return ["interaction"]
        raise ValueError(f"{self.label}: no map method {method!r}; it has {', '.join(self.methods())}")

    def inputs(self, rows: Sequence[SplitRow]) -> torch.Tensor:
        idx = [self.bank.index[r.image_name] for r in rows]
        dev = next(self.model.parameters()).device
        return normalize(self.images[idx].to(dev), self.mean, self.std)

    def maps(self, method: str, rows: Sequence[SplitRow], targets: Sequence[SplitRow] | None = None,
             layer: str | None = None, batch_size: int = 64) -> torch.Tensor:
        """(N, h, w) non-negative maps for the images of `rows`. Grad-CAM needs `targets`: the
        gallery rows whose features each query is matched against."""
        layers = self.layers(method)
        layer = layer or layers[-1]
        if layer not in layers:
            raise ValueError(f"{self.label}: {method} has no layer {layer!r}; choose one of {', '.join(layers)}")
        out = []
        for s in range(0, len(rows), batch_size):
            x = self.inputs(rows[s:s + batch_size])
            if method == ROLLOUT:
                out.append(rollout_maps(self.visual, x, upto=layers.index(layer) + 1))
            elif method == GRADCAM:
                if targets is None:
                    raise ValueError("Grad-CAM needs the target rows (each query's gallery match)")
                feats, _ = self.bank.take(list(targets[s:s + batch_size]))
                out.append(similarity_gradcam(self.model, self.embed, self.visual, x, feats, layer))
            else:
                with torch.no_grad():
                    out.append(self.model.attention_maps(x).float().cpu())
        return torch.cat(out).clamp(min=0)


def as_distribution(maps: torch.Tensor) -> torch.Tensor:
    """Each map divided by its sum (NaN for an all-zero map, which shows nothing)."""
    s = maps.flatten(1).sum(1).view(-1, *([1] * (maps.dim() - 1)))
    return maps / s.where(s > 0, torch.full_like(s, float("nan")))


def image_tower(model: nn.Module, clip) -> nn.Module:
    """The image tower a model uses: its VisionAdapter's, else the backbone's open_clip tower, else
    the backbone itself (a torchvision ResNet: the CNN baseline)."""
    adapters = [m for m in model.modules() if isinstance(m, VisionAdapter)]
    return adapters[0].visual if adapters else getattr(clip.model, "visual", clip.model)


def entries_from_results(results: Sequence) -> list[ModelEntry]:
    """One entry per experiment result (its first seed's model and evaluation)."""
    out = []
    for r in results:
        first_seed = r.cfg.seeds[0]
        ev = next(v for (seed, _), v in r.evals.items() if seed == first_seed)
        out.append(ModelEntry(r.name, r.experiment.stage, r.model, image_tower(r.model, r.clip), r.clip.mean,
                              r.clip.std, ev.bank, ev.images, r.clip.name, r.clip.pretrained))
    return out


@dataclass
class MapSource:
    """Maps of several models for one set of query rows, computed once and kept (for figures and
    the interactive explorer). `matches[i]` is the gallery row of query i's identity."""
    entries: list[ModelEntry]
    queries: list[SplitRow]
    matches: list[SplitRow]
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def for_split(cls, entries: list[ModelEntry], proto, split: int = 0) -> "MapSource":
        gallery = {r.label: r for r in proto.galleries[split]}
        queries = list(proto.queries[split])
        return cls(entries, queries, [gallery[q.label] for q in queries])

    def entry(self, label: str) -> ModelEntry:
        return next(e for e in self.entries if e.label == label)

    def maps(self, label: str, method: str, layer: str | None = None) -> torch.Tensor:
        """(N_queries, h, w) maps of one model, method and layer (default: the deepest)."""
        e = self.entry(label)
        key = (label, method, layer or e.layers(method)[-1])
        if key not in self._cache:
            self._cache[key] = e.maps(method, self.queries, self.matches, key[2])
        return self._cache[key]

    def pick(self, n: int, seed: int = 0) -> list[int]:
        """`n` query indices of different identities (seeded), for side-by-side figures."""
        rng = np.random.default_rng(seed)
        first: dict[str, int] = {}
        for i, q in enumerate(self.queries):
            first.setdefault(q.person_id, i)
        ids = sorted(first.values())
        return sorted(rng.choice(ids, size=min(n, len(ids)), replace=False).tolist())

    def backbones(self) -> list[str]:
        return list(dict.fromkeys(e.backbone for e in self.entries))

    def random_backbones(self) -> list[str]:
        return sorted({e.backbone for e in self.entries if not e.pretrained})

    def query_images(self, picks: Sequence[int] | None = None, backbone: str | None = None) -> torch.Tensor:
        """uint8 images of the queries (all, or `picks`) as the first model (of `backbone`) sees them."""
        e = next(e for e in self.entries if backbone in (None, e.backbone))
        rows = [self.queries[i] for i in (range(len(self.queries)) if picks is None else picks)]
        return e.images[[e.bank.index[r.image_name] for r in rows]]

    def side_by_side(self, picks: Sequence[int], backbone: str) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[str]]:
        """For the picked queries: their images, every map of every model on `backbone` at its
        default layer (column "model · method"), and row titles."""
        cols = {}
        for e in self.entries:
            if e.backbone != backbone:
                continue
            for method in e.methods():
                cols[f"{e.label}\n{method}"] = self.maps(e.label, method)[list(picks)]
        titles = [f"id {self.queries[i].person_id}" for i in picks]
        return self.query_images(picks, backbone), cols, titles

    def region_table(self, labels: np.ndarray) -> tuple["pd.DataFrame", "pd.Series"]:
        """Per model and map (default layer; rows "model · map"): model, stage, backbone, map, the
        mean share (%) per hand region over all queries (one column per REGION_NAMES entry), and the
        number of maps behind it (all-zero maps show nothing and are left out); and the regions'
        mean share of the image area (%)."""
        import pandas as pd
        from .regions import REGION_NAMES, area_shares, region_shares
        rows = {}
        for e in self.entries:
            for method in e.methods():
                shares = region_shares(self.maps(e.label, method), labels)
                valid = ~np.isnan(shares).any(1)
                row = dict(zip(REGION_NAMES, np.nanmean(shares[valid], 0) * 100 if valid.any()
                               else [np.nan] * len(REGION_NAMES)))
                rows[f"{e.label} · {method}"] = {"model": e.label, "experiment": e.experiment, "stage": e.stage,
                                                 "backbone": e.backbone,
                                                 "map": method, **row, "maps": int(valid.sum())}
        table = pd.DataFrame.from_dict(rows, orient="index")
        area = pd.Series(area_shares(labels).mean(0) * 100, index=list(REGION_NAMES))
        return table, area

    def overview(self) -> "pd.DataFrame":
        """One row per model: stage, backbone, its maps and the layers they can be shown at."""
        import pandas as pd
        return pd.DataFrame([{"model": e.label, "stage": e.stage, "backbone": e.backbone,
                              "maps": ", ".join(e.methods()),
                              "layers": "; ".join(f"{m}: {', '.join(e.layers(m))}" for m in e.methods())}
                             for e in self.entries])
