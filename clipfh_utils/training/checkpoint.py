"""Atomic checkpoints: written to a temp file and renamed, so an interrupted save (or a full
disk) never replaces the last good checkpoint with a broken one; a file that cannot be read is an
error naming its path.

Loading executes no code: run folders are shared (a cluster, a lab's file server, a colleague's
results), and a pickle can run anything while it is read. Every checkpoint.pt and weights.pt is
read with torch's tensors-only unpickler (`weights_only=True`), which builds tensors, numbers,
strings and containers and refuses any other object before creating it; everything this
workbench saves (model, optimiser, sampler and RNG states, counters) is of those kinds.
"""
from __future__ import annotations

import pickle
import warnings
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
        with warnings.catch_warnings():  # torch warns about pickle protocols it then refuses anyway
            warnings.simplefilter("ignore", UserWarning)
            saved = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: refused: it holds objects other than tensors and plain values "
                              "(reading them could run code), so this workbench did not write it; "
                              "nothing in it was run: delete it (or train a new run beside it with "
                              "--retrain)") from None
    except Exception as e:  # truncated or corrupt: name the file, say what to do
        raise CheckpointError(f"{path}: cannot read the checkpoint ({type(e).__name__}); it is "
                              "damaged: delete it to train this seed from scratch") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("states"), dict):
        raise CheckpointError(f"{path}: not a checkpoint of this workbench (no 'states' inside); "
                              "delete it to train this seed from scratch")
    return saved


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
