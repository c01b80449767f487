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
"""
from __future__ import annotations

import colorsys
import csv
import hashlib
import io
import json
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..atomic import atomic_write_bytes
from ..config import ASPECTS
from .handinfo import ALL_COLUMNS as HANDINFO_COLUMNS

__all__ = [
    "ASPECTS", "GENERATOR_VERSION", "HANDINFO_COLUMNS", "HandIdentity", "Nuisance",
    "identity_from_id", "nuisance_from_name", "render_hand", "generate_synthetic_dataset",
    "generate_synthetic_hd", "render_images_for_handinfo", "REGION_NAMES", "hand_regions",
]

SKIN_COLORS: tuple[str, ...] = ("very fair", "fair", "medium", "dark")
# Bump whenever the drawing or the sampling changes: it invalidates generated datasets' stamps.
GENERATOR_VERSION = "1"
STAMP_NAME = ".synthetic_params.json"

_SKIN_BASE: dict[str, tuple[float, float, float]] = {
    "very fair": (236.0, 204.0, 184.0),
    "fair": (224.0, 180.0, 150.0),
    "medium": (190.0, 140.0, 104.0),
    "dark": (118.0, 80.0, 56.0),
}
_SKIN_PROBS = (0.15, 0.35, 0.35, 0.15)
_POLISH = ((200, 20, 45), (230, 80, 140), (120, 30, 110), (60, 20, 40), (240, 120, 100),
           (150, 0, 20), (90, 60, 160))
_METALS = ((212, 175, 55), (196, 198, 206), (183, 110, 80))  # gold, silver, rose gold
_SUPERSAMPLE = 2
_HAND_SCALE = 1.1  # canonical hand units -> fraction of min(width, height)
_JPEG_QUALITY_RENDER = 92


# --------------------------------------------------------------------------------------------
# Seeding
# --------------------------------------------------------------------------------------------

def _rng(*parts: object) -> np.random.Generator:
    """A Generator seeded from a sha256 of the parts: stable across runs, processes, machines."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def _rgb(values: Sequence[float]) -> tuple[int, int, int]:
    r, g, b = (int(round(min(255.0, max(0.0, float(v))))) for v in values)
    return (r, g, b)


def _mix(a: Sequence[float], b: Sequence[float], t: float) -> tuple[int, int, int]:
    return _rgb([x + (y - x) * t for x, y in zip(a, b)])


def _scale_rgb(a: Sequence[float], f: float) -> tuple[int, int, int]:
    return _rgb([x * f for x in a])


# --------------------------------------------------------------------------------------------
# Identity and nuisance
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HandIdentity:
    """Everything that makes a person's hand theirs; shared by all images and aspects of the id.

    Geometry is in canonical hand units (1.0 ~ the frame's shorter side at scale 1) for a RIGHT
    hand seen from the back (dorsal), fingers up, thumb on the left (negative x); knuckle line at
    y = 0, wrist at y = -palm_height. Fingers are ordered thumb, index, middle, ring, little.
    """

    person_id: str
    age: int
    gender: str
    skin_color: str  # the HandInfo label: very fair / fair / medium / dark
    skin_rgb: tuple[int, int, int]
    palm_rgb: tuple[int, int, int]  # lighter palmar tone
    nail_rgb: tuple[int, int, int]
    nail_polish: bool
    palm_width: float
    palm_height: float
    wrist_width: float
    thenar_bulge: float
    finger_lengths: tuple[float, float, float, float, float]
    finger_widths: tuple[float, float, float, float, float]
    finger_angles: tuple[float, float, float, float, float]  # deg; + = away from the thumb
    knuckle_heights: tuple[float, float, float, float]  # index..little base offsets along y
    thumb_position: float  # thumb joint depth below the knuckle line, fraction of palm height
    joint_fractions: tuple[float, float]  # finger joints along the finger, fraction of length
    knuckle_strength: float  # 0..1, darkness/number of dorsal knuckle wrinkles
    moles: tuple[tuple[float, float, float], ...]  # (x, y, radius), dorsal; y > 0: on a finger
    palm_creases: tuple[tuple[float, float, float, float, float, float], ...]  # bezier, palm-relative
    crease_strength: float
    ring_finger: int  # 1..4: finger that carries the ring when the image has an accessory
    ring_rgb: tuple[int, int, int]


