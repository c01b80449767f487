"""YAML experiment configs validated into dataclasses.

One YAML file = one run. Unknown keys are errors (a typo must not silently fall back to a
default), and every error names the file and the dotted key.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"


class ConfigError(ValueError):
    """A config file or override that cannot be turned into a valid run description."""


# --------------------------------------------------------------------------- schema

@dataclass
class SyntheticCfg:
    n_train_ids: int = 24
    n_test_ids: int = 24
    images_per_id: tuple[int, int] = (6, 10)
    size: tuple[int, int] = (160, 120)  # (width, height), like PIL
    accessory_rate: float = 0.1
    seed: int = 0


@dataclass
class DataCfg:
    # "synthetic" | "11k" | "11k-rendered" (the real HandInfo.csv rows with synthetic images,
    # rendered at render_size: exercises and times the full-size pipeline without the photos)
    dataset: str = "synthetic"
    handinfo: str = "data/11k/HandInfo.csv"
    images_dir: str = "data/11k/Hands"
    synthetic_dir: str = "data/synthetic"
    render_size: tuple[int, int] = (1600, 1200)  # (width, height)
    cache_dir: str = "data/cache"
    splits_dir: str = "data/splits"
    synthetic: SyntheticCfg = field(default_factory=SyntheticCfg)


@dataclass
class ProtocolCfg:
    aspect: str = "dorsal right"
    seed: int = 0
    n_splits: int = 10


@dataclass
class BackboneCfg:
    name: str = "tiny-vit"
    # None: random init (flagged everywhere); "openai"; a weights file; "local-dir:/folder"
    weights: Optional[str] = None


@dataclass
class Stage1Cfg:
    batch_size: int = 128
    flip: bool = False


@dataclass
class Profile:
    name: str = "demo"
    description: str = ""
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:1" ...
    data: DataCfg = field(default_factory=DataCfg)
    protocol: ProtocolCfg = field(default_factory=ProtocolCfg)
    backbones: list[BackboneCfg] = field(default_factory=list)
    stage1: Stage1Cfg = field(default_factory=Stage1Cfg)
    stage2: list[str] = field(default_factory=list)  # Stage 2 config names or paths
    stage2_overrides: dict[str, Any] = field(default_factory=dict)  # dotted keys, every config
    notebooks: list[str] = field(default_factory=list)
    output_dir: str = ""  # "" -> outputs/<name>
    resume: bool = False  # Stage 2: continue each seed from its last checkpoint, if any


@dataclass
class PromptCfg:
    """Stage 2a: learn identity tokens with both encoders frozen."""
    template: str = "A photo of a X X X X hand."
    n_ctx: int = 4
    epochs: int = 120
    batch_size: int = 64
    lr: float = 3.5e-4
    weight_decay: float = 1e-4
    warmup_epochs: int = 5
    warmup_lr: float = 1e-5
    min_lr: float = 1e-6


@dataclass
class AugmentCfg:
    flip: float = 0.5
    pad: int = 10
    erase: float = 0.5


@dataclass
class LossWeights:
    id: float = 0.25
    triplet: float = 1.0
    i2t: float = 1.0
    center: float = 0.0


@dataclass
class FinetuneCfg:
    """Stage 2b: fine-tune the image encoder against frozen identity text features."""
    epochs: int = 60
    p: int = 16
    k: int = 4
    lr: float = 5e-6
    head_lr: Optional[float] = None  # None -> lr
    weight_decay: float = 1e-4
    milestones: list[int] = field(default_factory=lambda: [30, 50])
    gamma: float = 0.1
    warmup_epochs: int = 10
    warmup_factor: float = 0.1
    loss_weights: LossWeights = field(default_factory=LossWeights)
    triplet_margin: float = 0.3
    label_smoothing: float = 0.1
    classifier: str = "linear"  # "linear" | "arcface"
    arcface_s: float = 30.0
    arcface_m: float = 0.5
    center_lr: float = 0.5
    train_text_encoder: bool = False
    text_lr: float = 1e-6
    augment: AugmentCfg = field(default_factory=AugmentCfg)
    flip_test: bool = False
    monitor_every: int = 0  # epochs; validation images of TRAINING ids only


@dataclass
class Stage2Cfg:
    name: str = "stage2"
    backbone: BackboneCfg = field(default_factory=BackboneCfg)
    image_size: tuple[int, int] = (224, 224)  # (height, width)
    seeds: list[int] = field(default_factory=lambda: [0])
    prompt: PromptCfg = field(default_factory=PromptCfg)
    finetune: FinetuneCfg = field(default_factory=FinetuneCfg)
    amp: bool = True  # bf16 autocast on CUDA; fp32 on CPU regardless
    compile: bool = False
    compile_mode: str = "default"  # torch.compile mode: default | reduce-overhead | max-autotune-no-cudagraphs
    eval_batch_size: int = 256


# --------------------------------------------------------------------------- building

def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _convert(value: Any, tp: Any, where: str) -> Any:
    tp, optional = _strip_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: must not be empty")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return build(tp, value, where)
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def build(cls: type, data: dict, where: str = "config") -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys with their dotted name."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(
                f"{where}: unknown key '{key}' (known keys: {', '.join(sorted(known))}); "
                "fix the spelling or remove it")
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Plain-data view of a config (for run records and checkpoints)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def parse_overrides(items: list[str] | dict | None) -> dict:
    """`["stage1.flip=true", "protocol.n_splits=3"]` -> nested dict (values parsed as YAML)."""
    if not items:
        return {}
    if isinstance(items, dict):
        flat = items
    else:
        flat = {}
        for item in items:
            if "=" not in item:
                raise ConfigError(f"override '{item}': expected key=value, e.g. protocol.n_splits=3")
            key, raw = item.split("=", 1)
            flat[key.strip()] = yaml.safe_load(raw)
    nested: dict = {}
    for dotted, value in flat.items():
        node = nested
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def resolve_config_path(name_or_path: str | Path, kind: str) -> Path:
    """A bare name ('demo') means configs/<kind>/<name>.yaml; anything else is a path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        return p if p.is_absolute() else (Path.cwd() / p if (Path.cwd() / p).exists() else REPO_ROOT / p)
    candidate = CONFIG_DIR / kind / f"{name_or_path}.yaml"
    if not candidate.exists():
        available = sorted(q.stem for q in (CONFIG_DIR / kind).glob("*.yaml"))
        raise ConfigError(f"no {kind} config named '{name_or_path}' in {candidate.parent} "
                          f"(available: {', '.join(available)})")
    return candidate


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_config(cls: type, name_or_path: str | Path, kind: str,
                overrides: list[str] | dict | None = None) -> Any:
    path = resolve_config_path(name_or_path, kind)
    data = _merge(load_yaml(path), parse_overrides(overrides))
    return build(cls, data, where=str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path))


def load_profile(name_or_path: str | Path, overrides: list[str] | dict | None = None) -> Profile:
    return load_config(Profile, name_or_path, "profiles", overrides)


def load_stage2(name_or_path: str | Path, overrides: list[str] | dict | None = None) -> Stage2Cfg:
    cfg = load_config(Stage2Cfg, name_or_path, "stage2", overrides)
    if cfg.finetune.classifier not in ("linear", "arcface"):
        raise ConfigError(f"{name_or_path}: finetune.classifier must be 'linear' or 'arcface', "
                          f"got {cfg.finetune.classifier!r}")
    modes = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
    if cfg.compile_mode not in modes:
        raise ConfigError(f"{name_or_path}: compile_mode must be one of {', '.join(modes)}, "
                          f"got {cfg.compile_mode!r}")
    return cfg


def display_path(p: str | Path) -> str:
    """Repository-relative when inside the repository: reports carry no machine-specific paths."""
    p = Path(p).resolve()
    return str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else str(p)


def repo_path(p: str | Path) -> Path:
    """Config paths are relative to the repository root, so a run does not depend on the cwd."""
    p = Path(p)
    return p if p.is_absolute() else REPO_ROOT / p
