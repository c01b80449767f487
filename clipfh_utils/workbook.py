"""The run context every notebook opens first: profile, output folder, device, dataset.

`open_run("demo")` in JupyterLab and papermill's absolute `run_dir` in batch runs give the same
object, so a notebook holds no path or device logic of its own.
"""
from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .atomic import atomic_write_json
from .config import Profile, load_profile, repo_path, to_dict
from .dataset import HandDataset, load_protocol, load_rows, prepare_dataset
from .image_cache import check_images
from .models import ClipModel, resolve_device
from .protocol import Protocol, SplitRow


@dataclass
class Run:
    profile: Profile
    run_dir: Path
    device: torch.device
    dataset: HandDataset
    _protocol: Protocol | None = field(default=None, repr=False)
    _images: dict = field(default_factory=dict, repr=False)

    def protocol(self) -> Protocol:
        if self._protocol is None:
            p = self.profile.protocol
            self._protocol = load_protocol(self.dataset, p.aspect, p.seed, p.n_splits)
        return self._protocol

    def images(self, rows: list[SplitRow], size_hw: tuple[int, int]) -> tuple[torch.Tensor, dict[str, int]]:
        """uint8 images of `rows` (decode cache on disk, shared in memory within the run)."""
        key = (tuple(r.image_name for r in rows), tuple(size_hw))
        if key not in self._images:
            self._images[key] = load_rows(self.dataset, rows, size_hw)
        return self._images[key]

    def require_images(self) -> None:
        """Fail before any model is loaded if an image of the protocol is missing (all listed)."""
        proto = self.protocol()
        names = dict.fromkeys(r.image_name for r in proto.train + proto.val + proto.eval_rows())
        check_images(self.dataset.images_dir, list(names))

    def provenance(self, clip: ClipModel | None = None) -> dict:
        """What produced a number: goes into every metrics file."""
        info = {"data": self.dataset.description, "real_data": self.dataset.is_real,
                "aspect": self.profile.protocol.aspect, "split_seed": self.profile.protocol.seed,
                "n_splits": self.profile.protocol.n_splits, "profile": self.profile.name,
                "device": str(self.device)}
        if clip is not None:
            info.update({"weights": clip.weights, "pretrained": clip.pretrained,
                         "backbone": clip.name})
        return info

    def banner(self) -> str:
        """Markdown header for reports: the data and whether numbers mean anything for hands."""
        lines = [f"**Profile** `{self.profile.name}` · **data** {self.dataset.description} · "
                 f"**aspect** {self.profile.protocol.aspect} · **device** `{self.device}`"]
        untrained = [b.name for b in self.profile.backbones if not b.weights]
        if not self.dataset.is_real or untrained:
            lines.append("> **Not a hand-identification result.** "
                         + ("The images are synthetic. " if not self.dataset.is_real else "")
                         + (f"Backbones with random weights: {', '.join(untrained)}. "
                            if untrained else "")
                         + "These numbers only show that the pipeline runs end to end.")
        return "\n\n".join(lines)

    def stage_dir(self, *parts: str) -> Path:
        d = self.run_dir.joinpath(*parts)
        d.mkdir(parents=True, exist_ok=True)
        return d


def open_run(profile: str | Path = "demo", run_dir: str | Path = "",
             overrides: list[str] | dict | None = None) -> Run:
    """Load the profile, prepare its dataset and output folder; record what was used."""
    prof = load_profile(profile, overrides)
    out = Path(run_dir) if run_dir else repo_path(prof.output_dir or f"outputs/{prof.name}")
    out.mkdir(parents=True, exist_ok=True)
    run = Run(prof, out, resolve_device(prof.device), prepare_dataset(prof))
    info_path = out / "run_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    info.update({"profile": to_dict(prof), "data": run.dataset.description,
                 "real_data": run.dataset.is_real, "device": str(run.device),
                 "torch": torch.__version__, "python": platform.python_version()})
    atomic_write_json(info_path, info)
    return run
