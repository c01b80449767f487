"""What a method is: a config schema, a model with an `embed`, and (if it trains) a training plan.

A method is one folder under `methods/` (or any importable module) exposing `METHOD`, an instance
of a `Method` subclass. The pipeline does everything else the same way for every method: it
loads the backbone, builds the model, hands the plan's phases to the shared `Trainer`, embeds the
test images with each of the method's embedders and scores them with the one evaluator.
See docs/methods.md "How to add a method".
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Literal, Optional, Protocol

import torch
from torch import nn

from ..backbones.loading import ClipModel, input_size_problem, load_clip
from ..backbones.weights import weights_sha256 as clip_weights_sha256
from ..config import BackboneCfg, ConfigError, setting
from ..training.data import TrainData
from ..training.loop import Phase


@dataclass
class ClipBackboneCfg(BackboneCfg):
    """The backbone of a method that fine-tunes CLIP (CLIP-ReID, PromptSG): BackboneCfg plus what
    changes the weights such a run trains. A key of its own class so that the runs of the other
    methods (zero-shot, the CNN baseline) keep their names."""
    # ResNet only, where the attnpool's position embedding is resized (another input size, or
    # last_stride 1): the interpolation of its grid. "bilinear" (align_corners=False): CLIP-ReID's
    # official code; "bicubic": this workbench's earlier choice
    attnpool_resize: Literal["bilinear", "bicubic"] = "bilinear"


@dataclass
class ExperimentCfg:
    """The keys every experiment config has; a method's config extends this class."""
    name: str = ""                       # the experiment's name: "<name>-<hash>" names its runs
    method: str = ""                     # registry key; defaults to the config's folder
    backbone: BackboneCfg = field(default_factory=BackboneCfg)
    image_size: Optional[tuple[int, int]] = setting(None, ge=16)  # (height, width); None: native
    seeds: list[int] = setting([0], ge=0, identity=False)  # each seed is trained inside one run
    amp: bool = True                     # bf16 autocast on CUDA (training and evaluation); fp32 on CPU
    compile: bool = setting(False, identity=False)
    compile_mode: Literal["default", "reduce-overhead", "max-autotune",
                          "max-autotune-no-cudagraphs"] = setting("default", identity=False)
    compile_optimizer: bool = setting(False, identity=False)  # also compile the optimiser step (CUDA)
    # epochs between resumable checkpoints (and always the last): a ViT-B/16 checkpoint with its
    # optimiser state is ~1.8 GB, longer to write than an epoch of hand training takes on a GPU
    checkpoint_every: int = setting(1, ge=1, identity=False)
    channels_last: bool = setting(False, identity=False)      # ResNet towers in NHWC layout on CUDA
    eval_batch_size: int = setting(256, ge=1, identity=False)
    flip_test: bool = setting(False, identity=False)  # average features of image and mirror image

    def check(self, where: str) -> None:
        if not self.seeds:
            raise ConfigError(f"{where}.seeds: give at least one seed, e.g. [0]")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"{where}.seeds: {self.seeds} repeats a seed")


class Backbone(Protocol):
    """What the pipeline reads of a method's pretrained model (a `ClipModel` by default): how to
    feed it (input size, normalisation) and where its weights came from (records, run hashes)."""
    name: str
    pretrained: bool
    weights: str
    weights_sha256: str | None
    quick_gelu: bool
    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def label(self) -> str: ...

    def record(self) -> dict: ...


@dataclass
class BuildContext:
    """What a method gets to build and train one seed."""
    clip: ClipModel               # the backbone as the method's `load_backbone` returned it (a
                                  # ClipModel unless the method brings another `Backbone`)
    device: torch.device
    seed: int
    generator: torch.Generator   # all training randomness (sampler draws excepted); checkpointed
    amp: bool


@dataclass
class TrainPlan:
    """A method's training for one seed: the objects to checkpoint and the phases to run."""
    state: dict[str, Any]        # name -> object with state_dict()/load_state_dict()
    phases: Iterator[Phase]      # built lazily: a phase may depend on the previous one's result


class Method:
    """Subclass, set the class attributes, implement `build` (and `plan` if it trains)."""
    name: ClassVar[str]                      # registry key and configs/<name>/ folder
    stage: ClassVar[str]                     # report grouping: "stage1" | "stage2" | "stage3" | "baseline"
    title: ClassVar[str]                     # human name: "CLIP-ReID"
    config_cls: ClassVar[type[ExperimentCfg]] = ExperimentCfg
    loss_terms: ClassVar[tuple[str, ...]] = ()  # registry names its configs may weight
    trains: ClassVar[bool] = True
    p_key: ClassVar[str | None] = None       # the config key of identities per P×K batch, e.g. "finetune.p"

    def validate(self, cfg: ExperimentCfg, where: str) -> None:
        """Checks beyond the schema (e.g. loss weights against `loss_terms`)."""

    def check_data(self, cfg: ExperimentCfg, n_classes: int) -> dict[str, str]:
        """Settings that do not fit the dataset, as {dotted key: problem and fix}: here, more
        identities per P×K batch (the config key `p_key`) than the training set has. Checked
        before anything trains; a method with other limits extends it."""
        if self.p_key is None:
            return {}
        p = functools.reduce(getattr, self.p_key.split("."), cfg)
        if p > n_classes:
            return {self.p_key: f"{p} identities per batch, but the training set has only {n_classes} "
                                f"identities; set {self.p_key} <= {n_classes}"}
        return {}

    def load_backbone(self, cfg: ExperimentCfg, device: torch.device) -> Backbone:
        """The pretrained model this method builds on, named by `cfg.backbone`: CLIP by default.
        A method that brings its own (a torchvision CNN) overrides this; `build` gets it as ctx.clip."""
        b = cfg.backbone
        return load_clip(b.name, b.weights, device, cfg.image_size, quick_gelu=b.quick_gelu,
                         last_stride=b.last_stride, crop=b.crop,
                         attnpool_resize=getattr(b, "attnpool_resize", "bilinear"))

    def input_problem(self, cfg: ExperimentCfg) -> tuple[str, str] | None:
        """(dotted key, problem) when the backbone is unknown or cannot take the image size, without
        loading it (checked when the experiment is resolved). Override with `load_backbone`."""
        problem = input_size_problem(cfg.backbone.name, cfg.image_size, cfg.backbone.crop)
        if problem is None:
            return None
        return ("backbone.name" if problem.startswith("unknown backbone") else "image_size"), problem

    def weights_sha256(self, cfg: ExperimentCfg) -> str | None:
        """The digest of the weights `load_backbone` would load (None: random init), without loading
        anything: part of every run's identity. Override together with `load_backbone`."""
        return clip_weights_sha256(cfg.backbone.name, cfg.backbone.weights)

    def build(self, cfg: ExperimentCfg, ctx: BuildContext, n_classes: int) -> nn.Module:
        raise NotImplementedError

    def plan(self, cfg: ExperimentCfg, model: nn.Module, data: TrainData, ctx: BuildContext) -> TrainPlan:
        raise NotImplementedError(f"method {self.name} does not train")

    def embedders(self, cfg: ExperimentCfg, model: nn.Module) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        """Inference modes: name -> normalised image batch to features. '' is the default mode."""
        return {"": model.embed}

    def model_state(self, cfg: ExperimentCfg, model: nn.Module) -> Any:
        """The model as checkpointed (state_dict/load_state_dict): `TrainPlan.state["model"]` and
        what a finished run's weights are loaded into. Leave out frozen pretrained weights."""
        return model
