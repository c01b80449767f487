"""YAML configs validated into dataclasses, and the one override form used everywhere.

One YAML file = one run description. Unknown keys are errors (a typo must not silently fall back
to a default), every numeric setting has a declared range, and every error names the file or the
`-p` override the bad key came from. Schemas shared by every method live here (profile, data,
protocol, backbone); a method's own schema lives next to the method.

Field metadata understood by `build`:
- `ge`, `gt`, `le`: numeric bounds (also applied to each item of a list);
- `identity=False`: the setting does not change the trained weights (seeds, batch size of
  evaluation, compile mode...), so it is left out of the run hash;
- `internal=True`: filled by code, never read from YAML.
"""
from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"
ASPECTS: tuple[str, ...] = ("dorsal right", "dorsal left", "palmar right", "palmar left")
HD_KINDS: tuple[str, ...] = ("hd", "hd-synthetic")  # the HD dataset has one aspect: "dorsal"
HD_ASPECT = "dorsal"

NAME_CHARS = "letters, digits, '-', '_' and '.' (not first), at most 100"
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


def name_problem(name: str) -> str | None:
    """Why `name` (a profile, experiment or variant name) cannot be one folder or file name, or None.
    Names become path components: '../x', 'a/b' or '.hidden' would write outside their folder."""
    if _SAFE_NAME.fullmatch(name):
        return None
    return f"{name!r} is not a safe folder name; use {NAME_CHARS}"


class ConfigError(ValueError):
    """A config file or override that cannot be turned into a valid run description."""


