"""Finding and checking weights files, offline (open_clip's pretrained.py, without the network).

Weights come from a local file, a `local-dir:` folder or an offline Hugging Face cache; `weights/`
(or $CLIPFH_WEIGHTS_DIR) is searched for OpenAI's files by name. A file is read whatever its format
(OpenAI TorchScript, .safetensors, a torch state dict) and checked key for key against the model it
is meant for: a mismatch says what the file looks like, never loads a mislabelled model.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Callable

import open_clip
import torch

from ..config import REPO_ROOT, display_path
from ..provenance import file_sha256
from .tiny import TINY_MODELS

RANDOM = "random init (not pretrained)"
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
WEIGHT_FILE_NAMES = ("{name}.pt", "{name}.safetensors", "{name}-quickgelu.safetensors", "{name}.bin")


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights were asked for but none can be found without the network."""


class WeightsMismatchError(ValueError):
    """A weights file that is not a checkpoint of the named architecture."""


# --------------------------------------------------------------------------- finding weights

def _missing_weights_message(name: str, tag: str = "openai") -> str:
    return (f"No pretrained weights '{tag}' for {name} found offline. Supply them one of three ways: "
            f"(1) a file: set the backbone's weights to the path of OpenAI's {name}.pt or an open_clip "
            f".safetensors/.bin checkpoint, or put it in weights/ (or $CLIPFH_WEIGHTS_DIR) named "
            f"{name}.pt or {name}.safetensors; "
            f"(2) a folder: weights: 'local-dir:/path/to/folder' holding open_clip_config.json and "
            f"open_clip_model.safetensors; "
            f"(3) the Hugging Face cache: on a networked machine run "
            f"`python -c \"import open_clip; open_clip.create_model('{name}', pretrained='{tag}')\"`, "
            f"copy ~/.cache/huggingface to this machine and set HF_HUB_OFFLINE=1.")


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


def _find_pretrained(name: str, tag: str) -> str | None:
    """A local file (for 'openai') or an offline HF-cache entry for `name`/`tag`, or None."""
    if tag == "openai":
        for d in _weights_search_dirs():
            for pattern in WEIGHT_FILE_NAMES:
                p = d / pattern.format(name=name)
                if p.is_file():
                    return str(p)
    try:
        from huggingface_hub import try_to_load_from_cache
        repo = open_clip.get_pretrained_cfg(name, tag).get("hf_hub", "").rstrip("/")
        for fname in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            hit = try_to_load_from_cache(repo, fname, cache_dir=_hf_cache_dir()) if repo else None
            if isinstance(hit, str) and os.path.isfile(hit):
                return hit
    except Exception:  # an unusable cache is the same as no cache
        return None
    return None


def _is_tag(name: str, weights: str) -> bool:
    return weights in open_clip.list_pretrained_tags_by_model(name)


def resolve_source(name: str, weights: str | None) -> tuple[str, Path | None, dict]:
    """(kind, file, extra) where kind is random | file | local-dir and file the weights file."""
    if weights in (None, "none", "random"):
        return "random", None, {}
    if weights.startswith("local-dir:"):
        folder = Path(weights[len("local-dir:"):])
        cfg_file = folder / "open_clip_config.json"
        if not cfg_file.is_file():
            raise WeightsNotFoundError(f"{folder}: no open_clip_config.json there; "
                                       + _missing_weights_message(name))
        for fname in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            if (folder / fname).is_file():
                return "local-dir", folder / fname, json.loads(cfg_file.read_text())
        raise WeightsNotFoundError(f"{folder}: no open_clip_model.safetensors there; "
                                   + _missing_weights_message(name))
    if name not in TINY_MODELS and (weights == "openai" or _is_tag(name, weights)):
        found = _find_pretrained(name, weights)
        if found is None:
            raise WeightsNotFoundError(_missing_weights_message(name, weights))
        return "tag", Path(found), {"tag": weights}
    path = Path(weights)
    if not path.is_file():
        hint = "" if path.suffix in WEIGHT_SUFFIXES else (
            f" (nor an open_clip pretrained tag of {name}: "
            f"{', '.join(open_clip.list_pretrained_tags_by_model(name)) or 'none'})"
            if name not in TINY_MODELS else "")
        raise WeightsNotFoundError(f"{weights}: file not found{hint}. " + _missing_weights_message(name))
    return "file", path, {}


def weights_sha256(name: str, weights: str | None) -> str | None:
    """The digest of the weights file a backbone would load (None for random init), without
    building the model: what a run's identity needs before anything is loaded."""
    if name.endswith("-quickgelu"):
        name = name.removesuffix("-quickgelu")
    _, file, _ = resolve_source(name, weights)
    return file_sha256(file) if file is not None else None


# --------------------------------------------------------------------------- reading state dicts

def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], bool]:
    """(state dict, is OpenAI TorchScript archive) of a weights file; garbage is a clear error."""
    def bad(e: Exception) -> WeightsMismatchError:
        return WeightsMismatchError(
            f"{display_path(path)}: not a readable weights file ({type(e).__name__}); expected an "
            "OpenAI .pt archive or an open_clip .safetensors/.bin/.pt checkpoint: replace the file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path)), False
        except Exception as e:
            raise bad(e) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice: OpenAI ships TorchScript
            return torch.jit.load(str(path), map_location="cpu").state_dict(), True
    except Exception:
        pass
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise bad(e) from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise bad(TypeError("no tensor mapping inside"))
    return {k.removeprefix("module."): v for k, v in sd.items()}, False


def describe_state_dict(sd: dict[str, torch.Tensor]) -> str:
    """What a CLIP state dict looks like: 'a ResNet (RN50) state dict', 'a ViT-B/16 state dict'."""
    if "visual.attnpool.positional_embedding" in sd:
        blocks = [len({k.split(".")[2] for k in sd if k.startswith(f"visual.layer{i}.")}) for i in range(1, 5)]
        known = {(3, 4, 6, 3): "RN50", (3, 4, 23, 3): "RN101", (4, 6, 10, 6): "RN50x4"}
        return f"a ResNet ({known.get(tuple(blocks), 'layers ' + str(blocks))}) state dict"
    if "visual.class_embedding" in sd:
        width = sd["visual.class_embedding"].shape[-1]
        patch = sd["visual.conv1.weight"].shape[-1] if "visual.conv1.weight" in sd else "?"
        layers = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})
        size = {768: "B", 1024: "L", 1280: "H"}.get(width, f"width {width}")
        return f"a ViT-{size}/{patch} state dict ({layers} blocks)"
    return "not a CLIP state dict"


def check_fits(sd: dict[str, torch.Tensor], model: torch.nn.Module, name: str, source: str,
               describe: Callable[[dict], str] = describe_state_dict, optional: tuple[str, ...] = ()) -> None:
    """A state dict that does not fit `model` key for key and shape for shape is an error saying what
    the file looks like (`describe`); keys starting with `optional` may be absent (a headless file)."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.startswith(optional)]
    unexpected = [k for k in sd if k not in own]
    shapes = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        example = (missing or unexpected or shapes)[0]
        raise WeightsMismatchError(
            f"{source}: does not fit {name} ({len(missing)} keys missing, {len(unexpected)} unexpected, "
            f"{len(shapes)} of another shape, e.g. '{example}'); the file looks like "
            f"{describe(sd)}: give the backbone name that matches the file, or the file "
            "that matches the name")

