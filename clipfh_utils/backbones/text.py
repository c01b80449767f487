"""CLIP's text tower run from token embeddings, and sentence templates with placeholder words.

Learnable prompts (CLIP-ReID's identity tokens, PromptSG's pseudo-word) replace the embeddings
of placeholder words in a frozen sentence. The text feature is read at the EOT position under
the causal mask; position 0 sees only itself and would be the same for every prompt (a bug in
the study's code), and forgetting the mask silently changes every feature.
"""
from __future__ import annotations

import torch
from torch import nn

from .loading import ClipModel


class TextEncoder(nn.Module):
    """open_clip's text tower run from embeddings (so prompts can be learnt)."""

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        for attr in ("transformer", "positional_embedding", "ln_final", "text_projection", "attn_mask"):
            if not hasattr(clip_model, attr):
                raise ValueError(f"this CLIP model has no '{attr}' on its text side; learnable prompts "
                                 "need a CLIP-style text tower (OpenAI-style open_clip models)")
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.register_buffer("attn_mask", clip_model.attn_mask, persistent=False)

    def forward(self, embeds: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """(B, L, W) token embeddings + (B, L) token ids -> (B, E) text features.

        L may be shorter than the context length (a sequence cut after its EOT token): the
        positions and the causal mask are cut to match, which leaves the EOT feature unchanged.
        """
        n = embeds.shape[1]
        x = embeds + self.positional_embedding[:n].to(embeds.dtype)
        x = self.transformer(x, attn_mask=self.attn_mask[:n, :n])
        x = self.ln_final(x)
        eot = token_ids.argmax(-1)  # the EOT token has the largest id in CLIP's vocabulary
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection


class PromptTemplate(nn.Module):
    """A frozen sentence whose `n` consecutive placeholder words take embeddings given at run time.

    "A photo of a X X X X hand." with n = 4 (CLIP-ReID), "A photo of a X hand." with n = 1
    (PromptSG). `forward(words)` returns the token embeddings with `words` (B, n, W) spliced in.
    With `truncate`, the sequence ends at its EOT token: under the causal mask nothing after it
    reaches the EOT feature, so the text feature is the same at a fraction of the cost.
    """

    def __init__(self, clip: ClipModel, template: str, n: int, placeholder: str = "X",
                 truncate: bool = False):
        super().__init__()
        tokens = clip.tokenizer([template])                       # (1, L)
        if truncate:
            tokens = tokens[:, :int(tokens[0].argmax()) + 1]      # EOT has the largest id
        ph = clip.tokenizer([placeholder])[0]
        if int((ph > 0).sum()) != 3:
            raise ValueError(f"placeholder {placeholder!r} must be a single token")
        where = (tokens[0] == int(ph[1])).nonzero().flatten().tolist()
        if len(where) != n or where != list(range(where[0], where[0] + n)):
            raise ValueError(f"prompt template {template!r} must contain exactly {n} consecutive "
                             f"'{placeholder}' placeholder(s)")
        self.template, self.n, self.start = template, n, where[0]
        emb_layer = clip.model.token_embedding
        dev = emb_layer.weight.device
        with torch.no_grad():
            emb = emb_layer(tokens.to(dev))                       # (1, L, W)
        self.register_buffer("prefix", emb[:, :self.start].clone())
        self.register_buffer("suffix", emb[:, self.start + n:].clone())
        self.register_buffer("token_ids", tokens.to(dev))
        self.width = emb.shape[-1]

    def forward(self, words: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, n, W) word embeddings -> token embeddings (B, L, W) and token ids (B, L)."""
        b = words.shape[0]
        embeds = torch.cat([self.prefix.expand(b, -1, -1).to(words.dtype), words,
                            self.suffix.expand(b, -1, -1).to(words.dtype)], dim=1)
        return embeds, self.token_ids.expand(b, -1)


def encode_sentences(clip: ClipModel, text: TextEncoder, sentences: list[str]) -> torch.Tensor:
    """Plain sentences through `text` (equals `encode_text`, but follows a fine-tuned `text`): (S, E)."""
    dev = clip.model.token_embedding.weight.device
    ids = clip.tokenizer(sentences).to(dev)
    return text(clip.model.token_embedding(ids), ids)
