"""The PromptSG experiment config (Yang et al., CVPR 2024), adapted from persons to hands.

Defaults are the paper's recipe as far as it is known (reference notes, section 5); every choice
the paper leaves open is a key here, with its comment, so an ablation is a config change.
configs/promptsg/*.yaml are the experiments (ViT-B-16 and RN50 recipes, demo and ablation configs).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from ...config import ConfigError, setting
from ...training.augment import AugmentCfg
from ..base import ClipBackboneCfg, ExperimentCfg


@dataclass
class InversionCfg:
    """Image embedding -> ONE pseudo-word token (the paper's inversion network)."""
    enabled: bool = True                  # false: the "without inversion" ablation (fixed prompt in training)
    layers: int = setting(3, ge=1)        # the paper: a 3-layer MLP
    hidden: int = setting(512, ge=1)      # the paper: hidden width 512
    activation: Literal["relu", "gelu"] = "relu"   # paper silent; ReLU
    dropout: float = setting(0.0, ge=0, le=1)      # paper silent; none
    # BatchNorm after the last layer (the paper). Paper silent on its affine init; "token_stats"
    # starts the pseudo-token with the per-dimension mean/std of CLIP's token-embedding table, so
    # it begins at the scale of a real word; "unit" is BatchNorm's own (weight 1, bias 0).
    bn_init: Literal["token_stats", "unit"] = "token_stats"


@dataclass
class InteractionCfg:
    """Cross-attention (query = prompt embedding, keys/values = patch tokens) + transformer blocks."""
    # false: the paper's Table 3 "w/o MIM" ablation: no interaction module; ID, triplet and
    # retrieval use the projected image feature while the prompt still serves SupCon
    enabled: bool = True
    # the paper: 2. 0 = cross-attention only (ablation): the output is the query token alone, so
    # the re-weighted patches are not used at all and `reweight` has no effect
    blocks: int = setting(2, ge=0)
    heads: int = setting(8, ge=1)         # paper silent; must divide the joint width (512 / 1024 / 64)
    mlp_ratio: float = setting(4.0, gt=0)  # paper silent; the usual transformer 4x
    # paper silent. Where the blocks' LayerNorm sits. "post" (our choice): after the residual sum
    # (the original Transformer), so the blocks see the re-weighted tokens at their scale. "pre"
    # (CLIP's own blocks; an ablation): LayerNorm first, which divides out a per-token scale: the
    # re-weighting then barely reaches the output (measured: a 90 % map changes the output token
    # by a few % with 2 blocks, against tens of % post-norm)
    norm: Literal["pre", "post"] = "post"
    # paper silent ("aggregates the attention map to highlight the regions"; Fig. 2 draws the map
    # re-weighting the patch tokens). How the cross-attention map re-weights the patch tokens:
    #   "scale":    token_i * (N * a_i)  (mean weight 1: a uniform map leaves the tokens unchanged)
    #   "residual": token_i * (1 + N * a_i)
    #   "none":     tokens unchanged (the map only forms the query token)
    reweight: Literal["scale", "residual", "none"] = "scale"
    # paper silent. Add the global image token (ViT: projected CLS; RN50: attnpool output) to the
    # keys/values. The attention maps shown are always over the patches, renormalised to sum to 1.
    global_in_kv: bool = False
    dropout: float = setting(0.0, ge=0, le=1)


@dataclass
class PromptCfg:
    """The sentences. 'X' is the pseudo-word's placeholder (exactly one, a single token)."""
    template: str = "A photo of a X hand."          # the paper: "A photo of a S* person"
    fixed: str = "A photo of a hand."               # the fixed prompt of the "efficiency" mode
    # Inference only: average the prompt embedding over a set of templates from
    # data/prompt_templates.yaml (the study's "prompt adaptation"); null = `template` alone.
    # The fixed mode averages the same templates with the placeholder word removed.
    ensemble: Optional[str] = setting(None, identity=False)
    # Cut the token sequence after the EOT token: under the causal mask nothing after it reaches
    # the EOT feature, so the result is the same and the text pass ~10x cheaper (77 -> 9 tokens)
    truncate: bool = setting(True, identity=False)


@dataclass
class TextCfg:
    train: bool = False                    # the paper: frozen; true = the study's future-work ablation
    lr: float = setting(5e-7, gt=0)        # only with train: true (paper silent; 0.1x the encoder lr)


@dataclass
class OptimCfg:
    epochs: int = setting(60, ge=0)
    p: int = setting(16, ge=1)             # identities per batch
    k: int = setting(4, ge=2)              # images per identity
    lr: float = setting(5e-6, gt=0)        # the image encoder
    new_lr: float = setting(5e-5, gt=0)    # inversion network, interaction module, BNNeck head
    weight_decay: float = setting(1e-4, ge=0)  # paper silent; CLIP-ReID's ViT value
    step_size: int = setting(20, ge=1)     # lr x gamma after every step_size epochs
    gamma: float = setting(0.1, gt=0)
    # paper silent; none. Linear warm-up from warmup_factor over the first epochs, if set
    warmup_epochs: int = setting(0, ge=0)
    warmup_factor: float = setting(0.1, gt=0, le=1)
    # L = id + triplet + lambda * supcon, lambda = 0.5 (the paper, every dataset)
    loss_weights: dict[str, float] = setting({"id": 1.0, "triplet": 1.0, "supcon": 0.5})
    triplet_margin: float = setting(0.3, ge=0)       # paper silent; CLIP-ReID's 0.3
    label_smoothing: float = setting(0.1, ge=0, le=1)  # paper silent; CLIP-ReID's 0.1
    # Which features the batch-hard triplet sees (the sum of one triplet term per feature).
    # "feature": the identity feature (the interaction output; the projected image feature where
    # there is no interaction module); "mid", "final", "proj": the image encoder's features that
    # CLIP-ReID's triplet uses (ViT: CLS after the last-but-one block, after the last block,
    # projected; RN50: pooled layer3, pooled layer4, attnpool). The paper (§4.3): "the final hidden
    # states of the vision transformer, in conjunction the preceding two layer states, are also
    # employed to calculate L_Triplet" (like CLIP-ReID). A feature equal to the identity feature
    # ("proj" without interaction) is counted once.
    triplet_features: list[Literal["feature", "mid", "final", "proj"]] = setting(
        ["feature", "mid", "final", "proj"])
    # SupCon similarity. The paper (Eq. 1): cosine similarity divided by a temperature; it gives no
    # value for the temperature. true: L2-normalised features (the paper); false: the raw dot
    # product (CLIP-ReID's prompt-stage convention; an ablation, with supcon_temperature: 1.0)
    supcon_normalize: bool = True
    # null (our choice): the backbone's own trained CLIP temperature, 1 / exp(logit_scale), frozen
    # (1/100 for OpenAI's weights): the scale at which its image and text features were contrasted.
    # A number: that fixed temperature instead
    supcon_temperature: Optional[float] = setting(None, gt=0)
    # the paper's Table 3 ablations: "i2t" or "t2i" keeps one direction of L_SupCon only
    supcon_directions: Literal["both", "i2t", "t2i"] = "both"
    augment: AugmentCfg = field(default_factory=AugmentCfg)   # the same as Stage 2
    monitor_every: int = setting(0, ge=0, identity=False)    # epochs; validation images of TRAINING ids


@dataclass
class PromptSGCfg(ExperimentCfg):
    backbone: ClipBackboneCfg = field(default_factory=ClipBackboneCfg)
    # "promptsg": the method. "baseline": the paper's baseline, the CLIP image encoder fine-tuned
    # with ID + triplet on its projected feature (no prompt, no inversion, no interaction); the
    # triplet also sees `optim.triplet_features`' hidden states, as the method's does.
    variant: Literal["promptsg", "baseline"] = "promptsg"
    inversion: InversionCfg = field(default_factory=InversionCfg)
    interaction: InteractionCfg = field(default_factory=InteractionCfg)
    prompt: PromptCfg = field(default_factory=PromptCfg)
    text: TextCfg = field(default_factory=TextCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)

    @property
    def uses_prompt(self) -> bool:
        return self.variant == "promptsg"

    @property
    def composes(self) -> bool:
        """Whether prompts are composed per image (inversion network on)."""
        return self.uses_prompt and self.inversion.enabled

    def check(self, where: str) -> None:
        super().check(where)
        supcon = self.optim.loss_weights.get("supcon", 0.0)
        if supcon > 0 and not self.composes:
            why = ("the baseline has no prompt" if not self.uses_prompt else
                   "inversion.enabled: false gives every image the same fixed prompt, so SupCon "
                   "has nothing to contrast")
            raise ConfigError(f"{where}.optim.loss_weights.supcon: must be 0 here ({why}); set it to 0")
        if self.text.train and not self.uses_prompt:
            raise ConfigError(f"{where}.text.train: the baseline has no text encoder; set it to false")
        if not self.optim.supcon_normalize and self.optim.supcon_temperature is None:
            raise ConfigError(f"{where}.optim.supcon_temperature: the raw dot product (supcon_normalize: "
                              "false) needs a fixed temperature; set it, e.g. 1.0 (CLIP-ReID's)")
        feats = self.optim.triplet_features
        if len(set(feats)) != len(feats):
            raise ConfigError(f"{where}.optim.triplet_features: {feats} repeats a feature; list each once")
        if not feats and self.optim.loss_weights.get("triplet", 0.0) > 0:
            raise ConfigError(f"{where}.optim.triplet_features: empty, but the triplet weight is "
                              f"{self.optim.loss_weights['triplet']}; name a feature or set the weight to 0")
        if self.uses_prompt and not self.interaction.enabled and not self.composes:
            raise ConfigError(f"{where}.interaction.enabled: without the interaction module and the "
                              "inversion network the prompt is used by nothing; use variant: baseline")

    @property
    def interacts(self) -> bool:
        """Whether the interaction module forms the identity feature."""
        return self.uses_prompt and self.interaction.enabled

    def settings(self) -> dict[str, object]:
        """The settings an ablation changes, one row of the ablation table (with a note)."""
        w = self.optim.loss_weights
        notes = []
        if self.uses_prompt and not self.inversion.enabled:
            notes.append("no inversion network: every prompt is the fixed one, so λ is forced to 0")
        if not self.uses_prompt:
            notes.append("paper's baseline: image encoder, ID on its projected feature, triplet as the method's")
        if self.uses_prompt and not self.interaction.enabled:
            notes.append("no interaction module: ID, triplet and retrieval on the projected image feature")
        o, ia = self.optim, self.interaction
        supcon = None
        if self.composes:
            # ASCII only: the table goes to LaTeX as well
            sim = (f"cosine/T={o.supcon_temperature:g}" if o.supcon_temperature else "cosine/T=CLIP's") \
                if o.supcon_normalize else f"raw/T={o.supcon_temperature:g}"
            supcon = sim if o.supcon_directions == "both" else f"{sim}, {o.supcon_directions} only"
        return {"variant": self.variant,
                "inversion": self.composes,
                "interaction": (f"{ia.norm}-norm, {ia.reweight}" if self.interacts else "off")
                if self.uses_prompt else None,
                "blocks": ia.blocks if self.interacts else None,
                "SupCon": supcon,
                "triplet on": "+".join(o.triplet_features),
                "λ (supcon)": w.get("supcon", 0.0),
                "text encoder": ("trained" if self.text.train else "frozen") if self.uses_prompt else None,
                "template": self.prompt.template if self.uses_prompt else None,
                "ensemble": self.prompt.ensemble,
                "epochs": self.optim.epochs,
                "note": "; ".join(notes)}
