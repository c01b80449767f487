"""Deterministic synthetic hands in the 11k Hands layout (``Hands/*.jpg`` + ``HandInfo.csv``).

The real 11k Hands images are not available offline, so the workbench tests and demos itself on
drawn hands. A person's IDENTITY lives in the hand (skin tone, palm and finger proportions, finger
spread, thumb position, moles, knuckle wrinkles, palm creases, nail tone/polish) and is shared by
all four aspects, like the real dataset where a person photographs both hands from both sides.
Everything a camera changes from shot to shot is NUISANCE (rotation, scale, position, lighting,
colour cast, background, finger-spread jitter, noise) and is drawn per image. A small network
trained from scratch can therefore learn to re-identify people, while a random-init one cannot
simply match backgrounds.

Every random draw comes from a numpy Generator seeded with a sha256 of (purpose, key, seed), never
Python's salted ``hash()``, so the same arguments give byte-identical files on every run and
machine. Only numpy and pillow are used.

Modules by job: `hand` (identity and nuisance), `geometry` (the outline and its pixel mapping),
`drawing` (render_hand), `regions` (hand_regions), `writers` (dataset files).
"""
from ...config import ASPECTS
from ..handinfo import ALL_COLUMNS as HANDINFO_COLUMNS
from .drawing import render_hand
from .hand import SKIN_COLORS, HandIdentity, Nuisance, identity_from_id, nuisance_from_name
from .regions import BACKGROUND, FINGERS, KNUCKLES, PALM, REGION_NAMES, WRIST, hand_regions
from .writers import (GENERATOR_VERSION, HD_ORIGINAL, STAMP_NAME, generate_synthetic_dataset, generate_synthetic_hd,
                      render_images_for_handinfo)


__all__ = [
    "ASPECTS", "BACKGROUND", "FINGERS", "GENERATOR_VERSION", "HANDINFO_COLUMNS", "HD_ORIGINAL", "KNUCKLES", "PALM",
    "REGION_NAMES", "SKIN_COLORS", "STAMP_NAME", "WRIST", "HandIdentity", "Nuisance", "generate_synthetic_dataset",
    "generate_synthetic_hd", "hand_regions", "identity_from_id", "nuisance_from_name", "render_hand",
    "render_images_for_handinfo",
]
