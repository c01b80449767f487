"""What a `run` may do with the run folder of an experiment: load it, continue it, or refuse.

Rules (docs/runs-and-faults.md "What happens when things go wrong"):
- a finished seed (weights.pt + summary.json) is loaded, never trained again;
- an unfinished seed (checkpoint.pt) is continued only with `--resume` and only when the run's hash
  matches; without `--resume` the run refuses to start and names both ways out (`--resume`, or
  `--retrain` for a new run beside it): an interrupted run is never silently discarded;
- `--resume` where no run of the experiment has this configuration, but other runs of it exist,
  names the nearest one and the keys that differ;
- `--resume-from RUN` continues RUN's checkpoints with the settings as configured now, as a NEW run
  (its hash covers "resumed from RUN at phase/epoch"), recording where it came from;
- nobody writes a run folder that another live process holds (clipfh_utils.locks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_copy
from ..config import Profile, display_path, flatten
from ..console import note
from ..data.datasets import HandDataset
from ..locks import check_unlocked
from ..provenance import version_drift
from ..runs import RunStateError, all_runs, now, read_run, run_dir, run_identity, run_name, seed_dir
from ..training.checkpoint import checkpoint_position
from ..training.events import EVENTS_GLOB
from ..training.loop import Trainer, is_finished

FINISHED, UNFINISHED, NEW = "finished", "unfinished", "new"
_drift_noted: set[str] = set()
LOGS = ("log.jsonl", "epochs.jsonl")


def seed_state(seed_dir: Path) -> str:
    if is_finished(seed_dir):
        return FINISHED
    return UNFINISHED if (seed_dir / Trainer.CHECKPOINT).exists() else NEW


def position_text(pos: dict) -> str:
    return f"phase '{pos['phase']}' epoch {pos['epoch']}"


@dataclass
class RunTarget:
    """The run folder an experiment will write, and what happens to each of its seeds."""
    name: str
    dir: Path
    identity: dict
    states: dict[int, str]                  # seed -> finished | unfinished | new
    resume: bool                            # unfinished seeds continue from their checkpoints
    source: Path | None = None              # --resume-from: the run whose checkpoints start this one
    notes: list[str] = field(default_factory=list)

    def to_train(self) -> list[int]:
        return [s for s, st in self.states.items() if st != FINISHED]

    def seed_dir(self, seed: int) -> Path:
        return seed_dir(self.dir, seed)

    def prepare_seed(self, seed: int) -> None:
        """--resume-from: copy the source's checkpoint (and logs up to it) in as the starting point.
        Call while holding the run's lock; a seed that already has its own checkpoint keeps it."""
        d = self.seed_dir(seed)
        src = seed_dir(self.source, seed) if self.source else None
        if src is None or self.states.get(seed) != NEW or not (src / Trainer.CHECKPOINT).exists():
            return
        for name in [*LOGS, *sorted(f.name for f in src.glob(EVENTS_GLOB))]:  # the curves continue too
            if (src / name).exists():
                atomic_copy(src / name, d / name)
        atomic_copy(src / Trainer.CHECKPOINT, d / Trainer.CHECKPOINT)


def resume_sources(out: Path, profile: Profile, experiments: list[str] | None = None) -> dict[str, Path]:
    """`resume_from` runs by experiment name; each must exist and (given the profile's experiment
    names) belong to one of `experiments`."""
    sources: dict[str, Path] = {}
    for ref in profile.resume_from:
        p = Path(ref) if (Path(ref) / "run.json").exists() else run_dir(out, ref)
        rec = read_run(p)
        if rec is None:
            have = sorted(r["name"] for r in all_runs(out))
            raise RunStateError(f"--resume-from {ref}: no such run in {display_path(run_dir(out, ''))} "
                                f"(runs there: {', '.join(have) or 'none'})")
        exp = rec["experiment"]
        if experiments is not None and exp not in experiments:
            raise RunStateError(f"--resume-from {ref}: that is a run of experiment '{exp}', which this "
                                f"profile does not run (experiments: {', '.join(experiments)})")
        if exp in sources:
            raise RunStateError(f"--resume-from {ref}: experiment '{exp}' is already resumed from "
                                f"{sources[exp].name}; give one run per experiment")
        sources[exp] = p
    return sources


def _source_positions(src: Path, seeds: list[int]) -> dict[str, str]:
    check_unlocked(src)
    positions = {str(s): position_text(checkpoint_position(seed_dir(src, s) / Trainer.CHECKPOINT))
                 for s in seeds if (seed_dir(src, s) / Trainer.CHECKPOINT).exists()}
    if not positions:
        raise RunStateError(f"--resume-from {src.name}: no checkpoint of seeds {seeds} to continue from "
                            "(finished seeds keep theirs only with -p keep_checkpoint=true; a seed "
                            "interrupted before its first epoch ended has none); train a new run instead")
    return positions


