"""One entry point to get a CLIP model by name: `load_clip("ViT-B-16", weights="openai")`.

Any open_clip CLIP architecture with a ViT or ModifiedResNet image tower loads here ("ViT-B-16",
"RN50", "ViT-B-32", "ViT-L-14", ...), plus two tiny random models for tests and the CPU demo.
Here: building the towers and the surgery on them (input size, last stride, QuickGELU); finding
and checking the weights file, offline, is `weights.py`'s job.

QuickGELU: OpenAI's weights were trained with it and open_clip's plain names build GELU (only a
warning says so). `quick_gelu="auto"` turns it on for OpenAI weights; the resolved choice is part
of the model's record. A model without pretrained weights carries `pretrained=False` so every
report can say so.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import open_clip
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from ..config import ConfigError, display_path
from ..provenance import file_sha256
from .tiny import TINY_MODELS
from .weights import RANDOM, check_fits, read_state_dict, resolve_source


@dataclass
class ClipModel:
    model: torch.nn.Module
    name: str               # user-facing name: "ViT-B-16", "RN50", "tiny-vit"
    arch: str               # the open_clip architecture built
    kind: str               # "vit" | "rn"
    pretrained: bool
    weights: str            # where the weights came from, or RANDOM
    weights_sha256: str | None
    quick_gelu: bool
    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    tokenizer: Callable
    last_stride: int = 2

    @property
    def label(self) -> str:
        """Name plus a visible flag when the weights are random."""
        return self.name if self.pretrained else f"{self.name} [random init]"

    def record(self) -> dict:
        """The model's part of a run record: what was built, from which weights."""
        return {"backbone": self.name, "arch": self.arch, "weights": self.weights,
                "weights_sha256": self.weights_sha256, "pretrained": self.pretrained,
                "quick_gelu": self.quick_gelu, "image_size": list(self.image_size),
                "last_stride": self.last_stride}


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' requested but CUDA is not available; "
                           "set device: cpu (or auto) in the profile")
    return torch.device(device)


def _openai_arch(name: str) -> bool:
    return "openai" in open_clip.list_pretrained_tags_by_model(name)


# --------------------------------------------------------------------------- building

def _vision_cfg(name: str) -> dict | None:
    if name in TINY_MODELS:
        return TINY_MODELS[name]["vision_cfg"]
    cfg = open_clip.get_model_config(name)
    return cfg.get("vision_cfg") if cfg else None


def input_size_problem(name: str, image_size: tuple[int, int] | None, crop: bool = False) -> str | None:
    """Why backbone `name` cannot take `image_size` (H, W), in words; None when it can.

    A ViT needs a multiple of its patch size (or `crop`: the pixels past the last whole patch are
    then ignored); a ModifiedResNet a multiple of 32. Checked when an experiment is resolved.
    """
    name = name.removesuffix("-quickgelu")
    if name not in TINY_MODELS and name not in open_clip.list_models():
        known = ", ".join([*TINY_MODELS, "ViT-B-16", "RN50", "ViT-B-32", "ViT-L-14", "..."])
        return (f"unknown backbone '{name}' (known: {known}; any name of open_clip.list_models() with a "
                "ViT or ResNet image tower)")
    vision = _vision_cfg(name) or {}
    if image_size is None:
        return None
    h, w = image_size
    if isinstance(vision.get("layers"), (list, tuple)):
        if h % 32 or w % 32:
            return (f"image size {h}x{w} is not a multiple of 32, which the ResNet {name} needs; "
                    f"use e.g. {max(32, h // 32 * 32)}x{max(32, w // 32 * 32)}")
        return None
    patch = vision.get("patch_size")
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    if patch and (h % patch or w % patch) and not crop:
        return (f"image size {h}x{w} is not a multiple of {name}'s patch size {patch}; use e.g. "
                f"{max(patch, h // patch * patch)}x{max(patch, w // patch * patch)}, or set "
                "backbone.crop: true to ignore the pixels past the last whole patch")
    return None


def _tiny_spec(name: str, image_size: tuple[int, int] | None) -> tuple[str, dict]:
    spec = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY_MODELS[name].items()}
    arch = spec.pop("arch")
    if image_size is not None and "patch_size" in spec["vision_cfg"]:
        spec["vision_cfg"]["image_size"] = tuple(image_size)  # the tiny ViT takes any patch multiple
    return arch, spec


def _resolve_quick_gelu(setting: Any, name: str, kind: str, extra: dict, file: Path | None) -> bool:
    if setting in (True, False):
        return bool(setting)
    if name in TINY_MODELS:
        return True
    if kind == "tag":
        return bool(open_clip.get_pretrained_cfg(name, extra["tag"]).get("quick_gelu", False))
    if kind == "local-dir":
        return bool(extra.get("model_cfg", {}).get("quick_gelu", False))
    # a plain file or random init: on where OpenAI released this architecture (its usual weights)
    return _openai_arch(name)


ATTNPOOL_RESIZE_MODES = ("bilinear", "bicubic")


