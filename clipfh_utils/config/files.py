"""Where configs live and how they are read: the repository root (the checkout in use), config names to paths, YAML files
(one-line errors naming the file), repository-relative paths for reports."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from .validation import ConfigError

PACKAGE_CHECKOUT = Path(__file__).resolve().parents[2]
HOME_ENV = "CLIPFH_HOME"


def is_checkout(folder: Path) -> bool:
    """A CLIP-FH checkout: its profiles and its notebooks."""
    return (folder / "configs" / "profiles").is_dir() and (folder / "notebooks").is_dir()


def find_home(cwd: Path | None = None) -> Path:
    """The checkout whose configs, data and outputs a session uses: $CLIPFH_HOME when set, else
    the checkout the session runs in (a notebook opened from a copy uses that copy), else the
    one the package was installed from."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser().resolve()
    here = (cwd or Path.cwd()).resolve()
    return next((d for d in (here, *here.parents) if is_checkout(d)), PACKAGE_CHECKOUT)


REPO_ROOT = find_home()
CONFIG_DIR = REPO_ROOT / "configs"


def resolve_config_path(name_or_path: str | Path, kind: str) -> Path:
    """A bare name ('demo') means configs/<kind>/<name>.yaml; anything ending .yaml is a path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if p.is_absolute():
            return p
        return Path.cwd() / p if (Path.cwd() / p).exists() else REPO_ROOT / p
    candidate = CONFIG_DIR / kind / f"{name_or_path}.yaml"
    if not candidate.exists():
        available = sorted(q.stem for q in (CONFIG_DIR / kind).glob("*.yaml"))
        raise ConfigError(f"no {kind} config named '{name_or_path}' in {display_path(candidate.parent)} "
                          f"(available: {', '.join(available) or 'none'})")
    return candidate


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{display_path(path)}: not valid YAML{at}; fix the file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{display_path(path)}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{display_path(path)}: expected a mapping at the top level")
    return data


def display_path(p: str | Path) -> str:
    """Repository-relative when inside the repository: reports carry no machine-specific paths."""
    p = Path(p).resolve()
    return str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else str(p)


def repo_path(p: str | Path) -> Path:
    """Config paths are relative to the repository root, so a run does not depend on the cwd."""
    p = Path(p)
    return p if p.is_absolute() else REPO_ROOT / p
