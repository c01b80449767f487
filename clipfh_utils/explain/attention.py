"""ViT attention weights captured by hooks, and attention rollout (Abnar & Zuidema 2020).

open_clip's blocks call `nn.MultiheadAttention` with `need_weights=False` (the fused kernel never
forms the weights). Rather than change that call, a forward pre-hook on each block's `attn`
reads the inputs the block is about to attend with and recomputes softmax(Q Kᵀ / √d + mask) from
the module's own input projections. The hook returns nothing, so the model computes exactly what
it computes without it (a test checks the outputs are bit-identical).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def attention_weights(mha: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor,
                      attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, heads, Lq, Lk) attention probabilities of `mha` for these inputs, in float32."""
    if not mha.batch_first:  # (L, B, E) -> (B, L, E)
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    e, h = mha.embed_dim, mha.num_heads
    if mha._qkv_same_embed_dim:
        w_q, w_k = mha.in_proj_weight[:e], mha.in_proj_weight[e:2 * e]
    else:
        w_q, w_k = mha.q_proj_weight, mha.k_proj_weight
    b_q = b_k = None
    if mha.in_proj_bias is not None:
        b_q, b_k = mha.in_proj_bias[:e], mha.in_proj_bias[e:2 * e]
    q = F.linear(query.float(), w_q.float(), None if b_q is None else b_q.float())
    k = F.linear(key.float(), w_k.float(), None if b_k is None else b_k.float())
    bsz, lq, lk, d = q.shape[0], q.shape[1], k.shape[1], e // h
    q = q.view(bsz, lq, h, d).transpose(1, 2)
    k = k.view(bsz, lk, h, d).transpose(1, 2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    if attn_mask is not None:
        mask = attn_mask if attn_mask.dim() == 2 else attn_mask.view(bsz, h, lq, lk)
        scores = scores.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    return scores.softmax(-1)


class AttentionRecorder:
    """`with AttentionRecorder(visual) as rec: visual(x)` -> `rec.maps`: one (B, heads, L, L)
    tensor per block, in block order (L = 1 + patches, the CLS token first)."""

    def __init__(self, visual: nn.Module):
        blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
        if blocks is None or not hasattr(visual, "class_embedding"):
            raise TypeError("attention rollout needs an open_clip ViT image tower (transformer.resblocks "
                            "and a class token); ResNet towers have no attention blocks to roll out")
        self.blocks = list(blocks)
        self.maps: list[torch.Tensor] = []
        self._handles: list = []

    def _hook(self, module: nn.MultiheadAttention, args: tuple, kwargs: dict) -> None:
        query = args[0] if args else kwargs["query"]
        key = args[1] if len(args) > 1 else kwargs.get("key", query)
        with torch.no_grad():
            self.maps.append(attention_weights(module, query.detach(), key.detach(), kwargs.get("attn_mask")))

    def __enter__(self) -> "AttentionRecorder":
        self.maps = []
        self._handles = [b.attn.register_forward_pre_hook(self._hook, with_kwargs=True) for b in self.blocks]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def attention_rollout(maps: Sequence[torch.Tensor], residual: float = 0.5) -> torch.Tensor:
    """(B, L, L) rollout of per-block attention (B, heads, L, L): heads averaged, the residual
    path added as `residual`·I + (1 - residual)·A (rows still sum to 1), blocks multiplied in
    order (the last block on the left). Row 0 says how the CLS output draws on each input token."""
    if not maps:
        raise ValueError("no attention maps to roll out")
    n = maps[0].shape[-1]
    eye = torch.eye(n, dtype=torch.float32, device=maps[0].device)
    rollout = eye.expand(maps[0].shape[0], n, n)
    for a in maps:
        a = residual * eye + (1 - residual) * a.float().mean(1)
        rollout = (a / a.sum(-1, keepdim=True)) @ rollout
    return rollout


def cls_map(rollout: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The CLS row over the patch tokens, as a (B, h, w) map that sums to 1."""
    m = rollout[:, 0, 1:]
    return (m / m.sum(-1, keepdim=True)).reshape(-1, *grid)


@torch.no_grad()
def rollout_maps(visual: nn.Module, x: torch.Tensor, upto: int | None = None,
                 residual: float = 0.5) -> torch.Tensor:
    """(B, h, w) attention rollout of the first `upto` blocks (all by default) for images `x`
    (normalised model inputs): non-negative, each map sums to 1 over the patch grid."""
    with AttentionRecorder(visual) as rec:
        visual(x)
    maps = rec.maps[:upto] if upto else rec.maps
    ph, pw = visual.patch_size if isinstance(visual.patch_size, tuple) else (visual.patch_size,) * 2
    return cls_map(attention_rollout(maps, residual), (x.shape[2] // ph, x.shape[3] // pw)).cpu()
