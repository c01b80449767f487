"""The data: HandInfo.csv, the evaluation protocol and its split lists, images and their cache,
synthetic hands. Nothing here knows about models."""
from .datasets import HandDataset, load_rows, one_per_identity, write_all_splits
from .handinfo import ASPECTS, HandInfoError, HandRecord, load_handinfo
from .prepare import prepare_dataset
from .protocol import Protocol, SplitRow, aspect_counts, split_dir

__all__ = ["ASPECTS", "HandDataset", "HandInfoError", "HandRecord", "Protocol", "SplitRow",
           "aspect_counts", "load_handinfo", "load_rows", "one_per_identity", "prepare_dataset",
           "split_dir", "write_all_splits"]
