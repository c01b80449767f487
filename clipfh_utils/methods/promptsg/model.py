"""The PromptSG model: inversion network, composed prompt, multimodal interaction, BNNeck head.

image --VisionAdapter--> global projected embedding v, patch tokens (projected into the joint space)
v --inversion MLP--> pseudo-word s*  ->  "A photo of a s* hand." --frozen text tower--> prompt l_p
cross-attention(query l_p, keys/values the patch tokens) -> query token + attention map a over the
patches; the map re-weights the patch tokens; transformer blocks over [query; re-weighted patches];
the output query token is the identity feature (ID + triplet losses, retrieval).

The two failures of earlier code are designed out and tested: the attention runs over the N patch
tokens (never one pooled vector, whose softmax is constant), and the pseudo-token is spliced into
the token sequence and reaches the inversion network's gradient through the frozen text tower
(whose parameters are frozen; nothing runs under no_grad).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ...backbones.adapters import VisionAdapter, VisionFeatures
from ...backbones.loading import ClipModel
from ...backbones.text import PromptTemplate, TextEncoder, encode_sentences
from ...training.heads import BNNeckHead
from ...training.losses import id_loss, supcon_loss, triplet_loss
from .config import InteractionCfg, InversionCfg, PromptSGCfg
from .templates import fixed_sentence


@dataclass
class PromptSGOutput:
    feature: torch.Tensor            # (B, E) identity feature, pre-BN (triplet, retrieval)
    logits: torch.Tensor             # (B, C) classifier on the BN'd feature (ID loss)
    image: torch.Tensor              # (B, E) global projected image embedding (SupCon)
    prompt: Optional[torch.Tensor]   # (B, E) prompt embedding l_p (SupCon); None for the baseline
    attention: Optional[torch.Tensor] = None  # (B, N) cross-attention map over the patches
    # the image encoder's (mid, final, proj) features, pre-BN (the triplet's `triplet_features`)
    hidden: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None


class InversionNetwork(nn.Module):
    """MLP from the image embedding to one pseudo-word token, BatchNorm after the last layer."""

    def __init__(self, cfg: InversionCfg, in_dim: int, token_embedding: torch.Tensor):
        super().__init__()
        act = {"relu": nn.ReLU, "gelu": nn.GELU}[cfg.activation]
        dims = [in_dim] + [cfg.hidden] * (cfg.layers - 1) + [token_embedding.shape[1]]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                layers += [act(), nn.Dropout(cfg.dropout)]
        self.mlp = nn.Sequential(*layers)
        self.bn = nn.BatchNorm1d(dims[-1])
        if cfg.bn_init == "token_stats":  # start at the scale of a real word's embedding
            with torch.no_grad():
                table = token_embedding.detach().float()
                self.bn.weight.copy_(table.std(0))
                self.bn.bias.copy_(table.mean(0))

    def forward(self, image_embedding: torch.Tensor) -> torch.Tensor:
        """(B, E) -> (B, W): one token in the token-embedding space per image."""
        return self.bn(self.mlp(image_embedding))


class Interaction(nn.Module):
    """Cross-attention of the prompt over the patch tokens, then transformer blocks.

    Returns the output query token (B, E) and the head-averaged attention over the patches (B, N),
    each row non-negative and summing to 1.
    """

    def __init__(self, cfg: InteractionCfg, width: int):
        super().__init__()
        if width % cfg.heads:
            raise ValueError(f"interaction.heads: {cfg.heads} heads do not divide the joint width "
                             f"{width}; choose a divisor of {width}")
        self.cfg = cfg
        pre = cfg.norm == "pre"
        # pre: ln_q and ln_kv norm the attention's inputs; post: ln_q norms the residual sum
        self.ln_q = nn.LayerNorm(width)
        self.ln_kv = nn.LayerNorm(width) if pre else None
        self.cross = nn.MultiheadAttention(width, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(width, cfg.heads, int(width * cfg.mlp_ratio), cfg.dropout,
                                       activation="gelu", batch_first=True, norm_first=pre)
            for _ in range(cfg.blocks))
        self.ln_out = nn.LayerNorm(width) if pre else nn.Identity()

    def forward(self, query: torch.Tensor, tokens: torch.Tensor,
                global_token: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        n = tokens.shape[1]
        kv = tokens if global_token is None else torch.cat([global_token[:, None], tokens], 1)
        pre = self.cfg.norm == "pre"
        q_in, kv_in = (self.ln_q(query[:, None]), self.ln_kv(kv)) if pre else (query[:, None], kv)
        attended, weights = self.cross(q_in, kv_in, kv_in, need_weights=True, average_attn_weights=True)
        q = query[:, None] + attended                                  # (B, 1, E)
        if not pre:
            q = self.ln_q(q)
        attn = weights[:, 0, kv.shape[1] - n:]                          # (B, N): the patches only
        attn = attn / attn.sum(1, keepdim=True)                         # sums to 1 over the patches
        if self.cfg.reweight == "scale":
            tokens = tokens * (n * attn)[..., None]
        elif self.cfg.reweight == "residual":
            tokens = tokens * (1 + n * attn)[..., None]
        x = torch.cat([q, tokens], 1)
        for block in self.blocks:
            x = block(x)
        return self.ln_out(x[:, 0]), attn


class PromptSG(nn.Module):
    """Everything PromptSG trains or reads (see the module docstring)."""

    def __init__(self, cfg: PromptSGCfg, clip: ClipModel, n_classes: int,
                 ensemble: list[str] | None = None):
        super().__init__()
        self.cfg, self.clip = cfg, clip
        self.backbone = VisionAdapter(clip)
        width = self.backbone.dims[2]
        pc = cfg.prompt
        self.text = TextEncoder(clip.model)
        token_embedding = clip.model.token_embedding.weight
        self.inversion = InversionNetwork(cfg.inversion, width, token_embedding) if cfg.composes else None
        self.supcon_temperature = supcon_temperature(cfg, clip)  # derived, not a parameter
        self.template = PromptTemplate(clip, pc.template, 1, truncate=pc.truncate)
        # inference only (prompt.ensemble): averaged prompt embeddings over these templates
        inference = ensemble or [pc.template]
        self.ensemble = nn.ModuleList(PromptTemplate(clip, t, 1, truncate=pc.truncate) for t in inference)
        self.fixed_sentences = [pc.fixed]  # training (the ensemble is inference only, outside the run's hash)
        self.inference_fixed_sentences = [fixed_sentence(t) for t in ensemble] if ensemble else [pc.fixed]
        self.interaction = Interaction(cfg.interaction, width) if cfg.interacts else None
        if self.interaction is None:  # no map to show: readers test callable(model.attention_maps)
            self.attention_maps = None
        self.head = BNNeckHead(width, n_classes)
        self.to(next(self.backbone.parameters()).device)

    @property
    def embed_dim(self) -> int:
        return self.backbone.dims[2]

    # ------------------------------------------------------------------ prompts

    def compose(self, pseudo: torch.Tensor, templates: list[PromptTemplate] | None = None) -> torch.Tensor:
        """Pseudo-words (B, W) -> prompt embeddings (B, E): each spliced into the template(s) in
        place of X and encoded by the text tower (the mean over several templates)."""
        templates = templates or [self.template]
        return torch.stack([self.text(*t(pseudo[:, None])) for t in templates]).mean(0)

    def fixed_prompt(self, inference: bool = False) -> torch.Tensor:
        """(E,) the fixed prompt without a pseudo-word: the training one, or at inference the
        ensemble's fixed sentences averaged; callers cache it while the text tower is frozen
        (gradients follow the text tower when it trains)."""
        sentences = self.inference_fixed_sentences if inference else self.fixed_sentences
        return encode_sentences(self.clip, self.text, sentences).mean(0)

    # ------------------------------------------------------------------ forward

    def _identity(self, f: VisionFeatures, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(identity feature, attention map): the interaction output, or without the interaction
        module (Table 3's "w/o MIM") the projected image feature and no map."""
        if self.interaction is None:
            return f.proj, None
        tokens = self.backbone.project_tokens(f.tokens)
        glob = f.proj if self.cfg.interaction.global_in_kv else None
        return self.interaction(prompt.to(tokens.dtype), tokens, glob)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None,
                fixed: torch.Tensor | None = None) -> PromptSGOutput:
        """Training forward: composed prompts from the training template (or the fixed prompt,
        given or encoded here, when the inversion network is off)."""
        f = self.backbone(x)
        if self.inversion is not None:
            prompt = self.compose(self.inversion(f.proj))
        else:
            prompt = (fixed if fixed is not None else self.fixed_prompt()).expand(len(x), -1)
        feature, attn = self._identity(f, prompt)
        return PromptSGOutput(feature, self.head(feature, labels), f.proj, prompt, attn,
                              (f.mid, f.final, f.proj))

    def _prompt(self, f: VisionFeatures, fixed: torch.Tensor | None) -> torch.Tensor:
        if fixed is None and self.inversion is not None:
            return self.compose(self.inversion(f.proj), list(self.ensemble))
        return (fixed if fixed is not None else self.fixed_prompt(inference=True)).expand(f.proj.shape[0], -1)

    def embed(self, x: torch.Tensor, fixed: torch.Tensor | None = None) -> torch.Tensor:
        """Retrieval feature (B, E), pre-BN: the interaction's output query token. With `fixed`
        (a prompt embedding) the efficiency mode; otherwise the composed prompt (inference templates)."""
        f = self.backbone(x)
        return self._identity(f, self._prompt(f, fixed))[0]

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor, fixed: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-attention of the prompt over the patch grid, (B, h, w): non-negative, each map
        summing to 1 over the patches (heads averaged). `x`: normalised images."""
        f = self.backbone(x)
        attn = self._identity(f, self._prompt(f, fixed))[1]
        return attn.float().reshape(len(x), *f.grid)


class PromptSGBaseline(nn.Module):
    """The paper's baseline: the CLIP image encoder with a BNNeck head on its projected feature."""

    def __init__(self, clip: ClipModel, n_classes: int):
        super().__init__()
        self.backbone = VisionAdapter(clip)
        self.head = BNNeckHead(self.backbone.dims[2], n_classes)
        self.to(next(self.backbone.parameters()).device)

    @property
    def embed_dim(self) -> int:
        return self.backbone.dims[2]

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> PromptSGOutput:
        f = self.backbone(x)
        return PromptSGOutput(f.proj, self.head(f.proj, labels), f.proj, None, None, (f.mid, f.final, f.proj))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode(x)


