"""CLIP-ReID's learnable identity prompts: "A photo of a X X X X hand." with per-identity X tokens."""
from __future__ import annotations

import torch
from torch import nn

from ...backbones.loading import ClipModel
from ...backbones.text import PromptTemplate, TextEncoder


class PromptLearner(nn.Module):
    """Per-identity context tokens, N(0, 0.02), spliced into a frozen sentence template."""

    def __init__(self, clip: ClipModel, n_ids: int, template: str = "A photo of a X X X X hand.",
                 n_ctx: int = 4):
        super().__init__()
        self.template = PromptTemplate(clip, template, n_ctx)
        dev = self.template.token_ids.device
        self.ctx = nn.Parameter(torch.randn(n_ids, n_ctx, self.template.width, device=dev) * 0.02)

    @property
    def start(self) -> int:
        return self.template.start

    def forward(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings (B, L, W) and token ids (B, L) for the identities in `labels`."""
        return self.template(self.ctx[labels])


@torch.no_grad()
def encode_all_identities(prompts: PromptLearner, text: TextEncoder, n_ids: int,
                          batch_size: int = 256) -> torch.Tensor:
    """Text features of every identity (C, E), computed once for Stage 2b."""
    dev = prompts.ctx.device
    out = [text(*prompts(torch.arange(s, min(s + batch_size, n_ids), device=dev)))
           for s in range(0, n_ids, batch_size)]
    return torch.cat(out).float()
