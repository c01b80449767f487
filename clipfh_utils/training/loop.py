"""The one training loop. Methods hand it phases; it knows nothing about any method.

A `Phase` is one stretch of training: an optimiser with named parameter groups, a per-epoch
learning-rate factor, the batches of an epoch, how a batch becomes the loss's inputs (indexing,
augmentation: eager code), and the loss itself (the unit `torch.compile` sees) returning the
weighted total and the named terms. CLIP-ReID is two phases (prompts, then fine-tuning), PromptSG
one; a new method writes its phases and reuses everything below.

What the loop does for every phase, read top to bottom in `Trainer._run_phase`:
autocast, optional `torch.compile`, per-step and per-epoch JSON-lines logs and TensorBoard event
files (training/events.py), an atomic checkpoint
after every epoch (weights, optimiser, sampler, RNG: `resume` continues bit for bit; the optimiser's
group settings, such as its learning rates, come from the config as given now), a stop on
a NaN/inf loss that names the phase, epoch, step and terms, the validation monitor (training
identities only), a progress bar, and the final weights and a timing summary at the end.

Speed: loss terms go into a device buffer and the host reads them once per epoch (for the log and
the NaN check), so no step waits for the GPU.
"""
from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from ..atomic import atomic_path, atomic_write_json
from ..backbones.features import autocast_for
from ..runlog import duration, run_logger
from .checkpoint import CheckpointError, load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from .events import EventLog
from .schedules import set_lr


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN/inf; the run stops and the last good checkpoint is kept."""


@dataclass
class Phase:
    """One stretch of training, built by a method and run by the `Trainer`."""
    name: str                                            # "prompt", "finetune", ... (log + checkpoint)
    epochs: int
    optimizer: torch.optim.Optimizer                     # groups carry "name" and "base_lr"
    lr_factor: Callable[[int], float]                    # 1-based epoch -> factor on every base_lr
    batches: Callable[[], Sequence[torch.Tensor]]        # one epoch: index tensors on the device
    inputs: Callable[[torch.Tensor], tuple]              # batch indices -> the loss's inputs (eager)
    loss: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]  # -> (total, named terms)
    terms: Sequence[str]                                 # the loss-registry names `loss` returns
    loss_args: tuple = ()                                # passed before the inputs: loss(*loss_args, *inputs)
    train_modules: Sequence[nn.Module] = ()              # .train() during the phase
    eval_modules: Sequence[nn.Module] = ()               # .eval() during the phase (frozen BN stats)
    start: Callable[[], None] | None = None              # once, before the first epoch that runs
    monitor: Callable[[], dict[str, float]] | None = None
    monitor_every: int = 0
    compile: bool = False

    def set_modes(self) -> None:
        """Train and eval mode of the phase's modules, as each of its epochs starts."""
        for m in self.train_modules:
            m.train()
        for m in self.eval_modules:
            m.eval()

    def objective(self, *inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss on one batch's inputs, uncompiled (tests, debugging)."""
        return self.loss(*self.loss_args, *inputs)


class PartialState:
    """A module's state without the frozen pretrained weights (they come back from the backbone file)."""

    def __init__(self, module: nn.Module, exclude: Sequence[str] = ()):
        self.module, self.exclude = module, tuple(exclude)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.module.state_dict().items() if not k.startswith(self.exclude)}

    def load_state_dict(self, sd: Mapping[str, torch.Tensor]) -> None:
        missing, unexpected = self.module.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.startswith(self.exclude)]
        if missing or unexpected:
            raise RuntimeError(f"state does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")


