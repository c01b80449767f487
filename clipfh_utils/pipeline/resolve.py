"""Profiles + experiments + overrides -> resolved experiments, each validated, each error naming
the file or the `-p` override that caused it.

A profile's `experiments` are "stage1" (zero-shot, one experiment per profile backbone) and method
configs ("clip_reid/stage2_vitb16" = configs/clip_reid/stage2_vitb16.yaml, or a path). Overrides
address one experiment by name (`-p demo_tiny_vit.finetune.lr=1e-3`) or all of them
(`-p '*.seeds=[0]'`); a '*' override skips experiments whose config has no such section.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from ..config import (ConfigError, Override, Profile, build, display_path, load_yaml, merge_into,
                      parse_override, resolve_config_path, to_dict)
from ..methods import ExperimentCfg, Method, get_method
from ..runs import slug

STAGE1 = "stage1"


@dataclass
class Experiment:
    """One experiment of a profile, resolved: its method and its config with overrides applied."""
    name: str
    method: Method
    cfg: ExperimentCfg
    source: str                                   # the config file, or "profile backbones"
    overrides: list[str] = field(default_factory=list)  # the override items that changed it
    override_keys: list[str] = field(default_factory=list)  # the dotted key each of them set

    @property
    def stage(self) -> str:
        return self.method.stage

    def origin(self, key: str) -> str:
        """Where the value of dotted `key` came from: the override that set it last, or the file."""
        for source, set_key in reversed(list(zip(self.overrides, self.override_keys))):
            if key == set_key or key.startswith(set_key + "."):
                return source
        return self.source

    def check_data(self, n_classes: int) -> None:
        """The method's dataset-dependent checks, each error naming where its key was set."""
        for key, problem in self.method.check_data(self.cfg, n_classes).items():
            raise ConfigError(f"{self.origin(key)}: {key}: {problem}")


# --------------------------------------------------------------------------- resolving

def _profile_overrides(profile: Profile, profile_source: str) -> list[Override]:
    out = []
    for items, source in ((profile.overrides, profile_source), (profile.cli_overrides, None)):
        for item in items:
            key, value, src = parse_override(item, f"{source}: override '{item}'" if source else None)
            target, _, rest = key.partition(".")
            if not rest:
                raise ConfigError(f"{src}: expected <experiment>.<key>=value or '*.<key>=value'")
            out.append(Override(target, rest, value, src))
    return out


def _build_config(method: Method, data: dict, where: str) -> ExperimentCfg:
    cfg = build(method.config_cls, data, where)
    method.validate(cfg, where)
    problem = method.input_problem(cfg)
    if problem:
        key, text = problem
        raise ConfigError(f"{where}.{key}: {text}")
    return cfg


def _resolve_one(method: Method, data: dict, where: str, aliases: set[str],
                 overrides: list[Override], used: set[int]) -> Experiment:
    cfg = _build_config(method, data, where)  # the file alone: its errors name the file
    applied, keys = [], []
    fields = set(to_dict(cfg))
    for i, o in enumerate(overrides):
        if o.target != "*" and o.target not in aliases:
            continue
        if o.target == "*" and o.key.split(".")[0] not in fields:
            continue  # e.g. '*.finetune.lr' does not concern a zero-shot experiment
        trial = merge_into(copy.deepcopy(data), o.key, o.value)
        try:
            cfg = _build_config(method, trial, where)
        except ConfigError as e:
            raise ConfigError(f"{o.source}: {str(e).removeprefix(where + '.')}") from None
        data = trial
        applied.append(o.source)
        keys.append(o.key)
        used.add(i)
    return Experiment(cfg.name, method, cfg, where, applied, keys)


def resolve_experiments(profile: Profile, profile_source: str = "profile") -> list[Experiment]:
    """Every experiment of the profile, validated; errors name the file or the `-p` override."""
    overrides = _profile_overrides(profile, profile_source)
    used: set[int] = set()
    exps: list[Experiment] = []
    for ref in profile.experiments:
        if ref == STAGE1:
            if not profile.backbones:
                raise ConfigError(f"{profile_source}: 'stage1' is listed but the profile has no backbones")
            for b in profile.backbones:
                name = f"zero_shot_{slug(b.name)}"  # "hf-hub:org/model" names a backbone, not a folder
                data = {"name": name, "method": "zero_shot", "backbone": to_dict(b)}
                exps.append(_resolve_one(get_method("zero_shot"), data, f"{profile_source}: stage1 ({b.name})",
                                         {STAGE1, name}, overrides, used))
            continue
        path = resolve_config_path(ref, "") if ref.endswith((".yaml", ".yml")) else _method_config(ref)
        data = load_yaml(path)
        folder = path.parent.name
        method_name = data.get("method") or folder
        method = get_method(method_name)
        data.setdefault("name", path.stem)
        data.setdefault("method", method.name if method_name == folder else method_name)
        exps.append(_resolve_one(method, data, display_path(path), {data["name"]}, overrides, used))
    names = [e.name for e in exps]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{profile_source}: experiment name(s) {', '.join(dupes)} appear twice; "
                          "give each config its own name")
    for i, o in enumerate(overrides):
        if i not in used:
            raise ConfigError(f"{o.source}: no experiment of this profile is named '{o.target}' or has "
                              f"'{o.key.split('.')[0]}' (experiments: {', '.join(names)}; "
                              f"'{STAGE1}' and '*' address groups)")
    return exps


def _method_config(ref: str) -> Path:
    """'clip_reid/stage2_vitb16' -> configs/clip_reid/stage2_vitb16.yaml."""
    if "/" not in ref:
        raise ConfigError(f"experiment '{ref}': write it as <method>/<config>, e.g. clip_reid/{ref}, "
                          f"or '{STAGE1}'")
    kind, name = ref.rsplit("/", 1)
    return resolve_config_path(name, kind)