def identity_from_id(person_id: str, seed: int = 0) -> HandIdentity:
    """The hand of `person_id`, deterministic from (stripped id, seed) via a sha256-seeded rng."""
    pid = str(person_id).strip()
    rng = _rng("identity", pid, seed)
    gender = "male" if rng.random() < 0.5 else "female"
    age = int(rng.integers(18, 76))
    skin_color = SKIN_COLORS[int(rng.choice(len(SKIN_COLORS), p=_SKIN_PROBS))]
    base = np.array(_SKIN_BASE[skin_color])
    # lightness, warmth and a little per-channel tint: distinct per person, always skin-like
    skin = (base * float(np.exp(rng.normal(0.0, 0.12))) + np.array([1.0, 0.0, -1.0])
            * rng.normal(0.0, 10.0) + np.clip(rng.normal(0.0, 5.0, 3), -10.0, 10.0))
    skin_rgb = _rgb(skin)
    palm_rgb = _mix(skin_rgb, (246, 196, 182), 0.15 + 0.35 * rng.random())
    nail_polish = bool(gender == "female" and rng.random() < 0.25)
    if nail_polish:
        nail_rgb = _POLISH[int(rng.integers(len(_POLISH)))]
    else:
        nail_rgb = _mix(skin_rgb, (250, 222, 220), 0.45 + 0.25 * rng.random())

    size = (1.06 if gender == "male" else 0.95) * float(np.exp(rng.normal(0.0, 0.06)))
    palm_width = size * 0.30 * float(np.exp(rng.normal(0.0, 0.09)))
    palm_height = size * 0.33 * float(np.exp(rng.normal(0.0, 0.08)))
    wrist_width = palm_width * float(rng.uniform(0.70, 0.84))
    thenar_bulge = palm_width * float(rng.uniform(0.05, 0.16))
    mean_len = np.array([0.215, 0.265, 0.300, 0.280, 0.220])
    finger_lengths = tuple(float(v) for v in size * mean_len * np.exp(rng.normal(0, 0.11, 5)))
    mean_w = np.array([0.084, 0.066, 0.068, 0.063, 0.054])
    finger_widths = tuple(float(v) for v in
                          mean_w * (palm_width / 0.30) * np.exp(rng.normal(0, 0.07, 5)))
    spread = float(rng.uniform(0.3, 1.6))
    mean_ang = np.array([-48.0, -9.0, 0.0, 7.0, 16.0])
    angles = mean_ang * np.array([0.8 + 0.3 * spread, spread, 1.0, spread, spread])
    finger_angles = tuple(float(v) for v in angles + rng.normal(0, [8.0, 4.0, 3.0, 4.0, 5.0]))
    knuckle_heights = tuple(float(v) for v in
                            np.array([-0.006, 0.006, -0.002, -0.026]) + rng.normal(0, 0.008, 4))
    thumb_position = float(rng.uniform(0.40, 0.66))
    joint_fractions = (float(rng.uniform(0.34, 0.42)), float(rng.uniform(0.64, 0.72)))
    knuckle_strength = float(rng.uniform(0.15, 1.0))
    moles = []
    for _ in range(int(rng.integers(0, 7))):
        if rng.random() < 0.75:  # back of the hand
            x = float(rng.uniform(-0.42, 0.45)) * palm_width
            y = -float(rng.uniform(0.08, 0.9)) * palm_height
        else:  # on a finger: x picks the nearest finger, y = distance from its base
            x = float(rng.uniform(-0.30, 0.40)) * palm_width
            y = float(rng.uniform(0.02, 0.14))
        moles.append((x, y, float(rng.uniform(0.005, 0.015))))
    # palm creases, points as (u, v): u = x / palm_width in [-0.5, 0.5] (thumb side negative),
    # v = depth below the knuckle line / palm_height in [0, 1]
    templates = [
        (0.52, 0.20, 0.12, 0.30, -0.22, 0.07),   # heart line
        (-0.50, 0.33, -0.02, 0.40, 0.36, 0.52),  # head line
        (-0.47, 0.34, -0.02, 0.72, -0.14, 1.02),  # life line
    ]
    if rng.random() < 0.55:
        templates.append((0.02, 1.0, 0.06, 0.65, 0.0, 0.30))  # fate line
    templates = [np.array(t) + rng.normal(0, 0.08, 6) for t in templates]
    for _ in range(int(rng.integers(0, 4))):  # minor creases: short, anywhere on the palm
        u, v = rng.uniform(-0.35, 0.35), rng.uniform(0.2, 0.85)
        a, r = rng.uniform(0, math.pi), rng.uniform(0.08, 0.2)
        du, dv = r * math.cos(a), r * math.sin(a)
        templates.append(np.array([u - du, v - dv, u + rng.normal(0, 0.04), v + rng.normal(0, 0.04),
                                   u + du, v + dv]))
    creases = tuple(tuple(float(v) for v in t) for t in templates)
    ring_finger = 3 if rng.random() < 0.6 else int(rng.integers(1, 5))
    ring_rgb = _METALS[int(rng.integers(len(_METALS)))]
    return HandIdentity(
        person_id=pid, age=age, gender=gender, skin_color=skin_color, skin_rgb=skin_rgb,
        palm_rgb=palm_rgb, nail_rgb=nail_rgb, nail_polish=nail_polish,
        palm_width=palm_width, palm_height=palm_height, wrist_width=wrist_width,
        thenar_bulge=thenar_bulge, finger_lengths=finger_lengths,  # type: ignore[arg-type]
        finger_widths=finger_widths, finger_angles=finger_angles,  # type: ignore[arg-type]
        knuckle_heights=knuckle_heights, thumb_position=thumb_position,  # type: ignore[arg-type]
        joint_fractions=joint_fractions, knuckle_strength=knuckle_strength,
        moles=tuple(moles), palm_creases=creases,  # type: ignore[arg-type]
        crease_strength=float(rng.uniform(0.35, 1.0)), ring_finger=ring_finger, ring_rgb=ring_rgb)


