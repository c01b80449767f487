"""P x K identity sampler: each batch holds P identities with K images each.

Batch-hard triplet needs positives in every batch. An identity with fewer than K images is
sampled with replacement up to K. The generator state is part of every checkpoint, so a
resumed run draws the same batches as an uninterrupted one.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np


class PKSampler:
    def __init__(self, labels: Sequence[int], p: int = 16, k: int = 4, seed: int = 0):
        self.by_id: dict[int, np.ndarray] = {}
        groups: dict[int, list[int]] = defaultdict(list)
        for i, lab in enumerate(labels):
            groups[int(lab)].append(i)
        self.by_id = {lab: np.array(idx) for lab, idx in sorted(groups.items())}
        if p > len(self.by_id):
            raise ValueError(f"P={p} identities per batch but only {len(self.by_id)} training "
                             "identities; lower P (identities per batch)")
        self.p, self.k = p, k
        self.rng = np.random.default_rng(seed)

    def epoch(self) -> list[np.ndarray]:
        """All batches of one epoch (index arrays of length P*K)."""
        chunks: dict[int, list[np.ndarray]] = {}
        for lab, idx in self.by_id.items():
            if len(idx) < self.k:
                idx = self.rng.choice(idx, self.k, replace=True)
            else:
                idx = self.rng.permutation(idx)
            usable = len(idx) - len(idx) % self.k
            chunks[lab] = [idx[s:s + self.k] for s in range(0, usable, self.k)]
        available = [lab for lab in chunks if chunks[lab]]
        batches = []
        while len(available) >= self.p:
            chosen = self.rng.choice(available, self.p, replace=False)
            batches.append(np.concatenate([chunks[int(lab)].pop() for lab in chosen]))
            available = [lab for lab in available if chunks[lab]]
        return batches

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
