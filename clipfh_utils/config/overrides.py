"""The one override form used everywhere: `key.sub=value` (the value parsed as YAML), merged into a
nested mapping without dropping keys."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import yaml

from .validation import ConfigError

@dataclass(frozen=True)
class Override:
    """`target.key=value`: target is '' (the profile), '*' (every experiment) or an experiment."""
    target: str
    key: str
    value: Any
    source: str  # what the user wrote, for error messages: "-p 'x.y=1'" or "profiles/demo.yaml"


def parse_override(item: str, source: str | None = None) -> tuple[str, Any, str]:
    """'protocol.n_splits=3' -> ('protocol.n_splits', 3, source); the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override '{item}': expected key=value, e.g. protocol.n_splits=3 "
                          "or demo_tiny_vit.finetune.lr=1e-3")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(f"override '{item}': the value is not valid YAML") from None
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override '{item}': empty key part")
    return key, value, source or f"-p '{item}'"


def merge_into(tree: dict, dotted: str, value: Any) -> dict:
    """Set `dotted` in a nested dict, merging mappings deeply: no existing key is dropped."""
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    last = parts[-1]
    if isinstance(value, dict) and isinstance(node.get(last), dict):
        for k, v in value.items():
            merge_into(node[last], str(k), v)
    else:
        node[last] = value
    return tree


def parse_overrides(items: Sequence[str] | dict | None) -> dict:
    """`["protocol.n_splits=3", "device=cpu"]` -> nested dict, merged in order."""
    tree: dict = {}
    if not items:
        return tree
    pairs = items.items() if isinstance(items, dict) else (parse_override(i)[:2] for i in items)
    for key, value in pairs:
        merge_into(tree, key, value)
    return tree