def setting(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, identity: bool = True, internal: bool = False,
            factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with a declared range and run-identity flag (see module docstring)."""
    meta = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le)) if v is not None}
    meta.update(identity=identity, internal=internal)
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------- shared schemas

@dataclass
class SyntheticCfg:
    n_train_ids: int = setting(24, ge=2)
    n_test_ids: int = setting(24, ge=2)
    images_per_id: tuple[int, int] = setting((6, 10), ge=2)
    size: tuple[int, int] = setting((160, 120), ge=16)  # (width, height), like PIL
    accessory_rate: float = setting(0.1, ge=0, le=1)
    seed: int = setting(0, ge=0)


@dataclass
class SyntheticHdCfg:
    """Synthetic hands written in the HD layout (`HD/Original Images/1-<n_ids>/<id>_<k>.jpg`)."""
    n_ids: int = setting(40, ge=2)         # the main subjects 1..n_ids (split by hd_id_threshold)
    n_extra_ids: int = setting(10, ge=1)   # distractor subjects n_ids+1..n_ids+n_extra_ids
    images_per_id: tuple[int, int] = setting((4, 6), ge=2)
    size: tuple[int, int] = setting((160, 120), ge=16)  # (width, height), like PIL
    seed: int = setting(0, ge=0)


@dataclass
class DataCfg:
    """Where the datasets live (which of them a run uses is `Profile.datasets`)."""
    handinfo: str = "data/11k/HandInfo.csv"
    images_dir: str = "data/11k/Hands"
    synthetic_dir: str = "data/synthetic"
    # 11k-rendered: the real HandInfo.csv rows with synthetic pixels rendered at this size
    render_size: tuple[int, int] = setting((1600, 1200), ge=16)  # (width, height)
    cache_dir: str = "data/cache"
    splits_dir: str = "data/splits"
    # a HandInfo.csv whose sha256 differs from the .sha256 beside it is refused; true builds split
    # lists from it under <splits_dir>/<dataset>-modified-<sha256[:12]> (the committed ones stay)
    allow_modified_handinfo: bool = False
    synthetic: SyntheticCfg = field(default_factory=SyntheticCfg)
    # HD (PolyU hand dorsal): the folder holding "Original Images/1-501" and "Original Images/502-712"
    hd_dir: str = "data/HD"
    # HD training ids are 1..hd_id_threshold, test ids the rest of 1-501. MBA-Net's
    # prepare_train_val_test_hd.py says "first/last 251 ids" in its comments but its code keeps
    # ids <= 447 for training: the default follows the code; 251 gives the commented split.
    hd_id_threshold: int = setting(447, ge=1)
    synthetic_hd: SyntheticHdCfg = field(default_factory=SyntheticHdCfg)


@dataclass
class DatasetRef:
    """One dataset a profile trains and evaluates on: a source and an aspect of the hand."""
    # synthetic | 11k | 11k-rendered (real HandInfo rows, synthetic pixels: times the full pipeline)
    # | hd (PolyU hand dorsal, real images) | hd-synthetic (synthetic hands in the HD layout)
    dataset: Literal["synthetic", "11k", "11k-rendered", "hd", "hd-synthetic"] = "synthetic"
    # None: the dataset's own default, "dorsal right" for 11k, "dorsal" (its only aspect) for HD
    aspect: Optional[Literal["dorsal right", "dorsal left", "palmar right", "palmar left", "dorsal"]] = None

    def __post_init__(self) -> None:
        if self.aspect is None:
            self.aspect = HD_ASPECT if self.dataset in HD_KINDS else "dorsal right"

    def check(self, where: str) -> None:
        if (self.dataset in HD_KINDS) != (self.aspect == HD_ASPECT):
            allowed = f"'{HD_ASPECT}' (or leave it out)" if self.dataset in HD_KINDS else ", ".join(ASPECTS)
            raise ConfigError(f"{where}.aspect: {self.dataset} has no aspect '{self.aspect}'; use {allowed}")


@dataclass
class TransferCfg:
    """Cross-dataset / cross-aspect evaluation (notebook 07_transfer): every run of the invocation,
    tested on every dataset of the profile plus `targets` (test-only datasets, never trained on)."""
    targets: list[DatasetRef] = field(default_factory=list)
    # experiment names to transfer; empty: all of the invocation's
    experiments: list[str] = field(default_factory=list)


@dataclass
class ProtocolCfg:
    seed: int = setting(0, ge=0)                       # split seed: changes the training set
    n_splits: int = setting(10, ge=1, identity=False)  # Monte Carlo query/gallery draws


@dataclass
class BackboneCfg:
    # any open_clip model name ("ViT-B-16", "RN50", "ViT-L-14", ...) or a tiny test model
    name: str = "tiny-vit"
    # None: random init (flagged everywhere); "openai"; another open_clip pretrained tag (offline
    # HF cache); a weights file; "local-dir:/folder"
    weights: Optional[str] = None
    # QuickGELU is what OpenAI's weights were trained with; auto = on for OpenAI weights
    quick_gelu: Literal["auto", True, False] = "auto"
    # ResNet only: 1 removes the stride of layer4 (CLIP-ReID's "last stride 1": 14x14 at 224)
    last_stride: Literal[1, 2] = 2
    # ViT only: accept an image size that is not a multiple of the patch size (the pixels past the
    # last whole patch are ignored); otherwise such a size is an error
    crop: bool = setting(False, identity=False)


@dataclass
class Profile:
    """A whole run of the workbook: which data, which experiments, which notebooks."""
    name: str = "demo"
    description: str = ""
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:1" ...
    data: DataCfg = field(default_factory=DataCfg)
    datasets: list[DatasetRef] = field(default_factory=lambda: [DatasetRef()])
    protocol: ProtocolCfg = field(default_factory=ProtocolCfg)
    transfer: TransferCfg = field(default_factory=TransferCfg)
    backbones: list[BackboneCfg] = field(default_factory=list)  # the zero-shot models of "stage1"
    # "stage1" (zero-shot, one per backbone) and method configs, e.g. "clip_reid/stage2_vitb16"
    experiments: list[str] = field(default_factory=list)
    # experiment overrides in the `-p` form: "<experiment>.<key>=value" or "*.<key>=value"
    overrides: list[str] = field(default_factory=list)
    notebooks: list[str] = field(default_factory=list)
    output_dir: str = ""  # "" -> outputs/<name>
    resume: bool = False   # continue unfinished runs (same hash) from their last checkpoint
    retrain: bool = False  # train again even where a finished run exists (a new run, new hash)
    # runs whose checkpoints start a new run with the settings as configured now (--resume-from)
    resume_from: list[str] = field(default_factory=list)
    keep_checkpoint: bool = False  # keep checkpoint.pt (with optimiser state) of finished seeds
    # how long a writer waits for a run folder that another live process writes (parallel jobs
    # whose profiles share an experiment, e.g. stage1); 0: stop at once, naming the holder
    lock_wait_s: float = setting(0.0, ge=0)
    # finished weights are stored in fp16 if no L2-normalised feature moves by more than this; 0: fp32
    fp16_tolerance: float = setting(1e-3, ge=0)
    cli_overrides: list[str] = setting(factory=list, internal=True)  # experiment `-p` items

    def check(self, where: str) -> None:
        if name_problem(self.name):
            raise ConfigError(f"{where}.name: {name_problem(self.name)}")
        if self.resume and self.retrain:
            raise ConfigError(f"{where}.retrain: cannot be combined with resume (--resume continues a run, "
                              "--retrain starts a new one beside it); give one of them")


# --------------------------------------------------------------------------- building

def check_increasing(values: Sequence[Any], where: str) -> None:
    """Schedule milestones and the like: strictly in order, or a ConfigError naming the key."""
    if sorted(values) != list(values):
        raise ConfigError(f"{where}: must be increasing, got {list(values)}")


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _check_range(value: Any, meta: dict, where: str) -> None:
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_range(v, meta, f"{where}[{i}]")
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if "ge" in meta and value < meta["ge"]:
        raise ConfigError(f"{where}: must be >= {meta['ge']}, got {value}")
    if "gt" in meta and value <= meta["gt"]:
        raise ConfigError(f"{where}: must be > {meta['gt']}, got {value}")
    if "le" in meta and value > meta["le"]:
        raise ConfigError(f"{where}: must be <= {meta['le']}, got {value}")


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
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed or type(value) not in {type(a) for a in allowed}:
            raise ConfigError(f"{where}: must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, vt = typing.get_args(tp) or (str, Any)
        return {str(k): _convert(v, vt, f"{where}.{k}") for k, v in value.items()}
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
    """Build dataclass `cls` from a mapping: unknown keys, wrong types and ranges are errors."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    known = sorted(n for n, f in fields.items() if not f.metadata.get("internal"))
    for key in data:
        if key not in fields or fields[key].metadata.get("internal"):
            raise ConfigError(f"{where}: unknown key '{key}' (known keys: {', '.join(known)}); "
                              "fix the spelling or remove it")
    kwargs = {}
    for k, v in data.items():
        kwargs[k] = _convert(v, hints[k], f"{where}.{k}")
        _check_range(kwargs[k], fields[k].metadata, f"{where}.{k}")
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if callable(check):
        check(where)
    return obj


def to_dict(obj: Any) -> Any:
    """Plain-data view of a config (for run records and checkpoints)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not f.metadata.get("internal")}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def identity_dict(obj: Any) -> Any:
    """`to_dict` without the settings that cannot change the trained weights (for run hashes)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: identity_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if f.metadata.get("identity", True) and not f.metadata.get("internal")}
    if isinstance(obj, (list, tuple)):
        return [identity_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: identity_dict(v) for k, v in obj.items()}
    return obj


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1} (for tables of differing keys)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_diff(a: dict, b: dict) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two plain-data configs: key -> (a, b)."""
    fa, fb = flatten(a), flatten(b)
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}


# --------------------------------------------------------------------------- overrides

@dataclass(frozen=True)
class Override:
    """`target.key=value`: target is '' (the profile), '*' (every experiment) or an experiment."""
    target: str
    key: str
    value: Any
    source: str  # what the user wrote, for error messages: "-p 'x.y=1'" or "profiles/demo.yaml"


def parse_override(item: str, source: str | None = None) -> tuple[str, Any, str]:
    """'protocol.n_splits=3' -> ('protocol.n_splits', 3, source); the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override '{item}': expected key=value, e.g. protocol.n_splits=3 "
                          "or demo_tiny_vit.finetune.lr=1e-3")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(f"override '{item}': the value is not valid YAML") from None
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override '{item}': empty key part")
    return key, value, source or f"-p '{item}'"


