"""Where a model looks: ViT attention rollout, similarity Grad-CAM, Stage 3 cross-attention maps,
and the hand regions (fingers, knuckles, back of hand / palm, wrist, background) they fall on.

Every map is returned as a non-negative (B, h, w) tensor; `as_distribution` makes it sum to 1 so
that maps of different methods and resolutions can be compared region by region. Nothing here
trains or changes a model's outputs.
"""
from .attention import AttentionRecorder, attention_rollout, attention_weights, rollout_maps
from .gradcam import ExplainDependencyError, similarity_gradcam
from .maps import MapSource, ModelEntry, as_distribution, entries_from_results
from .regions import REGION_NAMES, dataset_regions, photo_regions, region_shares

__all__ = ["AttentionRecorder", "ExplainDependencyError", "MapSource", "ModelEntry", "REGION_NAMES",
           "as_distribution", "attention_rollout", "attention_weights", "dataset_regions",
           "entries_from_results", "photo_regions", "region_shares", "rollout_maps",
           "similarity_gradcam"]
