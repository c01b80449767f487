"""One entry point to get a CLIP model by name: `load_clip("ViT-B-16", weights="openai")`.

OpenAI's weights were trained with QuickGELU; open_clip's plain 'ViT-B-16' builds GELU and only
warns, so the OpenAI backbones are always built as '<name>-quickgelu'. Nothing here touches the
network: weights come from a local file, a `local-dir:` folder or an offline Hugging Face cache.
A model without pretrained weights carries `pretrained=False` so every report can say so.
"""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import open_clip
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from .config import REPO_ROOT, display_path

OPENAI_ARCHS: dict[str, str] = {"ViT-B-16": "ViT-B-16-quickgelu", "RN50": "RN50-quickgelu"}
_TEXT_TINY = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}
TINY_MODELS: dict[str, dict[str, Any]] = {
    # ~2M parameters: random init only, for tests and the CPU demo.
    "tiny-vit": {"arch": "ViT-B-16-quickgelu", "embed_dim": 64,
                 "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32,
                                "patch_size": 8},
                 "text_cfg": _TEXT_TINY},
    "tiny-rn": {"arch": "RN50-quickgelu", "embed_dim": 64,
                "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16},
                "text_cfg": _TEXT_TINY},
}
WEIGHT_FILE_NAMES = ("{name}.pt", "{name}.safetensors", "{name}-quickgelu.safetensors", "{name}.bin")


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights were asked for but none can be found without the network."""


@dataclass
class ClipModel:
    model: torch.nn.Module
    name: str               # user-facing name: "ViT-B-16", "RN50", "tiny-vit"
    kind: str               # "vit" | "rn"
    pretrained: bool
    weights: str            # where the weights came from, or "random init (not pretrained)"
    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    tokenizer: Callable

    @property
    def label(self) -> str:
        """Name plus a visible flag when the weights are random."""
        return self.name if self.pretrained else f"{self.name} [random init]"


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' requested but CUDA is not available; "
                           "set device: cpu (or auto) in the profile")
    return torch.device(device)


def _missing_weights_message(name: str) -> str:
    return (f"No pretrained weights for {name} found offline. Supply them one of three ways: "
            f"(1) a file: set the backbone's weights to the path of OpenAI's {name}.pt or an open_clip "
            f".safetensors/.bin checkpoint, or put it in weights/ (or $CLIPFH_WEIGHTS_DIR) named "
            f"{name}.pt or {name}.safetensors; "
            f"(2) a folder: weights: 'local-dir:/path/to/folder' holding open_clip_config.json and "
            f"open_clip_model.safetensors; "
            f"(3) the Hugging Face cache: on a networked machine run "
            f"`python -c \"import open_clip; open_clip.create_model('{OPENAI_ARCHS.get(name, name)}', "
            f"pretrained='openai')\"`, copy ~/.cache/huggingface to this machine and set HF_HUB_OFFLINE=1.")


def _weights_search_dirs() -> list[Path]:
    dirs = [REPO_ROOT / "weights"]
    if os.environ.get("CLIPFH_WEIGHTS_DIR"):
        dirs.insert(0, Path(os.environ["CLIPFH_WEIGHTS_DIR"]))
    return dirs


def _hf_cache_dir() -> str | None:
    """The hub cache as the environment says now (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def _find_openai_weights(name: str) -> str | None:
    """A local file or an offline HF-cache entry for OpenAI `name`, or None."""
    for d in _weights_search_dirs():
        for pattern in WEIGHT_FILE_NAMES:
            p = d / pattern.format(name=name)
            if p.is_file():
                return str(p)
    try:
        from huggingface_hub import try_to_load_from_cache
        cfg = open_clip.get_pretrained_cfg(OPENAI_ARCHS[name], "openai")
        repo = cfg.get("hf_hub", "").rstrip("/")
        for fname in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            hit = try_to_load_from_cache(repo, fname, cache_dir=_hf_cache_dir()) if repo else None
            if isinstance(hit, str) and os.path.isfile(hit):
                return hit
    except Exception:  # an unusable cache is the same as no cache
        return None
    return None


def _tiny_spec(name: str, image_size: tuple[int, int] | None) -> tuple[str, dict]:
    spec = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY_MODELS[name].items()}
    arch = spec.pop("arch")
    if image_size is not None:
        # the tiny ViT takes any size divisible by its patch; the tiny RN is resized afterwards
        if "patch_size" in spec["vision_cfg"]:
            spec["vision_cfg"]["image_size"] = tuple(image_size)
    return arch, spec