def supcon_temperature(cfg: PromptSGCfg, clip: ClipModel) -> float:
    """SupCon's temperature: the configured one, or (null) the backbone's own trained CLIP
    temperature 1 / exp(logit_scale), read once and frozen (1/100 for OpenAI's weights)."""
    if cfg.optim.supcon_temperature is not None:
        return float(cfg.optim.supcon_temperature)
    return float(1.0 / clip.model.logit_scale.detach().float().exp())


TRIPLET_HIDDEN = {"mid": 0, "final": 1, "proj": 2}


def triplet_inputs(out: PromptSGOutput, names: list[str]) -> list[torch.Tensor]:
    """The features named by `optim.triplet_features`, each tensor once ("proj" is the identity
    feature itself where there is no interaction module)."""
    picked: list[torch.Tensor] = []
    for name in names:
        if name == "feature":
            t = out.feature
        elif out.hidden is None:
            raise ValueError(f"optim.triplet_features: '{name}' needs the image encoder's features, "
                             "which this output does not carry")
        else:
            t = out.hidden[TRIPLET_HIDDEN[name]]
        if not any(t is u for u in picked):
            picked.append(t)
    return picked


def promptsg_terms(out: PromptSGOutput, labels: torch.Tensor, cfg: PromptSGCfg,
                   temperature: float | None = None) -> dict[str, torch.Tensor]:
    """The loss terms, unweighted: ID (label smoothing, BNNeck), batch-hard triplet summed over the
    pre-BN `triplet_features`, and SupCon between image embedding and composed prompt (same
    identity = positive; cosine / temperature by default, the paper's Eq. 1) whenever prompts are
    composed. `temperature`: the model's resolved one (required when the config leaves it null)."""
    o = cfg.optim
    terms = {"id": id_loss(out.logits, labels, o.label_smoothing),
             "triplet": sum((triplet_loss(f, labels, o.triplet_margin)
                             for f in triplet_inputs(out, o.triplet_features)), out.logits.new_zeros(()).float())}
    if cfg.composes:
        t = o.supcon_temperature if o.supcon_temperature is not None else temperature
        if t is None:
            raise ValueError("optim.supcon_temperature is null (the backbone's own): pass the model's "
                             "supcon_temperature")
        image, prompt = out.image.float(), out.prompt.float()
        if o.supcon_normalize:
            image, prompt = F.normalize(image, dim=1), F.normalize(prompt, dim=1)
        parts = {"i2t": lambda: supcon_loss(image, prompt, labels, labels, t),
                 "t2i": lambda: supcon_loss(prompt, image, labels, labels, t)}
        use = ("i2t", "t2i") if o.supcon_directions == "both" else (o.supcon_directions,)
        terms["supcon"] = sum(parts[d]() for d in use)
    return terms
