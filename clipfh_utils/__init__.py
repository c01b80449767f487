"""CLIP-FH: adapting CLIP to hand-based identity matching (see README.md).

`load_run(name)` gives a finished run's model (`embed`, `search`); notebooks use `workbook`.
"""
__version__ = "0.2.0"


def load_run(*args, **kwargs):
    """See clipfh_utils.pipeline.trained.load_run (imported lazily: torch is heavy)."""
    from .pipeline.trained import load_run as _load_run
    return _load_run(*args, **kwargs)
