"""Learnable identity prompts and a text encoder that starts from token embeddings.

"A photo of a X X X X hand.": the X tokens are learnable per training identity, the rest of the
sentence is frozen. The text feature is read at the EOT position under the causal mask; position
0 sees only itself and would be the same for every identity (a bug in the study's code).
"""
from __future__ import annotations

import torch
from torch import nn

from .models import ClipModel

PLACEHOLDER = "X"


class TextEncoder(nn.Module):
    """open_clip's text tower run from embeddings (so prompts can be learnt)."""

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.register_buffer("attn_mask", clip_model.attn_mask, persistent=False)

    def forward(self, embeds: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        x = embeds + self.positional_embedding.to(embeds.dtype)
        x = self.transformer(x, attn_mask=self.attn_mask)
        x = self.ln_final(x)
        eot = token_ids.argmax(-1)  # the EOT token has the largest id in CLIP's vocabulary
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection


class PromptLearner(nn.Module):
    """Per-identity context tokens spliced into a frozen sentence template."""

    def __init__(self, clip: ClipModel, n_ids: int, template: str = "A photo of a X X X X hand.",
                 n_ctx: int = 4):
        super().__init__()
        tokens = clip.tokenizer([template])                       # (1, L)
        x_id = int(clip.tokenizer([PLACEHOLDER])[0, 1])
        where = (tokens[0] == x_id).nonzero().flatten().tolist()
        if len(where) != n_ctx or where != list(range(where[0], where[0] + n_ctx)):
            raise ValueError(f"prompt template {template!r} must contain exactly {n_ctx} consecutive "
                             f"'{PLACEHOLDER}' placeholders (prompt.n_ctx = {n_ctx})")
        self.start = where[0]
        emb_layer = clip.model.token_embedding
        with torch.no_grad():
            emb = emb_layer(tokens.to(emb_layer.weight.device))
        self.register_buffer("prefix", emb[:, :self.start].clone())
        self.register_buffer("suffix", emb[:, self.start + n_ctx:].clone())
        self.register_buffer("token_ids", tokens.to(emb_layer.weight.device))
        self.ctx = nn.Parameter(torch.randn(n_ids, n_ctx, emb.shape[-1],
                                            device=emb.device) * 0.02)

    def forward(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings (B, L, D) and token ids (B, L) for the identities in `labels`."""
        b = labels.shape[0]
        embeds = torch.cat([self.prefix.expand(b, -1, -1), self.ctx[labels],
                            self.suffix.expand(b, -1, -1)], dim=1)
        return embeds, self.token_ids.expand(b, -1)


@torch.no_grad()
def encode_all_identities(prompts: PromptLearner, text: TextEncoder, n_ids: int,
                          batch_size: int = 256) -> torch.Tensor:
    """Text features of every identity (C, D), computed once for Stage 2b."""
    dev = prompts.ctx.device
    out = [text(*prompts(torch.arange(s, min(s + batch_size, n_ids), device=dev)))
           for s in range(0, n_ids, batch_size)]
    return torch.cat(out).float()
