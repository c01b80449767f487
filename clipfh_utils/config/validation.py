"""YAML data -> dataclasses: unknown keys, wrong types and out-of-range values are errors naming the
key; `to_dict`/`identity_dict` give the plain-data views that run records and run hashes use."""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import field
from typing import Any, Literal, Sequence, Union

class ConfigError(ValueError):
    """A config file or override that cannot be turned into a valid run description."""


def setting(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, identity: bool = True, internal: bool = False,
            factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with a declared range and run-identity flag (see the package docstring)."""
    meta = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le)) if v is not None}
    meta.update(identity=identity, internal=internal)
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def check_increasing(values: Sequence[Any], where: str) -> None:
    """Schedule milestones and the like: strictly in order, or a ConfigError naming the key."""
    if sorted(values) != list(values):
        raise ConfigError(f"{where}: must be increasing, got {list(values)}")


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _check_range(value: Any, meta: dict, where: str) -> None:
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_range(v, meta, f"{where}[{i}]")
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if "ge" in meta and value < meta["ge"]:
        raise ConfigError(f"{where}: must be >= {meta['ge']}, got {value}")
    if "gt" in meta and value <= meta["gt"]:
        raise ConfigError(f"{where}: must be > {meta['gt']}, got {value}")
    if "le" in meta and value > meta["le"]:
        raise ConfigError(f"{where}: must be <= {meta['le']}, got {value}")


def _convert(value: Any, tp: Any, where: str) -> Any:
    tp, optional = _strip_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: must not be empty")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return build(tp, value, where)
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed or type(value) not in {type(a) for a in allowed}:
            raise ConfigError(f"{where}: must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, vt = typing.get_args(tp) or (str, Any)
        return {str(k): _convert(v, vt, f"{where}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def build(cls: type, data: dict, where: str = "config") -> Any:
    """Build dataclass `cls` from a mapping: unknown keys, wrong types and ranges are errors."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    known = sorted(n for n, f in fields.items() if not f.metadata.get("internal"))
    for key in data:
        if key not in fields or fields[key].metadata.get("internal"):
            raise ConfigError(f"{where}: unknown key '{key}' (known keys: {', '.join(known)}); "
                              "fix the spelling or remove it")
    kwargs = {}
    for k, v in data.items():
        kwargs[k] = _convert(v, hints[k], f"{where}.{k}")
        _check_range(kwargs[k], fields[k].metadata, f"{where}.{k}")
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if callable(check):
        check(where)
    return obj


def to_dict(obj: Any) -> Any:
    """Plain-data view of a config (for run records and checkpoints)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not f.metadata.get("internal")}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def identity_dict(obj: Any) -> Any:
    """`to_dict` without the settings that cannot change the trained weights (for run hashes)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: identity_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if f.metadata.get("identity", True) and not f.metadata.get("internal")}
    if isinstance(obj, (list, tuple)):
        return [identity_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: identity_dict(v) for k, v in obj.items()}
    return obj


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1} (for tables of differing keys)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_diff(a: dict, b: dict) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two plain-data configs: key -> (a, b)."""
    fa, fb = flatten(a), flatten(b)
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}