def _nearest_difference(out: Path, experiment: str, identity: dict) -> str | None:
    """The unfinished run of `experiment` on the same data closest to `identity` (the run a
    --resume most likely meant) and how it differs, or None. Finished runs, and runs on other
    datasets, are not what a --resume continues: the experiment then simply trains."""
    mine = flatten(identity)
    best = None
    for rec in all_runs(out):
        if rec.get("experiment") != experiment or rec.get("identity", {}).get("data") != identity["data"]:
            continue
        seeds = rec.get("config", {}).get("seeds", [])
        if UNFINISHED not in [seed_state(seed_dir(run_dir(out, rec["name"]), s)) for s in seeds]:
            continue
        theirs = flatten(rec["identity"])
        diff = {k: (theirs.get(k), mine.get(k)) for k in sorted(set(mine) | set(theirs))
                if theirs.get(k) != mine.get(k)}
        if best is None or len(diff) < len(best[1]):
            best = (rec["name"], diff)
    if best is None:
        return None
    name, diff = best
    shown = "; ".join(f"{k.removeprefix('config.')}: {a!r} (now {b!r})" for k, (a, b) in list(diff.items())[:6])
    more = f" and {len(diff) - 6} more" if len(diff) > 6 else ""
    return f"the nearest, {name} (unfinished), differs in {shown}{more}"


def target_name(out: Path, profile: Profile, exp, ds: HandDataset, sources: dict[str, Path] | None = None
                ) -> tuple[str, dict, Path | None]:
    """The name the run of `exp` on `ds` has (or will have), its identity, and the run it is
    resumed from (--resume-from), if any. Reads the folder only."""
    cfg, method = exp.cfg, exp.method
    identity = run_identity(exp, ds)
    if profile.retrain:
        identity["retrain"] = now()
    sources = resume_sources(out, profile) if sources is None else sources  # membership: the preflight
    source = sources.get(cfg.name) if method.trains else None
    if source is not None:
        identity["resumed_from"] = {"run": source.name, "seeds": _source_positions(source, list(cfg.seeds))}
    return run_name(cfg.name, identity), identity, source


def plan_run(out: Path, profile: Profile, exp, ds: HandDataset,
             sources: dict[str, Path] | None = None) -> RunTarget:
    """Name the run of `exp` on `ds` and decide, seed by seed, what happens; refuse what would lose
    or misreport work. Reads the folder only (the preflight calls it before anything is written)."""
    cfg, method = exp.cfg, exp.method
    name, identity, source = target_name(out, profile, exp, ds, sources)
    seeds = list(cfg.seeds) if method.trains else []
    rdir = run_dir(out, name)
    if not profile.lock_wait_s:  # else the writer waits for the holder (RunLock)
        check_unlocked(rdir)
    states = {s: seed_state(seed_dir(rdir, s)) for s in seeds}
    target = RunTarget(name, rdir, identity, states, resume=profile.resume or source is not None, source=source)
    unfinished = [s for s, st in states.items() if st == UNFINISHED]
    if profile.resume and source is None and method.trains and read_run(rdir) is None:
        nearest = _nearest_difference(out, cfg.name, identity)
        if nearest is not None:
            raise RunStateError(
                f"--resume: no run of {cfg.name} in {display_path(rdir.parent)} has this configuration; "
                f"{nearest}; to continue that run with the settings as now (a new run) use --resume-from "
                "<run>; to continue it unchanged, give its settings; to train from the start, drop --resume")
        target.notes.append(f"--resume: {cfg.name} has no run to continue; training it from the start")
    if unfinished and not target.resume:
        pos = position_text(checkpoint_position(seed_dir(rdir, unfinished[0]) / Trainer.CHECKPOINT))
        raise RunStateError(
            f"{display_path(rdir)}: seed{'s' if len(unfinished) > 1 else ''} {', '.join(map(str, unfinished))} "
            f"unfinished (checkpoint at {pos}); continue with --resume, or train a new run beside it "
            "with --retrain; nothing was changed")
    for s in unfinished:  # a damaged checkpoint is named now, not after the other seeds trained
        checkpoint_position(seed_dir(rdir, s) / Trainer.CHECKPOINT)
    return target


def disk_need(model_state_bytes: int, n_seeds: int) -> int:
    """Bytes that training `n_seeds` seeds needs at most: the checkpoint (weights + two Adam moments)
    twice during its atomic replacement, plus the final weights of every seed."""
    return 6 * model_state_bytes + n_seeds * model_state_bytes


def note_version_drift(record: dict, doing: str) -> None:
    """One line (once per run and process) when a run is loaded, resumed or re-evaluated with other
    versions of the key packages than those its run.json records."""
    drift = version_drift(record.get("environment", {}))
    if not drift or record["name"] in _drift_noted:
        return
    _drift_noted.add(record["name"])
    then = ", ".join(f"{n} {a or '(none)'}" for n, (a, _) in drift.items())
    now = ", ".join(f"{n} {b or '(none)'}" for n, (_, b) in drift.items())
    note(f"run {record['name']} was made with {then}; {doing} it here with {now}: its numbers may not "
         "reproduce exactly (its run.json holds the full pip freeze; `make install` installs requirements.lock)")