@dataclass(frozen=True)
class Nuisance:
    """What changes from photo to photo of the same hand; must not carry identity.

    translate is (dx, dy) as fractions of the frame's width/height (+y down); rotation is
    counter-clockwise degrees about the frame centre; background_angle_deg is the gradient's
    direction (0 = top to bottom, which is left/right symmetric).
    """

    rotation_deg: float = 0.0
    scale: float = 1.0
    translate: tuple[float, float] = (0.0, 0.0)
    brightness: float = 1.0
    gamma: float = 1.0
    color_cast: tuple[float, float, float] = (1.0, 1.0, 1.0)
    background_rgb: tuple[int, int, int] = (235, 235, 235)
    background_rgb2: tuple[int, int, int] = (235, 235, 235)
    background_angle_deg: float = 0.0
    finger_jitter_deg: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)
    shadow_strength: float = 0.0
    noise_std: float = 0.0  # ~std in grey levels (0..255) of per-pixel sensor noise
    noise_seed: int = 0


def nuisance_from_name(image_name: str, seed: int = 0) -> Nuisance:
    """Per-image camera/pose conditions, deterministic from (imageName, seed)."""
    rng = _rng("nuisance", str(image_name).strip(), seed)
    if rng.random() < 0.4:  # the real dataset's near-white paper
        h, s, v = rng.random(), rng.uniform(0.0, 0.08), rng.uniform(0.82, 1.0)
    else:
        h, s, v = rng.random(), rng.uniform(0.0, 0.45), rng.uniform(0.35, 0.98)
    c0 = np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0
    h2 = (h + rng.normal(0.0, 0.05)) % 1.0
    s2 = float(np.clip(s + rng.normal(0.0, 0.08), 0.0, 1.0))
    v2 = float(np.clip(v + rng.normal(0.0, 0.15), 0.15, 1.0))
    c1 = np.array(colorsys.hsv_to_rgb(h2, s2, v2)) * 255.0
    return Nuisance(
        rotation_deg=float(rng.uniform(-12.0, 12.0)),
        scale=float(rng.uniform(0.95, 1.04)),
        translate=(float(rng.uniform(-0.06, 0.06)), float(rng.uniform(-0.04, 0.04))),
        brightness=float(rng.uniform(0.93, 1.06)),
        gamma=float(np.exp(rng.normal(0.0, 0.05))),
        color_cast=tuple(float(v) for v in np.exp(rng.normal(0.0, 0.02, 3))),  # type: ignore[arg-type]
        background_rgb=_rgb(c0),
        background_rgb2=_rgb(c1),
        background_angle_deg=float(rng.uniform(0.0, 360.0)),
        finger_jitter_deg=tuple(float(v) for v in np.clip(rng.normal(0, 2.0, 5), -5, 5)),  # type: ignore[arg-type]
        shadow_strength=float(rng.uniform(0.0, 0.35)),
        noise_std=float(rng.uniform(1.0, 5.0)),
        noise_seed=int(rng.integers(0, 2**31 - 1)),
    )


# --------------------------------------------------------------------------------------------
# Geometry helpers (canonical hand units, y up)
# --------------------------------------------------------------------------------------------

