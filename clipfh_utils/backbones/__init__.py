"""CLIP backbones: building by name (QuickGELU, last stride), finding and checking weights offline,
adapters that give every method the same features (global, intermediate, projected, patch tokens),
the text tower from embeddings, and pixel normalisation + batched embedding."""
from .adapters import VisionAdapter, VisionFeatures
from .features import autocast_for, embed_images, normalize
from .loading import ClipModel, load_clip, resolve_device
from .text import PromptTemplate, TextEncoder, encode_sentences
from .tiny import TINY_MODELS
from .weights import WeightsMismatchError, WeightsNotFoundError

__all__ = ["TINY_MODELS", "ClipModel", "PromptTemplate", "TextEncoder", "VisionAdapter",
           "VisionFeatures", "WeightsMismatchError", "WeightsNotFoundError", "autocast_for",
           "embed_images", "encode_sentences", "load_clip", "normalize", "resolve_device"]
