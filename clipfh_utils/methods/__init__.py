"""Methods: each a folder (or any importable module) exposing `METHOD`, found by name here.

Built in: `zero_shot` (Stage 1), `clip_reid` (Stage 2), `promptsg` (Stage 3), `cnn_baseline` (RQ6's
ResNet BoT). A method never imports another method; what two methods share lives in `backbones/` or
`training/`.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from ..config import ConfigError
from .base import Backbone, BuildContext, ExperimentCfg, Method, TrainPlan

__all__ = ["Backbone", "BuildContext", "ExperimentCfg", "Method", "TrainPlan", "builtin_methods", "get_method"]


def builtin_methods() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.ispkg)


def get_method(name: str) -> Method:
    """A built-in method by name ('clip_reid'), or any module path exposing METHOD ('tests.my_method')."""
    module_name = f"{__name__}.{name}" if name in builtin_methods() else name
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ConfigError(f"unknown method '{name}' (built in: {', '.join(builtin_methods())}; "
                          "or the import path of a module that defines METHOD)") from None
    method = getattr(module, "METHOD", None)
    if not isinstance(method, Method):
        raise ConfigError(f"module '{module_name}' defines no METHOD (a clipfh_utils.methods.Method)")
    return method