def merge_into(tree: dict, dotted: str, value: Any) -> dict:
    """Set `dotted` in a nested dict, merging mappings deeply: no existing key is dropped."""
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    last = parts[-1]
    if isinstance(value, dict) and isinstance(node.get(last), dict):
        for k, v in value.items():
            merge_into(node[last], str(k), v)
    else:
        node[last] = value
    return tree


def parse_overrides(items: Sequence[str] | dict | None) -> dict:
    """`["protocol.n_splits=3", "device=cpu"]` -> nested dict, merged in order."""
    tree: dict = {}
    if not items:
        return tree
    pairs = items.items() if isinstance(items, dict) else (parse_override(i)[:2] for i in items)
    for key, value in pairs:
        merge_into(tree, key, value)
    return tree


# --------------------------------------------------------------------------- files

def resolve_config_path(name_or_path: str | Path, kind: str) -> Path:
    """A bare name ('demo') means configs/<kind>/<name>.yaml; anything ending .yaml is a path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if p.is_absolute():
            return p
        return Path.cwd() / p if (Path.cwd() / p).exists() else REPO_ROOT / p
    candidate = CONFIG_DIR / kind / f"{name_or_path}.yaml"
    if not candidate.exists():
        available = sorted(q.stem for q in (CONFIG_DIR / kind).glob("*.yaml"))
        raise ConfigError(f"no {kind} config named '{name_or_path}' in {display_path(candidate.parent)} "
                          f"(available: {', '.join(available) or 'none'})")
    return candidate


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{display_path(path)}: not valid YAML{at}; fix the file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{display_path(path)}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{display_path(path)}: expected a mapping at the top level")
    return data


PROFILE_KEYS = frozenset(f.name for f in dataclasses.fields(Profile) if not f.metadata.get("internal"))


def load_profile(name_or_path: str | Path, overrides: Sequence[str] | None = None) -> Profile:
    """The profile with `-p` items applied: profile keys here, experiment keys kept for later.

    An item whose first part is a profile key (`protocol.n_splits=3`) changes the profile; any
    other (`demo_tiny_vit.finetune.lr=1e-3`, `'*.seeds=[0]'`) is an experiment override, checked
    against the experiments when they are resolved.
    """
    path = resolve_config_path(name_or_path, "profiles")
    where = display_path(path)
    data = load_yaml(path)
    prof = build(Profile, data, where)  # the file alone: its errors name the file
    experiment_items = []
    for item in overrides or []:
        key, value, source = parse_override(item)
        if key.split(".")[0] not in PROFILE_KEYS:
            experiment_items.append(item)
            continue
        trial = merge_into(copy.deepcopy(data), key, value)
        try:
            prof = build(Profile, trial, where)
        except ConfigError as e:  # name the override, not the file
            raise ConfigError(f"{source}: {str(e).removeprefix(where + '.')}") from None
        data = trial
    prof.cli_overrides = experiment_items
    return prof


def display_path(p: str | Path) -> str:
    """Repository-relative when inside the repository: reports carry no machine-specific paths."""
    p = Path(p).resolve()
    return str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else str(p)


def repo_path(p: str | Path) -> Path:
    """Config paths are relative to the repository root, so a run does not depend on the cwd."""
    p = Path(p)
    return p if p.is_absolute() else REPO_ROOT / p
