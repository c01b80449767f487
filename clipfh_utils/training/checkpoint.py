"""Atomic checkpoints: written to a temp file and renamed, so an interrupted save never
replaces the last good checkpoint with a broken one."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_path


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


class CheckpointError(RuntimeError):
    """A checkpoint or weights file that cannot be read."""


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no checkpoint to resume from; run without --resume")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated or corrupt: name the file, say what to do
        raise CheckpointError(f"{path}: cannot read the checkpoint ({type(e).__name__}); it is "
                              "damaged: delete it to train this seed from scratch") from None


def rng_state(*generators: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "generators": [g.get_state() for g in generators]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], *generators: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    for g, s in zip(generators, state["generators"]):
        g.set_state(s)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
