"""Atomic checkpoints: written to a temp file and renamed, so an interrupted save (or a full
disk) never replaces the last good checkpoint with a broken one; a file that cannot be read is an
error naming its path."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_path


class CheckpointError(RuntimeError):
    """A checkpoint or weights file that cannot be read, or that does not fit the run."""


def state_bytes(obj: Any) -> int:
    """Bytes of the tensors inside a (nested) state: what saving it will take on disk."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(state_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_bytes(v) for v in obj)
    return 0


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    with atomic_path(path, state_bytes(state)) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *, mmap: bool = False
                    ) -> dict[str, Any]:
    """A checkpoint's contents; `mmap=True` reads only its structure (tensors load when touched)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no checkpoint to resume from; run without --resume")
    try:
        return torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
    except Exception as e:  # truncated or corrupt: name the file, say what to do
        raise CheckpointError(f"{path}: cannot read the checkpoint ({type(e).__name__}); it is "
                              "damaged: delete it to train this seed from scratch") from None


def checkpoint_position(path: str | Path) -> dict[str, Any]:
    """Where a checkpoint stands (seed, phase, phase_index, epoch), without loading its tensors."""
    ckpt = load_checkpoint(path, mmap=True)
    try:
        return {k: ckpt[k] for k in ("seed", "phase", "phase_index", "epoch")}
    except (KeyError, TypeError):
        raise CheckpointError(f"{path}: not a training checkpoint of this workbench (no phase/epoch "
                              "inside); delete it to train this seed from scratch") from None


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
