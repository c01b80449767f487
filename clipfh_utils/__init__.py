"""CLIP-FH: adapting CLIP to hand-based identity matching (see README.md)."""
__version__ = "0.1.0"