def _build(name: str, weights: str | None, image_size: tuple[int, int] | None = None
           ) -> tuple[torch.nn.Module, str, bool]:
    native = image_size is None or tuple(image_size) == (224, 224)
    vit_size = {} if native or name != "ViT-B-16" else {"force_image_size": tuple(image_size)}
    if name in TINY_MODELS:
        arch, spec = _tiny_spec(name, image_size)
        if weights not in (None, "none", "random"):
            path = Path(weights)
            if not path.is_file():
                raise WeightsNotFoundError(f"{weights}: weights file for {name} not found")
            return open_clip.create_model(arch, pretrained=str(path), **spec), display_path(path), True
        return open_clip.create_model(arch, pretrained=None, **spec), "random init (not pretrained)", False
    if name not in OPENAI_ARCHS:
        known = ", ".join([*OPENAI_ARCHS, *TINY_MODELS])
        raise ValueError(f"unknown backbone '{name}' (known: {known})")
    arch = OPENAI_ARCHS[name]
    if weights in (None, "none", "random"):
        return (open_clip.create_model(arch, pretrained=None, **vit_size),
                "random init (not pretrained)", False)
    if weights.startswith("local-dir:"):
        folder = Path(weights[len("local-dir:"):])
        if not (folder / "open_clip_config.json").is_file():
            raise WeightsNotFoundError(f"{folder}: no open_clip_config.json there; "
                                       + _missing_weights_message(name))
        return open_clip.create_model(weights, force_quick_gelu=True, **vit_size), weights, True
    path = _find_openai_weights(name) if weights == "openai" else weights
    if path is None or not os.path.isfile(path):
        prefix = f"{weights}: file not found. " if weights != "openai" else ""
        raise WeightsNotFoundError(prefix + _missing_weights_message(name))
    if path.endswith(".pt"):  # OpenAI's original TorchScript archive
        model = open_clip.load_openai_model(path, precision="fp32", device="cpu")
        if vit_size:
            raise ValueError(f"{path}: a TorchScript .pt file loads at its native size only; convert it "
                             "to .safetensors (open_clip) to use another image size")
    else:
        model = open_clip.create_model(arch, pretrained=path, **vit_size)
    shown = display_path(path)
    return model, f"openai ({shown})" if weights == "openai" else shown, True


class _DropRandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


def resize_attnpool(visual: torch.nn.Module, image_size: tuple[int, int]) -> None:
    """Let a ModifiedResNet take (H, W) inputs: interpolate its attnpool position embedding."""
    pos = visual.attnpool.positional_embedding.data          # (1 + s*s, C)
    s = int(round((pos.shape[0] - 1) ** 0.5))
    gh, gw = image_size[0] // 32, image_size[1] // 32
    if (gh, gw) == (s, s):
        return
    grid = pos[1:].reshape(1, s, s, -1).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
    new = torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(gh * gw, -1)])
    visual.attnpool.positional_embedding = torch.nn.Parameter(new)
    visual.image_size = tuple(image_size)


def load_clip(name: str, weights: str | None = None, device: str | torch.device = "cpu",
              image_size: tuple[int, int] | None = None, seed: int = 0) -> ClipModel:
    """Build a CLIP model in eval mode on `device`; see module docstring for `weights`.

    `image_size` (H, W) other than the native one resizes the ViT position embedding
    (open_clip, bicubic) or the RN attnpool embedding. Random initialisation draws from `seed`
    (without touching the global RNG), so a "random init" baseline is the same in every run.
    """
    quiet = _DropRandomInitNotice()  # random init is reported by ClipModel.label instead
    logging.getLogger().addFilter(quiet)
    try:
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            warnings.filterwarnings("ignore", message=".*QuickGELU.*")
            torch.manual_seed(seed)
            model, source, pretrained = _build(name, weights, image_size)
    finally:
        logging.getLogger().removeFilter(quiet)
    visual = model.visual
    if image_size is not None and hasattr(visual, "attnpool"):
        if image_size[0] % 32 or image_size[1] % 32:
            raise ValueError(f"RN image size {image_size} must be a multiple of 32")
        resize_attnpool(visual, image_size)
    model = model.to(device).eval()
    size = visual.image_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    kind = "rn" if hasattr(visual, "attnpool") else "vit"
    mean = tuple(getattr(visual, "image_mean", None) or OPENAI_DATASET_MEAN)
    std = tuple(getattr(visual, "image_std", None) or OPENAI_DATASET_STD)
    tokenizer = open_clip.get_tokenizer(OPENAI_ARCHS.get(name, "ViT-B-16"))
    return ClipModel(model, name, kind, pretrained, source, size, mean, std, tokenizer)

