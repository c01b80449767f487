"""Where a hand lies in the frame: its outline polygons in canonical hand units (y up) and the
mapping to pixels. `drawing` paints this geometry and `regions` labels the same geometry."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ...config import ASPECTS
from .hand import HandIdentity, Nuisance

SUPERSAMPLE = 2
HAND_SCALE = 1.1  # canonical hand units -> fraction of min(width, height)


def direction(angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit axis (0 deg = +y, + toward +x) and its normal pointing to +x at 0 deg."""
    a = math.radians(angle_deg)
    return np.array([math.sin(a), math.cos(a)]), np.array([math.cos(a), -math.sin(a)])


def _capsule(base: np.ndarray, angle_deg: float, length: float, w_base: float, w_tip: float,
             base_ext: float, n_arc: int = 9) -> np.ndarray:
    """A tapered finger: flat end `base_ext` behind `base`, round tip `length` in front of it."""
    d, n = direction(angle_deg)
    start = base - d * base_ext
    tip_c = base + d * (length - w_tip / 2.0)
    phi = np.linspace(0.0, math.pi, n_arc)
    arc = tip_c + (w_tip / 2.0) * (np.cos(phi)[:, None] * n + np.sin(phi)[:, None] * d)
    return np.vstack([start + n * w_base / 2.0, arc, start - n * w_base / 2.0])


def superellipse(center: np.ndarray, angle_deg: float, half_len: float, half_w: float,
                  n: int = 16, p: float = 3.0) -> np.ndarray:
    """Rounded rectangle (nail, ring band) centred on `center`, long axis along `angle_deg`."""
    d, nn = direction(angle_deg)
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    u = half_w * np.sign(c) * np.abs(c) ** (2.0 / p)
    v = half_len * np.sign(s) * np.abs(s) ** (2.0 / p)
    return center + u[:, None] * nn + v[:, None] * d


def _chaikin(pts: np.ndarray, iterations: int = 2) -> np.ndarray:
    """Corner cutting on a closed polygon: rounded palm outline without any curve library."""
    for _ in range(iterations):
        q = np.roll(pts, -1, axis=0)
        out = np.empty((2 * len(pts), 2))
        out[0::2] = 0.75 * pts + 0.25 * q
        out[1::2] = 0.25 * pts + 0.75 * q
        pts = out
    return pts


def bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = 12) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2


@dataclass
class Finger:
    base: np.ndarray
    angle: float
    length: float
    width: float


def _fingers(ident: HandIdentity, jitter: Sequence[float]) -> list[Finger]:
    pw, ph = ident.palm_width, ident.palm_height
    out: list[Finger] = []
    # thumb: hinges on the palm's thumb side at the identity's depth
    joint = np.array([-pw / 2.0 - ident.thenar_bulge * 0.55, -ph * ident.thumb_position])
    out.append(Finger(joint, ident.finger_angles[0] + jitter[0], ident.finger_lengths[0],
                       ident.finger_widths[0]))
    for i in range(1, 5):
        x = -pw / 2.0 + pw * (i - 0.5) / 4.0
        y = ident.knuckle_heights[i - 1]
        out.append(Finger(np.array([x, y]), ident.finger_angles[i] + jitter[i],
                           ident.finger_lengths[i], ident.finger_widths[i]))
    return out


def _palm_outline(ident: HandIdentity) -> np.ndarray:
    pw, ph, ww, bulge = ident.palm_width, ident.palm_height, ident.wrist_width, ident.thenar_bulge
    pts = np.array([
        (-pw / 2.0 + 0.01, -0.01), (-pw / 6.0, 0.012), (pw / 6.0, 0.008), (pw / 2.0 - 0.01, -0.03),
        (pw / 2.0 + 0.004, -ph * 0.35), (pw / 2.0 - 0.012, -ph * 0.75), (ww / 2.0, -ph),
        (ww / 2.0 + 0.01, -ph - 0.10), (ww / 2.0 + 0.05, -ph - 0.8),
        (-ww / 2.0 - 0.05, -ph - 0.8), (-ww / 2.0 - 0.01, -ph - 0.10), (-ww / 2.0, -ph),
        (-pw / 2.0 - bulge, -ph * 0.72), (-pw / 2.0 - bulge * 0.7, -ph * 0.42),
        (-pw / 2.0, -ph * 0.12),
    ])
    return _chaikin(pts, 2)


