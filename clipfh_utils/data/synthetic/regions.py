"""Hand regions of a rendered photo (fingers, knuckles, palm, wrist), for "where does the model look"
figures: labels from the drawing's own geometry, pixel for pixel."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .geometry import SUPERSAMPLE, check_size, direction, layout
from .hand import HandIdentity, Nuisance

REGION_NAMES: tuple[str, ...] = ("background", "fingers", "knuckles", "back of hand / palm", "wrist")
BACKGROUND, FINGERS, KNUCKLES, PALM, WRIST = range(5)
# knuckle row (MCP joints) around the knuckle line, in palm heights; finger joints +-0.02 units
_MCP_BAND = (-0.14, 0.09)
_JOINT_HALF_WIDTH = 0.02
_THUMB_JOINT = 0.48


def hand_regions(identity: HandIdentity, nuisance: Nuisance, aspect: str,
                 size: tuple[int, int] = (160, 120)) -> np.ndarray:
    """Region code of every pixel of the photo `render_hand` draws with the same arguments.

    (h, w) uint8, codes index REGION_NAMES. From the drawing's own geometry: the finger capsules
    are fingers; the knuckle row around the knuckle line and the bands across each finger where
    the knuckle wrinkles are drawn (its joints) are knuckles; the hand below the palm (y <
    -palm_height) is the wrist; the rest of the hand is the back of the hand (palm when palmar).
    """
    w, h = check_size(size)
    W, H = w * SUPERSAMPLE, h * SUPERSAMPLE
    _, mp, fingers, parts = layout(identity, nuisance, aspect, W, H)
    outline_px = max(1, int(round(mp.length(0.0045))))

    def mask(polys: list[np.ndarray]) -> np.ndarray:
        m = Image.new("L", (W, H), 0)
        d = ImageDraw.Draw(m)
        for poly in polys:
            d.polygon(mp(poly), fill=255, outline=255, width=outline_px)
        return np.asarray(m) > 127

    hand = mask(parts)
    finger_masks = [mask([p]) for p in parts[2:]]
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    x, y = mp.inverse(xs, ys)
    ph = identity.palm_height
    labels = np.full((H, W), BACKGROUND, dtype=np.uint8)
    labels[hand] = PALM
    knuckles = (y > _MCP_BAND[0] * ph) & (y < _MCP_BAND[1] * ph) & ~finger_masks[0]
    for i, (f, fm) in enumerate(zip(fingers, finger_masks)):
        d, _ = direction(f.angle)
        along = (x - f.base[0]) * d[0] + (y - f.base[1]) * d[1]
        labels[fm & hand & (along >= 0)] = FINGERS  # the capsule's end behind the base is palm
        for t in ((_THUMB_JOINT,) if i == 0 else identity.joint_fractions):
            knuckles |= fm & (np.abs(along - t * f.length) < _JOINT_HALF_WIDTH)
    labels[knuckles & hand] = KNUCKLES
    labels[hand & (y < -ph)] = WRIST
    return np.asarray(Image.fromarray(labels).resize((w, h), Image.Resampling.NEAREST))