def _dir(angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit axis (0 deg = +y, + toward +x) and its normal pointing to +x at 0 deg."""
    a = math.radians(angle_deg)
    return np.array([math.sin(a), math.cos(a)]), np.array([math.cos(a), -math.sin(a)])


def _capsule(base: np.ndarray, angle_deg: float, length: float, w_base: float, w_tip: float,
             base_ext: float, n_arc: int = 9) -> np.ndarray:
    """A tapered finger: flat end `base_ext` behind `base`, round tip `length` in front of it."""
    d, n = _dir(angle_deg)
    start = base - d * base_ext
    tip_c = base + d * (length - w_tip / 2.0)
    phi = np.linspace(0.0, math.pi, n_arc)
    arc = tip_c + (w_tip / 2.0) * (np.cos(phi)[:, None] * n + np.sin(phi)[:, None] * d)
    return np.vstack([start + n * w_base / 2.0, arc, start - n * w_base / 2.0])


def _superellipse(center: np.ndarray, angle_deg: float, half_len: float, half_w: float,
                  n: int = 16, p: float = 3.0) -> np.ndarray:
    """Rounded rectangle (nail, ring band) centred on `center`, long axis along `angle_deg`."""
    d, nn = _dir(angle_deg)
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


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = 12) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2


@dataclass
class _Finger:
    base: np.ndarray
    angle: float
    length: float
    width: float


def _fingers(ident: HandIdentity, jitter: Sequence[float]) -> list[_Finger]:
    pw, ph = ident.palm_width, ident.palm_height
    out: list[_Finger] = []
    # thumb: hinges on the palm's thumb side at the identity's depth
    joint = np.array([-pw / 2.0 - ident.thenar_bulge * 0.55, -ph * ident.thumb_position])
    out.append(_Finger(joint, ident.finger_angles[0] + jitter[0], ident.finger_lengths[0],
                       ident.finger_widths[0]))
    for i in range(1, 5):
        x = -pw / 2.0 + pw * (i - 0.5) / 4.0
        y = ident.knuckle_heights[i - 1]
        out.append(_Finger(np.array([x, y]), ident.finger_angles[i] + jitter[i],
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


def _thumb_metacarpal(ident: HandIdentity, thumb: _Finger) -> np.ndarray:
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

class _Mapper:
    """Canonical hand units -> supersampled pixel coordinates (mirror, rotate, scale, shift)."""

    def __init__(self, ident: HandIdentity, nuis: Nuisance, mirror: bool, w: int, h: int):
        self.m = -1.0 if mirror else 1.0
        self.unit = min(w, h) * _HAND_SCALE * nuis.scale
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


def _parse_aspect(aspect: str) -> tuple[bool, bool]:
    a = str(aspect).strip().lower()
    if a not in ASPECTS:
        raise ValueError(f"aspect {aspect!r} is not one of {', '.join(ASPECTS)}")
    side, hand = a.split()
    return side == "palmar", hand == "left"


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        w, h = int(size[0]), int(size[1])
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"size must be (width, height), got {size!r}") from None
    if w < 8 or h < 8:
        raise ValueError(f"size must be at least 8x8 pixels, got {size!r}")
    return w, h


def _layout(identity: HandIdentity, nuisance: Nuisance, aspect: str, W: int, H: int
            ) -> tuple[bool, _Mapper, list[_Finger], list[np.ndarray]]:
    """Where the hand lies in a W x H canvas: (palmar, mapper, fingers, outline polygons).

    The polygons are the palm (with the forearm), the thumb's metacarpal, then one capsule per
    finger (thumb first). `render_hand` draws them; `hand_regions` labels the same geometry.
    """
    palmar, left = _parse_aspect(aspect)
    mp = _Mapper(identity, nuisance, mirror=(palmar != left), w=W, h=H)
    fingers = _fingers(identity, nuisance.finger_jitter_deg)
    thumb = fingers[0]
    parts = [_palm_outline(identity), _thumb_metacarpal(identity, thumb)]
    for f in fingers:
        base_ext = f.width * (0.9 if f is thumb else 1.6)
        parts.append(_capsule(f.base, f.angle, f.length, f.width, f.width * 0.86, base_ext))
    mp.keep_inside(np.vstack(parts[1:]), W, H)
    return palmar, mp, fingers, parts


def render_hand(identity: HandIdentity, nuisance: Nuisance, aspect: str, accessory: bool,
                size: tuple[int, int] = (160, 120)) -> Image.Image:
    """Draw one photo of `identity`'s hand as an RGB image of `size` = (width, height).

    Shapes are drawn with ImageDraw on a 2x canvas and downsampled with LANCZOS (smooth edges,
    fast); the hand is composited premultiplied over the per-image background, then lighting and
    noise are applied to the whole frame like a camera would. "left" is the mirror of "right" and
    "palmar" the mirror of "dorsal" (the thumb changes side), so dorsal left == flipped dorsal right.
    """
    w, h = _check_size(size)
    W, H = w * _SUPERSAMPLE, h * _SUPERSAMPLE
    palmar, mp, fingers, parts = _layout(identity, nuisance, aspect, W, H)
    thumb = fingers[0]
    colour = Image.new("RGB", (W, H), (0, 0, 0))
    mask = Image.new("L", (W, H), 0)
    dc, dm = ImageDraw.Draw(colour), ImageDraw.Draw(mask)

    skin = identity.palm_rgb if palmar else identity.skin_rgb
    edge = _scale_rgb(identity.skin_rgb, 0.72 if palmar else 0.68)
    outline_px = max(1, int(round(mp.length(0.0045))))
    mapped = [mp(p) for p in parts]
    for poly in mapped:  # darker silhouette rim: separates touching fingers, looks shaded
        dc.polygon(poly, fill=edge, outline=edge, width=outline_px)
        dm.polygon(poly, fill=255, outline=255, width=outline_px)
    for poly in mapped:
        dc.polygon(poly, fill=skin)
    pw, ph = identity.palm_width, identity.palm_height

    line_px = max(1, int(round(mp.length(0.0035))))
    jf = identity.joint_fractions
    if palmar:
        crease = _mix(identity.palm_rgb, _scale_rgb(identity.skin_rgb, 0.5),
                      0.55 + 0.45 * identity.crease_strength)
        crease_px = max(2, int(round(mp.length(0.005 + 0.006 * identity.crease_strength))))
        for c in identity.palm_creases:
            pts = [np.array([c[0] * pw, -c[1] * ph]), np.array([c[2] * pw, -c[3] * ph]),
                   np.array([c[4] * pw, -c[5] * ph])]
            dc.line(mp(_bezier(*pts)), fill=crease, width=crease_px, joint="curve")
        for f in fingers:  # flexion creases across each finger at its joints
            d, n = _dir(f.angle)
            fracs = (0.5,) if f is thumb else (0.04, jf[0], jf[1])
            for t in fracs:
                c0 = f.base + d * (t * f.length)
                seg = np.array([c0 - n * f.width * 0.42, c0 + n * f.width * 0.42])
                dc.line(mp(seg), fill=crease, width=line_px)
        wrist = np.array([[-identity.wrist_width * 0.45, -ph - 0.02],
                          [0.0, -ph - 0.03], [identity.wrist_width * 0.45, -ph - 0.02]])
        dc.line(mp(wrist), fill=crease, width=line_px, joint="curve")
    else:
        wrinkle = _mix(identity.skin_rgb, _scale_rgb(identity.skin_rgb, 0.55),
                       0.35 + 0.6 * identity.knuckle_strength)
        n_lines = 2 if identity.knuckle_strength < 0.55 else 3
        for f in fingers:
            d, n = _dir(f.angle)
            fracs = (0.48,) if f is thumb else jf
            for t in fracs:
                for k in range(n_lines):
                    c0 = f.base + d * (t * f.length + (k - (n_lines - 1) / 2.0) * 0.011)
                    arc = _bezier(c0 - n * f.width * 0.28, c0 + d * 0.006, c0 + n * f.width * 0.28, 5)
                    dc.line(mp(arc), fill=wrinkle, width=line_px, joint="curve")
            # nail at the tip
            tip_w = f.width * 0.86
            nail_len = f.length * (0.20 if f is thumb else 0.15)
            centre = f.base + d * (f.length - tip_w * 0.12 - nail_len / 2.0)
            nail = mp(_superellipse(centre, f.angle, nail_len / 2.0, tip_w * 0.36, n=16, p=3.0))
            dc.polygon(nail, fill=identity.nail_rgb, outline=_scale_rgb(identity.nail_rgb, 0.8))
        mole = _scale_rgb(identity.skin_rgb, 0.42)
        for (mx, my, r) in identity.moles:
            if my > 0:  # on a finger: follow the nearest finger's direction
                f = min(fingers[1:], key=lambda fi: abs(fi.base[0] - mx))
                d, n = _dir(f.angle)
                side = float(np.clip(mx - f.base[0], -0.3 * f.width, 0.3 * f.width))
                p = f.base + d * my + n * side
            else:
                p = np.array([mx, my])
            (px, py), rr = mp(p)[0], max(0.8, mp.length(r))
            dc.ellipse([px - rr, py - rr, px + rr, py + rr], fill=mole)

    if accessory:
        f = fingers[max(1, min(4, identity.ring_finger))]
        d, n = _dir(f.angle)
        centre = f.base + d * (0.2 * f.length)
        band = mp(_superellipse(centre, f.angle, 0.014, f.width * 0.56, n=20, p=6.0))
        metal = identity.ring_rgb
        dc.polygon(band, fill=metal, outline=_scale_rgb(metal, 0.6), width=outline_px)
        dm.polygon(band, fill=255, outline=255, width=outline_px)
        shine = np.array([centre + n * f.width * 0.4 + d * 0.004, centre - n * f.width * 0.4 + d * 0.004])
        dc.line(mp(shine), fill=_mix(metal, (255, 255, 255), 0.6), width=line_px)

    colour = colour.resize((w, h), Image.Resampling.LANCZOS)
    mask = mask.resize((w, h), Image.Resampling.LANCZOS)
    return _finish(colour, mask, nuisance, w, h)


# Hand regions of a rendered photo, for "where does the model look" figures. Codes index REGION_NAMES.
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
    w, h = _check_size(size)
    W, H = w * _SUPERSAMPLE, h * _SUPERSAMPLE
    _, mp, fingers, parts = _layout(identity, nuisance, aspect, W, H)
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
        d, _ = _dir(f.angle)
        along = (x - f.base[0]) * d[0] + (y - f.base[1]) * d[1]
        labels[fm & hand & (along >= 0)] = FINGERS  # the capsule's end behind the base is palm
        for t in ((_THUMB_JOINT,) if i == 0 else identity.joint_fractions):
            knuckles |= fm & (np.abs(along - t * f.length) < _JOINT_HALF_WIDTH)
    labels[knuckles & hand] = KNUCKLES
    labels[hand & (y < -ph)] = WRIST
    return np.asarray(Image.fromarray(labels).resize((w, h), Image.Resampling.NEAREST))


def _finish(colour: Image.Image, mask: Image.Image, nuis: Nuisance, w: int, h: int) -> Image.Image:
    """Background, hand shadow, premultiplied composite, lighting, noise -> uint8 RGB image."""
    alpha = np.asarray(mask, dtype=np.float32) * np.float32(1.0 / 255.0)
    # premultiplied colour never exceeds coverage: clips details drawn past the silhouette
    img = np.asarray(colour, dtype=np.float32)
    np.minimum(img, (alpha * np.float32(255.0))[..., None], out=img)
    # background gradient along the nuisance angle (0 deg = top -> bottom)
    a = math.radians(nuis.background_angle_deg)
    xs = (np.arange(w, dtype=np.float32) - (w - 1) / 2.0) / max(w, h)
    ys = (np.arange(h, dtype=np.float32) - (h - 1) / 2.0) / max(w, h)
    t = np.clip(np.float32(0.5) + ys[:, None] * np.float32(math.cos(a))
                + xs[None, :] * np.float32(math.sin(a)), 0.0, 1.0)
    c0 = np.asarray(nuis.background_rgb, dtype=np.float32)
    c1 = np.asarray(nuis.background_rgb2, dtype=np.float32)
    bg_weight = np.float32(1.0) - alpha
    if nuis.shadow_strength > 0:
        # a soft shadow straight below the hand (vertical offset keeps left/right symmetry)
        small = mask.resize((max(1, w // 8), max(1, h // 8)), Image.Resampling.BILINEAR)
        soft = np.asarray(small.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
        dy = max(1, int(round(0.02 * h)))
        shade = np.ones_like(soft)
        shade[dy:] -= soft[:-dy] * np.float32(nuis.shadow_strength / 255.0)
        bg_weight *= shade
    bg = t[..., None] * (c1 - c0)
    bg += c0
    bg *= bg_weight[..., None]
    img += bg
    img += np.float32(0.5)
    q = img.astype(np.uint8)  # 0 <= img <= 255.5 by construction
    # camera: per-channel LUT for brightness, gamma and colour cast (fast in PIL)
    levels = np.arange(256, dtype=np.float64) / 255.0
    lut = np.concatenate([np.clip(255.0 * nuis.brightness * c * levels ** nuis.gamma + 0.5, 0, 255)
                          for c in nuis.color_cast]).astype(np.int64)
    out = Image.fromarray(q, "RGB").point(lut.tolist())
    if nuis.noise_std <= 0:
        return out
    # mild sensor noise: triangular integer noise (sum of two uniforms), std ~= noise_std
    k = max(1, int(round(math.sqrt(0.25 + 1.5 * nuis.noise_std ** 2) - 0.5)))
    noise_rng = np.random.default_rng(nuis.noise_seed)
    noise = noise_rng.integers(-k, k + 1, (h, w, 3), dtype=np.int16)
    noise += noise_rng.integers(-k, k + 1, (h, w, 3), dtype=np.int16)
    arr = np.asarray(out, dtype=np.int16) + noise
    np.clip(arr, 0, 255, out=arr)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def _encode(img: Image.Image, name: str, quality: int) -> bytes:
    buf = io.BytesIO()
    suffix = Path(name).suffix.lower()
    if suffix in (".png",):
        img.save(buf, format="PNG")
    else:  # no EXIF, no optimize/progressive: same pixels + quality -> same bytes
        img.save(buf, format="JPEG", quality=int(quality), optimize=False, subsampling=2)
    return buf.getvalue()


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def generate_synthetic_dataset(out_dir: str | Path, n_train_ids: int = 24, n_test_ids: int = 24,
                               images_per_id: tuple[int, int] = (6, 10),
                               aspects: Sequence[str] = ASPECTS, accessory_rate: float = 0.1,
                               size: tuple[int, int] = (160, 120), seed: int = 0,
                               jpeg_quality: int = 92) -> Path:
    """Write ``out_dir/Hands/Hand_XXXXXXX.jpg`` and ``out_dir/HandInfo.csv``; return the csv path.

    Training-side ids are ``f"{i:07d}"`` (i < n_train_ids <= 1038, below every protocol id
    threshold), test-side ids ``f"{1100 + i:07d}"``. Each (id, aspect) gets a seeded number of
    images in ``images_per_id`` (inclusive); each image is an accessory with probability
    ``accessory_rate``. Rows are ordered by id, aspect, image; names run from Hand_0000001.jpg.
    Same arguments -> byte-identical csv and JPEGs. A stamp file (``.synthetic_params.json``)
    lets a repeated call with the same arguments return at once without re-rendering.
    """
    out_dir = Path(out_dir)
    w, h = _check_size(size)
    lo, hi = (int(v) for v in images_per_id)
    if lo < 1 or hi < lo:
        raise ValueError(f"images_per_id must be (lo, hi) with 1 <= lo <= hi, got {images_per_id!r}")
    if not 0 <= int(n_train_ids) <= 1038:
        raise ValueError(f"n_train_ids must be in 0..1038 so every training id stays <= 1037, "
                         f"got {n_train_ids}")
    if not 0 <= int(n_test_ids) <= 9_998_000:
        raise ValueError(f"n_test_ids must be in 0..9998000, got {n_test_ids}")
    aspects = [str(a).strip().lower() for a in aspects]
    for a in aspects:
        _parse_aspect(a)
    if len(set(aspects)) != len(aspects) or not aspects:
        raise ValueError(f"aspects must be a non-empty list without repeats, got {aspects!r}")
    if not 0.0 <= float(accessory_rate) <= 1.0:
        raise ValueError(f"accessory_rate must be in [0, 1], got {accessory_rate}")
    if not 1 <= int(jpeg_quality) <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")

    params = {
        "generator_version": GENERATOR_VERSION, "n_train_ids": int(n_train_ids),
        "n_test_ids": int(n_test_ids), "images_per_id": [lo, hi], "aspects": aspects,
        "accessory_rate": float(accessory_rate), "size": [w, h], "seed": int(seed),
        "jpeg_quality": int(jpeg_quality),
    }
    csv_path = out_dir / "HandInfo.csv"
    if csv_path.exists() and _stamp_matches(out_dir, params):
        return csv_path
    hands_dir = out_dir / "Hands"
    hands_dir.mkdir(parents=True, exist_ok=True)

    ids = [f"{i:07d}" for i in range(int(n_train_ids))]
    ids += [f"{1100 + i:07d}" for i in range(int(n_test_ids))]
    rows: list[list[object]] = []
    jobs: list[tuple[HandIdentity, str, str, bool]] = []
    counter = 0
    for pid in ids:
        ident = identity_from_id(pid, seed)
        for aspect in aspects:
            n_img = int(_rng("count", pid, aspect, seed).integers(lo, hi + 1))
            acc_draws = _rng("accessory", pid, aspect, seed).random(n_img)
            for j in range(n_img):
                counter += 1
                name = f"Hand_{counter:07d}.jpg"
                acc = bool(acc_draws[j] < accessory_rate)
                rows.append([pid, ident.age, ident.gender, ident.skin_color, int(acc),
                             int(ident.nail_polish), aspect, name, 0])
                jobs.append((ident, name, aspect, acc))

    _render_all(hands_dir, [(ident, name, name, aspect, acc) for ident, name, aspect, acc in jobs],
                (w, h), seed, jpeg_quality)
    buf = io.StringIO()
    buf.write(",".join(HANDINFO_COLUMNS) + "\n")  # the real header is unquoted
    writer = csv.writer(buf, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    writer.writerows(rows)
    atomic_write_bytes(csv_path, buf.getvalue().encode("utf-8"))
    _write_stamp(out_dir, params)
    return csv_path


def _stamp_matches(out_dir: Path, params: dict) -> bool:
    """True when the folder was generated with exactly `params`; otherwise the old stamp is
    removed first, since the folder is about to change and must not be vouched for."""
    stamp = out_dir / STAMP_NAME
    try:
        if json.loads(stamp.read_text(encoding="utf-8")) == params:
            return True
    except (OSError, ValueError):
        pass
    stamp.unlink(missing_ok=True)
    return False


def _write_stamp(out_dir: Path, params: dict) -> None:
    atomic_write_bytes(out_dir / STAMP_NAME, (json.dumps(params, indent=2, sort_keys=True) + "\n").encode())


def _render_all(root: Path, jobs: list[tuple[HandIdentity, str, str, str, bool]], size: tuple[int, int],
                seed: int, jpeg_quality: int) -> None:
    """Render (identity, file path under root, nuisance key, aspect, accessory) jobs in threads."""
    def work(job: tuple[HandIdentity, str, str, str, bool]) -> None:
        ident, rel, key, aspect, acc = job
        img = render_hand(ident, nuisance_from_name(key, seed), aspect, acc, size)
        atomic_write_bytes(root / rel, _encode(img, rel, jpeg_quality))

    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        for _ in pool.map(work, jobs):
            pass


HD_ORIGINAL = "Original Images"


def generate_synthetic_hd(out_dir: str | Path, n_ids: int = 40, n_extra_ids: int = 10,
                          images_per_id: tuple[int, int] = (4, 6), size: tuple[int, int] = (160, 120),
                          seed: int = 0, jpeg_quality: int = 92) -> Path:
    """Synthetic hands in the HD layout; returns the ``HD`` folder.

    Writes ``out_dir/HD/Original Images/1-<n_ids>/<id>_<k>.jpg`` (the main subjects) and
    ``<n_ids+1>-<n_ids+n_extra_ids>/`` (the extra subjects, distractors), k = 1..count, the
    naming of the real dataset. Every image is a dorsal view of a right hand without accessories.
    HD subjects are other people than the synthetic 11k ones (identities drawn from "hd-<id>").
    Same arguments -> byte-identical files; a stamp makes a repeated call return at once.
    """
    out_dir = Path(out_dir)
    w, h = _check_size(size)
    lo, hi = (int(v) for v in images_per_id)
    if lo < 1 or hi < lo:
        raise ValueError(f"images_per_id must be (lo, hi) with 1 <= lo <= hi, got {images_per_id!r}")
    if n_ids < 1 or n_extra_ids < 1:
        raise ValueError(f"n_ids and n_extra_ids must be >= 1, got {n_ids}, {n_extra_ids}")
    params = {"generator_version": GENERATOR_VERSION, "layout": "HD", "n_ids": int(n_ids),
              "n_extra_ids": int(n_extra_ids), "images_per_id": [lo, hi], "size": [w, h],
              "seed": int(seed), "jpeg_quality": int(jpeg_quality)}
    hd = out_dir / "HD"
    if _stamp_matches(out_dir, params):
        return hd
    folders = {f"1-{n_ids}": range(1, n_ids + 1),
               f"{n_ids + 1}-{n_ids + n_extra_ids}": range(n_ids + 1, n_ids + n_extra_ids + 1)}
    jobs = []
    for folder, ids in folders.items():
        (hd / HD_ORIGINAL / folder).mkdir(parents=True, exist_ok=True)
        for i in ids:
            ident = identity_from_id(f"hd-{i}", seed)
            n_img = int(_rng("hd-count", i, seed).integers(lo, hi + 1))
            for k in range(1, n_img + 1):
                rel = f"{HD_ORIGINAL}/{folder}/{i}_{k}.jpg"
                jobs.append((ident, rel, f"hd/{i}_{k}", "dorsal right", False))
    _render_all(hd, jobs, (w, h), seed, jpeg_quality)
    _write_stamp(out_dir, params)
    return hd


def render_images_for_handinfo(handinfo_csv: str | Path, images_dir: str | Path,
                               size: tuple[int, int] = (1600, 1200), seed: int = 0,
                               limit: int | None = None, skip_existing: bool = True,
                               only: Collection[str] | None = None) -> int:
    """Render a synthetic image for each row of an existing HandInfo.csv (e.g. the real one).

    Lets the full-size pipeline be exercised and timed without the real photos. Ids are stripped
    (the real file has "1200000 "). `limit` caps the number of CSV rows considered (first rows
    first, skipped existing files included); `only` restricts to these imageNames; returns the
    number of images written.
    """
    from .handinfo import load_handinfo  # the one validating reader of the schema
    w, h = _check_size(size)
    out = Path(images_dir)
    records = load_handinfo(handinfo_csv, check_sha256=False)[:limit]
    if only is not None:
        wanted = set(only)
        records = [r for r in records if r.image_name in wanted]
    for r in records:
        if Path(r.image_name).name != r.image_name or r.image_name in (".", ".."):
            raise ValueError(f"{handinfo_csv}: imageName {r.image_name!r} must be a plain file name")
    jobs = [(r.person_id, r.image_name, r.aspect, bool(r.accessories)) for r in records]
    out.mkdir(parents=True, exist_ok=True)
    if skip_existing:
        jobs = [j for j in jobs if not (out / j[1]).exists()]

    # drawing holds the GIL: full-size renders go to worker processes ("spawn": safe next to CUDA)
    args = [(pid, name, aspect, acc, w, h, seed, str(out)) for pid, name, aspect, acc in jobs]
    if len(args) < 32:
        for a in args:
            _render_row(a)
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 1, mp_context=ctx) as pool:
            for _ in pool.map(_render_row, args, chunksize=8):
                pass
    return len(jobs)


def _render_row(job: tuple) -> None:
    pid, name, aspect, acc, w, h, seed, out = job
    img = render_hand(identity_from_id(pid, seed), nuisance_from_name(name, seed), aspect, acc, (w, h))
    atomic_write_bytes(Path(out) / name, _encode(img, name, _JPEG_QUALITY_RENDER))