class JsonlLog:
    """One JSON record per line. A fresh run starts empty (no appending across runs); a resumed
    run keeps only the records up to the point it resumes from."""

    def __init__(self, path: Path, keep_until: tuple[int, int] | None):
        self.path = path
        kept = []
        if keep_until is not None and path.exists():
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by the interruption
                    continue
                if (rec["phase_index"], rec["epoch"]) <= keep_until:
                    kept.append(line)
        with atomic_path(path) as tmp:
            tmp.write_text("".join(k + "\n" for k in kept))

    def write(self, records: list[dict]) -> None:
        with open(self.path, "a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))


@dataclass
class TrainSummary:
    seconds: float = 0.0
    images: int = 0
    steps: int = 0                       # optimiser steps of every phase: TensorBoard's step axis
    phases: dict[str, dict] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def optimizer_step(loss_fn: Callable, opt: torch.optim.Optimizer, inputs: tuple, terms: Sequence[str],
                   device: torch.device, amp: bool, step: Callable[[], Any] | None = None) -> torch.Tensor:
    """One step: forward + loss under autocast, backward, update (`step`, default `opt.step`).
    Returns [total, *terms], detached."""
    with autocast_for(device, amp):
        total, parts = loss_fn(*inputs)
    opt.zero_grad(set_to_none=True)
    total.backward()
    (step or opt.step)()
    return torch.stack([total, *(parts[n] for n in terms)]).detach().float()


def phase_step(phase: Phase, device: torch.device, amp: bool, compile_mode: str = "default",
               compile_optimizer: bool = False) -> Callable[[tuple], torch.Tensor]:
    """`phase`'s training step, composed once for the loop and the benchmark alike: its loss
    (compiled on CUDA when the phase asks), its bound arguments, the optimiser update (compiled
    too with `compile_optimizer`). The step maps one batch's inputs to [total, *terms]."""
    loss_fn = phase.loss
    if phase.compile and device.type == "cuda":
        # dynamo caches per code object: later seeds and experiments of the same shapes reuse
        # the graphs (tests/test_clip_reid.py checks that no seed recompiles)
        loss_fn = torch.compile(loss_fn, mode=compile_mode)
    opt_step = torch.compile(phase.optimizer.step) if (phase.compile and compile_optimizer
                                                       and device.type == "cuda") else None
    if phase.loss_args:
        loss_fn = functools.partial(loss_fn, *phase.loss_args)

    def step(inputs: tuple) -> torch.Tensor:
        return optimizer_step(loss_fn, phase.optimizer, inputs, phase.terms, device, amp, opt_step)
    return step


def _bar(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc, leave=False)


class Trainer:
    """Runs a method's phases for one seed in `out_dir`: checkpoint.pt while training,
    weights.pt + summary.json when finished, log.jsonl (steps) and epochs.jsonl (epochs), TensorBoard
    event files (`config`, the resolved config, is their text at step 0)."""

    CHECKPOINT, WEIGHTS, SUMMARY = "checkpoint.pt", "weights.pt", "summary.json"

    def __init__(self, out_dir: str | Path, device: torch.device, state: Mapping[str, Any],
                 generator: torch.Generator, *, seed: int = 0, amp: bool = True,
                 compile_mode: str = "default", compile_optimizer: bool = False, resume: bool = False,
                 progress: bool = False,
                 keep_checkpoint: bool = False, checkpoint_every: int = 1,
                 on_epoch_end: Callable[[str, int], None] | None = None,
                 label: str = "", config: Mapping[str, Any] | None = None):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.device, self.state, self.g = device, dict(state), generator
        self.seed, self.amp = seed, amp and device.type == "cuda"
        self.compile_mode, self.compile_optimizer = compile_mode, compile_optimizer
        self.progress, self.keep_checkpoint, self.checkpoint_every = progress, keep_checkpoint, checkpoint_every
        self.on_epoch_end, self.label, self.config = on_epoch_end, label, config
        self.ckpt_path = self.out_dir / self.CHECKPOINT
        self.resumed = load_checkpoint(self.ckpt_path) if resume and self.ckpt_path.exists() else None
        if self.resumed is not None:
            if self.resumed["seed"] != seed:
                raise CheckpointError(f"{self.ckpt_path}: checkpoint is for seed {self.resumed['seed']}, not {seed} "
                                      "(a seed folder copied by hand?); delete it to train this seed from scratch")
            for name, obj in self.state.items():
                try:
                    obj.load_state_dict(self.resumed["states"][name])
                except (RuntimeError, KeyError, ValueError) as e:
                    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    raise CheckpointError(f"{self.ckpt_path}: its '{name}' state does not fit the model as now "
                                          f"configured ({first[:200]}); resume with the settings that shape "
                                          "the model unchanged, or train a new run") from None
            restore_rng_state(self.resumed["rng"], self.g)
        keep = (self.resumed["phase_index"], self.resumed["epoch"]) if self.resumed else None
        self.steps_log = JsonlLog(self.out_dir / "log.jsonl", keep)
        self.epochs_log = JsonlLog(self.out_dir / "epochs.jsonl", keep)
        self.summary = TrainSummary(**self.resumed["summary"]) if self.resumed else TrainSummary()
        self.log = run_logger()

    # ------------------------------------------------------------------ the loop

    def fit(self, phases: Iterable[Phase]) -> TrainSummary:
        """Run every phase in order (skipping those a resumed checkpoint already finished)."""
        done_index, done_epoch = ((self.resumed["phase_index"], self.resumed["epoch"])
                                  if self.resumed else (-1, 0))
        self.events = EventLog(self.out_dir, self.summary.steps if self.resumed else None, self.config)
        try:
            self._fit(phases, done_index, done_epoch)
        finally:
            self.events.close()
        self._finish()
        return self.summary

    def _fit(self, phases: Iterable[Phase], done_index: int, done_epoch: int) -> None:
        for index, phase in enumerate(phases):
            if index == done_index and done_epoch > phase.epochs:
                raise CheckpointError(
                    f"{self.ckpt_path}: the checkpoint is at epoch {done_epoch} of phase '{phase.name}' "
                    f"but the config asks for {phase.epochs}; resuming cannot shorten training: "
                    "train a new run, or ask for at least as many epochs")
            if index < done_index or (index == done_index and done_epoch >= phase.epochs):
                continue
            first = done_epoch + 1 if index == done_index else 1
            opt_state = self.resumed["optimizer"] if index == done_index else None
            self._run_phase(index, phase, first, opt_state)

    def _run_phase(self, index: int, phase: Phase, first_epoch: int, opt_state: dict | None) -> None:
        opt = phase.optimizer
        if opt_state is not None:
            load_optimizer_state(opt, opt_state, self.ckpt_path)
        if phase.start is not None and first_epoch <= phase.epochs:
            phase.start()
        train_step = phase_step(phase, self.device, self.amp, self.compile_mode, self.compile_optimizer)
        names = ["total", *phase.terms]
        group_names = [g.get("name", f"group{i}") for i, g in enumerate(opt.param_groups)]
        stats = self.summary.phases.setdefault(phase.name, {"seconds": 0.0, "images": 0, "epochs": 0})

        for epoch in _bar(range(first_epoch, phase.epochs + 1), self.progress, f"{self.label} {phase.name}"):
            t0 = time.perf_counter()
            lrs = set_lr(opt, phase.lr_factor(epoch))
            phase.set_modes()
            batches = phase.batches()
            terms = torch.zeros(len(batches), len(names), device=self.device)
            for step, idx in enumerate(batches):
                terms[step] = train_step(phase.inputs(idx))
            terms = terms.cpu()  # the one host sync of the epoch
            seconds = time.perf_counter() - t0
            self._check_finite(terms, names, phase.name, epoch)
            record = {"phase": phase.name, "phase_index": index, "epoch": epoch}
            lr_log = {f"lr_{n}": lr for n, lr in zip(group_names, lrs)}
            self.steps_log.write([{**record, "step": i, **dict(zip(names, map(float, t))), **lr_log}
                                  for i, t in enumerate(terms)])
            monitor = {}
            if phase.monitor is not None and phase.monitor_every and epoch % phase.monitor_every == 0:
                monitor = phase.monitor()
            n_images = sum(len(b) for b in batches)
            images_per_s = n_images / seconds if seconds else 0.0
            self.epochs_log.write([{**record, "steps": len(terms), **lr_log, "seconds": seconds,
                                    "images_per_s": images_per_s,
                                    **dict(zip(names, terms.mean(0).tolist())), **monitor}])
            self.events.epoch(self.summary.steps, names, terms.tolist(), dict(zip(group_names, lrs)),
                              images_per_s, monitor)
            self.summary.steps += len(terms)
            stats["seconds"] += seconds
            stats["images"] += n_images
            stats["epochs"] = epoch
            eta = stats["seconds"] / epoch * (phase.epochs - epoch)  # seconds: every epoch so far, resumed ones too
            self.log.info(f"{self.label} {phase.name} epoch {epoch}/{phase.epochs}: total "
                          f"{float(terms[:, 0].mean()):.4f}, {seconds:.1f} s, "
                          f"{images_per_s:.0f} img/s, phase ETA {duration(eta)}"
                          + "".join(f", {k} {v:.2f}" for k, v in monitor.items()))
            self.summary.seconds += seconds
            self.summary.images += n_images
            if epoch % self.checkpoint_every == 0 or epoch == phase.epochs:
                self._checkpoint(index, phase, epoch)

    # ------------------------------------------------------------------ bookkeeping

    def _check_finite(self, terms: torch.Tensor, names: list[str], phase: str, epoch: int) -> None:
        bad = (~torch.isfinite(terms)).any(1).nonzero()
        if len(bad):
            step = int(bad[0])
            values = ", ".join(f"{n}={v:.4g}" for n, v in zip(names, terms[step].tolist()))
            raise NonFiniteLossError(
                f"non-finite loss in phase '{phase}' at epoch {epoch} step {step}: {values}; the last good "
                f"checkpoint is {self.ckpt_path}: continue from it with a lower learning rate (or amp: "
                f"false) as a new run: --resume-from {self.out_dir.parent.name} -p <experiment>.<key>=<value>")

    def _states(self) -> dict[str, Any]:
        return {name: obj.state_dict() for name, obj in self.state.items()}

    def _checkpoint(self, index: int, phase: Phase, epoch: int) -> None:
        save_checkpoint(self.ckpt_path, {
            "seed": self.seed, "phase": phase.name, "phase_index": index, "epoch": epoch,
            "states": self._states(), "optimizer": phase.optimizer.state_dict(),
            "rng": rng_state(self.g), "summary": vars(self.summary)})
        if self.on_epoch_end is not None:
            self.on_epoch_end(phase.name, epoch)

    def _finish(self) -> None:
        save_checkpoint(self.out_dir / self.WEIGHTS, {"seed": self.seed, "states": self._states()})
        atomic_write_json(self.out_dir / self.SUMMARY, {"finished": True, "seed": self.seed,
                                                        **vars(self.summary),
                                                        "images_per_s": self.summary.images_per_s})
        if not self.keep_checkpoint and self.ckpt_path.exists():
            self.ckpt_path.unlink()


def load_optimizer_state(opt: torch.optim.Optimizer, saved: dict, where: Path) -> None:
    """Restore the moments and step counts of a checkpoint's optimiser, but keep every setting of
    the groups as configured now (base_lr, weight decay, betas...): a run resumed with a new
    learning rate really trains at the new rate."""
    configured = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    names = [g.get("name") for g in configured]
    saved_names = [g.get("name") for g in saved.get("param_groups", [])]
    if names != saved_names:
        raise CheckpointError(f"{where}: the optimiser's parameter groups {saved_names} do not match "
                              f"the groups configured now {names}; train a new run")
    try:
        opt.load_state_dict(saved)
    except ValueError as e:
        raise CheckpointError(f"{where}: the optimiser state does not fit ({e}); train a new run") from None
    for group, settings in zip(opt.param_groups, configured):
        group.update(settings)


def is_finished(seed_dir: str | Path) -> bool:
    seed_dir = Path(seed_dir)
    return (seed_dir / Trainer.WEIGHTS).exists() and (seed_dir / Trainer.SUMMARY).exists()


def load_weights(seed_dir: str | Path, state: Mapping[str, Any]) -> dict:
    """Load a finished seed's final weights into `state` (the same objects the Trainer saved)."""
    saved = load_checkpoint(Path(seed_dir) / Trainer.WEIGHTS)
    for name, obj in state.items():  # only the entries asked for (the model, not the sampler)
        obj.load_state_dict(saved["states"][name])
    return json.loads((Path(seed_dir) / Trainer.SUMMARY).read_text())


def load_log(seed_dir: str | Path, per: str = "step"):
    """The JSON-lines log as a DataFrame: one row per step, or per epoch (`per="epoch"`)."""
    import pandas as pd
    path = Path(seed_dir) / ("log.jsonl" if per == "step" else "epochs.jsonl")
    return pd.DataFrame([json.loads(x) for x in path.read_text().splitlines()])
