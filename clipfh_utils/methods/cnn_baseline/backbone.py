"""torchvision ResNets for the CNN baseline, built and loaded without the network.

`weights` is None (random init, flagged in every record), a torchvision weights tag of the
architecture ("IMAGENET1K_V1", "IMAGENET1K_V2", "DEFAULT"), or the path of a state-dict file. A
tag is looked up as torchvision names its file (`resnet50-0676ba61.pth` for IMAGENET1K_V1) in
weights/, $CLIPFH_WEIGHTS_DIR and torchvision's own cache ($TORCH_HOME/hub/checkpoints), and the
file's sha256 must start with the prefix in its name (torch.hub's own check). Inputs are
normalised with the ImageNet statistics the weights were trained with.

"last stride 1" (Luo et al. 2019) removes the stride of layer4, doubling its resolution.
"tiny-resnet" (random init only) is torchvision's ResNet-18 design with one block per stage at a
quarter of the width, for tests and the CPU demo.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torchvision import models
from torchvision.models.resnet import BasicBlock, ResNet

from ...backbones.weights import RANDOM, WeightsMismatchError, WeightsNotFoundError, check_fits
from ...config import REPO_ROOT, display_path
from ...provenance import file_sha256

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ARCHS: dict[str, tuple[Callable[..., ResNet], type]] = {
    "resnet18": (models.resnet18, models.ResNet18_Weights),
    "resnet34": (models.resnet34, models.ResNet34_Weights),
    "resnet50": (models.resnet50, models.ResNet50_Weights),
    "resnet101": (models.resnet101, models.ResNet101_Weights),
}
TINY = "tiny-resnet"
TINY_WIDTH = 16


@dataclass
class CnnBackbone:
    """A ResNet trunk (its fc replaced by Identity: forward gives the pooled feature) + its record."""
    model: ResNet
    name: str
    pretrained: bool
    weights: str                 # the tag and file, the file, or RANDOM
    weights_sha256: str | None
    image_size: tuple[int, int]
    last_stride: int
    feature_dim: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    quick_gelu: bool = False     # a CLIP notion; recorded as False so every record has the key
    kind: str = "cnn"

    @property
    def label(self) -> str:
        return self.name if self.pretrained else f"{self.name} [random init]"

    def record(self) -> dict:
        return {"backbone": self.name, "arch": f"torchvision {self.name}", "weights": self.weights,
                "weights_sha256": self.weights_sha256, "pretrained": self.pretrained,
                "image_size": list(self.image_size), "last_stride": self.last_stride,
                "mean": list(self.mean), "std": list(self.std)}


def _tiny_resnet(width: int = TINY_WIDTH) -> ResNet:
    """torchvision's ResNet, BasicBlock x [1, 1, 1, 1], widths w, 2w, 4w, 8w (torchvision's init)."""
    m = ResNet(BasicBlock, [1, 1, 1, 1])
    m.inplanes = width
    m.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    m.bn1 = nn.BatchNorm2d(width)
    m.layer1 = m._make_layer(BasicBlock, width, 1)
    m.layer2 = m._make_layer(BasicBlock, width * 2, 1, stride=2)
    m.layer3 = m._make_layer(BasicBlock, width * 4, 1, stride=2)
    m.layer4 = m._make_layer(BasicBlock, width * 8, 1, stride=2)
    for mod in m.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(mod, nn.BatchNorm2d):
            nn.init.ones_(mod.weight)
            nn.init.zeros_(mod.bias)
    return m


def set_last_stride(model: ResNet, stride: int) -> None:
    """Stride 1 in layer4's first block (its strided conv and its shortcut): layer4 keeps layer3's
    resolution (14x14 at 224 for ResNet-50 instead of 7x7). Weights are untouched."""
    if stride == 2:
        return
    for mod in model.layer4[0].modules():
        if isinstance(mod, nn.Conv2d) and mod.stride == (2, 2):
            mod.stride = (1, 1)


def _weights_dirs() -> list[Path]:
    dirs = [REPO_ROOT / "weights", Path(torch.hub.get_dir()) / "checkpoints"]
    if os.environ.get("CLIPFH_WEIGHTS_DIR"):
        dirs.insert(0, Path(os.environ["CLIPFH_WEIGHTS_DIR"]))
    return dirs


def weights_file_name(name: str, tag: str) -> tuple[str, str, str]:
    """(resolved tag, file name, download url) of a torchvision weights tag: IMAGENET1K_V1 of
    resnet50 -> ("IMAGENET1K_V1", "resnet50-0676ba61.pth", "https://download.pytorch.org/...")."""
    enum = ARCHS[name][1]
    try:
        w = enum[tag]
    except KeyError:
        raise WeightsNotFoundError(f"'{tag}': neither a file nor a torchvision weights tag of {name} "
                                   f"({', '.join(enum.__members__)})") from None
    return w.name, w.url.rsplit("/", 1)[-1], w.url


def _find_tagged(name: str, tag: str) -> tuple[Path, str]:
    resolved, fname, url = weights_file_name(name, tag)
    for d in _weights_dirs():
        if (d / fname).is_file():
            path = d / fname
            break
    else:
        raise WeightsNotFoundError(
            f"No torchvision weights {name} {resolved} found offline: put {fname} (downloaded from {url}) in "
            f"{display_path(_weights_dirs()[-1])} (torchvision's cache, $TORCH_HOME/hub/checkpoints) or in "
            f"{display_path(REPO_ROOT / 'weights')}, or set the backbone's weights to the file's path")
    prefix = fname.rsplit("-", 1)[-1].split(".")[0]
    sha = file_sha256(path)
    if not sha.startswith(prefix):
        raise WeightsMismatchError(f"{display_path(path)}: sha256 starts with {sha[:8]}, torchvision's {name} "
                                   f"{resolved} file with {prefix}: damaged or another file; download it "
                                   f"again from {url}")
    return path, f"{resolved} ({display_path(path)})"


def describe_resnet(sd: dict[str, torch.Tensor]) -> str:
    """What a state dict looks like: 'torchvision resnet50', 'a ResNet with blocks [2, 1, 1, 1]'."""
    blocks = [len({k.split(".")[1] for k in sd if k.startswith(f"layer{i}.")}) for i in range(1, 5)]
    if not any(blocks):
        return "not a torchvision ResNet state dict"
    bottleneck = any(".conv3." in k for k in sd)
    known = {((2, 2, 2, 2), False): "resnet18", ((3, 4, 6, 3), False): "resnet34",
             ((3, 4, 6, 3), True): "resnet50", ((3, 4, 23, 3), True): "resnet101"}
    return f"torchvision {known[tuple(blocks), bottleneck]}" if (tuple(blocks), bottleneck) in known \
        else f"a ResNet with blocks {blocks}"


def _load_state(model: ResNet, path: Path, name: str) -> None:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsMismatchError(f"{display_path(path)}: not a readable state-dict file ({type(e).__name__}); "
                                   f"replace it with torchvision's {name} weights") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsMismatchError(f"{display_path(path)}: no tensor mapping inside; replace it with "
                                   f"torchvision's {name} weights")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    check_fits(sd, model, f"torchvision {name}", display_path(path), describe_resnet, optional=("fc.",))
    model.load_state_dict(sd, strict=False)


def weights_path(name: str, weights: str | None) -> Path | None:
    """The file `load_resnet` would read for `weights` (None: random init), checked, not loaded."""
    if weights in (None, "none", "random"):
        return None
    if name == TINY:
        raise WeightsNotFoundError(f"{TINY} has no pretrained weights; set its weights to null")
    path = Path(weights)
    if path.is_file():
        return path
    if path.suffix in (".pth", ".pt") or "/" in weights:
        raise WeightsNotFoundError(f"{weights}: weights file not found; give the path of a torchvision "
                                   f"{name} state dict or a weights tag such as IMAGENET1K_V1")
    return _find_tagged(name, weights)[0]


def load_resnet(name: str, weights: str | None = None, device: str | torch.device = "cpu",
                image_size: tuple[int, int] | None = None, last_stride: int = 2, seed: int = 0) -> CnnBackbone:
    """A torchvision ResNet trunk in eval mode on `device`; see the module docstring for `weights`.
    Random init draws from `seed` without touching the global RNG."""
    if name not in ARCHS and name != TINY:
        raise ValueError(f"unknown CNN backbone '{name}' (known: {', '.join([*ARCHS, TINY])})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _tiny_resnet() if name == TINY else ARCHS[name][0](weights=None)
    source, sha = RANDOM, None
    path = weights_path(name, weights)
    if path is not None:
        source = display_path(path) if Path(weights).is_file() else _find_tagged(name, weights)[1]
        _load_state(model, path, name)
        sha = file_sha256(path)
    dim = [m for m in model.layer4.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features
    model.fc = nn.Identity()
    set_last_stride(model, last_stride)
    size = tuple(image_size) if image_size is not None else (224, 224)
    return CnnBackbone(model.to(device).eval(), name, sha is not None, source, sha, size, last_stride, dim)
