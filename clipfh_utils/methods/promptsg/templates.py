"""Sets of prompt templates, kept as data (data/prompt_templates.yaml) so anyone can edit them.

A template has exactly one placeholder word X, where PromptSG's pseudo-word goes; its fixed
sentence (the "efficiency" inference mode) is the same sentence without that word.
"""
from __future__ import annotations

import re
from pathlib import Path

from ...config import REPO_ROOT, ConfigError, display_path, load_yaml

TEMPLATES_FILE = REPO_ROOT / "data" / "prompt_templates.yaml"
PLACEHOLDER = "X"


def check_template(template: str, where: str) -> str:
    """A template must hold the placeholder exactly once, as a word of its own."""
    if not isinstance(template, str) or len(re.findall(rf"\b{PLACEHOLDER}\b", template)) != 1:
        raise ConfigError(f"{where}: {template!r} must contain the placeholder word "
                          f"'{PLACEHOLDER}' exactly once, e.g. 'A photo of a {PLACEHOLDER} hand.'")
    return template


def fixed_sentence(template: str) -> str:
    """'A photo of a X hand.' -> 'A photo of a hand.'"""
    return re.sub(rf"\s*\b{PLACEHOLDER}\b", "", template, count=1).strip()


def load_template_set(name: str, path: Path | None = None) -> list[str]:
    """The templates of set `name` (in data/prompt_templates.yaml by default), checked; errors
    name the file and the key."""
    path = path or TEMPLATES_FILE
    where = display_path(path)
    sets = load_yaml(path)
    if name not in sets:
        raise ConfigError(f"{where}: no template set '{name}' (sets: {', '.join(sets)}); "
                          f"add it there or fix prompt.ensemble")
    items = sets[name]
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{where}: {name}: expected a non-empty list of templates")
    return [check_template(t, f"{where}: {name}[{i}]") for i, t in enumerate(items)]