def resize_attnpool(visual: torch.nn.Module, grid_hw: tuple[int, int], mode: str = "bilinear") -> None:
    """Let a ModifiedResNet's attnpool take a (h, w) feature map: interpolate its position embedding
    (the CLS entry kept). CLIP-ReID's official code resizes bilinearly (align_corners=False)."""
    if mode not in ATTNPOOL_RESIZE_MODES:
        raise ValueError(f"attnpool resize mode '{mode}': use one of {', '.join(ATTNPOOL_RESIZE_MODES)}")
    pos = visual.attnpool.positional_embedding.data          # (1 + s*s, C)
    s = int(round((pos.shape[0] - 1) ** 0.5))
    if tuple(grid_hw) == (s, s):
        return
    grid = pos[1:].reshape(1, s, s, -1).permute(0, 3, 1, 2)  # (1, C, s, s)
    grid = torch.nn.functional.interpolate(grid.float(), size=tuple(grid_hw), mode=mode,
                                           align_corners=False).to(pos.dtype)
    new = torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(grid_hw[0] * grid_hw[1], -1)])
    visual.attnpool.positional_embedding = torch.nn.Parameter(new)


def set_last_stride(visual: torch.nn.Module, stride: int) -> None:
    """CLIP-ReID's "last stride 1": layer4 keeps the resolution of layer3 (14x14 at 224, not 7x7).

    ModifiedResNet strides with an average pool before the conv (anti-aliased), both in the main
    branch and in the shortcut; removing both pools removes the stride without touching weights.
    """
    if stride == 2:
        return
    block = visual.layer4[0]
    block.avgpool = torch.nn.Identity()
    if block.downsample is not None and isinstance(block.downsample[0], torch.nn.AvgPool2d):
        block.downsample[0] = torch.nn.Identity()
    block.stride = 1


class _DropRandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


def load_clip(name: str, weights: str | None = None, device: str | torch.device = "cpu",
              image_size: tuple[int, int] | None = None, seed: int = 0, quick_gelu: Any = "auto",
              last_stride: int = 2, crop: bool = False, attnpool_resize: str = "bilinear") -> ClipModel:
    """Build a CLIP model in eval mode on `device`; see the module docstring for `weights`.

    `image_size` (H, W) other than the native one resizes the ViT position embedding (bicubic, open_clip's
    own) or the RN attnpool embedding (`attnpool_resize`, bilinear as CLIP-ReID's official code).
    `last_stride=1` (ResNet only) removes layer4's stride (and so resizes the attnpool grid too).
    Random initialisation draws from `seed` (without touching the global RNG), so a "random
    init" baseline is the same in every run.
    """
    if name.endswith("-quickgelu"):
        name, quick_gelu = name.removesuffix("-quickgelu"), True
    problem = input_size_problem(name, image_size, crop)
    if problem:
        raise ConfigError(f"backbone {name}: {problem}")
    source_kind, file, extra = resolve_source(name, weights)
    qg = _resolve_quick_gelu(quick_gelu, name, source_kind, extra, file)
    kwargs: dict[str, Any] = {"force_quick_gelu": qg}
    if name in TINY_MODELS:
        arch, spec = _tiny_spec(name, image_size)
        kwargs.update(spec)
    else:
        arch = name
        if image_size is not None and tuple(image_size) != (224, 224):
            kwargs["force_image_size"] = tuple(image_size)
    quiet = _DropRandomInitNotice()  # random init is reported by ClipModel.label instead
    logging.getLogger().addFilter(quiet)
    try:
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            warnings.filterwarnings("ignore", message=".*QuickGELU.*")
            torch.manual_seed(seed)
            model = open_clip.create_model(arch, pretrained=None, **kwargs)
    finally:
        logging.getLogger().removeFilter(quiet)
    visual = model.visual
    kind = "rn" if hasattr(visual, "attnpool") else "vit"
    if kind == "vit" and not hasattr(visual, "class_embedding"):
        raise ValueError(f"backbone '{name}': its image tower is neither a CLS-token ViT nor a ModifiedResNet")
    if last_stride != 2 and kind != "rn":
        raise ValueError(f"backbone '{name}': last_stride applies to ResNet backbones only")

    if file is not None:
        shown = display_path(file)
        sd, torchscript = read_state_dict(file)
        for k in ("input_resolution", "context_length", "vocab_size"):  # OpenAI archive extras
            sd.pop(k, None)
        if kind == "vit" and "visual.positional_embedding" in sd:
            try:  # another input size: interpolate the grid (open_clip's own resize)
                open_clip.model.resize_pos_embed(sd, model)
            except Exception:  # not this architecture at all: _check_fits says what it is
                pass
        check_fits(sd, model, name, shown)
        model.load_state_dict(sd)
        source = f"{weights} ({shown})" if source_kind == "tag" else (weights if source_kind == "local-dir" else shown)
        if torchscript:
            source += " [OpenAI TorchScript]"
        sha = file_sha256(file)
    else:
        source, sha = RANDOM, None
    if kind == "rn":
        set_last_stride(visual, last_stride)
        size = tuple(image_size) if image_size is not None else _native_size(visual)
        div = 32 if last_stride == 2 else 16
        resize_attnpool(visual, (size[0] // div, size[1] // div), attnpool_resize)
        visual.image_size = size
    model = model.to(device).eval()
    size = _native_size(visual)
    mean = tuple(getattr(visual, "image_mean", None) or OPENAI_DATASET_MEAN)
    std = tuple(getattr(visual, "image_std", None) or OPENAI_DATASET_STD)
    tokenizer = open_clip.get_tokenizer(arch)
    return ClipModel(model, name, arch, kind, file is not None, source, sha, qg, size, mean, std,
                     tokenizer, last_stride)


def _native_size(visual: torch.nn.Module) -> tuple[int, int]:
    size = visual.image_size
    return (size, size) if isinstance(size, int) else tuple(size)