def _thumb_metacarpal(ident: HandIdentity, thumb: Finger) -> np.ndarray:
    """The fleshy segment joining the palm to the thumb (drawn as a capsule toward the joint)."""
    pw, ph = ident.palm_width, ident.palm_height
    start = np.array([-pw * 0.22, -ph * 0.88])
    vec = thumb.base - start
    length = float(np.hypot(*vec))
    angle = math.degrees(math.atan2(vec[0], vec[1]))
    w = thumb.width * 1.25
    return _capsule(start, angle, length + w / 2.0, w * 1.15, w, base_ext=0.0)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

class Mapper:
    """Canonical hand units -> supersampled pixel coordinates (mirror, rotate, scale, shift)."""

    def __init__(self, ident: HandIdentity, nuis: Nuisance, mirror: bool, w: int, h: int):
        self.m = -1.0 if mirror else 1.0
        self.unit = min(w, h) * HAND_SCALE * nuis.scale
        # centre the visible hand (wrist .. middle fingertip) in the frame
        self.yc = 0.5 * (ident.finger_lengths[2] - ident.palm_height - 0.08)
        a = math.radians(nuis.rotation_deg)
        self.cos, self.sin = math.cos(a), math.sin(a)
        # ImageDraw fills by pixel area with edges at integer coordinates: the frame centre is
        # w / 2 (not (w - 1) / 2), which makes the left/right mirror exact
        self.cx = w / 2.0 + nuis.translate[0] * w
        self.cy = h / 2.0 + nuis.translate[1] * h

    def __call__(self, pts: np.ndarray) -> list[tuple[float, float]]:
        p = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        x = p[:, 0] * self.m
        y = p[:, 1] - self.yc
        u = (x * self.cos - y * self.sin) * self.unit
        v = (x * self.sin + y * self.cos) * self.unit
        return list(zip((self.cx + u).tolist(), (self.cy - v).tolist()))

    def length(self, value: float) -> float:
        return value * self.unit

    def inverse(self, px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates -> canonical hand units (the exact inverse of `__call__`)."""
        u, v = (np.asarray(px) - self.cx) / self.unit, (self.cy - np.asarray(py)) / self.unit
        x = (u * self.cos + v * self.sin) * self.m
        y = -u * self.sin + v * self.cos + self.yc
        return x, y

    def keep_inside(self, pts: np.ndarray, w: int, h: int, margin: float = 0.02) -> None:
        """Shift so `pts` (fingers, thumb) stay inside the frame; only the wrist may leave it."""
        p = np.asarray(self(pts))
        mx, my = margin * w, margin * h
        self.cx += max(0.0, mx - p[:, 0].min()) - max(0.0, p[:, 0].max() - (w - mx))
        self.cy += max(0.0, my - p[:, 1].min())


def parse_aspect(aspect: str) -> tuple[bool, bool]:
    a = str(aspect).strip().lower()
    if a not in ASPECTS:
        raise ValueError(f"aspect {aspect!r} is not one of {', '.join(ASPECTS)}")
    side, hand = a.split()
    return side == "palmar", hand == "left"


def check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        w, h = int(size[0]), int(size[1])
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"size must be (width, height), got {size!r}") from None
    if w < 8 or h < 8:
        raise ValueError(f"size must be at least 8x8 pixels, got {size!r}")
    return w, h


def layout(identity: HandIdentity, nuisance: Nuisance, aspect: str, W: int, H: int
            ) -> tuple[bool, Mapper, list[Finger], list[np.ndarray]]:
    """Where the hand lies in a W x H canvas: (palmar, mapper, fingers, outline polygons).

    The polygons are the palm (with the forearm), the thumb's metacarpal, then one capsule per
    finger (thumb first). `render_hand` draws them; `hand_regions` labels the same geometry.
    """
    palmar, left = parse_aspect(aspect)
    mp = Mapper(identity, nuisance, mirror=(palmar != left), w=W, h=H)
    fingers = _fingers(identity, nuisance.finger_jitter_deg)
    thumb = fingers[0]
    parts = [_palm_outline(identity), _thumb_metacarpal(identity, thumb)]
    for f in fingers:
        base_ext = f.width * (0.9 if f is thumb else 1.6)
        parts.append(_capsule(f.base, f.angle, f.length, f.width, f.width * 0.86, base_ext))
    mp.keep_inside(np.vstack(parts[1:]), W, H)
    return palmar, mp, fingers, parts
