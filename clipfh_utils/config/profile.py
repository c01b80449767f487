"""The schemas shared by every method (profile, data, protocol, backbone) and `load_profile`, which
applies `-p` items to a profile file (a method's own schema lives next to the method)."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Sequence

from .evaluation import EvaluationCfg
from .files import display_path, load_yaml, resolve_config_path
from .overrides import merge_into, parse_override
from .validation import ConfigError, build, setting

ASPECTS: tuple[str, ...] = ("dorsal right", "dorsal left", "palmar right", "palmar left")
HD_KINDS: tuple[str, ...] = ("hd", "hd-synthetic")  # the HD dataset has one aspect: "dorsal"
HD_ASPECT = "dorsal"


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
    evaluation: EvaluationCfg = field(default_factory=EvaluationCfg)
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
        if self.resume and self.retrain:
            raise ConfigError(f"{where}.retrain: cannot be combined with resume (--resume continues a run, "
                              "--retrain starts a new one beside it); give one of them")


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
