"""The two tiny random CLIP models (~2M parameters) for tests and the CPU demo: what they are built from."""
from __future__ import annotations

from typing import Any

_TEXT_TINY = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}
TINY_MODELS: dict[str, dict[str, Any]] = {
    # ~2M parameters: random init only, for tests and the CPU demo.
    "tiny-vit": {"arch": "ViT-B-16", "embed_dim": 64,
                 "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32,
                                "patch_size": 8},
                 "text_cfg": _TEXT_TINY},
    "tiny-rn": {"arch": "RN50", "embed_dim": 64,
                "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16},
                "text_cfg": _TEXT_TINY},
}
