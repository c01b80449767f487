"""Notes for the person at the console: one line each, on stderr, never only inside a report.

A note says something the user must know but that is not an error (a lock taken over, a damaged
cache rebuilt, split lists written elsewhere). In a notebook kernel it lands in the cell output.
"""
from __future__ import annotations

import sys


def note(message: str) -> None:
    print(f"[clipfh] note: {message}", file=sys.stderr, flush=True)


def size_text(n_bytes: float) -> str:
    """1536 -> '1.5 KB' (disk space in messages)."""
    if n_bytes < 1024:
        return f"{n_bytes:.0f} B"
    for unit in ("KB", "MB", "GB"):
        n_bytes /= 1024
        if n_bytes < 1024:
            break
    return f"{n_bytes:.1f} {unit}"
